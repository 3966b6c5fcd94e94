//! GEM and A-GEM: the batched per-block memory gradients against the tape, the episodic memories'
//! filling rules, the projection, and whole runs.

mod common;

use common::{cfg, fake, split_scenario};
use engram_cl::episodic::{EpisodicMemory, Fill};
use engram_cl::gem::{agem_project, BlockGrads, Episodic, Kind, Rows};
use engram_cl::runner::{run, validate, RunConfig, RunError, RunResult};
use engram_cl::scenario::{LabelMap, Scenario, ScenarioKind, Setting, Task, Transform, View};
use engram_cl::strategy::Method;
use engram_nn::{Backend, Cpu, Init, Mlp, OptimizerKind, Tape, TaskMask};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

fn random_rows(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut r = common::rng(seed);
    let x = (0..n * d).map(|_| r.random_range(0.0..1.0f32)).collect();
    let y = (0..n).map(|_| r.random_range(0..10u32)).collect();
    (x, y)
}

/// Each block's gradient from one batched pass equals the tape's gradient of the mean masked
/// cross-entropy on that block alone (relative 1e-4 in f32), for several depths, block sizes
/// (an empty block included) and per-row multi-head masks; the losses agree too.
#[test]
fn block_gradients_match_the_tape() {
    let be = Cpu::<f32>::new();
    let d = 784;
    for (sizes, blocks, masked) in [
        (vec![d, 16, 10], vec![0..5, 5..5, 5..300], false),
        (vec![d, 32, 24, 10], vec![0..256, 256..512, 512..700], false),
        (vec![d, 20, 20, 10], vec![0..7, 7..40, 40..41], true),
        (vec![d, 300, 10], vec![0..300, 300..600], false),
    ] {
        let model = Mlp::new(&sizes);
        let theta = model.init(&mut common::rng(1), Init::default());
        let n = blocks.last().unwrap().end;
        let (x, mut y) = random_rows(n, d, 2);
        // Masked rows: block b may only predict classes {2b, 2b+1}; labels inside the mask.
        let masks: Vec<Option<Vec<bool>>> =
            (0..blocks.len()).map(|b| Some((0..10).map(|c| c / 2 == b).collect())).collect();
        let mut row_mask = vec![0u32; n];
        for (b, r) in blocks.iter().enumerate() {
            for i in r.clone() {
                row_mask[i] = b as u32;
                if masked {
                    y[i] = (2 * b + i % 2) as u32;
                }
            }
        }
        let p = model.num_params();
        let mut out = vec![f32::NAN; blocks.len() * p];
        let mut kernel = BlockGrads::new();
        let rows =
            Rows { x: &x, y: &y, blocks: &blocks, row_mask: if masked { &row_mask } else { &[] }, masks: &masks };
        kernel.compute(&model, &theta, rows, &mut out);
        let mut tape = Tape::new(be);
        let mut want = vec![0f32; p];
        for (b, r) in blocks.iter().enumerate() {
            let got = &out[b * p..(b + 1) * p];
            if r.is_empty() {
                assert!(got.iter().all(|&v| v == 0.0), "empty block gives a zero gradient");
                continue;
            }
            let xt = be.from_vec(r.len(), d, x[r.start * d..r.end * d].to_vec());
            let mask = masked.then(|| TaskMask::new(10, &[2 * b, 2 * b + 1]).tensor(&be));
            let loss = model.loss_grad(&mut tape, &theta, xt, &y[r.clone()], mask.as_ref(), &mut want);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err <= 1e-4 * scale, "{sizes:?} block {b}: max error {err} (scale {scale})");
            let l = kernel.losses()[b];
            assert!((l - loss as f64).abs() <= 1e-5 * l.abs().max(1.0), "loss {l} vs tape {loss}");
        }
    }
}

/// Reusing the kernel with fewer rows, then more, gives the same results as a fresh one (the
/// buffers are resized, never stale).
#[test]
fn block_gradients_reuse_buffers() {
    let model = Mlp::new(&[784, 12, 10]);
    let theta = model.init(&mut common::rng(4), Init::default());
    let p = model.num_params();
    let mut reused = BlockGrads::new();
    for (n, nb) in [(500usize, 2usize), (30, 1), (900, 3)] {
        let (x, y) = random_rows(n, 784, n as u64);
        let per = n / nb;
        let blocks: Vec<_> = (0..nb).map(|b| b * per..if b + 1 == nb { n } else { (b + 1) * per }).collect();
        let rows = Rows { x: &x, y: &y, blocks: &blocks, row_mask: &[], masks: &[] };
        let mut a = vec![0f32; nb * p];
        let mut b = vec![0f32; nb * p];
        reused.compute(&model, &theta, rows, &mut a);
        BlockGrads::new().compute(&model, &theta, rows, &mut b);
        assert_eq!(a, b);
    }
}

