//! Episodic memories for GEM and A-GEM.
//!
//! Storage: while a task trains, its memory is a buffer of `u32` positions into the task's
//! training samples, on the host (4 bytes a sample, no pixel copied; the host knows each batch's
//! positions since it drew the epoch's order). When the task ends, the chosen samples are
//! gathered ONCE on the backend, with the task's transform already applied (rotation or
//! permutation), and appended to one contiguous matrix holding every finished task's memory.
//! That costs `4 x 784` bytes a sample (784 KiB for 256 memories; 15 MiB for GEM's 19 finished
//! rotation tasks); at every step each finished task's memory is a window of that matrix, a
//! ready batch for the training step's forward and backward.
//!
//! * GEM (Lopez-Paz & Ranzato 2017, Sec. 3): "the last m examples" of each task. We reproduce
//!   the official code's ring buffer exactly: each batch is written at the buffer's cursor; a
//!   batch that does not fit is truncated at the end of the buffer (its remaining samples are
//!   not stored) and the cursor wraps to 0.
//! * A-GEM (Chaudhry et al. 2019): a ring buffer per class of each task, `m / C` slots per class
//!   (the first `m mod C` classes get one more), so a task keeps `m` samples balanced over its
//!   `C` classes; each class's buffer overwrites its oldest sample.

use crate::data::{Split, TaskData};
use crate::state::{RunBackend, RunError};
use engram_nn::TaskMask;
use engram_tape::{PixelMap, Tensor, View, ViewMut};
use std::ops::Range;

/// Which memory-filling rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// GEM's ring buffer of `m` samples (the official code's truncating variant).
    Ring,
    /// A-GEM: one ring buffer per class, `m` samples in all per task.
    PerClass {
        /// Number of classes (the network's outputs).
        classes: usize,
    },
}

/// The memory of the task being trained: positions into its training view.
#[derive(Clone, Debug)]
struct Current {
    /// GEM: `slots[0]` is the ring; A-GEM: one ring per class.
    slots: Vec<Vec<u32>>,
    /// Capacity of each ring.
    caps: Vec<usize>,
    /// Write cursor of each ring.
    cursor: Vec<usize>,
}

/// The finished tasks' rows of an episodic memory on the host (checkpoints, `--init-from`).
#[derive(Clone, Debug, Default)]
pub struct MemoryRows {
    /// Features, `rows x dim`.
    pub x: Vec<f32>,
    /// Labels.
    pub y: Vec<u32>,
    /// Each row's task.
    pub row_task: Vec<u32>,
    /// Each task's rows.
    pub blocks: Vec<Range<usize>>,
    /// Each task's multi-head mask.
    pub masks: Vec<Option<Vec<bool>>>,
}

/// Every finished task's memory as `f32` rows on the backend, plus the current task's buffer.
pub struct EpisodicMemory<B: RunBackend> {
    /// Samples per task (`m`).
    pub per_task: usize,
    /// Input features per row.
    pub dim: usize,
    /// Outputs of the network (the width of a mask).
    pub classes: usize,
    fill: Fill,
    /// Rows of every finished task, contiguous, row-major (`rows x dim`), on the backend.
    x: Option<Tensor<B>>,
    /// Their labels (`1 x rows`), on the backend.
    y: Option<Tensor<B, u32>>,
    /// Every row's mask (`rows x classes`), when a task has one (A-GEM's mixed batches).
    row_masks: Option<Tensor<B>>,
    /// Each finished task's mask (`1 x classes`), on the backend.
    mask_tensors: Vec<Option<Tensor<B>>>,
    /// The labels, on the host.
    pub labels: Vec<u32>,
    /// The task each row belongs to (index into `masks`).
    pub row_task: Vec<u32>,
    /// Row range of each finished task.
    pub blocks: Vec<Range<usize>>,
    /// Each finished task's multi-head mask (`allowed[class]`), `None` for a shared head.
    pub masks: Vec<Option<Vec<bool>>>,
    current: Current,
}

impl<B: RunBackend> EpisodicMemory<B> {
    /// An empty memory of `per_task` samples a task, rows of `dim` features, masks of `classes`.
    pub fn new(per_task: usize, dim: usize, classes: usize, fill: Fill) -> Self {
        let (caps, n) = match fill {
            Fill::Ring => (vec![per_task], 1),
            Fill::PerClass { classes } => {
                let c = classes.max(1);
                ((0..c).map(|i| per_task / c + usize::from(i < per_task % c)).collect(), c)
            }
        };
        let current =
            Current { slots: caps.iter().map(|&c| Vec::with_capacity(c)).collect(), caps, cursor: vec![0; n] };
        Self {
            per_task,
            dim,
            classes,
            fill,
            x: None,
            y: None,
            row_masks: None,
            mask_tensors: Vec::new(),
            labels: Vec::new(),
            row_task: Vec::new(),
            blocks: Vec::new(),
            masks: Vec::new(),
            current,
        }
    }

