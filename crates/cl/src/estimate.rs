//! A rough forecast of a run's wall time, from timing a few training steps on the backend.

use crate::config::{layer_sizes, RunConfig};
use crate::methods::Method;
use crate::scenario::Scenario;
use crate::state::{RunBackend, RunError};
use engram_nn::{Batch, Init, Mlp};
use engram_si::OptimizerState;
use engram_tape::{Tensor, ViewMut};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// A rough forecast of the wall time of a run of `cfg` on `scenario` on `be`, from timing `steps`
/// training steps (after one warm-up) and assuming an evaluated sample costs a third of a
/// trained one.
pub fn estimate_seconds<B: RunBackend>(
    be: &B,
    scenario: &Scenario,
    cfg: &RunConfig,
    steps: usize,
) -> Result<f64, RunError> {
    let Some(task) = scenario.tasks.first() else { return Ok(0.0) };
    let model = Mlp::new(&layer_sizes(scenario, cfg));
    let n = model.num_params();
    let mut theta = be.upload(&model.init(&mut ChaCha8Rng::seed_from_u64(0), Init::default()))?;
    let mut grad = be.alloc(n)?;
    let mut optimizer = OptimizerState::new(be, cfg.optimizer, n)?;
    let batch = cfg.batch.min(task.train.len()).max(1);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    task.train.fill(0..batch, &mut x, &mut y);
    let x = Tensor::<B>::from_host(be, batch, model.inputs(), &x)?;
    let y = Tensor::<B, u32>::from_host(be, 1, batch, &y)?;
    let mut loss = Tensor::<B>::zeros(be, 1, 1)?;
    let mut penalty = Tensor::<B, f64>::zeros(be, 1, 1)?;
    let mut buffers = engram_nn::StepBuffers::new(be, &model, batch)?;
    let mut one = || -> Result<(), RunError> {
        let b = Batch { x: x.view(), labels: y.view(), mask: None };
        buffers.loss_and_grad(be, &model, &theta, b, ViewMut::row_of(be, &mut grad), loss.view_mut())?;
        optimizer.step(be, &mut theta, &grad, None, 0.0, None, penalty.view_mut())?;
        Ok(())
    };
    one()?;
    be.synchronize()?;
    let t = Instant::now();
    for _ in 0..steps.max(1) {
        one()?;
    }
    be.synchronize()?;
    let per_step = t.elapsed().as_secs_f64() / steps.max(1) as f64;
    let per_sample = per_step / batch as f64;
    let train_samples: usize = scenario.tasks.iter().map(|t| t.train.len()).sum();
    let test_samples: usize = scenario.tasks.iter().map(|t| t.test.len()).sum();
    let rows = if cfg.method == Method::Joint { 2 } else { scenario.tasks.len() + 1 };
    let mut eval_samples = rows * test_samples;
    if cfg.eval_train {
        eval_samples += (rows - 1) * train_samples;
    }
    let train_steps: usize =
        scenario.tasks.iter().map(|t| t.train.len().div_ceil(cfg.batch)).sum::<usize>() * cfg.epochs;
    // GEM / A-GEM: every step also passes over the finished tasks' memories (GEM: all of them;
    // A-GEM: up to 256 samples), at roughly the cost of a trained sample.
    let memory_samples: usize = if cfg.method.is_episodic() {
        scenario
            .tasks
            .iter()
            .enumerate()
            .map(|(t, task)| {
                let held = t * cfg.memories.min(task.train.len());
                let per_step = if cfg.method == Method::Agem { held.min(256) } else { held };
                per_step * task.train.len().div_ceil(cfg.batch) * cfg.epochs
            })
            .sum()
    } else {
        0
    };
    Ok(train_steps as f64 * per_step + eval_samples as f64 * per_sample / 3.0 + memory_samples as f64 * per_sample)
}
