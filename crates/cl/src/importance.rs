//! Importance estimates computed at the end of a task: the diagonal Fisher (EWC, online EWC)
//! and the MAS sensitivities.
//!
//! Both are means over samples of a per-sample statistic of the per-sample gradient. For a dense
//! layer `y = x W + b`, the per-sample weight gradient is the outer product `x_i d_i^T` (with
//! `d_i` the gradient at the layer's pre-activation), so the statistics come out of ONE batched
//! backward, without a per-sample loop:
//! * `sum_i (x_i d_i^T)^2 = (X * X)^T (D * D)` and `sum_i d_i^2` (Fisher),
//! * `sum_i |x_i d_i^T| = |X|^T |D|` and `sum_i |d_i|` (MAS).

use crate::scenario::View;
use engram_nn::{Backend, Mlp, Tape, TaskMask};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Which labels the Fisher uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FisherKind {
    /// The true labels (the empirical Fisher).
    Empirical,
    /// Labels sampled from the model's own predictive distribution (the true Fisher).
    True,
    /// The square of the gradient of the MEAN loss over the samples (true labels): the GEM
    /// paper's official EWC (`model/ewc.py`). A known, much weaker variant (the cross terms
    /// between samples cancel): not a Fisher, kept to reproduce that code.
    BatchMean,
}

/// Per-sample statistic to accumulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stat {
    Square,
    Abs,
}

/// Positions of up to `samples` training samples of `view`, drawn without replacement.
fn draw(view: &View, samples: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut pos: Vec<usize> = (0..view.len()).collect();
    if samples < pos.len() {
        pos.shuffle(rng);
        pos.truncate(samples);
    }
    pos
}

/// Accumulates the per-sample statistic of the parameter gradients, given the trace of a
/// forward pass whose loss is a SUM over samples (so the pre-activation gradients are the
/// per-sample ones).
fn accumulate_stats<B: Backend>(
    model: &Mlp,
    tape: &Tape<B>,
    trace: &engram_nn::Trace,
    grads: &engram_nn::Grads<B>,
    stat: Stat,
    out: &mut [f64],
) {
    let be = tape.backend();
    let f = |t: &B::Tensor| match stat {
        Stat::Square => be.mul(t, t),
        Stat::Abs => be.abs(t),
    };
    for (l, layer) in model.layers().iter().enumerate() {
        let Some(d) = grads.get(trace.preacts[l]) else { continue };
        let x = tape.value(trace.inputs[l]);
        let (fx, fd) = (f(x), f(d));
        let gw = be.to_vec(&be.matmul(&fx, true, &fd, false));
        let gb = be.to_vec(&be.sum_rows(&fd));
        for (o, v) in out[layer.weight.clone()].iter_mut().zip(gw) {
            *o += engram_nn::Float::as_f64(v);
        }
        for (o, v) in out[layer.bias.clone()].iter_mut().zip(gb) {
            *o += engram_nn::Float::as_f64(v);
        }
    }
}

