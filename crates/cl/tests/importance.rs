//! importance::fisher and importance::mas (on the CPU backend) against a brute-force per-sample
//! computation on a tiny MLP (one backward pass per sample).

mod common;

use common::{cfg, cpu, max_rel, rng, tiny_split};
use engram_cl::data::TaskData;
use engram_cl::methods::importance::{self, FisherKind};
use engram_cl::methods::Method;
use engram_cl::scenario::{LabelMap, Scenario, ScenarioKind, Setting, Task, Transform, View};
use engram_cl::state::Run;
use engram_nn::{Backend, Batch, Cpu, Init, Mlp, Tape, TaskMask, Tensor, ViewMut};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

const SIZES: [usize; 3] = [6, 5, 3];

fn model_and_theta(seed: u64) -> (Mlp, Vec<f32>) {
    let model = Mlp::new(&SIZES);
    let theta = model.init(&mut rng(seed), Init::default());
    (model, theta)
}

fn view(labels: &[u8], indices: Option<Vec<u32>>, seed: u64) -> View {
    View {
        split: Arc::new(tiny_split(SIZES[0], labels, seed)),
        indices,
        transform: Transform::Identity,
        labels: LabelMap::Digit,
    }
}

/// Which estimate.
#[derive(Clone, Copy)]
enum Estimate {
    Fisher(FisherKind),
    Mas,
}

