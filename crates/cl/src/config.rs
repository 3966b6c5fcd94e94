//! A run's configuration: the method and its options, every hyperparameter, resolved, and the one
//! place it is validated.

use crate::scenario::Scenario;
use engram_si::Optimizer;
use serde::{Deserialize, Serialize};

/// A continual-learning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Plain sequential training (the lower bound, "None" in the literature).
    Finetune,
    /// All tasks' data at once (the upper bound); its accuracy matrix has a single row.
    Joint,
    /// Quadratic anchor with `Omega = 1`: penalty `lambda * sum (theta - theta*)^2`.
    L2,
    /// Elastic weight consolidation: `(lambda / 2) * sum F (theta - theta*)^2` with the diagonal
    /// Fisher `F` (Kirkpatrick et al. 2017); one penalty per task, or online with decay gamma.
    Ewc,
    /// Memory-aware synapses: `lambda * sum Omega (theta - theta*)^2`, `Omega` the mean absolute
    /// gradient of the squared output norm (Aljundi et al. 2018), accumulated over tasks.
    Mas,
    /// Synaptic intelligence: `c * sum Omega (theta - theta*)^2`, `Omega` the normalised path
    /// integral of the loss drop (Zenke et al. 2017).
    Si,
    /// Gradient episodic memory (Lopez-Paz & Ranzato 2017): the last `--memories` samples of each
    /// finished task; each step's gradient is projected (dual QP, paper Eq. 11-13) so that no
    /// memory loss increases, with margin `--memory-strength`.
    Gem,
    /// Averaged GEM (Chaudhry et al. 2019): one constraint from the gradient on up to 256
    /// samples drawn from the whole memory (a per-class ring buffer of each finished task).
    Agem,
}

impl Method {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Finetune => "finetune",
            Self::Joint => "joint",
            Self::L2 => "l2",
            Self::Ewc => "ewc",
            Self::Mas => "mas",
            Self::Si => "si",
            Self::Gem => "gem",
            Self::Agem => "agem",
        }
    }

    /// Whether the method keeps a quadratic penalty (and so uses `Omega` and `theta*`).
    pub fn is_quadratic(self) -> bool {
        matches!(self, Self::L2 | Self::Ewc | Self::Mas | Self::Si)
    }

    /// Whether the method keeps an episodic memory (GEM, A-GEM).
    pub fn is_episodic(self) -> bool {
        matches!(self, Self::Gem | Self::Agem)
    }
}

/// Original (one penalty per task) or online EWC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum EwcMode {
    /// One penalty per finished task, `sum_t F_t (theta - theta*_t)^2`. Its gradient equals that
    /// of ONE quadratic with `Omega = sum_t F_t` and anchor `sum_t F_t theta*_t / Omega`, so the
    /// state stays two vectors whatever the number of tasks (the reported penalty omits a
    /// constant that has no gradient).
    Separate,
    /// Online EWC (Schwarz et al. 2018): `F <- gamma F + F_new`, one anchor at the latest task.
    Online,
}

/// Where SI's relu is applied at the end of a task (see `engram_si::ReluPlacement`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SiRelu {
    /// As the official code: relu of the accumulated Omega after adding the new term.
    Official,
    /// No relu: negative importances are kept.
    None,
    /// Relu of each task's new term before it is added.
    PerTask,
}

/// How SI's path integral and its normalisation are computed: the official arithmetic, or one
/// of the mistakes seen in reimplementations (PROTOCOLS.md, "Synaptic Intelligence, exactly"),
/// kept to measure what each costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SiVariant {
    /// As the official code: `omega -= g(k) * delta(k)`, the gradient of step k times the change
    /// that step k made; `Delta` measured from the start of the task.
    #[default]
    Official,
    /// Off by one step: `omega -= g(k) * delta(k-1)`, the gradient times the PREVIOUS step's
    /// change (zero at the first step of each task).
    PrevStep,
    /// The anchor mix-up: `Delta` in `Omega += omega / (Delta^2 + xi)` measured from the
    /// initialisation instead of the task's start (the penalty's anchor is still the task's end).
    FromInit,
}

