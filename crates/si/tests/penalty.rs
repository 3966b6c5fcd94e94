//! The penalty value c * sum_i Omega_i (theta_i - theta*_i)^2 (SI eq. (4)), evaluated before the
//! step and reduced in f64, against a straightforward f64 reference.

mod common;

use common::*;
use engram_si::{fused_step_f32, penalty_f32, OmegaGrad, Slices, StepConfig};

/// The reference: every operation in f64, one sequential sum.
fn penalty_f64(theta: &[f32], big_omega: &[f32], theta_star: &[f32], c: f32) -> f64 {
    let mut s = 0.0f64;
    for i in 0..theta.len() {
        let d = theta[i] as f64 - theta_star[i] as f64;
        s += big_omega[i] as f64 * d * d;
    }
    c as f64 * s
}

#[test]
fn penalty_reduction_equals_f64_reference_within_1e_6() {
    for (k, &n) in [1usize, 7, 8, 1023, 1025, 16_384, 16_385, 100_003, 1_000_000].iter().enumerate() {
        let mut r = rng(40 + k as u64);
        // Importances spanning six orders of magnitude, as real Omegas do.
        let big_omega: Vec<f32> = uniform(&mut r, n, -6.0, 0.0).iter().map(|e| 10f32.powf(*e)).collect();
        let theta = uniform(&mut r, n, -1.0, 1.0);
        let theta_star: Vec<f32> = theta.iter().zip(uniform(&mut r, n, -0.5, 0.5)).map(|(t, e)| t + e).collect();
        let c = 0.37;
        let want = penalty_f64(&theta, &big_omega, &theta_star, c);
        let got = penalty_f32(&theta, &big_omega, &theta_star, c);
        assert!(rel_diff64(got, want) <= 1e-6, "n={n}: penalty_f32 {got} vs f64 {want}");

        // The fused step returns the same value, taken before it moves theta.
        let mut th = theta.clone();
        let g = uniform(&mut r, n, -1.0, 1.0);
        let (mut omega, mut m, mut v) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let cfg = StepConfig { optimizer: ADAM, c, omega: Some(OmegaGrad::Task), t: 1 };
        let p = fused_step_f32(
            Slices {
                theta: &mut th,
                g: &g,
                big_omega: &big_omega,
                theta_star: &theta_star,
                omega: &mut omega,
                m: &mut m,
                v: &mut v,
            },
            &cfg,
        );
        assert!(rel_diff64(p, want) <= 1e-6, "n={n}: fused step penalty {p} vs f64 {want}");
        assert_eq!(p, got, "n={n}: fused step and penalty_f32 reduce in the same order");
        assert_ne!(th, theta, "the step moved theta");
    }
}

#[test]
fn penalty_is_deterministic_whatever_the_number_of_threads() {
    let n = 300_001;
    let mut r = rng(3);
    let big_omega = uniform(&mut r, n, 0.0, 1.0);
    let theta = uniform(&mut r, n, -1.0, 1.0);
    let theta_star = uniform(&mut r, n, -1.0, 1.0);
    let g = uniform(&mut r, n, -1.0, 1.0);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut th = theta.clone();
            let mut omega = vec![0.0; n];
            let cfg = StepConfig { optimizer: SGD, c: 2.0, omega: Some(OmegaGrad::Total), t: 1 };
            let p = fused_step_f32(
                Slices {
                    theta: &mut th,
                    g: &g,
                    big_omega: &big_omega,
                    theta_star: &theta_star,
                    omega: &mut omega,
                    m: &mut [],
                    v: &mut [],
                },
                &cfg,
            );
            (p.to_bits(), penalty_f32(&theta, &big_omega, &theta_star, 2.0).to_bits(), th)
        })
    };
    let one = run(1);
    for threads in [2, 3, 5] {
        assert_eq!(run(threads), one, "{threads} threads differ from 1 thread");
    }
}

#[test]
fn zero_strength_means_zero_penalty_and_no_penalty_gradient() {
    let theta = vec![1.0f32; 10];
    let big_omega = vec![1.0f32; 10];
    let theta_star = vec![0.0f32; 10];
    assert_eq!(penalty_f32(&theta, &big_omega, &theta_star, 0.0), 0.0);
    assert_eq!(penalty_f32(&theta, &big_omega, &theta_star, 1.5), 15.0);
    // theta - theta* = 1, Omega = 1, c = 1.5: G = g + 2 c Omega d = g + 3 (no 1/2 factor).
    let mut th = theta.clone();
    let cfg = StepConfig { optimizer: engram_si::Optimizer::Sgd { lr: 1.0 }, c: 1.5, omega: None, t: 1 };
    fused_step_f32(
        Slices {
            theta: &mut th,
            g: &[0.5; 10],
            big_omega: &big_omega,
            theta_star: &theta_star,
            omega: &mut [],
            m: &mut [],
            v: &mut [],
        },
        &cfg,
    );
    assert!(th.iter().all(|&t| t == 1.0 - 3.5));
}
