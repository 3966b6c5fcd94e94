//! The tasks' data on the backend, uploaded once per run.
//!
//! * The images: the MNIST splits the tasks read (each uploaded once, as the host holds them),
//!   and every rotated task's samples, rotated ONCE per run on the host (the same bilinear
//!   arithmetic as [`engram_mnist::Rotator`]) and uploaded: an evaluation never rotates again.
//! * The permutations: one row of pixel indices per permuted task, applied by the gather kernel
//!   when a batch or an evaluation chunk is drawn (a permuted task costs 784 indices, not a copy).
//! * Per task and split (train, test): the row of each sample in the images and its label.
//! * Per task: the multi-head mask (`1 x outputs`), and a table of every task's mask (`tasks x
//!   outputs`) from which joint training gathers a mask per row.
//!
//! A batch is then a gather by index on the backend: the host uploads each epoch's sample order
//! once (a row and a label per sample, [`EpochOrder`]) and nothing per step.

use crate::scenario::{Scenario, Transform, View as HostView, SIDE};
use engram_nn::{Samples, TaskMask};
use engram_tape::{Backend, PixelMap, Result, Tensor, View, ViewMut};
use std::sync::Arc;

/// Images rotated and uploaded at a time (3 MB of host staging).
const ROTATE_CHUNK: usize = 1024;

/// One split of one task on the backend.
pub struct SampleSet<B: Backend> {
    /// The row of each sample in [`TaskData`]'s images (`1 x len`).
    pub rows: Tensor<B, u32>,
    /// The label of each sample (`1 x len`).
    pub labels: Tensor<B, u32>,
    /// The permutation applied when reading a row (an index into the maps), if any.
    pub map: Option<u32>,
    /// The same rows and labels on the host (to build epoch orders and memories).
    pub host_rows: Vec<u32>,
    /// See `host_rows`.
    pub host_labels: Vec<u32>,
    /// `Some(r)` when the rows are `r, r + 1, ...` (read in place by an evaluation).
    pub first_row: Option<usize>,
}

impl<B: Backend> SampleSet<B> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.host_rows.len()
    }

    /// True when the set holds no sample.
    pub fn is_empty(&self) -> bool {
        self.host_rows.is_empty()
    }
}

/// The training and test samples of one task.
pub struct TaskSets<B: Backend> {
    /// Training samples.
    pub train: SampleSet<B>,
    /// Test samples (or the validation samples of a validation split).
    pub test: SampleSet<B>,
}

/// Which split of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training samples.
    Train,
    /// The test samples.
    Test,
}

/// Every task's data on the backend.
pub struct TaskData<B: Backend> {
    images: Tensor<B>,
    /// One permutation per row (`maps x dim`); row 0 is the identity when any task permutes.
    maps: Option<Tensor<B, u32>>,
    /// Per task, its training and test samples.
    pub tasks: Vec<TaskSets<B>>,
    /// Per task, its mask (`1 x outputs`), if any.
    pub masks: Vec<Option<Tensor<B>>>,
    /// Every task's mask as one row (all ones for a task without one): `tasks x outputs`.
    pub mask_table: Tensor<B>,
    /// Input features per sample.
    pub dim: usize,
}

/// Where a host view's samples come from in the uploaded images.
enum Source {
    /// Rows of a shared split uploaded at this row offset.
    Split { offset: usize },
    /// Rows appended for this view (a rotation), at this row offset.
    Own { offset: usize },
}

