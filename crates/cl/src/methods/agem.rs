//! Averaged GEM (Chaudhry et al. 2019).
//!
//! A-GEM keeps `m` samples of each finished task, balanced over its classes (a ring buffer per
//! class, [`EpisodicMemory`]). At every step, `g_ref` is the gradient on a random sample (up to
//! 256) of the whole memory, gathered on the backend and passed through the training step's own
//! forward and backward; when `<g, g_ref> < 0`, step with
//! `g - (<g, g_ref> / <g_ref, g_ref>) g_ref` (Eq. 11). The host receives the two dot products.

use super::episodic::{EpisodicMemory, Fill};
use super::{Carried, Strategy};
use crate::saved;
use crate::state::{Run, RunBackend, RunError, RunState};
use engram_ckpt::Checkpoint;
use engram_tape::{Tensor, View, ViewMut};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

/// Memory samples per reference gradient.
pub const REFERENCE_SAMPLES: usize = 256;

/// A-GEM's projection (Chaudhry et al. 2019, Eq. 11) of `g` against the reference gradient
/// `g_ref` (`1 x P`): when `<g, g_ref> < 0`, `g <- g - (<g, g_ref> / <g_ref, g_ref>) g_ref`, summed
/// in f64 and rounded once. The host receives the two dot products. Returns whether `g` changed
/// (a zero `g_ref`, or `<g, g_ref> >= 0`, change nothing).
pub fn project<B: RunBackend>(be: &B, g: &mut B::Buffer<f32>, g_ref: View<'_, B>) -> Result<bool, RunError> {
    let mut dots = Tensor::<B, f64>::zeros(be, 1, 2)?;
    be.dots_f64(g_ref, View::row_of(be, &*g), dots.view_mut().range(0, 1))?;
    be.dots_f64(g_ref, g_ref, dots.view_mut().range(1, 2))?;
    let d = dots.to_host(be)?;
    let (dot, rr) = (d[0], d[1]);
    if dot >= 0.0 || dot.is_nan() || rr <= 0.0 {
        return Ok(false);
    }
    let w = Tensor::<B, f64>::from_host(be, 1, 1, &[-(dot / rr)])?;
    be.combine_f64(ViewMut::row_of(be, g), g_ref, w.view())?;
    Ok(true)
}

/// A-GEM's state: the memory, its kept index vector, the reference gradient.
pub struct Agem<B: RunBackend> {
    memory: EpisodicMemory<B>,
    /// The kept index vector: its partial shuffles carry over from step to step.
    perm: Vec<u32>,
    g_ref: Option<Tensor<B>>,
    /// The forward and backward's buffers, kept between steps.
    step: Option<engram_nn::StepBuffers<B>>,
    projections: usize,
    constrained_steps: usize,
}

impl<B: RunBackend> Agem<B> {
    /// An empty memory of `run.cfg.memories` samples per task, balanced over the classes.
    pub fn new(run: &Run<'_, B>) -> Self {
        let classes = run.scenario.outputs;
        Self {
            memory: EpisodicMemory::new(run.cfg.memories, run.data.dim, classes, Fill::PerClass { classes }),
            perm: Vec::new(),
            g_ref: None,
            step: None,
            projections: 0,
            constrained_steps: 0,
        }
    }

    /// The reference sample: `min(256, rows)` distinct memory rows drawn uniformly (a partial
    /// Fisher-Yates shuffle of the kept index vector).
    fn draw_reference(&mut self, rng: &mut ChaCha8Rng) -> Vec<u32> {
        let total = self.memory.rows();
        if self.perm.len() != total {
            self.perm.clear();
            self.perm.extend(0..total as u32);
        }
        let n = REFERENCE_SAMPLES.min(total);
        for i in 0..n {
            let j = rng.random_range(i..total);
            self.perm.swap(i, j);
        }
        self.perm[..n].to_vec()
    }

