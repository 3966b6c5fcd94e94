//! scenario::validation_split: hold out part of each task's training data for hyperparameter
//! selection (no real data needed).

mod common;

use common::{cfg, fake, Fake};
use engram_cl::methods::Method;
use engram_cl::scenario::{build, validation_split, Scenario, ScenarioKind, ScenarioSpec, Transform, View};
use std::collections::HashSet;
use std::sync::Arc;

fn data() -> Fake {
    fake(400, 100)
}

fn samples(v: &View) -> Vec<u32> {
    match &v.indices {
        Some(ix) => ix.clone(),
        None => (0..v.split.n as u32).collect(),
    }
}

fn scenario(kind: ScenarioKind, f: &Fake) -> Scenario {
    let mut spec = ScenarioSpec::new(kind);
    if kind == ScenarioKind::PermutedMnist {
        spec.tasks = 3;
    }
    build(&spec, f.train.clone(), f.test.clone()).unwrap()
}

/// Each task's training samples are cut in two disjoint parts whose union is the original set;
/// the validation part has round(fraction * n) samples and replaces the test view, drawn from
/// the TRAINING split (the test split is never read).
#[test]
fn validation_is_a_disjoint_part_of_the_training_samples() {
    let f = data();
    for kind in [ScenarioKind::SplitMnist, ScenarioKind::PermutedMnist, ScenarioKind::EvenOdd] {
        let sc = scenario(kind, &f);
        let v = validation_split(&sc, 0.1, 7).unwrap();
        assert_eq!(v.tasks.len(), sc.tasks.len());
        for (orig, t) in sc.tasks.iter().zip(&v.tasks) {
            let n = orig.train.len();
            let k = (0.1 * n as f64).round() as usize;
            assert_eq!(t.test.len(), k, "{kind:?} {}", t.name);
            assert_eq!(t.train.len(), n - k);
            assert!(Arc::ptr_eq(&t.test.split, &f.train), "validation comes from the training split");
            assert!(Arc::ptr_eq(&t.train.split, &f.train));
            let (tr, va): (HashSet<u32>, HashSet<u32>) =
                (samples(&t.train).into_iter().collect(), samples(&t.test).into_iter().collect());
            assert!(tr.is_disjoint(&va), "no sample is both trained on and validated on");
            let all: HashSet<u32> = samples(&orig.train).into_iter().collect();
            assert_eq!(tr.union(&va).copied().collect::<HashSet<u32>>(), all);
            // Everything else about the task is unchanged.
            assert_eq!((&t.name, &t.mask), (&orig.name, &orig.mask));
            assert_eq!((&t.train.transform, t.train.labels), (&orig.train.transform, orig.train.labels));
            assert_eq!((&t.test.transform, t.test.labels), (&orig.train.transform, orig.train.labels));
        }
    }
}

/// The permutation of a permuted task is applied to its validation samples too.
#[test]
fn validation_samples_carry_the_task_transform() {
    let f = data();
    let sc = scenario(ScenarioKind::PermutedMnist, &f);
    let v = validation_split(&sc, 0.25, 1).unwrap();
    assert!(matches!(v.tasks[1].test.transform, Transform::Permute(_)));
    let (mut x, mut y) = (Vec::new(), Vec::new());
    v.tasks[1].test.fill(0..1, &mut x, &mut y);
    let i = samples(&v.tasks[1].test)[0] as usize;
    let Transform::Permute(p) = &v.tasks[1].test.transform else { unreachable!() };
    let orig = f.train.image(i);
    assert!(x.iter().zip(p.iter()).all(|(a, &j)| *a == orig[j as usize]));
    assert_eq!(y[0], f.train.labels[i] as u32);
}

/// Same seed, same split; another seed, another split.
#[test]
fn validation_split_is_seeded() {
    let f = data();
    let sc = scenario(ScenarioKind::SplitMnist, &f);
    let a = validation_split(&sc, 0.2, 3).unwrap();
    let b = validation_split(&sc, 0.2, 3).unwrap();
    let c = validation_split(&sc, 0.2, 4).unwrap();
    assert_eq!(samples(&a.tasks[2].test), samples(&b.tasks[2].test));
    assert_ne!(samples(&a.tasks[2].test), samples(&c.tasks[2].test));
}

/// Bad fractions and too-small tasks are errors, never panics.
#[test]
fn validation_split_rejects_bad_input() {
    let f = data();
    let sc = scenario(ScenarioKind::SplitMnist, &f);
    for bad in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        let e = validation_split(&sc, bad, 0).unwrap_err();
        assert!(e.contains("between 0 and 1"), "{e}");
    }
    let mut tiny = sc.clone();
    tiny.tasks[0].train.indices = Some(vec![tiny.tasks[0].train.indices.as_ref().unwrap()[0]]);
    let e = validation_split(&tiny, 0.5, 0).unwrap_err();
    assert!(e.contains("at least 2"), "{e}");
    // At least one sample is held out and one kept, whatever the fraction.
    let mut two = sc.clone();
    two.tasks[0].train.indices = Some(two.tasks[0].train.indices.as_ref().unwrap()[..2].to_vec());
    let v = validation_split(&two, 0.01, 0).unwrap();
    assert_eq!((v.tasks[0].train.len(), v.tasks[0].test.len()), (1, 1));
}

/// A run on the split scenario reports accuracy on the validation samples: its R matrix has
/// one column per task and the untrained baseline b is measured on those samples.
#[test]
fn a_run_on_the_validation_scenario_evaluates_on_held_out_training_samples() {
    let f = data();
    let sc = scenario(ScenarioKind::SplitMnist, &f);
    let v = validation_split(&sc, 0.25, 0).unwrap();
    let mut c = cfg(Method::Finetune);
    c.epochs = 3;
    let res = common::run(&v, &c, |_| {}).unwrap();
    assert_eq!(res.r.len(), 5);
    // The fake digits are separable bands: each task is learned on its validation samples.
    for j in 0..5 {
        assert!(res.r[j][j] > 0.9, "task {j} validation accuracy {}", res.r[j][j]);
    }
}
