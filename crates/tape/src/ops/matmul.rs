//! `y = a @ b` (`m x k` times `k x n`).
use super::Sink;
use crate::backend::Result;
use crate::{Backend, View, ViewMut};

/// `y = a b`.
pub(crate) fn forward<B: Backend>(be: &B, a: View<'_, B>, b: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
    be.matmul(a, false, b, false, y, false)
}

/// `dL/da = gy b^T` (`which == 0`), `dL/db = a^T gy` (`which == 1`).
pub(crate) fn backward<B: Backend>(
    be: &B,
    a: View<'_, B>,
    b: View<'_, B>,
    gy: View<'_, B>,
    which: usize,
    sink: Sink<'_, B>,
) -> Result<()> {
    if which == 0 {
        be.matmul(gy, false, b, true, sink.out, sink.accumulate)
    } else {
        be.matmul(a, true, gy, false, sink.out, sink.accumulate)
    }
}
