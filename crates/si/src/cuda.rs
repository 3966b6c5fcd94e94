//! The consolidation kernels on the CUDA backend (feature `cuda`): kernels/fused_step.cu, the
//! same arithmetic as the CPU kernels of this crate (compiled without FMA contraction: theta, m,
//! v and omega match the CPU bit for bit; the penalty is summed per block, then over blocks in
//! order, so its last bits differ from the CPU's chunked sum).

use crate::{
    Consolidation, ConsolidationKernels, ReluPlacement, Scalars, StepBuffers, StepConfig, OMEGA_TASK, OMEGA_TOTAL,
};
use engram_tape::cuda::{blocks, grid, view, view_mut, Cuda};
use engram_tape::{cuda_launch, Result, Tensor, View, ViewMut};

/// One step's scalars as `kernels/fused_step.cu` takes them (`struct StepParams`, by value: the
/// same fields in the same order).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct StepParams {
    two_c: f32,
    lr: f32,
    beta1: f32,
    omb1: f32,
    beta2: f32,
    omb2: f32,
    step: f32,
    bc2_sqrt: f32,
    eps: f32,
    adam: i32,
    penalty: i32,
    omega: i32,
    n: u64,
}

// SAFETY: a plain #[repr(C)] struct of numbers, laid out as the C struct of the kernel.
unsafe impl cudarc::driver::DeviceRepr for StepParams {}

fn check(name: &str, len: usize, n: usize) {
    assert_eq!(len, n, "engram-si: `{name}` has length {len}, expected {n}");
}

/// Sums the per-block partials in block order, times `c`, into `out`.
fn finish_penalty(
    be: &Cuda,
    partials: &Tensor<Cuda, f64>,
    used: usize,
    c: f64,
    out: ViewMut<'_, Cuda, f64>,
) -> Result<()> {
    let (b, mut ov) = (used as u64, view_mut(out));
    cuda_launch!(be, "penalty_finish_f64", blocks(1), &partials.buf, &b, &c, &mut ov);
    Ok(())
}

impl ConsolidationKernels for Cuda {
    fn fused_step(&self, st: StepBuffers<'_, Self>, cfg: &StepConfig, penalty: ViewMut<'_, Self, f64>) -> Result<()> {
        let n = st.theta.len();
        check("g", st.g.len(), n);
        assert!(cfg.c.is_finite(), "engram-si: the penalty strength c must be finite, got {}", cfg.c);
        let with_penalty = cfg.c != 0.0;
        assert!(
            !with_penalty || st.penalty.is_some(),
            "engram-si: the penalty is on (c != 0) without Omega and theta*"
        );
        let omega_mode = match cfg.omega {
            None => 0,
            Some(crate::OmegaGrad::Task) => OMEGA_TASK as i32,
            Some(crate::OmegaGrad::Total) => OMEGA_TOTAL as i32,
        };
        assert!(omega_mode == 0 || st.omega.is_some(), "engram-si: importance accumulation is on without omega");
        let adam = cfg.optimizer.has_moments();
        assert!(!adam || st.moments.is_some(), "engram-si: Adam without its moments");
        if adam {
            assert!(cfg.t >= 1, "engram-si: Adam's step count t is 1-based, got 0");
        }
        let k = Scalars::new(cfg);
        let params = StepParams {
            two_c: k.two_c,
            lr: k.lr,
            beta1: k.beta1,
            omb1: k.omb1,
            beta2: k.beta2,
            omb2: k.omb2,
            step: k.step,
            bc2_sqrt: k.bc2_sqrt,
            eps: k.eps,
            adam: i32::from(adam),
            penalty: i32::from(with_penalty),
            omega: omega_mode,
            n: n as u64,
        };
        let launch = grid(n);
        let used = launch.grid_dim.0 as usize;
        let mut partials = Tensor::<Self, f64>::zeros(self, 1, used)?;
        if n > 0 {
            use cudarc::driver::PushKernelArg;
            let (unused_a, unused_b, unused_c) = (self.unused_f32(), self.unused_f32(), self.unused_f32());
            // Only what the configuration uses is checked and passed (as on the CPU, where an
            // unused slice may be empty); the kernel never touches the placeholders.
            let (big_omega, theta_star) = match st.penalty.as_ref().filter(|_| with_penalty) {
                Some((o, t)) => {
                    check("big_omega", o.len(), n);
                    check("theta_star", t.len(), n);
                    (view(o), view(t))
                }
                None => (self.unused_f32(), self.unused_f32()),
            };
            let mut theta = view_mut(st.theta);
            let g = view(&st.g);
            let mut omega = st.omega.filter(|_| omega_mode != 0).map(|w| {
                check("omega", w.len(), n);
                view_mut(w)
            });
            let mut moments = st.moments.filter(|_| adam).map(|(m, v)| {
                check("m", m.len(), n);
                check("v", v.len(), n);
                (view_mut(m), view_mut(v))
            });
            let f = self.function("fused_step_f32")?;
            let mut b = self.stream().launch_builder(f);
            b.arg(&params).arg(&mut theta).arg(&g).arg(&big_omega).arg(&theta_star);
            // Where a flag is off the kernel never touches the pointer: a placeholder is passed.
            match omega.as_mut() {
                Some(w) => b.arg(w),
                None => b.arg(&unused_a),
            };
            match moments.as_mut() {
                Some((m, v)) => b.arg(m).arg(v),
                None => b.arg(&unused_b).arg(&unused_c),
            };
            b.arg(&mut partials.buf);
            // SAFETY: the arguments match `fused_step_f32` in kernels/fused_step.cu; every used
            // pointer covers the n parameters (checked above), the partials one f64 per block.
            unsafe { b.launch(launch) }.map_err(|e| self.launch_error("fused_step_f32", e))?;
        }
        finish_penalty(self, &partials, used, if with_penalty { cfg.c as f64 } else { 0.0 }, penalty)
    }

