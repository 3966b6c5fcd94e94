//! The state beside the model, on the backend: the quadratic penalty's (SI's three vectors, or
//! the others' two) and the optimizer's.

use crate::{Consolidation, ConsolidationKernels, OmegaGrad, Optimizer, ReluPlacement, StepBuffers, StepConfig};
use engram_tape::{Backend, Result, View, ViewMut};

/// The quadratic penalty's state: `Omega` and `theta*`, and for SI its running `omega` too.
/// Exactly these vectors of the model's length `n`, whatever the number of tasks (PROTOCOLS.md,
/// "Synaptic Intelligence, exactly").
///
/// - `omega`: the running path integral of the current task, SI eq. (3);
/// - `big_omega`: the accumulated importance `Omega`, SI eq. (5) (EWC's Fisher, MAS's
///   sensitivities, L2's ones);
/// - `theta_star`: the anchor `theta*` of the penalty, SI eq. (4).
///
/// SI keeps no fourth vector for theta at the start of the task: `theta*` *is* that point. It is
/// set to the initialisation by [`PenaltyState::new`] (when `Omega == 0`, so the anchor does not
/// matter for the penalty yet) and to theta at the end of every task by
/// [`PenaltyState::end_task_si`]; theta does not change between the end of one task and the
/// start of the next, so `theta*` equals theta at the start of each task and
/// `Delta = theta(end) - theta(start) = theta - theta*`.
pub struct PenaltyState<B: Backend> {
    /// Accumulated importance `Omega`.
    pub big_omega: B::Buffer<f32>,
    /// Anchor `theta*`.
    pub theta_star: B::Buffer<f32>,
    /// SI's running path integral `omega` of the current task (`None` for the other methods).
    pub omega: Option<B::Buffer<f32>>,
}

fn row<'a, B: Backend<T = f32>>(be: &B, buf: &'a B::Buffer<f32>) -> View<'a, B> {
    View::row_of(be, buf)
}

fn row_mut<'a, B: Backend<T = f32>>(be: &B, buf: &'a mut B::Buffer<f32>) -> ViewMut<'a, B> {
    ViewMut::row_of(be, buf)
}

impl<B: ConsolidationKernels> PenaltyState<B> {
    /// `Omega = 0`, `theta* = theta` (the initialisation), and with `path_integral` (SI) a zero
    /// `omega`.
    pub fn new(be: &B, theta: &B::Buffer<f32>, path_integral: bool) -> Result<Self> {
        let n = be.buffer_len(theta);
        let mut theta_star = be.alloc(n)?;
        be.copy(row(be, theta), row_mut(be, &mut theta_star))?;
        Ok(Self { big_omega: be.alloc(n)?, theta_star, omega: if path_integral { Some(be.alloc(n)?) } else { None } })
    }

    /// Bytes held: `4 n` per vector.
    pub fn bytes(&self, be: &B) -> usize {
        let n = be.buffer_len(&self.theta_star);
        4 * n * (2 + usize::from(self.omega.is_some()))
    }

    /// Whether any importance is non-zero (before the first consolidation the penalty and its
    /// gradient are exactly zero, so a step need not read `Omega` and `theta*`).
    pub fn is_active(&self, be: &B) -> Result<bool> {
        let mut count = be.alloc::<u64>(1)?;
        be.count_nonzero(row(be, &self.big_omega), ViewMut::new(&mut count, 0, 1, 1))?;
        Ok(be.download(View::new(&count, 0, 1, 1))?[0] > 0)
    }

    /// Anchors the state at the start of a task: `theta* = theta`, `omega = 0` (at the first
    /// task theta is the initialisation; later it changes nothing, since
    /// [`PenaltyState::end_task_si`] already did it).
    pub fn begin_task(&mut self, be: &B, theta: &B::Buffer<f32>) -> Result<()> {
        be.copy(row(be, theta), row_mut(be, &mut self.theta_star))?;
        if let Some(w) = self.omega.as_mut() {
            be.fill(row_mut(be, w), 0.0)?;
        }
        Ok(())
    }

    /// SI's consolidation (eq. (5)): `Omega += omega / ((theta - theta*)^2 + xi)`, `omega = 0`,
    /// `theta* = theta`.
    pub fn end_task_si(&mut self, be: &B, theta: &B::Buffer<f32>, xi: f32, relu: ReluPlacement) -> Result<()> {
        let omega = self.omega.as_mut().expect("SI's state has omega");
        be.si_end_of_task(
            row(be, theta),
            row_mut(be, omega),
            row_mut(be, &mut self.big_omega),
            row_mut(be, &mut self.theta_star),
            xi,
            relu,
        )
    }

