//! SI diagnostics (`engram run --method si --diagnose`): what the path integral measured on
//! each task, and what the consolidation made of it.
//!
//! Per task:
//! * the path-integral identity (Zenke et al. 2017, eq. (3) and the text after it): with a
//!   small step, `sum_i omega_i` over a task is close to the drop of the task loss
//!   `L(theta_start) - L(theta_end)`, both measured here on the task's whole training data;
//! * the distribution of the new importance term `omega / (Delta^2 + xi)` *before* any relu
//!   (quantiles, fraction of zeros, fraction of negatives), and of the accumulated `Omega` after;
//! * the penalty's share of the loss over the task, `penalty / (task loss + penalty)`;
//! * the drift of the parameters away from the anchor, weighted by the importance that
//!   protects them: `sum_i Omega_i |theta_i - theta*_i| / sum_i Omega_i`.

use serde_json::{json, Value};

/// The quantile levels reported for importance distributions.
pub const LEVELS: [f64; 7] = [0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0];

/// A distribution summary: quantiles at [`LEVELS`], fraction of exact zeros and of negatives.
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    /// Values at the levels of [`LEVELS`] (nearest rank), in that order.
    pub quantiles: [f64; 7],
    /// Fraction of entries exactly 0.
    pub frac_zero: f64,
    /// Fraction of entries below 0.
    pub frac_negative: f64,
}

impl Distribution {
    /// Summarises `xs` (NaN entries are ordered last by `total_cmp`). An empty slice gives NaN
    /// quantiles and zero fractions.
    pub fn of(xs: &[f32]) -> Self {
        if xs.is_empty() {
            return Self { quantiles: [f64::NAN; 7], frac_zero: 0.0, frac_negative: 0.0 };
        }
        let mut s = xs.to_vec();
        s.sort_unstable_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let q = LEVELS.map(|l| s[((l * (n - 1) as f64).round() as usize).min(n - 1)] as f64);
        let zeros = xs.iter().filter(|&&x| x == 0.0).count();
        let neg = xs.iter().filter(|&&x| x < 0.0).count();
        Self { quantiles: q, frac_zero: zeros as f64 / n as f64, frac_negative: neg as f64 / n as f64 }
    }

    fn json(&self) -> Value {
        let q: serde_json::Map<String, Value> =
            LEVELS.iter().zip(self.quantiles).map(|(l, v)| (format!("q{}", (l * 100.0).round()), json!(v))).collect();
        json!({ "quantiles": q, "frac_zero": self.frac_zero, "frac_negative": self.frac_negative })
    }
}

/// What `--diagnose` records for one task.
#[derive(Clone, Debug)]
pub struct TaskDiagnostics {
    /// The task's name.
    pub name: String,
    /// Mean task loss (no penalty) over the task's training data at the start of the task.
    pub loss_start: f64,
    /// The same at the end of the task.
    pub loss_end: f64,
    /// `sum_i omega_i` at the end of the task (before consolidation), accumulated in f64.
    pub omega_sum: f64,
    /// The new term `omega / (Delta^2 + xi)`, before any relu.
    pub term: Distribution,
    /// `Omega` after consolidation.
    pub big_omega: Distribution,
    /// Mean over the task's steps of `penalty / (task loss + penalty)`.
    pub penalty_share_mean: f64,
    /// `penalty / (task loss + penalty)` at the task's last step.
    pub penalty_share_last: f64,
    /// `sum_i Omega_i |theta_i - theta*_i| / sum_i Omega_i` at the end of the task, with the
    /// importance and anchor of the earlier tasks (0 on the first task: no importance yet).
    pub weighted_drift: f64,
    /// `penalty share` sampled along the task: (step within the task, share).
    pub penalty_share_curve: Vec<(usize, f64)>,
}

impl TaskDiagnostics {
    /// `sum omega / (L_start - L_end)`: 1 when the path integral accounts for the loss drop.
    pub fn ratio(&self) -> f64 {
        self.omega_sum / (self.loss_start - self.loss_end)
    }

    /// The JSON object `--out` writes under `diagnostics`.
    pub fn json(&self) -> Value {
        json!({
            "task": self.name,
            "loss_start": self.loss_start,
            "loss_end": self.loss_end,
            "loss_drop": self.loss_start - self.loss_end,
            "omega_sum": self.omega_sum,
            "omega_sum_over_loss_drop": self.ratio(),
            "new_term_before_relu": self.term.json(),
            "big_omega_after": self.big_omega.json(),
            "penalty_share_mean": self.penalty_share_mean,
            "penalty_share_last": self.penalty_share_last,
            "weighted_drift": self.weighted_drift,
            "penalty_share_curve": self.penalty_share_curve,
        })
    }
}