    fn penalty(
        &self,
        theta: View<'_, Self>,
        big_omega: View<'_, Self>,
        theta_star: View<'_, Self>,
        c: f32,
        out: ViewMut<'_, Self, f64>,
    ) -> Result<()> {
        let n = theta.len();
        let launch = grid(n);
        let used = launch.grid_dim.0 as usize;
        let mut partials = Tensor::<Self, f64>::zeros(self, 1, used)?;
        if c != 0.0 && n > 0 {
            check("big_omega", big_omega.len(), n);
            check("theta_star", theta_star.len(), n);
            let (t, o, s, n64) = (view(&theta), view(&big_omega), view(&theta_star), n as u64);
            cuda_launch!(self, "penalty_partials_f32", launch, &t, &o, &s, &mut partials.buf, &n64);
        }
        finish_penalty(self, &partials, used, if c != 0.0 { c as f64 } else { 0.0 }, out)
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
        let n = theta.len();
        for (name, len) in [("omega", omega.len()), ("big_omega", big_omega.len()), ("theta_star", task_start.len())] {
            check(name, len, n);
        }
        assert!(xi > 0.0 && xi.is_finite(), "engram-si: the damping xi must be positive and finite, got {xi}");
        if n == 0 {
            return Ok(());
        }
        let mode: i32 = match relu {
            ReluPlacement::None => 0,
            ReluPlacement::PerTaskTerm => 1,
            ReluPlacement::Accumulated => 2,
        };
        let (t, mut w, mut o, mut s, n64) =
            (view(&theta), view_mut(omega), view_mut(big_omega), view_mut(task_start), n as u64);
        cuda_launch!(self, "si_end_of_task_f32", grid(n), &t, &mut w, &mut o, &mut s, &xi, &mode, &n64);
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
        let n = theta.len();
        check("big_omega", big_omega.len(), n);
        check("theta_star", theta_star.len(), n);
        let (code, gamma): (i32, f32) = match rule {
            Consolidation::L2 => (0, 0.0),
            Consolidation::EwcSeparate => (1, 0.0),
            Consolidation::EwcOnline { gamma } => (2, gamma),
            Consolidation::Mas => (3, 0.0),
        };
        assert!(rule == Consolidation::L2 || new.is_some(), "engram-si: {rule:?} needs an importance estimate");
        if n == 0 {
            return Ok(());
        }
        let unused = self.unused_f32();
        let fresh = match &new {
            Some(f) => {
                check("new", f.len(), n);
                view(f)
            }
            None => unused,
        };
        let (t, mut o, mut s, n64) = (view(&theta), view_mut(big_omega), view_mut(theta_star), n as u64);
        cuda_launch!(self, "consolidate_f32", grid(n), &code, &gamma, &t, &fresh, &mut o, &mut s, &n64);
        Ok(())
    }

    fn importance_mean(&self, acc: View<'_, Self, f64>, n: f64, squared: bool, out: ViewMut<'_, Self>) -> Result<()> {
        check("out", out.len(), acc.len());
        let len = acc.len();
        if len == 0 {
            return Ok(());
        }
        let (a, mut o, sq, len64) = (view(&acc), view_mut(out), i32::from(squared), len as u64);
        cuda_launch!(self, "importance_mean_f32", grid(len), &a, &n, &sq, &mut o, &len64);
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
        let n = theta.len();
        for (name, len) in [("omega", omega.len()), ("theta_before", theta_before.len()), ("g", g.len())] {
            check(name, len, n);
        }
        check("prev_delta", prev_delta.len(), n);
        if n == 0 {
            return Ok(());
        }
        let (ua, ub) = (self.unused_f32(), self.unused_f32());
        let (o, s, c, flag) = match &total {
            Some((o, s, c)) => {
                check("big_omega", o.len(), n);
                check("theta_star", s.len(), n);
                (view(o), view(s), *c, 1i32)
            }
            None => (ua, ub, 0.0f32, 0i32),
        };
        let (mut w, t, tb, gv, mut pd, n64) =
            (view_mut(omega), view(&theta), view(&theta_before), view(&g), view_mut(prev_delta), n as u64);
        cuda_launch!(self, "prev_step_accumulate_f32", grid(n), &mut w, &t, &tb, &gv, &mut pd, &o, &s, &c, &flag, &n64);
        Ok(())
    }
}
