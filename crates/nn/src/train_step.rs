//! The training step's forward and backward: one routine for every caller.

use crate::Mlp;
use engram_tape::{Backend, Result, Tape, View, ViewMut};
use std::time::{Duration, Instant};

/// A batch on the backend.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a, B: Backend> {
    /// Inputs, `rows x inputs`.
    pub x: View<'a, B>,
    /// Labels, `1 x rows`.
    pub labels: View<'a, B, u32>,
    /// The classes each row may predict: `1 x classes` (broadcast) or `rows x classes`, non-zero
    /// = allowed; `None` for a plain softmax over every output.
    pub mask: Option<View<'a, B>>,
}

/// Where one step's time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimes {
    /// The forward pass and the loss.
    pub forward: Duration,
    /// The backward pass (gradients written in place).
    pub backward: Duration,
}

/// One forward and backward pass: the mean masked softmax cross-entropy of `batch` at `theta`
/// is written into `loss` (`1 x 1`) and its gradient with respect to `theta` into `grad` (a
/// window of `theta`'s length and layout: every layer's gradient lands in place). Nothing
/// crosses to the host.
///
/// Forward: `h_0 = x`, `h_{l+1} = relu(h_l W_l + 1 b_l')`, logits without the relu; loss
/// `(1/n) sum_i [lse_{k in M_i} z_ik - z_i,y_i]`. Backward: the tape's reverse loop.
pub fn loss_and_grad<B: Backend>(
    be: &B,
    model: &Mlp,
    theta: &B::Buffer<B::T>,
    batch: Batch<'_, B>,
    grad: ViewMut<'_, B>,
    loss: ViewMut<'_, B>,
) -> Result<StepTimes> {
    assert_eq!(
        grad.len(),
        model.num_params(),
        "the gradient window holds {}, the model {}",
        grad.len(),
        model.num_params()
    );
    let t0 = Instant::now();
    let mut tape = Tape::new(be.clone());
    let params = model.params(&mut tape, theta, true);
    let x = tape.constant_view(batch.x);
    let logits = model.forward(&mut tape, &params, x)?;
    let mask = batch.mask.map(|m| tape.constant_view(m));
    let l = tape.masked_xent(logits, batch.labels, mask)?;
    be.copy(tape.value(l), loss)?;
    let t1 = Instant::now();
    tape.backward_into(l, grad)?;
    Ok(StepTimes { forward: t1 - t0, backward: t1.elapsed() })
}
