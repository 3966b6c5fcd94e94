//! Shared helpers of the engram-cl integration tests: small fake MNIST-like splits and configs.
#![allow(dead_code)]

use engram_cl::config::{InitChoice, RunConfig};
use engram_cl::methods::importance::FisherKind;
use engram_cl::methods::{EwcMode, Method, SiGrad, SiRelu, SiVariant};
use engram_cl::run::{Event, RunResult};
use engram_cl::scenario::{LabelMap, Scenario, ScenarioKind, Setting, Task, Transform, View};
use engram_cl::state::RunError;
use engram_mnist::Split;
use engram_nn::Cpu;
use engram_si::Optimizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

pub const DIM: usize = 784;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A fake 28x28 split of `n` samples, labels cycling 0..9 (so every digit occurs), each image a
/// bright horizontal band whose position encodes the digit, plus uniform noise in [0, 0.3) (so
/// that every pixel value differs and permutations are visible).
pub fn fake_split(n: usize, seed: u64) -> Split {
    let mut r = rng(seed);
    let mut images = Vec::with_capacity(n * DIM);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let d = (i % 10) as u8;
        labels.push(d);
        for row in 0..28 {
            for _col in 0..28 {
                let band = row >= 2 + 2 * d as usize && row < 4 + 2 * d as usize;
                let base = if band { 0.9 } else { 0.0 };
                images.push(base + r.random_range(0.0..0.1f32));
            }
        }
    }
    Split { n, dim: DIM, images, labels }
}

/// A fake split of arbitrary dimension with the given labels and random pixels.
pub fn tiny_split(dim: usize, labels: &[u8], seed: u64) -> Split {
    let mut r = rng(seed);
    let images = (0..labels.len() * dim).map(|_| r.random_range(-1.0..1.0f32)).collect();
    Split { n: labels.len(), dim, images, labels: labels.to_vec() }
}

pub struct Fake {
    pub train: Arc<Split>,
    pub test: Arc<Split>,
}

pub fn fake(n_train: usize, n_test: usize) -> Fake {
    Fake { train: Arc::new(fake_split(n_train, 1)), test: Arc::new(fake_split(n_test, 2)) }
}

fn view(split: &Arc<Split>, classes: &[u8], transform: Transform, labels: LabelMap) -> View {
    View {
        split: split.clone(),
        indices: Some(engram_mnist::indices_of_classes(&split.labels, classes)),
        transform,
        labels,
    }
}

/// A hand-built task-incremental scenario: tasks {0,1}, {2,3}, ... (`tasks` of them), masked.
pub fn split_scenario(tasks: usize, n_train: usize, n_test: usize) -> Scenario {
    let f = fake(n_train, n_test);
    let tasks = (0..tasks as u8)
        .map(|t| {
            let classes = [2 * t, 2 * t + 1];
            Task {
                name: format!("{}/{}", classes[0], classes[1]),
                train: view(&f.train, &classes, Transform::Identity, LabelMap::Digit),
                test: view(&f.test, &classes, Transform::Identity, LabelMap::Digit),
                mask: Some(classes.iter().map(|&c| c as usize).collect()),
            }
        })
        .collect();
    Scenario { kind: ScenarioKind::SplitMnist, setting: Setting::Task, outputs: 10, tasks }
}

/// A small, fast config.
pub fn cfg(method: Method) -> RunConfig {
    RunConfig {
        method,
        c: if method == Method::Ewc { 50.0 } else { 1.0 },
        strength: if method == Method::Ewc { 100.0 } else { 1.0 },
        xi: 1e-3,
        optimizer: Optimizer::adam(1e-3),
        epochs: 2,
        batch: 16,
        hidden: 16,
        layers: 1,
        zero_output: false,
        init: InitChoice::KaimingUniform,
        reset_optimizer: true,
        si_grad: SiGrad::Task,
        si_relu: SiRelu::Official,
        si_variant: SiVariant::Official,
        fisher: FisherKind::Empirical,
        ewc_mode: EwcMode::Separate,
        gamma: 1.0,
        importance_samples: 50,
        seed: 7,
        eval_train: false,
        memories: 32,
        memory_strength: 0.5,
        diagnose: false,
    }
}

pub const ALL_METHODS: [Method; 6] =
    [Method::Finetune, Method::Joint, Method::L2, Method::Ewc, Method::Mas, Method::Si];

/// max over i of |a_i - b_i| / (|b_i| + floor), where floor = abs_floor * max |b|.
pub fn max_rel(a: &[f32], b: &[f64], abs_floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let floor = abs_floor * scale + 1e-30;
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs() / (y.abs() + floor)).fold(0.0, f64::max)
}

/// The CPU backend the tests run on.
pub fn cpu() -> Cpu<f32> {
    Cpu::new()
}

/// A whole run on the CPU.
pub fn run(sc: &Scenario, cfg: &RunConfig, on_event: impl FnMut(Event)) -> Result<RunResult, RunError> {
    engram_cl::run::run(&cpu(), sc, cfg, on_event)
}
