//! The consolidation step behind a per-device kernel trait: what a backend must run for the
//! quadratic-penalty methods (SI, EWC, online EWC, L2, MAS) and for plain training.
//!
//! [`ConsolidationKernels`] is implemented for the CPU backend here, by the slice kernels of this
//! crate ([`fused_step_f32`] and friends); a CUDA backend implements the same calls with the same
//! arithmetic (`kernels/fused_step.cu`). The unfused reference ([`crate::reference`]) stays the
//! oracle both are tested against.

use crate::{
    consolidate_f32, end_of_task, fused_step_f32, importance_mean_f32, penalty_f32, prev_step_accumulate_f32,
    Consolidation, ReluPlacement, Slices, StepConfig,
};
use engram_tape::counting::{inner_mut as im, inner_view as iv, Counting};
use engram_tape::cpu::Cpu;
use engram_tape::{Backend, Result, View, ViewMut};

/// The state one fused step reads and writes, as windows of backend buffers of the model's
/// length `n`. What the configuration does not use is `None`.
pub struct StepBuffers<'a, B: Backend> {
    /// Parameters, updated in place.
    pub theta: ViewMut<'a, B>,
    /// Gradient of the task loss at `theta` (without the penalty).
    pub g: View<'a, B>,
    /// The penalty's importance `Omega` and anchor `theta*` (needed when `c != 0`).
    pub penalty: Option<(View<'a, B>, View<'a, B>)>,
    /// SI's running path integral `omega` (needed when importance accumulation is on).
    pub omega: Option<ViewMut<'a, B>>,
    /// Adam's moments `m` and `v` (needed for Adam).
    pub moments: Option<(ViewMut<'a, B>, ViewMut<'a, B>)>,
}

/// The consolidation kernels a backend provides (element type `f32`).
pub trait ConsolidationKernels: Backend<T = f32> {
    /// The fused consolidation step (DESIGN.md; [`fused_step_f32`] states the arithmetic): one
    /// pass over memory. `penalty` (`1 x 1`) receives `c * sum_i Omega_i (theta_i - theta*_i)^2`
    /// at theta before the step (0 when `c == 0`), on the backend.
    fn fused_step(&self, state: StepBuffers<'_, Self>, cfg: &StepConfig, penalty: ViewMut<'_, Self, f64>)
        -> Result<()>;

    /// `out (1 x 1) = c * sum_i Omega_i (theta_i - theta*_i)^2` ([`penalty_f32`]).
    fn penalty(
        &self,
        theta: View<'_, Self>,
        big_omega: View<'_, Self>,
        theta_star: View<'_, Self>,
        c: f32,
        out: ViewMut<'_, Self, f64>,
    ) -> Result<()>;

    /// SI's consolidation at the end of a task (Zenke et al. 2017, eq. (5); [`end_of_task`]):
    /// `Omega += omega / ((theta - theta*)^2 + xi)` with the relu placement, `omega = 0`,
    /// `theta* = theta`. `task_start` is `theta*`, the task's start point.
    fn si_end_of_task(
        &self,
        theta: View<'_, Self>,
        omega: ViewMut<'_, Self>,
        big_omega: ViewMut<'_, Self>,
        task_start: ViewMut<'_, Self>,
        xi: f32,
        relu: ReluPlacement,
    ) -> Result<()>;

    /// Folds the importance estimate `new` (unused for L2) into `Omega` and `theta*`
    /// ([`consolidate_f32`]).
    fn consolidate(
        &self,
        rule: Consolidation,
        theta: View<'_, Self>,
        new: Option<View<'_, Self>>,
        big_omega: ViewMut<'_, Self>,
        theta_star: ViewMut<'_, Self>,
    ) -> Result<()>;

    /// `out = acc / n` (or its square) in f32 ([`importance_mean_f32`]).
    fn importance_mean(&self, acc: View<'_, Self, f64>, n: f64, squared: bool, out: ViewMut<'_, Self>) -> Result<()>;

    /// SI's off-by-one path integral ([`prev_step_accumulate_f32`]); `total` is
    /// `(Omega, theta*, c)` when the path integral uses the total gradient.
    fn prev_step_accumulate(
        &self,
        omega: ViewMut<'_, Self>,
        theta: View<'_, Self>,
        theta_before: View<'_, Self>,
        g: View<'_, Self>,
        prev_delta: ViewMut<'_, Self>,
        total: Option<(View<'_, Self>, View<'_, Self>, f32)>,
    ) -> Result<()>;
}

fn elems<'a>(v: View<'a, Cpu<f32>>) -> &'a [f32] {
    &v.buf[v.offset..v.offset + v.len()]
}

fn elems_mut<'a>(v: ViewMut<'a, Cpu<f32>>) -> &'a mut [f32] {
    let n = v.len();
    &mut v.buf[v.offset..v.offset + n]
}

