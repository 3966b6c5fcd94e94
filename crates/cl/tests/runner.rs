//! The run loop (engram_cl::run) and RunConfig::validate on tiny synthetic scenarios (fake 28x28
//! images), on the CPU backend.

mod common;

use common::{cfg, cpu, run, split_scenario, ALL_METHODS};
use engram_cl::config::RunConfig;
use engram_cl::estimate::estimate_seconds;
use engram_cl::methods::{EwcMode, Method, SiGrad, SiRelu, SiVariant};
use engram_cl::metrics;
use engram_cl::run::{Event, RunResult};
use engram_cl::scenario::{build, Scenario, ScenarioKind, ScenarioSpec};
use engram_cl::state::RunError;
use engram_si::{fused_step_f32, prev_step_accumulate_f32, Optimizer, Slices, StepConfig};

fn validate(c: &RunConfig) -> Result<(), engram_cl::config::InvalidConfig> {
    c.validate()
}

fn run_ok(sc: &Scenario, c: &RunConfig) -> RunResult {
    run(sc, c, |_| {}).unwrap_or_else(|e| panic!("{:?}: {e}", c.method))
}

fn bits(r: &[Vec<f64>]) -> Vec<Vec<u64>> {
    r.iter().map(|row| row.iter().map(|v| v.to_bits()).collect()).collect()
}

/// Every method: R is T x T (1 x T for joint), b has T entries, values in [0, 1], metrics equal
/// metrics::compute(R, b), per-task times and state size as documented, and the events agree
/// with the result (one TaskStart/TaskEnd per row, as many Steps as announced).
#[test]
fn run_shapes_metrics_and_events_for_every_method() {
    let sc = split_scenario(3, 100, 60);
    let t = sc.tasks.len();
    for m in ALL_METHODS {
        let c = RunConfig { epochs: 1, ..cfg(m) };
        let (mut starts, mut ends, mut steps, mut announced) = (0, Vec::new(), 0usize, 0usize);
        let res = run(&sc, &c, |e| match e {
            Event::TaskStart { steps: s, .. } => {
                starts += 1;
                announced += s;
            }
            Event::Step { loss } => {
                assert!(loss.is_finite());
                steps += 1;
            }
            Event::TaskEnd { row, .. } => ends.push(row.to_vec()),
            Event::TrainingDone { .. } => {}
        })
        .unwrap_or_else(|e| panic!("{m:?}: {e}"));
        let rows = if m == Method::Joint { 1 } else { t };
        assert_eq!(res.r.len(), rows, "{m:?}");
        assert!(res.r.iter().all(|row| row.len() == t));
        assert_eq!(res.b.len(), t);
        assert!(res.r.iter().flatten().chain(&res.b).all(|v| (0.0..=1.0).contains(v)));
        assert_eq!((starts, ends.len()), (rows, rows));
        assert_eq!(ends, res.r, "TaskEnd rows are the rows of R");
        assert_eq!(steps, announced);
        let n_train: usize = sc.tasks.iter().map(|t| t.train.len()).sum();
        let want_steps = if m == Method::Joint {
            n_train.div_ceil(c.batch) * c.epochs
        } else {
            sc.tasks.iter().map(|t| t.train.len().div_ceil(c.batch)).sum::<usize>() * c.epochs
        };
        assert_eq!(steps, want_steps);
        assert_eq!(res.per_task_seconds.len(), rows);
        assert!(res.wall_seconds >= res.per_task_seconds.iter().sum::<f64>() * 0.99);
        assert_eq!(res.task_names, vec!["0/1", "2/3", "4/5"]);
        let n = (784 * 16 + 16) + (16 * 10 + 10);
        assert_eq!(res.num_params, n);
        let state = match m {
            Method::Si => 12 * n,
            Method::L2 | Method::Ewc | Method::Mas => 8 * n,
            Method::Finetune | Method::Joint => 0,
            // Not in ALL_METHODS: their state (the memories) is checked in tests/gem.rs.
            Method::Gem | Method::Agem => res.strategy_state_bytes,
        };
        assert_eq!(res.strategy_state_bytes, state, "{m:?}");
        if m == Method::Joint {
            let mean = res.r[0].iter().sum::<f64>() / t as f64;
            assert_eq!(res.metrics.acc, mean);
            assert_eq!((res.metrics.bwt, res.metrics.fwt, res.metrics.forgetting), (None, None, None));
        } else {
            assert_eq!(res.metrics, metrics::compute(&res.r, &res.b), "{m:?}");
        }
        // The easy fake tasks are learned.
        for j in 0..rows {
            let learned = if m == Method::Joint { res.r[0][j] } else { res.r[j][j] };
            assert!(learned > 0.7, "{m:?}: task {j} learned only to {learned} (chance 0.5)");
        }
        assert!(res.r_train.is_none() && res.metrics_train.is_none());
    }
}

