//! The contract between the engine and a device.
//!
//! A [`Backend`] owns memory (flat buffers of any [`Element`]) and runs kernels on windows of it
//! ([`View`], [`ViewMut`]). The tape ([`crate::Tape`]) knows the calculus; the backend knows how
//! to run each kernel on its memory. The CPU implementation is [`crate::cpu::Cpu`]; a CUDA
//! implementation provides the same kernels on device memory (`kernels/*.cu`, `{op}_{dtype}`).
//!
//! * Everything that can fail on a device (allocation, a launch, a transfer) returns a
//!   [`Result`]: an error names what failed, never a panic. A shape that does not fit is a
//!   programming error and panics, as an out-of-range index does.
//! * Data crosses between host and backend ONLY at [`Backend::upload`], [`Backend::upload_into`]
//!   and [`Backend::download`] (see [`crate::counting::Counting`], which counts those bytes).
//! * Kernels write into a caller-provided output window: nothing is allocated behind the
//!   caller's back, and one buffer can receive the results of many kernels (the gradient of
//!   every layer in one flat vector). Kernels that can add into their output instead of
//!   overwriting it take an `accumulate` flag.
//! * Reductions run in a fixed order: the same inputs give the same bits whatever the number of
//!   threads (CPU) or blocks (GPU).

use crate::{Element, Float, View, ViewMut};
use std::fmt::Debug;

/// What went wrong on a backend.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// An allocation did not fit in the device's memory.
    #[error("out of {device} memory: could not allocate {bytes} bytes ({what})")]
    OutOfMemory {
        /// The device.
        device: String,
        /// The bytes asked for.
        bytes: u64,
        /// What the memory was for.
        what: String,
    },
    /// A kernel failed to run.
    #[error("{device}: kernel {kernel} failed: {message}")]
    Kernel {
        /// The device.
        device: String,
        /// The kernel's name (`{op}_{dtype}`).
        kernel: String,
        /// The device's message.
        message: String,
    },
    /// A copy between host and device failed.
    #[error("{device}: transfer failed: {message}")]
    Transfer {
        /// The device.
        device: String,
        /// The device's message.
        message: String,
    },
    /// The device cannot be used at all (no driver, no library, no such device).
    #[error("{0}")]
    Unavailable(String),
}

/// The result of a backend call.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// How a gather maps the columns (pixels) of each gathered row.
pub enum PixelMap<'a, B: Backend> {
    /// Column `j` of the output is column `j` of the source row.
    Identity,
    /// Column `j` of every output row is column `map[j]` of its source row (a permutation).
    Shared(View<'a, B, u32>),
    /// Column `j` of output row `r` is column `maps[ids[r]][j]` of its source row (`maps` holds
    /// one map per row, `ids` one map index per output row).
    PerRow {
        /// Which map each output row uses.
        ids: View<'a, B, u32>,
        /// The maps, one per row.
        maps: View<'a, B, u32>,
    },
}

impl<B: Backend> Clone for PixelMap<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for PixelMap<'_, B> {}

