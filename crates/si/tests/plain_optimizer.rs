//! With c = 0 and no importance accumulation the fused step is plain SGD / Adam, bit for bit,
//! against textbook implementations written here (Adam: Kingma & Ba 2015, Algorithm 1, in
//! PyTorch's bias-corrected arithmetic).

mod common;

use common::*;
use engram_si::{fused_step_f32, OmegaGrad, Optimizer, Slices, StepConfig};

/// PyTorch's single-tensor Adam, one element at a time.
#[allow(clippy::too_many_arguments)]
fn textbook_adam(
    theta: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    t: u64,
) {
    let bias_correction1 = 1.0 - (b1 as f64).powf(t as f64);
    let bias_correction2 = 1.0 - (b2 as f64).powf(t as f64);
    let step_size = (lr as f64 / bias_correction1) as f32;
    let bias_correction2_sqrt = bias_correction2.sqrt() as f32;
    for i in 0..theta.len() {
        // Subnormal moments are flushed to zero (engram_si::flush_subnormal documents why).
        m[i] = ftz(m[i] * b1 + (1.0 - b1) * g[i]);
        v[i] = ftz(v[i] * b2 + (1.0 - b2) * g[i] * g[i]);
        let denom = v[i].sqrt() / bias_correction2_sqrt + eps;
        theta[i] -= step_size * (m[i] / denom);
    }
}

fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0
    } else {
        x
    }
}

