//! engram-tape: tensors on any backend, an append-only autodiff tape, and the CPU backend.
//!
//! * [`Backend`]: the contract a device implements: flat buffers of any [`Element`] with
//!   explicit upload and download points, and kernels that read [`View`]s and write
//!   [`ViewMut`]s of them; every call that can fail on a device returns a [`Result`].
//!   [`cpu::Cpu`] is the CPU one (rayon + `matrixmultiply`, no BLAS); [`counting::Counting`]
//!   wraps any backend and counts the bytes crossing between host and backend.
//! * [`Tensor`], [`View`], [`ViewMut`]: an owned matrix on a backend, and windows of any buffer
//!   (one flat parameter vector serves as every layer's weight and bias, without a copy).
//! * [`Tape`]: records ops (matmul, broadcast bias add, add, sub, mul, scalar mul, square,
//!   relu, sum, mean, log-softmax, fused masked softmax cross-entropy) on any backend and
//!   differentiates them in one reverse loop. Each op lives in its own module under `ops/`,
//!   forward next to backward.
//!
//! ```
//! use engram_tape::{cpu::{self, Cpu}, Tape};
//! # fn main() -> engram_tape::Result<()> {
//! let be = Cpu::<f64>::new();
//! let mut tape = Tape::new(be);
//! let x = tape.param(cpu::tensor(&ndarray::array![[3.0, -1.0]]));
//! let y = tape.square(x)?;
//! let loss = tape.sum(y)?; // 3^2 + 1^2
//! let grads = tape.backward(loss)?;
//! assert_eq!(cpu::array(grads.get(x).unwrap()), ndarray::array![[6.0, -2.0]]); // d/dx x^2 = 2x
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod backend;
pub mod counting;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod element;
mod ops;
mod tape;
mod tensor;
pub mod test_device;

pub use backend::{Backend, BackendError, PixelMap, Result};
pub use element::{bytes_of, DeviceCopy, Element, Float};
pub use tape::{Grads, Tape, Var};
pub use tensor::{Tensor, View, ViewMut};
