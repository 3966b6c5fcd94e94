//! The continual-learning loop: train on each task in turn, consolidate, evaluate every task.

use crate::diagnose;
use crate::episodic::{EpisodicMemory, Fill};
use crate::gem::{self, Episodic};
use crate::importance::{self, FisherKind};
use crate::metrics::{self, Metrics};
use crate::scenario::{Scenario, View};
use crate::strategy::{EwcMode, Method, Penalty, SiGrad, SiRelu, SiVariant};
use engram_nn::{Backend, Cpu, Init, Mlp, Optimizer, OptimizerKind, Tape, TaskMask};
use engram_si::{OmegaGrad, ReluPlacement, Slices};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Every hyperparameter of a run (all resolved: no hidden defaults). Serialized whole into
/// checkpoints; `--out` JSON rewrites `optimizer` as its name beside `lr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The method.
    pub method: Method,
    /// Penalty strength `c` of the fused step: SI's `c`; for L2 and MAS `lambda`; for EWC
    /// `lambda / 2` (the EWC paper's `(lambda/2) sum F (theta - theta*)^2`).
    pub c: f32,
    /// The user-facing strength (`--c` for SI, `--lambda` for the others).
    pub strength: f32,
    /// SI's damping `xi` in `Omega += omega / (delta^2 + xi)`.
    pub xi: f32,
    /// Optimizer (and its learning rate); written to `--out` JSON as `optimizer` and `lr`.
    #[serde(with = "optimizer_serde")]
    pub optimizer: OptimizerKind,
    /// Epochs per task.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Hidden layer width.
    pub hidden: usize,
    /// Number of hidden layers.
    pub layers: usize,
    /// Zero-initialise the output layer (SI paper, Split MNIST).
    pub zero_output: bool,
    /// Distribution of the initial weights (`--init`; the GEM presets use Xavier-uniform).
    pub init: crate::protocol::InitChoice,
    /// Reset the optimizer state at the start of each task.
    pub reset_optimizer: bool,
    /// SI: gradient of the path integral.
    pub si_grad: SiGrad,
    /// SI: relu placement.
    pub si_relu: SiRelu,
    /// SI: the official path integral, or a known reimplementation mistake (`--si-variant`).
    pub si_variant: SiVariant,
    /// EWC: empirical or true Fisher.
    pub fisher: FisherKind,
    /// EWC: separate penalties or online.
    pub ewc_mode: EwcMode,
    /// Online EWC's decay `gamma`.
    pub gamma: f32,
    /// Samples used for the Fisher / MAS importance at the end of each task.
    pub importance_samples: usize,
    /// Seed of initialisation, shuffling and sampling.
    pub seed: u64,
    /// Also measure accuracy on each task's training data (the official SI notebook's figure).
    pub eval_train: bool,
    /// GEM / A-GEM: memories per task (`--memories`).
    pub memories: usize,
    /// GEM: the margin `gamma` of the dual QP's bound `v >= gamma` (`--memory-strength`).
    pub memory_strength: f32,
    /// SI only: record the per-task diagnostics of [`crate::diagnose`] (`--diagnose`). Costs
    /// two forward passes over each task's training data and one sort of the importances.
    #[serde(skip)]
    pub diagnose: bool,
}

/// The optimizer as a JSON object: `{"kind": "adam", "lr": .., "beta1": .., "beta2": .., "eps": ..}`
/// or `{"kind": "sgd", "lr": ..}`.
mod optimizer_serde {
    use engram_nn::OptimizerKind;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
    enum Rec {
        Sgd { lr: f32 },
        Adam { lr: f32, beta1: f32, beta2: f32, eps: f32 },
    }

    pub fn serialize<S: Serializer>(k: &OptimizerKind, s: S) -> Result<S::Ok, S::Error> {
        match *k {
            OptimizerKind::Sgd { lr } => Rec::Sgd { lr },
            OptimizerKind::Adam { lr, beta1, beta2, eps } => Rec::Adam { lr, beta1, beta2, eps },
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OptimizerKind, D::Error> {
        Ok(match Rec::deserialize(d)? {
            Rec::Sgd { lr } => OptimizerKind::Sgd { lr },
            Rec::Adam { lr, beta1, beta2, eps } => OptimizerKind::Adam { lr, beta1, beta2, eps },
        })
    }
}

/// Seconds spent in each part of the run (`--profile`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Forward passes and the loss, training steps only.
    pub forward: f64,
    /// Backward passes and gradient gathering.
    pub backward: f64,
    /// The fused consolidation / optimizer step.
    pub consolidation_step: f64,
    /// Importance estimation and consolidation at the end of each task.
    pub importance: f64,
    /// Evaluation (R, b and the training-set accuracies).
    pub evaluation: f64,
    /// Drawing batches (gathering, permuting, rotating).
    pub data: f64,
    /// GEM / A-GEM: the memory gradients (batched forward and backward over the memories).
    pub memory_gradients: f64,
    /// GEM / A-GEM: the constraint check, the QP and the projection of the gradient.
    pub projection: f64,
    /// GEM / A-GEM: steps whose gradient was projected (a count, not seconds).
    pub projected_steps: u64,
    /// GEM / A-GEM: steps with at least one finished task in memory (a count, not seconds).
    pub constrained_steps: u64,
}

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
    /// SI diagnostics per task, with `--diagnose`.
    #[serde(skip)]
    pub diagnostics: Option<Vec<crate::diagnose::TaskDiagnostics>>,
}

