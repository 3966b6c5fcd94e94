//! Element-wise arithmetic on equal shapes: add, sub, mul, scalar mul, square.
use crate::Backend;

/// `y = a + b`.
pub(crate) fn add_forward<B: Backend>(be: &B, a: &B::Tensor, b: &B::Tensor) -> B::Tensor {
    be.add(a, b)
}

/// `dL/da = gy`, `dL/db = gy`.
pub(crate) fn add_backward<B: Backend>(gy: &B::Tensor, need: [bool; 2]) -> [Option<B::Tensor>; 2] {
    [need[0].then(|| gy.clone()), need[1].then(|| gy.clone())]
}

/// `y = a - b`.
pub(crate) fn sub_forward<B: Backend>(be: &B, a: &B::Tensor, b: &B::Tensor) -> B::Tensor {
    be.sub(a, b)
}

/// `dL/da = gy`, `dL/db = -gy`.
pub(crate) fn sub_backward<B: Backend>(be: &B, gy: &B::Tensor, need: [bool; 2]) -> [Option<B::Tensor>; 2] {
    [need[0].then(|| gy.clone()), need[1].then(|| be.scale(gy, -num_traits::one::<B::T>()))]
}

/// `y = a * b` (Hadamard product).
pub(crate) fn mul_forward<B: Backend>(be: &B, a: &B::Tensor, b: &B::Tensor) -> B::Tensor {
    be.mul(a, b)
}

/// `dL/da = gy * b`, `dL/db = gy * a`.
pub(crate) fn mul_backward<B: Backend>(
    be: &B,
    a: &B::Tensor,
    b: &B::Tensor,
    gy: &B::Tensor,
    need: [bool; 2],
) -> [Option<B::Tensor>; 2] {
    [need[0].then(|| be.mul(gy, b)), need[1].then(|| be.mul(gy, a))]
}

/// `y = s a` for a constant scalar `s`.
pub(crate) fn scale_forward<B: Backend>(be: &B, a: &B::Tensor, s: B::T) -> B::Tensor {
    be.scale(a, s)
}

/// `dL/da = s gy`.
pub(crate) fn scale_backward<B: Backend>(be: &B, gy: &B::Tensor, s: B::T) -> B::Tensor {
    be.scale(gy, s)
}

/// `y = a^2`.
pub(crate) fn square_forward<B: Backend>(be: &B, a: &B::Tensor) -> B::Tensor {
    be.mul(a, a)
}

/// `dL/da = 2 a gy`.
pub(crate) fn square_backward<B: Backend>(be: &B, a: &B::Tensor, gy: &B::Tensor) -> B::Tensor {
    let two = num_traits::one::<B::T>() + num_traits::one::<B::T>();
    be.scale(&be.mul(a, gy), two)
}