impl ConsolidationKernels for Cpu<f32> {
    fn fused_step(&self, st: StepBuffers<'_, Self>, cfg: &StepConfig, penalty: ViewMut<'_, Self, f64>) -> Result<()> {
        let (big_omega, theta_star) = st.penalty.map_or((&[][..], &[][..]), |(o, t)| (elems(o), elems(t)));
        let (m, v) = st.moments.map_or((&mut [][..], &mut [][..]), |(m, v)| (elems_mut(m), elems_mut(v)));
        let slices = Slices {
            theta: elems_mut(st.theta),
            g: elems(st.g),
            big_omega,
            theta_star,
            omega: st.omega.map_or(&mut [][..], elems_mut),
            m,
            v,
        };
        let p = fused_step_f32(slices, cfg);
        penalty.buf[penalty.offset] = p;
        Ok(())
    }

    fn penalty(
        &self,
        theta: View<'_, Self>,
        big_omega: View<'_, Self>,
        theta_star: View<'_, Self>,
        c: f32,
        out: ViewMut<'_, Self, f64>,
    ) -> Result<()> {
        out.buf[out.offset] = penalty_f32(elems(theta), elems(big_omega), elems(theta_star), c);
        Ok(())
    }

    fn si_end_of_task(
        &self,
        theta: View<'_, Self>,
        omega: ViewMut<'_, Self>,
        big_omega: ViewMut<'_, Self>,
        task_start: ViewMut<'_, Self>,
        xi: f32,
        relu: ReluPlacement,
    ) -> Result<()> {
        end_of_task(elems(theta), elems_mut(omega), elems_mut(big_omega), elems_mut(task_start), xi, relu);
        Ok(())
    }

    fn consolidate(
        &self,
        rule: Consolidation,
        theta: View<'_, Self>,
        new: Option<View<'_, Self>>,
        big_omega: ViewMut<'_, Self>,
        theta_star: ViewMut<'_, Self>,
    ) -> Result<()> {
        consolidate_f32(rule, elems(theta), new.map_or(&[][..], elems), elems_mut(big_omega), elems_mut(theta_star));
        Ok(())
    }

    fn importance_mean(&self, acc: View<'_, Self, f64>, n: f64, squared: bool, out: ViewMut<'_, Self>) -> Result<()> {
        importance_mean_f32(&acc.buf[acc.offset..acc.offset + acc.len()], n, squared, elems_mut(out));
        Ok(())
    }

    fn prev_step_accumulate(
        &self,
        omega: ViewMut<'_, Self>,
        theta: View<'_, Self>,
        theta_before: View<'_, Self>,
        g: View<'_, Self>,
        prev_delta: ViewMut<'_, Self>,
        total: Option<(View<'_, Self>, View<'_, Self>, f32)>,
    ) -> Result<()> {
        let total = total.map(|(o, t, c)| (elems(o), elems(t), c));
        prev_step_accumulate_f32(
            elems_mut(omega),
            elems(theta),
            elems(theta_before),
            elems(g),
            elems_mut(prev_delta),
            total,
        );
        Ok(())
    }
}

/// The wrapped backend's kernels (their data never crosses to the host).
impl<B: ConsolidationKernels> ConsolidationKernels for Counting<B> {
    fn fused_step(&self, st: StepBuffers<'_, Self>, cfg: &StepConfig, penalty: ViewMut<'_, Self, f64>) -> Result<()> {
        let inner = StepBuffers {
            theta: im(st.theta),
            g: iv(st.g),
            penalty: st.penalty.map(|(o, t)| (iv(o), iv(t))),
            omega: st.omega.map(im),
            moments: st.moments.map(|(m, v)| (im(m), im(v))),
        };
        self.inner().fused_step(inner, cfg, im(penalty))
    }

    fn penalty(
        &self,
        theta: View<'_, Self>,
        big_omega: View<'_, Self>,
        theta_star: View<'_, Self>,
        c: f32,
        out: ViewMut<'_, Self, f64>,
    ) -> Result<()> {
        self.inner().penalty(iv(theta), iv(big_omega), iv(theta_star), c, im(out))
    }

    fn si_end_of_task(
        &self,
        theta: View<'_, Self>,
        omega: ViewMut<'_, Self>,
        big_omega: ViewMut<'_, Self>,
        task_start: ViewMut<'_, Self>,
        xi: f32,
        relu: ReluPlacement,
    ) -> Result<()> {
        self.inner().si_end_of_task(iv(theta), im(omega), im(big_omega), im(task_start), xi, relu)
    }

    fn consolidate(
        &self,
        rule: Consolidation,
        theta: View<'_, Self>,
        new: Option<View<'_, Self>>,
        big_omega: ViewMut<'_, Self>,
        theta_star: ViewMut<'_, Self>,
    ) -> Result<()> {
        self.inner().consolidate(rule, iv(theta), new.map(iv), im(big_omega), im(theta_star))
    }

    fn importance_mean(&self, acc: View<'_, Self, f64>, n: f64, squared: bool, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner().importance_mean(iv(acc), n, squared, im(out))
    }

    fn prev_step_accumulate(
        &self,
        omega: ViewMut<'_, Self>,
        theta: View<'_, Self>,
        theta_before: View<'_, Self>,
        g: View<'_, Self>,
        prev_delta: ViewMut<'_, Self>,
        total: Option<(View<'_, Self>, View<'_, Self>, f32)>,
    ) -> Result<()> {
        let total = total.map(|(o, t, c)| (iv(o), iv(t), c));
        self.inner().prev_step_accumulate(im(omega), iv(theta), iv(theta_before), iv(g), im(prev_delta), total)
    }
}
