//! Episodic memories for GEM and A-GEM.
//!
//! Storage: while a task trains, its memory is a buffer of `u32` positions into the task's
//! training view (4 bytes a sample, no pixel copied). When the task ends, the chosen samples
//! are materialised ONCE as `f32` rows with the task's transform already applied (rotation or
//! permutation), appended to one contiguous matrix holding every finished task's memory. That
//! costs `4 x 784` bytes a sample (784 KiB for 256 memories; 15 MiB for GEM's 19 finished
//! rotation tasks) and buys the GEM step its speed: at every step the memory gradients of all
//! finished tasks come out of one batched pass over that matrix, with no image re-rotated and
//! nothing gathered or copied.
//!
//! * GEM (Lopez-Paz & Ranzato 2017, Sec. 3): "the last m examples" of each task. We reproduce
//!   the official code's ring buffer exactly: each batch is written at the buffer's cursor; a
//!   batch that does not fit is truncated at the end of the buffer (its remaining samples are
//!   not stored) and the cursor wraps to 0.
//! * A-GEM (Chaudhry et al. 2019): a ring buffer per class of each task, `m / C` slots per class
//!   (the first `m mod C` classes get one more), so a task keeps `m` samples balanced over its
//!   `C` classes; each class's buffer overwrites its oldest sample.

use crate::scenario::View;
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

/// Every finished task's memory as `f32` rows, plus the current task's buffer.
#[derive(Clone, Debug)]
pub struct EpisodicMemory {
    /// Samples per task (`m`).
    pub per_task: usize,
    /// Input features per row.
    pub dim: usize,
    fill: Fill,
    /// Rows of every finished task, contiguous, row-major (`rows x dim`).
    pub x: Vec<f32>,
    /// Their labels.
    pub y: Vec<u32>,
    /// The task each row belongs to (index into `masks`).
    pub row_task: Vec<u32>,
    /// Row range of each finished task in `x`.
    pub blocks: Vec<Range<usize>>,
    /// Each finished task's multi-head mask (`allowed[class]`), `None` for a shared head.
    pub masks: Vec<Option<Vec<bool>>>,
    current: Current,
}

impl EpisodicMemory {
    /// An empty memory of `per_task` samples a task, rows of `dim` features.
    pub fn new(per_task: usize, dim: usize, fill: Fill) -> Self {
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
            fill,
            x: Vec::new(),
            y: Vec::new(),
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
        self.y.len()
    }

    /// Bytes held: the rows, labels and task ids of finished tasks and the current buffer.
    pub fn bytes(&self) -> usize {
        4 * (self.x.capacity() + self.y.capacity() + self.row_task.capacity())
            + 4 * self.current.slots.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Records a training batch of the current task (`positions` into `view`, in batch order).
    pub fn observe(&mut self, view: &View, positions: impl ExactSizeIterator<Item = usize>) {
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
                    let c = view.label(p) as usize;
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

    /// Ends the current task: its buffered samples become `f32` rows (transform applied) and a
    /// new block; `mask` is the task's multi-head mask over `classes` outputs, if any.
    pub fn finish_task(&mut self, view: &View, mask: Option<&[usize]>, classes: usize) {
        let start = self.rows();
        let task = self.blocks.len() as u32;
        let mut positions: Vec<usize> = Vec::with_capacity(self.per_task);
        for ring in &self.current.slots {
            positions.extend(ring.iter().map(|&p| p as usize));
        }
        view.fill(positions.iter().copied(), &mut self.x, &mut self.y);
        self.row_task.resize(self.y.len(), task);
        self.blocks.push(start..self.rows());
        self.masks.push(mask.map(|m| {
            let mut a = vec![false; classes];
            for &c in m {
                if c < classes {
                    a[c] = true;
                }
            }
            a
        }));
        for (ring, cursor) in self.current.slots.iter_mut().zip(&mut self.current.cursor) {
            ring.clear();
            *cursor = 0;
        }
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
    /// row's task is its block's).
    pub fn restore_finished(
        &mut self,
        x: Vec<f32>,
        y: Vec<u32>,
        row_task: Vec<u32>,
        blocks: Vec<Range<usize>>,
        masks: Vec<Option<Vec<bool>>>,
    ) -> Result<(), String> {
        let rows = y.len();
        if x.len() != rows.checked_mul(self.dim).ok_or("too many rows")? || row_task.len() != rows {
            return Err(format!(
                "{} features, {} labels and {} task ids do not make rows of {} features",
                x.len(),
                rows,
                row_task.len(),
                self.dim
            ));
        }
        if masks.len() != blocks.len() {
            return Err(format!("{} masks for {} tasks", masks.len(), blocks.len()));
        }
        let mut end = 0;
        for (t, b) in blocks.iter().enumerate() {
            if b.start != end || b.end < b.start || b.end > rows {
                return Err(format!("task {t}'s rows {b:?} do not follow the previous task's"));
            }
            if row_task[b.clone()].iter().any(|&r| r as usize != t) {
                return Err(format!("rows {b:?} are not all marked as task {t}'s"));
            }
            end = b.end;
        }
        if end != rows {
            return Err(format!("the tasks' rows end at {end}, but there are {rows}"));
        }
        self.x = x;
        self.y = y;
        self.row_task = row_task;
        self.blocks = blocks;
        self.masks = masks;
        Ok(())
    }
}