impl<B: Backend<T = f32>> TaskData<B> {
    /// Uploads `scenario`'s data to `be`: each shared split once, every rotated view rotated
    /// once, the permutations, rows, labels and masks.
    pub fn upload(be: &B, scenario: &Scenario) -> Result<Self> {
        let dim = scenario.tasks.first().map_or(SIDE * SIDE, |t| t.train.split.dim);
        // The shared splits read by an unrotated view, each once (by identity of the Arc).
        let mut splits: Vec<Arc<engram_mnist::Split>> = Vec::new();
        let mut total = 0usize;
        let mut own_rows = 0usize;
        for view in scenario.tasks.iter().flat_map(|t| [&t.train, &t.test]) {
            match view.transform {
                Transform::Rotate(_) => own_rows += view.len(),
                _ => {
                    if !splits.iter().any(|s| Arc::ptr_eq(s, &view.split)) {
                        total += view.split.n;
                        splits.push(view.split.clone());
                    }
                }
            }
        }
        let mut images = Tensor::<B>::zeros(be, total + own_rows, dim)?;
        let mut split_offsets = Vec::with_capacity(splits.len());
        let mut at = 0;
        for s in &splits {
            be.upload_into(&s.images, ViewMut::new(&mut images.buf, at * dim, s.n, dim))?;
            split_offsets.push(at);
            at += s.n;
        }
        // Permutations: row 0 the identity, then one per permuted task (shared by its splits).
        let mut map_rows: Vec<u32> = Vec::new();
        let mut perms: Vec<Arc<Vec<u32>>> = Vec::new();
        let mut tasks = Vec::with_capacity(scenario.tasks.len());
        for task in &scenario.tasks {
            let mut sets = Vec::with_capacity(2);
            for view in [&task.train, &task.test] {
                let source = match view.transform {
                    Transform::Rotate(_) => {
                        // Rotated a few thousand images at a time, straight into the images
                        // on the CPU (in parallel, no staging copy), through a small staging
                        // buffer elsewhere (a 10,000-image test set would double the memory).
                        let offset = at;
                        for start in (0..view.len()).step_by(ROTATE_CHUNK) {
                            let end = (start + ROTATE_CHUNK).min(view.len());
                            let dst = ViewMut::new(&mut images.buf, at * dim, end - start, dim);
                            be.upload_with(dst, &mut |x| view.fill_images(start..end, x))?;
                            at += end - start;
                        }
                        Source::Own { offset }
                    }
                    _ => {
                        let i = splits.iter().position(|s| Arc::ptr_eq(s, &view.split)).expect("split uploaded");
                        Source::Split { offset: split_offsets[i] }
                    }
                };
                let map = match &view.transform {
                    Transform::Permute(p) => {
                        let id = match perms.iter().position(|q| Arc::ptr_eq(q, p)) {
                            Some(i) => i + 1,
                            None => {
                                if map_rows.is_empty() {
                                    map_rows.extend(0..dim as u32);
                                }
                                map_rows.extend_from_slice(p);
                                perms.push(p.clone());
                                perms.len()
                            }
                        };
                        Some(id as u32)
                    }
                    _ => None,
                };
                sets.push(sample_set(be, view, &source, map)?);
            }
            let test = sets.pop().expect("two sets");
            let train = sets.pop().expect("two sets");
            tasks.push(TaskSets { train, test });
        }
        let maps =
            if map_rows.is_empty() { None } else { Some(Tensor::from_host(be, map_rows.len() / dim, dim, &map_rows)?) };
        let outputs = scenario.outputs;
        let task_masks: Vec<Option<TaskMask>> =
            scenario.tasks.iter().map(|t| t.mask.as_ref().map(|m| TaskMask::new(outputs, m))).collect();
        let masks =
            task_masks.iter().map(|m| m.as_ref().map(|m| m.tensor(be)).transpose()).collect::<Result<Vec<_>>>()?;
        let table: Vec<f32> = task_masks
            .iter()
            .flat_map(|m| (0..outputs).map(move |c| if m.as_ref().is_none_or(|m| m.allows(c)) { 1.0 } else { 0.0 }))
            .collect();
        let mask_table = Tensor::from_host(be, scenario.tasks.len(), outputs, &table)?;
        Ok(Self { images, maps, tasks, masks, mask_table, dim })
    }

    /// The images samples are gathered from.
    pub fn images(&self) -> View<'_, B> {
        self.images.view()
    }

    /// The pixel map of `id` (a row of the maps).
    pub fn map(&self, id: Option<u32>) -> PixelMap<'_, B> {
        match (id, &self.maps) {
            (Some(i), Some(m)) => PixelMap::Shared(m.view().rows(i as usize, i as usize + 1)),
            _ => PixelMap::Identity,
        }
    }

    /// Every map, for a gather whose rows use different maps (row 0 is the identity).
    pub fn maps(&self) -> Option<View<'_, B, u32>> {
        self.maps.as_ref().map(Tensor::view)
    }

    /// One split of task `task`.
    pub fn set(&self, task: usize, split: Split) -> &SampleSet<B> {
        match split {
            Split::Train => &self.tasks[task].train,
            Split::Test => &self.tasks[task].test,
        }
    }

    /// One split of task `task` as evaluation samples, with the task's mask.
    pub fn samples(&self, task: usize, split: Split) -> Samples<'_, B> {
        let set = self.set(task, split);
        Samples {
            images: self.images(),
            rows: set.rows.view(),
            labels: set.labels.view(),
            map: self.map(set.map),
            mask: self.masks[task].as_ref().map(Tensor::view),
            first_row: set.first_row,
        }
    }

    /// Bytes held on the backend by the images (the largest part).
    pub fn image_bytes(&self) -> u64 {
        4 * self.images.len() as u64
    }
}

