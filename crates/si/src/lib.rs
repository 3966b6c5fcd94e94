//! # engram-si: the fused consolidation step
//!
//! Synaptic Intelligence (Zenke, Poole & Ganguli 2017), EWC (Kirkpatrick et al. 2017), online
//! EWC (Schwarz et al. 2018), L2 and MAS (Aljundi et al. 2018) share one quadratic penalty
//!
//! ```text
//! L(theta) = L_task(theta) + c * sum_i Omega_i (theta_i - theta*_i)^2        (SI eq. (4), no 1/2)
//! ```
//!
//! and differ only in how the importance `Omega` is computed. Its gradient is closed-form,
//! `2 c Omega (theta - theta*)`, so the whole optimizer step of every one of them is a single
//! element-wise pass over memory. [`fused_step_f32`] is that pass: per parameter it reads
//! `theta, g, Omega, theta*, omega, m, v`, takes the SGD or Adam step on
//! `G = g + 2 c Omega (theta - theta*)`, accumulates SI's path integral
//! `omega -= g_used * (theta_new - theta_old)` (SI eq. (3), discretised), writes
//! `theta, m, v, omega`, and reduces the penalty value. [`end_of_task`] is SI's consolidation
//! (eq. (5)): `Omega += omega / (Delta^2 + xi)`, then `omega = 0` and `theta* = theta`.
//!
//! [`reference`](mod@reference) holds the same arithmetic written the way framework code runs it: one pass over
//! memory per operation, with full-size temporaries. It is the oracle of the tests and the
//! baseline of the `fused_step` benchmark; the fused step produces bit-identical parameters,
//! moments and omega (only the penalty's f64 summation order differs).
//!
//! ## Conventions (shared with `engram-nn` and `engram-cl`)
//! - All state is flat `f32` slices of the model's length `n`. Slices the configuration does not
//!   use may be empty (length 0): `big_omega`/`theta_star` when `c == 0`, `omega` when no
//!   importance is accumulated, `m`/`v` for SGD. A used slice must have length `n`; lengths are
//!   checked with `assert!` (a wrong length is a programming error, not bad user input).
//! - The penalty value returned by a step is evaluated at theta *before* the step (the point
//!   at which the gradient `g` was taken), accumulated in f64 per fixed-size chunk of
//!   [`CHUNK`] elements and summed over chunks in order, so it does not depend on the number of
//!   threads.
//! - SI needs exactly three vectors the size of the model, whatever the number of tasks:
//!   `omega`, `Omega` and `theta*` (see [`PenaltyState`]). The start point of a task, needed for
//!   `Delta = theta(end) - theta(start)`, is `theta*` itself: `theta*` is set to theta at the end
//!   of the previous task (or to the initialisation before the first task), and theta does not
//!   change between the end of one task and the start of the next.
//!
//! See PROTOCOLS.md, "Synaptic Intelligence, exactly" and "EWC, online EWC, L2, MAS".
#![warn(missing_docs)]

mod consolidate;
#[cfg(feature = "cuda")]
mod cuda;
mod fused;
mod kernels;
pub mod reference;
mod state;
pub mod stream;

pub use consolidate::{consolidate_f32, importance_mean_f32, prev_step_accumulate_f32, Consolidation};
pub use fused::{end_of_task, fused_step_f32, penalty_f32};
pub use kernels::{ConsolidationKernels, StepBuffers};
pub use state::{OptimizerState, PenaltyState};

/// Elements per work item of the parallel kernels. Fixed (never derived from the number of
/// threads) so that the chunk-ordered f64 penalty reduction is deterministic.
pub const CHUNK: usize = 16_384;

/// The optimizer: the update rule applied to the total-loss gradient
/// `G = g + 2 c Omega (theta - theta*)`. The one type that says which optimizer a run uses (with
/// the `serde` feature it is written as `{"kind": "adam", "lr": .., "beta1": .., "beta2": ..,
/// "eps": ..}` or `{"kind": "sgd", "lr": ..}`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields))]
pub enum Optimizer {
    /// Plain SGD: `theta -= lr * G`.
    Sgd {
        /// Learning rate.
        lr: f32,
    },
    /// Bias-corrected Adam (Kingma & Ba 2015, Algorithm 1), in PyTorch's arithmetic:
    /// ```text
    /// m = beta1 m + (1 - beta1) G
    /// v = beta2 v + (1 - beta2) G G
    /// theta -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    /// ```
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

/// Which gradient multiplies the parameter change in SI's path integral `omega -= grad * delta`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OmegaGrad {
    /// The gradient of the unregularised task loss, `g` (the official pathint code; default).
    #[default]
    Task,
    /// The gradient of the total loss, `G = g + 2 c Omega (theta - theta*)` (some libraries).
    Total,
}

