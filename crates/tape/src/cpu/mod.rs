//! The CPU backend: buffers are `Vec`s, matrix products are `matrixmultiply` micro-kernels split
//! over rows with rayon, the rest hand-written loops (one module per kernel family).
//!
//! Determinism: every kernel gives bit-identical results whatever the number of rayon threads.
//! Matrix products are split into row blocks whose size depends only on the problem's shape,
//! and each output element is reduced over `k` in the same order in every block; reductions
//! run sequentially in `f64`, or over fixed chunks combined in order.

mod data;
mod elementwise;
mod matmul;
mod polling;
mod reduce;
mod softmax;

pub use matmul::matmul;
pub use polling::install_polling;
pub use reduce::{dot_f64, dot_f64_f64, gram_f64};

use crate::backend::{BackendError, PixelMap, Result};
use crate::{Backend, Element, Float, Tensor, View, ViewMut};
use std::marker::PhantomData;

/// Element count above which element-wise kernels run in parallel.
pub(crate) const PAR_ELEMS: usize = 1 << 15;

/// A float type the CPU backend computes in: `f32` or `f64`, with its `matrixmultiply` kernel.
pub trait CpuFloat: Float + ndarray::LinalgScalar + ndarray::ScalarOperand {
    /// `C = alpha * op(A) op(B) + beta * C` through `matrixmultiply`, with arbitrary strides.
    ///
    /// # Safety
    /// The pointers and strides must describe valid `m x k`, `k x n` and `m x n` matrices, and
    /// `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl CpuFloat for f32 {
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

impl CpuFloat for f64 {
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

/// The CPU device, for element type `T` (`Cpu::<f32>::new()`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu<T: CpuFloat> {
    _t: PhantomData<T>,
}

impl<T: CpuFloat> Cpu<T> {
    /// The CPU backend.
    pub fn new() -> Self {
        Self { _t: PhantomData }
    }
}

/// The elements of a view, as a slice of the backing `Vec`.
pub(crate) fn elems<'a, T: CpuFloat, E: Element>(v: &View<'a, Cpu<T>, E>) -> &'a [E] {
    &v.buf[v.offset..v.offset + v.len()]
}

/// The elements of a writable view, as a mutable slice of the backing `Vec`.
pub(crate) fn elems_mut<'a, T: CpuFloat, E: Element>(v: ViewMut<'a, Cpu<T>, E>) -> &'a mut [E] {
    let n = v.len();
    &mut v.buf[v.offset..v.offset + n]
}

/// A `Vec` of `len` default elements, or an out-of-memory error instead of an abort.
fn try_vec<E: Element>(len: usize) -> Result<Vec<E>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| BackendError::OutOfMemory {
        device: "host".into(),
        bytes: crate::element::bytes_of::<E>(len),
        what: format!("{len} {} values", E::NAME),
    })?;
    v.resize(len, E::default());
    Ok(v)
}

impl<T: CpuFloat> Backend for Cpu<T> {
    type T = T;
    type Buffer<E: Element> = Vec<E>;

    fn name(&self) -> String {
        format!("cpu ({} rayon threads)", rayon::current_num_threads())
    }

    fn alloc<E: Element>(&self, len: usize) -> Result<Vec<E>> {
        try_vec(len)
    }

    fn buffer_len<E: Element>(&self, buf: &Vec<E>) -> usize {
        buf.len()
    }

    fn upload<E: Element>(&self, host: &[E]) -> Result<Vec<E>> {
        let mut v = try_vec::<E>(0)?;
        v.try_reserve_exact(host.len()).map_err(|_| BackendError::OutOfMemory {
            device: "host".into(),
            bytes: crate::element::bytes_of::<E>(host.len()),
            what: "an upload".into(),
        })?;
        v.extend_from_slice(host);
        Ok(v)
    }

    fn upload_with<E: Element>(&self, dst: ViewMut<'_, Self, E>, fill: &mut dyn FnMut(&mut [E])) -> Result<()> {
        fill(elems_mut(dst));
        Ok(())
    }

