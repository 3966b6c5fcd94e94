//! The methods. Every quadratic-penalty method (L2, EWC, online EWC, MAS, SI) shares one state,
//! `Omega` and `theta*`, one penalty `c * sum_i Omega_i (theta_i - theta*_i)^2`, and one fused
//! step (crate `engram-si`); they differ only in how `Omega` is computed at the end of a task.

use serde::{Deserialize, Serialize};

/// A continual-learning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SiGrad {
    /// The unregularised task-loss gradient (the official code).
    Task,
    /// The total-loss gradient, penalty included (some libraries).
    Total,
}

/// The quadratic-penalty state: exactly `Omega`, `theta*` and (SI only) the running `omega`,
/// whatever the number of tasks.
#[derive(Clone, Debug, Default)]
pub struct Penalty {
    /// Per-parameter importance `Omega`.
    pub big_omega: Vec<f32>,
    /// The anchor `theta*`.
    pub theta_star: Vec<f32>,
    /// SI's running path integral `omega` for the current task (empty for other methods).
    pub omega: Vec<f32>,
}

impl Penalty {
    /// State for `method` over `n` parameters, anchored at `theta0` (the initialisation; SI
    /// measures each task's parameter change from its start, which equals the anchor).
    pub fn new(method: Method, theta0: &[f32]) -> Self {
        if !method.is_quadratic() {
            return Self::default();
        }
        let n = theta0.len();
        Self {
            big_omega: vec![0.0; n],
            theta_star: theta0.to_vec(),
            omega: if method == Method::Si { vec![0.0; n] } else { Vec::new() },
        }
    }

    /// Bytes held (the state-size claims are checked against this).
    pub fn bytes(&self) -> usize {
        4 * (self.big_omega.len() + self.theta_star.len() + self.omega.len())
    }

    /// Folds a new importance estimate into the state at the end of a task.
    ///
    /// * L2: `Omega = 1`, `theta* = theta`.
    /// * EWC separate: `Omega' = Omega + F`, `theta*' = (Omega theta* + F theta) / Omega'`.
    /// * EWC online: `Omega' = gamma Omega + F`, `theta* = theta`.
    /// * MAS: `Omega' = Omega + new`, `theta* = theta`.
    pub fn consolidate(&mut self, method: Method, theta: &[f32], new: Option<&[f32]>, ewc_mode: EwcMode, gamma: f32) {
        match method {
            Method::L2 => {
                self.big_omega.fill(1.0);
                self.theta_star.copy_from_slice(theta);
            }
            Method::Ewc if ewc_mode == EwcMode::Separate => {
                let f = new.expect("EWC needs a Fisher");
                let it = self.big_omega.iter_mut().zip(self.theta_star.iter_mut()).zip(f.iter().zip(theta));
                for ((om, ts), (&fi, &th)) in it {
                    let o = *om + fi;
                    *ts = if o > 0.0 { (*om * *ts + fi * th) / o } else { th };
                    *om = o;
                }
            }
            Method::Ewc => {
                let f = new.expect("EWC needs a Fisher");
                for (o, fi) in self.big_omega.iter_mut().zip(f) {
                    *o = gamma * *o + fi;
                }
                self.theta_star.copy_from_slice(theta);
            }
            Method::Mas => {
                let f = new.expect("MAS needs an importance");
                for (o, v) in self.big_omega.iter_mut().zip(f) {
                    *o += v;
                }
                self.theta_star.copy_from_slice(theta);
            }
            Method::Si | Method::Finetune | Method::Joint | Method::Gem | Method::Agem => {}
        }
    }
}
