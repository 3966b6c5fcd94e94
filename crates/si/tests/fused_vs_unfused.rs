//! The fused step against the unfused reference (separate passes, full-size temporaries):
//! same parameters, moments, omega, Omega, theta* and penalty, for SGD and Adam and every flag
//! combination, over many steps and several task boundaries.

mod common;

use common::*;
use engram_si::reference::{unfused_end_of_task, unfused_step_f32, unfused_step_f32_with, Scratch};
use engram_si::{end_of_task, fused_step_f32, OmegaGrad, Optimizer, ReluPlacement, Slices, StepConfig, CHUNK};

/// Everything one side of the comparison owns.
#[derive(Clone)]
struct World {
    theta: Vec<f32>,
    g: Vec<f32>,
    big_omega: Vec<f32>,
    theta_star: Vec<f32>,
    omega: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    t: u64,
}

impl World {
    fn new(n: usize, seed: u64) -> World {
        let mut r = rng(seed);
        let theta = uniform(&mut r, n, -1.0, 1.0);
        let theta_star: Vec<f32> = theta.iter().zip(uniform(&mut r, n, -0.1, 0.1)).map(|(t, e)| t + e).collect();
        World {
            g: vec![0.0; n],
            big_omega: uniform(&mut r, n, 0.0, 1.0),
            theta_star,
            theta,
            omega: vec![0.0; n],
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// The slices for `cfg`, passing empty slices wherever the configuration allows it.
    fn slices(&mut self, cfg: &StepConfig) -> Slices<'_> {
        let pen = cfg.c != 0.0;
        let adam = matches!(cfg.optimizer, Optimizer::Adam { .. });
        Slices {
            theta: &mut self.theta,
            g: &self.g,
            big_omega: if pen { &self.big_omega } else { &[] },
            theta_star: if pen { &self.theta_star } else { &[] },
            omega: if cfg.omega.is_some() { &mut self.omega } else { &mut [] },
            m: if adam { &mut self.m } else { &mut [] },
            v: if adam { &mut self.v } else { &mut [] },
        }
    }

    fn new_task(&mut self) {
        self.m.fill(0.0);
        self.v.fill(0.0);
        self.t = 0;
    }
}

struct Worst {
    rel: f64,
    identical: bool,
}

impl Worst {
    fn check(&mut self, a: &World, b: &World, pa: f64, pb: f64) {
        for (x, y) in [
            (&a.theta, &b.theta),
            (&a.big_omega, &b.big_omega),
            (&a.theta_star, &b.theta_star),
            (&a.omega, &b.omega),
            (&a.m, &b.m),
            (&a.v, &b.v),
        ] {
            self.rel = self.rel.max(max_rel_diff(x, y));
            self.identical &= x.iter().zip(y.iter()).all(|(p, q)| p.to_bits() == q.to_bits());
        }
        assert!(pa.is_finite() && pb.is_finite());
        self.rel = self.rel.max(rel_diff64(pa, pb));
    }
}

/// Runs `steps` steps with a task boundary every `task_len` steps; returns the worst relative
/// difference and whether the vectors stayed bit-identical.
#[allow(clippy::too_many_arguments)]
fn compare(
    n: usize,
    steps: usize,
    task_len: usize,
    optimizer: Optimizer,
    c: f32,
    omega: Option<OmegaGrad>,
    relu: ReluPlacement,
    seed: u64,
) -> Worst {
    let mut fused = World::new(n, seed);
    let mut unfused = fused.clone();
    let mut scratch = Scratch::new(n);
    let mut r = rng(seed ^ 0x5eed);
    let h = uniform(&mut r, n, 0.5, 2.0);
    let wobble = uniform(&mut r, n, -1.0, 1.0);
    let mut target = uniform(&mut r, n, -1.0, 1.0);
    let mut worst = Worst { rel: 0.0, identical: true };
    for step in 0..steps {
        if step > 0 && step % task_len == 0 {
            end_of_task(&fused.theta, &mut fused.omega, &mut fused.big_omega, &mut fused.theta_star, 0.1, relu);
            unfused_end_of_task(
                &unfused.theta,
                &mut unfused.omega,
                &mut unfused.big_omega,
                &mut unfused.theta_star,
                0.1,
                relu,
            );
            fused.new_task();
            unfused.new_task();
            target = uniform(&mut r, n, -1.0, 1.0);
        }
        for w in [&mut fused, &mut unfused] {
            w.t += 1;
            quad_grad(&w.theta, &h, &target, &wobble, step, &mut w.g);
        }
        let cfg = StepConfig { optimizer, c, omega, t: fused.t };
        let pf = fused_step_f32(fused.slices(&cfg), &cfg);
        // Alternate between fresh temporaries and reused ones: both must agree.
        let pu = if step % 2 == 0 {
            unfused_step_f32(unfused.slices(&cfg), &cfg)
        } else {
            unfused_step_f32_with(unfused.slices(&cfg), &cfg, &mut scratch)
        };
        worst.check(&fused, &unfused, pf, pu);
    }
    worst
}

#[test]
fn fused_equals_unfused_over_1000_steps_and_task_boundaries_for_every_flag_combination() {
    for (k, (optimizer, c, omega, relu)) in all_combinations().into_iter().enumerate() {
        // 3001 = 2 full tiles + a partial one whose length is not a multiple of the 8 lanes.
        let w = compare(3001, 1000, 250, optimizer, c, omega, relu, 100 + k as u64);
        assert!(
            w.rel <= 1e-5,
            "{optimizer:?} c={c} omega={omega:?} relu={relu:?}: max relative difference {:e}",
            w.rel
        );
    }
}

#[test]
fn fused_equals_unfused_across_chunk_boundaries_for_every_flag_combination() {
    for (k, (optimizer, c, omega, relu)) in all_combinations().into_iter().enumerate() {
        let w = compare(2 * CHUNK + 1001, 24, 8, optimizer, c, omega, relu, 900 + k as u64);
        assert!(
            w.rel <= 1e-5,
            "{optimizer:?} c={c} omega={omega:?} relu={relu:?}: max relative difference {:e}",
            w.rel
        );
    }
}

#[test]
fn fused_and_unfused_parameters_moments_and_omega_are_bit_identical() {
    // The reference performs the fused kernel's operations one by one (no reassociation, no
    // FMA contraction in Rust), so everything but the penalty's summation order is identical.
    for (k, (optimizer, c, omega, relu)) in all_combinations().into_iter().enumerate() {
        let w = compare(1000, 200, 50, optimizer, c, omega, relu, 5000 + k as u64);
        assert!(w.identical, "{optimizer:?} c={c} omega={omega:?} relu={relu:?}: not bit-identical");
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn optimizer() -> impl Strategy<Value = Optimizer> {
        prop_oneof![
            (1e-4f32..1e-1).prop_map(|lr| Optimizer::Sgd { lr }),
            (1e-4f32..1e-2, 0.5f32..0.99, 0.9f32..0.9999, 1e-8f32..1e-3)
                .prop_map(|(lr, beta1, beta2, eps)| Optimizer::Adam { lr, beta1, beta2, eps }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn fused_equals_unfused_for_random_sizes_and_hyperparameters(
            n in 0usize..40_000,
            optimizer in optimizer(),
            c in prop_oneof![Just(0.0f32), 1e-3f32..2.0],
            omega in prop_oneof![Just(None), Just(Some(OmegaGrad::Task)), Just(Some(OmegaGrad::Total))],
            relu in prop_oneof![Just(ReluPlacement::None), Just(ReluPlacement::PerTaskTerm), Just(ReluPlacement::Accumulated)],
            seed in any::<u64>(),
        ) {
            let w = compare(n, 6, 3, optimizer, c, omega, relu, seed);
            prop_assert!(w.rel <= 1e-5, "max relative difference {:e}", w.rel);
        }
    }
}
