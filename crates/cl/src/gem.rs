//! Gradient Episodic Memory (Lopez-Paz & Ranzato 2017) and Averaged GEM (Chaudhry et al. 2019).
//!
//! * [`BlockGrads`]: the gradient of the mean softmax cross-entropy of an MLP on each of several
//!   blocks of rows (one block per finished task's memory), from ONE batched forward pass over
//!   all rows and one backward pass whose weight gradients are one matrix product per block.
//!   Written directly on `matrixmultiply` with buffers kept between steps: no tape, no per-sample
//!   loop, no allocation once the buffers have grown to the largest memory.
//! * [`Episodic`]: the per-step GEM and A-GEM gradient surgery used by the runner.
//!
//! GEM (paper Eq. 6-7, Sec. 3): with `g` the gradient of the current batch and `g_k` the gradient
//! of the loss on task `k`'s memory, step with `g` when `<g, g_k> >= 0` for every finished `k`;
//! otherwise solve the dual QP (Eq. 11-13, [`crate::qp`]) for `v` and step with
//! `g~ = G' v + g`. As the official code, the bound is `v >= memory_strength` and `G G'` gets
//! `1e-3` on its diagonal ([`crate::qp::OFFICIAL_REG`]).
//!
//! A-GEM (Chaudhry et al. 2019, Eq. 11): `g_ref` is the gradient on a random sample (up to 256)
//! of the whole memory; when `<g, g_ref> < 0`, step with `g - (<g, g_ref> / <g_ref, g_ref>) g_ref`.

use crate::episodic::EpisodicMemory;
use crate::qp::{self, QpError, QpSolver};
use engram_nn::Mlp;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::ops::Range;
use std::time::Instant;

/// Rows of the batched products handled by one rayon task (fixed, so results never depend on
/// the number of threads).
const ROW_CHUNK: usize = 256;
/// Rows of a weight gradient (`fan_in` side) handled by one rayon task.
const FANIN_CHUNK: usize = 196;

/// `C = A B + beta C` for row-major `C` (`m x n`, row stride `rsc`), `A` (`m x k`) and `B`
/// (`k x n`) given by element strides, with every index checked against the slices.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    rsc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|v| *v *= beta);
        return;
    }
    assert!((m - 1) * rsa + (k - 1) * csa < a.len(), "sgemm: A out of bounds");
    assert!((k - 1) * rsb + (n - 1) * csb < b.len(), "sgemm: B out of bounds");
    assert!((m - 1) * rsc + n - 1 < c.len(), "sgemm: C out of bounds");
    // SAFETY: the asserts above bound every element matrixmultiply reads or writes; C is
    // exclusively borrowed and does not alias A or B (distinct borrows).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            1,
        )
    }
}

/// Reusable buffers for per-block MLP gradients (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct BlockGrads {
    /// Each layer's output for every row: post-ReLU for hidden layers, logits for the last.
    acts: Vec<Vec<f32>>,
    /// `dL/d(pre-activation)` of the current layer, then of the layer below.
    delta: Vec<f32>,
    delta_below: Vec<f32>,
    /// Mean loss of each block from the last call.
    losses: Vec<f64>,
}

/// The rows whose per-block gradients [`BlockGrads::compute`] takes.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    /// Inputs, row-major (`rows x inputs`).
    pub x: &'a [f32],
    /// Labels, one per row.
    pub y: &'a [u32],
    /// Consecutive row ranges; the loss of each is the mean over its rows.
    pub blocks: &'a [Range<usize>],
    /// Per row, an index into `masks` (empty: no mask anywhere).
    pub row_mask: &'a [u32],
    /// Multi-head masks (`allowed[class]`); `None` for every output.
    pub masks: &'a [Option<Vec<bool>>],
}

impl BlockGrads {
    /// Empty buffers (they grow on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// The mean loss of each block of the last [`BlockGrads::compute`].
    pub fn losses(&self) -> &[f64] {
        &self.losses
    }