fn textbook_sgd(theta: &mut [f32], g: &[f32], lr: f32) {
    for (t, g) in theta.iter_mut().zip(g) {
        *t -= lr * g;
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// `full`: pass full-length (unused) Omega, theta*, omega instead of empty slices.
/// `accumulate`: switch importance accumulation on (it must not change the step).
fn check(optimizer: Optimizer, full: bool, accumulate: bool) {
    let n = 50_000;
    let mut r = rng(7);
    let mut theta = uniform(&mut r, n, -1.0, 1.0);
    let mut theta_ref = theta.clone();
    let big_omega = uniform(&mut r, n, 0.0, 5.0);
    let theta_star = uniform(&mut r, n, -1.0, 1.0);
    let mut omega = vec![0.0; n];
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    let (mut m_ref, mut v_ref) = (vec![0.0; n], vec![0.0; n]);
    for t in 1..=100u64 {
        let g = uniform(&mut r, n, -1.0, 1.0);
        let cfg = StepConfig { optimizer, c: 0.0, omega: accumulate.then_some(OmegaGrad::Total), t };
        let adam = matches!(optimizer, Optimizer::Adam { .. });
        let p = fused_step_f32(
            Slices {
                theta: &mut theta,
                g: &g,
                big_omega: if full { &big_omega } else { &[] },
                theta_star: if full { &theta_star } else { &[] },
                omega: if full || accumulate { &mut omega } else { &mut [] },
                m: if adam || full { &mut m } else { &mut [] },
                v: if adam || full { &mut v } else { &mut [] },
            },
            &cfg,
        );
        assert_eq!(p, 0.0, "c = 0: no penalty");
        match optimizer {
            Optimizer::Sgd { lr } => textbook_sgd(&mut theta_ref, &g, lr),
            Optimizer::Adam { lr, beta1, beta2, eps } => {
                textbook_adam(&mut theta_ref, &g, &mut m_ref, &mut v_ref, lr, beta1, beta2, eps, t)
            }
        }
        assert_eq!(bits(&theta), bits(&theta_ref), "{optimizer:?} step {t}: theta differs");
        if adam {
            assert_eq!(bits(&m), bits(&m_ref), "{optimizer:?} step {t}: m differs");
            assert_eq!(bits(&v), bits(&v_ref), "{optimizer:?} step {t}: v differs");
        }
    }
}

#[test]
fn c0_without_omega_is_textbook_adam_bit_for_bit() {
    check(ADAM, false, false);
    check(Optimizer::Adam { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6 }, false, false);
}

#[test]
fn c0_without_omega_is_textbook_sgd_bit_for_bit() {
    check(SGD, false, false);
}

#[test]
fn c0_with_unused_full_length_slices_is_still_plain_adam_and_sgd() {
    check(ADAM, true, false);
    check(SGD, true, false);
}

#[test]
fn accumulating_omega_does_not_change_the_plain_step() {
    check(ADAM, false, true);
    check(SGD, true, true);
}

#[test]
fn plain_slices_constructor_runs_plain_sgd() {
    let mut theta = vec![1.0f32, -2.0, 3.0];
    let g = [0.5f32, 0.25, -1.0];
    let cfg = StepConfig { optimizer: Optimizer::Sgd { lr: 0.1 }, c: 0.0, omega: None, t: 1 };
    fused_step_f32(Slices::plain(&mut theta, &g, &mut [], &mut []), &cfg);
    assert_eq!(theta, vec![1.0 - 0.1 * 0.5, -2.0 - 0.1 * 0.25, 3.0 + 0.1 * 1.0]);
}

#[test]
#[should_panic(expected = "big_omega")]
fn penalty_without_importance_slice_panics() {
    let mut theta = vec![0.0f32; 4];
    let cfg = StepConfig { optimizer: SGD, c: 1.0, omega: None, t: 1 };
    fused_step_f32(Slices::plain(&mut theta, &[0.0; 4], &mut [], &mut []), &cfg);
}

#[test]
#[should_panic(expected = "`m`")]
fn adam_without_moments_panics() {
    let mut theta = vec![0.0f32; 4];
    let cfg = StepConfig { optimizer: ADAM, c: 0.0, omega: None, t: 1 };
    fused_step_f32(Slices::plain(&mut theta, &[0.0; 4], &mut [], &mut []), &cfg);
}

#[test]
#[should_panic(expected = "1-based")]
fn adam_step_zero_panics() {
    let mut theta = vec![0.0f32; 4];
    let (mut m, mut v) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let cfg = StepConfig { optimizer: ADAM, c: 0.0, omega: None, t: 0 };
    fused_step_f32(Slices::plain(&mut theta, &[0.0; 4], &mut m, &mut v), &cfg);
}

/// Adam's moments of a parameter whose gradient stops (g = 0 after one step) decay
/// geometrically: m by beta1 per step, reaching the subnormal range after ~800 steps. The
/// fused step flushes them to zero instead (engram_si::flush_subnormal), so no subnormal is
/// ever stored, while the parameter ends where unflushed Adam puts it (the flushed tail moves
/// it by less than 1e-30).
#[test]
fn decaying_adam_moments_are_flushed_not_subnormal() {
    let n = 4;
    let mut theta = vec![0.5f32; n];
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    let (mut theta_raw, mut m_raw, mut v_raw) = (theta.clone(), m.clone(), v.clone());
    let mut saw_subnormal = false;
    for t in 1..=2_000u64 {
        let g = if t == 1 { vec![1e-3f32, -2e-3, 5e-2, 1.0] } else { vec![0.0; n] };
        let cfg = StepConfig { optimizer: ADAM, c: 0.0, omega: None, t };
        fused_step_f32(Slices::plain(&mut theta, &g, &mut m, &mut v), &cfg);
        assert!(m.iter().chain(&v).all(|x| !x.is_subnormal()), "step {t}: subnormal moment stored");
        // Unflushed Adam, for comparison.
        let Optimizer::Adam { lr, beta1, beta2, eps } = ADAM else { unreachable!() };
        let (step, bc2) = engram_si::adam_scalars(lr, beta1, beta2, t);
        for i in 0..n {
            m_raw[i] = beta1 * m_raw[i] + (1.0 - beta1) * g[i];
            v_raw[i] = beta2 * v_raw[i] + (1.0 - beta2) * g[i] * g[i];
            theta_raw[i] -= step * (m_raw[i] / (v_raw[i].sqrt() / bc2 + eps));
        }
        saw_subnormal |= m_raw.iter().any(|x| x.is_subnormal());
    }
    assert!(saw_subnormal, "the unflushed moments did reach the subnormal range");
    assert_eq!(m, vec![0.0; n], "m decayed to exactly zero");
    assert_eq!(bits(&theta), bits(&theta_raw), "flushing does not move the parameters");
}
