//! The fused kernels: one pass over memory per step.
//!
//! Layout of the work: the slices are cut into chunks of [`CHUNK`] elements, processed in
//! parallel by rayon; each chunk is walked in tiles of [`TILE`] elements, and a tile in blocks
//! of 32: a block's f64 penalty terms (8 independent lanes of f32 partial sums, promoted to f64
//! accumulators, so the compiler vectorises them), then the same block's update, in one loop,
//! so every array crosses the memory bus once and is read once from L1. The update loop has no loop-carried dependency:
//! the compiler vectorises it (SSE2 on the default x86-64 target, AVX2 where the CPU has it,
//! chosen at run time). Monomorphised variants
//! (`ADAM`, `PEN`, `OMEGA`) keep branches out of the inner loop.

use rayon::prelude::*;

use crate::{
    flush_subnormal, relu, Plan, ReluPlacement, Scalars, Slices, StepConfig, CHUNK, NO_OMEGA, OMEGA_TASK, OMEGA_TOTAL,
};

/// Elements per tile inside a chunk: 7 arrays x 4 B x 1024 = 28 KiB, an L1-sized working set.
const TILE: usize = 1_024;
/// Independent f64 accumulators of the penalty reduction.
const LANES: usize = 8;

/// One chunk of every slice (unused ones empty).
struct Chunk<'a> {
    theta: &'a mut [f32],
    g: &'a [f32],
    big_omega: &'a [f32],
    theta_star: &'a [f32],
    omega: &'a mut [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
}

fn split(s: &[f32], n_chunks: usize) -> Vec<&[f32]> {
    if s.is_empty() {
        vec![&[][..]; n_chunks]
    } else {
        s.chunks(CHUNK).collect()
    }
}

fn split_mut(s: &mut [f32], n_chunks: usize) -> Vec<&mut [f32]> {
    if s.is_empty() {
        std::iter::repeat_with(<&mut [f32]>::default).take(n_chunks).collect()
    } else {
        s.chunks_mut(CHUNK).collect()
    }
}

