//! GEM and A-GEM: the episodic memories (GEM's ring buffer as the official code, A-GEM's per-class
//! buffers), the projections on the backend, and whole runs.

mod common;

use common::{cfg, cpu, fake, run, split_scenario};
use engram_cl::config::RunConfig;
use engram_cl::data::{Split as Which, TaskData};
use engram_cl::methods::episodic::{EpisodicMemory, Fill};
use engram_cl::methods::qp::QpSolver;
use engram_cl::methods::{agem, gem, Method};
use engram_cl::run::RunResult;
use engram_cl::scenario::{LabelMap, Scenario, ScenarioKind, Setting, Task, Transform, View};
use engram_nn::Cpu;
use engram_si::Optimizer;
use engram_tape::{Backend, Tensor, View as Window};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

fn plain_view(n: usize, seed: u64) -> View {
    let f = common::fake_split(n, seed);
    View { split: Arc::new(f), indices: None, transform: Transform::Identity, labels: LabelMap::Digit }
}

/// A one-task scenario over `view` (train and test), and its data on the CPU.
fn one_task(view: View) -> (Scenario, TaskData<Cpu<f32>>) {
    let task = Task { name: "t".into(), train: view.clone(), test: view, mask: None };
    let sc = Scenario { kind: ScenarioKind::PermutedMnist, setting: Setting::Domain, outputs: 10, tasks: vec![task] };
    let data = TaskData::upload(&cpu(), &sc).unwrap();
    (sc, data)
}

/// GEM's ring buffer reproduces the official code: with m = 256 and batches of 10 over 1000
/// samples, each batch is copied at the cursor, truncated at the end of the buffer (the rest
/// of that batch is dropped) and the cursor wraps.
#[test]
fn gem_ring_buffer_follows_the_official_code() {
    let be = cpu();
    let view = plain_view(1000, 1);
    let (_, data) = one_task(view.clone());
    let labels = &data.set(0, Which::Train).host_labels;
    let mut mem = EpisodicMemory::<Cpu<f32>>::new(256, 784, 10, Fill::Ring);
    // The official loop, simulated independently.
    let mut want = vec![u32::MAX; 256];
    let mut cnt = 0usize;
    for b in 0..100 {
        let batch: Vec<usize> = (b * 10..b * 10 + 10).collect();
        mem.observe(labels, batch.iter().copied());
        let endcnt = (cnt + 10).min(256);
        for (i, slot) in (cnt..endcnt).enumerate() {
            want[slot] = batch[i] as u32;
        }
        cnt = if endcnt == 256 { 0 } else { endcnt };
    }
    assert_eq!(mem.current_positions(), want);
    // Samples 250..255 fill the end in the first pass; 256..259 are dropped.
    assert!(!want.contains(&256));
    mem.finish_task(&be, &data, 0, None).unwrap();
    assert_eq!((mem.tasks(), mem.rows()), (1, 256));
    assert_eq!(mem.blocks, vec![0..256]);
    // Rows are the stored images (gathered on the backend), labels the view's labels.
    let rows = mem.finished_rows(&be).unwrap();
    let r = 17;
    let pos = want[r] as usize;
    assert_eq!(&rows.x[r * 784..(r + 1) * 784], &view.split.images[pos * 784..(pos + 1) * 784]);
    assert_eq!(rows.y[r], view.label(pos));
    // The buffer is empty for the next task; a short task keeps what it saw.
    mem.observe(labels, [3usize, 4, 5].into_iter());
    mem.finish_task(&be, &data, 0, Some(&[2, 3])).unwrap();
    assert_eq!(mem.blocks, vec![0..256, 256..259]);
    assert_eq!(mem.masks[1].as_ref().unwrap().iter().filter(|&&a| a).count(), 2);
    assert_eq!(mem.row_task[258], 1);
    assert!(mem.has_masks());
}

