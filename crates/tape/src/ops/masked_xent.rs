//! Fused, numerically stable masked softmax cross-entropy, averaged over the rows.
//!
//! `L = (1/n) sum_i [ log sum_{k in M_i} exp(x[i, k]) - x[i, y_i] ]` where `M_i` is the set of
//! classes row `i` may predict (the task's classes in the task-incremental setting).
use super::Sink;
use crate::backend::Result;
use crate::{Backend, View, ViewMut};

/// The mean loss (`1 x 1`) and the masked softmax probabilities `p` (zero outside `M_i`).
pub(crate) fn forward<B: Backend>(
    be: &B,
    logits: View<'_, B>,
    labels: View<'_, B, u32>,
    mask: Option<View<'_, B>>,
    loss: ViewMut<'_, B>,
    probs: ViewMut<'_, B>,
) -> Result<()> {
    be.masked_xent(logits, labels, mask, loss, probs)
}

/// `dL/dx[i, k] = gy (p[i, k] - 1[k = y_i]) / n` for `k` in `M_i`, and 0 outside the mask.
pub(crate) fn backward<B: Backend>(
    be: &B,
    probs: View<'_, B>,
    labels: View<'_, B, u32>,
    gy: View<'_, B>,
    sink: Sink<'_, B>,
) -> Result<()> {
    sink.write(be, |out| be.masked_xent_backward(probs, labels, gy, out))
}
