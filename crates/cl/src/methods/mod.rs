//! The methods, each behind one trait ([`Strategy`]), one file per family:
//!
//! * [`plain`]: fine-tuning (the lower bound) and joint training (the upper bound);
//! * [`quadratic`]: SI, EWC, online EWC, L2 and MAS, which share one state (`Omega`, `theta*`,
//!   and SI's `omega`: [`engram_si::PenaltyState`]), one penalty
//!   `c * sum_i Omega_i (theta_i - theta*_i)^2` and one fused step, and differ only in how
//!   `Omega` is computed at the end of a task ([`importance`] for EWC's Fisher and MAS);
//! * [`gem`]: Gradient Episodic Memory, with [`qp`], its dual's solver;
//! * [`agem`]: Averaged GEM; both keep an [`episodic`] memory on the backend.
//!
//! A new method is a new file here: a type implementing [`Strategy`], and a line in [`build`].
//! The run loop ([`crate::run`]) knows no method by name.

pub mod agem;
pub mod episodic;
pub mod gem;
pub mod importance;
pub mod plain;
pub mod qp;
pub mod quadratic;

use crate::config::RunConfig;
use crate::state::{Profile, Run, RunBackend, RunError, RunState};
use engram_ckpt::Checkpoint;
use engram_tape::ViewMut;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A continual-learning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Plain sequential training (the lower bound, "None" in the literature).
    Finetune,
    /// All tasks' data at once (the upper bound); its accuracy matrix has a single row.
    Joint,
    /// Quadratic anchor with `Omega = 1`: penalty `lambda * sum (theta - theta*)^2`.
    L2,
    /// Elastic weight consolidation: `(lambda / 2) * sum F (theta - theta*)^2` with the diagonal
    /// Fisher `F` (Kirkpatrick et al. 2017); one penalty per task, or online with decay gamma.
    Ewc,
    /// Memory-aware synapses: `lambda * sum Omega (theta - theta*)^2`, `Omega` the mean absolute
    /// gradient of the squared output norm (Aljundi et al. 2018), accumulated over tasks.
    Mas,
    /// Synaptic intelligence: `c * sum Omega (theta - theta*)^2`, `Omega` the normalised path
    /// integral of the loss drop (Zenke et al. 2017).
    Si,
    /// Gradient episodic memory (Lopez-Paz & Ranzato 2017): the last `--memories` samples of each
    /// finished task; each step's gradient is projected (dual QP, paper Eq. 11-13) so that no
    /// memory loss increases, with margin `--memory-strength`.
    Gem,
    /// Averaged GEM (Chaudhry et al. 2019): one constraint from the gradient on up to 256
    /// samples drawn from the whole memory (a per-class ring buffer of each finished task).
    Agem,
}

impl Method {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Finetune => "finetune",
            Self::Joint => "joint",
            Self::L2 => "l2",
            Self::Ewc => "ewc",
            Self::Mas => "mas",
            Self::Si => "si",
            Self::Gem => "gem",
            Self::Agem => "agem",
        }
    }

    /// Whether the method keeps a quadratic penalty (and so uses `Omega` and `theta*`).
    pub fn is_quadratic(self) -> bool {
        matches!(self, Self::L2 | Self::Ewc | Self::Mas | Self::Si)
    }

    /// Whether the method keeps an episodic memory (GEM, A-GEM).
    pub fn is_episodic(self) -> bool {
        matches!(self, Self::Gem | Self::Agem)
    }
}

/// Original (one penalty per task) or online EWC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum EwcMode {
    /// One penalty per finished task, `sum_t F_t (theta - theta*_t)^2`. Its gradient equals that
    /// of ONE quadratic with `Omega = sum_t F_t` and anchor `sum_t F_t theta*_t / Omega`, so the
    /// state stays two vectors whatever the number of tasks (the reported penalty omits a
    /// constant that has no gradient).
    Separate,
    /// Online EWC (Schwarz et al. 2018): `F <- gamma F + F_new`, one anchor at the latest task.
    Online,
}

/// Where SI's relu is applied at the end of a task (see `engram_si::ReluPlacement`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SiRelu {
    /// As the official code: relu of the accumulated Omega after adding the new term.
    Official,
    /// No relu: negative importances are kept.
    None,
    /// Relu of each task's new term before it is added.
    PerTask,
}

/// How SI's path integral and its normalisation are computed: the official arithmetic, or one
/// of the mistakes seen in reimplementations (PROTOCOLS.md, "Synaptic Intelligence, exactly"),
/// kept to measure what each costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SiVariant {
    /// As the official code: `omega -= g(k) * delta(k)`, the gradient of step k times the change
    /// that step k made; `Delta` measured from the start of the task.
    #[default]
    Official,
    /// Off by one step: `omega -= g(k) * delta(k-1)`, the gradient times the PREVIOUS step's
    /// change (zero at the first step of each task).
    PrevStep,
    /// The anchor mix-up: `Delta` in `Omega += omega / (Delta^2 + xi)` measured from the
    /// initialisation instead of the task's start (the penalty's anchor is still the task's end).
    FromInit,
}