/// Diagonal Fisher of the task's (masked) predictive distribution at `theta`:
/// `F_i = (1/N) sum_n (d log p(y_n | x_n) / d theta_i)^2` over up to `samples` training samples
/// ([`FisherKind::BatchMean`]: `F_i = ((1/N) sum_n d log p(y_n | x_n) / d theta_i)^2`).
#[allow(clippy::too_many_arguments)]
pub fn fisher<B: Backend>(
    be: &B,
    model: &Mlp,
    theta: &[B::T],
    view: &View,
    mask: Option<&TaskMask>,
    kind: FisherKind,
    samples: usize,
    chunk: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let pos = draw(view, samples, rng);
    let mut acc = vec![0f64; model.num_params()];
    let mut tape = Tape::new(be.clone());
    let mask_t = mask.map(|m| m.tensor(be));
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for part in pos.chunks(chunk.max(1)) {
        x.clear();
        y.clear();
        view.fill(part.iter().copied(), &mut x, &mut y);
        let rows = part.len();
        if kind == FisherKind::True {
            // Sample each label from the model's masked softmax.
            let logits = model.logits(&mut tape, theta, be.from_vec(rows, model.inputs(), engram_nn::to_t::<B>(&x)));
            let lv = be.to_vec(&logits);
            let k = model.outputs();
            for (r, label) in y.iter_mut().enumerate() {
                let row: Vec<f64> = lv[r * k..(r + 1) * k].iter().map(|v| engram_nn::Float::as_f64(*v)).collect();
                let allowed = |j: usize| mask.is_none_or(|m| m.allows(j));
                let mx = (0..k).filter(|&j| allowed(j)).map(|j| row[j]).fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = (0..k).map(|j| if allowed(j) { (row[j] - mx).exp() } else { 0.0 }).collect();
                let mut u = rng.random::<f64>() * w.iter().sum::<f64>();
                *label = (0..k)
                    .find(|&j| {
                        u -= w[j];
                        u < 0.0 && w[j] > 0.0
                    })
                    .unwrap_or_else(|| (0..k).rev().find(|&j| w[j] > 0.0).unwrap_or(0)) as u32;
            }
        }
        tape.clear();
        let params = model.load(&mut tape, theta, true);
        let xv = tape.constant(be.from_vec(rows, model.inputs(), engram_nn::to_t::<B>(&x)));
        let trace = model.forward_trace(&mut tape, &params, xv);
        let mean = engram_nn::masked_loss(&mut tape, trace.logits, &y, mask_t.as_ref());
        // Sum over samples, so that each row's pre-activation gradient is that sample's own.
        let sum = tape.scale(mean, <B::T as engram_nn::Float>::from_f64_lossy(rows as f64));
        let grads = tape.backward(sum);
        if kind == FisherKind::BatchMean {
            // Sum the plain gradients; squared after the mean, below.
            for (l, layer) in model.layers().iter().enumerate() {
                for (var, range) in [(params[2 * l], layer.weight.clone()), (params[2 * l + 1], layer.bias.clone())] {
                    let Some(g) = grads.get(var) else { continue };
                    for (o, v) in acc[range].iter_mut().zip(be.to_vec(g)) {
                        *o += engram_nn::Float::as_f64(v);
                    }
                }
            }
        } else {
            accumulate_stats(model, &tape, &trace, &grads, Stat::Square, &mut acc);
        }
    }
    let n = pos.len().max(1) as f64;
    if kind == FisherKind::BatchMean {
        return acc.iter().map(|&v| (v / n).powi(2) as f32).collect();
    }
    acc.iter().map(|&v| (v / n) as f32).collect()
}

/// MAS importance (Aljundi et al. 2018): `Omega_i = (1/N) sum_n |d ||f(x_n)||^2 / d theta_i|`,
/// with `f` the (masked) logits, over up to `samples` training samples.
#[allow(clippy::too_many_arguments)]
pub fn mas<B: Backend>(
    be: &B,
    model: &Mlp,
    theta: &[B::T],
    view: &View,
    mask: Option<&TaskMask>,
    samples: usize,
    chunk: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let pos = draw(view, samples, rng);
    let mut acc = vec![0f64; model.num_params()];
    let mut tape = Tape::new(be.clone());
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let k = model.outputs();
    for part in pos.chunks(chunk.max(1)) {
        x.clear();
        y.clear();
        view.fill(part.iter().copied(), &mut x, &mut y);
        let rows = part.len();
        tape.clear();
        let params = model.load(&mut tape, theta, true);
        let xv = tape.constant(be.from_vec(rows, model.inputs(), engram_nn::to_t::<B>(&x)));
        let trace = model.forward_trace(&mut tape, &params, xv);
        let out = match mask {
            Some(m) => {
                let one = <B::T as engram_nn::Float>::from_f64_lossy(1.0);
                let zero = <B::T as engram_nn::Float>::from_f64_lossy(0.0);
                let mv = (0..rows * k).map(|i| if m.allows(i % k) { one } else { zero }).collect();
                let mt = tape.constant(be.from_vec(rows, k, mv));
                tape.mul(trace.logits, mt)
            }
            None => trace.logits,
        };
        let sq = tape.square(out);
        let loss = tape.sum(sq);
        let grads = tape.backward(loss);
        accumulate_stats(model, &tape, &trace, &grads, Stat::Abs, &mut acc);
    }
    let n = pos.len().max(1) as f64;
    acc.iter().map(|&v| (v / n) as f32).collect()
}
