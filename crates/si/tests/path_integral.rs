//! SI's path integral (Zenke et al. 2017, eq. (3)): with plain SGD and a small step, the sum
//! of omega over a task approximates the drop of the task loss,
//! sum_i omega_i = -sum_k g(k) . delta(k) ~ L(theta_start) - L(theta_end).

mod common;

use common::*;
use engram_si::{fused_step_f32, penalty_f32, OmegaGrad, Optimizer, Slices, StepConfig};

/// L(theta) = 0.5 sum_i h_i (theta_i - a_i)^2, in f64.
fn loss(theta: &[f32], h: &[f32], a: &[f32]) -> f64 {
    theta.iter().zip(h).zip(a).map(|((t, h), a)| 0.5 * *h as f64 * (*t as f64 - *a as f64).powi(2)).sum()
}

#[test]
fn omega_sums_to_the_loss_drop_within_2_percent_on_a_quadratic_with_small_step_sgd() {
    let n = 4_000;
    let mut r = rng(11);
    let h = uniform(&mut r, n, 0.5, 2.0);
    let a = uniform(&mut r, n, -1.0, 1.0);
    let mut theta = uniform(&mut r, n, -2.0, 2.0);
    let mut omega = vec![0.0f32; n];
    let mut g = vec![0.0f32; n];
    let start = loss(&theta, &h, &a);
    let cfg = StepConfig { optimizer: Optimizer::Sgd { lr: 2e-3 }, c: 0.0, omega: Some(OmegaGrad::Task), t: 1 };
    for _ in 0..1_000 {
        for i in 0..n {
            g[i] = h[i] * (theta[i] - a[i]);
        }
        fused_step_f32(
            Slices {
                theta: &mut theta,
                g: &g,
                big_omega: &[],
                theta_star: &[],
                omega: &mut omega,
                m: &mut [],
                v: &mut [],
            },
            &cfg,
        );
    }
    let drop = start - loss(&theta, &h, &a);
    let integral: f64 = omega.iter().map(|&w| w as f64).sum();
    assert!(drop > 0.5 * start, "the task was mostly learned: drop {drop} of {start}");
    assert!(rel_diff64(integral, drop) <= 0.02, "sum omega {integral} vs loss drop {drop}");
    // Per parameter, too: omega_i is the share of the drop due to parameter i (all positive here).
    assert!(omega.iter().all(|&w| w > 0.0));
}

#[test]
fn omega_with_the_total_gradient_integrates_the_total_loss_drop() {
    // With OmegaGrad::Total and a penalty, omega integrates the drop of the total loss
    // L_task + c sum Omega (theta - theta*)^2 instead.
    let n = 2_000;
    let mut r = rng(12);
    let h = uniform(&mut r, n, 0.5, 2.0);
    let a = uniform(&mut r, n, -1.0, 1.0);
    let mut theta = uniform(&mut r, n, -2.0, 2.0);
    let theta_star = uniform(&mut r, n, -1.0, 1.0);
    let big_omega = uniform(&mut r, n, 0.0, 1.0);
    let mut omega = vec![0.0f32; n];
    let c = 0.3;
    let total = |theta: &[f32]| loss(theta, &h, &a) + penalty_f32(theta, &big_omega, &theta_star, c);
    let start = total(&theta);
    let mut g = vec![0.0f32; n];
    let cfg = StepConfig { optimizer: Optimizer::Sgd { lr: 1e-3 }, c, omega: Some(OmegaGrad::Total), t: 1 };
    for _ in 0..1_500 {
        for i in 0..n {
            g[i] = h[i] * (theta[i] - a[i]);
        }
        let slices = Slices {
            theta: &mut theta,
            g: &g,
            big_omega: &big_omega,
            theta_star: &theta_star,
            omega: &mut omega,
            m: &mut [],
            v: &mut [],
        };
        fused_step_f32(slices, &cfg);
    }
    let drop = start - total(&theta);
    let integral: f64 = omega.iter().map(|&w| w as f64).sum();
    assert!(rel_diff64(integral, drop) <= 0.02, "sum omega {integral} vs total loss drop {drop}");
}
