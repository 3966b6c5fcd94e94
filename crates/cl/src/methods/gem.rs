//! Gradient Episodic Memory (Lopez-Paz & Ranzato 2017).
//!
//! GEM keeps the last `m` samples of each finished task ([`EpisodicMemory`], ring buffer). At
//! every step (paper Alg. 1, Eq. 6-7, Sec. 3), with `g` the gradient of the current batch and
//! `g_k` the gradient of the loss on task `k`'s memory: step with `g` when `<g, g_k> >= 0` for
//! every finished `k`; otherwise solve the dual QP (Eq. 11-13, [`super::qp`]) for `v` and step with
//! `g~ = G' v + g`. As the official code, the bound is `v >= memory_strength` and `G G'` gets
//! `1e-3` on its diagonal ([`super::qp::OFFICIAL_REG`]).
//!
//! The memory gradients come from the training step's own forward and backward, every finished
//! task's memory in one pass ([`engram_nn::StepBuffers::block_gradients`]: one forward over all
//! the rows, one loss and parameter gradient per task, bit for bit the separate passes), each
//! written into a row of `G` on the backend. The host receives the `k` dot products `G g` and, when one is negative, the `k x k`
//! Gram matrix; it solves the QP and sends `v` back (`k` numbers).

use super::episodic::{EpisodicMemory, Fill};
use super::qp::{QpSolver, OFFICIAL_REG};
use super::{Carried, Strategy};
use crate::state::{Run, RunBackend, RunError, RunState};
use engram_ckpt::Checkpoint;
use engram_nn::StepBuffers;
use engram_tape::{Tensor, View, ViewMut};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

/// GEM's state: the memory, the memory gradients and the QP solver, kept between steps.
pub struct Gem<B: RunBackend> {
    memory: EpisodicMemory<B>,
    /// The margin `gamma` (`memory_strength`): the dual's bound `v >= gamma`.
    strength: f64,
    /// Ridge added to `G G'`.
    reg: f64,
    /// The memory gradients, one row per finished task (`k x P`).
    g_mem: Option<Tensor<B>>,
    /// Their losses (`1 x k`, unread).
    losses: Option<Tensor<B>>,
    /// The forward and backward's buffers, kept between steps.
    step: Option<StepBuffers<B>>,
    solver: QpSolver,
    projections: usize,
    constrained_steps: usize,
    worst_kkt: f64,
}

impl<B: RunBackend> Gem<B> {
    /// An empty memory of `run.cfg.memories` samples per task.
    pub fn new(run: &Run<'_, B>) -> Self {
        let dim = run.data.dim;
        Self {
            memory: EpisodicMemory::new(run.cfg.memories, dim, run.scenario.outputs, Fill::Ring),
            strength: run.cfg.memory_strength as f64,
            reg: OFFICIAL_REG,
            g_mem: None,
            losses: None,
            step: None,
            solver: QpSolver::new(),
            projections: 0,
            constrained_steps: 0,
            worst_kkt: 0.0,
        }
    }
}

/// GEM's projection (paper Eq. 10-13) of the batch gradient `g` against the memory gradients
/// `g_mem` (`k x P`, one row per finished task): when `<g, g_k> >= 0` for every `k`, `g` is left
/// untouched bit for bit and `None` is returned; otherwise the dual QP
/// `min 1/2 v'(G G' + reg I)v + g'G'v, v >= strength` is solved on the host and
/// `g <- G' v + g` on the backend, and the QP's KKT violation is returned.
pub fn project<B: RunBackend>(
    be: &B,
    solver: &mut QpSolver,
    g: &mut B::Buffer<f32>,
    g_mem: View<'_, B>,
    strength: f64,
    reg: f64,
) -> Result<Option<f64>, RunError> {
    let k = g_mem.rows;
    let mut dots = Tensor::<B, f64>::zeros(be, 1, k)?;
    be.dots_f64(g_mem, View::row_of(be, &*g), dots.view_mut())?;
    let b = dots.to_host(be)?;
    if b.iter().all(|&d| d >= 0.0) {
        return Ok(None);
    }
    let mut gram = Tensor::<B, f64>::zeros(be, k, k)?;
    be.gram_f64(g_mem, gram.view_mut())?;
    let mut a = gram.to_host(be)?;
    for i in 0..k {
        a[i * k + i] += reg;
    }
    let (v, stats) = solver
        .solve(&a, &b, strength)
        .map_err(|e| RunError::Invalid(format!("GEM's quadratic program failed: {e}")))?;
    let kkt = stats.kkt;
    let v = Tensor::<B, f64>::from_host(be, 1, k, v)?;
    be.combine_f64(ViewMut::row_of(be, g), g_mem, v.view())?;
    Ok(Some(kkt))
}

impl<B: RunBackend> Strategy<B> for Gem<B> {
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
        let k = self.memory.tasks();
        self.constrained_steps += 1;
        let t0 = Instant::now();
        let p = model.num_params();
        if self.g_mem.as_ref().is_none_or(|g| g.rows != k) {
            self.g_mem = Some(Tensor::zeros(be, k, p)?);
        }
        if self.losses.as_ref().is_none_or(|l| l.cols != k) {
            self.losses = Some(Tensor::zeros(be, 1, k)?);
        }
        let g_mem = self.g_mem.as_mut().expect("allocated");
        let losses = self.losses.as_mut().expect("allocated");
        let step = match &mut self.step {
            Some(s) => s,
            None => self.step.insert(StepBuffers::new(be, model, self.memory.rows())?),
        };
        let (x, labels, blocks) = self.memory.task_blocks();
        step.block_gradients(be, model, &st.theta, x, labels, &blocks, g_mem.view_mut(), losses.view_mut())?;
        let t1 = Instant::now();
        st.profile.memory_gradients += (t1 - t0).as_secs_f64();
        let g_mem = self.g_mem.as_ref().expect("allocated");
        let projected = project(be, &mut self.solver, &mut st.grad, g_mem.view(), self.strength, self.reg)
            .map_err(|e| RunError::Invalid(format!("on task {} ({}): {e}", task + 1, run.scenario.tasks[task].name)))?;
        if let Some(kkt) = projected {
            self.worst_kkt = self.worst_kkt.max(kkt);
            self.projections += 1;
        }
        st.profile.projection += t1.elapsed().as_secs_f64();
        Ok(())
    }

    fn end_phase(&mut self, run: &Run<'_, B>, _st: &mut RunState<B>, task: usize) -> Result<(), RunError> {
        self.memory.finish_task(run.be, run.data, task, run.scenario.tasks[task].mask.as_deref())
    }

    fn state_bytes(&self, run: &Run<'_, B>) -> usize {
        self.memory.bytes() + self.g_mem.as_ref().map_or(0, |g| 4 * run.be.buffer_len(&g.buf))
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
        let counters = (self.projections, self.constrained_steps, self.worst_kkt);
        Ok(Some(self.memory.save(run.be, tensors, counters)?))
    }

    fn load(&mut self, run: &Run<'_, B>, ck: &Checkpoint, episodic: Option<&Value>, done: usize) -> Result<(), String> {
        let rec = self.memory.load(run, ck, episodic, done)?;
        (self.projections, self.constrained_steps, self.worst_kkt) =
            (rec.projections, rec.constrained_steps, rec.worst_kkt);
        Ok(())
    }

    fn carry(&mut self, run: &Run<'_, B>, carried: &Carried) -> Result<(), String> {
        self.memory.carry(run.be, carried)
    }
}
