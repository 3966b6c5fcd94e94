//! Checkpoints of a run: for every method, a run resumed from ANY of its checkpoints (mid-task
//! or at a task boundary, through the bytes on disk) ends with the same accuracy matrix, bit for
//! bit, as the uninterrupted run; and a checkpoint that does not fit the run is refused.

mod common;

use common::{cfg, cpu, run, split_scenario};
use engram_ckpt::{Checkpoint, Data, Tensor};
use engram_cl::checkpoint::{carried, progress};
use engram_cl::config::{layer_sizes, RunConfig};
use engram_cl::methods::{EwcMode, Method, SiVariant};
use engram_cl::run::{run_with, Checkpointing, RunResult, Start};
use engram_cl::scenario::{Scenario, ScenarioKind, ScenarioSpec};
use engram_cl::state::RunError;
use engram_si::Optimizer;

/// Resumes `c` on `sc` from `ck`.
fn resume(sc: &Scenario, c: &RunConfig, ck: &Checkpoint) -> Result<RunResult, RunError> {
    run_with(&cpu(), sc, c, Start::Resume(Box::new(ck.clone())), None, |_| {})
}

fn bits(r: &[Vec<f64>]) -> Vec<Vec<u64>> {
    r.iter().map(|row| row.iter().map(|v| v.to_bits()).collect()).collect()
}

fn same(a: &RunResult, b: &RunResult, what: &str) {
    assert_eq!(bits(&a.r), bits(&b.r), "{what}: R differs");
    assert_eq!(bits(std::slice::from_ref(&a.b)), bits(std::slice::from_ref(&b.b)), "{what}: b differs");
    assert_eq!(a.r_train.as_deref().map(bits), b.r_train.as_deref().map(bits), "{what}: training R differs");
    assert_eq!(a.profile.projected_steps, b.profile.projected_steps, "{what}: GEM projections differ");
}

/// Runs `c` saving a checkpoint every `every` steps; returns the result and each checkpoint's
/// two files' bytes (as they would be on disk).
/// A checkpoint's two files: the manifest and the tensors.
type Files = (Vec<u8>, Vec<u8>);

fn run_saving(sc: &Scenario, c: &RunConfig, every: u64) -> (RunResult, Vec<Files>) {
    let spec = ScenarioSpec::new(ScenarioKind::SplitMnist);
    let mut saved = Vec::new();
    let mut save = |ck: &Checkpoint, _steps: u64| -> Result<(), String> {
        saved.push(ck.to_bytes().map_err(|e| e.to_string())?);
        Ok(())
    };
    let ck = Checkpointing { every: Some(every), spec: &spec, cli: serde_json::Value::Null, save: &mut save };
    let res = run_with(&cpu(), sc, c, Start::Fresh, Some(ck), |_| {}).unwrap_or_else(|e| panic!("{:?}: {e}", c.method));
    (res, saved)
}

fn configs() -> Vec<(String, RunConfig)> {
    let mut v: Vec<(String, RunConfig)> =
        [Method::Finetune, Method::Joint, Method::L2, Method::Ewc, Method::Mas, Method::Si, Method::Gem, Method::Agem]
            .into_iter()
            .map(|m| (m.name().to_string(), cfg(m)))
            .collect();
    v.push(("ewc online".into(), RunConfig { ewc_mode: EwcMode::Online, gamma: 0.9, ..cfg(Method::Ewc) }));
    v.push(("si prev-step".into(), RunConfig { si_variant: SiVariant::PrevStep, ..cfg(Method::Si) }));
    v.push(("si from-init".into(), RunConfig { si_variant: SiVariant::FromInit, ..cfg(Method::Si) }));
    v.push((
        "si sgd, optimizer kept, training R".into(),
        RunConfig {
            optimizer: Optimizer::Sgd { lr: 0.05 },
            reset_optimizer: false,
            eval_train: true,
            ..cfg(Method::Si)
        },
    ));
    v.push(("si adam kept across tasks".into(), RunConfig { reset_optimizer: false, ..cfg(Method::Si) }));
    v
}

