//! `y = max(x, 0)`.
use super::Sink;
use crate::backend::Result;
use crate::{Backend, View, ViewMut};

/// `y = max(x, 0)`.
pub(crate) fn forward<B: Backend>(be: &B, x: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
    be.relu(x, y)
}

/// `dL/dx = gy * 1[x > 0]`. At the kink `x = 0` we take the derivative to be 0 (as PyTorch does);
/// gradient checks keep their inputs away from 0.
pub(crate) fn backward<B: Backend>(be: &B, x: View<'_, B>, gy: View<'_, B>, sink: Sink<'_, B>) -> Result<()> {
    sink.write(be, |out| be.relu_backward(x, gy, out))
}
