//! The quadratic-penalty methods: SI, EWC, online EWC, L2 and MAS.
//!
//! They share one state ([`PenaltyState`]: `Omega`, `theta*`, and SI's running `omega`), one
//! penalty `c * sum_i Omega_i (theta_i - theta*_i)^2` and one fused step, and differ only in how
//! `Omega` is computed at the end of a task:
//!
//! * SI (Zenke et al. 2017): the path integral `omega`, accumulated by the fused step at every
//!   step (eq. (3)), normalised at the end of the task (eq. (5),
//!   [`PenaltyState::end_task_si`]); `--si-variant` reproduces two mistakes seen in
//!   reimplementations (off by one step, `Delta` from the initialisation);
//! * EWC (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018): the diagonal Fisher
//!   ([`importance::fisher`]);
//! * MAS (Aljundi et al. 2018): the sensitivity of the squared output norm ([`importance::mas`]);
//! * L2: `Omega = 1`.

use super::importance::{self, IMPORTANCE_CHUNK as CHUNK};
use super::{Carried, EwcMode, Method, SiGrad, SiRelu, SiVariant, Strategy};
use crate::data::Split;
use crate::diagnose::{self, ShareTracker, TaskDiagnostics};
use crate::saved;
use crate::state::{Run, RunBackend, RunError, RunState};
use engram_ckpt::Checkpoint;
use engram_si::{Consolidation, OmegaGrad, PenaltyState, ReluPlacement};
use engram_tape::{View, ViewMut};
use serde_json::Value;
use std::collections::BTreeMap;

/// SI's off-by-one variant's extra state: the previous step's change and theta before the step.
struct PrevStep<B: RunBackend> {
    prev_delta: B::Buffer<f32>,
    theta_before: B::Buffer<f32>,
}

/// `--diagnose`: what SI's path integral measured on each task.
#[derive(Default)]
struct Diagnostics {
    loss_start: f64,
    share: ShareTracker,
    tasks: Vec<TaskDiagnostics>,
}

/// Where SI's relu goes (`--si-relu`).
fn relu_placement(relu: SiRelu) -> ReluPlacement {
    match relu {
        SiRelu::Official => ReluPlacement::Accumulated,
        SiRelu::None => ReluPlacement::None,
        SiRelu::PerTask => ReluPlacement::PerTaskTerm,
    }
}

/// A quadratic-penalty method and its state.
pub struct Quadratic<B: RunBackend> {
    method: Method,
    state: PenaltyState<B>,
    /// Whether `Omega` has a non-zero entry (checked at each phase start): before the first
    /// consolidation the penalty and its gradient are exactly zero, and the step skips them.
    active: bool,
    prev_step: Option<PrevStep<B>>,
    /// SI `from-init`: the initial parameters, where `Delta` is (wrongly) measured from.
    theta_init: Option<B::Buffer<f32>>,
    diagnostics: Option<Diagnostics>,
}

impl<B: RunBackend> Quadratic<B> {
    /// The state of `run.cfg.method` anchored at `theta`.
    pub fn new(run: &Run<'_, B>, theta: &B::Buffer<f32>) -> Result<Self, RunError> {
        let (be, cfg) = (run.be, run.cfg);
        let si = cfg.method == Method::Si;
        let n = be.buffer_len(theta);
        let prev_step = if si && cfg.si_variant == SiVariant::PrevStep {
            Some(PrevStep { prev_delta: be.alloc(n)?, theta_before: be.alloc(n)? })
        } else {
            None
        };
        let theta_init = if si && cfg.si_variant == SiVariant::FromInit {
            let mut t = be.alloc(n)?;
            be.copy(View::row_of(be, theta), ViewMut::row_of(be, &mut t))?;
            Some(t)
        } else {
            None
        };
        Ok(Self {
            method: cfg.method,
            state: PenaltyState::new(be, theta, si)?,
            active: false,
            prev_step,
            theta_init,
            diagnostics: cfg.diagnose.then(Diagnostics::default),
        })
    }

    /// The mean task loss on `task`'s training data at `theta` (the diagnostics' loss).
    fn train_loss(run: &Run<'_, B>, theta: &B::Buffer<f32>, task: usize) -> Result<f64, RunError> {
        let e = engram_nn::evaluate(
            run.be,
            run.model,
            theta,
            run.data.samples(task, Split::Train),
            engram_nn::EVAL_CHUNK,
            true,
        )?;
        Ok(e.mean_loss())
    }
}

