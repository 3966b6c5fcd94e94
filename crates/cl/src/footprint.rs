//! What a run will hold in memory, estimated from its configuration before anything is loaded or
//! allocated, so that a run that cannot fit is refused with the figure instead of aborting on
//! an allocation (a hidden width or layer count typed with too many digits).
//!
//! The estimate counts the large buffers (4-byte values): the network's parameters and every
//! vector of the same length the run keeps (gradient, optimizer moments, the method's
//! importance, anchor and path integral, GEM's memory gradients); MNIST as the host loads it and
//! as the backend holds it (rotated tasks hold their own rotated copies); each task's sample
//! rows and labels, permutation and row of R; the episodic memories; one batch's and one
//! evaluation chunk's activations. Small things (rows, labels, masks, R) are
//! left out, and allocators' overheads too: the figure is a floor, within a few percent for the
//! benchmark runs.

use crate::config::{Method, RunConfig};
use crate::scenario::{ScenarioKind, ScenarioSpec, SIDE};

/// MNIST's training and test images.
const MNIST_IMAGES: u128 = 60_000 + 10_000;
/// Test images per task.
const TEST_PER_TASK: u128 = 10_000;
/// Rows per evaluation chunk (engram_nn::EVAL_CHUNK).
const EVAL_ROWS: u128 = engram_nn::EVAL_CHUNK as u128;

/// A run's estimated memory, in bytes (saturating: a configuration whose figure overflows
/// reads as `u128::MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Parameters of the network.
    pub params: u128,
    /// Parameter-length vectors: parameters, gradient, optimizer, the method's state.
    pub state: u128,
    /// The images on the host and on the backend, the tasks' indices, and the episodic memories.
    pub data: u128,
    /// One training batch's and one evaluation chunk's activations.
    pub work: u128,
}

impl Footprint {
    /// Everything.
    pub fn total(&self) -> u128 {
        self.state.saturating_add(self.data).saturating_add(self.work)
    }
}

/// The network's outputs for a scenario.
fn outputs(kind: ScenarioKind) -> u128 {
    match kind {
        ScenarioKind::EvenOdd => 5,
        _ => 10,
    }
}

/// Training images of one task, before `--samples-per-task`.
fn train_per_task(spec: &ScenarioSpec) -> u128 {
    match spec.kind {
        ScenarioKind::SplitMnist => 12_000,
        ScenarioKind::EvenOdd => 30_000,
        ScenarioKind::PermutedMnist | ScenarioKind::RotatedMnist => 60_000,
    }
}

/// Parameters of an MLP `inputs -> layers x hidden -> outputs` with biases (saturating).
pub fn mlp_params(inputs: u128, hidden: u128, layers: u128, outputs: u128) -> u128 {
    let (mul, add) = (u128::saturating_mul, u128::saturating_add);
    if layers == 0 {
        return add(mul(inputs, outputs), outputs);
    }
    let first = add(mul(inputs, hidden), hidden);
    let middle = mul(layers - 1, add(mul(hidden, hidden), hidden));
    add(add(first, middle), add(mul(hidden, outputs), outputs))
}

/// The estimate of `engram train`: a plain `784 -> layers x hidden -> 10` MLP with Adam on the
/// whole of MNIST, batches of `batch`.
pub fn plain_training(hidden: usize, layers: usize, batch: usize) -> Footprint {
    let (mul, add) = (u128::saturating_mul, u128::saturating_add);
    let (dim, hidden, layers) = ((SIDE * SIDE) as u128, hidden as u128, layers as u128);
    let params = mlp_params(dim, hidden, layers, 10);
    let widths = add(add(dim, mul(layers, hidden)), 10);
    let widest = hidden.max(dim);
    let work = mul(4, add(mul(batch as u128, add(widths, mul(2, widest))), mul(EVAL_ROWS, widths)));
    Footprint { params, state: mul(16, params), data: mul(mul(4, dim), mul(2, MNIST_IMAGES)), work }
}

