//! Importance estimates computed at the end of a task, on the backend: the diagonal Fisher
//! (EWC, online EWC) and the MAS sensitivities.
//!
//! Both are means over samples of a per-sample statistic of the per-sample gradient. For a dense
//! layer `y = x W + b`, the per-sample weight gradient is the outer product `x_i d_i^T` (with
//! `d_i` the gradient at the layer's pre-activation), so the statistics come out of ONE batched
//! backward, without a per-sample loop:
//! * `sum_i (x_i d_i^T)^2 = (X * X)^T (D * D)` and `sum_i d_i^2` (Fisher),
//! * `sum_i |x_i d_i^T| = |X|^T |D|` and `sum_i |d_i|` (MAS).
//!
//! The samples are drawn on the host (one seeded stream); their rows and labels are uploaded once
//! per chunk, the statistics summed in f64 on the backend.

use crate::data::Split;
use crate::state::{Run, RunBackend, RunError};
use engram_nn::{Mlp, TaskMask, Trace};
use engram_tape::{Grads, Tape, Tensor, View, ViewMut};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Samples per batched backward (the run's choice; the estimates do not depend on it beyond
/// rounding).
pub const IMPORTANCE_CHUNK: usize = 256;

pub use crate::config::FisherKind;

/// Per-sample statistic to accumulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stat {
    Square,
    Abs,
}

/// Positions of up to `samples` of `len` training samples, drawn without replacement.
fn draw(len: usize, samples: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut pos: Vec<usize> = (0..len).collect();
    if samples < len {
        pos.shuffle(rng);
        pos.truncate(samples);
    }
    pos
}

/// A chunk of a task's training samples, gathered on the backend.
struct Chunk<B: RunBackend> {
    x: Tensor<B>,
    labels: Tensor<B, u32>,
}

fn gather<B: RunBackend>(run: &Run<'_, B>, task: usize, part: &[usize], labels: &[u32]) -> Result<Chunk<B>, RunError> {
    let be = run.be;
    let set = run.data.set(task, Split::Train);
    let rows: Vec<u32> = part.iter().map(|&p| set.host_rows[p]).collect();
    let rows = Tensor::<B, u32>::from_host(be, 1, rows.len(), &rows)?;
    let mut x = Tensor::zeros(be, part.len(), run.model.inputs())?;
    be.gather_rows(run.data.images(), rows.view(), run.data.map(set.map), x.view_mut())?;
    Ok(Chunk { x, labels: Tensor::from_host(be, 1, labels.len(), labels)? })
}

/// Adds the per-sample statistic of the parameter gradients into `acc`, given the trace of a
/// forward pass whose loss is a SUM over samples (so the pre-activation gradients are the
/// per-sample ones).
fn accumulate_stats<B: RunBackend>(
    be: &B,
    model: &Mlp,
    tape: &Tape<'_, B>,
    trace: &Trace,
    grads: &Grads<B>,
    stat: Stat,
    acc: &mut Tensor<B, f64>,
) -> Result<(), RunError> {
    let f = |t: View<'_, B>| -> Result<Tensor<B>, RunError> {
        let mut out = Tensor::zeros(be, t.rows, t.cols)?;
        match stat {
            Stat::Square => be.mul(t, t, out.view_mut())?,
            Stat::Abs => be.abs(t, out.view_mut())?,
        }
        Ok(out)
    };
    for (l, layer) in model.layers().iter().enumerate() {
        let Some(d) = grads.get(trace.preacts[l]) else { continue };
        let x = tape.value(trace.inputs[l]);
        let (fx, fd) = (f(x)?, f(d)?);
        let mut gw = Tensor::zeros(be, layer.fan_in, layer.fan_out)?;
        be.matmul(fx.view(), true, fd.view(), false, gw.view_mut(), false)?;
        let mut gb = Tensor::zeros(be, 1, layer.fan_out)?;
        be.sum_rows(fd.view(), gb.view_mut(), false)?;
        be.accumulate_f64(acc.view_mut().range(layer.weight.start, layer.weight.end), gw.view().reshape(1, gw.len()))?;
        be.accumulate_f64(acc.view_mut().range(layer.bias.start, layer.bias.end), gb.view())?;
    }
    Ok(())
}

/// A label per row of `logits` sampled from the model's masked softmax (the true Fisher's
/// labels), on the host: the logits of one chunk come down, the labels go up.
fn sample_labels(logits: &[f32], k: usize, mask: Option<&TaskMask>, rng: &mut ChaCha8Rng) -> Vec<u32> {
    logits
        .chunks_exact(k)
        .map(|z| {
            let row: Vec<f64> = z.iter().map(|&v| v as f64).collect();
            let allowed = |j: usize| mask.is_none_or(|m| m.allows(j));
            let mx = (0..k).filter(|&j| allowed(j)).map(|j| row[j]).fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = (0..k).map(|j| if allowed(j) { (row[j] - mx).exp() } else { 0.0 }).collect();
            let mut u = rng.random::<f64>() * w.iter().sum::<f64>();
            (0..k)
                .find(|&j| {
                    u -= w[j];
                    u < 0.0 && w[j] > 0.0
                })
                .unwrap_or_else(|| (0..k).rev().find(|&j| w[j] > 0.0).unwrap_or(0)) as u32
        })
        .collect()
}

