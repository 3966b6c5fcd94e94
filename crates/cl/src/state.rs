//! What every part of a run shares: the backend contract it needs, the run's fixed inputs, the
//! state it changes as it goes (on the backend), the time split, and its errors.

use crate::config::{InvalidConfig, RunConfig};
use crate::data::TaskData;
use crate::scenario::Scenario;
use engram_nn::Mlp;
use engram_si::{ConsolidationKernels, OptimizerState};
use engram_tape::BackendError;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A backend a continual-learning run can use: the tape's kernels in `f32` and the fused
/// consolidation step's. [`engram_tape::cpu::Cpu<f32>`] is one; so is
/// [`engram_tape::counting::Counting`] of one.
pub trait RunBackend: ConsolidationKernels {}
impl<B: ConsolidationKernels> RunBackend for B {}

/// The fixed inputs of a run.
pub struct Run<'a, B: RunBackend> {
    /// The backend.
    pub be: &'a B,
    /// The tasks (host side: names, masks, views).
    pub scenario: &'a Scenario,
    /// The hyperparameters.
    pub cfg: &'a RunConfig,
    /// The network.
    pub model: &'a Mlp,
    /// The tasks' data, on the backend.
    pub data: &'a TaskData<B>,
}

/// The random streams of a run: shuffling, importance samples (EWC, MAS), A-GEM's reference
/// samples.
#[derive(Clone, Debug)]
pub struct Streams {
    /// Each epoch's sample order.
    pub shuffle: ChaCha8Rng,
    /// Fisher / MAS samples.
    pub sample: ChaCha8Rng,
    /// A-GEM's reference samples.
    pub memory: ChaCha8Rng,
}

impl Streams {
    /// The streams of a run with seed `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self {
            shuffle: ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x9e37_79b9_7f4a_7c15)),
            sample: ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x2545_f491_4f6c_dd1d)),
            memory: ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x6a09_e667_f3bc_c908)),
        }
    }
}

/// Seconds spent in each part of the run (`--profile`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Forward passes and the loss, training steps only.
    pub forward: f64,
    /// Backward passes (gradients written in place).
    pub backward: f64,
    /// The fused consolidation / optimizer step.
    pub consolidation_step: f64,
    /// Importance estimation and consolidation at the end of each task.
    pub importance: f64,
    /// Evaluation (R, b and the training-set accuracies).
    pub evaluation: f64,
    /// Drawing batches (gathering on the backend, uploading each epoch's order).
    pub data: f64,
    /// GEM / A-GEM: the memory gradients (a forward and backward per memory batch).
    pub memory_gradients: f64,
    /// GEM / A-GEM: the constraint check, the QP and the projection of the gradient.
    pub projection: f64,
    /// GEM / A-GEM: steps whose gradient was projected (a count, not seconds).
    pub projected_steps: u64,
    /// GEM / A-GEM: steps with at least one finished task in memory (a count, not seconds).
    pub constrained_steps: u64,
}

/// How far a run has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// Everything a run changes as it goes, apart from the method's own state (which its
/// [`crate::methods::Strategy`] holds): what a checkpoint holds with it, and what a resumed run
/// starts from. The parameters, gradient and optimizer live on the backend for the whole run.
pub struct RunState<B: RunBackend> {
    /// The parameters.
    pub theta: B::Buffer<f32>,
    /// The gradient of the last batch (the method may change it before the step).
    pub grad: B::Buffer<f32>,
    /// The optimizer's moments and step count.
    pub optimizer: OptimizerState<B>,
    /// The random streams.
    pub streams: Streams,
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
    /// The backend failed (out of memory, a kernel, a transfer).
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// A scenario or configuration that cannot run.
    #[error("{0}")]
    Invalid(String),
}

impl From<InvalidConfig> for RunError {
    fn from(e: InvalidConfig) -> Self {
        RunError::Invalid(e.0)
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
