//! The quadratic penalty's state (engram_si::PenaltyState, on the CPU backend): the
//! consolidation rules of L2, EWC (separate and online) and MAS, and the state size of every
//! method in a run.

mod common;

use common::{cfg, cpu, rng, run, split_scenario};
use engram_cl::config::RunConfig;
use engram_cl::methods::{EwcMode, Method};
use engram_nn::{Backend, Cpu, View};
use engram_si::{Consolidation, PenaltyState};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The penalty state of a quadratic method on the CPU, read back as host vectors.
struct Penalty {
    state: PenaltyState<Cpu<f32>>,
    big_omega: Vec<f32>,
    theta_star: Vec<f32>,
}

impl Penalty {
    fn new(method: Method, theta0: &[f32]) -> Self {
        let be = cpu();
        let theta = be.upload(theta0).unwrap();
        let state = PenaltyState::new(&be, &theta, method == Method::Si).unwrap();
        let mut p = Self { state, big_omega: vec![], theta_star: vec![] };
        p.sync();
        p
    }

    fn sync(&mut self) {
        let be = cpu();
        self.big_omega = be.download(View::row_of(&be, &self.state.big_omega)).unwrap();
        self.theta_star = be.download(View::row_of(&be, &self.state.theta_star)).unwrap();
    }

    /// Folds `new` (the importance at `theta`) in as `method` does.
    fn consolidate(&mut self, method: Method, theta: &[f32], new: Option<&[f32]>, mode: EwcMode, gamma: f32) {
        let rule = match (method, mode) {
            (Method::L2, _) => Consolidation::L2,
            (Method::Ewc, EwcMode::Separate) => Consolidation::EwcSeparate,
            (Method::Ewc, EwcMode::Online) => Consolidation::EwcOnline { gamma },
            (Method::Mas, _) => Consolidation::Mas,
            (m, _) => panic!("{m:?} has no consolidation rule"),
        };
        let be = cpu();
        let theta = be.upload(theta).unwrap();
        let new = new.map(|n| be.upload(n).unwrap());
        self.state.consolidate(&be, rule, &theta, new.as_ref()).unwrap();
        self.sync();
    }
}

const N: usize = 257;

fn uniform(r: &mut ChaCha8Rng, lo: f32, hi: f32) -> Vec<f32> {
    (0..N).map(|_| r.random_range(lo..hi)).collect()
}

/// A Fisher-like vector: non-negative, with some exact zeros.
fn fisher_like(r: &mut ChaCha8Rng) -> Vec<f32> {
    (0..N).map(|i| if i % 11 == 0 { 0.0 } else { r.random_range(0.0..2.0f32) }).collect()
}

/// L2: Omega = 1 everywhere and theta* = theta, at each consolidation.
#[test]
fn l2_sets_unit_omega_and_anchor() {
    let mut r = rng(1);
    let theta0 = uniform(&mut r, -1.0, 1.0);
    let mut p = Penalty::new(Method::L2, &theta0);
    assert!(p.big_omega.iter().all(|&o| o == 0.0));
    assert_eq!(p.theta_star, theta0);
    assert!(p.state.omega.is_none());
    for _ in 0..3 {
        let theta = uniform(&mut r, -1.0, 1.0);
        p.consolidate(Method::L2, &theta, None, EwcMode::Separate, 0.5);
        assert!(p.big_omega.iter().all(|&o| o == 1.0));
        assert_eq!(p.theta_star, theta);
    }
}