fn sample_set<B: Backend<T = f32>>(be: &B, view: &HostView, source: &Source, map: Option<u32>) -> Result<SampleSet<B>> {
    let n = view.len();
    let host_rows: Vec<u32> = match *source {
        Source::Split { offset } => (0..n).map(|p| (offset + view.sample(p)) as u32).collect(),
        Source::Own { offset } => (0..n).map(|p| (offset + p) as u32).collect(),
    };
    let host_labels: Vec<u32> = (0..n).map(|p| view.label(p)).collect();
    let first_row =
        host_rows.first().map(|&r| r as usize).filter(|&r| host_rows.iter().zip(r..).all(|(&x, i)| x as usize == i));
    Ok(SampleSet {
        rows: Tensor::from_host(be, 1, n, &host_rows)?,
        labels: Tensor::from_host(be, 1, n, &host_labels)?,
        map,
        host_rows,
        host_labels,
        first_row,
    })
}

/// One epoch's sample order on the backend: per sample its image row and label (and, when a
/// phase mixes tasks, its task and pixel map), uploaded once per epoch; each step's batch is a
/// window of it.
pub struct EpochOrder<B: Backend> {
    /// Image rows, in order (`1 x n`).
    pub rows: Tensor<B, u32>,
    /// Labels, in order.
    pub labels: Tensor<B, u32>,
    /// Task of each sample (phases mixing masked tasks: the row of the mask table).
    pub tasks: Option<Tensor<B, u32>>,
    /// Pixel map of each sample (phases mixing tasks with different maps).
    pub map_ids: Option<Tensor<B, u32>>,
    /// The one map of a single-task phase.
    pub map: Option<u32>,
    staging: OrderStaging,
}

/// The host's copy of an epoch's order, built before its upload (kept to reuse its memory).
#[derive(Default)]
struct OrderStaging {
    rows: Vec<u32>,
    labels: Vec<u32>,
    tasks: Vec<u32>,
    map_ids: Vec<u32>,
}

impl<B: Backend<T = f32>> EpochOrder<B> {
    /// Buffers for the `n` samples of a phase over `phase`'s tasks.
    pub fn new(be: &B, data: &TaskData<B>, phase: &[usize], n: usize) -> Result<Self> {
        let single = phase.len() == 1;
        let mixed_masks = !single && data.masks.iter().any(Option::is_some);
        let mixed_maps = !single && phase.iter().any(|&t| data.tasks[t].train.map.is_some());
        Ok(Self {
            rows: Tensor::zeros(be, 1, n)?,
            labels: Tensor::zeros(be, 1, n)?,
            tasks: if mixed_masks { Some(Tensor::zeros(be, 1, n)?) } else { None },
            map_ids: if mixed_maps { Some(Tensor::zeros(be, 1, n)?) } else { None },
            map: if single { data.tasks[phase[0]].train.map } else { None },
            staging: Default::default(),
        })
    }

    /// Uploads the order `samples` (`(task, position)` pairs): one upload per buffer.
    pub fn upload(&mut self, be: &B, data: &TaskData<B>, samples: &[(u32, u32)]) -> Result<()> {
        let staged = &mut self.staging;
        staged.rows.clear();
        staged.labels.clear();
        staged.tasks.clear();
        staged.map_ids.clear();
        for &(t, p) in samples {
            let set = &data.tasks[t as usize].train;
            staged.rows.push(set.host_rows[p as usize]);
            staged.labels.push(set.host_labels[p as usize]);
            staged.tasks.push(t);
            staged.map_ids.push(set.map.unwrap_or(0));
        }
        be.upload_into(&staged.rows, self.rows.view_mut())?;
        be.upload_into(&staged.labels, self.labels.view_mut())?;
        if let Some(t) = self.tasks.as_mut() {
            be.upload_into(&staged.tasks, t.view_mut())?;
        }
        if let Some(m) = self.map_ids.as_mut() {
            be.upload_into(&staged.map_ids, m.view_mut())?;
        }
        Ok(())
    }

    /// Gathers samples `start..end` of the epoch into `x` (`(end - start) x dim`), and, when the
    /// phase mixes masked tasks, their masks into `mask` (`(end - start) x outputs`).
    pub fn gather(
        &self,
        be: &B,
        data: &TaskData<B>,
        (start, end): (usize, usize),
        x: ViewMut<'_, B>,
        mask: Option<ViewMut<'_, B>>,
    ) -> Result<()> {
        let rows = self.rows.view().range(start, end);
        let map = match (&self.map_ids, data.maps()) {
            (Some(ids), Some(maps)) => PixelMap::PerRow { ids: ids.view().range(start, end), maps },
            _ => data.map(self.map),
        };
        be.gather_rows(data.images(), rows, map, x)?;
        if let (Some(tasks), Some(m)) = (&self.tasks, mask) {
            be.gather_rows(data.mask_table.view(), tasks.view().range(start, end), PixelMap::Identity, m)?;
        }
        Ok(())
    }

    /// The labels of samples `start..end`.
    pub fn labels(&self, start: usize, end: usize) -> View<'_, B, u32> {
        self.labels.view().range(start, end)
    }
}
