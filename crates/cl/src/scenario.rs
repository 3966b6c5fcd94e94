//! Continual-learning scenarios built on one shared, in-memory copy of MNIST.
//!
//! A task never copies the images: it is a view (optional sample indices, a label map and an
//! input transform) over the shared training or test split. Permutations and rotations are
//! applied when a batch or an evaluation chunk is drawn, so a 50-task Permuted MNIST costs one
//! MNIST plus fifty 784-entry permutations.

use engram_mnist::Split;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// MNIST images are 28 x 28.
pub const SIDE: usize = 28;

/// The benchmark family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Five two-digit tasks {0,1},{2,3},{4,5},{6,7},{8,9} (Zenke et al. 2017).
    SplitMnist,
    /// Task 1 the plain images, later tasks a fixed random pixel permutation each.
    PermutedMnist,
    /// Task t rotated by an angle drawn from [t*d, (t+1)*d] degrees (GEM protocol, d = 9).
    RotatedMnist,
    /// Task A the even digits, task B the odd ones, label floor(digit/2), one 5-way head.
    EvenOdd,
}

impl ScenarioKind {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SplitMnist => "split-mnist",
            Self::PermutedMnist => "permuted-mnist",
            Self::RotatedMnist => "rotated-mnist",
            Self::EvenOdd => "even-odd",
        }
    }
}

/// How the output layer is shared between tasks (van de Ven & Tolias 2019).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    /// Task-incremental: the task is known; logits outside the task's classes are masked.
    Task,
    /// Domain-incremental: one shared head with the within-task label (e.g. 2-way for Split MNIST).
    Domain,
    /// Class-incremental: one head over every class seen, no mask.
    Class,
}

impl Setting {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Domain => "domain",
            Self::Class => "class",
        }
    }
}

/// What is done to each image when it is drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// The image as stored.
    Identity,
    /// Pixel `j` of the result is pixel `perm[j]` of the original.
    Permute(Arc<Vec<u32>>),
    /// Rotation by this many degrees about the centre, bilinear.
    Rotate(f32),
}

/// How a stored digit becomes a training label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelMap {
    /// The digit itself.
    Digit,
    /// `digit % 2` (Split MNIST, domain setting: first or second digit of the pair).
    Parity,
    /// `digit / 2` (even/odd tasks: one 5-way head).
    Half,
}

impl LabelMap {
    fn apply(self, digit: u8) -> u32 {
        match self {
            Self::Digit => digit as u32,
            Self::Parity => (digit % 2) as u32,
            Self::Half => (digit / 2) as u32,
        }
    }
}

/// A task's samples: a view over a shared split.
#[derive(Clone, Debug)]
pub struct View {
    /// The shared split (never copied).
    pub split: Arc<Split>,
    /// Which samples, in order; `None` means all of them.
    pub indices: Option<Vec<u32>>,
    /// Input transform.
    pub transform: Transform,
    /// Label map.
    pub labels: LabelMap,
}