/// `eval_train` adds a training-set matrix of the same shape.
#[test]
fn eval_train_adds_training_matrix() {
    let sc = split_scenario(2, 100, 60);
    let res = run_ok(&sc, &RunConfig { eval_train: true, epochs: 1, ..cfg(Method::Si) });
    let rt = res.r_train.as_ref().expect("asked for");
    assert_eq!((rt.len(), rt[0].len()), (2, 2));
    assert_eq!(res.metrics_train.as_ref().unwrap(), &metrics::compute(rt, &res.b));
}

/// A scenario built by scenario::build (Split MNIST, domain setting, on fake data) runs too.
#[test]
fn run_on_built_scenario() {
    let f = common::fake(200, 100);
    let spec =
        ScenarioSpec { setting: engram_cl::scenario::Setting::Domain, ..ScenarioSpec::new(ScenarioKind::SplitMnist) };
    let sc = build(&spec, f.train, f.test).unwrap();
    let res = run_ok(&sc, &RunConfig { epochs: 1, ..cfg(Method::Ewc) });
    assert_eq!((res.r.len(), res.r[0].len(), res.num_params), (5, 5, 784 * 16 + 16 + 16 * 2 + 2));
}

/// A huge SGD learning rate makes the loss non-finite: the error names the task, the epoch, the
/// step and the learning rate as the likely cause. (On this data lr 1e6 is not enough: the loss
/// peaks near 1e23, every ReLU dies and the loss comes back to a finite value; 1e20 overflows.)
#[test]
fn huge_learning_rate_is_reported_as_non_finite() {
    let sc = split_scenario(2, 100, 60);
    let c = RunConfig { optimizer: Optimizer::Sgd { lr: 1e20 }, ..cfg(Method::Finetune) };
    let err = run(&sc, &c, |_| {}).expect_err("must diverge");
    let msg = err.to_string();
    match &err {
        RunError::NonFinite { task, epoch, step, name, .. } => {
            assert_eq!((*task, *epoch), (1, 1), "{msg}");
            assert!(*step >= 2, "the first step's loss is computed before any update: {msg}");
            assert_eq!(name, "0/1");
            assert!(msg.contains(&format!("step {step}")), "{msg}");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    for part in ["task 1 (0/1)", "epoch 1", "likely cause", "learning rate (100000000000000000000)"] {
        assert!(msg.contains(part), "'{part}' missing from: {msg}");
    }
}

/// A huge SI strength makes the penalty explode on task 2: the error blames the penalty strength.
#[test]
fn huge_si_strength_is_reported_as_non_finite() {
    let sc = split_scenario(2, 100, 60);
    let c = RunConfig { optimizer: Optimizer::Sgd { lr: 0.1 }, c: 1e30, strength: 1e30, ..cfg(Method::Si) };
    let err = run(&sc, &c, |_| {}).expect_err("must diverge");
    let msg = err.to_string();
    let RunError::NonFinite { task, .. } = &err else { panic!("expected NonFinite, got {err:?}") };
    assert_eq!(*task, 2, "{msg}");
    for part in ["task 2 (2/3)", "step ", "likely cause", "penalty strength (c = 1000000000000000000000000000000)"] {
        assert!(msg.contains(part), "'{part}' missing from: {msg}");
    }
}

/// validate (and run, through it) rejects impossible configurations, naming the flag.
#[test]
fn validate_rejects_bad_configs_naming_the_flag() {
    let base = cfg(Method::Si);
    assert!(validate(&base).is_ok());
    let cases: Vec<(RunConfig, &str)> = vec![
        (RunConfig { epochs: 0, ..base.clone() }, "--epochs"),
        (RunConfig { batch: 0, ..base.clone() }, "--batch"),
        (RunConfig { hidden: 0, ..base.clone() }, "--hidden"),
        (RunConfig { xi: 0.0, ..base.clone() }, "--xi"),
        (RunConfig { xi: -1e-3, ..base.clone() }, "--xi"),
        (RunConfig { xi: f32::NAN, ..base.clone() }, "--xi"),
        (RunConfig { strength: -1.0, ..base.clone() }, "--c / --lambda"),
        (RunConfig { strength: f32::INFINITY, ..base.clone() }, "--c / --lambda"),
        (RunConfig { gamma: 1.5, ..base.clone() }, "--gamma"),
        (RunConfig { gamma: -0.1, ..base.clone() }, "--gamma"),
        (RunConfig { gamma: f32::NAN, ..base.clone() }, "--gamma"),
        (RunConfig { optimizer: Optimizer::Sgd { lr: 0.0 }, ..base.clone() }, "--lr"),
        (RunConfig { optimizer: Optimizer::adam(f32::NAN), ..base.clone() }, "--lr"),
        (RunConfig { importance_samples: 0, ..base.clone() }, "--importance-samples"),
    ];
    let sc = split_scenario(2, 40, 20);
    for (c, flag) in cases {
        let msg = match validate(&c) {
            Err(e) => e.0,
            Ok(()) => panic!("{flag}: expected a refusal"),
        };
        assert!(msg.contains(flag), "'{flag}' missing from: {msg}");
        assert!(matches!(run(&sc, &c, |_| {}), Err(RunError::Invalid(_))), "{flag}: run must refuse too");
    }
    // Edge values that are fine.
    for c in [RunConfig { gamma: 0.0, ..base.clone() }, RunConfig { gamma: 1.0, strength: 0.0, c: 0.0, ..base.clone() }]
    {
        assert!(validate(&c).is_ok());
    }
    let empty = Scenario { tasks: Vec::new(), ..sc };
    assert!(matches!(run(&empty, &base, |_| {}), Err(RunError::Invalid(m)) if m.contains("no task")));
}

fn run_with_losses(sc: &Scenario, c: &RunConfig) -> (RunResult, Vec<u32>) {
    let mut losses = Vec::new();
    let res = run(sc, c, |e| {
        if let Event::Step { loss } = e {
            losses.push(loss.to_bits())
        }
    })
    .unwrap();
    (res, losses)
}

/// Same seed twice: bit-identical R, b and loss sequence (SI, and EWC with sampled importance).
#[test]
fn same_seed_is_bit_identical() {
    let sc = split_scenario(2, 120, 60);
    for c in [
        cfg(Method::Si),
        RunConfig {
            fisher: engram_cl::methods::importance::FisherKind::True,
            importance_samples: 30,
            ..cfg(Method::Ewc)
        },
        RunConfig { importance_samples: 30, ..cfg(Method::Mas) },
    ] {
        let (a, la) = run_with_losses(&sc, &c);
        let (b, lb) = run_with_losses(&sc, &c);
        assert_eq!(bits(&a.r), bits(&b.r), "{:?}", c.method);
        assert_eq!(bits(std::slice::from_ref(&a.b)), bits(std::slice::from_ref(&b.b)));
        assert_eq!(la, lb, "{:?}: loss sequences differ", c.method);
        // Another seed gives another run.
        let (_, lc) = run_with_losses(&sc, &RunConfig { seed: c.seed + 1, ..c.clone() });
        assert_ne!(la, lc, "{:?}: the seed is ignored", c.method);
    }
}

/// The same run inside rayon pools of 1 and 2 threads: bit-identical R and losses. The network
/// is wide enough for the kernels' parallel paths (matmul blocks, element-wise ops, SI state).
#[test]
fn bit_identical_across_thread_counts() {
    let sc = split_scenario(2, 96, 40);
    let c = RunConfig { hidden: 64, batch: 48, epochs: 1, ..cfg(Method::Si) };
    let in_pool =
        |k: usize| rayon::ThreadPoolBuilder::new().num_threads(k).build().unwrap().install(|| run_with_losses(&sc, &c));
    let (a, la) = in_pool(1);
    let (b, lb) = in_pool(2);
    assert_eq!(la, lb, "loss sequences differ between 1 and 2 threads");
    assert_eq!(bits(&a.r), bits(&b.r));
    let c = RunConfig { hidden: 64, epochs: 1, ewc_mode: EwcMode::Online, gamma: 0.9, ..cfg(Method::Ewc) };
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| run_with_losses(&sc, &c));
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| run_with_losses(&sc, &c));
    assert_eq!(one.1, two.1, "EWC: loss sequences differ between 1 and 2 threads");
}

