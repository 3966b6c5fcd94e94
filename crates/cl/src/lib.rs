//! engram-cl: continual learning on top of the engine.
//!
//! * [`scenario`]: Split, Permuted and Rotated MNIST and even/odd, as views over one shared MNIST.
//! * [`strategy`]: the methods; every quadratic penalty shares one state and one fused step.
//! * [`importance`]: diagonal Fisher and MAS importances from one batched backward.
//! * [`runner`]: the training loop, the accuracy matrix and the profile.
//! * [`checkpoint`]: a run's state as a checkpoint (safetensors + manifest) and back.
//! * [`metrics`]: ACC, BWT, FWT, forgetting, learning accuracy.
//! * [`diagnose`]: SI diagnostics (path integral against the loss drop, importance distributions).
//! * [`plot`]: figures (PNG/SVG) of runs and sweeps.
//! * [`episodic`], [`gem`], [`qp`]: GEM and A-GEM's memories, batched memory gradients, and the
//!   hand-written solver of GEM's dual quadratic program.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod diagnose;
pub mod episodic;
pub mod gem;
pub mod importance;
pub mod metrics;
pub mod output;
pub mod plot;
pub mod protocol;
pub mod qp;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod strategy;