impl View {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.indices.as_ref().map_or(self.split.n, Vec::len)
    }

    /// True when the view holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index in the shared split of the sample at `pos`.
    pub fn sample(&self, pos: usize) -> usize {
        self.indices.as_ref().map_or(pos, |ix| ix[pos] as usize)
    }

    /// The label of the sample at `pos`.
    pub fn label(&self, pos: usize) -> u32 {
        self.labels.apply(self.split.labels[self.sample(pos)])
    }

    /// Appends the transformed images and labels of the samples at `positions` to `x` and `y`.
    /// Rotations run in parallel over the images (each image's arithmetic is its own: the same
    /// values whatever the number of threads).
    pub fn fill(&self, positions: impl IntoIterator<Item = usize>, x: &mut Vec<f32>, y: &mut Vec<u32>) {
        let samples: Vec<usize> = positions.into_iter().map(|pos| self.sample(pos)).collect();
        let start = x.len();
        x.resize(start + samples.len() * self.split.dim, 0.0);
        self.images_into(&samples, &mut x[start..]);
        y.extend(samples.iter().map(|&i| self.labels.apply(self.split.labels[i])));
    }

    /// Writes the transformed images of the samples at `positions` into `x`, one after the
    /// other (`x` holds exactly their pixels), as [`View::fill`] does.
    ///
    /// # Panics
    /// When `x` does not hold `positions.len()` images.
    pub fn fill_images(&self, positions: std::ops::Range<usize>, x: &mut [f32]) {
        let samples: Vec<usize> = positions.map(|pos| self.sample(pos)).collect();
        self.images_into(&samples, x);
    }

    /// The transformed images of the split's samples `samples`, into `x`.
    fn images_into(&self, samples: &[usize], x: &mut [f32]) {
        let dim = self.split.dim;
        assert_eq!(x.len(), samples.len() * dim, "{} images of {dim} pixels into {} values", samples.len(), x.len());
        if dim == 0 {
            return;
        }
        let image = |i: usize| &self.split.images[i * dim..(i + 1) * dim];
        let pairs = x.chunks_exact_mut(dim).zip(samples);
        match &self.transform {
            Transform::Identity => pairs.for_each(|(dst, &i)| dst.copy_from_slice(image(i))),
            Transform::Permute(p) => {
                pairs.for_each(|(dst, &i)| dst.iter_mut().zip(p.iter()).for_each(|(d, &j)| *d = image(i)[j as usize]))
            }
            Transform::Rotate(a) => {
                // The rotation's taps are computed once per call, not once per image.
                let rotator = engram_mnist::Rotator::new(SIDE, SIDE, *a);
                x.par_chunks_mut(dim).zip(samples).for_each(|(dst, &i)| rotator.apply(image(i), dst));
            }
        }
    }
}

/// One task of a scenario.
#[derive(Clone, Debug)]
pub struct Task {
    /// Short name for tables, e.g. `"0/1"` or `"perm 3"` or `"rot 47.3°"`.
    pub name: String,
    /// Training samples.
    pub train: View,
    /// Test samples.
    pub test: View,
    /// Output units this task may predict (the multi-head mask); `None` means every output.
    pub mask: Option<Vec<usize>>,
}

/// A sequence of tasks sharing one network.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Which benchmark.
    pub kind: ScenarioKind,
    /// Output-layer sharing.
    pub setting: Setting,
    /// Number of output units of the network.
    pub outputs: usize,
    /// The tasks in training order.
    pub tasks: Vec<Task>,
}

/// Options that shape a scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// The benchmark.
    pub kind: ScenarioKind,
    /// Output sharing (Split MNIST only; the others are domain-incremental by construction).
    pub setting: Setting,
    /// Number of tasks (permuted and rotated; fixed for split and even-odd).
    pub tasks: usize,
    /// Permute task 1 too (the GEM/A-GEM convention); default: task 1 is the plain images.
    pub permute_first: bool,
    /// Rotated MNIST: width `d` of each task's angle interval [t*d, (t+1)*d] in degrees.
    pub rotation_step: f32,
    /// Rotated MNIST: fixed angles instead of drawn ones (the number of tasks is their count).
    pub angles: Option<Vec<f32>>,
    /// Use only this many training samples per task (a seeded random subset).
    pub samples_per_task: Option<usize>,
    /// Seed for permutations, angles and subsets.
    pub seed: u64,
}

impl ScenarioSpec {
    /// Rejects a spec that cannot be built or is out of range (flags, presets and a
    /// checkpoint's record alike): at least one task, at least one sample per task, a rotation
    /// step in [0, 360] (fixed angles are checked where they are used, task by task).
    pub fn validate(&self) -> Result<(), String> {
        if self.tasks == 0 {
            return Err("the scenario needs at least one task".into());
        }
        if self.samples_per_task == Some(0) {
            return Err("--samples-per-task must be at least 1".into());
        }
        if !(self.rotation_step.is_finite() && (0.0..=360.0).contains(&self.rotation_step)) {
            return Err(format!("--rotation-step {} is not a number of degrees in [0, 360]", self.rotation_step));
        }
        Ok(())
    }

