//! One training phase: its epochs and steps, the losses read back every few steps, and the
//! checkpoints taken in its middle.

use super::{Checkpointing, Event};
use crate::checkpoint;
use crate::data::EpochOrder;
use crate::methods::Strategy;
use crate::state::{Progress, Run, RunBackend, RunError, RunState};
use engram_nn::{Batch, StepBuffers};
use engram_tape::{Tensor, ViewMut};
use rand::seq::SliceRandom;
use std::time::Instant;

/// Steps between two reads of the losses by the host (the check for divergence, the progress
/// events). Between them the losses stay on the backend.
pub const LOSS_CHECK_EVERY: usize = 64;

/// The host also reads the losses when this much time has passed since it last did (long steps:
/// the progress stays live; a read every half second costs nothing).
const LOSS_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Where a step sits in its phase.
#[derive(Clone, Copy, Debug)]
struct StepAt {
    epoch: usize,
    step: usize,
}

/// The task loss and penalty of the last steps, on the backend until the host reads them.
struct LossLog<B: RunBackend> {
    task_losses: Tensor<B>,
    penalties: Tensor<B, f64>,
    pending: Vec<StepAt>,
    last_read: Instant,
}

impl<B: RunBackend> LossLog<B> {
    fn new(be: &B) -> Result<Self, RunError> {
        Ok(Self {
            task_losses: Tensor::zeros(be, 1, LOSS_CHECK_EVERY)?,
            penalties: Tensor::zeros(be, 1, LOSS_CHECK_EVERY)?,
            pending: Vec::with_capacity(LOSS_CHECK_EVERY),
            last_read: Instant::now(),
        })
    }

    /// The slots of the next step: its task loss and its penalty.
    fn slots(&mut self) -> (ViewMut<'_, B>, ViewMut<'_, B, f64>) {
        let i = self.pending.len();
        (self.task_losses.view_mut().range(i, i + 1), self.penalties.view_mut().range(i, i + 1))
    }

    /// Whether the host should read the pending losses now.
    fn due(&self) -> bool {
        self.pending.len() == LOSS_CHECK_EVERY || self.last_read.elapsed() >= LOSS_CHECK_INTERVAL
    }
}

/// Wall-clock bookkeeping of a phase.
pub(super) struct Clock {
    pub wall: Instant,
    pub seconds_before: f64,
    pub task: Instant,
    pub task_seconds_before: f64,
}

/// A phase to train.
pub(super) struct Phase<'a> {
    /// Its index in the run.
    pub index: usize,
    /// Its tasks (one, or all of them for joint training).
    pub tasks: &'a [usize],
    /// Its last task (the one named in messages).
    pub task: usize,
    /// Its name.
    pub name: &'a str,
    /// Resuming from a checkpoint taken in its middle.
    pub resuming: bool,
    /// Timing.
    pub clock: Clock,
}

