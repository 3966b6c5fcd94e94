//! The unfused reference: the arithmetic of [`fused_step_f32`](crate::fused_step_f32) and
//! [`end_of_task`](crate::end_of_task) written the way framework code runs it (PyTorch eager
//! mode, one kernel per operation): every operation is a separate pass over memory, each pass
//! parallel over chunks of [`CHUNK`] elements with rayon (as a framework's element-wise kernels
//! are), each result written to a full-size temporary.
//!
//! The passes of one step (skipped ones in brackets):
//!
//! ```text
//!  1 d      = theta - theta*                  [c == 0]   penalty forward
//!  2 p      = sum Omega d d        (f64)      [c == 0]   penalty value
//!  3 pg     = (2c Omega) d                    [c == 0]   penalty gradient
//!  4 G      = g + pg                          [c == 0]   total gradient (G = g otherwise)
//!  5 theta0 = copy of theta                   [no omega] snapshot for the parameter change
//!    SGD:  6 theta = theta - lr G
//!    Adam: 6 m = beta1 m + (1 - beta1) G
//!          7 v = beta2 v + (1 - beta2) G G
//!          8 denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//!          9 theta = theta - step (m / denom)
//! 10 delta  = theta - theta0                  [no omega] parameter change
//! 11 omega  = omega - g_used delta            [no omega] SI's path integral
//! ```
//!
//! The element-wise expressions are the fused kernel's, operation for operation, so theta, m,
//! v and omega come out bit-identical; only the penalty's f64 summation order differs.
//! The temporaries live in a [`Scratch`] ([`unfused_step_f32`] allocates a fresh one per call,
//! like a framework without a caching allocator; [`unfused_step_f32_with`] reuses one, like a
//! caching allocator: the benchmark uses the latter, the faster baseline).

use rayon::prelude::*;

use crate::{relu, Plan, ReluPlacement, Scalars, Slices, StepConfig, CHUNK};

/// The full-size temporaries of the unfused step.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    /// `theta - theta*`.
    pub d: Vec<f32>,
    /// The penalty gradient `2c Omega d`.
    pub pg: Vec<f32>,
    /// The total gradient `g + pg`.
    pub total_grad: Vec<f32>,
    /// theta before the optimizer step.
    pub theta_old: Vec<f32>,
    /// Adam's denominator.
    pub denom: Vec<f32>,
    /// The parameter change `theta - theta_old`.
    pub delta: Vec<f32>,
}

impl Scratch {
    /// Temporaries for `n` parameters (allocated and zeroed now).
    pub fn new(n: usize) -> Scratch {
        let z = || vec![0.0f32; n];
        Scratch { d: z(), pg: z(), total_grad: z(), theta_old: z(), denom: z(), delta: z() }
    }

    fn fit(&mut self, n: usize) {
        for t in
            [&mut self.d, &mut self.pg, &mut self.total_grad, &mut self.theta_old, &mut self.denom, &mut self.delta]
        {
            t.resize(n, 0.0);
        }
    }
}

/// `out = f(a, b)`, one parallel pass.
fn map2(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((o, a), b)| {
        for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
            *o = f(*a, *b);
        }
    });
}

/// `out = f(out, a)`, one parallel pass.
fn update1(out: &mut [f32], a: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(|(o, a)| {
        for (o, a) in o.iter_mut().zip(a) {
            *o = f(*o, *a);
        }
    });
}

/// `out = f(out, a, b)`, one parallel pass.
fn update2(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) {
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((o, a), b)| {
        for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
            *o = f(*o, *a, *b);
        }
    });
}

/// `sum_i w_i d_i^2` in f64, one parallel pass (per-chunk partials summed in chunk order).
fn weighted_sum_sq(w: &[f32], d: &[f32]) -> f64 {
    let partials: Vec<f64> = w
        .par_chunks(CHUNK)
        .zip(d.par_chunks(CHUNK))
        .map(|(w, d)| {
            let mut acc = [0.0f64; 8];
            for (w, d) in w.chunks(8).zip(d.chunks(8)) {
                for ((a, w), d) in acc.iter_mut().zip(w).zip(d) {
                    let d = *d as f64;
                    *a += *w as f64 * (d * d);
                }
            }
            acc.iter().sum::<f64>()
        })
        .collect();
    partials.iter().sum()
}