/// The estimate on the CPU backend, for a one-task scenario over `v` with the multi-head mask
/// `mask`, at `theta`.
#[allow(clippy::too_many_arguments)]
fn estimate(
    what: Estimate,
    model: &Mlp,
    theta: &[f32],
    v: &View,
    mask: Option<&TaskMask>,
    samples: usize,
    chunk: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let allowed = mask.map(|m| (0..SIZES[2]).filter(|&c| m.allows(c)).collect());
    let task = Task { name: "t".into(), train: v.clone(), test: v.clone(), mask: allowed };
    let sc = Scenario { kind: ScenarioKind::SplitMnist, setting: Setting::Task, outputs: SIZES[2], tasks: vec![task] };
    let be = cpu();
    let data = TaskData::upload(&be, &sc).unwrap();
    let config = cfg(Method::Ewc);
    let run = Run { be: &be, scenario: &sc, cfg: &config, model, data: &data };
    let th = be.upload(theta).unwrap();
    let out = match what {
        Estimate::Fisher(kind) => importance::fisher(&run, &th, 0, kind, samples, chunk, rng),
        Estimate::Mas => importance::mas(&run, &th, 0, samples, chunk, rng),
    }
    .unwrap();
    be.download(engram_nn::View::row_of(&be, &out)).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn fisher(
    model: &Mlp,
    theta: &[f32],
    v: &View,
    mask: Option<&TaskMask>,
    kind: FisherKind,
    samples: usize,
    chunk: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    estimate(Estimate::Fisher(kind), model, theta, v, mask, samples, chunk, rng)
}

fn mas(
    model: &Mlp,
    theta: &[f32],
    v: &View,
    mask: Option<&TaskMask>,
    samples: usize,
    chunk: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    estimate(Estimate::Mas, model, theta, v, mask, samples, chunk, rng)
}

/// The logits of one input, forward only.
fn logits(model: &Mlp, theta: &[f32], x: &[f32]) -> Vec<f32> {
    let be = cpu();
    let th = be.upload(theta).unwrap();
    let xt = Tensor::<Cpu<f32>>::from_host(&be, 1, x.len(), x).unwrap();
    let mut tape = Tape::new(be);
    let params = model.params(&mut tape, &th, false);
    let xv = tape.constant_view(xt.view());
    let out = model.forward(&mut tape, &params, xv).unwrap();
    be.download(tape.value(out)).unwrap()
}

/// Each sample's gradient of its own (masked) cross-entropy, with label `label(p)`.
fn per_sample_xent_grads(
    model: &Mlp,
    theta: &[f32],
    v: &View,
    mask: Option<&TaskMask>,
    label: impl Fn(usize, u32) -> u32,
) -> Vec<Vec<f32>> {
    let be = cpu();
    let th = be.upload(theta).unwrap();
    let mask_t = mask.map(|m| m.tensor(&be).unwrap());
    (0..v.len())
        .map(|p| {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            v.fill([p], &mut x, &mut y);
            let xt = Tensor::<Cpu<f32>>::from_host(&be, 1, SIZES[0], &x).unwrap();
            let yt = Tensor::<Cpu<f32>, u32>::from_host(&be, 1, 1, &[label(p, y[0])]).unwrap();
            let mut g = be.alloc::<f32>(model.num_params()).unwrap();
            let mut loss = Tensor::<Cpu<f32>>::zeros(&be, 1, 1).unwrap();
            let batch = Batch { x: xt.view(), labels: yt.view(), mask: mask_t.as_ref().map(Tensor::view) };
            engram_nn::loss_and_grad(&be, model, &th, batch, ViewMut::row_of(&be, &mut g), loss.view_mut()).unwrap();
            g
        })
        .collect()
}

/// Each sample's gradient of the sum of its squared (masked) logits, straight from the tape.
fn per_sample_sq_logit_grads(model: &Mlp, theta: &[f32], v: &View, mask: Option<&TaskMask>) -> Vec<Vec<f32>> {
    let be = cpu();
    let th = be.upload(theta).unwrap();
    let mask_t = mask.map(|m| m.tensor(&be).unwrap());
    (0..v.len())
        .map(|p| {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            v.fill([p], &mut x, &mut y);
            let xt = Tensor::<Cpu<f32>>::from_host(&be, 1, SIZES[0], &x).unwrap();
            let mut tape = Tape::new(be);
            let params = model.params(&mut tape, &th, true);
            let xv = tape.constant_view(xt.view());
            let mut logits = model.forward(&mut tape, &params, xv).unwrap();
            if let Some(m) = &mask_t {
                let mt = tape.constant_view(m.view());
                logits = tape.mul(logits, mt).unwrap();
            }
            let sq = tape.square(logits).unwrap();
            let s = tape.sum(sq).unwrap();
            let mut g = be.alloc::<f32>(model.num_params()).unwrap();
            tape.backward_into(s, ViewMut::row_of(&be, &mut g)).unwrap();
            g
        })
        .collect()
}

fn mean_of(gs: &[Vec<f32>], f: impl Fn(f64) -> f64) -> Vec<f64> {
    let n = gs.len() as f64;
    (0..gs[0].len()).map(|i| gs.iter().map(|g| f(g[i] as f64)).sum::<f64>() / n).collect()
}

const LABELS: [u8; 11] = [0, 1, 2, 2, 1, 0, 0, 2, 1, 1, 0];

/// Empirical Fisher without a mask = mean of squared per-sample gradients, for several chunk
/// sizes (chunk boundaries must not matter).
#[test]
fn empirical_fisher_matches_per_sample_brute_force() {
    let (model, theta) = model_and_theta(1);
    let v = view(&LABELS, None, 2);
    let want = mean_of(&per_sample_xent_grads(&model, &theta, &v, None, |_, y| y), |g| g * g);
    assert!(want.iter().filter(|&&w| w > 0.0).count() > model.num_params() / 2, "a non-trivial check");
    for chunk in [1, 4, 11, 256] {
        let got = fisher(&model, &theta, &v, None, FisherKind::Empirical, 1000, chunk, &mut rng(0));
        let err = max_rel(&got, &want, 1e-6);
        assert!(err < 1e-4, "chunk {chunk}: relative error {err}");
    }
}

/// Empirical Fisher of the masked loss (classes {0, 2} of 3), over an index subset of the split.
#[test]
fn empirical_fisher_with_mask_matches_brute_force() {
    let (model, theta) = model_and_theta(3);
    let idx: Vec<u32> = LABELS.iter().enumerate().filter(|(_, &l)| l != 1).map(|(i, _)| i as u32).collect();
    let v = view(&LABELS, Some(idx), 4);
    let mask = TaskMask::new(3, &[0, 2]);
    let want = mean_of(&per_sample_xent_grads(&model, &theta, &v, Some(&mask), |_, y| y), |g| g * g);
    let got = fisher(&model, &theta, &v, Some(&mask), FisherKind::Empirical, 1000, 3, &mut rng(0));
    let err = max_rel(&got, &want, 1e-6);
    assert!(err < 1e-4, "relative error {err}");
    // The masked output unit gets no gradient at all.
    let last = &model.layers()[1];
    for (k, w) in got[last.weight.clone()].iter().enumerate() {
        if k % 3 == 1 {
            assert_eq!(*w, 0.0, "masked class weight {k}");
        }
    }
    assert_eq!(got[last.bias.start + 1], 0.0);
}

/// The GEM code's EWC "Fisher" (`FisherKind::BatchMean`) = the square of the mean per-sample
/// gradient, whatever the chunking; never above the empirical Fisher (Jensen).
#[test]
fn batch_mean_fisher_is_the_squared_mean_gradient() {
    let (model, theta) = model_and_theta(11);
    let v = view(&LABELS, None, 12);
    let gs = per_sample_xent_grads(&model, &theta, &v, None, |_, y| y);
    let want: Vec<f64> = mean_of(&gs, |g| g).iter().map(|m| m * m).collect();
    assert!(want.iter().filter(|&&w| w > 0.0).count() > model.num_params() / 2, "a non-trivial check");
    let emp = fisher(&model, &theta, &v, None, FisherKind::Empirical, 1000, 256, &mut rng(0));
    for chunk in [1, 4, 11, 256] {
        let got = fisher(&model, &theta, &v, None, FisherKind::BatchMean, 1000, chunk, &mut rng(0));
        let err = max_rel(&got, &want, 1e-6);
        assert!(err < 1e-3, "chunk {chunk}: relative error {err}");
        for (b, e) in got.iter().zip(&emp) {
            assert!(*b <= e * (1.0 + 1e-4) + 1e-9, "batch-mean {b} above empirical {e}");
        }
    }
    // One sample: the two coincide.
    let one = View { indices: Some(vec![3]), ..v.clone() };
    let a = fisher(&model, &theta, &one, None, FisherKind::BatchMean, 1000, 4, &mut rng(0));
    let b = fisher(&model, &theta, &one, None, FisherKind::Empirical, 1000, 4, &mut rng(0));
    assert!(max_rel(&a, &b.iter().map(|&x| x as f64).collect::<Vec<_>>(), 1e-6) < 1e-4);
}

/// With `samples` below the view's size, the Fisher is the mean over exactly `samples` samples:
/// on a view of identical samples it equals the single-sample value, whatever the count.
#[test]
fn fisher_subsample_is_a_mean_not_a_sum() {
    let (model, theta) = model_and_theta(5);
    let split = Arc::new(tiny_split(6, &[1], 6));
    let v = View { split, indices: Some(vec![0; 20]), transform: Transform::Identity, labels: LabelMap::Digit };
    let one = View { indices: Some(vec![0]), ..v.clone() };
    let want = mean_of(&per_sample_xent_grads(&model, &theta, &one, None, |_, y| y), |g| g * g);
    for samples in [1, 7, 20, 100] {
        let got = fisher(&model, &theta, &v, None, FisherKind::Empirical, samples, 4, &mut rng(9));
        let err = max_rel(&got, &want, 1e-6);
        assert!(err < 1e-4, "samples {samples}: relative error {err}");
    }
}

/// The true Fisher samples labels from the model's masked softmax: over many copies of one
/// input it approaches sum_y p(y|x) g_y^2 (allowed classes only).
#[test]
fn true_fisher_approaches_its_expectation() {
    let (model, mut theta) = model_and_theta(7);
    // A confident model (probabilities far from uniform), so that label choice matters.
    let last = model.layers()[1].clone();
    for w in &mut theta[last.weight.start..last.bias.end] {
        *w *= 6.0;
    }
    let split = Arc::new(tiny_split(6, &[0], 8));
    let n = 4000;
    let v = View { split, indices: Some(vec![0; n]), transform: Transform::Identity, labels: LabelMap::Digit };
    let one = View { indices: Some(vec![0]), ..v.clone() };
    for allowed in [vec![0usize, 1, 2], vec![1, 2]] {
        let mask = TaskMask::new(3, &allowed);
        // p(y|x) over the allowed classes.
        let logits = {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            one.fill([0], &mut x, &mut y);
            logits(&model, &theta, &x)
        };
        let z: f64 = allowed.iter().map(|&c| (logits[c] as f64).exp()).sum();
        let mut want = vec![0f64; model.num_params()];
        for &c in &allowed {
            let p = (logits[c] as f64).exp() / z;
            let g = &per_sample_xent_grads(&model, &theta, &one, Some(&mask), |_, _| c as u32)[0];
            for (w, gi) in want.iter_mut().zip(g) {
                *w += p * (*gi as f64).powi(2);
            }
        }
        let got = fisher(&model, &theta, &v, Some(&mask), FisherKind::True, n, 256, &mut rng(10));
        let deviation = |a: &[f32], b: &[f64]| {
            let (num, den) = a.iter().zip(b).fold((0.0, 0.0), |(s, t), (&x, &y)| (s + (x as f64 - y).abs(), t + y));
            num / den
        };
        let dev = deviation(&got, &want);
        assert!(dev < 0.05, "allowed {allowed:?}: mean relative deviation {dev}");
        // Far from the empirical Fisher of any single label (so the check above can fail).
        for &c in &allowed {
            let emp = mean_of(&per_sample_xent_grads(&model, &theta, &one, Some(&mask), |_, _| c as u32), |g| g * g);
            let d = deviation(&got, &emp);
            assert!(d > 0.2, "allowed {allowed:?}: the true Fisher is close ({d}) to the empirical one of label {c}");
        }
    }
}

/// MAS = mean over samples of |d sum(logits^2) / d theta|, with and without a mask.
#[test]
fn mas_matches_per_sample_brute_force() {
    let (model, theta) = model_and_theta(11);
    let v = view(&LABELS, None, 12);
    for mask in [None, Some(TaskMask::new(3, &[1, 2]))] {
        let want = mean_of(&per_sample_sq_logit_grads(&model, &theta, &v, mask.as_ref()), f64::abs);
        for chunk in [1, 5, 256] {
            let got = mas(&model, &theta, &v, mask.as_ref(), 1000, chunk, &mut rng(0));
            let err = max_rel(&got, &want, 1e-6);
            assert!(err < 1e-4, "mask {mask:?}, chunk {chunk}: relative error {err}");
        }
    }
}

/// Both importances are deterministic for a seed and use the rng only to pick samples.
#[test]
fn importances_are_deterministic() {
    let (model, theta) = model_and_theta(13);
    let v = view(&LABELS, None, 14);
    let a = fisher(&model, &theta, &v, None, FisherKind::True, 5, 2, &mut rng(1));
    let b = fisher(&model, &theta, &v, None, FisherKind::True, 5, 2, &mut rng(1));
    assert_eq!(a, b);
    let a = mas(&model, &theta, &v, None, 5, 2, &mut rng(1));
    let b = mas(&model, &theta, &v, None, 5, 2, &mut rng(1));
    assert_eq!(a, b);
}
