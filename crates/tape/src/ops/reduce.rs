//! Reductions to a `1 x 1` scalar: sum and mean of all elements.
use super::Sink;
use crate::backend::Result;
use crate::{Backend, Float, View, ViewMut};

/// `y = sum_ij x[i, j]`, accumulated in `f64`.
pub(crate) fn sum_forward<B: Backend>(be: &B, x: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
    be.sum_all(x, y)
}

/// `dL/dx[i, j] = gy` for every element.
pub(crate) fn sum_backward<B: Backend>(be: &B, gy: View<'_, B>, sink: Sink<'_, B>) -> Result<()> {
    sink.write(be, |out| be.broadcast_scalar(gy, B::T::from_f64_lossy(1.0), out))
}

/// `y = (1 / N) sum_ij x[i, j]` with `N = rows * cols`.
pub(crate) fn mean_forward<B: Backend>(be: &B, x: View<'_, B>, mut y: ViewMut<'_, B>) -> Result<()> {
    let mut total = crate::Tensor::<B>::zeros(be, 1, 1)?;
    be.sum_all(x, total.view_mut())?;
    be.scale(total.view(), inv_count::<B>(x.len()), y.reborrow())
}

/// `dL/dx[i, j] = gy / N`.
pub(crate) fn mean_backward<B: Backend>(be: &B, n: usize, gy: View<'_, B>, sink: Sink<'_, B>) -> Result<()> {
    sink.write(be, |out| be.broadcast_scalar(gy, inv_count::<B>(n), out))
}

fn inv_count<B: Backend>(n: usize) -> B::T {
    if n == 0 {
        B::T::from_f64_lossy(0.0)
    } else {
        B::T::from_f64_lossy(1.0 / n as f64)
    }
}