/// Which gradient feeds SI's path integral.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SiGrad {
    /// The unregularised task-loss gradient (the official code).
    Task,
    /// The total-loss gradient, penalty included (some libraries).
    Total,
}

/// Which labels the Fisher uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum FisherKind {
    /// The true labels (the empirical Fisher).
    Empirical,
    /// Labels sampled from the model's own predictive distribution (the true Fisher).
    True,
    /// The square of the gradient of the MEAN loss over the samples (true labels): the GEM
    /// paper's official EWC (`model/ewc.py`). A known, much weaker variant (the cross terms
    /// between samples cancel): not a Fisher, kept to reproduce that code.
    BatchMean,
}

/// Initial weights (`--init`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum InitChoice {
    /// PyTorch's `nn.Linear` default: weights and biases `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    #[default]
    KaimingUniform,
    /// Xavier/Glorot uniform, `U(-a, a)` with `a = sqrt(6/(fan_in+fan_out))`, and zero biases:
    /// the GEM paper's official code (`model/common.py`).
    XavierUniform,
    /// He/Kaiming uniform for ReLU, `U(-sqrt(6/fan_in), sqrt(6/fan_in))`, and zero biases:
    /// `torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")`.
    HeUniform,
}

impl InitChoice {
    /// The engine's scheme.
    pub fn scheme(self) -> engram_nn::InitScheme {
        match self {
            InitChoice::KaimingUniform => engram_nn::InitScheme::KaimingUniform,
            InitChoice::XavierUniform => engram_nn::InitScheme::XavierUniform,
            InitChoice::HeUniform => engram_nn::InitScheme::HeUniform,
        }
    }
}

/// Every hyperparameter of a run (all resolved: no hidden defaults). Serialized whole into
/// checkpoints; `--out` JSON rewrites `optimizer` as its name beside `lr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The method.
    pub method: Method,
    /// Penalty strength `c` of the fused step: SI's `c`; for L2 and MAS `lambda`; for EWC
    /// `lambda / 2` (the EWC paper's `(lambda/2) sum F (theta - theta*)^2`).
    pub c: f32,
    /// The user-facing strength (`--c` for SI, `--lambda` for the others).
    pub strength: f32,
    /// SI's damping `xi` in `Omega += omega / (delta^2 + xi)`.
    pub xi: f32,
    /// The optimizer and its learning rate (`{"kind": "adam", "lr": ..}` in checkpoints).
    pub optimizer: Optimizer,
    /// Epochs per task.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Hidden layer width.
    pub hidden: usize,
    /// Number of hidden layers.
    pub layers: usize,
    /// Zero-initialise the output layer (SI paper, Split MNIST).
    pub zero_output: bool,
    /// Distribution of the initial weights (`--init`; the GEM presets use Xavier-uniform).
    pub init: InitChoice,
    /// Reset the optimizer state at the start of each task.
    pub reset_optimizer: bool,
    /// SI: gradient of the path integral.
    pub si_grad: SiGrad,
    /// SI: relu placement.
    pub si_relu: SiRelu,
    /// SI: the official path integral, or a known reimplementation mistake (`--si-variant`).
    pub si_variant: SiVariant,
    /// EWC: empirical or true Fisher.
    pub fisher: FisherKind,
    /// EWC: separate penalties or online.
    pub ewc_mode: EwcMode,
    /// Online EWC's decay `gamma`.
    pub gamma: f32,
    /// Samples used for the Fisher / MAS importance at the end of each task.
    pub importance_samples: usize,
    /// Seed of initialisation, shuffling and sampling.
    pub seed: u64,
    /// Also measure accuracy on each task's training data (the official SI notebook's figure).
    pub eval_train: bool,
    /// GEM / A-GEM: memories per task (`--memories`).
    pub memories: usize,
    /// GEM: the margin `gamma` of the dual QP's bound `v >= gamma` (`--memory-strength`).
    pub memory_strength: f32,
    /// SI only: record the per-task diagnostics of [`crate::diagnose`] (`--diagnose`). Costs
    /// two forward passes over each task's training data and one sort of the importances.
    #[serde(skip)]
    pub diagnose: bool,
}