impl<B: RunBackend> Strategy<B> for Quadratic<B> {
    fn begin_phase(
        &mut self,
        run: &Run<'_, B>,
        st: &mut RunState<B>,
        task: usize,
        resuming: bool,
    ) -> Result<(), RunError> {
        self.active = self.state.is_active(run.be)?;
        if let (Some(p), false) = (self.prev_step.as_mut(), resuming) {
            // No previous step at the start of a task.
            run.be.fill(ViewMut::row_of(run.be, &mut p.prev_delta), 0.0)?;
        }
        if let Some(d) = self.diagnostics.as_mut() {
            d.loss_start = Self::train_loss(run, &st.theta, task)?;
        }
        Ok(())
    }

    fn update(&mut self, run: &Run<'_, B>, st: &mut RunState<B>, penalty: ViewMut<'_, B, f64>) -> Result<(), RunError> {
        let (be, cfg) = (run.be, run.cfg);
        let c = if self.active { cfg.c } else { 0.0 };
        let omega = (self.method == Method::Si).then_some(match cfg.si_grad {
            SiGrad::Task => OmegaGrad::Task,
            SiGrad::Total => OmegaGrad::Total,
        });
        let Some(prev) = self.prev_step.as_mut() else {
            st.optimizer.step(be, &mut st.theta, &st.grad, Some(&mut self.state), c, omega, penalty)?;
            return Ok(());
        };
        // Off by one: the step runs without omega; then omega -= g(k) * delta(k-1).
        be.copy(View::row_of(be, &st.theta), ViewMut::row_of(be, &mut prev.theta_before))?;
        st.optimizer.step(be, &mut st.theta, &st.grad, Some(&mut self.state), c, None, penalty)?;
        let PenaltyState { big_omega, theta_star, omega } = &mut self.state;
        let total = (cfg.si_grad == SiGrad::Total && self.active)
            .then(|| (View::row_of(be, &*big_omega), View::row_of(be, &*theta_star), cfg.c));
        be.prev_step_accumulate(
            ViewMut::row_of(be, omega.as_mut().expect("SI's omega")),
            View::row_of(be, &st.theta),
            View::row_of(be, &prev.theta_before),
            View::row_of(be, &st.grad),
            ViewMut::row_of(be, &mut prev.prev_delta),
            total,
        )?;
        Ok(())
    }

    fn observe_losses(&mut self, losses: &[(f32, f64)], phase_steps: usize) {
        if let Some(d) = self.diagnostics.as_mut() {
            for &(task_loss, penalty) in losses {
                d.share.record(task_loss as f64, penalty, phase_steps);
            }
        }
    }

    fn end_phase(&mut self, run: &Run<'_, B>, st: &mut RunState<B>, task: usize) -> Result<(), RunError> {
        let (be, cfg) = (run.be, run.cfg);
        // --diagnose: what the path integral measured, before consolidation folds it in.
        let before = match &self.diagnostics {
            Some(d) => {
                let loss_end = Self::train_loss(run, &st.theta, task)?;
                let theta = saved::host(be, &st.theta)?;
                let star = saved::host(be, &self.state.theta_star)?;
                let omega = saved::host(be, self.state.omega.as_ref().expect("SI's omega"))?;
                let big_omega = saved::host(be, &self.state.big_omega)?;
                let omega_sum: f64 = omega.iter().map(|&w| w as f64).sum();
                let term = diagnose::Distribution::of(&diagnose::new_term(&theta, &star, &omega, cfg.xi));
                let drift = diagnose::weighted_drift(&theta, &star, &big_omega);
                Some((d.loss_start, loss_end, omega_sum, term, drift))
            }
            None => None,
        };
        match self.method {
            Method::Si => match &self.theta_init {
                Some(init) => {
                    // Delta measured from the initialisation; the next task's anchor is still theta.
                    let mut start = be.alloc::<f32>(be.buffer_len(init))?;
                    be.copy(View::row_of(be, init), ViewMut::row_of(be, &mut start))?;
                    let PenaltyState { big_omega, theta_star, omega } = &mut self.state;
                    be.si_end_of_task(
                        View::row_of(be, &st.theta),
                        ViewMut::row_of(be, omega.as_mut().expect("SI's omega")),
                        ViewMut::row_of(be, big_omega),
                        ViewMut::row_of(be, &mut start),
                        cfg.xi,
                        relu_placement(cfg.si_relu),
                    )?;
                    be.copy(View::row_of(be, &st.theta), ViewMut::row_of(be, theta_star))?;
                }
                None => self.state.end_task_si(be, &st.theta, cfg.xi, relu_placement(cfg.si_relu))?,
            },
            Method::Ewc => {
                let f = importance::fisher(
                    run,
                    &st.theta,
                    task,
                    cfg.fisher,
                    cfg.importance_samples,
                    CHUNK,
                    &mut st.streams.sample,
                )?;
                let rule = match cfg.ewc_mode {
                    EwcMode::Separate => Consolidation::EwcSeparate,
                    EwcMode::Online => Consolidation::EwcOnline { gamma: cfg.gamma },
                };
                self.state.consolidate(be, rule, &st.theta, Some(&f))?;
            }
            Method::Mas => {
                let f = importance::mas(run, &st.theta, task, cfg.importance_samples, CHUNK, &mut st.streams.sample)?;
                self.state.consolidate(be, Consolidation::Mas, &st.theta, Some(&f))?;
            }
            Method::L2 => self.state.consolidate(be, Consolidation::L2, &st.theta, None)?,
            other => unreachable!("{other:?} is not a quadratic-penalty method"),
        }
        if let (Some((loss_start, loss_end, omega_sum, term, weighted_drift)), Some(d)) =
            (before, self.diagnostics.as_mut())
        {
            let (penalty_share_mean, penalty_share_last, penalty_share_curve) = d.share.take();
            d.tasks.push(TaskDiagnostics {
                name: run.scenario.tasks[task].name.clone(),
                loss_start,
                loss_end,
                omega_sum,
                term,
                big_omega: diagnose::Distribution::of(&saved::host(be, &self.state.big_omega)?),
                penalty_share_mean,
                penalty_share_last,
                weighted_drift,
                penalty_share_curve,
            });
        }
        Ok(())
    }

