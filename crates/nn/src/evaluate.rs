//! Evaluation: one routine for the accuracy matrix, the training-set accuracies and the SI
//! diagnostics' losses.

use crate::{Mlp, StepBuffers};
use engram_tape::{Backend, Float, PixelMap, Result, Tensor, View, ViewMut};

/// Rows per forward pass of [`evaluate`] (the chunks of the accuracy matrix).
pub const EVAL_CHUNK: usize = 1000;

/// Samples held on the backend: which rows of `images` (with which pixel map), their labels,
/// and the task's mask.
#[derive(Clone, Copy)]
pub struct Samples<'a, B: Backend> {
    /// The rows samples are gathered from (`n x inputs`).
    pub images: View<'a, B>,
    /// The row of `images` of each sample (`1 x len`).
    pub rows: View<'a, B, u32>,
    /// The label of each sample (`1 x len`).
    pub labels: View<'a, B, u32>,
    /// How a sample's pixels are read from its row (a permutation, or none).
    pub map: PixelMap<'a, B>,
    /// The classes the task may predict (`1 x classes`), or every output.
    pub mask: Option<View<'a, B>>,
    /// `Some(r)` when `rows` is `r, r + 1, ...` and `map` the identity: the samples are read
    /// in place, without a gather.
    pub first_row: Option<usize>,
}

/// What [`evaluate`] measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// Samples evaluated.
    pub samples: usize,
    /// Samples whose arg-max over the allowed classes is the label.
    pub correct: u64,
    /// Sum over chunks of (the chunk's mean loss x its rows), in f64 (0 unless asked for).
    pub loss_sum: f64,
}

impl Evaluation {
    /// The fraction correct (0 with no samples).
    pub fn accuracy(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.correct as f64 / self.samples as f64
        }
    }

    /// The mean loss over the samples (NaN with no samples).
    pub fn mean_loss(&self) -> f64 {
        if self.samples == 0 {
            f64::NAN
        } else {
            self.loss_sum / self.samples as f64
        }
    }
}

/// Accuracy (and with `with_loss` the mean masked cross-entropy) of `theta` on `samples`,
/// forward only ([`StepBuffers::forward`], buffers reused from chunk to chunk), in chunks of
/// `chunk` rows gathered on the backend. The host receives two numbers per chunk.
pub fn evaluate<B: Backend>(
    be: &B,
    model: &Mlp,
    theta: &B::Buffer<B::T>,
    samples: Samples<'_, B>,
    chunk: usize,
    with_loss: bool,
) -> Result<Evaluation> {
    let n = samples.rows.len();
    let chunk = chunk.max(1);
    if n == 0 {
        return Ok(Evaluation::default());
    }
    let chunks = n.div_ceil(chunk);
    let mut counts = Tensor::<B, u32>::zeros(be, 1, chunks)?;
    let mut losses = Tensor::<B>::zeros(be, 1, chunks)?;
    let in_place = samples.first_row.is_some() && matches!(samples.map, PixelMap::Identity);
    let mut x = Tensor::<B>::zeros(be, if in_place { 0 } else { chunk.min(n) }, model.inputs())?;
    let mut step = StepBuffers::new(be, model, chunk.min(n))?;
    for c in 0..chunks {
        let (start, end) = (c * chunk, ((c + 1) * chunk).min(n));
        let rows = end - start;
        let input = match (samples.first_row, samples.map) {
            (Some(r), PixelMap::Identity) => samples.images.rows(r + start, r + end),
            _ => {
                let xv = ViewMut::new(&mut x.buf, 0, rows, model.inputs());
                be.gather_rows(samples.images, samples.rows.range(start, end), samples.map, xv)?;
                View::new(&x.buf, 0, rows, model.inputs())
            }
        };
        let logits = step.forward(be, model, theta, input)?;
        let labels = samples.labels.range(start, end);
        be.count_correct(logits, labels, samples.mask, counts.view_mut().range(c, c + 1))?;
        if with_loss {
            step.loss(be, model, labels, samples.mask, losses.view_mut().range(c, c + 1))?;
        }
    }
    let counts = counts.to_host(be)?;
    let mut loss_sum = 0.0f64;
    if with_loss {
        for (c, l) in losses.to_host(be)?.into_iter().enumerate() {
            let rows = ((c + 1) * chunk).min(n) - c * chunk;
            loss_sum += l.as_f64() * rows as f64;
        }
    }
    Ok(Evaluation { samples: n, correct: counts.iter().map(|&c| c as u64).sum(), loss_sum })
}