impl Phase<'_> {
    /// Trains the phase: every epoch and step, the losses checked, the parameters checked at the
    /// end, checkpoints when asked.
    pub fn run<B: RunBackend>(
        &mut self,
        run: &Run<'_, B>,
        st: &mut RunState<B>,
        strategy: &mut dyn Strategy<B>,
        mut ckpt: Option<&mut Checkpointing<'_>>,
        on_event: &mut impl FnMut(Event),
    ) -> Result<(), RunError> {
        let (be, cfg, data) = (run.be, run.cfg, run.data);
        let resume_at = st.progress;
        strategy.begin_phase(run, st, self.task, self.resuming)?;
        // Resuming in the middle of this phase: the optimizer, the sample order and the position
        // come from the checkpoint; nothing of the phase's start is redone.
        let mut samples = if self.resuming {
            std::mem::take(&mut st.order)
        } else {
            if self.index == 0 || cfg.reset_optimizer {
                st.optimizer.reset(be)?;
            }
            crate::scenario::phase_samples(run.scenario, self.tasks)
        };
        let n = samples.len();
        let steps = n.div_ceil(cfg.batch);
        let (start_epoch, start_step) = if self.resuming { (resume_at.epoch, resume_at.step) } else { (0, 0) };
        on_event(Event::TaskStart {
            task: self.index,
            name: self.name,
            steps: steps * cfg.epochs,
            done: start_epoch * steps + start_step,
        });
        let mut order = EpochOrder::new(be, data, self.tasks, n)?;
        let rows = cfg.batch.min(n).max(1);
        let mut x = Tensor::<B>::zeros(be, rows, data.dim)?;
        let mut step_buffers = StepBuffers::new(be, run.model, rows)?;
        let mut row_masks =
            if order.tasks.is_some() { Some(Tensor::<B>::zeros(be, rows, run.scenario.outputs)?) } else { None };
        let phase_mask = if self.tasks.len() == 1 { data.masks[self.task].as_ref() } else { None };
        let mut losses = LossLog::new(be)?;
        for epoch in start_epoch..cfg.epochs {
            let continuing = self.resuming && epoch == start_epoch;
            if !continuing {
                samples.shuffle(&mut st.streams.shuffle);
            }
            let t = Instant::now();
            order.upload(be, data, &samples)?;
            st.profile.data += t.elapsed().as_secs_f64();
            for step in if continuing { start_step } else { 0 }..steps {
                let (start, end) = (step * cfg.batch, ((step + 1) * cfg.batch).min(n));
                let t0 = Instant::now();
                let masks = row_masks.as_mut().map(|m| m.view_mut().rows(0, end - start));
                order.gather(be, data, (start, end), x.view_mut().rows(0, end - start), masks)?;
                st.profile.data += t0.elapsed().as_secs_f64();
                let mask = match &row_masks {
                    Some(m) => Some(m.view().rows(0, end - start)),
                    None => phase_mask.map(Tensor::view),
                };
                let batch = Batch { x: x.view().rows(0, end - start), labels: order.labels(start, end), mask };
                let (loss, penalty) = losses.slots();
                let grad = ViewMut::row_of(be, &mut st.grad);
                let times = step_buffers.loss_and_grad(be, run.model, &st.theta, batch, grad, loss)?;
                st.profile.forward += times.forward.as_secs_f64();
                st.profile.backward += times.backward.as_secs_f64();
                strategy.adjust_gradient(run, st, self.task, &samples[start..end])?;
                let t3 = Instant::now();
                strategy.update(run, st, penalty)?;
                st.profile.consolidation_step += t3.elapsed().as_secs_f64();
                losses.pending.push(StepAt { epoch, step });
                st.progress.steps += 1;
                if losses.due() {
                    self.check_losses(run, &mut losses, strategy, steps * cfg.epochs, on_event)?;
                }
                // Every N steps, unless this is the phase's last step (its end-of-task
                // checkpoint follows).
                let phase_end = epoch + 1 == cfg.epochs && step + 1 == steps;
                if let Some(ck) = ckpt.as_deref_mut() {
                    if ck.every.is_some_and(|every| every > 0 && st.progress.steps % every == 0) && !phase_end {
                        self.check_losses(run, &mut losses, strategy, steps * cfg.epochs, on_event)?;
                        st.progress =
                            Progress { phases_done: self.index, epoch, step: step + 1, steps: st.progress.steps };
                        st.order.clone_from(&samples);
                        st.task_seconds = self.clock.task_seconds_before + self.clock.task.elapsed().as_secs_f64();
                        st.seconds = self.clock.seconds_before + self.clock.wall.elapsed().as_secs_f64();
                        let saved = checkpoint::encode(run, st, strategy, ck.spec, ck.cli.clone())?;
                        (ck.save)(&saved, st.progress.steps).map_err(|e| {
                            RunError::Invalid(format!("checkpoint after step {} failed: {e}", st.progress.steps))
                        })?;
                        st.order = Vec::new();
                    }
                }
            }
        }
        self.check_losses(run, &mut losses, strategy, steps * cfg.epochs, on_event)?;
        self.check_parameters(run, st)
    }

    /// Reads the pending steps' losses: the first that is not finite stops the run with where
    /// and why; the others become progress events and the method's observations.
    fn check_losses<B: RunBackend>(
        &self,
        run: &Run<'_, B>,
        log: &mut LossLog<B>,
        strategy: &mut dyn Strategy<B>,
        phase_steps: usize,
        on_event: &mut impl FnMut(Event),
    ) -> Result<(), RunError> {
        let k = log.pending.len();
        if k == 0 {
            return Ok(());
        }
        let task_losses = run.be.download(log.task_losses.view().range(0, k))?;
        let penalties = run.be.download(log.penalties.view().range(0, k))?;
        let steps: Vec<(f32, f64)> = task_losses.into_iter().zip(penalties).collect();
        for (at, &(task_loss, penalty)) in log.pending.iter().zip(&steps) {
            let total = task_loss + penalty as f32;
            if !total.is_finite() {
                let lr = run.cfg.optimizer.lr();
                let cause = if !task_loss.is_finite() {
                    format!("the learning rate ({lr}) is too large for this model")
                } else {
                    format!(
                        "the penalty strength (c = {}) is too large for the learning rate ({lr}): the \
                         penalty's curvature 2 c Omega times lr must stay small",
                        run.cfg.c
                    )
                };
                return Err(RunError::NonFinite {
                    task: self.task + 1,
                    name: self.name.to_string(),
                    epoch: at.epoch + 1,
                    step: at.step + 1,
                    value: total,
                    task_loss,
                    penalty,
                    cause,
                });
            }
        }
        strategy.observe_losses(&steps, phase_steps);
        for &(task_loss, penalty) in &steps {
            on_event(Event::Step { loss: task_loss + penalty as f32 });
        }
        log.pending.clear();
        log.last_read = Instant::now();
        Ok(())
    }

    /// The last step's update is not followed by a loss evaluation: check the parameters.
    fn check_parameters<B: RunBackend>(&self, run: &Run<'_, B>, st: &RunState<B>) -> Result<(), RunError> {
        let be = run.be;
        let mut at = Tensor::<B, u64>::zeros(be, 1, 1)?;
        be.first_non_finite(engram_tape::View::row_of(be, &st.theta), at.view_mut())?;
        let index = at.to_host(be)?[0];
        if index == u64::MAX {
            return Ok(());
        }
        let i = index as usize;
        let value = be.download(engram_tape::View::new(&st.theta, i, 1, 1))?[0];
        Err(RunError::NonFiniteParams {
            task: self.task + 1,
            name: self.name.to_string(),
            index: i,
            value,
            lr: run.cfg.optimizer.lr(),
            c: run.cfg.c,
        })
    }
}
