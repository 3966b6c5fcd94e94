//! The kernel-level contract between the tape and a device.
//!
//! The tape ([`crate::Tape`]) knows the calculus; a [`Backend`] knows how to run each kernel on
//! its memory. Every tensor is a dense, row-major 2-D matrix (`rows x cols`); a scalar is `1 x 1`
//! and a bias is `1 x cols`. The CPU implementation is [`crate::cpu::Cpu`]; a CUDA implementation
//! provides the same kernels on device memory.
//!
//! Kernels are named after the op they serve (`matmul`, `relu_backward`, ...) and take whole
//! tensors; they never see the tape.

use crate::Float;
use std::fmt::Debug;

/// A device that can run the engine's kernels.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Element type.
    type T: Float;
    /// A dense row-major `rows x cols` matrix in this backend's memory.
    type Tensor: Clone + Send + Sync + Debug;
    /// A vector of class indices (one per row of a batch) in this backend's memory.
    type Labels: Clone + Send + Sync + Debug;

    /// Human-readable device name, e.g. `"cpu"`.
    fn name(&self) -> String;

    // ---- creation and transfer -------------------------------------------------------------

    /// A tensor from row-major host data; `data.len()` must be `rows * cols`.
    #[allow(clippy::wrong_self_convention)]
    fn from_vec(&self, rows: usize, cols: usize, data: Vec<Self::T>) -> Self::Tensor;
    /// The tensor's elements, row-major, on the host.
    fn to_vec(&self, x: &Self::Tensor) -> Vec<Self::T>;
    /// A tensor filled with `value`.
    fn full(&self, rows: usize, cols: usize, value: Self::T) -> Self::Tensor;
    /// `(rows, cols)`.
    fn shape(&self, x: &Self::Tensor) -> (usize, usize);
    /// Class indices from the host.
    fn labels(&self, labels: &[u32]) -> Self::Labels;
    /// The single element of a `1 x 1` tensor, on the host.
    fn scalar(&self, x: &Self::Tensor) -> Self::T;

    // ---- linear algebra -----------------------------------------------------------------

    /// `op(a) @ op(b)` where `op` transposes when the flag is set.
    fn matmul(&self, a: &Self::Tensor, trans_a: bool, b: &Self::Tensor, trans_b: bool) -> Self::Tensor;
    /// `x + row` with the `1 x cols` row broadcast over the rows of `x` (bias add).
    fn add_row(&self, x: &Self::Tensor, row: &Self::Tensor) -> Self::Tensor;
    /// Column sums: `rows x cols -> 1 x cols` (the bias gradient).
    fn sum_rows(&self, x: &Self::Tensor) -> Self::Tensor;

    // ---- element-wise ---------------------------------------------------------------------

    /// `a + b`.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    /// `a - b`.
    fn sub(&self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    /// `a * b` element by element.
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    /// `s * a`.
    fn scale(&self, a: &Self::Tensor, s: Self::T) -> Self::Tensor;
    /// `acc += x` (gradient accumulation).
    fn accumulate(&self, acc: &mut Self::Tensor, x: &Self::Tensor);
    /// `|x|`, element by element (for importance statistics; not a tape op).
    fn abs(&self, x: &Self::Tensor) -> Self::Tensor;
    /// `max(x, 0)`.
    fn relu(&self, x: &Self::Tensor) -> Self::Tensor;
    /// `gy * 1[x > 0]`: the derivative of ReLU is taken as 0 at `x = 0`.
    fn relu_backward(&self, x: &Self::Tensor, gy: &Self::Tensor) -> Self::Tensor;

    // ---- reductions (accumulated in f64, in a fixed order) ---------------------------------

    /// Sum of all elements, as a `1 x 1` tensor.
    fn sum_all(&self, x: &Self::Tensor) -> Self::Tensor;
    /// A `rows x cols` tensor whose every element is `s * g` for the `1 x 1` tensor `g`
    /// (the backward of `sum` and `mean`).
    fn broadcast_scalar(&self, g: &Self::Tensor, rows: usize, cols: usize, s: Self::T) -> Self::Tensor;

    // ---- softmax family -------------------------------------------------------------------

    /// Row-wise `log_softmax(x)`, numerically stable (max subtracted).
    fn log_softmax(&self, x: &Self::Tensor) -> Self::Tensor;
    /// Backward of `y = log_softmax(x)`: `gx = gy - softmax(x) * rowsum(gy)`, from `y`.
    fn log_softmax_backward(&self, y: &Self::Tensor, gy: &Self::Tensor) -> Self::Tensor;
    /// Fused masked softmax cross-entropy, averaged over rows.
    ///
    /// `mask` (`1 x classes`, broadcast, or `rows x classes`) marks the classes a row may predict
    /// with a non-zero value; masked logits are excluded from the softmax (as if they were
    /// `-inf`). Returns the `1 x 1` mean loss and the masked softmax probabilities (zero where
    /// masked), which the backward reuses.
    fn masked_xent(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Labels,
        mask: Option<&Self::Tensor>,
    ) -> (Self::Tensor, Self::Tensor);
    /// Backward of [`Backend::masked_xent`]: `(p - onehot(label)) * gy / rows`, zero where masked.
    fn masked_xent_backward(&self, probs: &Self::Tensor, labels: &Self::Labels, gy: &Self::Tensor) -> Self::Tensor;

    // ---- evaluation -------------------------------------------------------------------------

    /// Number of rows whose arg-max over the allowed classes equals the label (ties: lowest index).
    fn count_correct(&self, logits: &Self::Tensor, labels: &Self::Labels, mask: Option<&Self::Tensor>) -> usize;
}
