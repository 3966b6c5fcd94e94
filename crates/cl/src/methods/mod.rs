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
pub use crate::config::{EwcMode, Method, SiGrad, SiRelu, SiVariant};
use crate::state::{Profile, Run, RunBackend, RunError, RunState};
use engram_ckpt::Checkpoint;
use engram_tape::ViewMut;
use serde_json::Value;
use std::collections::BTreeMap;

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