/// The state stays the same size however many tasks are trained.
#[test]
fn state_bytes_do_not_grow_with_tasks() {
    let c = RunConfig { epochs: 1, ..cfg(Method::Si) };
    let two = run_ok(&split_scenario(2, 60, 20), &c);
    let five = run_ok(&split_scenario(5, 60, 20), &c);
    assert_eq!(two.strategy_state_bytes, five.strategy_state_bytes);
    let c = RunConfig { epochs: 1, ..cfg(Method::Ewc) };
    assert_eq!(
        run_ok(&split_scenario(2, 60, 20), &c).strategy_state_bytes,
        run_ok(&split_scenario(5, 60, 20), &c).strategy_state_bytes
    );
}

/// The SI variants (total-loss gradient, relu placements) and SGD all run and learn.
#[test]
fn si_variants_run() {
    let sc = split_scenario(2, 100, 60);
    for (g, relu) in [(SiGrad::Total, SiRelu::Official), (SiGrad::Task, SiRelu::None), (SiGrad::Task, SiRelu::PerTask)]
    {
        let res = run_ok(&sc, &RunConfig { si_grad: g, si_relu: relu, epochs: 1, ..cfg(Method::Si) });
        assert!(res.r[1][1] > 0.7, "{g:?} {relu:?}: {:?}", res.r);
    }
    let res =
        run_ok(&sc, &RunConfig { optimizer: Optimizer::Sgd { lr: 0.05 }, reset_optimizer: false, ..cfg(Method::Si) });
    assert!(res.r[0][0] > 0.7, "{:?}", res.r);
}

