//! The training step's forward and backward: one routine for every caller.
//!
//! The step is the tape's computation written out for the MLP, over buffers that live from one
//! step to the next ([`StepBuffers`]): no allocation per step, a dense layer's bias and ReLU in
//! one pass over its product ([`Backend::add_bias`]), the ReLU's backward reading the layer's
//! output (`relu(z) > 0` exactly when `z > 0`), and no copy of the gradient the bias add passes
//! through. Every value is the same arithmetic as the tape's (`Mlp::forward`,
//! `Tape::masked_xent`, `Tape::backward_into`): crates/nn/tests/train_step.rs compares the two
//! bit for bit and checks the gradient against finite differences.

use crate::Mlp;
use engram_tape::{Backend, Float, Result, Tensor, View, ViewMut};
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

/// The buffers a training step of one network reuses from step to step, for batches of up to
/// [`StepBuffers::rows`] rows (a larger batch grows them once).
#[derive(Debug)]
pub struct StepBuffers<B: Backend> {
    rows: usize,
    /// Layer `l`'s output, `rows x fan_out`: `relu(h_l W_l + b_l)`, the logits for the last.
    outputs: Vec<Tensor<B>>,
    /// The masked softmax probabilities, `rows x outputs`.
    probs: Tensor<B>,
    /// `dL/dz` of the layer being differentiated (`z` its pre-activation), `rows x widest`.
    delta: Tensor<B>,
    /// `dL/dh` of its input, `rows x widest`, before the ReLU's mask.
    input_grad: Tensor<B>,
    /// `1 x 1` holding 1: the loss's own gradient, the backward's seed.
    one: Tensor<B>,
}

impl<B: Backend> StepBuffers<B> {
    /// Buffers for `model` and batches of up to `rows` rows.
    pub fn new(be: &B, model: &Mlp, rows: usize) -> Result<Self> {
        let widest = model.sizes().iter().skip(1).copied().max().unwrap_or(0);
        let outputs = model.layers().iter().map(|l| Tensor::zeros(be, rows, l.fan_out)).collect::<Result<_>>()?;
        let mut one = Tensor::zeros(be, 1, 1)?;
        be.fill(one.view_mut(), B::T::from_f64_lossy(1.0))?;
        Ok(Self {
            rows,
            outputs,
            probs: Tensor::zeros(be, rows, model.outputs())?,
            delta: Tensor::zeros(be, rows, widest)?,
            input_grad: Tensor::zeros(be, rows, widest)?,
            one,
        })
    }

    /// The most rows a batch may have without the buffers growing.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// One forward and backward pass: the mean masked softmax cross-entropy of `batch` at
    /// `theta` is written into `loss` (`1 x 1`) and its gradient with respect to `theta` into
    /// `grad` (a window of `theta`'s length and layout: every layer's gradient lands in place).
    /// Nothing crosses to the host.
    ///
    /// Forward: `h_0 = x`, `h_{l+1} = relu(h_l W_l + 1 b_l')`, logits `z_L` without the relu;
    /// loss `(1/n) sum_i [lse_{k in M_i} z_ik - z_i,y_i]`. Backward, from
    /// `dz_L = (softmax_M(z_L) - onehot(y)) / n`: per layer `dW_l = h_l' dz_l`,
    /// `db_l = 1' dz_l`, and `dz_{l-1} = (dz_l W_l') * 1[h_l > 0]`.
    ///
    /// # Panics
    /// When `grad` does not hold one value per parameter, or the batch does not fit the model.
    pub fn loss_and_grad(
        &mut self,
        be: &B,
        model: &Mlp,
        theta: &B::Buffer<B::T>,
        batch: Batch<'_, B>,
        mut grad: ViewMut<'_, B>,
        loss: ViewMut<'_, B>,
    ) -> Result<StepTimes> {
        assert_eq!(
            grad.len(),
            model.num_params(),
            "the gradient window holds {}, the model {}",
            grad.len(),
            model.num_params()
        );
        let n = batch.x.rows;
        assert_eq!(
            batch.x.cols,
            model.inputs(),
            "the batch has {} columns, the model {} inputs",
            batch.x.cols,
            model.inputs()
        );
        if n > self.rows {
            *self = Self::new(be, model, n)?;
        }
        let t0 = Instant::now();
        let layers = model.layers();
        let last = layers.len() - 1;
        for (l, layer) in layers.iter().enumerate() {
            let (done, rest) = self.outputs.split_at_mut(l);
            let h = if l == 0 { batch.x } else { done[l - 1].view().rows(0, n) };
            let mut out = rest[0].view_mut().rows(0, n);
            let w = View::new(theta, layer.weight.start, layer.fan_in, layer.fan_out);
            be.matmul(h, false, w, false, out.reborrow(), false)?;
            be.add_bias(out, View::new(theta, layer.bias.start, 1, layer.fan_out), l < last)?;
        }
        let logits = self.outputs[last].view().rows(0, n);
        let probs = self.probs.view_mut().rows(0, n);
        be.masked_xent(logits, batch.labels, batch.mask, loss, probs)?;
        let t1 = Instant::now();
        let outputs = model.outputs();
        let dz_out = ViewMut::new(&mut self.delta.buf, 0, n, outputs);
        be.masked_xent_backward(self.probs.view().rows(0, n), batch.labels, self.one.view(), dz_out)?;
        for (l, layer) in layers.iter().enumerate().rev() {
            let dz = View::new(&self.delta.buf, 0, n, layer.fan_out);
            let h = if l == 0 { batch.x } else { self.outputs[l - 1].view().rows(0, n) };
            let g = grad.reborrow();
            be.sum_rows(dz, ViewMut::new(&mut *g.buf, g.offset + layer.bias.start, 1, layer.fan_out), false)?;
            let g = grad.reborrow();
            let dw = ViewMut::new(&mut *g.buf, g.offset + layer.weight.start, layer.fan_in, layer.fan_out);
            be.matmul(h, true, dz, false, dw, false)?;
            if l > 0 {
                let w = View::new(theta, layer.weight.start, layer.fan_in, layer.fan_out);
                let dh = ViewMut::new(&mut self.input_grad.buf, 0, n, layer.fan_in);
                be.matmul(dz, false, w, true, dh, false)?;
                let dh = View::new(&self.input_grad.buf, 0, n, layer.fan_in);
                be.relu_backward(h, dh, ViewMut::new(&mut self.delta.buf, 0, n, layer.fan_in))?;
            }
        }
        Ok(StepTimes { forward: t1 - t0, backward: t1.elapsed() })
    }
}

/// [`StepBuffers::loss_and_grad`] with buffers allocated for this one call (for callers that
/// take a step now and then; a training loop keeps its [`StepBuffers`]).
pub fn loss_and_grad<B: Backend>(
    be: &B,
    model: &Mlp,
    theta: &B::Buffer<B::T>,
    batch: Batch<'_, B>,
    grad: ViewMut<'_, B>,
    loss: ViewMut<'_, B>,
) -> Result<StepTimes> {
    StepBuffers::new(be, model, batch.x.rows)?.loss_and_grad(be, model, theta, batch, grad, loss)
}
