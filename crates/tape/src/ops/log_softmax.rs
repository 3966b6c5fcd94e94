//! Row-wise `y = log_softmax(x) = x - logsumexp(x)`.
use super::Sink;
use crate::backend::Result;
use crate::{Backend, View, ViewMut};

/// `y[i, j] = x[i, j] - log sum_k exp(x[i, k])`, with the row maximum subtracted for stability.
pub(crate) fn forward<B: Backend>(be: &B, x: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
    be.log_softmax(x, y)
}

/// `dL/dx[i, j] = gy[i, j] - softmax(x)[i, j] * sum_k gy[i, k]`, with `softmax = exp(y)`.
pub(crate) fn backward<B: Backend>(be: &B, y: View<'_, B>, gy: View<'_, B>, sink: Sink<'_, B>) -> Result<()> {
    sink.write(be, |out| be.log_softmax_backward(y, gy, out))
}
