//! The CUDA backend's launches: each method checks the shapes (as the CPU kernels do) and runs
//! the kernel of the same name in kernels/*.cu, or cuBLAS for the matrix product.

use super::{blocks, grid, view, view_mut, Cuda};
use crate::backend::{same_len, same_shape, BackendError, PixelMap, Result};
use crate::{cuda_launch, Element, Tensor, View, ViewMut};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig};

/// Rows of a mask as the kernels take it: 0 for none, 1 broadcast, else one per row.
fn mask_rows(mask: &Option<View<'_, Cuda>>, rows: usize, cols: usize) -> u64 {
    match mask {
        None => 0,
        Some(m) => {
            assert_eq!(m.cols, cols, "mask has {} columns, logits {}", m.cols, cols);
            if m.rows != 1 {
                assert_eq!(m.rows, rows, "mask has {} rows, logits {}", m.rows, rows);
            }
            m.rows as u64
        }
    }
}

impl Cuda {
    /// `out = op(a) op(b)` (or `+=` with `accumulate`) through cuBLAS, row-major: cuBLAS sees the
    /// column-major transpose of each row-major matrix, so `C' = op(B)' op(A)'` is asked for.
    pub(super) fn gemm(
        &self,
        a: View<'_, Self>,
        trans_a: bool,
        b: View<'_, Self>,
        trans_b: bool,
        out: ViewMut<'_, Self>,
        accumulate: bool,
    ) -> Result<()> {
        let (m, k) = if trans_a { (a.cols, a.rows) } else { (a.rows, a.cols) };
        let (k2, n) = if trans_b { (b.cols, b.rows) } else { (b.rows, b.cols) };
        assert_eq!(k, k2, "matmul: inner dimensions differ ({m}x{k} @ {k2}x{n})");
        assert_eq!(out.shape(), (m, n), "matmul: output is {:?}, the product {m}x{n}", out.shape());
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            return if accumulate { Ok(()) } else { self.fill_kernel(out, 0.0f32) };
        }
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let cfg = GemmConfig {
            transa: op(trans_b),
            transb: op(trans_a),
            m: n as i32,
            n: m as i32,
            k: k as i32,
            alpha: 1.0f32,
            lda: b.cols as i32,
            ldb: a.cols as i32,
            beta: if accumulate { 1.0 } else { 0.0 },
            ldc: n as i32,
        };
        let (av, bv) = (view(&a), view(&b));
        let mut cv = view_mut(out);
        // SAFETY: the views hold the matrices the configuration describes (asserted above).
        unsafe { self.device.blas.gemm(cfg, &bv, &av, &mut cv) }.map_err(|e| BackendError::Kernel {
            device: crate::Backend::name(self),
            kernel: "cublasSgemm".into(),
            message: format!("{e:?}"),
        })
    }

    pub(super) fn fill_kernel<E: Element>(&self, dst: ViewMut<'_, Self, E>, value: E) -> Result<()> {
        let n = dst.len();
        if n == 0 {
            return Ok(());
        }
        let name = format!("fill_{}", E::NAME);
        let mut d = view_mut(dst);
        let n64 = n as u64;
        cuda_launch!(self, name.as_str(), grid(n), &mut d, &value, &n64);
        Ok(())
    }

    /// `out = f(a, b)` element by element (add, sub, mul, relu_backward).
    pub(super) fn binary(
        &self,
        name: &str,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
    ) -> Result<()> {
        same_shape(name, a.shape(), b.shape());
        same_shape(name, a.shape(), out.shape());
        let n = a.len();
        if n == 0 {
            return Ok(());
        }
        let (av, bv, mut ov, n64) = (view(&a), view(&b), view_mut(out), n as u64);
        cuda_launch!(self, name, grid(n), &av, &bv, &mut ov, &n64);
        Ok(())
    }

    /// `out = f(x)` element by element (abs, relu).
    pub(super) fn unary(&self, name: &str, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        same_shape(name, x.shape(), out.shape());
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let (xv, mut ov, n64) = (view(&x), view_mut(out), n as u64);
        cuda_launch!(self, name, grid(n), &xv, &mut ov, &n64);
        Ok(())
    }

    pub(super) fn scale_kernel(&self, a: View<'_, Self>, s: f32, out: ViewMut<'_, Self>) -> Result<()> {
        same_shape("scale", a.shape(), out.shape());
        let n = a.len();
        if n == 0 {
            return Ok(());
        }
        let (av, mut ov, n64) = (view(&a), view_mut(out), n as u64);
        cuda_launch!(self, "scale_f32", grid(n), &av, &s, &mut ov, &n64);
        Ok(())
    }

    pub(super) fn accumulate_kernel(&self, acc: ViewMut<'_, Self>, x: View<'_, Self>) -> Result<()> {
        same_shape("accumulate", acc.shape(), x.shape());
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let (mut av, xv, n64) = (view_mut(acc), view(&x), n as u64);
        cuda_launch!(self, "accumulate_f32", grid(n), &mut av, &xv, &n64);
        Ok(())
    }

    pub(super) fn add_row_kernel(&self, x: View<'_, Self>, row: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        assert_eq!(row.rows, 1, "add_row: the row must be 1 x cols");
        assert_eq!(row.cols, x.cols, "add_row: {} columns vs {}", row.cols, x.cols);
        same_shape("add_row", x.shape(), out.shape());
        if x.is_empty() {
            return Ok(());
        }
        let (rows, cols) = (x.rows as u64, x.cols as u64);
        let (xv, rv, mut ov) = (view(&x), view(&row), view_mut(out));
        cuda_launch!(self, "add_row_f32", grid(x.len()), &xv, &rv, &mut ov, &rows, &cols);
        Ok(())
    }

    pub(super) fn add_bias_kernel(&self, y: ViewMut<'_, Self>, bias: View<'_, Self>, relu: bool) -> Result<()> {
        assert_eq!(bias.rows, 1, "add_bias: the bias must be 1 x cols");
        assert_eq!(bias.cols, y.cols, "add_bias: {} columns vs {}", bias.cols, y.cols);
        let n = y.len();
        if n == 0 {
            return Ok(());
        }
        let (rows, cols, relu) = (y.rows as u64, y.cols as u64, i32::from(relu));
        let (mut yv, bv) = (view_mut(y), view(&bias));
        cuda_launch!(self, "add_bias_f32", grid(n), &mut yv, &bv, &relu, &rows, &cols);
        Ok(())
    }

    pub(super) fn sum_rows_kernel(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, accumulate: bool) -> Result<()> {
        assert_eq!(out.shape(), (1, x.cols), "sum_rows: output {:?} for {} columns", out.shape(), x.cols);
        if x.cols == 0 {
            return Ok(());
        }
        let (rows, cols, acc) = (x.rows as u64, x.cols as u64, i32::from(accumulate));
        let (xv, mut ov) = (view(&x), view_mut(out));
        cuda_launch!(self, "sum_rows_f32", grid(x.cols), &xv, &mut ov, &rows, &cols, &acc);
        Ok(())
    }

    pub(super) fn sum_all_kernel(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        assert_eq!(out.shape(), (1, 1), "sum_all: the output must be 1x1");
        if x.is_empty() {
            return self.fill_kernel(out, 0.0f32);
        }
        let (xv, mut ov, n) = (view(&x), view_mut(out), x.len() as u64);
        cuda_launch!(self, "sum_all_f32", blocks(1), &xv, &mut ov, &n);
        Ok(())
    }

    pub(super) fn broadcast_scalar_kernel(&self, g: View<'_, Self>, s: f32, out: ViewMut<'_, Self>) -> Result<()> {
        assert_eq!(g.shape(), (1, 1), "broadcast_scalar: g must be 1x1, got {:?}", g.shape());
        let n = out.len();
        if n == 0 {
            return Ok(());
        }
        let (gv, mut ov, n64) = (view(&g), view_mut(out), n as u64);
        cuda_launch!(self, "broadcast_scalar_f32", grid(n), &gv, &s, &mut ov, &n64);
        Ok(())
    }

    pub(super) fn accumulate_f64_kernel(&self, acc: ViewMut<'_, Self, f64>, x: View<'_, Self>) -> Result<()> {
        same_len("accumulate_f64", x.len(), acc.len());
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let (mut av, xv, n64) = (view_mut(acc), view(&x), n as u64);
        cuda_launch!(self, "accumulate_f64_f32", grid(n), &mut av, &xv, &n64);
        Ok(())
    }

    pub(super) fn dots_f64_kernel(
        &self,
        rows: View<'_, Self>,
        v: View<'_, Self>,
        out: ViewMut<'_, Self, f64>,
    ) -> Result<()> {
        assert_eq!(v.len(), rows.cols, "dots_f64: a vector of {} for rows of {}", v.len(), rows.cols);
        same_len("dots_f64", rows.rows, out.len());
        if rows.rows == 0 {
            return Ok(());
        }
        let p = rows.cols as u64;
        let (rv, vv, mut ov) = (view(&rows), view(&v), view_mut(out));
        cuda_launch!(self, "dots_f64_f32", blocks(rows.rows), &rv, &vv, &mut ov, &p);
        Ok(())
    }

    pub(super) fn gram_f64_kernel(&self, rows: View<'_, Self>, out: ViewMut<'_, Self, f64>) -> Result<()> {
        let k = rows.rows;
        assert_eq!(out.shape(), (k, k), "gram_f64: output {:?} for {k} rows", out.shape());
        if k == 0 {
            return Ok(());
        }
        let (k64, p) = (k as u64, rows.cols as u64);
        let (rv, mut ov) = (view(&rows), view_mut(out));
        cuda_launch!(self, "gram_f64_f32", blocks(k * k), &rv, &mut ov, &k64, &p);
        Ok(())
    }

    pub(super) fn combine_f64_kernel(
        &self,
        g: ViewMut<'_, Self>,
        rows: View<'_, Self>,
        w: View<'_, Self, f64>,
    ) -> Result<()> {
        let p = g.len();
        assert_eq!(rows.cols, p, "combine_f64: rows of {} for a vector of {p}", rows.cols);
        same_len("combine_f64", rows.rows, w.len());
        if p == 0 {
            return Ok(());
        }
        let (k, p64) = (rows.rows as u64, p as u64);
        let (mut gv, rv, wv) = (view_mut(g), view(&rows), view(&w));
        cuda_launch!(self, "combine_f64_f32", grid(p), &mut gv, &rv, &wv, &k, &p64);
        Ok(())
    }

    pub(super) fn first_non_finite_kernel(&self, x: View<'_, Self>, mut out: ViewMut<'_, Self, u64>) -> Result<()> {
        self.fill_kernel(out.reborrow(), u64::MAX)?;
        if x.is_empty() {
            return Ok(());
        }
        let (xv, mut ov, n) = (view(&x), view_mut(out), x.len() as u64);
        cuda_launch!(self, "first_non_finite_f32", grid(x.len()), &xv, &mut ov, &n);
        Ok(())
    }

    pub(super) fn count_nonzero_kernel(&self, x: View<'_, Self>, mut out: ViewMut<'_, Self, u64>) -> Result<()> {
        self.fill_kernel(out.reborrow(), 0u64)?;
        if x.is_empty() {
            return Ok(());
        }
        let (xv, mut ov, n) = (view(&x), view_mut(out), x.len() as u64);
        cuda_launch!(self, "count_nonzero_f32", grid(x.len()), &xv, &mut ov, &n);
        Ok(())
    }

    pub(super) fn log_softmax_kernel(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        same_shape("log_softmax", x.shape(), out.shape());
        if x.is_empty() {
            return Ok(());
        }
        let (rows, cols) = (x.rows as u64, x.cols as u64);
        let (xv, mut ov) = (view(&x), view_mut(out));
        cuda_launch!(self, "log_softmax_f32", grid(x.rows), &xv, &mut ov, &rows, &cols);
        Ok(())
    }

    pub(super) fn log_softmax_backward_kernel(
        &self,
        y: View<'_, Self>,
        gy: View<'_, Self>,
        out: ViewMut<'_, Self>,
    ) -> Result<()> {
        same_shape("log_softmax_backward", y.shape(), gy.shape());
        same_shape("log_softmax_backward", y.shape(), out.shape());
        if y.is_empty() {
            return Ok(());
        }
        let (rows, cols) = (y.rows as u64, y.cols as u64);
        let (yv, gv, mut ov) = (view(&y), view(&gy), view_mut(out));
        cuda_launch!(self, "log_softmax_backward_f32", grid(y.rows), &yv, &gv, &mut ov, &rows, &cols);
        Ok(())
    }

    pub(super) fn masked_xent_kernel(
        &self,
        logits: View<'_, Self>,
        labels: View<'_, Self, u32>,
        mask: Option<View<'_, Self>>,
        loss: ViewMut<'_, Self>,
        probs: ViewMut<'_, Self>,
    ) -> Result<()> {
        let (rows, cols) = logits.shape();
        assert_eq!(labels.len(), rows, "masked_xent: {} labels for {} rows", labels.len(), rows);
        same_shape("masked_xent", logits.shape(), probs.shape());
        assert_eq!(loss.shape(), (1, 1), "masked_xent: the loss is 1x1");
        let mr = mask_rows(&mask, rows, cols);
        let nll = Tensor::<Self, f64>::zeros(self, 1, rows.max(1))?;
        let mut nll_v = nll.buf;
        if rows > 0 {
            let (lv, yv, mut pv) = (view(&logits), view(&labels), view_mut(probs));
            let unused = self.unused_f32();
            let mv = mask.as_ref().map(view).unwrap_or(unused);
            let (r64, c64) = (rows as u64, cols as u64);
            cuda_launch!(self, "masked_xent_rows_f32", grid(rows), &lv, &yv, &mv, &mr, &mut pv, &mut nll_v, &r64, &c64);
        }
        let (mut lossv, r64) = (view_mut(loss), rows as u64);
        cuda_launch!(self, "masked_xent_mean_f32", blocks(1), &nll_v, &mut lossv, &r64);
        Ok(())
    }

    pub(super) fn masked_xent_backward_kernel(
        &self,
        probs: View<'_, Self>,
        labels: View<'_, Self, u32>,
        gy: View<'_, Self>,
        out: ViewMut<'_, Self>,
    ) -> Result<()> {
        same_shape("masked_xent_backward", probs.shape(), out.shape());
        assert_eq!(gy.shape(), (1, 1), "masked_xent_backward: gy must be 1x1");
        assert_eq!(labels.len(), probs.rows, "masked_xent_backward: {} labels for {} rows", labels.len(), probs.rows);
        if probs.is_empty() {
            return Ok(());
        }
        let (rows, cols) = (probs.rows as u64, probs.cols as u64);
        let (pv, yv, gv, mut ov) = (view(&probs), view(&labels), view(&gy), view_mut(out));
        cuda_launch!(self, "masked_xent_backward_f32", grid(probs.len()), &pv, &yv, &gv, &mut ov, &rows, &cols);
        Ok(())
    }

    pub(super) fn gather_rows_kernel<E: Element>(
        &self,
        src: View<'_, Self, E>,
        rows: View<'_, Self, u32>,
        map: PixelMap<'_, Self>,
        out: ViewMut<'_, Self, E>,
    ) -> Result<()> {
        let cols = src.cols;
        assert_eq!(
            out.shape(),
            (rows.len(), cols),
            "gather_rows: output {:?} for {} rows of {cols}",
            out.shape(),
            rows.len()
        );
        if out.is_empty() {
            return Ok(());
        }
        let name = match E::NAME {
            "f32" => "gather_rows_f32",
            "u32" => "gather_rows_u32",
            other => {
                return Err(BackendError::Kernel {
                    device: crate::Backend::name(self),
                    kernel: format!("gather_rows_{other}"),
                    message: "only f32 and u32 rows are gathered on the GPU".into(),
                })
            }
        };
        let (unused_ids, unused_maps) = (self.unused_u32(), self.unused_u32());
        let (mode, ids, maps) = match map {
            PixelMap::Identity => (0i32, unused_ids, unused_maps),
            PixelMap::Shared(m) => {
                assert_eq!(m.len(), cols, "gather_rows: a map of {} for rows of {cols}", m.len());
                (1, unused_ids, view(&m))
            }
            PixelMap::PerRow { ids, maps } => {
                assert_eq!(ids.len(), rows.len(), "gather_rows: {} map ids for {} rows", ids.len(), rows.len());
                assert_eq!(maps.cols, cols, "gather_rows: maps of {} for rows of {cols}", maps.cols);
                (2, view(&ids), view(&maps))
            }
        };
        let (b, c64, n) = (rows.len() as u64, cols as u64, out.len());
        let (sv, rv, mut ov) = (view(&src), view(&rows), view_mut(out));
        cuda_launch!(self, name, grid(n), &sv, &rv, &ids, &maps, &mode, &mut ov, &b, &c64);
        Ok(())
    }

    pub(super) fn count_correct_kernel(
        &self,
        logits: View<'_, Self>,
        labels: View<'_, Self, u32>,
        mask: Option<View<'_, Self>>,
        mut out: ViewMut<'_, Self, u32>,
    ) -> Result<()> {
        let (rows, cols) = logits.shape();
        assert_eq!(labels.len(), rows, "count_correct: {} labels for {} rows", labels.len(), rows);
        self.fill_kernel(out.reborrow(), 0u32)?;
        if rows == 0 {
            return Ok(());
        }
        let mr = mask_rows(&mask, rows, cols);
        let unused = self.unused_f32();
        let (lv, yv, mv, mut ov) =
            (view(&logits), view(&labels), mask.as_ref().map(view).unwrap_or(unused), view_mut(out));
        let (r64, c64) = (rows as u64, cols as u64);
        cuda_launch!(self, "count_correct_f32", grid(rows), &lv, &yv, &mv, &mr, &mut ov, &r64, &c64);
        Ok(())
    }
}
