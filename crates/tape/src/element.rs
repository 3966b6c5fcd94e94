//! What a backend buffer can hold: [`Element`] (floats, labels, indices, counters) and the
//! floating-point types the engine computes in, [`Float`] (`f32` for training, `f64` for
//! gradient checks). Neither drags in a matrix product: that is the CPU backend's business
//! ([`crate::cpu::CpuFloat`]).

use std::fmt::{Debug, Display};

/// What the CUDA backend needs of a buffer element: a plain value cudarc can copy to and from the
/// device and zero-fill (nothing at all without the `cuda` feature).
#[cfg(feature = "cuda")]
pub trait DeviceCopy: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Unpin {}
#[cfg(feature = "cuda")]
impl<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Unpin> DeviceCopy for T {}
/// What the CUDA backend needs of a buffer element (nothing without the `cuda` feature).
#[cfg(not(feature = "cuda"))]
pub trait DeviceCopy {}
#[cfg(not(feature = "cuda"))]
impl<T> DeviceCopy for T {}

/// A plain value a backend buffer holds: `f32`, `f64`, `u32` (labels, row indices, pixel maps,
/// counts) or `u64` (positions).
pub trait Element: DeviceCopy + Copy + Default + PartialEq + Debug + Send + Sync + 'static {
    /// `"f32"`, `"f64"`, `"u32"` or `"u64"`: the suffix of kernel names (`{op}_{dtype}`).
    const NAME: &'static str;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
}
impl Element for f64 {
    const NAME: &'static str = "f64";
}
impl Element for u32 {
    const NAME: &'static str = "u32";
}
impl Element for u64 {
    const NAME: &'static str = "u64";
}

/// A floating-point element type: `f32` (training) and `f64` (finite-difference gradient checks).
pub trait Float:
    Element
    + num_traits::Float
    + num_traits::FromPrimitive
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::iter::Sum
    + Display
{
    /// Lossless widening to `f64` (reductions accumulate in `f64`).
    fn as_f64(self) -> f64;
    /// Rounding conversion from `f64`.
    fn from_f64_lossy(x: f64) -> Self;
}

impl Float for f32 {
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn from_f64_lossy(x: f64) -> Self {
        x as f32
    }
}

impl Float for f64 {
    fn as_f64(self) -> f64 {
        self
    }
    fn from_f64_lossy(x: f64) -> Self {
        x
    }
}

/// Bytes of `len` elements of `E` (for transfer counts and memory estimates).
pub fn bytes_of<E: Element>(len: usize) -> u64 {
    (len as u64).saturating_mul(std::mem::size_of::<E>() as u64)
}