#[test]
fn resuming_from_any_checkpoint_is_bit_identical_for_every_method() {
    let sc = split_scenario(3, 240, 60);
    for (what, c) in configs() {
        let c = RunConfig { batch: 8, memories: 12, ..c };
        let reference = run(&sc, &c, |_| {}).unwrap();
        // Every 5 steps: checkpoints fall at different places in the epochs (and on boundaries).
        let (res, saved) = run_saving(&sc, &c, 5);
        same(&reference, &res, &format!("{what}: checkpointing changed the run"));
        assert!(saved.len() >= 6, "{what}: only {} checkpoints", saved.len());
        let mut mid = 0;
        for (i, (m, t)) in saved.iter().enumerate() {
            let ck = Checkpoint::from_bytes(m, t).unwrap();
            mid += usize::from(progress(&ck).unwrap().mid_phase());
            let resumed = resume(&sc, &c, &ck).unwrap_or_else(|e| panic!("{what}: checkpoint {i}: {e}"));
            same(&reference, &resumed, &format!("{what}: resumed from checkpoint {i}"));
        }
        assert!(mid >= 3, "{what}: only {mid} mid-task checkpoints");
    }
}

/// A resumed run that keeps checkpointing writes the same checkpoints as the uninterrupted run.
#[test]
fn a_resumed_run_writes_the_same_later_checkpoints() {
    let sc = split_scenario(3, 240, 60);
    let c = RunConfig { batch: 8, ..cfg(Method::Si) };
    let (_, saved) = run_saving(&sc, &c, 4);
    let k = saved.len() / 2;
    let ck = Checkpoint::from_bytes(&saved[k].0, &saved[k].1).unwrap();
    let spec = ScenarioSpec::new(ScenarioKind::SplitMnist);
    let mut later = Vec::new();
    let mut save = |ck: &Checkpoint, _steps: u64| -> Result<(), String> {
        later.push(ck.to_bytes().unwrap());
        Ok(())
    };
    let every = Checkpointing { every: Some(4), spec: &spec, cli: serde_json::Value::Null, save: &mut save };
    run_with(&cpu(), &sc, &c, Start::Resume(Box::new(ck)), Some(every), |_| {}).unwrap();
    assert_eq!(later.len(), saved.len() - k - 1);
    for (a, b) in later.iter().zip(&saved[k + 1..]) {
        // The tensors are identical; the manifests differ only in the wall times.
        assert_eq!(a.1, b.1);
    }
}

fn tampered(c: &Checkpoint, name: &str, t: Tensor) -> Checkpoint {
    let mut c = c.clone();
    c.tensors.insert(name.into(), t);
    c
}

#[test]
fn checkpoints_that_do_not_fit_are_refused() {
    let sc = split_scenario(3, 240, 60);
    let c = RunConfig { batch: 8, ..cfg(Method::Si) };
    let (_, saved) = run_saving(&sc, &c, 5);
    let (m, t) = &saved[1];
    let ck = Checkpoint::from_bytes(m, t).unwrap();
    assert!(progress(&ck).unwrap().mid_phase());
    let err = |ck: &Checkpoint, c: &RunConfig| match resume(&sc, c, ck) {
        Err(RunError::Invalid(m)) => m,
        other => panic!("must be refused, got {:?}", other.map(|r| r.r)),
    };

    let other = RunConfig { c: 2.0, strength: 2.0, ..c.clone() };
    assert!(err(&ck, &other).contains("another configuration"));
    let n = engram_nn::Mlp::new(&layer_sizes(&sc, &c)).num_params();
    let e = err(&tampered(&ck, "model.theta", Tensor::f32(vec![0.0; n - 1])), &c);
    assert!(e.contains("model.theta"), "{e}");
    let Data::F32(theta) = &ck.tensors["model.theta"].data else { panic!() };
    let mut nan = theta.clone();
    nan[3] = f32::NAN;
    let e = err(&tampered(&ck, "model.theta", Tensor::f32(nan)), &c);
    assert!(e.contains("model.theta") && e.contains("NaN"), "{e}");
    let mut ck2 = ck.clone();
    ck2.tensors.remove("penalty.omega");
    assert!(err(&ck2, &c).contains("penalty.omega"));
    // The sample order must be an ordering of the task's samples.
    let Data::U32(order) = &ck.tensors["progress.order"].data else { panic!() };
    let mut bad = order.clone();
    bad[1] = bad[3];
    let e = err(&tampered(&ck, "progress.order", Tensor::matrix(bad.len() / 2, Data::U32(bad))), &c);
    assert!(e.contains("progress.order"), "{e}");
    // A broken random-stream state.
    let mut ck3 = ck.clone();
    ck3.run["rng"]["shuffle"]["seed"] = serde_json::json!("zz");
    assert!(err(&ck3, &c).contains("seed"));
    // Progress past the end.
    let mut ck4 = ck.clone();
    ck4.run["progress"]["epoch"] = serde_json::json!(99);
    assert!(err(&ck4, &c).contains("past the end"));
    // Another network.
    let wider = RunConfig { hidden: 17, ..c.clone() };
    let mut ck5 = ck.clone();
    ck5.run["config"]["hidden"] = serde_json::json!(17);
    assert!(err(&ck5, &wider).contains("layer sizes"));
}