    /// Number of finished tasks held.
    pub fn tasks(&self) -> usize {
        self.blocks.len()
    }

    /// Number of rows held (all finished tasks).
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Bytes held: the rows, labels and task ids of finished tasks and the current buffer.
    pub fn bytes(&self) -> usize {
        4 * (self.rows() * self.dim + 2 * self.rows()) + 4 * self.current.slots.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Records a training batch of the current task (`positions` into its training samples,
    /// whose labels are `labels`, in batch order).
    pub fn observe(&mut self, labels: &[u32], positions: impl ExactSizeIterator<Item = usize>) {
        let cur = &mut self.current;
        match self.fill {
            Fill::Ring => {
                // The official code: endcnt = min(cnt + bsz, m); copy the first endcnt - cnt
                // samples; cnt = endcnt, wrapping to 0 when it reaches m.
                let m = cur.caps[0];
                if m == 0 {
                    return;
                }
                let ring = &mut cur.slots[0];
                let start = cur.cursor[0];
                let take = positions.len().min(m - start);
                for (i, p) in positions.take(take).enumerate() {
                    let at = start + i;
                    if at < ring.len() {
                        ring[at] = p as u32;
                    } else {
                        ring.push(p as u32);
                    }
                }
                cur.cursor[0] = if start + take == m { 0 } else { start + take };
            }
            Fill::PerClass { .. } => {
                for p in positions {
                    let c = labels[p] as usize;
                    let Some(cap) = cur.caps.get(c).copied() else { continue };
                    if cap == 0 {
                        continue;
                    }
                    let ring = &mut cur.slots[c];
                    let at = cur.cursor[c];
                    if at < ring.len() {
                        ring[at] = p as u32;
                    } else {
                        ring.push(p as u32);
                    }
                    cur.cursor[c] = (at + 1) % cap;
                }
            }
        }
    }

    /// Ends the current task `task`: its buffered samples are gathered on the backend (transform
    /// applied) into a new block of rows; `mask` is the task's multi-head mask, if any.
    pub fn finish_task(
        &mut self,
        be: &B,
        data: &TaskData<B>,
        task: usize,
        mask: Option<&[usize]>,
    ) -> Result<(), RunError> {
        let set = data.set(task, Split::Train);
        let mut positions: Vec<usize> = Vec::with_capacity(self.per_task);
        for ring in &self.current.slots {
            positions.extend(ring.iter().map(|&p| p as usize));
        }
        let rows: Vec<u32> = positions.iter().map(|&p| set.host_rows[p]).collect();
        let labels: Vec<u32> = positions.iter().map(|&p| set.host_labels[p]).collect();
        let old = self.rows();
        let mut x = Tensor::<B>::zeros(be, old + rows.len(), self.dim)?;
        if let Some(prev) = &self.x {
            be.copy(prev.view(), x.view_mut().rows(0, old))?;
        }
        if !rows.is_empty() {
            let idx = Tensor::<B, u32>::from_host(be, 1, rows.len(), &rows)?;
            be.gather_rows(data.images(), idx.view(), data.map(set.map), x.view_mut().rows(old, old + rows.len()))?;
        }
        let finished = MemoryRows {
            x: Vec::new(),
            y: labels,
            row_task: vec![self.blocks.len() as u32; rows.len()],
            blocks: std::iter::once(old..old + rows.len()).collect(),
            masks: vec![mask.map(|m| TaskMask::new(self.classes, m).flags().to_vec())],
        };
        self.x = Some(x);
        self.append(be, finished)?;
        for (ring, cursor) in self.current.slots.iter_mut().zip(&mut self.current.cursor) {
            ring.clear();
            *cursor = 0;
        }
        Ok(())
    }

    /// Appends the bookkeeping of finished rows (their features already in `self.x`) and
    /// uploads the labels and masks.
    fn append(&mut self, be: &B, rows: MemoryRows) -> Result<(), RunError> {
        self.labels.extend_from_slice(&rows.y);
        self.row_task.extend_from_slice(&rows.row_task);
        self.blocks.extend(rows.blocks);
        for m in rows.masks {
            let tensor = match &m {
                Some(flags) => Some(Tensor::from_host(be, 1, self.classes, &flag_values(flags))?),
                None => None,
            };
            self.mask_tensors.push(tensor);
            self.masks.push(m);
        }
        self.y = Some(Tensor::from_host(be, 1, self.labels.len(), &self.labels)?);
        self.row_masks = if self.masks.iter().any(Option::is_some) {
            let all = vec![true; self.classes];
            let table: Vec<f32> = self
                .row_task
                .iter()
                .flat_map(|&t| flag_values(self.masks[t as usize].as_deref().unwrap_or(&all)))
                .collect();
            Some(Tensor::from_host(be, self.rows(), self.classes, &table)?)
        } else {
            None
        };
        Ok(())
    }

    /// The rows of finished task `t` as a batch: features, labels and the task's mask.
    pub fn task_batch(&self, t: usize) -> engram_nn::Batch<'_, B> {
        let r = self.blocks[t].clone();
        let x = self.x.as_ref().expect("a finished task has rows");
        let y = self.y.as_ref().expect("a finished task has labels");
        engram_nn::Batch {
            x: x.view().rows(r.start, r.end),
            labels: y.view().range(r.start, r.end),
            mask: self.mask_tensors[t].as_ref().map(Tensor::view),
        }
    }

    /// Every finished task's rows at once: the features and labels of all of them, and one
    /// block per task (its rows and mask), for [`engram_nn::StepBuffers::block_gradients`].
    pub fn task_blocks(&self) -> (View<'_, B>, View<'_, B, u32>, Vec<engram_nn::Block<'_, B>>) {
        let x = self.x.as_ref().expect("a finished task has rows");
        let y = self.y.as_ref().expect("a finished task has labels");
        let n = self.rows();
        let blocks = self
            .blocks
            .iter()
            .zip(&self.mask_tensors)
            .map(|(r, m)| engram_nn::Block { rows: r.clone(), mask: m.as_ref().map(Tensor::view) })
            .collect();
        (x.view().rows(0, n), y.view().range(0, n), blocks)
    }

    /// Gathers the memory rows `idx` (`1 x k` on the backend) into `x` (`k x dim`), their labels
    /// into `y` (`k x 1`) and, when tasks have masks, their masks into `mask` (`k x classes`).
    pub fn gather(
        &self,
        be: &B,
        idx: View<'_, B, u32>,
        x: ViewMut<'_, B>,
        y: ViewMut<'_, B, u32>,
        mask: Option<ViewMut<'_, B>>,
    ) -> Result<(), RunError> {
        let (xs, ys) = (self.x.as_ref().expect("memory rows"), self.y.as_ref().expect("memory labels"));
        be.gather_rows(xs.view(), idx, PixelMap::Identity, x)?;
        be.gather_rows(ys.view().reshape(self.rows(), 1), idx, PixelMap::Identity, y)?;
        if let (Some(table), Some(m)) = (&self.row_masks, mask) {
            be.gather_rows(table.view(), idx, PixelMap::Identity, m)?;
        }
        Ok(())
    }

    /// Whether any finished task has a mask.
    pub fn has_masks(&self) -> bool {
        self.row_masks.is_some()
    }

    /// The finished rows on the host (a download; for checkpoints).
    pub fn finished_rows(&self, be: &B) -> Result<MemoryRows, RunError> {
        let x = match &self.x {
            Some(x) => x.to_host(be)?,
            None => Vec::new(),
        };
        Ok(MemoryRows {
            x,
            y: self.labels.clone(),
            row_task: self.row_task.clone(),
            blocks: self.blocks.clone(),
            masks: self.masks.clone(),
        })
    }

    /// Positions buffered for the current task so far (GEM: in ring order; A-GEM: class by class).
    pub fn current_positions(&self) -> Vec<u32> {
        self.current.slots.iter().flatten().copied().collect()
    }

    /// The current task's buffer, for a checkpoint: each ring's length and write cursor (the
    /// positions themselves are [`Self::current_positions`]).
    pub fn current_rings(&self) -> (Vec<usize>, Vec<usize>) {
        (self.current.slots.iter().map(Vec::len).collect(), self.current.cursor.clone())
    }

    /// Restores the current task's buffer from a checkpoint: `positions` split into rings of
    /// `lens`, with write cursors `cursor`. Refuses shapes this memory could not have produced.
    pub fn restore_current(&mut self, positions: &[u32], lens: &[usize], cursor: &[usize]) -> Result<(), String> {
        let caps = &self.current.caps;
        if lens.len() != caps.len() || cursor.len() != caps.len() {
            return Err(format!("the memory has {} ring(s); the checkpoint describes {}", caps.len(), lens.len()));
        }
        if lens.iter().sum::<usize>() != positions.len() {
            return Err("the ring lengths do not add up to the buffered positions".into());
        }
        for (i, ((&l, &c), &cap)) in lens.iter().zip(cursor).zip(caps).enumerate() {
            // A ring fills up to its capacity with the cursor at its end, then wraps.
            let fits = l <= cap && ((cap == 0 && c == 0) || (c < cap && (l == cap || c == l)));
            if !fits {
                return Err(format!("ring {i}: length {l} and cursor {c} do not fit its capacity {cap}"));
            }
        }
        let mut at = 0;
        for ((ring, &l), (cur, &c)) in
            self.current.slots.iter_mut().zip(lens).zip(self.current.cursor.iter_mut().zip(cursor))
        {
            ring.clear();
            ring.extend_from_slice(&positions[at..at + l]);
            at += l;
            *cur = c;
        }
        Ok(())
    }

    /// Restores the finished tasks' rows from a checkpoint (the memory must be empty). Checks
    /// that the pieces fit together (`x` is `rows x dim`, the blocks cover the rows in order, each
    /// row's task is its block's), then uploads them.
    pub fn restore_finished(&mut self, be: &B, rows: MemoryRows) -> Result<(), String> {
        let n = rows.y.len();
        if rows.x.len() != n.checked_mul(self.dim).ok_or("too many rows")? || rows.row_task.len() != n {
            return Err(format!(
                "{} features, {} labels and {} task ids do not make rows of {} features",
                rows.x.len(),
                n,
                rows.row_task.len(),
                self.dim
            ));
        }
        if rows.masks.len() != rows.blocks.len() {
            return Err(format!("{} masks for {} tasks", rows.masks.len(), rows.blocks.len()));
        }
        if rows.masks.iter().flatten().any(|m| m.len() != self.classes) {
            return Err(format!("a task's mask does not have the network's {} outputs", self.classes));
        }
        let mut end = 0;
        for (t, b) in rows.blocks.iter().enumerate() {
            if b.start != end || b.end < b.start || b.end > n {
                return Err(format!("task {t}'s rows {b:?} do not follow the previous task's"));
            }
            if rows.row_task[b.clone()].iter().any(|&r| r as usize != t) {
                return Err(format!("rows {b:?} are not all marked as task {t}'s"));
            }
            end = b.end;
        }
        if end != n {
            return Err(format!("the tasks' rows end at {end}, but there are {n}"));
        }
        // Every label one of the network's classes, and one its task may predict.
        for (t, b) in rows.blocks.iter().enumerate() {
            for &y in &rows.y[b.clone()] {
                let allowed = rows.masks[t].as_ref().is_none_or(|m| m.get(y as usize) == Some(&true));
                if y as usize >= self.classes || !allowed {
                    return Err(format!("task {t}'s memory holds label {y}, not one of the task's classes"));
                }
            }
        }
        let upload = || -> Result<(), RunError> {
            self.x = Some(Tensor::from_host(be, n, self.dim, &rows.x)?);
            self.append(be, MemoryRows { x: Vec::new(), ..rows })
        };
        upload().map_err(|e| e.to_string())
    }
}

fn flag_values(flags: &[bool]) -> Vec<f32> {
    flags.iter().map(|&a| if a { 1.0 } else { 0.0 }).collect()
}

/// The episodic memory's bookkeeping in a checkpoint's manifest (`run.episodic`); its arrays are
/// tensors (`episodic.x`, `episodic.y`, `episodic.row_task`, `episodic.current`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodicRecord {
    blocks: Vec<[usize; 2]>,
    masks: Vec<Option<Vec<bool>>>,
    ring_lengths: Vec<usize>,
    ring_cursors: Vec<usize>,
    /// Steps whose gradient was projected.
    pub projections: usize,
    /// Steps taken with at least one finished task in memory.
    pub constrained_steps: usize,
    /// Largest KKT violation of any QP solved (GEM).
    pub worst_kkt: f64,
}

