//! The end-of-task updates of the quadratic penalty's importance `Omega` and anchor `theta*` for
//! L2, EWC, online EWC and MAS (SI's own is [`end_of_task`](crate::end_of_task)), the mean that
//! turns summed per-sample statistics into an importance, and the path integral of SI's
//! off-by-one variant. CPU kernels on flat slices; the backends call them through
//! [`ConsolidationKernels`](crate::ConsolidationKernels).

/// How a finished task's importance estimate `F` is folded into `Omega` and `theta*`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Consolidation {
    /// L2: `Omega = 1`, `theta* = theta` (no estimate).
    L2,
    /// EWC, one penalty per task (Kirkpatrick et al. 2017, eq. (3) summed over tasks):
    /// `Omega' = Omega + F`, `theta*' = (Omega theta* + F theta) / Omega'` (`theta` where
    /// `Omega' = 0`). The sum of the tasks' quadratics has this one quadratic's gradient.
    EwcSeparate,
    /// Online EWC (Schwarz et al. 2018): `Omega' = gamma Omega + F`, `theta* = theta`.
    EwcOnline {
        /// The decay of the old Fisher.
        gamma: f32,
    },
    /// MAS (Aljundi et al. 2018): `Omega' = Omega + F`, `theta* = theta`.
    Mas,
}

/// [`Consolidation`] on slices of the model's length (`new` is unused by [`Consolidation::L2`]).
///
/// # Panics
/// When a slice has another length, or `new` is missing for a rule that needs it.
pub fn consolidate_f32(rule: Consolidation, theta: &[f32], new: &[f32], big_omega: &mut [f32], theta_star: &mut [f32]) {
    let n = theta.len();
    assert!(big_omega.len() == n && theta_star.len() == n, "engram-si: consolidate needs Omega and theta* of {n}");
    if rule != Consolidation::L2 {
        assert_eq!(new.len(), n, "engram-si: {rule:?} needs an importance estimate of {n}");
    }
    match rule {
        Consolidation::L2 => {
            big_omega.fill(1.0);
            theta_star.copy_from_slice(theta);
        }
        Consolidation::EwcSeparate => {
            for (((om, ts), &fi), &th) in big_omega.iter_mut().zip(theta_star.iter_mut()).zip(new).zip(theta) {
                let o = *om + fi;
                *ts = if o > 0.0 { (*om * *ts + fi * th) / o } else { th };
                *om = o;
            }
        }
        Consolidation::EwcOnline { gamma } => {
            for (o, fi) in big_omega.iter_mut().zip(new) {
                *o = gamma * *o + fi;
            }
            theta_star.copy_from_slice(theta);
        }
        Consolidation::Mas => {
            for (o, v) in big_omega.iter_mut().zip(new) {
                *o += v;
            }
            theta_star.copy_from_slice(theta);
        }
    }
}

/// `out = acc / n` rounded to f32, or `(acc / n)^2` with `squared` (the square of a mean
/// gradient: the GEM paper's official EWC).
pub fn importance_mean_f32(acc: &[f64], n: f64, squared: bool, out: &mut [f32]) {
    assert_eq!(acc.len(), out.len(), "engram-si: importance_mean of {} into {}", acc.len(), out.len());
    for (o, &v) in out.iter_mut().zip(acc) {
        *o = if squared { (v / n).powi(2) as f32 } else { (v / n) as f32 };
    }
}

/// SI's off-by-one variant, after a step taken without omega accumulation:
/// `omega -= g_used(k) * delta(k-1)`, then `delta(k-1) <- theta - theta_before`. `g_used` is the
/// task gradient `g`, or with `total = Some((Omega, theta*, c))` the total gradient
/// `g + 2c Omega (theta_before - theta*)` (as the fused step's `OmegaGrad::Total`).
pub fn prev_step_accumulate_f32(
    omega: &mut [f32],
    theta: &[f32],
    theta_before: &[f32],
    g: &[f32],
    prev_delta: &mut [f32],
    total: Option<(&[f32], &[f32], f32)>,
) {
    let n = theta.len();
    assert!(omega.len() == n && theta_before.len() == n && g.len() == n && prev_delta.len() == n);
    for i in 0..n {
        let gu = match total {
            Some((big_omega, theta_star, c)) => g[i] + ((2.0 * c) * big_omega[i]) * (theta_before[i] - theta_star[i]),
            None => g[i],
        };
        omega[i] -= gu * prev_delta[i];
        prev_delta[i] = theta[i] - theta_before[i];
    }
}