/// The estimate for `spec` and `cfg` (see the module comment).
pub fn footprint(spec: &ScenarioSpec, cfg: &RunConfig) -> Footprint {
    let (dim, out) = ((SIDE * SIDE) as u128, outputs(spec.kind));
    let (hidden, layers) = (cfg.hidden as u128, cfg.layers as u128);
    let mul = u128::saturating_mul;
    let add = u128::saturating_add;
    let params = mlp_params(dim, hidden, layers, out);
    let tasks = spec.tasks as u128;
    // theta, gradient, Adam's two moments; the quadratic methods' importance, anchor and path
    // integral (or Fisher sums); GEM's one gradient per finished task, A-GEM's reference one.
    let method_vectors: u128 = match cfg.method {
        Method::Finetune | Method::Joint => 0,
        Method::L2 | Method::Ewc | Method::Mas | Method::Si => 3,
        Method::Gem => tasks,
        Method::Agem => 1,
    };
    let state = mul(mul(4, params), add(4, method_vectors));
    let per_task = spec.samples_per_task.map_or(train_per_task(spec), |k| (k as u128).min(train_per_task(spec)));
    // The host's f32 MNIST, the backend's copy of it, and every rotated task's own images.
    let rows = match spec.kind {
        ScenarioKind::RotatedMnist => add(MNIST_IMAGES, mul(tasks, add(per_task, TEST_PER_TASK))),
        _ => mul(2, MNIST_IMAGES),
    };
    let memories = if cfg.method.is_episodic() { mul(tasks, cfg.memories as u128) } else { 0 };
    // Per task: each sample's row and label on the host and the backend (8 bytes, twice), a
    // permutation's pixel map, and R (one row of f64 per task).
    let per_task_index = add(mul(16, add(per_task, TEST_PER_TASK)), add(mul(4, dim), mul(8, tasks)));
    let data = add(mul(mul(4, dim), add(rows, memories)), mul(tasks, per_task_index));
    // Activations: the input, each layer's output, the backward's two widest buffers, for a
    // batch (or GEM's memories in one pass) and an evaluation chunk.
    let widths = add(add(dim, mul(layers, hidden)), out);
    let widest = hidden.max(out).max(dim);
    let batch_rows = (cfg.batch as u128).max(if cfg.method == Method::Gem { memories } else { 0 });
    let work = mul(4, add(mul(batch_rows, add(widths, mul(2, widest))), mul(EVAL_ROWS, widths)));
    Footprint { params, state, data, work }
}

/// `bytes` in readable units.
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes == u128::MAX {
        return "more than can be counted".into();
    }
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EwcMode, FisherKind, SiGrad, SiRelu};
    use crate::protocol;

    fn cfg(kind: ScenarioKind, method: Method) -> RunConfig {
        let (si, ewc) = ((SiGrad::Task, SiRelu::Official), (FisherKind::Empirical, EwcMode::Online, 0.8));
        protocol::resolve(kind, method, &Default::default(), 0, si, ewc, 1000, false).0
    }

    #[test]
    fn split_mnist_si_is_a_few_hundred_megabytes_and_huge_widths_saturate() {
        let spec = ScenarioSpec::new(ScenarioKind::SplitMnist);
        let f = footprint(&spec, &cfg(ScenarioKind::SplitMnist, Method::Si));
        assert_eq!(f.params, 269_322);
        assert_eq!(f.state, 269_322 * 4 * 7);
        assert!((400 << 20..600 << 20).contains(&f.total()), "{}", human(f.total()));
        let huge = RunConfig { hidden: usize::MAX / 2, ..cfg(ScenarioKind::SplitMnist, Method::Si) };
        assert_eq!(footprint(&spec, &huge).total(), u128::MAX);
        assert_eq!(human(u128::MAX), "more than can be counted");
    }

    #[test]
    fn rotated_gem_counts_its_rotated_images_and_memory_gradients() {
        let spec = ScenarioSpec { samples_per_task: Some(1000), ..ScenarioSpec::new(ScenarioKind::RotatedMnist) };
        let c = cfg(ScenarioKind::RotatedMnist, Method::Gem);
        let f = footprint(&spec, &c);
        assert_eq!(f.params, 89_610);
        let images = 4 * 784 * (70_000 + 20 * 11_000 + 20 * c.memories as u128);
        let indices = 20 * (16 * 11_000 + 4 * 784 + 8 * 20);
        assert_eq!(f.data, images + indices);
        assert_eq!(f.state, 4 * 89_610 * (4 + 20));
    }
}
