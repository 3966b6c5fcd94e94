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

/// One batch of a multi-batch pass ([`StepBuffers::block_gradients`]): its rows and the classes
/// it may predict (`1 x classes`, or one row per row of the block; `None`: every output).
#[derive(Clone, Debug)]
pub struct Block<'a, B: Backend> {
    /// Its rows in the pass's input.
    pub rows: std::ops::Range<usize>,
    /// Its mask.
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

    /// The forward pass alone: the logits of `x` at `theta` (`x.rows x outputs`), the same
    /// values as [`StepBuffers::loss_and_grad`]'s forward (and the tape's `Mlp::forward`).
    ///
    /// # Panics
    /// When `x` does not have the model's input width.
    pub fn forward(&mut self, be: &B, model: &Mlp, theta: &B::Buffer<B::T>, x: View<'_, B>) -> Result<View<'_, B>> {
        assert_eq!(x.cols, model.inputs(), "the batch has {} columns, the model {} inputs", x.cols, model.inputs());
        self.forward_into(be, model, theta, x)?;
        let last = model.layers().len() - 1;
        Ok(self.outputs[last].view().rows(0, x.rows))
    }

    /// `h_{l+1} = relu(h_l W_l + 1 b_l')` layer by layer into `self.outputs` (no relu on the
    /// logits), growing the buffers first when `x` has more rows than they hold.
    fn forward_into(&mut self, be: &B, model: &Mlp, theta: &B::Buffer<B::T>, x: View<'_, B>) -> Result<()> {
        let n = x.rows;
        if n > self.rows {
            *self = Self::new(be, model, n)?;
        }
        let layers = model.layers();
        let last = layers.len() - 1;
        for (l, layer) in layers.iter().enumerate() {
            let (done, rest) = self.outputs.split_at_mut(l);
            let h = if l == 0 { x } else { done[l - 1].view().rows(0, n) };
            let out = rest[0].view_mut().rows(0, n);
            let w = View::new(theta, layer.weight.start, layer.fan_in, layer.fan_out);
            be.matmul_bias(h, w, View::new(theta, layer.bias.start, 1, layer.fan_out), l < last, out)?;
        }
        Ok(())
    }

    /// The masked softmax cross-entropy of the logits [`StepBuffers::forward`] left (the first
    /// `labels.len()` rows) into `loss` (`1 x 1`), the probabilities kept for a backward.
    pub fn loss(
        &mut self,
        be: &B,
        model: &Mlp,
        labels: View<'_, B, u32>,
        mask: Option<View<'_, B>>,
        loss: ViewMut<'_, B>,
    ) -> Result<()> {
        let n = labels.len();
        let last = model.layers().len() - 1;
        let logits = self.outputs[last].view().rows(0, n);
        be.masked_xent(logits, labels, mask, loss, self.probs.view_mut().rows(0, n))
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
        grad: ViewMut<'_, B>,
        loss: ViewMut<'_, B>,
    ) -> Result<StepTimes> {
        let block = Block { rows: 0..batch.x.rows, mask: batch.mask };
        self.block_gradients(be, model, theta, batch.x, batch.labels, &[block], grad, loss)
    }

    /// [`StepBuffers::loss_and_grad`] of several batches at once: `x` holds them one after the
    /// other (`blocks` their rows, in order, from row 0 without gaps) and block `b`'s loss goes to
    /// `losses[b]`, its gradient to row `b` of `grads` (`blocks.len() x P`, contiguous).
    ///
    /// The forward, the input gradients and the ReLU's backward run once over every row (larger
    /// products than one pass per batch); the loss, its backward and the parameter gradients run
    /// per block. A row's values never depend on the other rows, and each block's parameter
    /// gradients are the same products over the same rows, so every result is bit for bit the
    /// one a separate [`StepBuffers::loss_and_grad`] per block gives (GEM's memory gradients).
    ///
    /// # Panics
    /// When the blocks do not tile `x`'s rows from 0, or `grads` or `losses` do not have one
    /// gradient or one value per block.
    #[allow(clippy::too_many_arguments)]
    pub fn block_gradients(
        &mut self,
        be: &B,
        model: &Mlp,
        theta: &B::Buffer<B::T>,
        x: View<'_, B>,
        labels: View<'_, B, u32>,
        blocks: &[Block<'_, B>],
        mut grads: ViewMut<'_, B>,
        mut losses: ViewMut<'_, B>,
    ) -> Result<StepTimes> {
        let p = model.num_params();
        assert_eq!(
            grads.len(),
            blocks.len() * p,
            "the gradient window holds {}, {} blocks of the model {}",
            grads.len(),
            blocks.len(),
            p
        );
        assert_eq!(losses.len(), blocks.len(), "{} loss slots for {} blocks", losses.len(), blocks.len());
        let mut next = 0;
        for b in blocks {
            assert!(b.rows.start == next && b.rows.end >= b.rows.start, "block rows {:?} after row {next}", b.rows);
            next = b.rows.end;
        }
        let n = next;
        // The blocks' rows for matmul_tn_blocks: no allocation for the training step's one block.
        let (one, many): ([std::ops::Range<usize>; 1], Vec<std::ops::Range<usize>>);
        let ranges: &[std::ops::Range<usize>] = match blocks {
            [b] => {
                one = [b.rows.clone()];
                &one
            }
            _ => {
                many = blocks.iter().map(|b| b.rows.clone()).collect();
                &many
            }
        };
        assert_eq!(n, x.rows, "the blocks cover {n} rows, the batch has {}", x.rows);
        assert_eq!(labels.len(), n, "{} labels for {n} rows", labels.len());
        assert_eq!(x.cols, model.inputs(), "the batch has {} columns, the model {} inputs", x.cols, model.inputs());
        if blocks.is_empty() {
            return Ok(StepTimes::default());
        }
        let t0 = Instant::now();
        self.forward_into(be, model, theta, x)?;
        let layers = model.layers();
        let last = layers.len() - 1;
        for (i, b) in blocks.iter().enumerate() {
            let logits = self.outputs[last].view().rows(b.rows.start, b.rows.end);
            let probs = self.probs.view_mut().rows(b.rows.start, b.rows.end);
            let block_labels = labels.range(b.rows.start, b.rows.end);
            be.masked_xent(logits, block_labels, b.mask, losses.reborrow().range(i, i + 1), probs)?;
        }
        let t1 = Instant::now();
        let outputs = model.outputs();
        for b in blocks {
            let len = b.rows.len();
            let dz_out = ViewMut::new(&mut self.delta.buf, b.rows.start * outputs, len, outputs);
            let probs = self.probs.view().rows(b.rows.start, b.rows.end);
            be.masked_xent_backward(probs, labels.range(b.rows.start, b.rows.end), self.one.view(), dz_out)?;
        }
        for (l, layer) in layers.iter().enumerate().rev() {
            let dz = View::new(&self.delta.buf, 0, n, layer.fan_out);
            let h = if l == 0 { x } else { self.outputs[l - 1].view().rows(0, n) };
            // Every block's bias gradient `1' dz_b`, the windows `p` apart.
            let g = grads.reborrow();
            let span = (blocks.len() - 1) * p + layer.fan_out;
            be.sum_rows_blocks(dz, ranges, ViewMut::new(&mut *g.buf, g.offset + layer.bias.start, 1, span), p)?;
            // Every block's weight gradient `h_b' dz_b`, the windows `p` apart.
            let g = grads.reborrow();
            let span = (blocks.len() - 1) * p + layer.fan_in * layer.fan_out;
            let dw = ViewMut::new(&mut *g.buf, g.offset + layer.weight.start, 1, span);
            be.matmul_tn_blocks(h, dz, ranges, dw, p)?;
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
