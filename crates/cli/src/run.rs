//! `engram run`: one continual-learning run, with a readable table at the end.

use crate::common::{ComputeArgs, DataArgs, LoadedMnist, OptimizerName};
use crate::session::{execute_with, finish, Outputs};
use anyhow::{bail, Result};
use clap::Args;
use engram_cl::config::{InitChoice, RunConfig};
use engram_cl::methods::importance::FisherKind;
use engram_cl::methods::{EwcMode, Method, SiGrad, SiRelu, SiVariant};
use engram_cl::protocol::{self, Overrides};
use engram_cl::run::Start;
use engram_cl::scenario::{ScenarioKind, ScenarioSpec, Setting};
use std::path::PathBuf;

/// Arguments of `engram run`. Unset hyperparameters take the benchmark's published protocol
/// (see `engram run --help` and the README).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The benchmark.
    #[arg(long, value_enum)]
    pub scenario: ScenarioKind,
    /// The method.
    #[arg(long, value_enum)]
    pub method: Method,
    /// Output sharing for split-mnist: task (multi-head mask, SI paper), domain (one 2-way head),
    /// class (one 10-way head, no mask). The other benchmarks are domain-incremental.
    #[arg(long, value_enum, default_value_t = Setting::Task)]
    pub setting: Setting,
    /// Number of tasks (permuted-mnist: default 10; rotated-mnist: default 20).
    #[arg(long)]
    pub tasks: Option<usize>,
    /// permuted-mnist: permute task 1 too (GEM/A-GEM convention); default: task 1 is unpermuted.
    #[arg(long)]
    pub permute_first: bool,
    /// rotated-mnist: task t rotates by an angle drawn from [t*D, (t+1)*D] degrees.
    #[arg(long, value_name = "D", default_value_t = 9.0)]
    pub rotation_step: f32,
    /// rotated-mnist: fixed angles in degrees instead (one task each), e.g. 0,10,20,...,90.
    #[arg(long, value_delimiter = ',', value_name = "DEG,...")]
    pub angles: Option<Vec<f32>>,
    /// Train on a seeded random subset of this many samples per task (GEM protocol: 1000).
    #[arg(long, value_name = "N")]
    pub samples_per_task: Option<usize>,
    /// SI strength c in L = L_task + c sum Omega (theta - theta*)^2 (default 1 on split-mnist,
    /// 0.1 on permuted-mnist).
    #[arg(long, allow_negative_numbers = true)]
    pub c: Option<f32>,
    /// Strength of L2, EWC and MAS: L2 and MAS add lambda sum Omega (theta - theta*)^2; EWC adds
    /// (lambda/2) sum F (theta - theta*)^2.
    #[arg(long, allow_negative_numbers = true)]
    pub lambda: Option<f32>,
    /// SI damping xi in Omega += omega / (delta^2 + xi).
    #[arg(long, allow_negative_numbers = true)]
    pub xi: Option<f32>,
    /// Learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Optimizer (default: the benchmark's).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerName>,
    /// Epochs per task.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Mini-batch size.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Width of each hidden layer.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Number of hidden layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Reset the optimizer state at each new task (default: yes on split-mnist, as the SI paper).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub reset_optimizer: Option<bool>,
    /// Zero-initialise the output layer (default: yes on split-mnist, as the SI paper).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub zero_output: Option<bool>,
    /// Initial weights: kaiming-uniform (PyTorch's nn.Linear default, weights and biases
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in))) or xavier-uniform (Glorot, U(-a, a) with
    /// a = sqrt(6/(fan_in+fan_out)), biases 0: the GEM paper's official code, used by the
    /// gem-rotated-mnist and gem-permuted-mnist presets; also Keras's default, so the SI paper's
    /// official code), or he-uniform (torch.nn.init.kaiming_uniform_ for ReLU,
    /// U(-sqrt(6/fan_in), sqrt(6/fan_in)), biases 0). Default: the benchmark's official code: xavier-uniform on split-mnist,
    /// permuted-mnist and rotated-mnist, kaiming-uniform on even-odd.
    #[arg(long, value_enum, value_name = "SCHEME")]
    pub init: Option<InitChoice>,
    /// SI: which gradient feeds the path integral (task: the official code).
    #[arg(long, value_enum, default_value_t = SiGrad::Task)]
    pub si_grad: SiGrad,
    /// SI: where relu is applied to the importance (official: on the accumulated Omega).
    #[arg(long, value_enum, default_value_t = SiRelu::Official)]
    pub si_relu: SiRelu,
    /// SI: the path integral as the official code (official), or a mistake seen in
    /// reimplementations, to measure its cost: prev-step multiplies each step's gradient by the
    /// PREVIOUS step's parameter change (off by one step); from-init measures Delta in
    /// Omega += omega / (Delta^2 + xi) from the initialisation instead of the task's start.
    #[arg(long, value_enum, default_value_t = SiVariant::Official)]
    pub si_variant: SiVariant,
    /// EWC: empirical Fisher (true labels) or true Fisher (labels sampled from the model).
    #[arg(long, value_enum, default_value_t = FisherKind::Empirical)]
    pub fisher: FisherKind,
    /// EWC: one penalty per task (separate) or online EWC with decay --gamma.
    #[arg(long, value_enum, default_value_t = EwcMode::Separate)]
    pub ewc_mode: EwcMode,
    /// Online EWC's decay of the old Fisher.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub gamma: f32,
    /// GEM / A-GEM: samples kept per finished task (GEM: the task's last N samples; A-GEM: a ring
    /// buffer per class, N in all). Default 256 (GEM paper).
    #[arg(long, value_name = "N")]
    pub memories: Option<usize>,
    /// GEM: the margin gamma of the dual QP's bound v >= gamma (the official code's
    /// memory_strength; default 0.5). Larger values push each step further towards the memories.
    #[arg(long, allow_negative_numbers = true, value_name = "GAMMA")]
    pub memory_strength: Option<f32>,
    /// Samples for the Fisher (EWC) and MAS importance at the end of each task.
    #[arg(long, default_value_t = 1000)]
    pub importance_samples: usize,
    /// Seed of permutations, angles, initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also measure accuracy on the training data (the official SI notebook's figure).
    #[arg(long)]
    pub eval_train: bool,
    /// Add the time split (forward, backward, consolidation step, importance, evaluation).
    #[arg(long)]
    pub profile: bool,
    /// SI diagnostics per task (needs --method si): sum of omega against the drop of the task
    /// loss on the training data (the path-integral identity), the distribution of the new
    /// importance term before any relu and of Omega after, the penalty's share of the loss, and
    /// the drift |theta - theta*| weighted by Omega. Printed, and under `diagnostics` in --out.
    /// The identity is tightest with plain SGD, a small --lr and a large --batch.
    #[arg(long)]
    pub diagnose: bool,
    /// Write the run as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the accuracy matrix as CSV to this file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Draw the run's figure to this file (.png or .svg): each task's test accuracy after each
    /// training task, the average accuracy, and R as an annotated heatmap (as `engram plot`).
    #[arg(long, value_name = "FIG")]
    pub plot: Option<PathBuf>,
    /// Save a checkpoint in this directory after every task (and every --checkpoint-every
    /// steps): `DIR/ckpt-<steps>/` holding `tensors.safetensors` (parameters, optimizer state,
    /// Omega, theta*, omega, episodic memories, the epoch's sample order) and `manifest.json`
    /// (scenario, every hyperparameter, progress, random-stream states, R so far, a sha256 per
    /// tensor). Each is written atomically; the newest --keep-checkpoints are kept. Continue a
    /// stopped run with `engram resume DIR`; look inside with `engram inspect DIR`.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Also checkpoint every N training steps (counted over the whole run), so that a run killed
    /// in the middle of a task loses at most N steps. Needs --checkpoint-dir.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// How many of the newest checkpoints to keep in --checkpoint-dir (at least 1; older ones
    /// are removed once a newer one is safely written).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Start from a trained model: a checkpoint written at the end of a task (a `ckpt-*`
    /// directory, or a run's --checkpoint-dir for its newest checkpoint). Its parameters are
    /// loaded; its Omega and theta* (same quadratic method) or episodic memory (same gem/agem)
    /// carry over, so the new tasks are learned under the old tasks' protection. The network
    /// must have the same layer sizes. The optimizer and random streams start fresh from --seed.
    #[arg(long, value_name = "CKPT")]
    pub init_from: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Check everything the run needs and stop before training: every value, the output files
    /// (--out, --csv, --plot), the checkpoint directory, the memory the run would need against
    /// the machine's, the thread count, the device, the MNIST files and --init-from. Prints what
    /// would run; creates and changes nothing. Exit status 0 when the run would start.
    #[arg(long)]
    pub check: bool,
    /// Read flags from a TOML file. Each key is a long flag name of `engram run` without the
    /// dashes (or the same in snake_case); flags on the command line override the file.
    ///
    /// A value is a string, an integer or a float; `true` turns a plain flag on (`false` leaves
    /// it off); a BOOL option takes `true` or `false`; a list flag takes an array. Unknown keys,
    /// values of the wrong type and invalid values are errors naming the file, the line and the
    /// key. `config`, `help` and `version` are not keys. For example:
    ///
    ///     scenario = "split-mnist"
    ///     method = "si"
    ///     c = 0.5
    ///     epochs = 5
    ///     samples-per-task = 1000
    ///     eval-train = true
    ///     reset-optimizer = false
    ///     out = "runs/si.json"
    ///
    /// then `engram run --config run.toml --seed 3` (rotated-mnist: `angles = [0, 45, 90]`).
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `engram run`'s flags, parsed on their own (a sweep's runs and a preset's jobs are described
/// by their flags).
#[derive(clap::Parser, Debug)]
#[command(name = "engram run", no_binary_name = true)]
struct RunFlags {
    #[command(flatten)]
    run: RunArgs,
}

/// Parses `engram run`'s flags (without the `run` itself).
pub fn parse_run_flags<I, T>(argv: I) -> Result<RunArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    RunFlags::try_parse_from(argv).map(|f| f.run)
}

