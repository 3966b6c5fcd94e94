//! engram: a from-scratch continual-learning engine.
//!
//! This umbrella crate re-exports the workspace crates so that integration tests, benches and
//! downstream users can reach everything through one name.
pub use engram_cl as cl;
pub use engram_mnist as mnist;
pub use engram_nn as nn;
pub use engram_si as si;
pub use engram_tape as tape;
