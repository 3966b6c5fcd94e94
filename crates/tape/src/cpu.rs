//! The CPU backend: ndarray storage, `matrixmultiply` micro-kernels split over rows with rayon,
//! and hand-written element-wise and softmax loops.
//!
//! Determinism: every kernel gives bit-identical results whatever the number of rayon threads.
//! Matrix products are split into row blocks whose size depends only on the problem's shape,
//! and each output element is reduced over `k` in the same order in every block; reductions
//! run sequentially in `f64`.

use crate::{Backend, Float};
use ndarray::{Array2, Axis, Zip};
use rayon::prelude::*;
use std::marker::PhantomData;

/// Element count above which element-wise kernels run in parallel.
const PAR_ELEMS: usize = 1 << 15;
/// Approximate multiply-adds per parallel matmul block.
const MATMUL_BLOCK_MACS: usize = 1 << 19;

/// The CPU device, for element type `T` (`Cpu::<f32>::default()`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu<T: Float> {
    _t: PhantomData<T>,
}

impl<T: Float> Cpu<T> {
    /// The CPU backend.
    pub fn new() -> Self {
        Self { _t: PhantomData }
    }
}

fn check_same(op: &str, a: &Array2<impl Sized>, b: &Array2<impl Sized>) {
    assert_eq!(a.dim(), b.dim(), "{op}: shape mismatch {:?} vs {:?}", a.dim(), b.dim());
}

fn zip_map<T: Float>(a: &Array2<T>, b: &Array2<T>, f: impl Fn(T, T) -> T + Sync + Send) -> Array2<T> {
    if a.len() >= PAR_ELEMS {
        Zip::from(a).and(b).par_map_collect(|&x, &y| f(x, y))
    } else {
        Zip::from(a).and(b).map_collect(|&x, &y| f(x, y))
    }
}

fn map<T: Float>(a: &Array2<T>, f: impl Fn(T) -> T + Sync + Send) -> Array2<T> {
    if a.len() >= PAR_ELEMS {
        Zip::from(a).par_map_collect(|&x| f(x))
    } else {
        a.mapv(f)
    }
}

/// Rows of `x` may use class `j` when the mask (if any) is non-zero there.
fn mask_row<T: Float>(mask: Option<&Array2<T>>, rows: usize, cols: usize, i: usize) -> Option<&[T]> {
    mask.map(|m| {
        assert_eq!(m.ncols(), cols, "mask has {} columns, logits {}", m.ncols(), cols);
        let r = if m.nrows() == 1 {
            0
        } else {
            assert_eq!(m.nrows(), rows, "mask has {} rows, logits {}", m.nrows(), rows);
            i
        };
        let s = m.as_slice().expect("standard layout mask");
        &s[r * cols..(r + 1) * cols]
    })
}