fn chunks(s: Slices<'_>) -> Vec<Chunk<'_>> {
    let n_chunks = s.theta.len().div_ceil(CHUNK);
    let theta = s.theta.chunks_mut(CHUNK);
    let g = s.g.chunks(CHUNK);
    let bo = split(s.big_omega, n_chunks);
    let ts = split(s.theta_star, n_chunks);
    let om = split_mut(s.omega, n_chunks);
    let m = split_mut(s.m, n_chunks);
    let v = split_mut(s.v, n_chunks);
    theta
        .zip(g)
        .zip(bo)
        .zip(ts)
        .zip(om)
        .zip(m)
        .zip(v)
        .map(|((((((theta, g), big_omega), theta_star), omega), m), v)| Chunk {
            theta,
            g,
            big_omega,
            theta_star,
            omega,
            m,
            v,
        })
        .collect()
}

/// The fused consolidation step (DESIGN.md, "The fused consolidation step"), f32, one pass over
/// memory, parallel over chunks. Per parameter `i`, with `theta` the value before the step:
///
/// ```text
/// d     = theta - theta*
/// G     = g + (2c Omega) d                       penalty gradient of SI eq. (4) (no 1/2 factor)
/// SGD:  theta' = theta - lr G
/// Adam: m' = beta1 m + (1 - beta1) G;  v' = beta2 v + (1 - beta2) G G   (subnormals -> 0)
///       theta' = theta - (lr / (1 - beta1^t)) (m' / (sqrt(v') / sqrt(1 - beta2^t) + eps))
/// SI:   omega' = omega - g_used (theta' - theta)  SI eq. (3): the path integral, discretised
/// ```
///
/// `g_used` is `g` for [`OmegaGrad::Task`](crate::OmegaGrad::Task) (official) and `G` for
/// [`OmegaGrad::Total`](crate::OmegaGrad::Total); `theta' - theta` is the difference of the
/// stored f32 values, i.e. the change this step actually made. With `c == 0` the penalty terms
/// are skipped (`G == g` exactly) and with `omega: None` nothing is accumulated, so the step is
/// plain SGD/Adam bit for bit.
///
/// Returns the penalty value `c * sum_i Omega_i (theta_i - theta*_i)^2` at theta *before* the
/// step, accumulated in f64 (0 when `c == 0`).
///
/// # Panics
/// When a slice the configuration uses does not have `theta`'s length, when an unused slice
/// has neither that length nor 0, when `c` is not finite, or when Adam's `t` is 0.
pub fn fused_step_f32(s: Slices<'_>, cfg: &StepConfig) -> f64 {
    let plan = Plan::new(&s, cfg);
    let k = Scalars::new(cfg);
    if plan.n == 0 {
        return 0.0;
    }
    let sum = match (plan.adam, plan.penalty, plan.omega) {
        (true, true, NO_OMEGA) => run::<true, true, NO_OMEGA>(s, &k),
        (true, true, OMEGA_TASK) => run::<true, true, OMEGA_TASK>(s, &k),
        (true, true, _) => run::<true, true, OMEGA_TOTAL>(s, &k),
        (true, false, NO_OMEGA) => run::<true, false, NO_OMEGA>(s, &k),
        (true, false, OMEGA_TASK) => run::<true, false, OMEGA_TASK>(s, &k),
        (true, false, _) => run::<true, false, OMEGA_TOTAL>(s, &k),
        (false, true, NO_OMEGA) => run::<false, true, NO_OMEGA>(s, &k),
        (false, true, OMEGA_TASK) => run::<false, true, OMEGA_TASK>(s, &k),
        (false, true, _) => run::<false, true, OMEGA_TOTAL>(s, &k),
        (false, false, NO_OMEGA) => run::<false, false, NO_OMEGA>(s, &k),
        (false, false, OMEGA_TASK) => run::<false, false, OMEGA_TASK>(s, &k),
        (false, false, _) => run::<false, false, OMEGA_TOTAL>(s, &k),
    };
    if plan.penalty {
        cfg.c as f64 * sum
    } else {
        0.0
    }
}

fn run<const ADAM: bool, const PEN: bool, const OMEGA: u8>(s: Slices<'_>, k: &Scalars) -> f64 {
    let partials: Vec<f64> = chunks(s).into_par_iter().map(|c| chunk_kernel::<ADAM, PEN, OMEGA>(c, k)).collect();
    // Chunk order, sequentially: deterministic whatever the number of threads.
    partials.iter().sum()
}

/// One chunk, in 8-wide AVX2 vectors where the CPU has them (the same operations in the same
/// order on each element, without FMA: the same bits as the portable build's SSE2 vectors).
fn chunk_kernel<const ADAM: bool, const PEN: bool, const OMEGA: u8>(c: Chunk<'_>, k: &Scalars) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only feature the function enables.
        return unsafe { chunk_kernel_avx2::<ADAM, PEN, OMEGA>(c, k) };
    }
    chunk_body::<ADAM, PEN, OMEGA>(c, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn chunk_kernel_avx2<const ADAM: bool, const PEN: bool, const OMEGA: u8>(c: Chunk<'_>, k: &Scalars) -> f64 {
    chunk_body::<ADAM, PEN, OMEGA>(c, k)
}

#[inline(always)]
fn chunk_body<const ADAM: bool, const PEN: bool, const OMEGA: u8>(c: Chunk<'_>, k: &Scalars) -> f64 {
    let n = c.theta.len();
    let mut pen = 0.0f64;
    let mut i0 = 0;
    while i0 < n {
        let i1 = (i0 + TILE).min(n);
        let theta = &mut c.theta[i0..i1];
        let g = &c.g[i0..i1];
        let omega: &mut [f32] = if OMEGA != NO_OMEGA { &mut c.omega[i0..i1] } else { &mut [] };
        let (m, v): (&mut [f32], &mut [f32]) =
            if ADAM { (&mut c.m[i0..i1], &mut c.v[i0..i1]) } else { (&mut [], &mut []) };
        if PEN {
            let (big_omega, theta_star) = (&c.big_omega[i0..i1], &c.theta_star[i0..i1]);
            pen += penalty_and_update_tile::<ADAM, OMEGA>(theta, g, big_omega, theta_star, omega, m, v, k);
        } else {
            update_tile::<ADAM, false, OMEGA>(theta, g, &[], &[], omega, m, v, k);
        }
        i0 = i1;
    }
    pen
}

/// [`penalty_tile`] and [`update_tile`] over one tile in ONE loop: block by block of
/// [`BLOCK`] elements, the block's penalty terms (at theta before the step) then its update.
/// The penalty's arithmetic is [`penalty_tile`]'s, term for term and in the same order (the
/// same bits). A separate penalty pass before the update (this kernel until issue 16) waited
/// on `Omega, theta, theta*` coming from L3 with no update work to overlap them, and made the
/// update read them again: on the split-mnist SI run, merged, the consolidation step takes
/// 1.61-1.77 s against 1.91-2.10 s (`--profile`, 4 interleaved runs; fine-tuning's 1.16-1.23).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn penalty_and_update_tile<const ADAM: bool, const OMEGA: u8>(
    theta: &mut [f32],
    g: &[f32],
    big_omega: &[f32],
    theta_star: &[f32],
    omega: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &Scalars,
) -> f64 {
    let n = theta.len();
    let full = n - n % BLOCK;
    let mut acc = [0.0f64; LANES];
    let mut i0 = 0;
    while i0 < n {
        let i1 = if i0 < full { i0 + BLOCK } else { n };
        let (bo, ts) = (&big_omega[i0..i1], &theta_star[i0..i1]);
        if i0 < full {
            add_block(&mut acc, penalty_block(bo, &theta[i0..i1], ts));
        } else {
            add_tail(&mut acc, bo, &theta[i0..i1], ts);
        }
        let omega: &mut [f32] = if OMEGA != NO_OMEGA { &mut omega[i0..i1] } else { &mut [] };
        let (m, v): (&mut [f32], &mut [f32]) = if ADAM { (&mut m[i0..i1], &mut v[i0..i1]) } else { (&mut [], &mut []) };
        update_tile::<ADAM, true, OMEGA>(&mut theta[i0..i1], &g[i0..i1], bo, ts, omega, m, v, k);
        i0 = i1;
    }
    combine(&acc)
}

/// Elements per block of the penalty reduction: [`LANES`] partial sums of 4 terms each.
const BLOCK: usize = 4 * LANES;

/// `sum_i Omega_i (theta_i - theta*_i)^2` over one tile, accumulated in f64.
///
/// The terms `Omega d d` (with `d = theta - theta*`, as the gradient uses it) are formed in f32
/// and summed in `LANES` independent f32 partial sums over blocks of `BLOCK` elements (4 terms
/// per lane); each block's partials are promoted to f64 accumulators, combined in a fixed order.
/// Measured 2.5x cheaper than forming every term in f64 (SSE2 has only 2 f64 lanes), and
/// accurate to a few f32 roundings per term: for Omega >= 0 the relative error of the sum is
/// below ~6 * 2^-24 (about 4e-7); the f64 accumulation keeps it from growing with `n`.
#[inline(always)]
fn penalty_tile(big_omega: &[f32], theta: &[f32], theta_star: &[f32]) -> f64 {
    let n = theta.len();
    let full = n - n % BLOCK;
    let (big_omega, theta_star) = (&big_omega[..n], &theta_star[..n]);
    let mut acc = [0.0f64; LANES];
    for i0 in (0..full).step_by(BLOCK) {
        let r = i0..i0 + BLOCK;
        add_block(&mut acc, penalty_block(&big_omega[r.clone()], &theta[r.clone()], &theta_star[r]));
    }
    add_tail(&mut acc, &big_omega[full..], &theta[full..], &theta_star[full..]);
    combine(&acc)
}

/// One block's `LANES` partial sums: lane `j` sums the terms `j, j + LANES, ...` of the block.
// Lane-indexed loops on purpose: the layout the SLP vectoriser turns into packed f32 ops.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn penalty_block(o: &[f32], t: &[f32], s: &[f32]) -> [f32; LANES] {
    let (o, t, s) = (&o[..BLOCK], &t[..BLOCK], &s[..BLOCK]);
    let mut part = [0.0f32; LANES];
    for k in 0..BLOCK / LANES {
        for j in 0..LANES {
            let i = k * LANES + j;
            let d = t[i] - s[i];
            part[j] += o[i] * d * d;
        }
    }
    part
}

