//! The continual-learning run: train on each task in turn, consolidate, evaluate every task.
//!
//! The loop is short and knows no method by name: each method is a
//! [`Strategy`](crate::methods::Strategy) whose hooks run around the steps
//! (`phase.rs` trains one phase). The whole state lives on the backend; the host receives the
//! losses every [`LOSS_CHECK_EVERY`] steps or half second (the check for divergence), the evaluation counts,
//! checkpoints and diagnostics.

mod phase;

use crate::checkpoint;
use crate::config::{layer_sizes, RunConfig};
use crate::data::{Split, TaskData};
use crate::methods::{self, Carried, StateAndMethod};
use crate::metrics::{self, Metrics};
use crate::scenario::{phases, Scenario, ScenarioSpec};
use crate::state::{peak_rss_bytes, Profile, Progress, Run, RunBackend, RunError, RunState, Streams};
use engram_ckpt::Checkpoint;
use engram_nn::{Init, Mlp};
use engram_si::OptimizerState;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

pub use phase::LOSS_CHECK_EVERY;

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Task names in training order.
    pub task_names: Vec<String>,
    /// `R[i][j]`: test accuracy on task `j` after training task `i` (one row for joint training).
    pub r: Vec<Vec<f64>>,
    /// Test accuracy of the untrained network on each task.
    pub b: Vec<f64>,
    /// Same as `r` on the training data, when asked for.
    pub r_train: Option<Vec<Vec<f64>>>,
    /// The summary metrics (joint: only `acc` is meaningful).
    pub metrics: Metrics,
    /// Training-set metrics, when asked for.
    pub metrics_train: Option<Metrics>,
    /// Wall time of the run, seconds.
    pub wall_seconds: f64,
    /// Wall time of each task (training, consolidation and evaluation).
    pub per_task_seconds: Vec<f64>,
    /// Peak resident memory of the process so far, bytes (`None` where unknown).
    pub peak_rss_bytes: Option<u64>,
    /// Time split.
    pub profile: Profile,
    /// Bytes of method state kept beside the model and optimizer.
    pub strategy_state_bytes: usize,
    /// Number of model parameters.
    pub num_params: usize,
    /// The device the run used.
    pub device: String,
    /// SI diagnostics per task, with `--diagnose`.
    #[serde(skip)]
    pub diagnostics: Option<Vec<crate::diagnose::TaskDiagnostics>>,
}

/// Progress events for a front end.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// Training on a task starts; `steps` steps follow.
    TaskStart {
        /// 0-based task index.
        task: usize,
        /// Task name.
        name: &'a str,
        /// Steps in this task.
        steps: usize,
        /// Steps already done (a resumed run), so the count starts there.
        done: usize,
    },
    /// One step done (reported in bursts, when the host reads the losses).
    Step {
        /// Total loss of the step.
        loss: f32,
    },
    /// The task's last step is done; consolidation and evaluation follow.
    TrainingDone {
        /// 0-based task index.
        task: usize,
    },
    /// A task (training, consolidation, evaluation) is finished.
    TaskEnd {
        /// 0-based task index.
        task: usize,
        /// The new row of R.
        row: &'a [f64],
    },
}

/// Where a run starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// From the seed's initialisation.
    Fresh,
    /// Where a stopped run left off: its checkpoint (same scenario and config).
    Resume(Box<Checkpoint>),
    /// New tasks from a trained model (`--init-from`): its parameters, and its importance state
    /// or episodic memory where they mean the same for this run's method.
    InitFrom(Box<Carried>),
}

/// Checkpointing during a run (`--checkpoint-dir`).
pub struct Checkpointing<'a> {
    /// Also save every this many training steps (counted over the whole run); `None`: only at
    /// the end of each task.
    pub every: Option<u64>,
    /// The scenario's description, stored in the checkpoint.
    pub spec: &'a ScenarioSpec,
    /// What the front end wants back on resume, stored as is under `run.cli`.
    pub cli: serde_json::Value,
    /// Writes a checkpoint taken after `steps` training steps; an error stops the run (the
    /// previous checkpoint stays as it was).
    pub save: &'a mut dyn FnMut(&Checkpoint, u64) -> Result<(), String>,
}