impl RunArgs {
    /// The scenario spec and run config these arguments describe.
    pub fn resolve(&self) -> Result<(ScenarioSpec, RunConfig)> {
        let strength = match self.method {
            Method::Si => {
                if self.lambda.is_some() {
                    bail!("--lambda is for l2, ewc and mas; SI's strength is --c");
                }
                self.c
            }
            Method::L2 | Method::Ewc | Method::Mas => {
                if self.c.is_some() {
                    bail!("--c is SI's strength; {} takes --lambda", self.method.name());
                }
                self.lambda
            }
            Method::Finetune | Method::Joint | Method::Gem | Method::Agem => {
                if self.c.is_some() || self.lambda.is_some() {
                    bail!("{} has no penalty: --c and --lambda do not apply", self.method.name());
                }
                None
            }
        };
        if !self.method.is_episodic() && (self.memories.is_some() || self.memory_strength.is_some()) {
            bail!("--memories and --memory-strength apply to gem and agem only");
        }
        if self.method == Method::Agem && self.memory_strength.is_some() {
            bail!("--memory-strength is GEM's margin; agem has none");
        }
        if let Some(s) = self.memory_strength {
            if !(s.is_finite() && s >= 0.0) {
                bail!("--memory-strength must be a number >= 0, got {s}");
            }
        }
        if self.memories == Some(0) {
            bail!("--memories must be at least 1");
        }
        if let Some(s) = strength {
            if !(s.is_finite() && s >= 0.0) {
                let flag = if self.method == Method::Si { "--c" } else { "--lambda" };
                bail!("{flag} (the penalty strength) must be a number >= 0, got {s}");
            }
        }
        if self.setting != Setting::Task && self.scenario != ScenarioKind::SplitMnist {
            bail!("--setting applies to split-mnist only; {} is domain-incremental", self.scenario.name());
        }
        let o = Overrides {
            strength,
            xi: self.xi,
            lr: self.lr,
            optimizer: self.optimizer.map(OptimizerName::rule),
            epochs: self.epochs,
            batch: self.batch,
            hidden: self.hidden,
            layers: self.layers,
            reset_optimizer: self.reset_optimizer,
            zero_output: self.zero_output,
            init: self.init,
            samples_per_task: self.samples_per_task,
            memories: self.memories,
            memory_strength: self.memory_strength,
        };
        let (cfg, samples) = protocol::resolve(
            self.scenario,
            self.method,
            &o,
            self.seed,
            (self.si_grad, self.si_relu),
            (self.fisher, self.ewc_mode, self.gamma),
            self.importance_samples,
            self.eval_train,
        );
        if self.si_variant != SiVariant::Official && self.method != Method::Si {
            bail!("--si-variant applies to --method si only");
        }
        let cfg = RunConfig { diagnose: self.diagnose, si_variant: self.si_variant, ..cfg };
        cfg.validate()?;
        let mut spec = ScenarioSpec::new(self.scenario);
        spec.setting = self.setting;
        if let Some(t) = self.tasks {
            spec.tasks = t;
        }
        if let Some(a) = &self.angles {
            if self.scenario != ScenarioKind::RotatedMnist {
                bail!("--angles applies to rotated-mnist only");
            }
            spec.tasks = a.len();
        }
        if !(self.rotation_step.is_finite() && self.rotation_step >= 0.0) {
            bail!("--rotation-step must be a number >= 0");
        }
        spec.permute_first = self.permute_first;
        spec.rotation_step = self.rotation_step;
        spec.angles = self.angles.clone();
        spec.samples_per_task = samples;
        spec.seed = self.seed;
        Ok((spec, cfg))
    }
}