/// The new importance term `omega_i / ((theta_i - theta*_i)^2 + xi)` of SI eq. (5), before any
/// relu (`theta_star` is the task's start point).
pub fn new_term(theta: &[f32], theta_star: &[f32], omega: &[f32], xi: f32) -> Vec<f32> {
    theta
        .iter()
        .zip(theta_star)
        .zip(omega)
        .map(|((t, s), w)| {
            let d = t - s;
            w / (d * d + xi)
        })
        .collect()
}

/// `sum_i Omega_i |theta_i - theta*_i| / sum_i Omega_i`, in f64 (0 when `Omega` sums to 0).
pub fn weighted_drift(theta: &[f32], theta_star: &[f32], big_omega: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for ((t, s), o) in theta.iter().zip(theta_star).zip(big_omega) {
        num += *o as f64 * (t - s).abs() as f64;
        den += *o as f64;
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// The penalty's share of the loss within one task, accumulated step by step.
#[derive(Clone, Debug, Default)]
pub struct ShareTracker {
    sum: f64,
    steps: usize,
    last: f64,
    curve: Vec<(usize, f64)>,
}

impl ShareTracker {
    /// Samples kept per task for the curve (every `max(1, steps / CURVE_POINTS)`-th step).
    pub const CURVE_POINTS: usize = 50;

    /// Records one step of a task of `task_steps` steps.
    pub fn record(&mut self, task_loss: f64, penalty: f64, task_steps: usize) {
        let total = task_loss + penalty;
        let share = if total > 0.0 { penalty / total } else { 0.0 };
        let every = (task_steps / Self::CURVE_POINTS).max(1);
        if self.steps % every == 0 {
            self.curve.push((self.steps, share));
        }
        self.sum += share;
        self.steps += 1;
        self.last = share;
    }

    /// (mean share, last share, curve), and a fresh tracker for the next task.
    pub fn take(&mut self) -> (f64, f64, Vec<(usize, f64)>) {
        let t = std::mem::take(self);
        (if t.steps == 0 { 0.0 } else { t.sum / t.steps as f64 }, t.last, t.curve)
    }
}

/// A readable table of the diagnostics (one row per task).
pub fn table(diags: &[TaskDiagnostics]) -> String {
    let mut s = String::from(
        "SI diagnostics (training data; path integral: sum omega against the task-loss drop)\n\
         task        L start    L end   L drop  sum omega  ratio   term<0  term=0  term q50   term q99  \
         Omega q50  Omega q99  pen share      drift\n",
    );
    for d in diags {
        s.push_str(&format!(
            "{:<10} {:>8.4} {:>8.4} {:>8.4} {:>10.4} {:>6.3} {:>7.1}% {:>6.1}% {:>9.2e} {:>10.2e} {:>10.2e} {:>10.2e} \
             {:>8.3}% {:>10.3e}\n",
            d.name,
            d.loss_start,
            d.loss_end,
            d.loss_start - d.loss_end,
            d.omega_sum,
            d.ratio(),
            100.0 * d.term.frac_negative,
            100.0 * d.term.frac_zero,
            d.term.quantiles[3],
            d.term.quantiles[5],
            d.big_omega.quantiles[3],
            d.big_omega.quantiles[5],
            100.0 * d.penalty_share_mean,
            d.weighted_drift,
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_quantiles_and_fractions() {
        let xs: Vec<f32> = (0..101).map(|i| i as f32 - 10.0).collect();
        let d = Distribution::of(&xs);
        assert_eq!(d.quantiles, [-10.0, -9.0, 15.0, 40.0, 65.0, 89.0, 90.0]);
        assert!((d.frac_zero - 1.0 / 101.0).abs() < 1e-12);
        assert!((d.frac_negative - 10.0 / 101.0).abs() < 1e-12);
        assert!(Distribution::of(&[]).quantiles[0].is_nan());
    }

    #[test]
    fn new_term_and_drift_follow_their_formulas() {
        let t = new_term(&[1.0, 0.0], &[0.0, 0.0], &[2.0, -1.0], 1.0);
        assert_eq!(t, vec![1.0, -1.0]);
        // |1-0| weighted 3, |0-2| weighted 1: (3 + 2) / 4.
        assert_eq!(weighted_drift(&[1.0, 0.0], &[0.0, 2.0], &[3.0, 1.0]), 1.25);
        assert_eq!(weighted_drift(&[1.0], &[0.0], &[0.0]), 0.0);
    }

    #[test]
    fn share_tracker_means_and_samples() {
        let mut s = ShareTracker::default();
        for i in 0..100 {
            s.record(1.0, if i < 50 { 0.0 } else { 1.0 }, 100);
        }
        let (mean, last, curve) = s.take();
        assert!((mean - 0.25).abs() < 1e-12, "{mean}");
        assert_eq!(last, 0.5);
        assert_eq!(curve.len(), 50);
        assert_eq!(curve[0], (0, 0.0));
        let (m2, _, c2) = s.take();
        assert_eq!((m2, c2.len()), (0.0, 0), "take resets");
    }
}
