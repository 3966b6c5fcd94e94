//! Reductions to a `1 x 1` scalar: sum and mean of all elements.
use crate::Backend;

/// `y = sum_ij x[i, j]`, accumulated in `f64`.
pub(crate) fn sum_forward<B: Backend>(be: &B, x: &B::Tensor) -> B::Tensor {
    be.sum_all(x)
}

/// `dL/dx[i, j] = gy` for every element.
pub(crate) fn sum_backward<B: Backend>(be: &B, shape: (usize, usize), gy: &B::Tensor) -> B::Tensor {
    be.broadcast_scalar(gy, shape.0, shape.1, num_traits::one())
}

/// `y = (1 / N) sum_ij x[i, j]` with `N = rows * cols`.
pub(crate) fn mean_forward<B: Backend>(be: &B, x: &B::Tensor) -> B::Tensor {
    let (r, c) = be.shape(x);
    be.scale(&be.sum_all(x), inv_count::<B>(r * c))
}

/// `dL/dx[i, j] = gy / N`.
pub(crate) fn mean_backward<B: Backend>(be: &B, shape: (usize, usize), gy: &B::Tensor) -> B::Tensor {
    be.broadcast_scalar(gy, shape.0, shape.1, inv_count::<B>(shape.0 * shape.1))
}

fn inv_count<B: Backend>(n: usize) -> B::T {
    use crate::Float;
    if n == 0 {
        num_traits::zero()
    } else {
        B::T::from_f64_lossy(1.0 / n as f64)
    }
}
