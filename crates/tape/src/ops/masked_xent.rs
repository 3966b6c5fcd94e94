//! Fused, numerically stable masked softmax cross-entropy, averaged over the rows.
//!
//! `L = (1/n) sum_i [ log sum_{k in M_i} exp(x[i, k]) - x[i, y_i] ]` where `M_i` is the set of
//! classes row `i` may predict (the task's classes in the task-incremental setting).
use crate::Backend;

/// The mean loss (`1 x 1`) and the masked softmax probabilities `p` (zero outside `M_i`).
pub(crate) fn forward<B: Backend>(
    be: &B,
    logits: &B::Tensor,
    labels: &B::Labels,
    mask: Option<&B::Tensor>,
) -> (B::Tensor, B::Tensor) {
    be.masked_xent(logits, labels, mask)
}

/// `dL/dx[i, k] = gy (p[i, k] - 1[k = y_i]) / n` for `k` in `M_i`, and 0 outside the mask.
pub(crate) fn backward<B: Backend>(be: &B, probs: &B::Tensor, labels: &B::Labels, gy: &B::Tensor) -> B::Tensor {
    be.masked_xent_backward(probs, labels, gy)
}