    /// Writes into `out` (`blocks x P`, row-major; `P = model.num_params()`) the gradient with
    /// respect to `theta` of the mean masked softmax cross-entropy of each block of `rows`,
    /// laid out as `theta` (weights then bias, layer by layer).
    ///
    /// Forward: `H_{l+1} = relu(H_l W_l + 1 b_l')` over all rows at once. Loss: per row
    /// `dL/dz = (softmax(z) - onehot(y)) / |block|` (softmax over the allowed classes).
    /// Backward: `dW_l[block] = H_l[block]' D_l[block]`, `db_l[block] = 1' D_l[block]`, and
    /// `D_{l-1} = (D_l W_l') * (H_l > 0)` over all rows at once (not formed for the input).
    pub fn compute(&mut self, model: &Mlp, theta: &[f32], rows: Rows, out: &mut [f32]) {
        let sizes = model.sizes();
        let layers = model.layers();
        let p = model.num_params();
        let nb = rows.blocks.len();
        let d = model.inputs();
        let n = rows.y.len();
        assert_eq!(theta.len(), p, "theta has {} values, the model {p}", theta.len());
        assert_eq!(rows.x.len(), n * d, "{} inputs for {n} rows of {d}", rows.x.len());
        assert_eq!(out.len(), nb * p, "out holds {} values, {nb} gradients need {}", out.len(), nb * p);
        assert!(rows.blocks.iter().all(|r| r.start <= r.end && r.end <= n), "a block lies outside the rows");
        assert!(rows.row_mask.is_empty() || rows.row_mask.len() == n, "row_mask must be empty or one per row");
        self.acts.resize(layers.len(), Vec::new());
        for (l, a) in self.acts.iter_mut().enumerate() {
            a.resize(n * sizes[l + 1], 0.0);
        }
        let widest = sizes[1..].iter().copied().max().unwrap_or(0);
        self.delta.resize(n * widest, 0.0);
        self.delta_below.resize(n * widest, 0.0);
        self.losses.clear();
        self.losses.resize(nb, 0.0);

        // Forward over every row.
        for (l, layer) in layers.iter().enumerate() {
            let (fi, fo) = (layer.fan_in, layer.fan_out);
            let (below, here) = self.acts.split_at_mut(l);
            let input: &[f32] = if l == 0 { rows.x } else { &below[l - 1] };
            let w = &theta[layer.weight.clone()];
            let bias = &theta[layer.bias.clone()];
            let relu = l + 1 < layers.len();
            here[0].par_chunks_mut(ROW_CHUNK * fo).enumerate().for_each(|(ci, out_rows)| {
                let r0 = ci * ROW_CHUNK;
                let m = out_rows.len() / fo;
                for row in out_rows.chunks_exact_mut(fo) {
                    row.copy_from_slice(bias);
                }
                sgemm(m, fi, fo, &input[r0 * fi..(r0 + m) * fi], (fi, 1), w, (fo, 1), 1.0, out_rows, fo);
                if relu {
                    out_rows.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            });
        }

        // dL/dlogits, block by block.
        let k = model.outputs();
        let logits = &self.acts[layers.len() - 1];
        let delta = &mut self.delta[..n * k];
        for (bi, r) in rows.blocks.iter().enumerate() {
            let scale = 1.0 / r.len().max(1) as f64;
            let mut loss = 0f64;
            for i in r.clone() {
                let z = &logits[i * k..(i + 1) * k];
                let dz = &mut delta[i * k..(i + 1) * k];
                let mask = if rows.row_mask.is_empty() {
                    None
                } else {
                    rows.masks.get(rows.row_mask[i] as usize).and_then(Option::as_ref)
                };
                let allowed = |c: usize| mask.is_none_or(|m| m.get(c).copied().unwrap_or(false));
                let mx = (0..k).filter(|&c| allowed(c)).map(|c| z[c] as f64).fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0f64;
                for c in 0..k {
                    let e = if allowed(c) { (z[c] as f64 - mx).exp() } else { 0.0 };
                    dz[c] = e as f32;
                    sum += e;
                }
                let y = rows.y[i] as usize;
                loss += mx + sum.ln() - z.get(y).copied().unwrap_or(0.0) as f64;
                for (c, v) in dz.iter_mut().enumerate() {
                    let pc = *v as f64 / sum;
                    *v = ((pc - f64::from(u8::from(c == y))) * scale) as f32;
                }
            }
            self.losses[bi] = loss * scale;
        }

        // Backward, top layer first.
        for (l, layer) in layers.iter().enumerate().rev() {
            let (fi, fo) = (layer.fan_in, layer.fan_out);
            let input: &[f32] = if l == 0 { rows.x } else { &self.acts[l - 1] };
            let delta = &self.delta[..n * fo];
            // Per-block weight and bias gradients, written straight into each block's row of out.
            out.par_chunks_mut(p).zip(rows.blocks.par_iter()).for_each(|(gb, r)| {
                let (m0, m) = (r.start, r.len());
                let (wpart, rest) = gb[layer.weight.start..].split_at_mut(fi * fo);
                let bpart = &mut rest[layer.bias.start - layer.weight.end..][..fo];
                if m == 0 {
                    wpart.fill(0.0);
                    bpart.fill(0.0);
                    return;
                }
                let x_blk = &input[m0 * fi..(m0 + m) * fi];
                let d_blk = &delta[m0 * fo..(m0 + m) * fo];
                wpart.par_chunks_mut(FANIN_CHUNK * fo).enumerate().for_each(|(ci, wrows)| {
                    let i0 = ci * FANIN_CHUNK;
                    let rows_here = wrows.len() / fo;
                    // (X_blk')[i0.., :] : element (i, r) at x_blk[r * fi + i0 + i].
                    sgemm(rows_here, m, fo, &x_blk[i0..], (1, fi), d_blk, (fo, 1), 0.0, wrows, fo);
                });
                bpart.fill(0.0);
                for drow in d_blk.chunks_exact(fo) {
                    for (b, &v) in bpart.iter_mut().zip(drow) {
                        *b += v;
                    }
                }
            });
            if l == 0 {
                break;
            }
            // D_below = (D W') * (H > 0) over every row.
            let w = &theta[layer.weight.clone()];
            let below_act = &self.acts[l - 1];
            let below = &mut self.delta_below[..n * fi];
            below.par_chunks_mut(ROW_CHUNK * fi).enumerate().for_each(|(ci, brows)| {
                let r0 = ci * ROW_CHUNK;
                let m = brows.len() / fi;
                // W' : element (q, i) at w[i * fo + q].
                sgemm(m, fo, fi, &delta[r0 * fo..(r0 + m) * fo], (fo, 1), w, (1, fo), 0.0, brows, fi);
                for (v, &h) in brows.iter_mut().zip(&below_act[r0 * fi..(r0 + m) * fi]) {
                    if h <= 0.0 {
                        *v = 0.0;
                    }
                }
            });
            std::mem::swap(&mut self.delta, &mut self.delta_below);
        }
    }
}

/// Which episodic method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// GEM: one constraint per finished task, the QP when any is violated.
    Gem,
    /// A-GEM: one averaged constraint from a random sample of the whole memory.
    Agem,
}

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Seconds computing memory gradients.
    pub memory_seconds: f64,
    /// Seconds in the constraint check, the QP and the projection.
    pub projection_seconds: f64,
    /// Whether the gradient was changed.
    pub projected: bool,
}