impl<B: RunBackend> EpisodicMemory<B> {
    /// GEM and A-GEM's first move at every step (GEM paper Alg. 1): store the batch's samples of
    /// task `task` in its buffer. Returns whether a finished task's memory holds rows, i.e.
    /// whether the step is constrained.
    pub fn observe_batch(&mut self, data: &TaskData<B>, task: usize, batch: &[(u32, u32)]) -> bool {
        let labels = &data.set(task, Split::Train).host_labels;
        self.observe(labels, batch.iter().map(|&(_, p)| p as usize));
        self.tasks() > 0 && self.rows() > 0
    }

    /// Takes the finished tasks' memories a trained model carries (`--init-from`), if any.
    pub fn carry(&mut self, be: &B, carried: &super::Carried) -> Result<(), String> {
        match &carried.memory {
            Some(rows) => self
                .restore_finished(be, rows.clone())
                .map_err(|e| format!("the carried episodic memory does not fit: {e}")),
            None => Ok(()),
        }
    }

    /// The memory's tensors and record, for a checkpoint (`counters`: projections, constrained
    /// steps, worst KKT violation).
    pub fn save(
        &self,
        be: &B,
        tensors: &mut std::collections::BTreeMap<String, engram_ckpt::Tensor>,
        counters: (usize, usize, f64),
    ) -> Result<serde_json::Value, RunError> {
        use engram_ckpt::{Data, Tensor as Saved};
        let rows = self.finished_rows(be)?;
        tensors.insert("episodic.x".into(), Saved::matrix(self.rows(), Data::F32(rows.x)));
        tensors.insert("episodic.y".into(), Saved::u32(rows.y));
        tensors.insert("episodic.row_task".into(), Saved::u32(rows.row_task));
        tensors.insert("episodic.current".into(), Saved::u32(self.current_positions()));
        let (ring_lengths, ring_cursors) = self.current_rings();
        let rec = EpisodicRecord {
            blocks: self.blocks.iter().map(|b| [b.start, b.end]).collect(),
            masks: self.masks.clone(),
            ring_lengths,
            ring_cursors,
            projections: counters.0,
            constrained_steps: counters.1,
            worst_kkt: counters.2,
        };
        Ok(serde_json::to_value(rec).expect("an episodic record serializes"))
    }

