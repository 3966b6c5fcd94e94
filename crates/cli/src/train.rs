//! `engram train`: a plain MLP on the ten MNIST classes.

use crate::common::{progress, write_json_atomic, ComputeArgs, DataArgs};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use engram_nn::{Backend, Cpu, Init, Mlp, Optimizer, OptimizerKind, Tape};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Optimizer choice on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptArg {
    /// Bias-corrected Adam, betas (0.9, 0.999), eps 1e-8.
    Adam,
    /// Plain stochastic gradient descent.
    Sgd,
}

/// Arguments of `engram train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    compute: ComputeArgs,
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
    #[arg(long, value_enum, default_value_t = OptArg::Adam)]
    optimizer: OptArg,
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
    #[arg(long, value_enum, value_name = "SCHEME", default_value_t = engram_cl::protocol::InitChoice::KaimingUniform)]
    init: engram_cl::protocol::InitChoice,
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
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if a.hidden == 0 {
        bail!("--hidden must be at least 1");
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", a.lr);
    }
    a.compute.apply()?;
    let t_load = Instant::now();
    let data = a.data.load()?;
    let load_seconds = t_load.elapsed().as_secs_f64();

    let mut sizes = vec![data.train.dim];
    sizes.extend(std::iter::repeat_n(a.hidden, a.layers));
    sizes.push(10);
    let model = Mlp::new(&sizes);
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let mut theta = model.init(&mut rng, Init { zero_output: false, scheme: a.init.scheme() });
    let kind = match a.optimizer {
        OptArg::Adam => OptimizerKind::adam(a.lr),
        OptArg::Sgd => OptimizerKind::Sgd { lr: a.lr },
    };
    let mut opt = Optimizer::new(kind, theta.len());
    let be = Cpu::<f32>::new();
    let mut tape = Tape::new(be);
    let mut grad = vec![0f32; theta.len()];
    let labels: Vec<u32> = data.train.labels.iter().map(|&l| l as u32).collect();
    let n = data.train.n;
    let dim = data.train.dim;
    let mut order: Vec<usize> = (0..n).collect();
    let mut xbuf = Vec::with_capacity(a.batch * dim);
    let mut ybuf = Vec::with_capacity(a.batch);

    eprintln!(
        "engram train: MLP {} ({} parameters), {:?} lr {}, batch {}, {} epoch(s), seed {}, {}",
        sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("-"),
        theta.len(),
        a.optimizer,
        a.lr,
        a.batch,
        a.epochs,
        a.seed,
        be.name()
    );
    let t0 = Instant::now();
    let steps_per_epoch = n.div_ceil(a.batch);
    let pb = progress((steps_per_epoch * a.epochs) as u64, a.quiet);
    pb.set_prefix("train");
    let mut epoch_losses = Vec::new();
    for epoch in 0..a.epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0f64;
        for (step, idx) in order.chunks(a.batch).enumerate() {
            xbuf.clear();
            ybuf.clear();
            for &i in idx {
                xbuf.extend_from_slice(&data.train.images[i * dim..(i + 1) * dim]);
                ybuf.push(labels[i]);
            }
            let x = be.from_vec(idx.len(), dim, xbuf.clone());
            let loss = model.loss_grad(&mut tape, &theta, x, &ybuf, None, &mut grad);
            if !loss.is_finite() {
                bail!(
                    "the loss became {loss} at epoch {}, step {}: the learning rate ({}) is probably too large",
                    epoch + 1,
                    step + 1,
                    a.lr
                );
            }
            loss_sum += loss as f64;
            opt.step(&mut theta, &grad);
            pb.inc(1);
            if step % 50 == 0 {
                pb.set_message(format!("epoch {} loss {:.4}", epoch + 1, loss));
            }
        }
        epoch_losses.push(loss_sum / steps_per_epoch as f64);
    }
    pb.finish_and_clear();
    let train_seconds = t0.elapsed().as_secs_f64();
    let test_labels: Vec<u32> = data.test.labels.iter().map(|&l| l as u32).collect();
    let t_eval = Instant::now();
    let acc = model.accuracy(&be, &theta, &data.test.images, &test_labels, None, 1000);
    let eval_seconds = t_eval.elapsed().as_secs_f64();
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
                "sizes": sizes, "num_params": theta.len(), "optimizer": format!("{:?}", a.optimizer).to_lowercase(),
                "lr": a.lr, "batch": a.batch, "seed": a.seed, "init": a.init, "threads": rayon::current_num_threads(),
            },
        });
        write_json_atomic(path, &v)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