/// A block's partial sums, promoted to the f64 accumulators.
#[inline(always)]
fn add_block(acc: &mut [f64; LANES], part: [f32; LANES]) {
    for (a, p) in acc.iter_mut().zip(part) {
        *a += p as f64;
    }
}

/// The terms after a tile's last whole block, one by one into the first accumulator.
#[inline(always)]
fn add_tail(acc: &mut [f64; LANES], o: &[f32], t: &[f32], s: &[f32]) {
    for ((o, t), s) in o.iter().zip(t).zip(s) {
        let d = t - s;
        acc[0] += (o * d * d) as f64;
    }
}

/// The accumulators, combined in a fixed order.
#[inline(always)]
fn combine(acc: &[f64; LANES]) -> f64 {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// The element-wise update of one tile (see [`fused_step_f32`] for the equations).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn update_tile<const ADAM: bool, const PEN: bool, const OMEGA: u8>(
    theta: &mut [f32],
    g: &[f32],
    big_omega: &[f32],
    theta_star: &[f32],
    omega: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &Scalars,
) {
    let n = theta.len();
    let g = &g[..n];
    let (big_omega, theta_star) = if PEN { (&big_omega[..n], &theta_star[..n]) } else { (big_omega, theta_star) };
    let omega = if OMEGA != NO_OMEGA { &mut omega[..n] } else { omega };
    let (m, v) = if ADAM { (&mut m[..n], &mut v[..n]) } else { (m, v) };
    let Scalars { two_c, lr, beta1, omb1, beta2, omb2, step, bc2_sqrt, eps } = *k;
    for i in 0..n {
        let t0 = theta[i];
        let gi = g[i];
        let gt = if PEN { gi + (two_c * big_omega[i]) * (t0 - theta_star[i]) } else { gi };
        let t1 = if ADAM {
            let mi = flush_subnormal(beta1 * m[i] + omb1 * gt);
            let vi = flush_subnormal(beta2 * v[i] + omb2 * gt * gt);
            m[i] = mi;
            v[i] = vi;
            t0 - step * (mi / (vi.sqrt() / bc2_sqrt + eps))
        } else {
            t0 - lr * gt
        };
        theta[i] = t1;
        if OMEGA != NO_OMEGA {
            let gu = if OMEGA == OMEGA_TASK { gi } else { gt };
            omega[i] -= gu * (t1 - t0);
        }
    }
}

