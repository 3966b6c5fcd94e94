//! SI's state: three vectors (omega, Omega, theta*), whatever the number of tasks, and the
//! end-of-task consolidation (Zenke et al. 2017, eq. (5)) with each relu placement.

mod common;

use common::*;
use engram_si::{end_of_task, OmegaGrad, ReluPlacement, SiState, StepConfig};

#[test]
fn si_state_size_is_three_vectors_at_task_2_and_at_task_50() {
    let n = 10_000;
    let mut r = rng(1);
    let mut theta = uniform(&mut r, n, -1.0, 1.0);
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut si = SiState::new(n);
    si.begin_task(&theta);
    let expected = 3 * std::mem::size_of::<f32>() * n;
    assert_eq!(si.bytes(), expected);
    let mut g = vec![0.0f32; n];
    for task in 1..=50 {
        let target = uniform(&mut r, n, -1.0, 1.0);
        m.fill(0.0);
        v.fill(0.0);
        for t in 1..=5u64 {
            for i in 0..n {
                g[i] = theta[i] - target[i];
            }
            let cfg = StepConfig { optim: ADAM, c: 0.1, omega: Some(OmegaGrad::Task), t };
            let p = si.step(&mut theta, &g, &mut m, &mut v, &cfg);
            assert!(p.is_finite());
        }
        si.end_task(&theta, 1e-3, ReluPlacement::Official);
        assert!(si.omega.iter().all(|&w| w == 0.0), "omega is reset");
        assert_eq!(si.theta_star, theta, "theta* is the end of the task");
        if task == 2 || task == 50 {
            assert_eq!(si.bytes(), expected, "task {task}");
            assert_eq!((si.omega.len(), si.big_omega.len(), si.theta_star.len()), (n, n, n));
        }
    }
    assert!(si.big_omega.iter().any(|&o| o > 0.0), "importance was accumulated");
}

#[test]
fn end_of_task_relu_placements() {
    // Omega = 1; term = omega / (Delta^2 + xi) with Delta = 1, xi = 1: term = omega / 2.
    let theta = [2.0f32, 2.0, 2.0];
    let omega0 = [-6.0f32, -1.0, 4.0]; // terms -3, -0.5, 2
    let run = |relu| {
        let (mut omega, mut big_omega, mut theta_star) = (omega0.to_vec(), vec![1.0f32; 3], vec![1.0f32; 3]);
        end_of_task(&theta, &mut omega, &mut big_omega, &mut theta_star, 1.0, relu);
        assert_eq!(omega, vec![0.0; 3]);
        assert_eq!(theta_star, theta.to_vec());
        big_omega
    };
    assert_eq!(run(ReluPlacement::None), vec![-2.0, 0.5, 3.0]);
    assert_eq!(run(ReluPlacement::PerTaskTerm), vec![1.0, 1.0, 3.0]);
    assert_eq!(run(ReluPlacement::Accumulated), vec![0.0, 0.5, 3.0]);
    assert_eq!(ReluPlacement::Official, ReluPlacement::Accumulated);
    assert_eq!(ReluPlacement::default(), ReluPlacement::Official);
    assert!(matches!(ReluPlacement::Accumulated, ReluPlacement::Official));
}

#[test]
fn begin_task_anchors_theta_star_at_the_initialisation() {
    let theta = vec![0.5f32, -0.25, 3.0];
    let mut si = SiState::new(3);
    si.omega = vec![1.0; 3];
    si.begin_task(&theta);
    assert_eq!(si.theta_star, theta);
    assert_eq!(si.omega, vec![0.0; 3]);
    assert_eq!(si.big_omega, vec![0.0; 3]);
    assert_eq!(si.penalty(&[9.0, 9.0, 9.0], 1.0), 0.0, "Omega = 0 before the first consolidation");
}
