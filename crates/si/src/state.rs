//! SI's state beside the model and the optimizer: three vectors, whatever the number of tasks.

use crate::{end_of_task, fused_step_f32, penalty_f32, ReluPlacement, Slices, StepConfig};

/// Synaptic Intelligence's state (Zenke et al. 2017): exactly three vectors of the model's
/// length `n`, whatever the number of tasks (PROTOCOLS.md, "Synaptic Intelligence, exactly").
///
/// - `omega`: the running path integral of the current task, SI eq. (3);
/// - `big_omega`: the accumulated importance `Omega`, SI eq. (5);
/// - `theta_star`: the anchor `theta*` of the penalty, SI eq. (4).
///
/// No fourth vector holds theta at the start of the task: `theta*` *is* that point. It is
/// set to the initialisation by [`SiState::begin_task`] before the first task (when `Omega == 0`,
/// so the anchor does not matter for the penalty yet) and to theta at the end of every task by
/// [`SiState::end_task`]; theta does not change between the end of one task and the start of the
/// next, so `theta*` equals theta at the start of each task and
/// `Delta = theta(end) - theta(start) = theta - theta*`.
#[derive(Clone, Debug, PartialEq)]
pub struct SiState {
    /// Running path integral `omega` of the current task.
    pub omega: Vec<f32>,
    /// Accumulated importance `Omega`.
    pub big_omega: Vec<f32>,
    /// Anchor `theta*` (theta at the end of the previous task, i.e. at the start of this one).
    pub theta_star: Vec<f32>,
}

impl SiState {
    /// Zeroed state for `n` parameters. Call [`SiState::begin_task`] with the initial
    /// parameters before the first step.
    pub fn new(n: usize) -> SiState {
        SiState { omega: vec![0.0; n], big_omega: vec![0.0; n], theta_star: vec![0.0; n] }
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.theta_star.len()
    }

    /// Whether the state covers no parameter.
    pub fn is_empty(&self) -> bool {
        self.theta_star.is_empty()
    }

    /// Bytes held by the state's buffers (capacity, not just length): `3 * 4 * n`.
    pub fn bytes(&self) -> usize {
        (self.omega.capacity() + self.big_omega.capacity() + self.theta_star.capacity()) * std::mem::size_of::<f32>()
    }

    /// Anchors the state at the start of a task: `theta* = theta`, `omega = 0`. Needed before
    /// the first task (theta is then the initialisation); at later task starts it changes
    /// nothing, since [`SiState::end_task`] already set `theta* = theta` and `omega = 0`.
    ///
    /// # Panics
    /// When `theta` does not have the state's length.
    pub fn begin_task(&mut self, theta: &[f32]) {
        self.theta_star.copy_from_slice(theta);
        self.omega.fill(0.0);
    }

    /// The slices of one fused step with this state's `Omega`, `theta*` and `omega`.
    pub fn slices<'a>(
        &'a mut self,
        theta: &'a mut [f32],
        g: &'a [f32],
        m: &'a mut [f32],
        v: &'a mut [f32],
    ) -> Slices<'a> {
        Slices { theta, g, big_omega: &self.big_omega, theta_star: &self.theta_star, omega: &mut self.omega, m, v }
    }

    /// One fused step ([`fused_step_f32`]) on this state; returns the penalty before the step.
    pub fn step(&mut self, theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], cfg: &StepConfig) -> f64 {
        fused_step_f32(self.slices(theta, g, m, v), cfg)
    }

    /// The penalty `c * sum Omega (theta - theta*)^2` at `theta` ([`penalty_f32`]).
    pub fn penalty(&self, theta: &[f32], c: f32) -> f64 {
        penalty_f32(theta, &self.big_omega, &self.theta_star, c)
    }

    /// SI's consolidation at the end of a task ([`end_of_task`], SI eq. (5)):
    /// `Omega += omega / ((theta - theta*)^2 + xi)` with the chosen relu, then `omega = 0`,
    /// `theta* = theta`.
    pub fn end_task(&mut self, theta: &[f32], xi: f32, relu: ReluPlacement) {
        end_of_task(theta, &mut self.omega, &mut self.big_omega, &mut self.theta_star, xi, relu);
    }
}
