//! `engram train`: a plain MLP on the ten MNIST classes.

use crate::common::{progress, write_json_atomic, ComputeArgs, DataArgs, OptimizerName};
use crate::on_device;
use anyhow::{bail, Result};
use clap::Args;
use engram_cl::config::InitChoice;
use engram_nn::{Batch, Init, Mlp, PixelMap, Samples, Tensor, ViewMut};
use engram_si::{ConsolidationKernels, OptimizerState};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `engram train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    pub(crate) compute: ComputeArgs,
    /// Passes over the 60,000 training images.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Mini-batch size (the last batch of an epoch may be smaller).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    lr: f32,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerName::Adam)]
    optimizer: OptimizerName,
    /// Width of each hidden layer.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Number of hidden layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Seed of the initialisation and of the shuffling: same seed, same result.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Initial weights: kaiming-uniform (PyTorch's nn.Linear default, weights and biases
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in))), xavier-uniform (Glorot; Keras's default, biases 0) or
    /// he-uniform (torch.nn.init.kaiming_uniform_ for ReLU, U(-sqrt(6/fan_in), sqrt(6/fan_in)),
    /// biases 0).
    #[arg(long, value_enum, value_name = "SCHEME", default_value_t = InitChoice::KaimingUniform)]
    init: InitChoice,
    /// Write a JSON summary (test_accuracy, epochs, wall_seconds, ...) to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `engram train`.
pub fn run(a: TrainArgs) -> Result<()> {
    if a.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if a.epochs > engram_cl::config::MAX_EPOCHS {
        bail!(
            "--epochs {} is more than {} passes over MNIST: the training would not end",
            a.epochs,
            engram_cl::config::MAX_EPOCHS
        );
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if a.hidden == 0 {
        bail!("--hidden must be at least 1");
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", a.lr);
    }
    crate::preflight::check_output_files([("--out", a.out.as_deref())])?;
    crate::preflight::check_memory(
        "this training",
        &engram_cl::footprint::plain_training(a.hidden, a.layers, a.batch),
    )?;
    let t_load = Instant::now();
    let data = a.data.load()?;
    let load_seconds = t_load.elapsed().as_secs_f64();

    let mut sizes = vec![data.train.dim];
    sizes.extend(std::iter::repeat_n(a.hidden, a.layers));
    sizes.push(10);
    let model = Mlp::new(&sizes);
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let device = a.compute.device()?;
    let p = model.num_params();
    let trained = on_device!(&device, be => train_on(be, &a, &data, &model, &sizes, &mut rng))?;
    let Trained { acc, epoch_losses, train_seconds, eval_seconds } = trained;
    let wall = t_load.elapsed().as_secs_f64();

    println!("test accuracy: {:.2}% ({} test images)", 100.0 * acc, data.test.n);
    for (e, l) in epoch_losses.iter().enumerate() {
        println!("epoch {}: mean training loss {:.4}", e + 1, l);
    }
    println!("time: {train_seconds:.1} s training, {eval_seconds:.1} s evaluation, {load_seconds:.1} s loading data");
    if let Some(path) = &a.out {
        let v = json!({
            "command": "train",
            "test_accuracy": acc,
            "epochs": a.epochs,
            "wall_seconds": wall,
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "load_seconds": load_seconds,
            "epoch_mean_train_loss": epoch_losses,
            "params": {
                "sizes": sizes, "num_params": p, "optimizer": format!("{:?}", a.optimizer).to_lowercase(),
                "lr": a.lr, "batch": a.batch, "seed": a.seed, "init": a.init, "threads": rayon::current_num_threads(),
            },
        });
        write_json_atomic(path, &v)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// What [`train_on`] measured.
struct Trained {
    acc: f64,
    epoch_losses: Vec<f64>,
    train_seconds: f64,
    eval_seconds: f64,
}

/// Trains and evaluates on one backend: the images, each epoch's order and the state stay on it;
/// the losses come back once an epoch.
fn train_on<B: ConsolidationKernels>(
    be: &B,
    a: &TrainArgs,
    data: &engram_mnist::Mnist,
    model: &Mlp,
    sizes: &[usize],
    rng: &mut ChaCha8Rng,
) -> Result<Trained> {
    let n = data.train.n;
    let dim = data.train.dim;
    let p = model.num_params();
    // Everything on the backend: the images once, each epoch's order once, nothing per step.
    let mut theta = be.upload(&model.init(rng, Init { zero_output: false, scheme: a.init.scheme() }))?;
    let mut grad = be.alloc::<f32>(p)?;
    let mut optimizer = OptimizerState::new(be, a.optimizer.rule().with_lr(a.lr), p)?;
    let train_images = Tensor::<_>::from_host(be, n, dim, &data.train.images)?;
    let labels: Vec<u32> = data.train.labels.iter().map(|&l| l as u32).collect();
    let mut order: Vec<usize> = (0..n).collect();
    let steps_per_epoch = n.div_ceil(a.batch);
    let mut epoch_rows = Tensor::<_, u32>::zeros(be, 1, n)?;
    let mut epoch_labels = Tensor::<_, u32>::zeros(be, 1, n)?;
    let mut x = Tensor::<_>::zeros(be, a.batch.min(n), dim)?;
    let mut losses = Tensor::<_>::zeros(be, 1, steps_per_epoch)?;
    let mut penalty = Tensor::<_, f64>::zeros(be, 1, 1)?;

    eprintln!(
        "engram train: MLP {} ({} parameters), {:?} lr {}, batch {}, {} epoch(s), seed {}, {}",
        sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("-"),
        p,
        a.optimizer,
        a.lr,
        a.batch,
        a.epochs,
        a.seed,
        be.name()
    );
    let t0 = Instant::now();
    let pb = progress((steps_per_epoch * a.epochs) as u64, a.quiet);
    pb.set_prefix("train");
    let mut epoch_losses = Vec::new();
    let mut buffers = engram_nn::StepBuffers::new(be, model, a.batch.min(n).max(1))?;
    for epoch in 0..a.epochs {
        order.shuffle(rng);
        let rows: Vec<u32> = order.iter().map(|&i| i as u32).collect();
        let ys: Vec<u32> = order.iter().map(|&i| labels[i]).collect();
        be.upload_into(&rows, epoch_rows.view_mut())?;
        be.upload_into(&ys, epoch_labels.view_mut())?;
        for step in 0..steps_per_epoch {
            let (start, end) = (step * a.batch, ((step + 1) * a.batch).min(n));
            let xs = x.view_mut().rows(0, end - start);
            be.gather_rows(train_images.view(), epoch_rows.view().range(start, end), PixelMap::Identity, xs)?;
            let batch =
                Batch { x: x.view().rows(0, end - start), labels: epoch_labels.view().range(start, end), mask: None };
            let loss = losses.view_mut().range(step, step + 1);
            buffers.loss_and_grad(be, model, &theta, batch, ViewMut::row_of(be, &mut grad), loss)?;
            optimizer.step(be, &mut theta, &grad, None, 0.0, None, penalty.view_mut())?;
            pb.inc(1);
        }
        // The epoch's losses come back once: the check for divergence and the mean.
        let mut loss_sum = 0f64;
        for (step, loss) in losses.to_host(be)?.into_iter().enumerate() {
            if !loss.is_finite() {
                bail!(
                    "the loss became {loss} at epoch {}, step {}: the learning rate ({}) is probably too large",
                    epoch + 1,
                    step + 1,
                    a.lr
                );
            }
            loss_sum += loss as f64;
        }
        epoch_losses.push(loss_sum / steps_per_epoch as f64);
        pb.set_message(format!("epoch {} mean loss {:.4}", epoch + 1, loss_sum / steps_per_epoch as f64));
    }
    pb.finish_and_clear();
    let train_seconds = t0.elapsed().as_secs_f64();
    let t_eval = Instant::now();
    let test_images = Tensor::<_>::from_host(be, data.test.n, dim, &data.test.images)?;
    let test_rows: Vec<u32> = (0..data.test.n as u32).collect();
    let test_labels: Vec<u32> = data.test.labels.iter().map(|&l| l as u32).collect();
    let test_rows = Tensor::<_, u32>::from_host(be, 1, data.test.n, &test_rows)?;
    let test_labels = Tensor::<_, u32>::from_host(be, 1, data.test.n, &test_labels)?;
    let samples = Samples {
        images: test_images.view(),
        rows: test_rows.view(),
        labels: test_labels.view(),
        map: PixelMap::Identity,
        mask: None,
        first_row: Some(0),
    };
    let acc = engram_nn::evaluate(be, model, &theta, samples, engram_nn::EVAL_CHUNK, false)?.accuracy();
    let eval_seconds = t_eval.elapsed().as_secs_f64();
    Ok(Trained { acc, epoch_losses, train_seconds, eval_seconds })
}
