//! End-to-end checks on the real MNIST (only when ENGRAM_DATA is set; they print a SKIP line
//! otherwise). Run: ENGRAM_DATA=/path/to/mnist cargo test --release -p engram-cl --test real_mnist

use engram_cl::config::RunConfig;
use engram_cl::methods::importance::FisherKind;
use engram_cl::methods::{EwcMode, Method, SiGrad, SiRelu};
use engram_cl::protocol::{resolve, Overrides};
use engram_cl::run::run;
use engram_cl::scenario::{build, Scenario, ScenarioKind, ScenarioSpec, Transform};
use engram_mnist::{Mnist, Split, Verify};
use engram_nn::Cpu;
use std::sync::{Arc, OnceLock};

/// MNIST, loaded (and checked against the official sha256) once for the whole file.
fn mnist() -> Option<&'static (Arc<Split>, Arc<Split>)> {
    static DATA: OnceLock<Option<(Arc<Split>, Arc<Split>)>> = OnceLock::new();
    DATA.get_or_init(|| {
        std::env::var_os(engram_mnist::ENV_VAR)?;
        let Mnist { train, test } =
            engram_mnist::load(None, Verify::Sha256).expect("ENGRAM_DATA is set but MNIST does not load");
        Some((Arc::new(train), Arc::new(test)))
    })
    .as_ref()
}

fn scenario(spec: &ScenarioSpec) -> Option<Scenario> {
    let Some((train, test)) = mnist() else {
        println!("SKIP: ENGRAM_DATA not set");
        return None;
    };
    Some(build(spec, train.clone(), test.clone()).expect("buildable"))
}

fn protocol_cfg(kind: ScenarioKind, method: Method, o: &Overrides) -> RunConfig {
    let (c, _) = resolve(
        kind,
        method,
        o,
        0,
        (SiGrad::Task, SiRelu::Official),
        (FisherKind::Empirical, EwcMode::Separate, 1.0),
        1024,
        false,
    );
    c
}

/// Split MNIST, task-incremental, the SI paper's protocol with one epoch per task: SI keeps the
/// old tasks (ACC > 0.95) and beats fine-tuning by more than 3 points.
#[test]
fn split_mnist_si_beats_finetune() {
    let Some(sc) = scenario(&ScenarioSpec::new(ScenarioKind::SplitMnist)) else { return };
    let o = Overrides { epochs: Some(1), ..Overrides::default() };
    let mut acc = Vec::new();
    for m in [Method::Si, Method::Finetune] {
        let c = protocol_cfg(ScenarioKind::SplitMnist, m, &o);
        assert_eq!(
            (c.c, c.xi, c.epochs, c.batch, c.hidden),
            (if m == Method::Si { 1.0 } else { 0.0 }, 1e-3, 1, 64, 256)
        );
        let res = run(&Cpu::new(), &sc, &c, |_| {}).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        println!(
            "{m:?}: ACC {:.4} BWT {:?} R {:?} ({:.1} s)",
            res.metrics.acc, res.metrics.bwt, res.r, res.wall_seconds
        );
        acc.push(res.metrics.acc);
    }
    let (si, ft) = (acc[0], acc[1]);
    assert!(si > 0.95, "SI ACC {si}");
    assert!(si > ft + 0.03, "SI ACC {si} vs fine-tuning {ft}");
}

/// Permuted MNIST's memory does not grow with the number of tasks beyond one 784-entry
/// permutation per task: no task holds an index vector, every task shares the one split, and
/// the method state of a run is the same for 2 and 5 tasks.
#[test]
fn permuted_mnist_memory_does_not_grow_with_tasks() {
    let spec = ScenarioSpec::new(ScenarioKind::PermutedMnist);
    let Some(s50) = scenario(&ScenarioSpec { tasks: 50, ..spec.clone() }) else { return };
    let s5 = scenario(&ScenarioSpec { tasks: 5, ..spec.clone() }).expect("loaded");
    let (train, test) = mnist().unwrap();
    for (sc, t) in [(&s50, 50), (&s5, 5)] {
        assert_eq!(sc.tasks.len(), t);
        let index_entries: usize =
            sc.tasks.iter().flat_map(|k| [&k.train, &k.test]).map(|v| v.indices.as_ref().map_or(0, Vec::len)).sum();
        assert_eq!(index_entries, 0, "{t} tasks");
        for (i, k) in sc.tasks.iter().enumerate() {
            assert!(Arc::ptr_eq(&k.train.split, train) && Arc::ptr_eq(&k.test.split, test));
            assert_eq!((k.train.len(), k.test.len()), (60_000, 10_000));
            match (&k.train.transform, &k.test.transform) {
                (Transform::Identity, Transform::Identity) => assert_eq!(i, 0),
                (Transform::Permute(a), Transform::Permute(b)) => {
                    assert!(Arc::ptr_eq(a, b), "train and test share one permutation");
                    assert_eq!(a.len(), 784);
                    assert_eq!(std::mem::size_of_val(&a[..]), 784 * 4);
                }
                other => panic!("task {i}: {other:?}"),
            }
        }
    }
    // The method state of a (tiny) run does not depend on the number of tasks.
    let o = Overrides {
        epochs: Some(1),
        hidden: Some(8),
        samples_per_task: Some(64),
        batch: Some(64),
        ..Overrides::default()
    };
    let small = |t: usize| ScenarioSpec { tasks: t, samples_per_task: Some(64), ..spec.clone() };
    let (a, b) = (scenario(&small(2)).unwrap(), scenario(&small(5)).unwrap());
    for m in [Method::Si, Method::Ewc] {
        let c = protocol_cfg(ScenarioKind::PermutedMnist, m, &o);
        let (ra, rb) = (run(&Cpu::new(), &a, &c, |_| {}).unwrap(), run(&Cpu::new(), &b, &c, |_| {}).unwrap());
        assert_eq!(ra.strategy_state_bytes, rb.strategy_state_bytes, "{m:?}");
        let per_vector = 4 * ra.num_params;
        assert_eq!(ra.strategy_state_bytes, if m == Method::Si { 3 } else { 2 } * per_vector);
    }
}