/// Runs `cfg` on `scenario` on the backend `be`, from the seed's initialisation.
pub fn run<B: RunBackend>(
    be: &B,
    scenario: &Scenario,
    cfg: &RunConfig,
    on_event: impl FnMut(Event),
) -> Result<RunResult, RunError> {
    run_with(be, scenario, cfg, Start::Fresh, None, on_event)
}

/// Accuracy of `theta` on every task's `split`.
fn accuracy_row<B: RunBackend>(run: &Run<'_, B>, theta: &B::Buffer<f32>, split: Split) -> Result<Vec<f64>, RunError> {
    (0..run.scenario.tasks.len())
        .map(|t| {
            let e = engram_nn::evaluate(
                run.be,
                run.model,
                theta,
                run.data.samples(t, split),
                engram_nn::EVAL_CHUNK,
                false,
            )?;
            Ok(e.accuracy())
        })
        .collect()
}

/// The state of a run that starts now (from the seed's initialisation, or a carried model).
fn fresh<B: RunBackend>(run: &Run<'_, B>, carried: Option<&Carried>) -> Result<StateAndMethod<B>, RunError> {
    let (be, cfg, model) = (run.be, run.cfg, run.model);
    let init = Init { zero_output: cfg.zero_output, scheme: cfg.init.scheme() };
    let theta0 = be.upload(&model.init(&mut ChaCha8Rng::seed_from_u64(cfg.seed), init))?;
    let mut profile = Profile::default();
    // b: the untrained network (FWT's reference), also when starting from a trained one.
    let t = Instant::now();
    let b = accuracy_row(run, &theta0, Split::Test)?;
    profile.evaluation += t.elapsed().as_secs_f64();
    let theta = match carried {
        Some(c) if c.theta.len() != model.num_params() => {
            return Err(RunError::Invalid(format!(
                "the model to start from has {} parameters; this run's network ({:?}) has {}",
                c.theta.len(),
                model.sizes(),
                model.num_params()
            )))
        }
        Some(c) => be.upload(&c.theta)?,
        None => theta0,
    };
    let mut strategy = methods::build(run, &theta)?;
    if let Some(c) = carried {
        strategy.carry(run, c).map_err(RunError::Invalid)?;
    }
    let n = model.num_params();
    let st = RunState {
        grad: be.alloc(n)?,
        optimizer: OptimizerState::new(be, cfg.optimizer, n)?,
        theta,
        streams: Streams::seeded(cfg.seed),
        b,
        r: Vec::new(),
        r_train: cfg.eval_train.then(Vec::new),
        per_task_seconds: Vec::new(),
        task_seconds: 0.0,
        seconds: 0.0,
        profile,
        progress: Progress::default(),
        order: Vec::new(),
    };
    Ok((st, strategy))
}

