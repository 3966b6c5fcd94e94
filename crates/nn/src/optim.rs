//! SGD and Adam for the flat parameter vector.
//!
//! Both are the fused consolidation step of `engram-si` with `c = 0` and no importance
//! accumulation, so plain training and regularised training share one code path (and one
//! tested arithmetic). Adam is PyTorch's bias-corrected form.

use engram_si::{fused_step_f32, Optim, Slices, StepConfig};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// `theta -= lr * g`.
    Sgd {
        /// Learning rate.
        lr: f32,
    },
    /// Bias-corrected Adam (Kingma & Ba 2015, as in PyTorch).
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
    },
}

impl OptimizerKind {
    /// Adam with PyTorch's defaults `betas = (0.9, 0.999)`, `eps = 1e-8`.
    pub fn adam(lr: f32) -> Self {
        Self::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }

    /// The learning rate.
    pub fn lr(&self) -> f32 {
        match *self {
            Self::Sgd { lr } | Self::Adam { lr, .. } => lr,
        }
    }

    /// The `engram-si` optimizer description.
    pub fn to_si(self) -> Optim {
        match self {
            Self::Sgd { lr } => Optim::Sgd { lr },
            Self::Adam { lr, beta1, beta2, eps } => Optim::Adam { lr, beta1, beta2, eps },
        }
    }
}

/// An optimizer with its state (Adam's moments and step count) for `n` parameters.
#[derive(Clone, Debug)]
pub struct Optimizer {
    /// The update rule.
    pub kind: OptimizerKind,
    /// Adam's first moments (empty for SGD).
    pub m: Vec<f32>,
    /// Adam's second moments (empty for SGD).
    pub v: Vec<f32>,
    /// Steps taken since the last reset (Adam's bias correction uses `t + 1` for the next step).
    pub t: u64,
}

impl Optimizer {
    /// A fresh optimizer for `n` parameters.
    pub fn new(kind: OptimizerKind, n: usize) -> Self {
        let k = if matches!(kind, OptimizerKind::Adam { .. }) { n } else { 0 };
        Self { kind, m: vec![0.0; k], v: vec![0.0; k], t: 0 }
    }

    /// Forgets the moments and the step count (the SI paper resets Adam at each task).
    pub fn reset(&mut self) {
        self.m.fill(0.0);
        self.v.fill(0.0);
        self.t = 0;
    }

    /// The step configuration for the next step, with penalty strength `c` and optional
    /// importance accumulation (the caller passes the penalty slices).
    pub fn next_config(&mut self, c: f32, omega: Option<engram_si::OmegaGrad>) -> StepConfig {
        self.t += 1;
        StepConfig { optim: self.kind.to_si(), c, omega, t: self.t }
    }

    /// One plain step `theta <- update(theta, grad)`.
    pub fn step(&mut self, theta: &mut [f32], grad: &[f32]) {
        let cfg = self.next_config(0.0, None);
        fused_step_f32(
            Slices { theta, g: grad, big_omega: &[], theta_star: &[], omega: &mut [], m: &mut self.m, v: &mut self.v },
            &cfg,
        );
    }
}