impl Optimizer {
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

    /// The same rule with learning rate `lr`.
    pub fn with_lr(self, lr: f32) -> Self {
        match self {
            Self::Sgd { .. } => Self::Sgd { lr },
            Self::Adam { beta1, beta2, eps, .. } => Self::Adam { lr, beta1, beta2, eps },
        }
    }

    /// `"sgd"` or `"adam"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sgd { .. } => "sgd",
            Self::Adam { .. } => "adam",
        }
    }

    /// Whether the rule keeps moments (Adam's `m` and `v`).
    pub fn has_moments(&self) -> bool {
        matches!(self, Self::Adam { .. })
    }
}

/// The configuration of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepConfig {
    /// The update rule.
    pub optimizer: Optimizer,
    /// The penalty strength `c` (SI's `c`, EWC's `lambda`; the penalty has no 1/2 factor).
    /// With `c == 0` the penalty is skipped entirely, so `G == g` bit for bit.
    pub c: f32,
    /// SI's importance accumulation: `None` for every method but SI.
    pub omega: Option<OmegaGrad>,
    /// Adam's 1-based step count `t` (bias correction); ignored by SGD.
    pub t: u64,
}

/// The slices one step reads and writes, all of the model's length `n` (or empty where unused,
/// see the crate documentation).
#[derive(Debug)]
pub struct Slices<'a> {
    /// Parameters, updated in place.
    pub theta: &'a mut [f32],
    /// Gradient of the task loss at `theta` (without the penalty).
    pub g: &'a [f32],
    /// Importance `Omega` (may be empty when `c == 0`).
    pub big_omega: &'a [f32],
    /// Anchor `theta*` (may be empty when `c == 0`).
    pub theta_star: &'a [f32],
    /// SI's running path integral `omega` (may be empty when `StepConfig::omega` is `None`).
    pub omega: &'a mut [f32],
    /// Adam's first moments (may be empty for SGD).
    pub m: &'a mut [f32],
    /// Adam's second moments (may be empty for SGD).
    pub v: &'a mut [f32],
}

impl<'a> Slices<'a> {
    /// Slices for plain training (no penalty, no importance accumulation): `m` and `v` may be
    /// empty for SGD.
    pub fn plain(theta: &'a mut [f32], g: &'a [f32], m: &'a mut [f32], v: &'a mut [f32]) -> Self {
        Slices { theta, g, big_omega: &[], theta_star: &[], omega: &mut [], m, v }
    }
}

/// Where SI's relu is applied at the end of a task (libraries differ; PROTOCOLS.md).
///
/// The official pathint code clips the *accumulated* importance after adding the new term:
/// that is [`ReluPlacement::Accumulated`], also reachable as [`ReluPlacement::Official`] and
/// the [`Default`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReluPlacement {
    /// No relu: negative importances are kept.
    None,
    /// `Omega += relu(omega / (Delta^2 + xi))`: relu of each task's new term before adding.
    PerTaskTerm,
    /// `Omega = relu(Omega + omega / (Delta^2 + xi))`: relu of the sum after adding (official).
    #[default]
    Accumulated,
}

impl ReluPlacement {
    /// The official pathint behaviour: an alias of [`ReluPlacement::Accumulated`] (usable in
    /// patterns too).
    #[allow(non_upper_case_globals)]
    pub const Official: ReluPlacement = ReluPlacement::Accumulated;
}

/// No importance accumulation (the `OMEGA` parameter of the monomorphised kernels).
pub(crate) const NO_OMEGA: u8 = 0;
/// SI's path integral with the task gradient, [`OmegaGrad::Task`].
pub(crate) const OMEGA_TASK: u8 = 1;
/// SI's path integral with the total gradient, [`OmegaGrad::Total`].
pub(crate) const OMEGA_TOTAL: u8 = 2;

/// Validated description of which parts of the step run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub n: usize,
    pub adam: bool,
    /// The penalty runs (`c != 0`).
    pub penalty: bool,
    /// [`NO_OMEGA`], [`OMEGA_TASK`] or [`OMEGA_TOTAL`].
    pub omega: u8,
}

fn check_len(name: &str, len: usize, n: usize, needed: bool, why: &str) {
    if needed {
        assert!(len == n, "engram-si: `{name}` has length {len}, expected {n} ({why})");
    } else {
        assert!(
            len == n || len == 0,
            "engram-si: `{name}` has length {len}, expected {n} or 0 (unused by this configuration)"
        );
    }
}

