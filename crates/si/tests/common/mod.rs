//! Shared helpers of the engram-si integration tests.
#![allow(dead_code)]

use engram_si::{OmegaGrad, Optimizer, ReluPlacement};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn uniform(r: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

pub const ADAM: Optimizer = Optimizer::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
pub const SGD: Optimizer = Optimizer::Sgd { lr: 1e-2 };

/// Every flag combination: optimizer x penalty on/off x omega (off, task, total) x relu placement.
pub fn all_combinations() -> Vec<(Optimizer, f32, Option<OmegaGrad>, ReluPlacement)> {
    let mut out = Vec::new();
    for optimizer in [SGD, ADAM] {
        for c in [0.0, 0.5] {
            for omega in [None, Some(OmegaGrad::Task), Some(OmegaGrad::Total)] {
                for relu in [ReluPlacement::None, ReluPlacement::PerTaskTerm, ReluPlacement::Accumulated] {
                    out.push((optimizer, c, omega, relu));
                }
            }
        }
    }
    out
}

/// max_i |a_i - b_i| / max(|a_i|, |b_i|) (0 where both are 0); panics on a non-finite value.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        assert!(x.is_finite() && y.is_finite(), "non-finite value: {x} vs {y}");
        let scale = x.abs().max(y.abs()) as f64;
        if scale > 0.0 {
            worst = worst.max((*x as f64 - *y as f64).abs() / scale);
        }
    }
    worst
}

pub fn rel_diff64(a: f64, b: f64) -> f64 {
    let scale = a.abs().max(b.abs());
    if scale == 0.0 {
        0.0
    } else {
        (a - b).abs() / scale
    }
}

/// The gradient of the quadratic task loss `0.5 sum h_i (theta_i - a_i)^2`, plus a deterministic
/// per-step wobble so the steps are not all alike.
pub fn quad_grad(theta: &[f32], h: &[f32], a: &[f32], wobble: &[f32], step: usize, g: &mut [f32]) {
    let s = ((step % 7) as f32 - 3.0) * 0.01;
    for i in 0..theta.len() {
        g[i] = h[i] * (theta[i] - a[i]) + s * wobble[i];
    }
}