/// Which gradient feeds SI's path integral.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SiGrad {
    /// The unregularised task-loss gradient (the official code).
    Task,
    /// The total-loss gradient, penalty included (some libraries).
    Total,
}

/// What `--init-from` carries over from a trained model into a new run (host copies, read
/// from a checkpoint).
#[derive(Clone, Debug)]
pub struct Carried {
    /// The parameters.
    pub theta: Vec<f32>,
    /// `Omega` and `theta*` (quadratic methods; `None`: start with no penalty).
    pub penalty: Option<(Vec<f32>, Vec<f32>)>,
    /// GEM / A-GEM: the finished tasks' memories.
    pub memory: Option<episodic::MemoryRows>,
}

/// A method: what it does around the run loop's steps. Every hook has the run's fixed inputs
/// (`run`) and its changing state (`st`, parameters and gradient on the backend); a method keeps
/// its own state (importance, memories) in itself.
///
/// The loop, per phase (a task; all tasks at once for joint training):
/// `begin_phase`, then per batch: the batch gradient into `st.grad`, [`Strategy::adjust_gradient`],
/// [`Strategy::update`]; then [`Strategy::end_phase`] and the evaluation.
pub trait Strategy<B: RunBackend> {
    /// Whether the method trains on every task at once (one phase; joint training).
    fn joint(&self) -> bool {
        false
    }

    /// A phase starts: fresh (`resuming == false`), or resumed from a checkpoint taken in its
    /// middle.
    fn begin_phase(
        &mut self,
        _run: &Run<'_, B>,
        _st: &mut RunState<B>,
        _task: usize,
        _resuming: bool,
    ) -> Result<(), RunError> {
        Ok(())
    }

    /// The batch's gradient is in `st.grad`; `batch` lists its `(task, position)` samples.
    /// GEM and A-GEM project it here.
    fn adjust_gradient(
        &mut self,
        _run: &Run<'_, B>,
        _st: &mut RunState<B>,
        _task: usize,
        _batch: &[(u32, u32)],
    ) -> Result<(), RunError> {
        Ok(())
    }

    /// The parameter update: the optimizer on `st.grad` plus the method's penalty, in the fused
    /// step. `penalty` (`1 x 1`, on the backend) receives the penalty's value before the step.
    fn update(&mut self, run: &Run<'_, B>, st: &mut RunState<B>, penalty: ViewMut<'_, B, f64>) -> Result<(), RunError> {
        st.optimizer.step(run.be, &mut st.theta, &st.grad, None, 0.0, None, penalty)?;
        Ok(())
    }

    /// The losses of the steps just taken, in order (task loss, penalty), with the number of
    /// steps of the phase (SI's diagnostics).
    fn observe_losses(&mut self, _losses: &[(f32, f64)], _phase_steps: usize) {}

    /// A phase's training is done: importance, consolidation, memories.
    fn end_phase(&mut self, _run: &Run<'_, B>, _st: &mut RunState<B>, _task: usize) -> Result<(), RunError> {
        Ok(())
    }

    /// Bytes of state the method keeps beside the model and the optimizer.
    fn state_bytes(&self, run: &Run<'_, B>) -> usize;

    /// Adds the method's counters to the run's profile (GEM's projected steps).
    fn report(&self, _profile: &mut Profile) {}

    /// SI's per-task diagnostics (`--diagnose`), at the end of the run.
    fn take_diagnostics(&mut self) -> Option<Vec<crate::diagnose::TaskDiagnostics>> {
        None
    }

    /// Its state as checkpoint tensors (names in [`crate::checkpoint`]), and the record the
    /// manifest keeps under `episodic` (GEM, A-GEM).
    fn save(
        &self,
        run: &Run<'_, B>,
        tensors: &mut BTreeMap<String, engram_ckpt::Tensor>,
    ) -> Result<Option<Value>, RunError>;

    /// Restores its state from a checkpoint (every piece checked against the run).
    fn load(
        &mut self,
        run: &Run<'_, B>,
        ck: &Checkpoint,
        episodic: Option<&Value>,
        phases_done: usize,
    ) -> Result<(), String>;

    /// Takes what a trained model carries into a new run (`--init-from`).
    fn carry(&mut self, run: &Run<'_, B>, carried: &Carried) -> Result<(), String>;
}

/// A run's state together with its method (what a fresh start or a checkpoint gives).
pub type StateAndMethod<B> = (RunState<B>, Box<dyn Strategy<B>>);

/// The strategy of `cfg.method`, its state set up at the parameters `theta` (the
/// initialisation, or a carried model).
pub fn build<B: RunBackend>(run: &Run<'_, B>, theta: &B::Buffer<f32>) -> Result<Box<dyn Strategy<B>>, RunError> {
    let cfg: &RunConfig = run.cfg;
    Ok(match cfg.method {
        Method::Finetune => Box::new(plain::Finetune),
        Method::Joint => Box::new(plain::Joint),
        Method::L2 | Method::Ewc | Method::Mas | Method::Si => Box::new(quadratic::Quadratic::new(run, theta)?),
        Method::Gem => Box::new(gem::Gem::new(run)),
        Method::Agem => Box::new(agem::Agem::new(run)),
    })
}