    fn upload_into<E: Element>(&self, host: &[E], dst: ViewMut<'_, Self, E>) -> Result<()> {
        crate::backend::same_len("upload_into", host.len(), dst.len());
        elems_mut(dst).copy_from_slice(host);
        Ok(())
    }

    fn download<E: Element>(&self, src: View<'_, Self, E>) -> Result<Vec<E>> {
        Ok(elems(&src).to_vec())
    }

    fn copy<E: Element>(&self, src: View<'_, Self, E>, dst: ViewMut<'_, Self, E>) -> Result<()> {
        crate::backend::same_len("copy", src.len(), dst.len());
        elems_mut(dst).copy_from_slice(elems(&src));
        Ok(())
    }

    fn fill<E: Element>(&self, dst: ViewMut<'_, Self, E>, value: E) -> Result<()> {
        elems_mut(dst).fill(value);
        Ok(())
    }

    fn matmul(
        &self,
        a: View<'_, Self>,
        trans_a: bool,
        b: View<'_, Self>,
        trans_b: bool,
        out: ViewMut<'_, Self>,
        accumulate: bool,
    ) -> Result<()> {
        matmul::matmul_into(a, trans_a, b, trans_b, out, accumulate);
        Ok(())
    }

    fn add_row(&self, x: View<'_, Self>, row: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        elementwise::add_row(x, row, out);
        Ok(())
    }

    fn matmul_tn_blocks(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        blocks: &[std::ops::Range<usize>],
        out: ViewMut<'_, Self>,
        stride: usize,
    ) -> Result<()> {
        matmul::matmul_tn_blocks(a, b, blocks, out, stride);
        Ok(())
    }

    fn matmul_bias(
        &self,
        x: View<'_, Self>,
        w: View<'_, Self>,
        bias: View<'_, Self>,
        relu: bool,
        out: ViewMut<'_, Self>,
    ) -> Result<()> {
        matmul::matmul_bias_into(x, w, bias, relu, out);
        Ok(())
    }

    fn add_bias(&self, y: ViewMut<'_, Self>, bias: View<'_, Self>, relu: bool) -> Result<()> {
        elementwise::add_bias(y, bias, relu);
        Ok(())
    }

    fn sum_rows(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, accumulate: bool) -> Result<()> {
        reduce::sum_rows(x, out, accumulate);
        Ok(())
    }

    fn sum_rows_blocks(
        &self,
        x: View<'_, Self>,
        blocks: &[std::ops::Range<usize>],
        out: ViewMut<'_, Self>,
        stride: usize,
    ) -> Result<()> {
        reduce::sum_rows_blocks(x, blocks, out, stride);
        Ok(())
    }

    fn add(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        elementwise::zip_map("add", a, b, out, |x, y| x + y);
        Ok(())
    }

    fn sub(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        elementwise::zip_map("sub", a, b, out, |x, y| x - y);
        Ok(())
    }

    fn mul(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        elementwise::zip_map("mul", a, b, out, |x, y| x * y);
        Ok(())
    }

    fn scale(&self, a: View<'_, Self>, sc: T, out: ViewMut<'_, Self>) -> Result<()> {
        elementwise::map("scale", a, out, move |x| sc * x);
        Ok(())
    }

    fn accumulate(&self, acc: ViewMut<'_, Self>, x: View<'_, Self>) -> Result<()> {
        elementwise::accumulate(acc, x);
        Ok(())
    }

    fn abs(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        elementwise::map("abs", x, out, |v| v.abs());
        Ok(())
    }

    fn relu(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        elementwise::map("relu", x, out, |v| if v > T::zero() { v } else { T::zero() });
        Ok(())
    }

    fn relu_backward(&self, x: View<'_, Self>, gy: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        elementwise::zip_map("relu_backward", x, gy, out, |v, g| if v > T::zero() { g } else { T::zero() });
        Ok(())
    }

    fn sum_all(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        reduce::sum_all(x, out);
        Ok(())
    }