/// A failure during a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The loss stopped being a finite number.
    #[error(
        "the loss became {value} on task {task} ({name}), epoch {epoch}, step {step} \
         (task loss {task_loss}, penalty {penalty}); likely cause: {cause}"
    )]
    NonFinite {
        /// 1-based task.
        task: usize,
        /// Task name.
        name: String,
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// The total loss.
        value: f32,
        /// Its task part.
        task_loss: f32,
        /// Its penalty part.
        penalty: f64,
        /// A hint.
        cause: String,
    },
    /// The parameters left by a task's last step are not finite.
    #[error(
        "parameter {index} became {value} in the last step of task {task} ({name}); likely cause: the \
         learning rate ({lr}) or the penalty strength (c = {c}) is too large"
    )]
    NonFiniteParams {
        /// 1-based task.
        task: usize,
        /// Task name.
        name: String,
        /// Index of the first non-finite parameter.
        index: usize,
        /// Its value.
        value: f32,
        /// The learning rate.
        lr: f32,
        /// The penalty strength of the fused step.
        c: f32,
    },
    /// A scenario or configuration that cannot run.
    #[error("{0}")]
    Invalid(String),
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
    /// One step done.
    Step {
        /// Total loss of the step.
        loss: f32,
    },
    /// A task (training, consolidation, evaluation) is finished.
    TaskEnd {
        /// 0-based task index.
        task: usize,
        /// The new row of R.
        row: &'a [f64],
    },
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The network's layer sizes for a scenario and config.
pub fn layer_sizes(scenario: &Scenario, cfg: &RunConfig) -> Vec<usize> {
    let input = scenario.tasks.first().map_or(784, |t| t.train.split.dim);
    let mut sizes = vec![input];
    sizes.extend(std::iter::repeat_n(cfg.hidden, cfg.layers));
    sizes.push(scenario.outputs);
    sizes
}

struct Evaluator {
    chunk: usize,
}

impl Evaluator {
    fn accuracy(&self, be: &Cpu<f32>, model: &Mlp, theta: &[f32], view: &View, mask: Option<&TaskMask>) -> f64 {
        let n = view.len();
        if n == 0 {
            return 0.0;
        }
        let mask_t = mask.map(|m| m.tensor(be));
        let mut tape = Tape::new(*be);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut correct = 0;
        for start in (0..n).step_by(self.chunk) {
            let end = (start + self.chunk).min(n);
            x.clear();
            y.clear();
            view.fill(start..end, &mut x, &mut y);
            let logits =
                model.logits(&mut tape, theta, be.from_vec(end - start, model.inputs(), std::mem::take(&mut x)));
            correct += be.count_correct(&logits, &y, mask_t.as_ref());
        }
        correct as f64 / n as f64
    }

    fn row(
        &self,
        be: &Cpu<f32>,
        model: &Mlp,
        theta: &[f32],
        sc: &Scenario,
        masks: &[Option<TaskMask>],
        train: bool,
    ) -> Vec<f64> {
        sc.tasks
            .iter()
            .zip(masks)
            .map(|(t, m)| self.accuracy(be, model, theta, if train { &t.train } else { &t.test }, m.as_ref()))
            .collect()
    }
}

/// Runs `cfg` on `scenario` on the CPU. `on_event` receives progress.
pub fn run(scenario: &Scenario, cfg: &RunConfig, on_event: impl FnMut(Event)) -> Result<RunResult, RunError> {
    run_with(scenario, cfg, Start::Fresh, None, on_event)
}

/// Where a run starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// From the seed's initialisation.
    Fresh,
    /// Where a stopped run left off (its checkpointed state; same scenario and config).
    Resume(Box<RunState>),
    /// New tasks from a trained model (`--init-from`): its parameters, and its importance state
    /// or episodic memory where they mean the same for this run's method.
    InitFrom(Box<Carried>),
}

/// What `--init-from` carries over from a trained model into a new run.
#[derive(Clone, Debug)]
pub struct Carried {
    /// The parameters.
    pub theta: Vec<f32>,
    /// `Omega` and `theta*` (quadratic methods; `None`: start with no penalty).
    pub penalty: Option<(Vec<f32>, Vec<f32>)>,
    /// GEM / A-GEM: the finished tasks' memories (rows, labels, task ids, blocks, masks).
    pub memory: Option<MemoryRows>,
}