/// The most epochs per task a run accepts (the published protocols use 1 to 20).
pub const MAX_EPOCHS: usize = 100_000;

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

impl RunConfig {
    /// Rejects configurations that cannot run, naming the flag. Every caller (flags, presets,
    /// sweeps, a checkpoint's record) goes through here before any work is done.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |m: String| Err(InvalidConfig(m));
        if self.diagnose && self.method != Method::Si {
            return bad(format!("--diagnose reports SI's path integral: it needs --method si, not {:?}", self.method));
        }
        if self.si_variant != SiVariant::Official && self.method != Method::Si {
            return bad(format!(
                "--si-variant changes SI's path integral: it needs --method si, not {:?}",
                self.method
            ));
        }
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.epochs > MAX_EPOCHS {
            return bad(format!(
                "--epochs {} is more than {MAX_EPOCHS} passes over each task: the run would not end",
                self.epochs
            ));
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
        }
        if self.hidden == 0 {
            return bad("--hidden must be at least 1".into());
        }
        let lr = self.optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {lr}"));
        }
        if !(self.strength.is_finite() && self.strength >= 0.0) {
            return bad(format!("the penalty strength (--c / --lambda) must be >= 0, got {}", self.strength));
        }
        if !(self.c.is_finite() && self.c >= 0.0) {
            return bad(format!("the fused step's penalty strength c must be a finite number >= 0, got {}", self.c));
        }
        // c is derived from the strength (EWC's (lambda/2) sum F d^2): they cannot disagree.
        let c = if self.method == Method::Ewc { self.strength / 2.0 } else { self.strength };
        if self.c.to_bits() != c.to_bits() {
            return bad(format!("the penalty strength c is {}, but the strength {} gives {c}", self.c, self.strength));
        }
        if let Optimizer::Adam { beta1, beta2, eps, .. } = self.optimizer {
            if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2)) {
                return bad(format!("Adam's beta1 and beta2 must lie in [0, 1), got {beta1} and {beta2}"));
            }
            if !(eps.is_finite() && eps > 0.0) {
                return bad(format!("Adam's eps must be a finite number > 0, got {eps}"));
            }
        }
        if !(self.xi.is_finite() && self.xi > 0.0) {
            return bad(format!("--xi must be > 0, got {}", self.xi));
        }
        if !(self.gamma.is_finite() && (0.0..=1.0).contains(&self.gamma)) {
            return bad(format!("--gamma must lie in [0, 1], got {}", self.gamma));
        }
        if self.importance_samples == 0 {
            return bad("--importance-samples must be at least 1".into());
        }
        if self.importance_samples > 10_000_000 {
            return bad(format!("--importance-samples {} is more than 10,000,000", self.importance_samples));
        }
        if self.method.is_episodic() {
            if self.memories == 0 {
                return bad("--memories must be at least 1 for gem and agem".into());
            }
            if self.memories > 1_000_000 {
                return bad(format!("--memories {} is more than 1,000,000 samples per task", self.memories));
            }
            if !(self.memory_strength.is_finite() && self.memory_strength >= 0.0) {
                return bad(format!("--memory-strength must be a number >= 0, got {}", self.memory_strength));
            }
        }
        Ok(())
    }
}

/// The network's layer sizes for a scenario and config: input, `layers` hidden layers of
/// `hidden`, and the scenario's outputs.
pub fn layer_sizes(scenario: &Scenario, cfg: &RunConfig) -> Vec<usize> {
    let input = scenario.tasks.first().map_or(784, |t| t.train.split.dim);
    let mut sizes = vec![input];
    sizes.extend(std::iter::repeat_n(cfg.hidden, cfg.layers));
    sizes.push(scenario.outputs);
    sizes
}
