//! One module per op. Each has a `forward` and a `backward` next to each other; the doc comment
//! of `backward` states the derivative it implements. Forward kernels write the op's value into
//! a fresh output; backward kernels receive the upstream gradient `gy`, which input they serve,
//! and where to write (or add) that input's gradient ([`Sink`]).

pub(crate) mod add_row;
pub(crate) mod elementwise;
pub(crate) mod log_softmax;
pub(crate) mod masked_xent;
pub(crate) mod matmul;
pub(crate) mod reduce;
pub(crate) mod relu;

use crate::backend::Result;
use crate::{Backend, Tensor, ViewMut};

/// Where an input's gradient goes: a window of a gradient buffer (a parameter's place in the
/// flat gradient vector, or a node's own gradient tensor), overwritten or added to.
pub(crate) struct Sink<'a, B: Backend> {
    /// The destination.
    pub out: ViewMut<'a, B>,
    /// Add into `out` (the input already received a gradient from another use) instead of
    /// overwriting it.
    pub accumulate: bool,
}

impl<B: Backend> Sink<'_, B> {
    /// Runs `kernel` (which overwrites its output) so that its result lands in the sink: directly
    /// when overwriting, through a temporary when adding.
    pub(crate) fn write(self, be: &B, kernel: impl FnOnce(ViewMut<'_, B>) -> Result<()>) -> Result<()> {
        if !self.accumulate {
            return kernel(self.out);
        }
        let mut t = Tensor::<B>::zeros(be, self.out.rows, self.out.cols)?;
        kernel(t.view_mut())?;
        be.accumulate(self.out, t.view())
    }
}
