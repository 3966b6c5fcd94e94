//! The run state lives on the backend: a whole run on `Counting<Cpu<f32>>`, which counts every
//! byte crossing between host and backend, moves nothing parameter-sized per training step.
//!
//! Per step the host uploads nothing (each epoch's sample order goes up once: 8 bytes a sample,
//! so 8 x batch bytes per step on average) and reads the task loss and the penalty every
//! `LOSS_CHECK_EVERY` steps or half second (12 bytes a step). Before the redesign, every step uploaded the
//! parameters (a copy per layer) and the batch's pixels and downloaded the gradient: 1,278,248
//! bytes up and 1,077,292 bytes down per step of the split-mnist network (measured with the same
//! kind of counting wrapper on the old backend trait).

mod common;

use common::{cfg, split_scenario};
use engram_cl::config::RunConfig;
use engram_cl::methods::importance::FisherKind;
use engram_cl::methods::{EwcMode, Method, SiGrad, SiRelu};
use engram_cl::protocol::{resolve, Overrides};
use engram_cl::run::{run, Event};
use engram_cl::scenario::{build, Scenario, ScenarioKind, ScenarioSpec};
use engram_nn::Cpu;
use engram_tape::counting::{Counting, Transfers};

/// What crossed in each part of a run: before the first task (data, initialisation, `b`), and
/// per task: its training steps, and its end (consolidation and evaluation).
struct Figures {
    start: Transfers,
    steps: Vec<(usize, Transfers)>,
    task_end: Vec<Transfers>,
}

fn measure(sc: &Scenario, c: &RunConfig) -> Figures {
    let be = Counting::new(Cpu::<f32>::new());
    let (mut start, mut steps, mut task_end) = (None, Vec::new(), Vec::new());
    let (mut at, mut n) = (Transfers::default(), 0usize);
    run(&be, sc, c, |e| match e {
        Event::TaskStart { steps: s, .. } => {
            at = be.transfers();
            start.get_or_insert(at);
            n = s;
        }
        Event::TrainingDone { .. } => {
            let now = be.transfers();
            steps.push((n, now - at));
            at = now;
        }
        Event::TaskEnd { .. } => task_end.push(be.transfers() - at),
        Event::Step { .. } => {}
    })
    .unwrap();
    Figures { start: start.unwrap(), steps, task_end }
}

fn per_step(f: &Figures) -> (f64, f64) {
    let n: usize = f.steps.iter().map(|(n, _)| n).sum();
    let up: u64 = f.steps.iter().map(|(_, t)| t.host_to_backend).sum();
    let down: u64 = f.steps.iter().map(|(_, t)| t.backend_to_host).sum();
    (up as f64 / n as f64, down as f64 / n as f64)
}

/// Split MNIST, SI, the SI paper's network (784-256-256-10, 269,322 parameters) on the real
/// data, one epoch per task: the bytes per step and per task.
#[test]
fn a_split_mnist_si_run_moves_no_parameter_sized_data_per_step() {
    let Some(dir) = std::env::var_os("ENGRAM_DATA") else {
        eprintln!("SKIP: ENGRAM_DATA not set; this test needs the real MNIST files");
        return;
    };
    let m = engram_mnist::load(Some(std::path::Path::new(&dir)), engram_mnist::Verify::Skip).unwrap();
    let spec = ScenarioSpec::new(ScenarioKind::SplitMnist);
    let sc = build(&spec, m.train.into(), m.test.into()).unwrap();
    let o = Overrides { epochs: Some(1), ..Overrides::default() };
    let si = (SiGrad::Task, SiRelu::Official);
    let ewc = (FisherKind::Empirical, EwcMode::Separate, 1.0);
    let (c, _) = resolve(ScenarioKind::SplitMnist, Method::Si, &o, 0, si, ewc, 1000, false);
    let f = measure(&sc, &c);
    let params_bytes = 4.0 * 269_322.0;
    let (up, down) = per_step(&f);
    println!("split-mnist SI, 1 epoch, batch {}:", c.batch);
    println!(
        "  before the first task (data, initialisation, b): {} B up, {} B down",
        f.start.host_to_backend, f.start.backend_to_host
    );
    for (t, ((n, s), e)) in f.steps.iter().zip(&f.task_end).enumerate() {
        println!(
            "  task {}: {n} steps, {} B up / {} B down ({:.1} / {:.1} per step); end of task (consolidation, \
             evaluation): {} B up, {} B down",
            t + 1,
            s.host_to_backend,
            s.backend_to_host,
            s.host_to_backend as f64 / *n as f64,
            s.backend_to_host as f64 / *n as f64,
            e.host_to_backend,
            e.backend_to_host
        );
    }
    println!("  per step over the run: {up:.1} B up, {down:.1} B down (the parameters are {params_bytes} B)");
    // The epoch's order (a row and a label per sample) is the only upload of the steps.
    assert!(up <= 8.0 * c.batch as f64 + 1.0, "{up} B up per step");
    // The losses, read every LOSS_CHECK_EVERY steps: 4 + 8 bytes a step.
    assert!(down <= 12.0 + 1.0, "{down} B down per step");
    assert!(up + down < params_bytes / 100.0);
    // The end of a task reads the evaluation counts and a few flags, never the parameters.
    for e in &f.task_end {
        assert!(e.backend_to_host < 1_000 && e.host_to_backend < 1_000, "{e:?}");
    }
}

/// The same on a small synthetic scenario for every method (no MNIST needed): per step, nothing
/// parameter-sized crosses; GEM and A-GEM read only their dot products (and GEM its k x k Gram
/// matrix when a constraint is violated).
#[test]
fn no_method_moves_parameter_sized_data_per_step() {
    let sc = split_scenario(3, 200, 40);
    for m in
        [Method::Finetune, Method::Joint, Method::L2, Method::Ewc, Method::Mas, Method::Si, Method::Gem, Method::Agem]
    {
        let c = RunConfig { hidden: 64, batch: 10, epochs: 1, ..cfg(m) };
        let p = engram_nn::Mlp::new(&engram_cl::config::layer_sizes(&sc, &c)).num_params() as f64;
        let f = measure(&sc, &c);
        let (up, down) = per_step(&f);
        assert!(up + down < 4.0 * p / 20.0, "{m:?}: {up} B up, {down} B down per step for {p} parameters");
    }
}