/// `matmul_{f32,f64}`: `C = op(A) op(B)` with row blocks of `C` computed in parallel.
pub fn matmul<T: Float>(a: &Array2<T>, trans_a: bool, b: &Array2<T>, trans_b: bool) -> Array2<T> {
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let (ar, ac) = a.dim();
    let (br, bc) = b.dim();
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
    assert_eq!(k, k2, "matmul: inner dimensions differ ({m}x{k} @ {k2}x{n})");
    let mut c = Array2::<T>::zeros((m, n));
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    // Strides of op(A) and op(B) over their row-major storage.
    let (rsa, csa) = if trans_a { (1isize, ac as isize) } else { (ac as isize, 1isize) };
    let (rsb, csb) = if trans_b { (1isize, bc as isize) } else { (bc as isize, 1isize) };
    let a_s = a.as_slice().expect("standard layout");
    let b_s = b.as_slice().expect("standard layout");
    let c_s = c.as_slice_mut().expect("fresh array");
    // Block size from the shape alone (never from the thread count): multiples of 16 rows.
    let macs = m * n * k;
    let blocks = (macs / MATMUL_BLOCK_MACS).clamp(1, 64);
    let rows_per = m.div_ceil(blocks).next_multiple_of(16).min(m);
    let run = |i0: usize, c_blk: &mut [T]| {
        let rows = c_blk.len() / n;
        // SAFETY: row i of op(A) starts at i * rsa; the block covers rows i0..i0+rows < m;
        // B and C are whole, valid matrices and C's block is exclusively borrowed.
        unsafe {
            T::gemm(
                rows,
                k,
                n,
                T::one(),
                a_s.as_ptr().offset(i0 as isize * rsa),
                rsa,
                csa,
                b_s.as_ptr(),
                rsb,
                csb,
                T::zero(),
                c_blk.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    };
    if rows_per >= m {
        run(0, c_s);
    } else {
        c_s.par_chunks_mut(rows_per * n).enumerate().for_each(|(blk, c_blk)| run(blk * rows_per, c_blk));
    }
    c
}

impl<T: Float> Backend for Cpu<T> {
    type T = T;
    type Tensor = Array2<T>;
    type Labels = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({} rayon threads)", rayon::current_num_threads())
    }

    fn from_vec(&self, rows: usize, cols: usize, data: Vec<T>) -> Array2<T> {
        Array2::from_shape_vec((rows, cols), data).expect("from_vec: data length must equal rows * cols")
    }

    fn to_vec(&self, x: &Array2<T>) -> Vec<T> {
        x.as_standard_layout().iter().copied().collect()
    }

    fn full(&self, rows: usize, cols: usize, value: T) -> Array2<T> {
        Array2::from_elem((rows, cols), value)
    }

    fn shape(&self, x: &Array2<T>) -> (usize, usize) {
        x.dim()
    }

    fn labels(&self, labels: &[u32]) -> Vec<u32> {
        labels.to_vec()
    }

    fn scalar(&self, x: &Array2<T>) -> T {
        assert_eq!(x.dim(), (1, 1), "scalar: expected a 1x1 tensor, got {:?}", x.dim());
        x[[0, 0]]
    }

    fn matmul(&self, a: &Array2<T>, trans_a: bool, b: &Array2<T>, trans_b: bool) -> Array2<T> {
        matmul(a, trans_a, b, trans_b)
    }

    fn add_row(&self, x: &Array2<T>, row: &Array2<T>) -> Array2<T> {
        assert_eq!(row.nrows(), 1, "add_row: the row must be 1 x cols");
        assert_eq!(row.ncols(), x.ncols(), "add_row: {} columns vs {}", row.ncols(), x.ncols());
        let mut y = x.to_owned();
        y += row;
        y
    }

    fn sum_rows(&self, x: &Array2<T>) -> Array2<T> {
        // Sequential over rows in a fixed order.
        let mut out = Array2::<T>::zeros((1, x.ncols()));
        for r in x.axis_iter(Axis(0)) {
            Zip::from(out.row_mut(0)).and(&r).for_each(|o, &v| *o += v);
        }
        out
    }

    fn add(&self, a: &Array2<T>, b: &Array2<T>) -> Array2<T> {
        check_same("add", a, b);
        zip_map(a, b, |x, y| x + y)
    }

    fn sub(&self, a: &Array2<T>, b: &Array2<T>) -> Array2<T> {
        check_same("sub", a, b);
        zip_map(a, b, |x, y| x - y)
    }

    fn mul(&self, a: &Array2<T>, b: &Array2<T>) -> Array2<T> {
        check_same("mul", a, b);
        zip_map(a, b, |x, y| x * y)
    }

    fn scale(&self, a: &Array2<T>, s: T) -> Array2<T> {
        map(a, move |x| s * x)
    }

    fn accumulate(&self, acc: &mut Array2<T>, x: &Array2<T>) {
        check_same("accumulate", acc, x);
        if acc.len() >= PAR_ELEMS {
            Zip::from(acc).and(x).par_for_each(|a, &v| *a += v);
        } else {
            Zip::from(acc).and(x).for_each(|a, &v| *a += v);
        }
    }

    fn abs(&self, x: &Array2<T>) -> Array2<T> {
        map(x, |v| v.abs())
    }

    fn relu(&self, x: &Array2<T>) -> Array2<T> {
        map(x, |v| if v > T::zero() { v } else { T::zero() })
    }

    fn relu_backward(&self, x: &Array2<T>, gy: &Array2<T>) -> Array2<T> {
        check_same("relu_backward", x, gy);
        zip_map(x, gy, |v, g| if v > T::zero() { g } else { T::zero() })
    }

    fn sum_all(&self, x: &Array2<T>) -> Array2<T> {
        let s: f64 = x.iter().map(|v| v.as_f64()).sum();
        Array2::from_elem((1, 1), T::from_f64_lossy(s))
    }

    fn broadcast_scalar(&self, g: &Array2<T>, rows: usize, cols: usize, s: T) -> Array2<T> {
        Array2::from_elem((rows, cols), s * self.scalar(g))
    }

    fn log_softmax(&self, x: &Array2<T>) -> Array2<T> {
        let mut y = x.to_owned();
        for mut row in y.axis_iter_mut(Axis(0)) {
            let mx = row.iter().copied().fold(T::neg_infinity(), T::max);
            let ln_z = row.iter().map(|&v| (v - mx).exp()).sum::<T>().ln();
            // (x - max) - ln z: exact for large logits, unlike x - (max + ln z).
            row.mapv_inplace(|v| (v - mx) - ln_z);
        }
        y
    }

    fn log_softmax_backward(&self, y: &Array2<T>, gy: &Array2<T>) -> Array2<T> {
        check_same("log_softmax_backward", y, gy);
        let mut gx = gy.to_owned();
        for (mut g, yr) in gx.axis_iter_mut(Axis(0)).zip(y.axis_iter(Axis(0))) {
            let s: T = g.iter().copied().sum();
            Zip::from(&mut g).and(&yr).for_each(|gi, &yi| *gi -= yi.exp() * s);
        }
        gx
    }

    fn masked_xent(&self, logits: &Array2<T>, labels: &Vec<u32>, mask: Option<&Array2<T>>) -> (Array2<T>, Array2<T>) {
        let (rows, cols) = logits.dim();
        assert_eq!(labels.len(), rows, "masked_xent: {} labels for {} rows", labels.len(), rows);
        let logits = logits.as_standard_layout();
        let ls = logits.as_slice().expect("standard layout");
        let mut probs = Array2::<T>::zeros((rows, cols));
        let ps = probs.as_slice_mut().expect("fresh array");
        let mut total = 0f64;
        for i in 0..rows {
            let x = &ls[i * cols..(i + 1) * cols];
            let p = &mut ps[i * cols..(i + 1) * cols];
            let m = mask_row(mask, rows, cols, i);
            let allowed = |j: usize| m.is_none_or(|m| m[j] != T::zero());
            let mut mx = T::neg_infinity();
            for (j, &v) in x.iter().enumerate() {
                if allowed(j) && v > mx {
                    mx = v;
                }
            }
            let mut z = T::zero();
            for (j, (&v, pj)) in x.iter().zip(p.iter_mut()).enumerate() {
                if allowed(j) {
                    let e = (v - mx).exp();
                    *pj = e;
                    z += e;
                }
            }
            let inv = T::one() / z;
            p.iter_mut().for_each(|pj| *pj *= inv);
            let y = labels[i] as usize;
            assert!(y < cols, "masked_xent: label {y} out of range for {cols} classes");
            // -log p_y = lse - x_y = (mx + ln z) - x_y; a masked-out label gives +inf.
            let nll = if allowed(y) { ((mx - x[y]) + z.ln()).as_f64() } else { f64::INFINITY };
            total += nll;
        }
        let mean = if rows == 0 { 0.0 } else { total / rows as f64 };
        (Array2::from_elem((1, 1), T::from_f64_lossy(mean)), probs)
    }

    fn masked_xent_backward(&self, probs: &Array2<T>, labels: &Vec<u32>, gy: &Array2<T>) -> Array2<T> {
        let rows = probs.nrows();
        let s = if rows == 0 { T::zero() } else { self.scalar(gy) / T::from_usize(rows).expect("rows fit") };
        let mut g = probs.mapv(|p| p * s);
        for (i, &y) in labels.iter().enumerate() {
            g[[i, y as usize]] -= s;
        }
        g
    }

    fn count_correct(&self, logits: &Array2<T>, labels: &Vec<u32>, mask: Option<&Array2<T>>) -> usize {
        let (rows, cols) = logits.dim();
        assert_eq!(labels.len(), rows, "count_correct: {} labels for {} rows", labels.len(), rows);
        let mut correct = 0;
        for (i, x) in logits.axis_iter(Axis(0)).enumerate() {
            let m = mask_row(mask, rows, cols, i);
            let mut best = None;
            for (j, &v) in x.iter().enumerate() {
                if m.is_none_or(|m| m[j] != T::zero()) && best.is_none_or(|(_, bv)| v > bv) {
                    best = Some((j, v));
                }
            }
            if best.is_some_and(|(j, _)| j == labels[i] as usize) {
                correct += 1;
            }
        }
        correct
    }
}