    /// Restores the memory from a checkpoint written after `phases_done` phases; returns its
    /// record (for the method's counters).
    pub fn load(
        &mut self,
        run: &crate::state::Run<'_, B>,
        ck: &engram_ckpt::Checkpoint,
        record: Option<&serde_json::Value>,
        phases_done: usize,
    ) -> Result<EpisodicRecord, String> {
        let be = run.be;
        let Some(record) = record else {
            return Err("the checkpoint's episodic memory does not match the method".into());
        };
        let rec: EpisodicRecord = serde_json::from_value(record.clone())
            .map_err(|e| format!("the manifest's episodic record is invalid: {e}"))?;
        let rows = memory_rows(ck, &rec, self.dim)?;
        if rows.blocks.len() > phases_done {
            return Err(format!(
                "the episodic memory holds {} tasks after {} finished",
                rows.blocks.len(),
                phases_done
            ));
        }
        // Finished task t's mask is the scenario's task t's.
        for (t, m) in rows.masks.iter().enumerate() {
            let want = run.scenario.tasks.get(t).and_then(|task| task.mask.as_deref());
            let want = want.map(|m| TaskMask::new(self.classes, m).flags().to_vec());
            if *m != want {
                return Err(format!("the episodic memory's mask of task {} is not the scenario's", t + 1));
            }
        }
        if !(rec.worst_kkt.is_finite() && rec.worst_kkt >= 0.0) {
            return Err(format!("the episodic record's worst_kkt is {}; a KKT violation is >= 0", rec.worst_kkt));
        }
        self.restore_finished(be, rows).map_err(|e| format!("episodic memory: {e}"))?;
        let current = crate::saved::u32s(ck, "episodic.current")?;
        self.restore_current(current, &rec.ring_lengths, &rec.ring_cursors)
            .map_err(|e| format!("episodic memory: {e}"))?;
        Ok(rec)
    }
}

/// The finished tasks' rows of a checkpoint's memory, on the host.
pub fn memory_rows(ck: &engram_ckpt::Checkpoint, rec: &EpisodicRecord, dim: usize) -> Result<MemoryRows, String> {
    let y = crate::saved::u32s(ck, "episodic.y")?.to_vec();
    let x =
        crate::saved::f32s(ck, "episodic.x", y.len().checked_mul(dim).ok_or("episodic memory too large")?)?.to_vec();
    crate::saved::finite("episodic.x", &x)?;
    Ok(MemoryRows {
        x,
        y,
        row_task: crate::saved::u32s(ck, "episodic.row_task")?.to_vec(),
        blocks: rec.blocks.iter().map(|&[s, e]| s..e).collect(),
        masks: rec.masks.clone(),
    })
}