/// The GEM / A-GEM state of a run: the memory, the gradient buffers and the QP solver, all kept
/// between steps.
#[derive(Clone, Debug)]
pub struct Episodic {
    /// Which method.
    pub kind: Kind,
    /// The memory.
    pub memory: EpisodicMemory,
    /// GEM's margin `gamma` (`memory_strength`): the dual's bound `v >= gamma`.
    pub strength: f64,
    /// Ridge added to `G G'` (the official code's `1e-3`).
    pub reg: f64,
    /// A-GEM: memory samples per reference gradient.
    pub ref_samples: usize,
    kernel: BlockGrads,
    /// Memory gradients, one row per finished task (A-GEM: one row).
    g_mem: Vec<f32>,
    solver: QpSolver,
    a: Vec<f64>,
    b: Vec<f64>,
    acc: Vec<f64>,
    /// A-GEM: the reference sample, gathered from the memory.
    ref_x: Vec<f32>,
    ref_y: Vec<u32>,
    ref_mask: Vec<u32>,
    perm: Vec<u32>,
    /// Steps whose gradient was changed.
    pub projections: usize,
    /// Steps taken with at least one finished task in memory.
    pub constrained_steps: usize,
    /// Largest KKT violation of any QP solved (GEM).
    pub worst_kkt: f64,
}