/// The finished tasks' rows of an episodic memory (see [`EpisodicMemory`]).
#[derive(Clone, Debug, Default)]
pub struct MemoryRows {
    /// Features, `rows x dim`.
    pub x: Vec<f32>,
    /// Labels.
    pub y: Vec<u32>,
    /// Each row's task.
    pub row_task: Vec<u32>,
    /// Each task's rows.
    pub blocks: Vec<std::ops::Range<usize>>,
    /// Each task's multi-head mask.
    pub masks: Vec<Option<Vec<bool>>>,
}

/// How far a run has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Training phases (tasks; one for joint training) finished, consolidated and evaluated.
    pub phases_done: usize,
    /// Within the next phase: the epoch in progress (0-based).
    pub epoch: usize,
    /// Within the next phase: steps done in that epoch (0 with epoch 0: not started).
    pub step: usize,
    /// Training steps done in the whole run.
    pub steps: u64,
}

impl Progress {
    /// Whether the state is in the middle of a phase (not at a task boundary).
    pub fn mid_phase(&self) -> bool {
        self.epoch > 0 || self.step > 0
    }
}

/// Everything a run changes as it goes: what a checkpoint holds, and what a resumed run starts
/// from. Scratch buffers (the tape, gradients, batches) are not part of it.
#[derive(Clone, Debug)]
pub struct RunState {
    /// The parameters.
    pub theta: Vec<f32>,
    /// The optimizer's moments and step count.
    pub opt: Optimizer,
    /// `Omega`, `theta*` and SI's running `omega`.
    pub pen: Penalty,
    /// GEM / A-GEM.
    pub episodic: Option<Episodic>,
    /// SI `prev-step` variant: the previous step's change.
    pub prev_delta: Vec<f32>,
    /// SI `from-init` variant: the initial parameters.
    pub theta_init: Vec<f32>,
    /// Shuffling of each epoch.
    pub shuffle_rng: ChaCha8Rng,
    /// Fisher / MAS samples.
    pub sample_rng: ChaCha8Rng,
    /// A-GEM's reference samples.
    pub memory_rng: ChaCha8Rng,
    /// Accuracy of the untrained network on each task.
    pub b: Vec<f64>,
    /// Rows of R so far.
    pub r: Vec<Vec<f64>>,
    /// Rows of the training-set R so far.
    pub r_train: Option<Vec<Vec<f64>>>,
    /// Seconds of each finished phase.
    pub per_task_seconds: Vec<f64>,
    /// Seconds spent in the phase in progress.
    pub task_seconds: f64,
    /// Wall seconds of the run so far (all sessions).
    pub seconds: f64,
    /// The time split so far.
    pub profile: Profile,
    /// How far the run has got.
    pub progress: Progress,
    /// Mid-phase: the current epoch's sample order, `(task, position)` pairs (empty at a boundary).
    pub order: Vec<(u32, u32)>,
}

/// The random streams of a run with seed `seed` (shuffling, importance samples, A-GEM).
pub fn seeded_streams(seed: u64) -> (ChaCha8Rng, ChaCha8Rng, ChaCha8Rng) {
    (
        ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x9e37_79b9_7f4a_7c15)),
        ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x2545_f491_4f6c_dd1d)),
        ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x6a09_e667_f3bc_c908)),
    )
}

/// A fresh episodic memory for `cfg` on `scenario` (GEM / A-GEM only).
pub fn new_episodic(scenario: &Scenario, cfg: &RunConfig) -> Option<Episodic> {
    cfg.method.is_episodic().then(|| {
        let (kind, fill) = match cfg.method {
            Method::Agem => (gem::Kind::Agem, Fill::PerClass { classes: scenario.outputs }),
            _ => (gem::Kind::Gem, Fill::Ring),
        };
        let dim = scenario.tasks[0].train.split.dim;
        let memory = EpisodicMemory::new(cfg.memories, dim, fill);
        Episodic::new(kind, memory, cfg.memory_strength as f64, crate::qp::OFFICIAL_REG)
    })
}

/// The training phases: one per task, or a single phase over every task for joint training.
pub fn phases(scenario: &Scenario, cfg: &RunConfig) -> Vec<Vec<usize>> {
    if cfg.method == Method::Joint {
        vec![(0..scenario.tasks.len()).collect()]
    } else {
        (0..scenario.tasks.len()).map(|i| vec![i]).collect()
    }
}

/// A phase's training samples as `(task, position)` pairs, in the order shuffling starts from.
pub fn phase_samples(scenario: &Scenario, phase: &[usize]) -> Vec<(u32, u32)> {
    phase.iter().flat_map(|&ti| (0..scenario.tasks[ti].train.len() as u32).map(move |p| (ti as u32, p))).collect()
}

/// Checkpointing during a run (`--checkpoint-dir`).
pub struct Checkpointing<'a> {
    /// Also save every this many training steps (counted over the whole run); `None`: only at
    /// the end of each task.
    pub every: Option<u64>,
    /// Saves the state; an error stops the run (the previous checkpoint stays as it was).
    pub save: &'a mut dyn FnMut(&RunState) -> Result<(), String>,
}