/// The results do not depend on the number of threads (fixed chunking).
#[test]
fn block_gradients_are_thread_count_independent() {
    let model = Mlp::new(&[784, 40, 40, 10]);
    let theta = model.init(&mut common::rng(8), Init::default());
    let p = model.num_params();
    let (x, y) = random_rows(1100, 784, 3);
    let blocks = vec![0..256, 256..512, 512..1100];
    let mut outs = Vec::new();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut out = vec![0f32; 3 * p];
        pool.install(|| {
            BlockGrads::new().compute(
                &model,
                &theta,
                Rows { x: &x, y: &y, blocks: &blocks, row_mask: &[], masks: &[] },
                &mut out,
            )
        });
        outs.push(out);
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0], outs[2]);
}

fn plain_view(n: usize, seed: u64) -> View {
    let f = common::fake_split(n, seed);
    View { split: Arc::new(f), indices: None, transform: Transform::Identity, labels: LabelMap::Digit }
}

/// GEM's ring buffer reproduces the official code: with m = 256 and batches of 10 over 1000
/// samples, each batch is copied at the cursor, truncated at the end of the buffer (the rest
/// of that batch is dropped) and the cursor wraps.
#[test]
fn gem_ring_buffer_follows_the_official_code() {
    let view = plain_view(1000, 1);
    let mut mem = EpisodicMemory::new(256, 784, Fill::Ring);
    // The official loop, simulated independently.
    let mut want = vec![u32::MAX; 256];
    let mut cnt = 0usize;
    for b in 0..100 {
        let batch: Vec<usize> = (b * 10..b * 10 + 10).collect();
        mem.observe(&view, batch.iter().copied());
        let endcnt = (cnt + 10).min(256);
        for (i, slot) in (cnt..endcnt).enumerate() {
            want[slot] = batch[i] as u32;
        }
        cnt = if endcnt == 256 { 0 } else { endcnt };
    }
    assert_eq!(mem.current_positions(), want);
    // Samples 250..255 fill the end in the first pass; 256..259 are dropped.
    assert!(!want.contains(&256));
    mem.finish_task(&view, None, 10);
    assert_eq!((mem.tasks(), mem.rows()), (1, 256));
    assert_eq!(mem.blocks, vec![0..256]);
    // Rows are the stored images, labels the view's labels.
    let r = 17;
    let pos = want[r] as usize;
    assert_eq!(&mem.x[r * 784..(r + 1) * 784], &view.split.images[pos * 784..(pos + 1) * 784]);
    assert_eq!(mem.y[r], view.label(pos));
    // The buffer is empty for the next task; a short task keeps what it saw.
    mem.observe(&view, [3usize, 4, 5].into_iter());
    mem.finish_task(&view, Some(&[2, 3]), 10);
    assert_eq!(mem.blocks, vec![0..256, 256..259]);
    assert_eq!(mem.masks[1].as_ref().unwrap().iter().filter(|&&a| a).count(), 2);
    assert_eq!(mem.row_task[258], 1);
}

/// A-GEM's per-class ring buffers: m = 25 over 10 classes gives 3 slots to class 0..4 and 2 to
/// the others; each keeps its class's most recent samples.
#[test]
fn agem_per_class_ring_buffers() {
    let view = plain_view(500, 2); // labels cycle 0..9
    let mut mem = EpisodicMemory::new(25, 784, Fill::PerClass { classes: 10 });
    mem.observe(&view, 0..500usize);
    mem.finish_task(&view, None, 10);
    assert_eq!(mem.rows(), 25);
    let mut counts = [0usize; 10];
    for &y in &mem.y {
        counts[y as usize] += 1;
    }
    assert_eq!(counts, [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]);
    // The last samples of each class: positions 470..499 hold every class three times.
    let d = 784;
    for (r, &y) in mem.y.iter().enumerate() {
        let row = &mem.x[r * d..(r + 1) * d];
        let pos = (0..500).find(|&p| &view.split.images[p * d..(p + 1) * d] == row).unwrap();
        assert_eq!(view.label(pos), y);
        assert!(pos >= 470, "class {y} keeps an old sample {pos}");
    }
}

