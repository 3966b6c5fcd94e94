//! Element-wise arithmetic on equal shapes: add, sub, mul, scalar mul, square.
use super::Sink;
use crate::backend::Result;
use crate::{Backend, Float, View, ViewMut};

/// The gradient `gy` itself, copied (or added) into the sink.
pub(crate) fn pass_through<B: Backend>(be: &B, gy: View<'_, B>, sink: Sink<'_, B>) -> Result<()> {
    if sink.accumulate {
        be.accumulate(sink.out, gy)
    } else {
        be.copy(gy, sink.out)
    }
}

/// `y = a + b`.
pub(crate) fn add_forward<B: Backend>(be: &B, a: View<'_, B>, b: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
    be.add(a, b, y)
}

/// `dL/da = gy`, `dL/db = gy`.
pub(crate) fn add_backward<B: Backend>(be: &B, gy: View<'_, B>, sink: Sink<'_, B>) -> Result<()> {
    pass_through(be, gy, sink)
}

/// `y = a - b`.
pub(crate) fn sub_forward<B: Backend>(be: &B, a: View<'_, B>, b: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
    be.sub(a, b, y)
}

/// `dL/da = gy` (`which == 0`), `dL/db = -gy` (`which == 1`).
pub(crate) fn sub_backward<B: Backend>(be: &B, gy: View<'_, B>, which: usize, sink: Sink<'_, B>) -> Result<()> {
    if which == 0 {
        pass_through(be, gy, sink)
    } else {
        sink.write(be, |out| be.scale(gy, -B::T::from_f64_lossy(1.0), out))
    }
}

/// `y = a * b` (Hadamard product).
pub(crate) fn mul_forward<B: Backend>(be: &B, a: View<'_, B>, b: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
    be.mul(a, b, y)
}

/// `dL/da = gy * b` (`which == 0`), `dL/db = gy * a` (`which == 1`).
pub(crate) fn mul_backward<B: Backend>(
    be: &B,
    a: View<'_, B>,
    b: View<'_, B>,
    gy: View<'_, B>,
    which: usize,
    sink: Sink<'_, B>,
) -> Result<()> {
    let other = if which == 0 { b } else { a };
    sink.write(be, |out| be.mul(gy, other, out))
}

/// `y = s a` for a constant scalar `s`.
pub(crate) fn scale_forward<B: Backend>(be: &B, a: View<'_, B>, s: B::T, y: ViewMut<'_, B>) -> Result<()> {
    be.scale(a, s, y)
}

/// `dL/da = s gy`.
pub(crate) fn scale_backward<B: Backend>(be: &B, gy: View<'_, B>, s: B::T, sink: Sink<'_, B>) -> Result<()> {
    sink.write(be, |out| be.scale(gy, s, out))
}

/// `y = a^2`.
pub(crate) fn square_forward<B: Backend>(be: &B, a: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
    be.mul(a, a, y)
}

/// `dL/da = 2 a gy`.
pub(crate) fn square_backward<B: Backend>(be: &B, a: View<'_, B>, gy: View<'_, B>, sink: Sink<'_, B>) -> Result<()> {
    let mut a_gy = crate::Tensor::<B>::zeros(be, a.rows, a.cols)?;
    be.mul(a, gy, a_gy.view_mut())?;
    sink.write(be, |out| be.scale(a_gy.view(), B::T::from_f64_lossy(2.0), out))
}