/// The time forecast is a positive number.
#[test]
fn estimate_is_positive() {
    let sc = split_scenario(2, 60, 20);
    for m in [Method::Si, Method::Joint] {
        let s = estimate_seconds(&cpu(), &sc, &cfg(m), 2).unwrap();
        assert!(s.is_finite() && s > 0.0, "{m:?}: {s}");
    }
}

/// A divergence in the very last step of a run is caught: the loss is measured BEFORE each
/// update, so the runner checks the parameters the task's last step leaves. One task of one
/// step (batch >= samples, one epoch) on images scaled by 1e20 with SGD lr 1e25: the first-layer
/// gradient is ~1e17, the update overflows f32, while the loss measured before it is finite.
#[test]
fn divergence_in_the_last_step_is_reported() {
    let mut sc = split_scenario(1, 100, 60);
    let task = &mut sc.tasks[0];
    for v in [&mut task.train, &mut task.test] {
        let mut split = (*v.split).clone();
        split.images.iter_mut().for_each(|p| *p *= 1e20);
        v.split = std::sync::Arc::new(split);
    }
    let c = RunConfig { optimizer: Optimizer::Sgd { lr: 1e25 }, batch: 1000, epochs: 1, ..cfg(Method::Finetune) };
    match run(&sc, &c, |_| {}) {
        Err(e @ RunError::NonFiniteParams { .. }) => assert!(e.to_string().contains("task 1"), "{e}"),
        other => panic!("expected NonFiniteParams, got {:?}", other.map(|r| r.r)),
    }
}