    /// Restores the kept index vector; it must be a permutation of the memory's rows (or empty,
    /// before the first draw).
    fn restore_perm(&mut self, perm: Vec<u32>) -> Result<(), String> {
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
}

impl<B: RunBackend> Strategy<B> for Agem<B> {
    fn adjust_gradient(
        &mut self,
        run: &Run<'_, B>,
        st: &mut RunState<B>,
        task: usize,
        batch: &[(u32, u32)],
    ) -> Result<(), RunError> {
        let (be, model) = (run.be, run.model);
        // Paper Alg. 1: store the batch in the current task's memory, then correct g against the
        // finished tasks' memories.
        if !self.memory.observe_batch(run.data, task, batch) {
            return Ok(());
        }
        self.constrained_steps += 1;
        let t0 = Instant::now();
        let picked = self.draw_reference(&mut st.streams.memory);
        let n = picked.len();
        let idx = Tensor::<B, u32>::from_host(be, 1, n, &picked)?;
        let mut x = Tensor::<B>::zeros(be, n, model.inputs())?;
        let mut y = Tensor::<B, u32>::zeros(be, n, 1)?;
        let mut mask = if self.memory.has_masks() { Some(Tensor::<B>::zeros(be, n, model.outputs())?) } else { None };
        self.memory.gather(be, idx.view(), x.view_mut(), y.view_mut(), mask.as_mut().map(Tensor::view_mut))?;
        let p = model.num_params();
        let g_ref = match &mut self.g_ref {
            Some(g) => g,
            slot @ None => slot.insert(Tensor::zeros(be, 1, p)?),
        };
        let mut loss = Tensor::<B>::zeros(be, 1, 1)?;
        let batch =
            engram_nn::Batch { x: x.view(), labels: y.view().reshape(1, n), mask: mask.as_ref().map(Tensor::view) };
        let step = match &mut self.step {
            Some(s) => s,
            None => self.step.insert(engram_nn::StepBuffers::new(be, model, n)?),
        };
        step.loss_and_grad(be, model, &st.theta, batch, g_ref.view_mut(), loss.view_mut())?;
        let t1 = Instant::now();
        st.profile.memory_gradients += (t1 - t0).as_secs_f64();
        if project(be, &mut st.grad, g_ref.view())? {
            self.projections += 1;
        }
        st.profile.projection += t1.elapsed().as_secs_f64();
        Ok(())
    }

    fn end_phase(&mut self, run: &Run<'_, B>, _st: &mut RunState<B>, task: usize) -> Result<(), RunError> {
        self.memory.finish_task(run.be, run.data, task, run.scenario.tasks[task].mask.as_deref())
    }

    fn state_bytes(&self, run: &Run<'_, B>) -> usize {
        self.memory.bytes() + 4 * self.perm.len() + self.g_ref.as_ref().map_or(0, |g| 4 * run.be.buffer_len(&g.buf))
    }

    fn report(&self, profile: &mut crate::state::Profile) {
        profile.projected_steps = self.projections as u64;
        profile.constrained_steps = self.constrained_steps as u64;
    }

    fn save(
        &self,
        run: &Run<'_, B>,
        tensors: &mut BTreeMap<String, engram_ckpt::Tensor>,
    ) -> Result<Option<Value>, RunError> {
        tensors.insert("agem.perm".into(), engram_ckpt::Tensor::u32(self.perm.clone()));
        Ok(Some(self.memory.save(run.be, tensors, (self.projections, self.constrained_steps, 0.0))?))
    }

    fn load(&mut self, run: &Run<'_, B>, ck: &Checkpoint, episodic: Option<&Value>, done: usize) -> Result<(), String> {
        let rec = self.memory.load(run, ck, episodic, done)?;
        // A permutation of the rows held when it was last drawn from (rebuilt when the memory has
        // grown since).
        let perm = saved::u32s(ck, "agem.perm")?.to_vec();
        if perm.len() > self.memory.rows() {
            return Err("tensor `agem.perm` indexes more rows than the memory holds".into());
        }
        self.restore_perm(perm).map_err(|e| format!("tensor `agem.perm`: {e}"))?;
        (self.projections, self.constrained_steps) = (rec.projections, rec.constrained_steps);
        Ok(())
    }

    fn carry(&mut self, run: &Run<'_, B>, carried: &Carried) -> Result<(), String> {
        self.memory.carry(run.be, carried)
    }
}
