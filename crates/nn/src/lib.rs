//! engram-nn: dense networks on the engram tape, on any backend.
//!
//! * [`Mlp`]: a stack of [`Dense`] layers with ReLU between them, whose parameters live in ONE
//!   flat vector `theta` (weights then bias, layer by layer). Each layer's weight and bias enter
//!   the tape as views of that vector, and [`Tape::backward_into`] writes their gradients into
//!   ONE flat gradient vector of the same layout. Flat storage is also what lets the fused
//!   consolidation step (crate `engram-si`) update every parameter, its optimizer moments and its
//!   importance state in a single pass over memory.
//! * [`Init`]: PyTorch-style initialisation (Kaiming-uniform, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
//!   for weights and biases), Xavier-uniform or He-uniform with zero biases, with an option to
//!   zero the output layer (the SI paper's setting).
//! * [`TaskMask`]: the classes a task may predict (the multi-head setting).
//! * [`loss_and_grad`]: THE training step's forward and backward, used by every caller that
//!   trains or needs a gradient (the run, GEM's memory gradients, `engram train`, the benches).
//! * [`evaluate`]: THE evaluation routine (accuracy, and the mean loss when asked).
//! * [`Backend`]: re-exported from `engram-tape`; [`Cpu`] is the CPU backend.
#![warn(missing_docs)]

mod evaluate;
mod init;
mod mlp;
mod train_step;

pub use engram_tape::{cpu::Cpu, Backend, Float, Grads, PixelMap, Result, Tape, Tensor, Var, View, ViewMut};
pub use evaluate::{evaluate, Evaluation, Samples, EVAL_CHUNK};
pub use init::{xavier_bound, Init, InitScheme};
pub use mlp::{Dense, Mlp, TaskMask, Trace};
pub use train_step::{loss_and_grad, Batch, Block, StepBuffers, StepTimes};