/// Errors of an episodic step.
pub type StepError = QpError;

impl Episodic {
    /// State for `kind` with `memory`, margin `strength`, ridge `reg`.
    pub fn new(kind: Kind, memory: EpisodicMemory, strength: f64, reg: f64) -> Self {
        Self {
            kind,
            memory,
            strength,
            reg,
            ref_samples: 256,
            kernel: BlockGrads::new(),
            g_mem: Vec::new(),
            solver: QpSolver::new(),
            a: Vec::new(),
            b: Vec::new(),
            acc: Vec::new(),
            ref_x: Vec::new(),
            ref_y: Vec::new(),
            ref_mask: Vec::new(),
            perm: Vec::new(),
            projections: 0,
            constrained_steps: 0,
            worst_kkt: 0.0,
        }
    }

    /// A-GEM's kept index vector (its partial shuffles carry over from step to step, so a
    /// checkpoint stores it).
    pub fn perm(&self) -> &[u32] {
        &self.perm
    }

    /// Restores A-GEM's index vector from a checkpoint; it must be a permutation of the memory's
    /// rows (or empty, before the first draw).
    pub fn restore_perm(&mut self, perm: Vec<u32>) -> Result<(), String> {
        if !perm.is_empty() {
            let mut seen = vec![false; perm.len()];
            for &p in &perm {
                match seen.get_mut(p as usize) {
                    Some(s) if !*s => *s = true,
                    _ => return Err("A-GEM's index vector is not a permutation".into()),
                }
            }
        }
        self.perm = perm;
        Ok(())
    }

    /// Bytes held by the memory and the step's buffers.
    pub fn bytes(&self) -> usize {
        self.memory.bytes() + 4 * (self.g_mem.capacity() + self.ref_x.capacity())
    }

    /// The memory gradients of the last step (`tasks x P` for GEM, `1 x P` for A-GEM).
    pub fn memory_gradients(&self) -> &[f32] {
        &self.g_mem
    }

    /// Turns the batch gradient `g` into the step direction at `theta` (in place). Leaves `g`
    /// untouched, bit for bit, when no constraint is violated or no task is finished.
    pub fn step(
        &mut self,
        model: &Mlp,
        theta: &[f32],
        g: &mut [f32],
        rng: &mut ChaCha8Rng,
    ) -> Result<StepReport, StepError> {
        let mut rep = StepReport::default();
        let k = self.memory.tasks();
        if k == 0 || self.memory.rows() == 0 {
            return Ok(rep);
        }
        self.constrained_steps += 1;
        let p = model.num_params();
        let t0 = Instant::now();
        match self.kind {
            Kind::Gem => {
                self.g_mem.resize(k * p, 0.0);
                let m = &self.memory;
                let rows = Rows {
                    x: &m.x,
                    y: &m.y,
                    blocks: &m.blocks,
                    row_mask: if m.masks.iter().any(Option::is_some) { &m.row_task } else { &[] },
                    masks: &m.masks,
                };
                self.kernel.compute(model, theta, rows, &mut self.g_mem);
                let t1 = Instant::now();
                rep.memory_seconds = (t1 - t0).as_secs_f64();
                rep.projected = self.project_gem(g, k, p)?;
                rep.projection_seconds = t1.elapsed().as_secs_f64();
            }
            Kind::Agem => {
                self.draw_reference(rng);
                self.g_mem.resize(p, 0.0);
                let whole = 0..self.ref_y.len();
                let blocks = std::slice::from_ref(&whole);
                let m = &self.memory;
                let rows = Rows {
                    x: &self.ref_x,
                    y: &self.ref_y,
                    blocks,
                    row_mask: if m.masks.iter().any(Option::is_some) { &self.ref_mask } else { &[] },
                    masks: &m.masks,
                };
                self.kernel.compute(model, theta, rows, &mut self.g_mem);
                let t1 = Instant::now();
                rep.memory_seconds = (t1 - t0).as_secs_f64();
                rep.projected = agem_project(g, &self.g_mem);
                rep.projection_seconds = t1.elapsed().as_secs_f64();
            }
        }
        self.projections += usize::from(rep.projected);
        Ok(rep)
    }