    fn broadcast_scalar(&self, g: View<'_, Self>, sc: T, out: ViewMut<'_, Self>) -> Result<()> {
        assert_eq!(g.shape(), (1, 1), "broadcast_scalar: g must be 1x1, got {:?}", g.shape());
        let v = sc * elems(&g)[0];
        elems_mut(out).fill(v);
        Ok(())
    }

    fn accumulate_f64(&self, acc: ViewMut<'_, Self, f64>, x: View<'_, Self>) -> Result<()> {
        reduce::accumulate_f64(acc, x);
        Ok(())
    }

    fn dots_f64(&self, rows: View<'_, Self>, v: View<'_, Self>, out: ViewMut<'_, Self, f64>) -> Result<()> {
        reduce::dots_f64(rows, v, out);
        Ok(())
    }

    fn gram_f64(&self, rows: View<'_, Self>, out: ViewMut<'_, Self, f64>) -> Result<()> {
        reduce::gram_view(rows, out);
        Ok(())
    }

    fn combine_f64(&self, g: ViewMut<'_, Self>, rows: View<'_, Self>, weights: View<'_, Self, f64>) -> Result<()> {
        reduce::combine_f64(g, rows, weights);
        Ok(())
    }

    fn first_non_finite(&self, x: View<'_, Self>, out: ViewMut<'_, Self, u64>) -> Result<()> {
        let i = elems(&x).iter().position(|v| !v.is_finite()).map_or(u64::MAX, |i| i as u64);
        elems_mut(out)[0] = i;
        Ok(())
    }

    fn count_nonzero(&self, x: View<'_, Self>, out: ViewMut<'_, Self, u64>) -> Result<()> {
        elems_mut(out)[0] = elems(&x).iter().filter(|v| **v != T::zero()).count() as u64;
        Ok(())
    }

    fn log_softmax(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        softmax::log_softmax(x, out);
        Ok(())
    }

    fn log_softmax_backward(&self, y: View<'_, Self>, gy: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        softmax::log_softmax_backward(y, gy, out);
        Ok(())
    }

    fn masked_xent(
        &self,
        logits: View<'_, Self>,
        labels: View<'_, Self, u32>,
        mask: Option<View<'_, Self>>,
        loss: ViewMut<'_, Self>,
        probs: ViewMut<'_, Self>,
    ) -> Result<()> {
        softmax::masked_xent(logits, labels, mask, loss, probs);
        Ok(())
    }

    fn masked_xent_backward(
        &self,
        probs: View<'_, Self>,
        labels: View<'_, Self, u32>,
        gy: View<'_, Self>,
        out: ViewMut<'_, Self>,
    ) -> Result<()> {
        softmax::masked_xent_backward(probs, labels, gy, out);
        Ok(())
    }

    fn gather_rows<E: Element>(
        &self,
        src: View<'_, Self, E>,
        rows: View<'_, Self, u32>,
        map: PixelMap<'_, Self>,
        out: ViewMut<'_, Self, E>,
    ) -> Result<()> {
        data::gather_rows(src, rows, map, out);
        Ok(())
    }

    fn count_correct(
        &self,
        logits: View<'_, Self>,
        labels: View<'_, Self, u32>,
        mask: Option<View<'_, Self>>,
        out: ViewMut<'_, Self, u32>,
    ) -> Result<()> {
        elems_mut(out)[0] = softmax::count_correct(logits, labels, mask);
        Ok(())
    }
}

/// A CPU tensor from an `ndarray` matrix (tests and examples).
pub fn tensor<T: CpuFloat>(a: &ndarray::Array2<T>) -> Tensor<Cpu<T>> {
    let (rows, cols) = a.dim();
    Tensor { buf: a.as_standard_layout().iter().copied().collect(), rows, cols }
}

/// A view's elements as an `ndarray` matrix (tests and examples).
pub fn array<T: CpuFloat>(v: View<'_, Cpu<T>>) -> ndarray::Array2<T> {
    ndarray::Array2::from_shape_vec((v.rows, v.cols), elems(&v).to_vec()).expect("rows * cols elements")
}