/// The penalty `c * sum_i Omega_i (theta_i - theta*_i)^2` (SI eq. (4), EWC eq. (3) without its
/// 1/2), accumulated in f64 exactly as [`fused_step_f32`] does (same chunks, tiles and lanes),
/// without taking a step. Returns 0 when `c == 0`.
///
/// # Panics
/// When `big_omega` or `theta_star` does not have `theta`'s length and `c != 0`.
pub fn penalty_f32(theta: &[f32], big_omega: &[f32], theta_star: &[f32], c: f32) -> f64 {
    if c == 0.0 {
        return 0.0;
    }
    let n = theta.len();
    assert!(big_omega.len() == n && theta_star.len() == n, "engram-si: penalty slices must have theta's length {n}");
    let partials: Vec<f64> = theta
        .par_chunks(CHUNK)
        .zip(big_omega.par_chunks(CHUNK))
        .zip(theta_star.par_chunks(CHUNK))
        .map(|((th, bo), ts)| {
            th.chunks(TILE).zip(bo.chunks(TILE)).zip(ts.chunks(TILE)).map(|((t, o), s)| penalty_tile(o, t, s)).sum()
        })
        .collect();
    c as f64 * partials.iter().sum::<f64>()
}

/// SI's consolidation at the end of a task (Zenke et al. 2017, eq. (5)), in one parallel pass:
///
/// ```text
/// Delta = theta - theta*                        theta* is theta at the start of this task
/// term  = omega / (Delta^2 + xi)
/// None:          Omega = Omega + term
/// PerTaskTerm:   Omega = Omega + relu(term)
/// Accumulated:   Omega = relu(Omega + term)     (official pathint code)
/// omega = 0;  theta* = theta
/// ```
///
/// `theta_star` serves both as the start point of the finished task and, afterwards, as the
/// anchor of the next one: SI needs no fourth vector (see [`PenaltyState`](crate::PenaltyState)).
///
/// # Panics
/// When a slice does not have `theta`'s length, or when `xi` is not positive and finite.
pub fn end_of_task(
    theta: &[f32],
    omega: &mut [f32],
    big_omega: &mut [f32],
    theta_star: &mut [f32],
    xi: f32,
    relu_placement: ReluPlacement,
) {
    let n = theta.len();
    assert!(
        omega.len() == n && big_omega.len() == n && theta_star.len() == n,
        "engram-si: end_of_task needs omega, big_omega and theta_star of theta's length {n} \
         (got {}, {}, {})",
        omega.len(),
        big_omega.len(),
        theta_star.len()
    );
    assert!(xi > 0.0 && xi.is_finite(), "engram-si: the damping xi must be positive and finite, got {xi}");
    theta
        .par_chunks(CHUNK)
        .zip(omega.par_chunks_mut(CHUNK))
        .zip(big_omega.par_chunks_mut(CHUNK))
        .zip(theta_star.par_chunks_mut(CHUNK))
        .for_each(|(((th, om), bo), ts)| {
            for (((t, w), o), s) in th.iter().zip(om.iter_mut()).zip(bo.iter_mut()).zip(ts.iter_mut()) {
                let delta = *t - *s;
                let term = *w / (delta * delta + xi);
                *o = match relu_placement {
                    ReluPlacement::None => *o + term,
                    ReluPlacement::PerTaskTerm => *o + relu(term),
                    ReluPlacement::Accumulated => relu(*o + term),
                };
                *w = 0.0;
                *s = *t;
            }
        });
}