    /// A-GEM's reference sample: `min(ref_samples, rows)` distinct memory rows drawn uniformly
    /// (a partial Fisher-Yates shuffle of a kept index vector), gathered into `ref_x`.
    fn draw_reference(&mut self, rng: &mut ChaCha8Rng) {
        let total = self.memory.rows();
        if self.perm.len() != total {
            self.perm.clear();
            self.perm.extend(0..total as u32);
        }
        let n = self.ref_samples.min(total);
        for i in 0..n {
            let j = rng.random_range(i..total);
            self.perm.swap(i, j);
        }
        let d = self.memory.dim;
        self.ref_x.clear();
        self.ref_y.clear();
        self.ref_mask.clear();
        for &r in &self.perm[..n] {
            let r = r as usize;
            self.ref_x.extend_from_slice(&self.memory.x[r * d..(r + 1) * d]);
            self.ref_y.push(self.memory.y[r]);
            self.ref_mask.push(self.memory.row_task[r]);
        }
    }

    /// GEM's projection of `g` given the memory gradients in `self.g_mem` (`k x p`). Returns
    /// whether `g` changed.
    fn project_gem(&mut self, g: &mut [f32], k: usize, p: usize) -> Result<bool, QpError> {
        self.b.resize(k, 0.0);
        for (i, bi) in self.b.iter_mut().enumerate() {
            *bi = qp::dot_f64(&self.g_mem[i * p..(i + 1) * p], g);
        }
        if self.b.iter().all(|&d| d >= 0.0) {
            return Ok(false);
        }
        self.a.resize(k * k, 0.0);
        qp::gram_f64(&self.g_mem, k, p, &mut self.a);
        for i in 0..k {
            self.a[i * k + i] += self.reg;
        }
        let (v, stats) = self.solver.solve(&self.a, &self.b, self.strength)?;
        self.worst_kkt = self.worst_kkt.max(stats.kkt);
        gem_combine(g, &self.g_mem, v, &mut self.acc);
        Ok(true)
    }
}

/// `g <- G' v + g` (GEM paper Eq. 13), summed in `f64` and rounded once to `f32`, tile by tile
/// (a tile of the sum stays in cache while every memory gradient is added); `acc` is scratch.
pub fn gem_combine(g: &mut [f32], g_mem: &[f32], v: &[f64], acc: &mut Vec<f64>) {
    let p = g.len();
    assert_eq!(g_mem.len(), v.len() * p, "gem_combine: {} entries for {} gradients of {p}", g_mem.len(), v.len());
    acc.resize(qp::TILE, 0.0);
    for c0 in (0..p).step_by(qp::TILE) {
        let c1 = (c0 + qp::TILE).min(p);
        let buf = &mut acc[..c1 - c0];
        for (a, &x) in buf.iter_mut().zip(&g[c0..c1]) {
            *a = x as f64;
        }
        for (i, &vi) in v.iter().enumerate() {
            for (a, &x) in buf.iter_mut().zip(&g_mem[i * p + c0..i * p + c1]) {
                *a += vi * x as f64;
            }
        }
        for (gi, &a) in g[c0..c1].iter_mut().zip(buf.iter()) {
            *gi = a as f32;
        }
    }
}

/// A-GEM's projection (Chaudhry et al. 2019, Eq. 11): when `<g, g_ref> < 0`,
/// `g <- g - (<g, g_ref> / <g_ref, g_ref>) g_ref` (dot products in `f64`). Returns whether `g`
/// changed; a zero `g_ref` changes nothing.
pub fn agem_project(g: &mut [f32], g_ref: &[f32]) -> bool {
    let dot = qp::dot_f64(g, g_ref);
    if dot >= 0.0 || dot.is_nan() {
        return false;
    }
    let rr = qp::dot_f64(g_ref, g_ref);
    if rr <= 0.0 {
        return false;
    }
    let s = dot / rr;
    for (gi, &r) in g.iter_mut().zip(g_ref) {
        *gi = (*gi as f64 - s * r as f64) as f32;
    }
    true
}