/// `--diagnose`: with full-batch gradient descent at a small step (one batch per task, plain
/// SGD), the path integral sum omega equals the drop of the task loss measured on the training
/// data within 5% on every task (SI eq. (3): the discretised line integral of the gradient);
/// the records have the documented shape, and other methods are refused.
#[test]
fn diagnose_path_integral_matches_the_loss_drop() {
    let sc = split_scenario(3, 200, 60);
    let c = RunConfig {
        optimizer: Optimizer::Sgd { lr: 0.005 },
        batch: 10_000,
        epochs: 30,
        diagnose: true,
        ..cfg(Method::Si)
    };
    let res = run_ok(&sc, &c);
    let d = res.diagnostics.as_ref().expect("diagnostics recorded");
    assert_eq!(d.len(), 3);
    for (t, task) in d.iter().enumerate() {
        let drop = task.loss_start - task.loss_end;
        assert!(drop > 0.01, "task {t}: the loss must drop, got {drop}");
        assert!((task.ratio() - 1.0).abs() < 0.05, "task {t}: sum omega {} vs drop {drop}", task.omega_sum);
        assert_eq!(task.penalty_share_curve.len(), 30, "one sample per step when a task has <= 50 steps");
        assert!(task.big_omega.frac_negative == 0.0, "the official relu keeps Omega >= 0");
    }
    assert_eq!(d[0].weighted_drift, 0.0, "no importance before the first consolidation");
    assert!(d[1].weighted_drift > 0.0 && d[1].penalty_share_mean > 0.0);
    assert!(run_ok(&sc, &RunConfig { diagnose: false, ..c.clone() }).diagnostics.is_none());
    for m in [Method::Finetune, Method::Ewc] {
        let e = validate(&RunConfig { diagnose: true, ..cfg(m) }).unwrap_err().to_string();
        assert!(e.contains("--diagnose"), "{e}");
    }
}

/// `--si-variant`: every variant runs; prev-step and from-init change the arithmetic, so their
/// importances and their R differ from official SI's; official is the default; non-SI methods
/// refuse a variant. The fake images make accuracies coarse (0, 0.5 or 1 on these tasks), so R
/// is compared class-incrementally (no masks, where old tasks' accuracies depend on Omega) and
/// Omega itself is compared through `--diagnose`'s distribution after task 2 (from-init's Omega
/// equals official's after task 1, whose start is the initialisation).
#[test]
fn si_variant_prev_step_and_from_init_change_r() {
    let mut sc = split_scenario(3, 100, 60);
    sc.tasks.iter_mut().for_each(|t| t.mask = None);
    let base = RunConfig {
        c: 5.0,
        strength: 5.0,
        epochs: 3,
        optimizer: Optimizer::adam(1e-2),
        diagnose: true,
        ..cfg(Method::Si)
    };
    assert_eq!(cfg(Method::Si).si_variant, SiVariant::Official);
    let official = run_ok(&sc, &base);
    let omega_of = |r: &RunResult| r.diagnostics.as_ref().expect("diagnostics")[1].big_omega.clone();
    for v in [SiVariant::PrevStep, SiVariant::FromInit] {
        let res = run_ok(&sc, &RunConfig { si_variant: v, ..base.clone() });
        assert_eq!(res.r.len(), 3);
        assert!(res.r[0][0] > 0.7, "{v:?}: {:?}", res.r);
        assert_ne!(omega_of(&res), omega_of(&official), "{v:?} must change Omega");
        assert_ne!(bits(&res.r), bits(&official.r), "{v:?} must change R: {:?} vs {:?}", res.r, official.r);
    }
    // Official twice: bit-identical (the variants' differences are not noise).
    assert_eq!(bits(&run_ok(&sc, &base).r), bits(&official.r));
    // Task-incremental (the preset's setting), each variant runs and learns every task.
    let masked = split_scenario(3, 100, 60);
    for v in [SiVariant::Official, SiVariant::PrevStep, SiVariant::FromInit] {
        let res = run_ok(&masked, &RunConfig { si_variant: v, ..cfg(Method::Si) });
        assert!((0..3).all(|t| res.r[t][t] > 0.7), "{v:?}: {:?}", res.r);
    }
    for m in [Method::Finetune, Method::Ewc] {
        let e = validate(&RunConfig { si_variant: SiVariant::PrevStep, ..cfg(m) }).unwrap_err().to_string();
        assert!(e.contains("--si-variant"), "{e}");
    }
}