/// `--init-from`: only a task-boundary checkpoint; the parameters always, Omega and theta* for
/// the same quadratic method, the memory for the same episodic method.
#[test]
fn init_from_carries_what_fits() {
    let sc = split_scenario(3, 240, 60);
    let c = RunConfig { batch: 8, ..cfg(Method::Si) };
    let (_, saved) = run_saving(&sc, &c, 5);
    let cks: Vec<Checkpoint> = saved.iter().map(|(m, t)| Checkpoint::from_bytes(m, t).unwrap()).collect();
    let boundary = cks.iter().find(|k| k.run["at_task_boundary"] == true).expect("a boundary checkpoint");
    let middle = cks.iter().find(|k| k.run["at_task_boundary"] == false).expect("a mid-task checkpoint");
    assert!(carried(middle, &sc, &c).unwrap_err().contains("middle of a task"));

    let (car, notes) = carried(boundary, &sc, &c).unwrap();
    let Data::F32(theta) = &boundary.tensors["model.theta"].data else { panic!() };
    assert_eq!(&car.theta, theta);
    let (omega, star) = car.penalty.clone().expect("SI to SI carries the importance");
    assert!(omega.iter().any(|&o| o > 0.0));
    let Data::F32(star0) = &boundary.tensors["penalty.theta_star"].data else { panic!() };
    assert_eq!(&star, star0);
    assert!(notes.iter().any(|n| n.contains("Omega and theta* carried")), "{notes:?}");

    // The carried importance acts from the first new step: after the first new task the
    // parameters that mattered moved less (Omega-weighted drift from the carried theta*) than
    // when only the parameters are carried. (A strong c, so the effect is plain on easy data.)
    let c = RunConfig { c: 100.0, strength: 100.0, ..c.clone() };
    let spec = ScenarioSpec::new(ScenarioKind::SplitMnist);
    let first_task_end = |car: engram_cl::methods::Carried| {
        let mut end: Option<Vec<f32>> = None;
        let mut save = |ck: &Checkpoint, _steps: u64| -> Result<(), String> {
            if end.is_none() {
                let Data::F32(theta) = &ck.tensors["model.theta"].data else { panic!() };
                end = Some(theta.clone());
            }
            Ok(())
        };
        let every = Checkpointing { every: None, spec: &spec, cli: serde_json::Value::Null, save: &mut save };
        let res = run_with(&cpu(), &sc, &c, Start::InitFrom(Box::new(car)), Some(every), |_| {}).unwrap();
        (res, end.unwrap())
    };
    let drift = |theta: &[f32]| -> f64 {
        theta.iter().zip(&star).zip(&omega).map(|((t, s), o)| (*o as f64) * ((t - s) as f64).powi(2)).sum()
    };
    let (with, theta_with) = first_task_end(car.clone());
    let mut bare = car.clone();
    bare.penalty = None;
    let (_, theta_without) = first_task_end(bare);
    assert!(
        drift(&theta_with) < 0.8 * drift(&theta_without),
        "weighted drift with the carried penalty {} vs without {}",
        drift(&theta_with),
        drift(&theta_without)
    );
    let fresh = run(&sc, &c, |_| {}).unwrap();
    assert_eq!(
        bits(std::slice::from_ref(&with.b)),
        bits(std::slice::from_ref(&fresh.b)),
        "b is the untrained network's accuracy"
    );

    let ft = cfg(Method::Finetune);
    let ft = RunConfig { batch: 8, ..ft };
    let (car_ft, notes) = carried(boundary, &sc, &ft).unwrap();
    assert!(car_ft.penalty.is_none());
    assert!(!notes.iter().any(|n| n.contains("carried over (")), "{notes:?}");
    let ewc = RunConfig { batch: 8, ..cfg(Method::Ewc) };
    let (car_ewc, notes) = carried(boundary, &sc, &ewc).unwrap();
    assert!(car_ewc.penalty.is_none() && notes.iter().any(|n| n.contains("none carried")), "{notes:?}");
    let wide = RunConfig { hidden: 32, ..c.clone() };
    assert!(carried(boundary, &sc, &wide).unwrap_err().contains("layer sizes"));
}