    /// Defaults for a benchmark: 5 split tasks, 10 permutations, 20 rotations, 2 even/odd tasks.
    pub fn new(kind: ScenarioKind) -> Self {
        let tasks = match kind {
            ScenarioKind::SplitMnist => 5,
            ScenarioKind::PermutedMnist => 10,
            ScenarioKind::RotatedMnist => 20,
            ScenarioKind::EvenOdd => 2,
        };
        Self {
            kind,
            setting: Setting::Task,
            tasks,
            permute_first: false,
            rotation_step: 9.0,
            angles: None,
            samples_per_task: None,
            seed: 0,
        }
    }
}

fn subset(n_total: usize, want: Option<usize>, rng: &mut ChaCha8Rng, base: Option<Vec<u32>>) -> Option<Vec<u32>> {
    match want {
        None => base,
        Some(k) => {
            let mut ix = base.unwrap_or_else(|| (0..n_total as u32).collect());
            if k < ix.len() {
                ix.shuffle(rng);
                ix.truncate(k);
                ix.sort_unstable();
            }
            Some(ix)
        }
    }
}

/// Builds the tasks of `spec` over the shared splits.
///
/// Errors describe a spec that cannot be built (e.g. zero tasks).
pub fn build(spec: &ScenarioSpec, train: Arc<Split>, test: Arc<Split>) -> Result<Scenario, String> {
    spec.validate()?;
    // Two streams: one for the tasks themselves (permutations, angles), one for the training
    // subsets, so that --samples-per-task never changes which tasks a seed gives.
    let mut task_rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5ce0_a7e1_0000_0000);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x0b5e_55ed_0000_0001);
    let view =
        |split: &Arc<Split>, indices, transform, labels| View { split: split.clone(), indices, transform, labels };
    let mut tasks = Vec::new();
    let (setting, outputs);
    match spec.kind {
        ScenarioKind::SplitMnist => {
            if spec.tasks != 5 {
                return Err(format!("split-mnist has exactly 5 tasks (got --tasks {})", spec.tasks));
            }
            setting = spec.setting;
            outputs = if setting == Setting::Domain { 2 } else { 10 };
            let labels = if setting == Setting::Domain { LabelMap::Parity } else { LabelMap::Digit };
            for t in 0..5u8 {
                let classes = [2 * t, 2 * t + 1];
                let tr = engram_mnist::indices_of_classes(&train.labels, &classes);
                let te = engram_mnist::indices_of_classes(&test.labels, &classes);
                let tr = subset(train.n, spec.samples_per_task, &mut rng, Some(tr));
                tasks.push(Task {
                    name: format!("{}/{}", classes[0], classes[1]),
                    train: view(&train, tr, Transform::Identity, labels),
                    test: view(&test, Some(te), Transform::Identity, labels),
                    mask: (setting == Setting::Task).then(|| classes.iter().map(|&c| c as usize).collect()),
                });
            }
        }
        ScenarioKind::EvenOdd => {
            if spec.tasks != 2 {
                return Err(format!("even-odd has exactly 2 tasks (got --tasks {})", spec.tasks));
            }
            setting = Setting::Domain;
            outputs = 5;
            for (name, classes) in [("even", [0u8, 2, 4, 6, 8]), ("odd", [1, 3, 5, 7, 9])] {
                let tr = engram_mnist::indices_of_classes(&train.labels, &classes);
                let te = engram_mnist::indices_of_classes(&test.labels, &classes);
                let tr = subset(train.n, spec.samples_per_task, &mut rng, Some(tr));
                tasks.push(Task {
                    name: name.into(),
                    train: view(&train, tr, Transform::Identity, LabelMap::Half),
                    test: view(&test, Some(te), Transform::Identity, LabelMap::Half),
                    mask: None,
                });
            }
        }
        ScenarioKind::PermutedMnist => {
            setting = Setting::Domain;
            outputs = 10;
            for t in 0..spec.tasks {
                let transform = if t == 0 && !spec.permute_first {
                    Transform::Identity
                } else {
                    let seed = task_rng.random::<u64>();
                    Transform::Permute(Arc::new(engram_mnist::permutation(seed, train.dim)))
                };
                let tr = subset(train.n, spec.samples_per_task, &mut rng, None);
                tasks.push(Task {
                    name: format!("perm {}", t + 1),
                    train: view(&train, tr, transform.clone(), LabelMap::Digit),
                    test: view(&test, None, transform, LabelMap::Digit),
                    mask: None,
                });
            }
        }
        ScenarioKind::RotatedMnist => {
            setting = Setting::Domain;
            outputs = 10;
            let angles: Vec<f32> = match &spec.angles {
                Some(a) if a.is_empty() => return Err("--angles needs at least one angle".into()),
                Some(a) => a.clone(),
                None => (0..spec.tasks)
                    .map(|t| {
                        let lo = t as f32 * spec.rotation_step;
                        lo + task_rng.random::<f32>() * spec.rotation_step
                    })
                    .collect(),
            };
            for (t, &a) in angles.iter().enumerate() {
                if !a.is_finite() {
                    return Err(format!("rotation angle {a} of task {} is not a number", t + 1));
                }
                let tr = subset(train.n, spec.samples_per_task, &mut rng, None);
                tasks.push(Task {
                    name: format!("rot {a:.1}"),
                    train: view(&train, tr, Transform::Rotate(a), LabelMap::Digit),
                    test: view(&test, None, Transform::Rotate(a), LabelMap::Digit),
                    mask: None,
                });
            }
        }
    }
    Ok(Scenario { kind: spec.kind, setting, outputs, tasks })
}