/// A-GEM's per-class ring buffers: m = 25 over 10 classes gives 3 slots to class 0..4 and 2 to
/// the others; each keeps its class's most recent samples.
#[test]
fn agem_per_class_ring_buffers() {
    let be = cpu();
    let view = plain_view(500, 2); // labels cycle 0..9
    let (_, data) = one_task(view.clone());
    let mut mem = EpisodicMemory::<Cpu<f32>>::new(25, 784, 10, Fill::PerClass { classes: 10 });
    mem.observe(&data.set(0, Which::Train).host_labels, 0..500usize);
    mem.finish_task(&be, &data, 0, None).unwrap();
    assert_eq!(mem.rows(), 25);
    let rows = mem.finished_rows(&be).unwrap();
    let mut counts = [0usize; 10];
    for &y in &rows.y {
        counts[y as usize] += 1;
    }
    assert_eq!(counts, [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]);
    // The last samples of each class: positions 470..499 hold every class three times.
    let d = 784;
    for (r, &y) in rows.y.iter().enumerate() {
        let row = &rows.x[r * d..(r + 1) * d];
        let pos = (0..500).find(|&p| &view.split.images[p * d..(p + 1) * d] == row).unwrap();
        assert_eq!(view.label(pos), y);
        assert!(pos >= 470, "class {y} keeps an old sample {pos}");
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0..1.0f32)).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// With no violated constraint GEM and A-GEM leave the gradient untouched bit for bit (the
/// memory gradients equal g, so <g, g_k> = |g|^2 >= 0).
#[test]
fn no_violated_constraint_leaves_the_gradient_untouched() {
    let be = cpu();
    let p = 5000;
    let g0 = random(p, 6);
    let mut g = be.upload(&g0).unwrap();
    let rows = Tensor::<Cpu<f32>>::from_host(&be, 2, p, &[g0.clone(), g0.clone()].concat()).unwrap();
    let mut solver = QpSolver::new();
    assert_eq!(gem::project(&be, &mut solver, &mut g, rows.view(), 0.5, 1e-3).unwrap(), None);
    assert!(!agem::project(&be, &mut g, rows.view().rows(0, 1)).unwrap());
    let after = be.download(Window::row_of(&be, &g)).unwrap();
    assert_eq!(
        g0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        after.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

/// A violated constraint: GEM returns z = G'v + g with <z, g_k> >= 0 for every memory (margin 0,
/// no ridge: the exact projection of paper Eq. 10), and A-GEM's step is orthogonal to g_ref.
#[test]
fn violated_constraints_are_projected() {
    let be = cpu();
    let (k, p) = (4, 3000);
    let gm: Vec<f32> = (0..k).flat_map(|i| random(p, 20 + i as u64)).collect();
    let rows = Tensor::<Cpu<f32>>::from_host(&be, k, p, &gm).unwrap();
    // g: minus the sum of two memory gradients plus noise, certainly violating.
    let noise = random(p, 99);
    let g0: Vec<f32> = (0..p).map(|i| -(gm[i] + gm[p + i]) + 0.5 * noise[i]).collect();
    let mut g = be.upload(&g0).unwrap();
    let kkt = gem::project(&be, &mut QpSolver::new(), &mut g, rows.view(), 0.0, 0.0).unwrap();
    assert!(kkt.is_some());
    let z = be.download(Window::row_of(&be, &g)).unwrap();
    let norm = dot(&g0, &g0).sqrt();
    assert!(dot(&gm[..p], &g0) < 0.0, "the first constraint was violated");
    for j in 0..k {
        let gk = &gm[j * p..(j + 1) * p];
        let d = dot(gk, &z);
        assert!(d >= -1e-5 * dot(gk, gk).sqrt() * norm.max(1e-12), "constraint {j}: {d}");
    }

    // A-GEM: g_ref = the first memory gradient; g against it; after projection <g, g_ref> = 0.
    let gref = &gm[..p];
    let g1: Vec<f32> = gref.iter().enumerate().map(|(i, &v)| -v + 0.01 * ((i % 7) as f32 - 3.0)).collect();
    let mut g = be.upload(&g1).unwrap();
    assert!(agem::project(&be, &mut g, rows.view().rows(0, 1)).unwrap());
    let z = be.download(Window::row_of(&be, &g)).unwrap();
    let d = dot(&z, gref);
    assert!(d.abs() <= 1e-6 * dot(gref, gref), "<g~, g_ref> = {d}");
    let zero = Tensor::<Cpu<f32>>::zeros(&be, 1, p).unwrap();
    assert!(!agem::project(&be, &mut g, zero.view()).unwrap(), "zero g_ref: no projection");
    let mut zero_g = be.alloc::<f32>(p).unwrap();
    assert!(!agem::project(&be, &mut zero_g, rows.view().rows(0, 1)).unwrap(), "zero g: no projection");
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
    let base = RunConfig { optimizer: Optimizer::Sgd { lr: 1e-3 }, batch: 100, epochs: 1, ..cfg(Method::Finetune) };
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
    let base =
        RunConfig { optimizer: Optimizer::Sgd { lr: 0.1 }, batch: 10, epochs: 1, hidden: 32, ..cfg(Method::Finetune) };
    let ft = run_ok(&sc, &base);
    for m in [Method::Gem, Method::Agem] {
        let res = run_ok(&sc, &RunConfig { method: m, memories: 40, ..base.clone() });
        assert_eq!(res.r.len(), 3);
        assert!(res.r.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
        // 2 finished tasks' memories (784 f32 a row) are part of the state: GEM keeps the last 40
        // samples of each; A-GEM's per-class rings (40 / 10 outputs = 4 slots a class) keep 4 of
        // each of a task's 2 classes.
        let rows = if m == Method::Gem { 40 } else { 8 };
        assert!(res.strategy_state_bytes >= 2 * rows * 784 * 4, "{m:?}: {}", res.strategy_state_bytes);
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
        let c = RunConfig { method: m, optimizer: Optimizer::Sgd { lr: 0.05 }, batch: 10, epochs: 1, ..cfg(m) };
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
            match c.validate() {
                Err(e) => assert!(e.0.contains(flag), "{e}"),
                Ok(()) => panic!("{m:?}: expected an error naming {flag}"),
            }
        }
    }
    // Other methods ignore the memory fields.
    assert!(RunConfig { memories: 0, ..cfg(Method::Si) }.validate().is_ok());
}