/// Diagonal Fisher of task `task`'s (masked) predictive distribution at `theta`:
/// `F_i = (1/N) sum_n (d log p(y_n | x_n) / d theta_i)^2` over up to `samples` training samples
/// ([`FisherKind::BatchMean`]: `F_i = ((1/N) sum_n d log p(y_n | x_n) / d theta_i)^2`), in
/// batched backwards of `chunk` samples.
pub fn fisher<B: RunBackend>(
    run: &Run<'_, B>,
    theta: &B::Buffer<f32>,
    task: usize,
    kind: FisherKind,
    samples: usize,
    chunk: usize,
    rng: &mut ChaCha8Rng,
) -> Result<B::Buffer<f32>, RunError> {
    let (be, model) = (run.be, run.model);
    let set = run.data.set(task, Split::Train);
    let pos = draw(set.len(), samples, rng);
    let mut acc = Tensor::<B, f64>::zeros(be, 1, model.num_params())?;
    let mask = run.scenario.tasks[task].mask.as_ref().map(|m| TaskMask::new(run.scenario.outputs, m));
    let mask_t = run.data.masks[task].as_ref().map(Tensor::view);
    for part in pos.chunks(chunk.max(1)) {
        let rows = part.len();
        let labels: Vec<u32> = part.iter().map(|&p| set.host_labels[p]).collect();
        let mut chunk = gather(run, task, part, &labels)?;
        if kind == FisherKind::True {
            // Sample each label from the model's masked softmax.
            let mut tape = Tape::new(be.clone());
            let params = model.params(&mut tape, theta, false);
            let x = tape.constant_view(chunk.x.view());
            let logits = model.forward(&mut tape, &params, x)?;
            let sampled = sample_labels(&be.download(tape.value(logits))?, model.outputs(), mask.as_ref(), rng);
            be.upload_into(&sampled, chunk.labels.view_mut())?;
        }
        let mut tape = Tape::new(be.clone());
        let params = model.params(&mut tape, theta, true);
        let x = tape.constant_view(chunk.x.view());
        let trace = model.forward_trace(&mut tape, &params, x)?;
        let m = mask_t.map(|m| tape.constant_view(m));
        let mean = tape.masked_xent(trace.logits, chunk.labels.view(), m)?;
        // Sum over samples, so that each row's pre-activation gradient is that sample's own.
        let sum = tape.scale(mean, rows as f32)?;
        let grads = tape.backward(sum)?;
        if kind == FisherKind::BatchMean {
            // Sum the plain gradients; squared after the mean, below.
            for (l, layer) in model.layers().iter().enumerate() {
                for (var, range) in [(params[2 * l], &layer.weight), (params[2 * l + 1], &layer.bias)] {
                    let Some(g) = grads.get(var) else { continue };
                    be.accumulate_f64(acc.view_mut().range(range.start, range.end), g.reshape(1, g.len()))?;
                }
            }
        } else {
            accumulate_stats(be, model, &tape, &trace, &grads, Stat::Square, &mut acc)?;
        }
    }
    let mut f = be.alloc::<f32>(model.num_params())?;
    let n = pos.len().max(1) as f64;
    be.importance_mean(acc.view(), n, kind == FisherKind::BatchMean, ViewMut::row_of(be, &mut f))?;
    Ok(f)
}

/// MAS importance (Aljundi et al. 2018): `Omega_i = (1/N) sum_n |d ||f(x_n)||^2 / d theta_i|`,
/// with `f` the (masked) logits, over up to `samples` of task `task`'s training samples, in
/// batched backwards of `chunk` samples.
pub fn mas<B: RunBackend>(
    run: &Run<'_, B>,
    theta: &B::Buffer<f32>,
    task: usize,
    samples: usize,
    chunk: usize,
    rng: &mut ChaCha8Rng,
) -> Result<B::Buffer<f32>, RunError> {
    let (be, model) = (run.be, run.model);
    let set = run.data.set(task, Split::Train);
    let pos = draw(set.len(), samples, rng);
    let mut acc = Tensor::<B, f64>::zeros(be, 1, model.num_params())?;
    let mask = run.scenario.tasks[task].mask.as_ref().map(|m| TaskMask::new(run.scenario.outputs, m));
    let k = model.outputs();
    for part in pos.chunks(chunk.max(1)) {
        let rows = part.len();
        let labels: Vec<u32> = part.iter().map(|&p| set.host_labels[p]).collect();
        let chunk = gather(run, task, part, &labels)?;
        let mask_rows = match &mask {
            Some(m) => {
                let values: Vec<f32> = (0..rows * k).map(|i| if m.allows(i % k) { 1.0 } else { 0.0 }).collect();
                Some(Tensor::<B>::from_host(be, rows, k, &values)?)
            }
            None => None,
        };
        let mut tape = Tape::new(be.clone());
        let params = model.params(&mut tape, theta, true);
        let x = tape.constant_view(chunk.x.view());
        let trace = model.forward_trace(&mut tape, &params, x)?;
        let out = match &mask_rows {
            Some(m) => {
                let mv = tape.constant_view(m.view());
                tape.mul(trace.logits, mv)?
            }
            None => trace.logits,
        };
        let sq = tape.square(out)?;
        let loss = tape.sum(sq)?;
        let grads = tape.backward(loss)?;
        accumulate_stats(be, model, &tape, &trace, &grads, Stat::Abs, &mut acc)?;
    }
    let mut f = be.alloc::<f32>(model.num_params())?;
    let n = pos.len().max(1) as f64;
    be.importance_mean(acc.view(), n, false, ViewMut::row_of(be, &mut f))?;
    Ok(f)
}