impl Plan {
    /// Checks the slice lengths against the configuration (panics on a mismatch).
    pub(crate) fn new(s: &Slices<'_>, cfg: &StepConfig) -> Plan {
        let n = s.theta.len();
        assert!(s.g.len() == n, "engram-si: `g` has length {}, expected {n}", s.g.len());
        assert!(cfg.c.is_finite(), "engram-si: the penalty strength c must be finite, got {}", cfg.c);
        let penalty = cfg.c != 0.0;
        check_len("big_omega", s.big_omega.len(), n, penalty, "the penalty is on: c != 0");
        check_len("theta_star", s.theta_star.len(), n, penalty, "the penalty is on: c != 0");
        let omega = match cfg.omega {
            None => NO_OMEGA,
            Some(OmegaGrad::Task) => OMEGA_TASK,
            Some(OmegaGrad::Total) => OMEGA_TOTAL,
        };
        check_len("omega", s.omega.len(), n, omega != NO_OMEGA, "importance accumulation is on");
        let adam = cfg.optimizer.has_moments();
        check_len("m", s.m.len(), n, adam, "Adam");
        check_len("v", s.v.len(), n, adam, "Adam");
        if adam {
            assert!(cfg.t >= 1, "engram-si: Adam's step count t is 1-based, got 0");
        }
        Plan { n, adam, penalty, omega }
    }
}

/// The per-step scalars, computed once per call (in f64, then rounded to f32).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalars {
    /// `2 c`: the penalty gradient is `(2c * Omega) * (theta - theta*)`.
    pub two_c: f32,
    /// SGD's learning rate.
    pub lr: f32,
    pub beta1: f32,
    /// `1 - beta1`.
    pub omb1: f32,
    pub beta2: f32,
    /// `1 - beta2`.
    pub omb2: f32,
    /// Adam's step size `lr / (1 - beta1^t)`.
    pub step: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f32,
    pub eps: f32,
}

impl Scalars {
    /// The scalars of one step, exactly as PyTorch's single-tensor Adam forms them:
    /// `step = (lr / (1 - beta1^t)) as f32`, `bc2_sqrt = sqrt(1 - beta2^t) as f32`, with the
    /// powers taken in f64 (`powf`, C's `pow`), `1 - beta` in f32.
    pub(crate) fn new(cfg: &StepConfig) -> Scalars {
        let two_c = 2.0 * cfg.c;
        match cfg.optimizer {
            Optimizer::Sgd { lr } => {
                Scalars { two_c, lr, beta1: 0.0, omb1: 0.0, beta2: 0.0, omb2: 0.0, step: 0.0, bc2_sqrt: 1.0, eps: 0.0 }
            }
            Optimizer::Adam { lr, beta1, beta2, eps } => {
                let (step, bc2_sqrt) = adam_scalars(lr, beta1, beta2, cfg.t);
                Scalars { two_c, lr, beta1, omb1: 1.0 - beta1, beta2, omb2: 1.0 - beta2, step, bc2_sqrt, eps }
            }
        }
    }
}

/// Adam's bias-corrected step size and second-moment correction for the 1-based step `t`:
/// `(lr / (1 - beta1^t), sqrt(1 - beta2^t))`, computed in f64 and rounded to f32
/// (Kingma & Ba 2015, Algorithm 1, as PyTorch's `torch.optim.Adam` forms them).
pub fn adam_scalars(lr: f32, beta1: f32, beta2: f32, t: u64) -> (f32, f32) {
    let t = t as f64;
    let bc1 = 1.0 - (beta1 as f64).powf(t);
    let bc2 = 1.0 - (beta2 as f64).powf(t);
    ((lr as f64 / bc1) as f32, bc2.sqrt() as f32)
}

/// Flushes a subnormal value to zero (|x| < `f32::MIN_POSITIVE`), applied to Adam's moments
/// `m` and `v` after each update. A parameter whose gradient becomes exactly zero (a dead ReLU
/// unit, a pixel a task never lights) sees `m` decay by `beta1` per step: after ~800 steps it is
/// subnormal, and on x86 every arithmetic operation on a subnormal takes a microcode assist
/// (~100 cycles). Measured on a 100k-parameter state driven to equilibrium: the step became 4x
/// slower as m went subnormal. A subnormal moment changes the update by less than 1e-30 (the
/// `eps = 1e-8` in the denominator dominates), so flushing is numerically invisible and keeps
/// the step at memory speed. The unfused reference and the plain-optimizer tests flush alike.
#[inline(always)]
pub fn flush_subnormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        x
    }
}

/// `relu(x) = max(x, 0)`, the clipping of SI's importance.
#[inline(always)]
pub(crate) fn relu(x: f32) -> f32 {
    x.max(0.0)
}