/// PrevStep's arithmetic by hand: two plain SGD steps (lr 0.5, values exact in f32) give
/// omega = -g2 * delta1 - g1 * 0 (no previous step at the first), and keep delta2 for the next;
/// with the total gradient, g2 + 2c Omega (theta1 - theta*) replaces g2.
#[test]
fn prev_step_omega_after_two_sgd_steps() {
    let sgd = |theta: &mut [f32], g: &[f32]| {
        let cfg = StepConfig { optimizer: Optimizer::Sgd { lr: 0.5 }, c: 0.0, omega: None, t: 1 };
        fused_step_f32(Slices::plain(theta, g, &mut [], &mut []), &cfg);
    };
    let theta0 = vec![1.0f32, -2.0, 0.25];
    let (g1, g2) = ([0.5f32, -0.25, 2.0], [1.5f32, 0.75, -1.0]);
    let mut omega = vec![0f32; 3];
    let mut theta = theta0.clone();
    let mut prev = vec![0f32; 3];
    let mut before = theta.clone();
    sgd(&mut theta, &g1);
    prev_step_accumulate_f32(&mut omega, &theta, &before, &g1, &mut prev, None);
    assert_eq!(omega, vec![0.0; 3], "first step: previous change is 0");
    let delta1 = [-0.25f32, 0.125, -1.0];
    assert_eq!(prev, delta1);
    before.copy_from_slice(&theta);
    sgd(&mut theta, &g2);
    prev_step_accumulate_f32(&mut omega, &theta, &before, &g2, &mut prev, None);
    let want: Vec<f32> = (0..3).map(|i| -g2[i] * delta1[i] - g1[i] * 0.0).collect();
    assert_eq!(omega, want);
    assert_eq!(omega, vec![0.375, -0.09375, -1.0]);
    assert_eq!(prev, vec![-0.75, -0.375, 0.5]);
    // The official path integral of the same two steps differs: -g1 d1 - g2 d2.
    let official: Vec<f32> = (0..3).map(|i| -g1[i] * delta1[i] - g2[i] * prev[i]).collect();
    assert_ne!(omega, official);

    // Total gradient: Omega = 1, theta* = 0, c = 0.5, so G2 = g2 + theta1.
    let mut omega = vec![0f32; 3];
    let (big_omega, theta_star) = (vec![1.0f32; 3], vec![0.0f32; 3]);
    let theta1 = [0.75f32, -1.875, -0.75];
    let theta2: Vec<f32> = (0..3).map(|i| theta1[i] - 0.5 * g2[i]).collect();
    let mut prev = delta1.to_vec();
    prev_step_accumulate_f32(&mut omega, &theta2, &theta1, &g2, &mut prev, Some((&big_omega, &theta_star, 0.5)));
    assert_eq!(omega, vec![0.5625, 0.140625, -1.75]);
}
