//! engram-cl: continual learning on top of the engine, on any backend.
//!
//! * [`scenario`]: Split, Permuted and Rotated MNIST and even/odd, as views over one shared MNIST.
//! * [`data`]: the tasks' data on the backend, uploaded once per run; batches gathered by index.
//! * [`config`]: a run's hyperparameters and their one validation; [`protocol`]: each
//!   benchmark's published defaults.
//! * [`methods`]: one [`methods::Strategy`] per method, one file per family (fine-tuning and
//!   joint; the quadratic penalties SI, EWC, online EWC, L2, MAS; GEM; A-GEM).
//! * [`run`]: the training loop, the accuracy matrix and the profile; [`state`]: what it shares
//!   with the methods (the state on the backend, the time split, errors).
//! * [`checkpoint`]: a run's state as a checkpoint (safetensors + manifest) and back.
//! * [`metrics`]: ACC, BWT, FWT, forgetting, learning accuracy; [`report`] and [`output`]: tables,
//!   JSON and CSV of a run; [`diagnose`]: SI diagnostics; [`estimate`]: a forecast of a run's time;
//!   [`footprint`]: of its memory.
//!
//! The library has no user interface: the command line (crate `engram-cli`) parses flags
//! (the `clap` feature derives its value enums here) and draws figures (crate `engram-plot`).
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod diagnose;
pub mod estimate;
pub mod footprint;
pub mod methods;
pub mod metrics;
pub mod output;
pub mod protocol;
pub mod report;
pub mod run;
pub mod saved;
pub mod scenario;
pub mod state;
