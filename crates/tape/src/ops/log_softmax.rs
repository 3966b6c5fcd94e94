//! Row-wise `y = log_softmax(x) = x - logsumexp(x)`.
use crate::Backend;

/// `y[i, j] = x[i, j] - log sum_k exp(x[i, k])`, with the row maximum subtracted for stability.
pub(crate) fn forward<B: Backend>(be: &B, x: &B::Tensor) -> B::Tensor {
    be.log_softmax(x)
}

/// `dL/dx[i, j] = gy[i, j] - softmax(x)[i, j] * sum_k gy[i, k]`, with `softmax = exp(y)`.
pub(crate) fn backward<B: Backend>(be: &B, y: &B::Tensor, gy: &B::Tensor) -> B::Tensor {
    be.log_softmax_backward(y, gy)
}