/// Hyperparameter selection without touching the test data: the same scenario with a seeded
/// random `fraction` of each task's training samples held out, and that held-out part put in
/// place of the task's test set.
///
/// Training then sees only the remaining samples, and every accuracy the training loop reports
/// (`R`, `b`, ACC, ...) is measured on the held-out validation samples. Names, masks, label
/// maps and transforms are unchanged; the views still share the one in-memory MNIST. Each task
/// holds out `round(fraction * n)` of its `n` training samples, at least 1 and at most `n - 1`.
/// The split depends only on `seed` and the scenario, not on any hyperparameter, so every
/// setting of a sweep is judged on the same validation samples for a given seed.
///
/// Errors: `fraction` outside (0, 1), or a task with fewer than 2 training samples.
pub fn validation_split(sc: &Scenario, fraction: f64, seed: u64) -> Result<Scenario, String> {
    if !(fraction.is_finite() && fraction > 0.0 && fraction < 1.0) {
        return Err(format!("the validation fraction must lie strictly between 0 and 1, got {fraction}"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7a11_da7e_0000_0002);
    let mut out = sc.clone();
    for task in &mut out.tasks {
        let n = task.train.len();
        if n < 2 {
            return Err(format!("task {} has {n} training sample(s): a validation split needs at least 2", task.name));
        }
        let k = ((fraction * n as f64).round() as usize).clamp(1, n - 1);
        let mut samples: Vec<u32> = (0..n).map(|p| task.train.sample(p) as u32).collect();
        samples.shuffle(&mut rng);
        let (val, rest) = samples.split_at_mut(k);
        val.sort_unstable();
        rest.sort_unstable();
        let view = |indices: &[u32]| View {
            split: task.train.split.clone(),
            indices: Some(indices.to_vec()),
            transform: task.train.transform.clone(),
            labels: task.train.labels,
        };
        let (val_view, train_view) = (view(val), view(rest));
        task.test = val_view;
        task.train = train_view;
    }
    Ok(out)
}

/// The training phases: one per task, or a single phase over every task for joint training.
pub fn phases(tasks: usize, joint: bool) -> Vec<Vec<usize>> {
    if joint {
        vec![(0..tasks).collect()]
    } else {
        (0..tasks).map(|i| vec![i]).collect()
    }
}

/// A phase's training samples as `(task, position)` pairs, in the order shuffling starts from.
pub fn phase_samples(scenario: &Scenario, phase: &[usize]) -> Vec<(u32, u32)> {
    phase.iter().flat_map(|&ti| (0..scenario.tasks[ti].train.len() as u32).map(move |p| (ti as u32, p))).collect()
}