/// Runs `engram run`.
pub fn run(a: RunArgs) -> Result<()> {
    let (spec, cfg) = a.resolve()?;
    let footprint = engram_cl::footprint::footprint(&spec, &cfg);
    crate::preflight::check_memory("this run", &footprint)?;
    // Refuse what would fail to be written before training, not after.
    if let Some(p) = &a.plot {
        engram_plot::Format::of(p)?;
    }
    crate::preflight::check_output_files([
        ("--out", a.out.as_deref()),
        ("--csv", a.csv.as_deref()),
        ("--plot", a.plot.as_deref()),
    ])?;
    if a.checkpoint_dir.is_none() && a.checkpoint_every.is_some() {
        bail!("--checkpoint-every needs --checkpoint-dir");
    }
    if a.checkpoint_every == Some(0) {
        bail!("--checkpoint-every must be at least 1");
    }
    if a.keep_checkpoints == 0 {
        bail!("--keep-checkpoints must be at least 1");
    }
    if a.checkpoint_dir.is_some() && a.diagnose {
        bail!("--diagnose cannot be combined with --checkpoint-dir (its per-task records are not checkpointed)");
    }
    // Refuse an unusable checkpoint location before training, not after the first task.
    // Absolute paths, so that `engram resume` from another directory writes the same files.
    let abs = |p: &Option<PathBuf>| p.as_ref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    let outputs = Outputs {
        out: abs(&a.out),
        csv: abs(&a.csv),
        plot: abs(&a.plot),
        profile: a.profile,
        checkpoint_every: a.checkpoint_every,
        keep_checkpoints: a.keep_checkpoints,
    };
    if let Some(d) = &a.checkpoint_dir {
        crate::ckpt::prepare_dir(d, !a.check)?;
    }
    let device = a.compute.device()?;
    let sc = LoadedMnist::load(&a.data)?.scenario(&spec)?;
    let start = match &a.init_from {
        Some(p) => crate::ckpt::init_from(p, &sc, &cfg)?,
        None => Start::Fresh,
    };
    if a.check {
        println!(
            "engram run --check: ready. {} with {} tasks, {} ({} parameters, {} epoch(s) of batch {}), \
             about {} of memory; nothing trained, nothing written",
            spec.kind.name(),
            sc.tasks.len(),
            cfg.method.name(),
            footprint.params,
            cfg.epochs,
            cfg.batch,
            engram_cl::footprint::human(footprint.total()),
        );
        return Ok(());
    }
    let res = execute_with(&device, &sc, &spec, &cfg, start, a.checkpoint_dir.as_deref(), &outputs, a.quiet)?;
    finish(&spec, &sc, &cfg, &res, &outputs)
}