    fn state_bytes(&self, run: &Run<'_, B>) -> usize {
        let be = run.be;
        let extra =
            self.prev_step.as_ref().map_or(0, |p| be.buffer_len(&p.prev_delta) + be.buffer_len(&p.theta_before))
                + self.theta_init.as_ref().map_or(0, |t| be.buffer_len(t));
        self.state.bytes(be) + 4 * extra
    }

    fn take_diagnostics(&mut self) -> Option<Vec<TaskDiagnostics>> {
        self.diagnostics.as_mut().map(|d| std::mem::take(&mut d.tasks))
    }

    fn save(&self, run: &Run<'_, B>, t: &mut BTreeMap<String, engram_ckpt::Tensor>) -> Result<Option<Value>, RunError> {
        let be = run.be;
        t.insert("penalty.big_omega".into(), saved::download_f32(be, &self.state.big_omega)?);
        t.insert("penalty.theta_star".into(), saved::download_f32(be, &self.state.theta_star)?);
        if let Some(w) = &self.state.omega {
            t.insert("penalty.omega".into(), saved::download_f32(be, w)?);
        }
        if let Some(p) = &self.prev_step {
            t.insert("si.prev_delta".into(), saved::download_f32(be, &p.prev_delta)?);
        }
        if let Some(init) = &self.theta_init {
            t.insert("si.theta_init".into(), saved::download_f32(be, init)?);
        }
        Ok(None)
    }

    fn load(
        &mut self,
        run: &Run<'_, B>,
        ck: &Checkpoint,
        episodic: Option<&Value>,
        _done: usize,
    ) -> Result<(), String> {
        if episodic.is_some() {
            return Err("the checkpoint's episodic memory does not match the method".into());
        }
        let (be, n) = (run.be, run.model.num_params());
        // Omega is never negative (Fisher, MAS, L2's ones, SI with its relu), except for SI
        // without the relu (`--si-relu none`), which keeps negative importances on purpose.
        let cfg = run.cfg;
        self.state.big_omega = if cfg.method == crate::config::Method::Si && cfg.si_relu == crate::config::SiRelu::None
        {
            saved::upload_f32(be, ck, "penalty.big_omega", n)?
        } else {
            saved::upload_nonnegative_f32(be, ck, "penalty.big_omega", n)?
        };
        self.state.theta_star = saved::upload_f32(be, ck, "penalty.theta_star", n)?;
        if self.state.omega.is_some() {
            self.state.omega = Some(saved::upload_f32(be, ck, "penalty.omega", n)?);
        }
        if let Some(p) = self.prev_step.as_mut() {
            let v = saved::f32s(ck, "si.prev_delta", n)?;
            p.prev_delta = be.upload(v).map_err(|e| e.to_string())?;
        }
        if self.theta_init.is_some() {
            let v = saved::f32s(ck, "si.theta_init", n)?;
            self.theta_init = Some(be.upload(v).map_err(|e| e.to_string())?);
        }
        Ok(())
    }

    fn carry(&mut self, run: &Run<'_, B>, carried: &Carried) -> Result<(), String> {
        let Some((o, s)) = &carried.penalty else { return Ok(()) };
        let n = run.model.num_params();
        if o.len() != n || s.len() != n {
            return Err("the carried importance does not fit the model".into());
        }
        let up = |v: &[f32]| run.be.upload(v).map_err(|e| e.to_string());
        self.state.big_omega = up(o)?;
        self.state.theta_star = up(s)?;
        Ok(())
    }
}