/// [`run`] from a given start, saving checkpoints when asked.
pub fn run_with(
    scenario: &Scenario,
    cfg: &RunConfig,
    start: Start,
    mut ckpt: Option<Checkpointing>,
    mut on_event: impl FnMut(Event),
) -> Result<RunResult, RunError> {
    validate(cfg)?;
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
    let be = Cpu::<f32>::new();
    let sizes = layer_sizes(scenario, cfg);
    let model = Mlp::new(&sizes);
    let masks: Vec<Option<TaskMask>> =
        scenario.tasks.iter().map(|t| t.mask.as_ref().map(|m| TaskMask::new(scenario.outputs, m))).collect();
    let eval = Evaluator { chunk: 1000 };
    let phases = phases(scenario, cfg);
    let si = cfg.method == Method::Si;
    let prev_step = si && cfg.si_variant == SiVariant::PrevStep;

    let mut st = match start {
        Start::Resume(st) => {
            let st = *st;
            if st.theta.len() != model.num_params() || st.progress.phases_done > phases.len() {
                return Err(RunError::Invalid("the saved state does not fit this scenario and config".into()));
            }
            st
        }
        fresh_or_carried => {
            let mut init_rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            let theta0 = model.init(&mut init_rng, Init { zero_output: cfg.zero_output, scheme: cfg.init.scheme() });
            let (shuffle_rng, sample_rng, memory_rng) = seeded_streams(cfg.seed);
            let mut prof = Profile::default();
            // b: the untrained network (FWT's reference), also when starting from a trained one.
            let t = Instant::now();
            let b = eval.row(&be, &model, &theta0, scenario, &masks, false);
            prof.evaluation += t.elapsed().as_secs_f64();
            let mut episodic = new_episodic(scenario, cfg);
            let (theta, pen) = match fresh_or_carried {
                Start::InitFrom(c) => {
                    let c = *c;
                    if c.theta.len() != theta0.len() {
                        return Err(RunError::Invalid(format!(
                            "the model to start from has {} parameters; this run's network ({sizes:?}) has {}",
                            c.theta.len(),
                            theta0.len()
                        )));
                    }
                    let mut pen = Penalty::new(cfg.method, &c.theta);
                    if let (Some((o, s)), true) = (c.penalty, cfg.method.is_quadratic()) {
                        if o.len() != c.theta.len() || s.len() != c.theta.len() {
                            return Err(RunError::Invalid("the carried importance does not fit the model".into()));
                        }
                        pen.big_omega = o;
                        pen.theta_star = s;
                    }
                    if let (Some(m), Some(ep)) = (c.memory, episodic.as_mut()) {
                        ep.memory
                            .restore_finished(m.x, m.y, m.row_task, m.blocks, m.masks)
                            .map_err(|e| RunError::Invalid(format!("the carried episodic memory does not fit: {e}")))?;
                    }
                    (c.theta, pen)
                }
                _ => {
                    let pen = Penalty::new(cfg.method, &theta0);
                    (theta0, pen)
                }
            };
            RunState {
                opt: Optimizer::new(cfg.optimizer, theta.len()),
                prev_delta: if prev_step { vec![0f32; theta.len()] } else { Vec::new() },
                theta_init: if si && cfg.si_variant == SiVariant::FromInit { theta.clone() } else { Vec::new() },
                theta,
                pen,
                episodic,
                shuffle_rng,
                sample_rng,
                memory_rng,
                b,
                r: Vec::new(),
                r_train: cfg.eval_train.then(Vec::new),
                per_task_seconds: Vec::new(),
                task_seconds: 0.0,
                seconds: 0.0,
                profile: prof,
                progress: Progress::default(),
                order: Vec::new(),
            }
        }
    };
    let seconds_before = st.seconds;

    let omega_mode = (cfg.method == Method::Si).then_some(match cfg.si_grad {
        SiGrad::Task => OmegaGrad::Task,
        SiGrad::Total => OmegaGrad::Total,
    });
    let relu = match cfg.si_relu {
        SiRelu::Official => ReluPlacement::Accumulated,
        SiRelu::None => ReluPlacement::None,
        SiRelu::PerTask => ReluPlacement::PerTaskTerm,
    };

    // SI variants (`--si-variant`). PrevStep: the step runs without omega accumulation and the
    // runner adds -g(k) * delta(k-1) itself, delta measured as theta after - theta before the step
    // (as the fused step does). FromInit: the initial theta, where Delta is (wrongly) measured from.
    let mut theta_before = if prev_step { vec![0f32; st.theta.len()] } else { Vec::new() };
    let step_omega_mode = if prev_step { None } else { omega_mode };

    let mut tape = Tape::new(be);
    let mut grad = vec![0f32; st.theta.len()];
    let mut diagnostics = cfg.diagnose.then(Vec::new);
    let mut share = diagnose::ShareTracker::default();
    let (mut xbuf, mut ybuf): (Vec<f32>, Vec<u32>) = (Vec::new(), Vec::new());
    let outputs = scenario.outputs;
    let resume_at = st.progress;
    for (pi, phase) in phases.iter().enumerate().skip(resume_at.phases_done) {
        // Resuming in the middle of this phase: the optimizer, the sample order and the position
        // come from the checkpoint; nothing of the phase's start is redone.
        let resuming = pi == resume_at.phases_done && resume_at.mid_phase();
        let t_task = Instant::now();
        let task_seconds_before = if resuming { st.task_seconds } else { 0.0 };
        let last_task = *phase.last().expect("non-empty phase");
        let name = if phase.len() == 1 { scenario.tasks[last_task].name.clone() } else { "all tasks".into() };
        // Exact shortcut: while Omega is all zero (before the first consolidation) the penalty
        // and its gradient 2c Omega (theta - theta*) are zero, so the step need not read Omega
        // and theta* (SI on the first task: 8 of its 44 bytes per parameter).
        let penalty_on = cfg.method.is_quadratic() && st.pen.big_omega.iter().any(|&o| o != 0.0);
        // --diagnose: the task loss on the task's training data where the path integral starts.
        let diag_loss_start = cfg.diagnose.then(|| {
            diagnose::mean_loss(&model, &st.theta, &scenario.tasks[last_task].train, masks[last_task].as_ref(), 1000)
        });
        let mut samples = if resuming {
            std::mem::take(&mut st.order)
        } else {
            if pi == 0 || cfg.reset_optimizer {
                st.opt.reset();
            }
            // PrevStep: no previous step at the start of a task.
            st.prev_delta.fill(0.0);
            phase_samples(scenario, phase)
        };
        let steps = samples.len().div_ceil(cfg.batch);
        let (start_epoch, start_step) = if resuming { (resume_at.epoch, resume_at.step) } else { (0, 0) };
        on_event(Event::TaskStart {
            task: pi,
            name: &name,
            steps: steps * cfg.epochs,
            done: start_epoch * steps + start_step,
        });
        // One mask for the phase, or a per-row mask when a batch mixes masked tasks (joint).
        let phase_mask = match (phase.len(), &masks[last_task]) {
            (1, Some(m)) => Some(m.tensor(&be)),
            _ => None,
        };
        let per_row_masks = phase.len() > 1 && masks.iter().any(Option::is_some);
        for epoch in start_epoch..cfg.epochs {
            let continuing = resuming && epoch == start_epoch;
            if !continuing {
                samples.shuffle(&mut st.shuffle_rng);
            }
            let skip = if continuing { start_step } else { 0 };
            for (step, chunk) in samples.chunks(cfg.batch).enumerate().skip(skip) {
                let t0 = Instant::now();
                xbuf.clear();
                ybuf.clear();
                for &(ti, p) in chunk {
                    scenario.tasks[ti as usize].train.fill(std::iter::once(p as usize), &mut xbuf, &mut ybuf);
                }
                let row_mask = per_row_masks.then(|| {
                    let mut m = vec![0f32; chunk.len() * outputs];
                    for (row, &(ti, _)) in chunk.iter().enumerate() {
                        for c in 0..outputs {
                            m[row * outputs + c] =
                                masks[ti as usize].as_ref().is_none_or(|tm| tm.allows(c)) as u8 as f32;
                        }
                    }
                    be.from_vec(chunk.len(), outputs, m)
                });
                let mask = row_mask.as_ref().or(phase_mask.as_ref());
                let x = be.from_vec(chunk.len(), model.inputs(), std::mem::take(&mut xbuf));
                let t1 = Instant::now();
                st.profile.data += (t1 - t0).as_secs_f64();

                tape.clear();
                let params = model.load(&mut tape, &st.theta, true);
                let xv = tape.constant(x);
                let logits = model.forward(&mut tape, &params, xv);
                let loss_v = engram_nn::masked_loss(&mut tape, logits, &ybuf, mask);
                let task_loss = be.scalar(tape.value(loss_v));
                let t2 = Instant::now();
                st.profile.forward += (t2 - t1).as_secs_f64();
                let grads = tape.backward(loss_v);
                model.gather_grads(&tape, &grads, &params, &mut grad);
                drop(grads);
                let mut t3 = Instant::now();
                st.profile.backward += (t3 - t2).as_secs_f64();
                if let Some(ep) = st.episodic.as_mut() {
                    // GEM (paper Alg. 1): store the batch in the current task's memory, then
                    // correct g against the finished tasks' memories.
                    let view = &scenario.tasks[last_task].train;
                    ep.memory.observe(view, chunk.iter().map(|&(_, p)| p as usize));
                    let rep = ep.step(&model, &st.theta, &mut grad, &mut st.memory_rng).map_err(|e| {
                        RunError::Invalid(format!(
                            "GEM's quadratic program failed on task {} ({name}), step {}: {e}",
                            last_task + 1,
                            step + 1
                        ))
                    })?;
                    st.profile.memory_gradients += rep.memory_seconds;
                    st.profile.projection += rep.projection_seconds;
                    t3 = Instant::now();
                }

                let scfg = st.opt.next_config(if penalty_on { cfg.c } else { 0.0 }, step_omega_mode);
                if prev_step {
                    theta_before.copy_from_slice(&st.theta);
                }
                let penalty = engram_si::fused_step_f32(
                    Slices {
                        theta: &mut st.theta,
                        g: &grad,
                        big_omega: &st.pen.big_omega,
                        theta_star: &st.pen.theta_star,
                        omega: &mut st.pen.omega,
                        m: &mut st.opt.m,
                        v: &mut st.opt.v,
                    },
                    &scfg,
                );
                if prev_step {
                    prev_step_accumulate(
                        &mut st.pen,
                        &st.theta,
                        &theta_before,
                        &grad,
                        &mut st.prev_delta,
                        cfg.si_grad == SiGrad::Total && penalty_on,
                        cfg.c,
                    );
                }
                st.profile.consolidation_step += t3.elapsed().as_secs_f64();
                let total = task_loss + penalty as f32;
                if cfg.diagnose {
                    share.record(task_loss as f64, penalty, steps * cfg.epochs);
                }
                if !total.is_finite() {
                    let cause = if !task_loss.is_finite() {
                        format!("the learning rate ({}) is too large for this model", cfg.optimizer.lr())
                    } else {
                        format!(
                            "the penalty strength (c = {}) is too large for the learning rate ({}): the \
                             penalty's curvature 2 c Omega times lr must stay small",
                            cfg.c,
                            cfg.optimizer.lr()
                        )
                    };
                    return Err(RunError::NonFinite {
                        task: last_task + 1,
                        name: name.clone(),
                        epoch: epoch + 1,
                        step: step + 1,
                        value: total,
                        task_loss,
                        penalty,
                        cause,
                    });
                }
                on_event(Event::Step { loss: total });
                st.progress.steps += 1;
                // Every N steps, unless this is the phase's last step (its end-of-task
                // checkpoint follows).
                let phase_end = epoch + 1 == cfg.epochs && step + 1 == steps;
                if let Some(ck) = ckpt.as_mut() {
                    if ck.every.is_some_and(|n| n > 0 && st.progress.steps % n == 0) && !phase_end {
                        st.progress = Progress { phases_done: pi, epoch, step: step + 1, steps: st.progress.steps };
                        st.order.clone_from(&samples);
                        st.task_seconds = task_seconds_before + t_task.elapsed().as_secs_f64();
                        st.seconds = seconds_before + wall.elapsed().as_secs_f64();
                        (ck.save)(&st).map_err(|e| {
                            RunError::Invalid(format!("checkpoint after step {} failed: {e}", st.progress.steps))
                        })?;
                        st.order = Vec::new();
                    }
                }
            }
        }
        // The last step's update is not followed by a loss evaluation: check the parameters.
        if let Some(i) = st.theta.iter().position(|v| !v.is_finite()) {
            return Err(RunError::NonFiniteParams {
                task: last_task + 1,
                name: name.clone(),
                index: i,
                value: st.theta[i],
                lr: cfg.optimizer.lr(),
                c: cfg.c,
            });
        }
        // End of task: importance and consolidation.
        let t4 = Instant::now();
        let task = &scenario.tasks[last_task];
        let theta = &st.theta;
        let pen = &mut st.pen;
        // --diagnose: what the path integral measured, before consolidation folds it in.
        let diag_pre = diag_loss_start.map(|loss_start| {
            let loss_end = diagnose::mean_loss(&model, theta, &task.train, masks[last_task].as_ref(), 1000);
            let omega_sum: f64 = pen.omega.iter().map(|&w| w as f64).sum();
            let term = diagnose::Distribution::of(&diagnose::new_term(theta, &pen.theta_star, &pen.omega, cfg.xi));
            let drift = diagnose::weighted_drift(theta, &pen.theta_star, &pen.big_omega);
            (loss_start, loss_end, omega_sum, term, drift)
        });
        match cfg.method {
            Method::Si if cfg.si_variant == SiVariant::FromInit => {
                // Delta measured from the initialisation; the next task's anchor is still theta.
                let mut start = st.theta_init.clone();
                engram_si::end_of_task(theta, &mut pen.omega, &mut pen.big_omega, &mut start, cfg.xi, relu);
                pen.theta_star.copy_from_slice(theta);
            }
            Method::Si => {
                engram_si::end_of_task(theta, &mut pen.omega, &mut pen.big_omega, &mut pen.theta_star, cfg.xi, relu)
            }
            Method::Ewc => {
                let f = importance::fisher(
                    &be,
                    &model,
                    theta,
                    &task.train,
                    masks[last_task].as_ref(),
                    cfg.fisher,
                    cfg.importance_samples,
                    256,
                    &mut st.sample_rng,
                );
                pen.consolidate(cfg.method, theta, Some(&f), cfg.ewc_mode, cfg.gamma);
            }
            Method::Mas => {
                let f = importance::mas(
                    &be,
                    &model,
                    theta,
                    &task.train,
                    masks[last_task].as_ref(),
                    cfg.importance_samples,
                    256,
                    &mut st.sample_rng,
                );
                pen.consolidate(cfg.method, theta, Some(&f), cfg.ewc_mode, cfg.gamma);
            }
            m => pen.consolidate(m, theta, None, cfg.ewc_mode, cfg.gamma),
        }
        if let Some(ep) = st.episodic.as_mut() {
            ep.memory.finish_task(&task.train, task.mask.as_deref(), scenario.outputs);
        }
        if let (Some((loss_start, loss_end, omega_sum, term, weighted_drift)), Some(d)) =
            (diag_pre, diagnostics.as_mut())
        {
            let (penalty_share_mean, penalty_share_last, penalty_share_curve) = share.take();
            d.push(diagnose::TaskDiagnostics {
                name: name.clone(),
                loss_start,
                loss_end,
                omega_sum,
                term,
                big_omega: diagnose::Distribution::of(&st.pen.big_omega),
                penalty_share_mean,
                penalty_share_last,
                weighted_drift,
                penalty_share_curve,
            });
        }
        st.profile.importance += t4.elapsed().as_secs_f64();
        let t5 = Instant::now();
        let row = eval.row(&be, &model, &st.theta, scenario, &masks, false);
        if let Some(rt) = st.r_train.as_mut() {
            rt.push(eval.row(&be, &model, &st.theta, scenario, &masks, true));
        }
        st.profile.evaluation += t5.elapsed().as_secs_f64();
        on_event(Event::TaskEnd { task: pi, row: &row });
        st.r.push(row);
        st.per_task_seconds.push(task_seconds_before + t_task.elapsed().as_secs_f64());
        st.progress = Progress { phases_done: pi + 1, epoch: 0, step: 0, steps: st.progress.steps };
        st.task_seconds = 0.0;
        if let Some(ck) = ckpt.as_mut() {
            st.seconds = seconds_before + wall.elapsed().as_secs_f64();
            (ck.save)(&st).map_err(|e| {
                RunError::Invalid(format!("checkpoint at the end of task {} ({name}) failed: {e}", pi + 1))
            })?;
        }
    }
    let summarize = |r: &Vec<Vec<f64>>| {
        if r.len() == scenario.tasks.len() {
            metrics::compute(r, &st.b)
        } else {
            let last = r.last().expect("one row");
            Metrics {
                acc: last.iter().sum::<f64>() / last.len() as f64,
                bwt: None,
                bwt_gem: None,
                fwt: None,
                forgetting: None,
                learning_accuracy: Vec::new(),
                acc_curve: vec![last.iter().sum::<f64>() / last.len() as f64],
            }
        }
    };
    let mut prof = st.profile.clone();
    if let Some(ep) = &st.episodic {
        prof.projected_steps = ep.projections as u64;
        prof.constrained_steps = ep.constrained_steps as u64;
    }
    let metrics = summarize(&st.r);
    let metrics_train = st.r_train.as_ref().map(summarize);
    Ok(RunResult {
        task_names: scenario.tasks.iter().map(|t| t.name.clone()).collect(),
        metrics,
        metrics_train,
        wall_seconds: seconds_before + wall.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        profile: prof,
        strategy_state_bytes: st.pen.bytes()
            + st.episodic.as_ref().map_or(0, Episodic::bytes)
            + 4 * (st.prev_delta.len() + theta_before.len() + st.theta_init.len()),
        num_params: st.theta.len(),
        diagnostics,
        r: st.r,
        b: st.b,
        r_train: st.r_train,
        per_task_seconds: st.per_task_seconds,
    })
}