    /// Folds an importance estimate into `Omega` and `theta*` ([`Consolidation`]).
    pub fn consolidate(
        &mut self,
        be: &B,
        rule: Consolidation,
        theta: &B::Buffer<f32>,
        new: Option<&B::Buffer<f32>>,
    ) -> Result<()> {
        be.consolidate(
            rule,
            row(be, theta),
            new.map(|n| row(be, n)),
            row_mut(be, &mut self.big_omega),
            row_mut(be, &mut self.theta_star),
        )
    }

    /// `out = c * sum Omega (theta - theta*)^2` at `theta`, on the backend.
    pub fn penalty(&self, be: &B, theta: &B::Buffer<f32>, c: f32, out: ViewMut<'_, B, f64>) -> Result<()> {
        be.penalty(row(be, theta), row(be, &self.big_omega), row(be, &self.theta_star), c, out)
    }
}

/// The optimizer with its state on the backend: Adam's moments and the step count.
pub struct OptimizerState<B: Backend> {
    /// The update rule.
    pub rule: Optimizer,
    /// Adam's first and second moments (`None` for SGD).
    pub moments: Option<(B::Buffer<f32>, B::Buffer<f32>)>,
    /// Steps taken since the last reset (Adam's bias correction uses `t + 1` for the next step).
    pub t: u64,
}

impl<B: ConsolidationKernels> OptimizerState<B> {
    /// A fresh optimizer for `n` parameters.
    pub fn new(be: &B, rule: Optimizer, n: usize) -> Result<Self> {
        let moments = if rule.has_moments() { Some((be.alloc(n)?, be.alloc(n)?)) } else { None };
        Ok(Self { rule, moments, t: 0 })
    }

    /// Bytes held by the moments.
    pub fn bytes(&self, be: &B) -> usize {
        self.moments.as_ref().map_or(0, |(m, v)| 4 * (be.buffer_len(m) + be.buffer_len(v)))
    }

    /// Forgets the moments and the step count (the SI paper resets Adam at each task).
    pub fn reset(&mut self, be: &B) -> Result<()> {
        if let Some((m, v)) = self.moments.as_mut() {
            be.fill(row_mut(be, m), 0.0)?;
            be.fill(row_mut(be, v), 0.0)?;
        }
        self.t = 0;
        Ok(())
    }

    /// The configuration of the next step, with penalty strength `c` and optional importance
    /// accumulation.
    pub fn next_config(&mut self, c: f32, omega: Option<OmegaGrad>) -> StepConfig {
        self.t += 1;
        StepConfig { optimizer: self.rule, c, omega, t: self.t }
    }

    /// One fused consolidation step on the backend: the optimizer's update of `theta` on
    /// `g + 2c Omega (theta - theta*)`, SI's path integral accumulated when `omega` is given.
    /// `penalty` holds `Omega`, `theta*` (needed when `c != 0`) and `omega` (needed with
    /// `omega`); `out` (`1 x 1`) receives the penalty before the step. With `c = 0` and no
    /// `omega` this is plain SGD or Adam.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        be: &B,
        theta: &mut B::Buffer<f32>,
        g: &B::Buffer<f32>,
        penalty: Option<&mut PenaltyState<B>>,
        c: f32,
        omega: Option<OmegaGrad>,
        out: ViewMut<'_, B, f64>,
    ) -> Result<()> {
        let cfg = self.next_config(c, omega);
        let (anchors, omega_buf) = match penalty {
            Some(p) => ((c != 0.0).then_some((&p.big_omega, &p.theta_star)), p.omega.as_mut()),
            None => {
                assert!(c == 0.0, "engram-si: a penalty strength without a penalty state");
                (None, None)
            }
        };
        assert!(omega.is_none() || omega_buf.is_some(), "engram-si: importance accumulation needs SI's omega");
        let state = StepBuffers {
            theta: row_mut(be, theta),
            g: row(be, g),
            penalty: anchors.map(|(o, t)| (row(be, o), row(be, t))),
            omega: if omega.is_some() { omega_buf.map(|w| row_mut(be, w)) } else { None },
            moments: self.moments.as_mut().map(|(m, v)| (row_mut(be, m), row_mut(be, v))),
        };
        be.fused_step(state, &cfg, out)
    }
}
