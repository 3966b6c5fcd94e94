//! engram-tape: tensors, an append-only autodiff tape, and the kernels behind it.
//!
//! * [`Float`]: the element types (`f32` for training, `f64` for gradient checks).
//! * [`Backend`]: the kernel-level contract a device implements; [`cpu::Cpu`] is the CPU one
//!   (rayon + `matrixmultiply`, no BLAS).
//! * [`Tape`]: records ops (matmul, broadcast bias add, add, sub, mul, scalar mul, square,
//!   relu, sum, mean, log-softmax, fused masked softmax cross-entropy) and differentiates them in
//!   one reverse loop. Each op lives in its own module under `ops/`, forward next to backward.
//!
//! ```
//! use engram_tape::{cpu::Cpu, Backend, Tape};
//! let be = Cpu::<f64>::new();
//! let mut tape = Tape::new(be);
//! let x = tape.param(be.from_vec(1, 2, vec![3.0, -1.0]));
//! let y = tape.square(x);
//! let loss = tape.sum(y); // 3^2 + 1^2
//! let grads = tape.backward(loss);
//! assert_eq!(be.to_vec(grads.get(x).unwrap()), vec![6.0, -2.0]); // d/dx x^2 = 2x
//! ```
#![warn(missing_docs)]

mod backend;
pub mod cpu;
mod float;
mod ops;
mod tape;

pub use backend::Backend;
pub use float::Float;
pub use tape::{Grads, Tape, Var};