/// SI's off-by-one variant ([`SiVariant::PrevStep`]), after a step taken without omega
/// accumulation: `omega -= g_used(k) * delta(k-1)`, then `delta(k-1) <- theta - theta_before`.
/// `g_used` is the task gradient `g`, or with `total` the total gradient
/// `g + 2c Omega (theta_before - theta*)` (as the fused step's [`SiGrad::Total`]).
#[allow(clippy::needless_range_loop)]
pub fn prev_step_accumulate(
    pen: &mut Penalty,
    theta: &[f32],
    theta_before: &[f32],
    g: &[f32],
    prev_delta: &mut [f32],
    total: bool,
    c: f32,
) {
    let two_c = 2.0 * c;
    for i in 0..theta.len() {
        let gu = if total { g[i] + (two_c * pen.big_omega[i]) * (theta_before[i] - pen.theta_star[i]) } else { g[i] };
        pen.omega[i] -= gu * prev_delta[i];
        prev_delta[i] = theta[i] - theta_before[i];
    }
}

/// Rejects configurations that cannot run, with the flag named.
pub fn validate(cfg: &RunConfig) -> Result<(), RunError> {
    let bad = |m: String| Err(RunError::Invalid(m));
    if cfg.diagnose && cfg.method != Method::Si {
        return bad(format!("--diagnose reports SI's path integral: it needs --method si, not {:?}", cfg.method));
    }
    if cfg.si_variant != SiVariant::Official && cfg.method != Method::Si {
        return bad(format!("--si-variant changes SI's path integral: it needs --method si, not {:?}", cfg.method));
    }
    if cfg.epochs == 0 {
        return bad("--epochs must be at least 1".into());
    }
    if cfg.batch == 0 {
        return bad("--batch must be at least 1".into());
    }
    if cfg.hidden == 0 {
        return bad("--hidden must be at least 1".into());
    }
    if !(cfg.optimizer.lr().is_finite() && cfg.optimizer.lr() > 0.0) {
        return bad(format!("--lr must be a positive number, got {}", cfg.optimizer.lr()));
    }
    if !(cfg.strength.is_finite() && cfg.strength >= 0.0) {
        return bad(format!("the penalty strength (--c / --lambda) must be >= 0, got {}", cfg.strength));
    }
    if !(cfg.xi.is_finite() && cfg.xi > 0.0) {
        return bad(format!("--xi must be > 0, got {}", cfg.xi));
    }
    if !(cfg.gamma.is_finite() && (0.0..=1.0).contains(&cfg.gamma)) {
        return bad(format!("--gamma must lie in [0, 1], got {}", cfg.gamma));
    }
    if cfg.importance_samples == 0 {
        return bad("--importance-samples must be at least 1".into());
    }
    if cfg.method.is_episodic() {
        if cfg.memories == 0 {
            return bad("--memories must be at least 1 for gem and agem".into());
        }
        if cfg.memories > 1_000_000 {
            return bad(format!("--memories {} is more than 1,000,000 samples per task", cfg.memories));
        }
        if !(cfg.memory_strength.is_finite() && cfg.memory_strength >= 0.0) {
            return bad(format!("--memory-strength must be a number >= 0, got {}", cfg.memory_strength));
        }
    }
    Ok(())
}