/// A device that holds buffers and runs the engine's kernels on them.
pub trait Backend: Clone + Send + Sync + Debug + 'static {
    /// The element type the kernels compute in.
    type T: Float;
    /// A flat buffer of `E` in this backend's memory.
    type Buffer<E: Element>: Send + Sync + Debug;

    /// Human-readable device name, e.g. `"cpu (2 threads)"`.
    fn name(&self) -> String;

    // ---- memory, and the only points where data crosses between host and backend ----------

    /// A zero-filled buffer of `len` elements.
    fn alloc<E: Element>(&self, len: usize) -> Result<Self::Buffer<E>>;
    /// Number of elements of `buf`.
    fn buffer_len<E: Element>(&self, buf: &Self::Buffer<E>) -> usize;
    /// A buffer holding a copy of `host` (host -> backend).
    fn upload<E: Element>(&self, host: &[E]) -> Result<Self::Buffer<E>>;
    /// Copies `host` into `dst` (host -> backend); `dst` holds exactly `host.len()` elements.
    fn upload_into<E: Element>(&self, host: &[E], dst: ViewMut<'_, Self, E>) -> Result<()>;
    /// Fills `dst` from the host: `fill` receives a host slice of `dst`'s length and writes
    /// every element. By default a staging buffer, then [`Backend::upload_into`]; the CPU hands
    /// `fill` the destination itself (no staging copy, and the pages of a large destination are
    /// first touched by whoever fills them, on every core when `fill` is parallel).
    fn upload_with<E: Element>(&self, dst: ViewMut<'_, Self, E>, fill: &mut dyn FnMut(&mut [E])) -> Result<()> {
        let mut host = vec![E::default(); dst.len()];
        fill(&mut host);
        self.upload_into(&host, dst)
    }
    /// The elements of `src` on the host (backend -> host), row-major.
    fn download<E: Element>(&self, src: View<'_, Self, E>) -> Result<Vec<E>>;
    /// Copies `src` into `dst` on the backend (equal numbers of elements).
    fn copy<E: Element>(&self, src: View<'_, Self, E>, dst: ViewMut<'_, Self, E>) -> Result<()>;
    /// Sets every element of `dst` to `value`.
    fn fill<E: Element>(&self, dst: ViewMut<'_, Self, E>, value: E) -> Result<()>;
    /// Waits until every kernel issued so far has finished (a no-op on the CPU).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    // ---- linear algebra ---------------------------------------------------------------------

    /// `out (+)= op(a) @ op(b)`, `op` transposing when its flag is set; `out` is overwritten, or
    /// added to with `accumulate`.
    fn matmul(
        &self,
        a: View<'_, Self>,
        trans_a: bool,
        b: View<'_, Self>,
        trans_b: bool,
        out: ViewMut<'_, Self>,
        accumulate: bool,
    ) -> Result<()>;
    /// Per block `t` of rows, `out_t = a[rows_t]' @ b[rows_t]` (`a.cols x b.cols`, row-major),
    /// written `t * stride` elements after `out`'s start: the weight gradients of several
    /// batches that went through one forward (GEM's memory gradients, one per finished task).
    /// Each product is bit for bit the one [`Backend::matmul`] gives on those rows alone; a
    /// backend may run the blocks side by side. `out` spans every block's window.
    fn matmul_tn_blocks(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        blocks: &[std::ops::Range<usize>],
        out: ViewMut<'_, Self>,
        stride: usize,
    ) -> Result<()> {
        for (t, r) in blocks.iter().enumerate() {
            let o = ViewMut::new(&mut *out.buf, out.offset + t * stride, a.cols, b.cols);
            self.matmul(a.rows(r.start, r.end), true, b.rows(r.start, r.end), false, o, false)?;
        }
        Ok(())
    }
    /// A dense layer: `out = x @ w`, then [`Backend::add_bias`] of `bias` (and the ReLU when
    /// `relu`), element for element the same arithmetic as the two calls, which is what this
    /// default does. The CPU adds the bias inside each parallel block of the product, while the
    /// block is in cache, instead of in a second (serial) pass over `out`.
    fn matmul_bias(
        &self,
        x: View<'_, Self>,
        w: View<'_, Self>,
        bias: View<'_, Self>,
        relu: bool,
        mut out: ViewMut<'_, Self>,
    ) -> Result<()> {
        self.matmul(x, false, w, false, out.reborrow(), false)?;
        self.add_bias(out, bias, relu)
    }
    /// `out = x + row`, the `1 x cols` row broadcast over the rows of `x` (bias add).
    fn add_row(&self, x: View<'_, Self>, row: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()>;
    /// `y = y + bias` (the `1 x cols` bias broadcast over the rows of `y`), then `max(y, 0)`
    /// when `relu`: a dense layer's bias and activation in one pass over its product, in place.
    /// Element for element the same arithmetic as [`Backend::add_row`] then [`Backend::relu`].
    fn add_bias(&self, y: ViewMut<'_, Self>, bias: View<'_, Self>, relu: bool) -> Result<()>;
    /// `out (+)= column sums of x`: `rows x cols -> 1 x cols` (the bias gradient), rows in order.
    fn sum_rows(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, accumulate: bool) -> Result<()>;
    /// Per block `t` of rows, the column sums of `x[rows_t]` ([`Backend::sum_rows`]'s, bit for
    /// bit) written `t * stride` elements after `out`'s start: the bias gradients of several
    /// batches that went through one forward (GEM's memory gradients). The default runs the
    /// blocks in turn; the CPU runs them side by side. `out` spans every block's window.
    fn sum_rows_blocks(
        &self,
        x: View<'_, Self>,
        blocks: &[std::ops::Range<usize>],
        out: ViewMut<'_, Self>,
        stride: usize,
    ) -> Result<()> {
        for (t, r) in blocks.iter().enumerate() {
            let o = ViewMut::new(&mut *out.buf, out.offset + t * stride, 1, x.cols);
            self.sum_rows(x.rows(r.start, r.end), o, false)?;
        }
        Ok(())
    }

    // ---- element-wise -----------------------------------------------------------------------

    /// `out = a + b`.
    fn add(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()>;
    /// `out = a - b`.
    fn sub(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()>;
    /// `out = a * b`, element by element.
    fn mul(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()>;
    /// `out = s * a`.
    fn scale(&self, a: View<'_, Self>, s: Self::T, out: ViewMut<'_, Self>) -> Result<()>;
    /// `acc += x` (gradient accumulation).
    fn accumulate(&self, acc: ViewMut<'_, Self>, x: View<'_, Self>) -> Result<()>;
    /// `out = |x|`.
    fn abs(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()>;
    /// `out = max(x, 0)`.
    fn relu(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()>;
    /// `out = gy * 1[x > 0]`: the derivative of ReLU is taken as 0 at `x = 0`.
    fn relu_backward(&self, x: View<'_, Self>, gy: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()>;

    // ---- reductions (accumulated in f64, in a fixed order) ---------------------------------

    /// `out (1 x 1) = sum of all elements of x`.
    fn sum_all(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()>;
    /// Every element of `out` set to `s * g` for the `1 x 1` tensor `g` (backward of sum, mean).
    fn broadcast_scalar(&self, g: View<'_, Self>, s: Self::T, out: ViewMut<'_, Self>) -> Result<()>;
    /// `acc += x` with `acc` in f64 (importance estimates summed over many batches).
    fn accumulate_f64(&self, acc: ViewMut<'_, Self, f64>, x: View<'_, Self>) -> Result<()>;
    /// `out[i] = <rows[i], v>` in f64, for the `k x n` matrix `rows` and the `1 x n` vector `v`
    /// (`out` is `1 x k`; GEM and A-GEM's constraint checks).
    fn dots_f64(&self, rows: View<'_, Self>, v: View<'_, Self>, out: ViewMut<'_, Self, f64>) -> Result<()>;
    /// `out = rows rows'` in f64, for the `k x n` matrix `rows` (`out` is `k x k`; GEM's Gram
    /// matrix).
    fn gram_f64(&self, rows: View<'_, Self>, out: ViewMut<'_, Self, f64>) -> Result<()>;
    /// `g = g + sum_i weights[i] rows[i]`, summed in f64 and rounded once (GEM paper Eq. 13 with
    /// the dual's solution as weights; A-GEM's projection with one row).
    fn combine_f64(&self, g: ViewMut<'_, Self>, rows: View<'_, Self>, weights: View<'_, Self, f64>) -> Result<()>;
    /// `out (1 x 1) = index of the first element of x that is NaN or infinite`, or `u64::MAX`.
    fn first_non_finite(&self, x: View<'_, Self>, out: ViewMut<'_, Self, u64>) -> Result<()>;
    /// `out (1 x 1) = number of elements of x that are not 0`.
    fn count_nonzero(&self, x: View<'_, Self>, out: ViewMut<'_, Self, u64>) -> Result<()>;

    // ---- softmax family ---------------------------------------------------------------------

    /// Row-wise `out = log_softmax(x)`, numerically stable (max subtracted).
    fn log_softmax(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()>;
    /// Backward of `y = log_softmax(x)`: `out = gy - softmax(x) * rowsum(gy)`, from `y`.
    fn log_softmax_backward(&self, y: View<'_, Self>, gy: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()>;
    /// Fused masked softmax cross-entropy, averaged over rows: `loss (1 x 1)` and the masked
    /// softmax probabilities `probs` (zero where masked), which the backward reuses.
    ///
    /// `mask` (`1 x classes`, broadcast, or `rows x classes`) marks the classes a row may
    /// predict with a non-zero value; masked logits are excluded from the softmax (as if they
    /// were `-inf`). `labels` is `1 x rows`.
    fn masked_xent(
        &self,
        logits: View<'_, Self>,
        labels: View<'_, Self, u32>,
        mask: Option<View<'_, Self>>,
        loss: ViewMut<'_, Self>,
        probs: ViewMut<'_, Self>,
    ) -> Result<()>;
    /// Backward of [`Backend::masked_xent`]: `out = (p - onehot(label)) * gy / rows`, zero where
    /// masked.
    fn masked_xent_backward(
        &self,
        probs: View<'_, Self>,
        labels: View<'_, Self, u32>,
        gy: View<'_, Self>,
        out: ViewMut<'_, Self>,
    ) -> Result<()>;

    // ---- data -------------------------------------------------------------------------------

    /// `out[r] = src[rows[r]]` (columns mapped by `map`): a batch gathered by index from the
    /// data held on the backend. `src` is `n x cols`, `rows` is `1 x b`, `out` is `b x cols`.
    fn gather_rows<E: Element>(
        &self,
        src: View<'_, Self, E>,
        rows: View<'_, Self, u32>,
        map: PixelMap<'_, Self>,
        out: ViewMut<'_, Self, E>,
    ) -> Result<()>;
    /// `out (1 x 1) = number of rows whose arg-max over the allowed classes equals the label`
    /// (ties: lowest index).
    fn count_correct(
        &self,
        logits: View<'_, Self>,
        labels: View<'_, Self, u32>,
        mask: Option<View<'_, Self>>,
        out: ViewMut<'_, Self, u32>,
    ) -> Result<()>;
}

/// Checks that two shapes agree (a programming error otherwise).
pub(crate) fn same_shape(op: &str, a: (usize, usize), b: (usize, usize)) {
    assert_eq!(a, b, "{op}: shape mismatch {a:?} vs {b:?}");
}

/// Checks that `n` elements fit in `dst`.
pub(crate) fn same_len(op: &str, n: usize, dst: usize) {
    assert_eq!(n, dst, "{op}: {n} elements for a destination of {dst}");
}