/// [`run`] from a given start, saving checkpoints when asked.
pub fn run_with<B: RunBackend>(
    be: &B,
    scenario: &Scenario,
    cfg: &RunConfig,
    start: Start,
    mut ckpt: Option<Checkpointing<'_>>,
    mut on_event: impl FnMut(Event),
) -> Result<RunResult, RunError> {
    cfg.validate()?;
    if scenario.tasks.is_empty() {
        return Err(RunError::Invalid("the scenario has no task".into()));
    }
    if cfg.diagnose && !matches!(start, Start::Fresh) {
        return Err(RunError::Invalid("--diagnose records whole runs: it cannot resume or --init-from".into()));
    }
    if cfg.diagnose && ckpt.is_some() {
        return Err(RunError::Invalid("--diagnose cannot be combined with checkpoints".into()));
    }
    let wall = Instant::now();
    let model = Mlp::new(&layer_sizes(scenario, cfg));
    let data = TaskData::upload(be, scenario)?;
    let upload_seconds = wall.elapsed().as_secs_f64();
    let run = Run { be, scenario, cfg, model: &model, data: &data };
    let (mut st, mut strategy) = match start {
        Start::Resume(ck) => checkpoint::decode(&run, &ck).map_err(RunError::Invalid)?,
        Start::Fresh => fresh(&run, None)?,
        Start::InitFrom(c) => fresh(&run, Some(&c))?,
    };
    st.profile.data += upload_seconds;
    let seconds_before = st.seconds;
    let phases = phases(scenario.tasks.len(), strategy.joint());
    if st.progress.phases_done > phases.len() {
        return Err(RunError::Invalid("the saved state does not fit this scenario and config".into()));
    }
    for (pi, tasks) in phases.iter().enumerate().skip(st.progress.phases_done) {
        let t_task = Instant::now();
        let resuming = st.progress.mid_phase();
        let task_seconds_before = if resuming { st.task_seconds } else { 0.0 };
        let task = *tasks.last().expect("non-empty phase");
        let name = if tasks.len() == 1 { scenario.tasks[task].name.clone() } else { "all tasks".into() };
        let clock = phase::Clock { wall, seconds_before, task: t_task, task_seconds_before };
        let mut train = phase::Phase { index: pi, tasks, task, name: &name, resuming, clock };
        train.run(&run, &mut st, strategy.as_mut(), ckpt.as_mut(), &mut on_event)?;
        on_event(Event::TrainingDone { task: pi });
        // End of task: importance and consolidation, then evaluation.
        let t = Instant::now();
        strategy.end_phase(&run, &mut st, task)?;
        st.profile.importance += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let row = accuracy_row(&run, &st.theta, Split::Test)?;
        if let Some(rt) = st.r_train.as_mut() {
            rt.push(accuracy_row(&run, &st.theta, Split::Train)?);
        }
        st.profile.evaluation += t.elapsed().as_secs_f64();
        on_event(Event::TaskEnd { task: pi, row: &row });
        st.r.push(row);
        st.per_task_seconds.push(task_seconds_before + t_task.elapsed().as_secs_f64());
        st.progress = Progress { phases_done: pi + 1, epoch: 0, step: 0, steps: st.progress.steps };
        st.task_seconds = 0.0;
        if let Some(ck) = ckpt.as_mut() {
            st.seconds = seconds_before + wall.elapsed().as_secs_f64();
            let saved = checkpoint::encode(&run, &st, strategy.as_ref(), ck.spec, ck.cli.clone())?;
            (ck.save)(&saved, st.progress.steps).map_err(|e| {
                RunError::Invalid(format!("checkpoint at the end of task {} ({name}) failed: {e}", pi + 1))
            })?;
        }
    }
    let summarize = |r: &Vec<Vec<f64>>| {
        if r.len() == scenario.tasks.len() {
            metrics::compute(r, &st.b)
        } else {
            let last = r.last().expect("one row");
            let acc = last.iter().sum::<f64>() / last.len() as f64;
            Metrics {
                acc,
                bwt: None,
                bwt_gem: None,
                fwt: None,
                forgetting: None,
                learning_accuracy: Vec::new(),
                acc_curve: vec![acc],
            }
        }
    };
    let mut profile = st.profile.clone();
    strategy.report(&mut profile);
    let metrics = summarize(&st.r);
    let metrics_train = st.r_train.as_ref().map(summarize);
    Ok(RunResult {
        task_names: scenario.tasks.iter().map(|t| t.name.clone()).collect(),
        metrics,
        metrics_train,
        wall_seconds: seconds_before + wall.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        profile,
        strategy_state_bytes: strategy.state_bytes(&run),
        num_params: model.num_params(),
        device: be.name(),
        diagnostics: strategy.take_diagnostics(),
        r: st.r,
        b: st.b,
        r_train: st.r_train,
        per_task_seconds: st.per_task_seconds,
    })
}