/// A rough forecast of the wall time of `run(scenario, cfg)`, from timing `steps` training steps
/// (after one warm-up) and assuming an evaluated sample costs a third of a trained one.
pub fn estimate_seconds(scenario: &Scenario, cfg: &RunConfig, steps: usize) -> f64 {
    let Some(task) = scenario.tasks.first() else { return 0.0 };
    let be = Cpu::<f32>::new();
    let model = Mlp::new(&layer_sizes(scenario, cfg));
    let mut theta = model.init(&mut ChaCha8Rng::seed_from_u64(0), Init::default());
    let mut grad = vec![0f32; theta.len()];
    let mut opt = Optimizer::new(cfg.optimizer, theta.len());
    let mut tape = Tape::new(be);
    let batch = cfg.batch.min(task.train.len()).max(1);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut one = |theta: &mut Vec<f32>| {
        x.clear();
        y.clear();
        task.train.fill(0..batch, &mut x, &mut y);
        let xt = be.from_vec(batch, model.inputs(), x.clone());
        model.loss_grad(&mut tape, theta, xt, &y, None, &mut grad);
        opt.step(theta, &grad);
    };
    one(&mut theta);
    let t = Instant::now();
    for _ in 0..steps.max(1) {
        one(&mut theta);
    }
    let per_step = t.elapsed().as_secs_f64() / steps.max(1) as f64;
    let per_sample = per_step / batch as f64;
    let train_samples: usize = scenario.tasks.iter().map(|t| t.train.len()).sum();
    let test_samples: usize = scenario.tasks.iter().map(|t| t.test.len()).sum();
    let rows = if cfg.method == Method::Joint { 2 } else { scenario.tasks.len() + 1 };
    let mut eval_samples = rows * test_samples;
    if cfg.eval_train {
        eval_samples += (rows - 1) * train_samples;
    }
    let train_steps: usize =
        scenario.tasks.iter().map(|t| t.train.len().div_ceil(cfg.batch)).sum::<usize>() * cfg.epochs;
    // GEM / A-GEM: every step also passes over the finished tasks' memories (GEM: all of them;
    // A-GEM: up to 256 samples), at roughly the cost of a trained sample.
    let memory_samples: usize = if cfg.method.is_episodic() {
        scenario
            .tasks
            .iter()
            .enumerate()
            .map(|(t, task)| {
                let held = t * cfg.memories.min(task.train.len());
                let per_step = if cfg.method == Method::Agem { held.min(256) } else { held };
                per_step * task.train.len().div_ceil(cfg.batch) * cfg.epochs
            })
            .sum()
    } else {
        0
    };
    train_steps as f64 * per_step + eval_samples as f64 * per_sample / 3.0 + memory_samples as f64 * per_sample
}
