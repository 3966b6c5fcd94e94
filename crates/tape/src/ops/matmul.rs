//! `y = a @ b` (`m x k` times `k x n`).
use crate::Backend;

/// `y = a b`.
pub(crate) fn forward<B: Backend>(be: &B, a: &B::Tensor, b: &B::Tensor) -> B::Tensor {
    be.matmul(a, false, b, false)
}

/// `dL/da = gy b^T`, `dL/db = a^T gy`.
pub(crate) fn backward<B: Backend>(
    be: &B,
    a: &B::Tensor,
    b: &B::Tensor,
    gy: &B::Tensor,
    need: [bool; 2],
) -> [Option<B::Tensor>; 2] {
    [need[0].then(|| be.matmul(gy, false, b, true)), need[1].then(|| be.matmul(a, true, gy, false))]
}
