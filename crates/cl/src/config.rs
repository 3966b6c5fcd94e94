//! A run's configuration: every hyperparameter, resolved, and the one place it is validated.

use crate::methods::importance::FisherKind;
use crate::methods::{EwcMode, Method, SiGrad, SiRelu, SiVariant};
use crate::scenario::Scenario;
use engram_si::Optimizer;
use serde::{Deserialize, Serialize};

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
        if !(self.xi.is_finite() && self.xi > 0.0) {
            return bad(format!("--xi must be > 0, got {}", self.xi));
        }
        if !(self.gamma.is_finite() && (0.0..=1.0).contains(&self.gamma)) {
            return bad(format!("--gamma must lie in [0, 1], got {}", self.gamma));
        }
        if self.importance_samples == 0 {
            return bad("--importance-samples must be at least 1".into());
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