/// Two hand-made finished tasks whose memories are given rows; returns the GEM state.
fn episodic_with(kind: Kind, model: &Mlp, blocks: &[(Vec<f32>, Vec<u32>)]) -> Episodic {
    let d = model.inputs();
    let mut mem = EpisodicMemory::new(1000, d, Fill::Ring);
    for (x, y) in blocks {
        let n = y.len();
        let split = engram_mnist::Split { n, dim: d, images: x.clone(), labels: y.iter().map(|&l| l as u8).collect() };
        let view =
            View { split: Arc::new(split), indices: None, transform: Transform::Identity, labels: LabelMap::Digit };
        mem.observe(&view, 0..n);
        mem.finish_task(&view, None, 10);
    }
    Episodic::new(kind, mem, 0.5, engram_cl::qp::OFFICIAL_REG)
}

/// With no violated constraint the GEM step leaves the gradient untouched bit for bit, so the
/// parameter update is exactly plain SGD's `theta - lr g`.
#[test]
fn no_violated_constraint_is_plain_sgd() {
    let be = Cpu::<f32>::new();
    let model = Mlp::new(&[784, 32, 10]);
    let theta = model.init(&mut common::rng(6), Init::default());
    let (x, y) = random_rows(40, 784, 7);
    // The memory IS the batch: g_k = g, so <g, g_k> = |g|^2 >= 0.
    for kind in [Kind::Gem, Kind::Agem] {
        let mut ep = episodic_with(kind, &model, &[(x.clone(), y.clone()), (x.clone(), y.clone())]);
        let mut g = vec![0f32; model.num_params()];
        let mut tape = Tape::new(be);
        model.loss_grad(&mut tape, &theta, be.from_vec(40, 784, x.clone()), &y, None, &mut g);
        let g0 = g.clone();
        let rep = ep.step(&model, &theta, &mut g, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        assert!(!rep.projected);
        assert_eq!(
            g0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            g.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // The optimizer step on it is plain SGD.
        let mut opt = engram_nn::Optimizer::new(OptimizerKind::Sgd { lr: 0.1 }, theta.len());
        let mut th = theta.clone();
        opt.step(&mut th, &g);
        for ((a, b), gi) in th.iter().zip(&theta).zip(&g0) {
            assert_eq!(*a, b - 0.1 * gi);
        }
        assert!(ep.memory_gradients().iter().any(|&v| v != 0.0));
    }
}

/// A violated constraint: the GEM step returns z = G'v + g with <z, g_k> >= 0 for every memory
/// (margin 0, no ridge: the exact projection of paper Eq. 10), and A-GEM's step is orthogonal to
/// g_ref.
#[test]
fn violated_constraints_are_projected() {
    let model = Mlp::new(&[784, 24, 10]);
    let theta = model.init(&mut common::rng(9), Init::default());
    let p = model.num_params();
    let blocks: Vec<_> = (0..4).map(|b| random_rows(50, 784, 20 + b)).collect();
    let mut ep = episodic_with(Kind::Gem, &model, &blocks);
    ep.strength = 0.0;
    ep.reg = 0.0;
    // g: minus the sum of the memory gradients (computed once), certainly violating.
    let mut probe = vec![0f32; p];
    ep.step(&model, &theta, &mut probe, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    let gm = ep.memory_gradients().to_vec();
    let mut g: Vec<f32> = (0..p).map(|i| -(0..4).map(|k| gm[k * p + i]).sum::<f32>()).collect();
    let rep = ep.step(&model, &theta, &mut g, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    assert!(rep.projected);
    let norm: f64 = g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    for k in 0..4 {
        let gk = &gm[k * p..(k + 1) * p];
        let d: f64 = gk.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum();
        let nk: f64 = gk.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        assert!(d >= -1e-5 * nk * norm.max(1e-12), "constraint {k}: {d}");
    }
    assert_eq!((ep.projections, ep.constrained_steps), (1, 2));

    // A-GEM: g_ref = the memory gradient; g against it; after projection <g, g_ref> = 0.
    let gref: Vec<f32> = gm[..p].to_vec();
    let mut g: Vec<f32> = gref.iter().enumerate().map(|(i, &v)| -v + 0.01 * ((i % 7) as f32 - 3.0)).collect();
    assert!(agem_project(&mut g, &gref));
    let d: f64 = g.iter().zip(&gref).map(|(a, b)| *a as f64 * *b as f64).sum();
    let scale: f64 = gref.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
    assert!(d.abs() <= 1e-6 * scale, "<g~, g_ref> = {d}");
    let mut zero = vec![0f32; p];
    assert!(!agem_project(&mut g.clone(), &zero), "zero g_ref: no projection");
    assert!(!agem_project(&mut zero, &gref), "zero g: <g, g_ref> = 0, no projection");
}

fn run_ok(sc: &Scenario, c: &RunConfig) -> RunResult {
    run(sc, c, |_| {}).unwrap_or_else(|e| panic!("{:?}: {e}", c.method))
}

/// Two tasks built on the same data: early in training, the memory's gradient and the batch's
/// point the same way, no constraint is violated, and GEM's run equals fine-tuning's bit for bit.
#[test]
fn gem_without_violations_equals_finetune() {
    let f = fake(200, 100);
    let view = |s: &Arc<engram_mnist::Split>| View {
        split: s.clone(),
        indices: None,
        transform: Transform::Identity,
        labels: LabelMap::Digit,
    };
    let tasks = (0..2)
        .map(|t| Task { name: format!("same {t}"), train: view(&f.train), test: view(&f.test), mask: None })
        .collect();
    let sc = Scenario { kind: ScenarioKind::PermutedMnist, setting: Setting::Domain, outputs: 10, tasks };
    let base = RunConfig { optimizer: OptimizerKind::Sgd { lr: 1e-3 }, batch: 100, epochs: 1, ..cfg(Method::Finetune) };
    let ft = run_ok(&sc, &base);
    let gem = run_ok(&sc, &RunConfig { method: Method::Gem, memories: 100, ..base.clone() });
    assert_eq!(gem.profile.constrained_steps, 2);
    assert_eq!(gem.profile.projected_steps, 0);
    assert_eq!(gem.r, ft.r);
}

/// Whole GEM and A-GEM runs on a small task-incremental scenario: shapes, finite accuracies,
/// memory accounted in the state size, profile fields filled, and less forgetting than
/// fine-tuning with the same optimizer.
#[test]
fn gem_and_agem_runs() {
    let sc = split_scenario(3, 300, 100);
    let base = RunConfig {
        optimizer: OptimizerKind::Sgd { lr: 0.1 },
        batch: 10,
        epochs: 1,
        hidden: 32,
        ..cfg(Method::Finetune)
    };
    let ft = run_ok(&sc, &base);
    for m in [Method::Gem, Method::Agem] {
        let res = run_ok(&sc, &RunConfig { method: m, memories: 40, ..base.clone() });
        assert_eq!(res.r.len(), 3);
        assert!(res.r.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
        // 2 finished tasks' memories (40 rows of 784 f32 each) are part of the state.
        assert!(res.strategy_state_bytes >= 2 * 40 * 784 * 4, "{m:?}: {}", res.strategy_state_bytes);
        assert!(res.profile.memory_gradients > 0.0);
        assert!(res.profile.constrained_steps > 0);
        assert!(res.profile.projected_steps <= res.profile.constrained_steps);
        assert!(res.metrics.acc >= ft.metrics.acc - 0.02, "{m:?}: {} vs finetune {}", res.metrics.acc, ft.metrics.acc);
    }
}

/// GEM and A-GEM runs are deterministic for a seed.
#[test]
fn episodic_runs_are_deterministic() {
    let sc = split_scenario(2, 120, 60);
    for m in [Method::Gem, Method::Agem] {
        let c = RunConfig { method: m, optimizer: OptimizerKind::Sgd { lr: 0.05 }, batch: 10, epochs: 1, ..cfg(m) };
        assert_eq!(run_ok(&sc, &c).r, run_ok(&sc, &c).r);
    }
}

/// Bad memory settings are rejected with the flag named.
#[test]
fn bad_memory_settings_are_rejected() {
    for m in [Method::Gem, Method::Agem] {
        for (c, flag) in [
            (RunConfig { memories: 0, ..cfg(m) }, "--memories"),
            (RunConfig { memory_strength: -0.1, ..cfg(m) }, "--memory-strength"),
            (RunConfig { memory_strength: f32::NAN, ..cfg(m) }, "--memory-strength"),
            (RunConfig { memory_strength: f32::INFINITY, ..cfg(m) }, "--memory-strength"),
        ] {
            match validate(&c) {
                Err(RunError::Invalid(msg)) => assert!(msg.contains(flag), "{msg}"),
                other => panic!("{m:?}: expected an error naming {flag}, got {other:?}"),
            }
        }
    }
    // Other methods ignore the memory fields.
    assert!(validate(&RunConfig { memories: 0, ..cfg(Method::Si) }).is_ok());
}