/// EWC with one penalty per task: after K consolidations (F_k at theta_k) the single quadratic's
/// gradient 2 Omega (theta - theta*) equals sum_k 2 F_k (theta - theta_k) for random theta.
#[test]
fn ewc_separate_gradient_equals_sum_of_per_task_penalties() {
    for (seed, k) in [(2u64, 2usize), (3, 2), (4, 5)] {
        let mut r = rng(seed);
        let mut p = Penalty::new(Method::Ewc, &uniform(&mut r, -1.0, 1.0));
        let mut hist = Vec::new();
        for _ in 0..k {
            let (f, th) = (fisher_like(&mut r), uniform(&mut r, -1.0, 1.0));
            p.consolidate(Method::Ewc, &th, Some(&f), EwcMode::Separate, 0.3);
            hist.push((f, th));
        }
        for i in 0..N {
            let want: f64 = hist.iter().map(|(f, _)| f[i] as f64).sum();
            assert!((p.big_omega[i] as f64 - want).abs() <= 1e-6 * want.max(1.0), "Omega[{i}]");
        }
        for _ in 0..5 {
            let theta = uniform(&mut r, -2.0, 2.0);
            for i in 0..N {
                let got = 2.0 * p.big_omega[i] as f64 * (theta[i] as f64 - p.theta_star[i] as f64);
                let terms: Vec<f64> =
                    hist.iter().map(|(f, th)| 2.0 * f[i] as f64 * (theta[i] as f64 - th[i] as f64)).collect();
                let want: f64 = terms.iter().sum();
                // Relative to the size of the per-task terms (worst seen: 3.3e-6).
                let scale: f64 = terms.iter().map(|t| t.abs()).sum();
                assert!(
                    (got - want).abs() <= 1e-5 * scale + 1e-12,
                    "seed {seed}, K {k}, param {i}: gradient {got} vs sum of per-task gradients {want}"
                );
            }
        }
    }
}

/// Online EWC: Omega = gamma F1 + F2 and theta* = theta2 (and gamma 0 keeps only the last).
#[test]
fn ewc_online_decays_and_anchors_at_latest() {
    for gamma in [0.0f32, 0.7, 1.0] {
        let mut r = rng(5);
        let mut p = Penalty::new(Method::Ewc, &uniform(&mut r, -1.0, 1.0));
        let (f1, th1, f2, th2) =
            (fisher_like(&mut r), uniform(&mut r, -1.0, 1.0), fisher_like(&mut r), uniform(&mut r, -1.0, 1.0));
        p.consolidate(Method::Ewc, &th1, Some(&f1), EwcMode::Online, gamma);
        assert_eq!(p.big_omega, f1, "first task: gamma * 0 + F1");
        assert_eq!(p.theta_star, th1);
        p.consolidate(Method::Ewc, &th2, Some(&f2), EwcMode::Online, gamma);
        for i in 0..N {
            let want = gamma * f1[i] + f2[i];
            assert!((p.big_omega[i] - want).abs() <= 1e-6 * want.abs().max(1.0), "gamma {gamma}, param {i}");
        }
        assert_eq!(p.theta_star, th2);
    }
}

/// MAS: Omega accumulates the importances; theta* is the latest theta.
#[test]
fn mas_accumulates() {
    let mut r = rng(6);
    let mut p = Penalty::new(Method::Mas, &uniform(&mut r, -1.0, 1.0));
    let mut sum = vec![0f64; N];
    for _ in 0..4 {
        let (m, th) = (fisher_like(&mut r), uniform(&mut r, -1.0, 1.0));
        p.consolidate(Method::Mas, &th, Some(&m), EwcMode::Separate, 0.0);
        for (s, v) in sum.iter_mut().zip(&m) {
            *s += *v as f64;
        }
        assert_eq!(p.theta_star, th);
        assert!(p.big_omega.iter().zip(&sum).all(|(&o, &s)| (o as f64 - s).abs() <= 1e-6 * s.max(1.0)));
    }
}

/// A run keeps, besides the model and the optimizer: Omega and theta* for L2, EWC and MAS, and
/// omega too for SI (the same vectors whatever the number of tasks: 2 and 5 tasks here); nothing
/// for fine-tuning and joint training.
#[test]
fn state_sizes_by_method() {
    for m in [Method::Finetune, Method::Joint, Method::L2, Method::Ewc, Method::Mas, Method::Si] {
        let vectors = match m {
            Method::Si => 3,
            Method::L2 | Method::Ewc | Method::Mas => 2,
            _ => 0,
        };
        for tasks in [2, 5] {
            let c = RunConfig { epochs: 1, ..cfg(m) };
            let res = run(&split_scenario(tasks, 40, 20), &c, |_| {}).unwrap();
            assert_eq!(res.strategy_state_bytes, 4 * vectors * res.num_params, "{m:?}, {tasks} tasks");
        }
    }
}
