//! SI's state on a backend: three vectors (omega, Omega, theta*), whatever the number of tasks,
//! and the end-of-task consolidation (Zenke et al. 2017, eq. (5)) with each relu placement.

mod common;

use common::*;
use engram_si::{end_of_task, OmegaGrad, OptimizerState, PenaltyState, ReluPlacement};
use engram_tape::cpu::Cpu;
use engram_tape::{Backend, View, ViewMut};

fn host(be: &Cpu<f32>, buf: &Vec<f32>) -> Vec<f32> {
    be.download(View::row_of(be, buf)).unwrap()
}

#[test]
fn si_state_size_is_three_vectors_at_task_2_and_at_task_50() {
    let be = Cpu::<f32>::new();
    let n = 10_000;
    let mut r = rng(1);
    let mut theta = be.upload(&uniform(&mut r, n, -1.0, 1.0)).unwrap();
    let mut si = PenaltyState::new(&be, &theta, true).unwrap();
    let mut opt = OptimizerState::new(&be, ADAM, n).unwrap();
    let expected = 3 * std::mem::size_of::<f32>() * n;
    assert_eq!(si.bytes(&be), expected);
    let mut penalty = be.alloc::<f64>(1).unwrap();
    for task in 1..=50 {
        let target = uniform(&mut r, n, -1.0, 1.0);
        opt.reset(&be).unwrap();
        for _ in 1..=5u64 {
            let th = host(&be, &theta);
            let g = be.upload(&th.iter().zip(&target).map(|(t, a)| t - a).collect::<Vec<f32>>()).unwrap();
            let out = ViewMut::new(&mut penalty, 0, 1, 1);
            opt.step(&be, &mut theta, &g, Some(&mut si), 0.1, Some(OmegaGrad::Task), out).unwrap();
            assert!(penalty[0].is_finite());
        }
        si.end_task_si(&be, &theta, 1e-3, ReluPlacement::Official).unwrap();
        assert!(host(&be, si.omega.as_ref().unwrap()).iter().all(|&w| w == 0.0), "omega is reset");
        assert_eq!(host(&be, &si.theta_star), host(&be, &theta), "theta* is the end of the task");
        if task == 2 || task == 50 {
            assert_eq!(si.bytes(&be), expected, "task {task}");
        }
    }
    assert!(host(&be, &si.big_omega).iter().any(|&o| o > 0.0), "importance was accumulated");
    assert!(si.is_active(&be).unwrap());
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
fn a_new_state_is_anchored_at_the_initialisation_with_no_penalty() {
    let be = Cpu::<f32>::new();
    let theta = be.upload(&[0.5f32, -0.25, 3.0]).unwrap();
    let mut si = PenaltyState::new(&be, &theta, true).unwrap();
    assert_eq!(host(&be, &si.theta_star), vec![0.5, -0.25, 3.0]);
    assert_eq!(host(&be, si.omega.as_ref().unwrap()), vec![0.0; 3]);
    assert_eq!(host(&be, &si.big_omega), vec![0.0; 3]);
    assert!(!si.is_active(&be).unwrap());
    let far = be.upload(&[9.0f32, 9.0, 9.0]).unwrap();
    let mut out = be.alloc::<f64>(1).unwrap();
    si.penalty(&be, &far, 1.0, ViewMut::new(&mut out, 0, 1, 1)).unwrap();
    assert_eq!(out[0], 0.0, "Omega = 0 before the first consolidation");
    // begin_task re-anchors and clears omega.
    si.omega.as_mut().unwrap().fill(1.0);
    si.begin_task(&be, &far).unwrap();
    assert_eq!(host(&be, &si.theta_star), vec![9.0; 3]);
    assert_eq!(host(&be, si.omega.as_ref().unwrap()), vec![0.0; 3]);
}
