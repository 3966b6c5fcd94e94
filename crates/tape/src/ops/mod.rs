//! One module per op. Each has a `forward` and a `backward` next to each other; the doc comment
//! of `backward` states the derivative it implements. Backward functions receive the upstream
//! gradient `gy` and which inputs need a gradient, and return one `Option` per input.

pub(crate) mod add_row;
pub(crate) mod elementwise;
pub(crate) mod log_softmax;
pub(crate) mod masked_xent;
pub(crate) mod matmul;
pub(crate) mod reduce;
pub(crate) mod relu;
