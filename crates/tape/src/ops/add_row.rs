//! Broadcast bias add: `y[i, j] = x[i, j] + b[0, j]`.
use super::Sink;
use crate::backend::Result;
use crate::{Backend, View, ViewMut};

/// `y = x + 1 b` (the `1 x n` row `b` added to every row of `x`).
pub(crate) fn forward<B: Backend>(be: &B, x: View<'_, B>, b: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
    be.add_row(x, b, y)
}

/// `dL/dx = gy` (`which == 0`), `dL/db[j] = sum_i gy[i, j]` (`which == 1`).
pub(crate) fn backward<B: Backend>(be: &B, gy: View<'_, B>, which: usize, sink: Sink<'_, B>) -> Result<()> {
    if which == 0 {
        super::elementwise::pass_through(be, gy, sink)
    } else {
        be.sum_rows(gy, sink.out, sink.accumulate)
    }
}
