//! engram-nn: dense networks on the engram tape.
//!
//! * [`Mlp`]: a stack of [`Dense`] layers with ReLU between them, whose parameters live in ONE
//!   flat vector `theta` (weights then bias, layer by layer). Flat storage is what lets the fused
//!   consolidation step (crate `engram-si`) update every parameter, its optimizer moments and its
//!   importance state in a single pass over memory.
//! * [`Init`]: PyTorch-style initialisation (Kaiming-uniform, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
//!   for weights and biases) or Xavier-uniform with zero biases (the GEM paper's code), with an
//!   option to zero the output layer (the SI paper's setting).
//! * [`masked_loss`] and [`TaskMask`]: the masked softmax cross-entropy of the multi-head setting.
//! * [`Optimizer`]: SGD and bias-corrected Adam, implemented as the fused step with `c = 0`.
//! * [`Backend`]: re-exported from `engram-tape`; [`Cpu`] is the CPU backend.
#![warn(missing_docs)]

mod init;
mod mlp;
mod optim;

pub use engram_tape::{cpu::Cpu, Backend, Float, Grads, Tape, Var};
pub use init::{xavier_bound, Init, InitScheme};
pub use mlp::{masked_loss, to_t, Dense, Mlp, TaskMask, Trace};
pub use optim::{Optimizer, OptimizerKind};
