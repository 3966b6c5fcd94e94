//! `y = max(x, 0)`.
use crate::Backend;

/// `y = max(x, 0)`.
pub(crate) fn forward<B: Backend>(be: &B, x: &B::Tensor) -> B::Tensor {
    be.relu(x)
}

/// `dL/dx = gy * 1[x > 0]`. At the kink `x = 0` we take the derivative to be 0 (as PyTorch does);
/// gradient checks keep their inputs away from 0.
pub(crate) fn backward<B: Backend>(be: &B, x: &B::Tensor, gy: &B::Tensor) -> B::Tensor {
    be.relu_backward(x, gy)
}
