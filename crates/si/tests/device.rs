//! The consolidation kernels of a backend against the CPU slice kernels of this crate, one test
//! body per kernel, run per device (`engram_tape::test_device!`): `kernel::cpu` on the CPU
//! backend, `kernel::cuda` on GPU 0 (with `--features cuda`; elsewhere one skip line).
//!
//! The fused step runs every variant (SGD and Adam, penalty on and off, no importance
//! accumulation or the task or total gradient, each relu placement at the task ends), over
//! steps and task boundaries, on sizes that leave a partial block and several grid strides.
//! The device must match the CPU bit for bit in theta, m, v, omega, Omega and theta* (same
//! operations in the same order, no FMA contraction); the penalty, an f64 sum in another order,
//! within 1e-12 relative.

mod common;

use common::*;
use engram_si::{
    consolidate_f32, end_of_task, fused_step_f32, importance_mean_f32, penalty_f32, prev_step_accumulate_f32,
    Consolidation, ConsolidationKernels, Optimizer, Slices, StepBuffers, StepConfig,
};
use engram_tape::{test_device, Tensor};

fn up<B: ConsolidationKernels>(be: &B, v: &[f32]) -> Tensor<B> {
    Tensor::from_host(be, 1, v.len(), v).unwrap()
}

fn down<B: ConsolidationKernels>(be: &B, t: &Tensor<B>) -> Vec<f32> {
    t.to_host(be).unwrap()
}

fn penalty_of<B: ConsolidationKernels>(be: &B, t: &Tensor<B, f64>) -> f64 {
    t.to_host(be).unwrap()[0]
}

fn same_bits(what: &str, device: &[f32], cpu: &[f32]) {
    assert_eq!(device.len(), cpu.len(), "{what}: length");
    if let Some(i) = (0..cpu.len()).find(|&i| device[i].to_bits() != cpu[i].to_bits()) {
        panic!("{what}: element {i} is {} on the device, {} on the CPU", device[i], cpu[i]);
    }
}

fn close64(what: &str, device: f64, cpu: f64) {
    assert!((device - cpu).abs() <= 1e-12 * cpu.abs().max(1e-300), "{what}: {device} on the device, {cpu} on the CPU");
}

/// The fused step, every variant, 12 steps with a task end (SI's consolidation) every 4.
fn fused_step<B: ConsolidationKernels>(be: &B) {
    for n in [1usize, 1000, 300_001] {
        for (k, (optimizer, c, omega, relu)) in all_combinations().into_iter().enumerate() {
            let what = format!("n {n}, {optimizer:?} c {c} omega {omega:?} relu {relu:?}");
            let mut r = rng(77 + k as u64);
            let mut theta = uniform(&mut r, n, -1.0, 1.0);
            let mut big_omega = uniform(&mut r, n, 0.0, 1.0);
            let mut theta_star: Vec<f32> = theta.iter().map(|t| t + 0.05).collect();
            let (mut w, mut m, mut v) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
            let (h, wobble) = (uniform(&mut r, n, 0.5, 2.0), uniform(&mut r, n, -1.0, 1.0));
            let mut target = uniform(&mut r, n, -1.0, 1.0);
            let mut g = vec![0f32; n];
            let (mut d_theta, mut d_g) = (up(be, &theta), up(be, &g));
            let (mut d_big_omega, mut d_theta_star) = (up(be, &big_omega), up(be, &theta_star));
            let (mut d_w, mut d_m, mut d_v) = (up(be, &w), up(be, &m), up(be, &v));
            let mut d_pen = Tensor::<B, f64>::zeros(be, 1, 1).unwrap();
            let mut t = 0;
            for step in 0..12 {
                if step > 0 && step % 4 == 0 {
                    end_of_task(&theta, &mut w, &mut big_omega, &mut theta_star, 0.1, relu);
                    be.si_end_of_task(
                        d_theta.view(),
                        d_w.view_mut(),
                        d_big_omega.view_mut(),
                        d_theta_star.view_mut(),
                        0.1,
                        relu,
                    )
                    .unwrap();
                    m.fill(0.0);
                    v.fill(0.0);
                    t = 0;
                    be.fill(d_m.view_mut(), 0.0).unwrap();
                    be.fill(d_v.view_mut(), 0.0).unwrap();
                    target = uniform(&mut r, n, -1.0, 1.0);
                }
                t += 1;
                quad_grad(&theta, &h, &target, &wobble, step, &mut g);
                be.upload_into(&g, d_g.view_mut()).unwrap();
                let cfg = StepConfig { optimizer, c, omega, t };
                let adam = matches!(optimizer, Optimizer::Adam { .. });
                let slices = Slices {
                    theta: &mut theta,
                    g: &g,
                    big_omega: &big_omega,
                    theta_star: &theta_star,
                    omega: &mut w,
                    m: &mut m,
                    v: &mut v,
                };
                let p_cpu = fused_step_f32(slices, &cfg);
                let buffers = StepBuffers {
                    theta: d_theta.view_mut(),
                    g: d_g.view(),
                    penalty: (c != 0.0).then(|| (d_big_omega.view(), d_theta_star.view())),
                    omega: omega.is_some().then(|| d_w.view_mut()),
                    moments: adam.then(|| (d_m.view_mut(), d_v.view_mut())),
                };
                be.fused_step(buffers, &cfg, d_pen.view_mut()).unwrap();
                let at = format!("{what}, step {step}");
                close64(&format!("penalty, {at}"), penalty_of(be, &d_pen), p_cpu);
                same_bits(&format!("theta, {at}"), &down(be, &d_theta), &theta);
                same_bits(&format!("omega, {at}"), &down(be, &d_w), &w);
                same_bits(&format!("m, {at}"), &down(be, &d_m), &m);
                same_bits(&format!("v, {at}"), &down(be, &d_v), &v);
                same_bits(&format!("Omega, {at}"), &down(be, &d_big_omega), &big_omega);
                same_bits(&format!("theta*, {at}"), &down(be, &d_theta_star), &theta_star);
            }
        }
    }
}

