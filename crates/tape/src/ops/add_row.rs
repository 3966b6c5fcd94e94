//! Broadcast bias add: `y[i, j] = x[i, j] + b[0, j]`.
use crate::Backend;

/// `y = x + 1 b` (the `1 x n` row `b` added to every row of `x`).
pub(crate) fn forward<B: Backend>(be: &B, x: &B::Tensor, b: &B::Tensor) -> B::Tensor {
    be.add_row(x, b)
}

/// `dL/dx = gy`, `dL/db[j] = sum_i gy[i, j]`.
pub(crate) fn backward<B: Backend>(be: &B, gy: &B::Tensor, need: [bool; 2]) -> [Option<B::Tensor>; 2] {
    [need[0].then(|| gy.clone()), need[1].then(|| be.sum_rows(gy))]
}