/// The unfused step with freshly allocated temporaries; same contract, same results as
/// [`fused_step_f32`](crate::fused_step_f32) (see the module documentation for the passes).
pub fn unfused_step_f32(s: Slices<'_>, cfg: &StepConfig) -> f64 {
    let mut scratch = Scratch::default();
    unfused_step_f32_with(s, cfg, &mut scratch)
}

/// The unfused step reusing the temporaries in `scratch` (resized to `theta`'s length).
pub fn unfused_step_f32_with(s: Slices<'_>, cfg: &StepConfig, scratch: &mut Scratch) -> f64 {
    let plan = Plan::new(&s, cfg);
    let k = Scalars::new(cfg);
    scratch.fit(plan.n);
    let Slices { theta, g, big_omega, theta_star, omega, m, v } = s;
    let Scratch { d, pg, total_grad, theta_old, denom, delta } = scratch;

    // 1-4: the penalty, its gradient, the total gradient.
    let mut penalty = 0.0;
    let gt: &[f32] = if plan.penalty {
        map2(d, theta, theta_star, |t, s| t - s);
        penalty = cfg.c as f64 * weighted_sum_sq(big_omega, d);
        let two_c = k.two_c;
        map2(pg, big_omega, d, |o, d| (two_c * o) * d);
        map2(total_grad, g, pg, |g, p| g + p);
        total_grad
    } else {
        g
    };
    // 5: snapshot.
    if plan.omega != crate::NO_OMEGA {
        theta_old.par_chunks_mut(CHUNK).zip(theta.par_chunks(CHUNK)).for_each(|(o, t)| o.copy_from_slice(t));
    }
    // 6-9: the optimizer, one pass per line.
    if plan.adam {
        let Scalars { beta1, omb1, beta2, omb2, step, bc2_sqrt, eps, .. } = k;
        update1(m, gt, |m, g| crate::flush_subnormal(beta1 * m + omb1 * g));
        update1(v, gt, |v, g| crate::flush_subnormal(beta2 * v + omb2 * g * g));
        map2(denom, v, v, |v, _| v.sqrt() / bc2_sqrt + eps);
        update2(theta, m, denom, |t, m, d| t - step * (m / d));
    } else {
        let lr = k.lr;
        update1(theta, gt, |t, g| t - lr * g);
    }
    // 10-11: the parameter change and SI's path integral.
    if plan.omega != crate::NO_OMEGA {
        map2(delta, theta, theta_old, |t, o| t - o);
        let gu = if plan.omega == crate::OMEGA_TASK { g } else { gt };
        update2(omega, gu, delta, |w, g, d| w - g * d);
    }
    penalty
}

/// SI's end-of-task consolidation (Zenke et al. 2017, eq. (5)) as separate passes with
/// temporaries; same contract and bit-identical results as [`end_of_task`](crate::end_of_task).
pub fn unfused_end_of_task(
    theta: &[f32],
    omega: &mut [f32],
    big_omega: &mut [f32],
    theta_star: &mut [f32],
    xi: f32,
    relu_placement: ReluPlacement,
) {
    let n = theta.len();
    assert!(omega.len() == n && big_omega.len() == n && theta_star.len() == n);
    assert!(xi > 0.0 && xi.is_finite());
    let delta: Vec<f32> = theta.iter().zip(theta_star.iter()).map(|(t, s)| t - s).collect();
    let sq: Vec<f32> = delta.iter().map(|d| d * d).collect();
    let den: Vec<f32> = sq.iter().map(|s| s + xi).collect();
    let mut term: Vec<f32> = omega.iter().zip(&den).map(|(w, d)| w / d).collect();
    if relu_placement == ReluPlacement::PerTaskTerm {
        term.iter_mut().for_each(|x| *x = relu(*x));
    }
    big_omega.iter_mut().zip(&term).for_each(|(o, t)| *o += t);
    if relu_placement == ReluPlacement::Accumulated {
        big_omega.iter_mut().for_each(|x| *x = relu(*x));
    }
    omega.fill(0.0);
    theta_star.copy_from_slice(theta);
}