/// The penalty alone, for several `c` (0 skips it), on sizes up to several grid strides.
fn penalty<B: ConsolidationKernels>(be: &B) {
    for (k, n) in [0usize, 1, 255, 257, 70_001, 600_000].into_iter().enumerate() {
        let mut r = rng(k as u64);
        let (theta, big_omega, theta_star) =
            (uniform(&mut r, n, -1.0, 1.0), uniform(&mut r, n, 0.0, 3.0), uniform(&mut r, n, -1.0, 1.0));
        for c in [0.0f32, 0.1, 7.5] {
            let mut out = Tensor::<B, f64>::zeros(be, 1, 1).unwrap();
            let (a, b, s) = (up(be, &theta), up(be, &big_omega), up(be, &theta_star));
            be.penalty(a.view(), b.view(), s.view(), c, out.view_mut()).unwrap();
            let want = penalty_f32(&theta, &big_omega, &theta_star, c);
            close64(&format!("penalty n {n} c {c}"), penalty_of(be, &out), want);
            if c == 0.0 {
                assert_eq!(penalty_of(be, &out), 0.0);
            }
        }
    }
}

/// `consolidate` under each rule (L2, EWC, online EWC, MAS), twice in a row.
fn consolidate<B: ConsolidationKernels>(be: &B) {
    let n = 3001;
    for rule in
        [Consolidation::L2, Consolidation::EwcSeparate, Consolidation::EwcOnline { gamma: 0.7 }, Consolidation::Mas]
    {
        let mut r = rng(5);
        let mut big_omega = uniform(&mut r, n, 0.0, 1.0);
        // Some importances 0, so that EWC's `theta` fallback where `Omega' = 0` is exercised.
        big_omega.iter_mut().step_by(7).for_each(|o| *o = 0.0);
        let mut theta_star = uniform(&mut r, n, -1.0, 1.0);
        let (mut d_o, mut d_s) = (up(be, &big_omega), up(be, &theta_star));
        for round in 0..2 {
            let theta = uniform(&mut r, n, -1.0, 1.0);
            let mut new = uniform(&mut r, n, 0.0, 2.0);
            new.iter_mut().step_by(5).for_each(|f| *f = 0.0);
            consolidate_f32(rule, &theta, &new, &mut big_omega, &mut theta_star);
            let (d_t, d_new) = (up(be, &theta), up(be, &new));
            let est = (rule != Consolidation::L2).then(|| d_new.view());
            be.consolidate(rule, d_t.view(), est, d_o.view_mut(), d_s.view_mut()).unwrap();
            same_bits(&format!("{rule:?} Omega, round {round}"), &down(be, &d_o), &big_omega);
            same_bits(&format!("{rule:?} theta*, round {round}"), &down(be, &d_s), &theta_star);
        }
    }
}

/// `importance_mean` (plain and squared) and SI's off-by-one `prev_step_accumulate` (task and
/// total gradient).
fn importance_and_path_integral<B: ConsolidationKernels>(be: &B) {
    let n = 5003;
    let mut r = rng(9);
    let acc: Vec<f64> = uniform(&mut r, n, -5.0, 5.0).iter().map(|&x| x as f64 * 1.000_000_1).collect();
    for squared in [false, true] {
        let mut want = vec![0f32; n];
        importance_mean_f32(&acc, 37.0, squared, &mut want);
        let d_acc = Tensor::<B, f64>::from_host(be, 1, n, &acc).unwrap();
        let mut out = Tensor::<B>::zeros(be, 1, n).unwrap();
        be.importance_mean(d_acc.view(), 37.0, squared, out.view_mut()).unwrap();
        same_bits(&format!("importance_mean squared {squared}"), &down(be, &out), &want);
    }
    for total in [false, true] {
        let (theta, before, g) =
            (uniform(&mut r, n, -1.0, 1.0), uniform(&mut r, n, -1.0, 1.0), uniform(&mut r, n, -1.0, 1.0));
        let (bo, ts) = (uniform(&mut r, n, 0.0, 1.0), uniform(&mut r, n, -1.0, 1.0));
        let (mut w, mut prev) = (uniform(&mut r, n, -0.1, 0.1), uniform(&mut r, n, -0.01, 0.01));
        let (mut d_w, mut d_prev) = (up(be, &w), up(be, &prev));
        let (d_theta, d_before, d_g, d_bo, d_ts) =
            (up(be, &theta), up(be, &before), up(be, &g), up(be, &bo), up(be, &ts));
        prev_step_accumulate_f32(&mut w, &theta, &before, &g, &mut prev, total.then_some((&bo[..], &ts[..], 0.3)));
        let tot = total.then(|| (d_bo.view(), d_ts.view(), 0.3));
        be.prev_step_accumulate(d_w.view_mut(), d_theta.view(), d_before.view(), d_g.view(), d_prev.view_mut(), tot)
            .unwrap();
        same_bits(&format!("prev_step_accumulate omega (total {total})"), &down(be, &d_w), &w);
        same_bits(&format!("prev_step_accumulate delta (total {total})"), &down(be, &d_prev), &prev);
    }
}

test_device!(fused_step, penalty, consolidate, importance_and_path_integral);
