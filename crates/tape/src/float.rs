//! The element types the engine computes in: `f32` for training, `f64` for gradient checks.

use std::fmt::{Debug, Display};

/// A floating-point element type with a matrix-multiply kernel.
///
/// Implemented for `f32` (training) and `f64` (finite-difference gradient checks).
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::iter::Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// `"f32"` or `"f64"`, the suffix of kernel names (`{op}_{dtype}`).
    const NAME: &'static str;

    /// Lossless widening to `f64` (used for reductions, which accumulate in `f64`).
    fn as_f64(self) -> f64;

    /// Rounding conversion from `f64`.
    fn from_f64_lossy(x: f64) -> Self;

    /// `C = alpha * op(A) op(B) + beta * C` through `matrixmultiply`, with arbitrary strides.
    ///
    /// # Safety
    /// The pointers and strides must describe valid `m x k`, `k x n` and `m x n` matrices, and
    /// `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn from_f64_lossy(x: f64) -> Self {
        x as f32
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    fn as_f64(self) -> f64 {
        self
    }
    fn from_f64_lossy(x: f64) -> Self {
        x
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}
