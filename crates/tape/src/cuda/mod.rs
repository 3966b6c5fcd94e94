//! The CUDA backend (feature `cuda`): buffers are `CudaSlice`s on one stream of one device, the
//! kernels are `kernels/*.cu` compiled at run time with NVRTC for the device's architecture
//! ([`compile`]), the matrix products are cuBLAS's (row-major through the operand swap).
//!
//! Every call that can fail on the device returns an error saying what failed; nothing here
//! panics on a missing library or device ([`Cuda::new`] checks for the driver, cuBLAS and NVRTC
//! before cudarc would panic). Reductions add per-block partials in a fixed order (no float
//! atomics), so the same GPU gives the same bits run after run.
//!
//! Kernels are named `{op}_{dtype}` like their CPU twins (`relu_f32` in kernels/elementwise.cu,
//! `cpu::elementwise` on the CPU).

pub mod compile;
mod kernels;

use crate::backend::{BackendError, PixelMap, Result};
use crate::{Backend, Element, View, ViewMut};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DriverError, LaunchConfig,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Threads per block of every launch (the reductions' `REDUCE_THREADS` in kernels/common.cuh).
pub const THREADS: u32 = 256;
/// Most blocks of a grid-stride launch (and so most per-block partial sums of a reduction).
pub const MAX_BLOCKS: u32 = 1024;

/// One device: its context, its one stream, cuBLAS on that stream, the loaded kernels.
struct Device {
    ordinal: usize,
    name: String,
    arch: String,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    functions: HashMap<&'static str, CudaFunction>,
    /// A one-element buffer passed for the pointer arguments a launch does not use.
    unused_f32: CudaSlice<f32>,
    unused_u32: CudaSlice<u32>,
}

/// A CUDA GPU (`Cuda::new(0)` for `cuda:0`). Clones share the device.
#[derive(Clone)]
pub struct Cuda {
    device: Arc<Device>,
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cuda(cuda:{}, {}, {})", self.device.ordinal, self.device.name, self.device.arch)
    }
}

/// Why the CUDA driver is missing and what to do.
fn driver_missing() -> BackendError {
    BackendError::Unavailable(
        "no CUDA driver: libcuda.so.1 could not be loaded. Install the NVIDIA driver (580 or later, CUDA 13) \
         on a machine with an NVIDIA GPU, or run on the CPU (--device cpu, the default)"
            .into(),
    )
}

fn unavailable(what: &str, e: impl std::fmt::Debug) -> BackendError {
    BackendError::Unavailable(format!("{what}: {e:?}"))
}

impl Cuda {
    /// The GPU `ordinal` (`cuda:N`), with every kernel compiled (once per process and
    /// architecture) and loaded. Fails with a message saying what is missing: the driver, a GPU,
    /// that GPU, cuBLAS, NVRTC, or a kernel that does not compile.
    pub fn new(ordinal: usize) -> Result<Self> {
        // cudarc panics when a library is missing: check each one first.
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(driver_missing());
        }
        // An older driver lacks symbols cudarc would call (a panic): check its CUDA version first.
        let mut version = 0i32;
        // SAFETY: the driver library is present; cuDriverGetVersion only writes the integer.
        let status = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
        if status == cudarc::driver::sys::CUresult::CUDA_SUCCESS && version < 13000 {
            return Err(BackendError::Unavailable(format!(
                "the NVIDIA driver supports CUDA {}.{}; engram needs CUDA 13.0 or later (driver 580 or later)",
                version / 1000,
                version % 1000 / 10
            )));
        }
        let count = CudaContext::device_count().map_err(|e| unavailable("the CUDA driver cannot list the GPUs", e))?;
        if count <= 0 {
            return Err(BackendError::Unavailable(
                "the CUDA driver is installed but reports no GPU; run on the CPU (--device cpu)".into(),
            ));
        }
        if ordinal >= count as usize {
            return Err(BackendError::Unavailable(format!(
                "cuda:{ordinal} asked for, but this machine has {count} GPU(s): cuda:0 to cuda:{}",
                count - 1
            )));
        }
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(BackendError::Unavailable(
                "cuBLAS (libcublas.so.13) could not be loaded: install the CUDA 13 toolkit, or the \
                 nvidia-cublas wheel and put its library folder on LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        if !compile::nvrtc_available() {
            return Err(compile::nvrtc_missing());
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| unavailable(&format!("cannot open cuda:{ordinal}"), e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx.compute_capability().map_err(|e| unavailable("compute capability", e))?;
        let arch = format!("sm_{major}{minor}");
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| unavailable("cannot start cuBLAS", e))?;
        let mut functions = HashMap::new();
        for (compiled, (_, source)) in compile::compile_all(&arch)?.iter().zip(compile::SOURCES) {
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(compiled.cubin.clone()))
                .map_err(|e| unavailable(&format!("cannot load {} on {arch}", compiled.file), e))?;
            for kernel in compile::kernel_names(source) {
                let f = module
                    .load_function(kernel)
                    .map_err(|e| unavailable(&format!("kernel {kernel} missing from {}", compiled.file), e))?;
                functions.insert(kernel, f);
            }
        }
        let unused_f32 = stream.alloc_zeros::<f32>(1).map_err(|e| unavailable("first allocation", e))?;
        let unused_u32 = stream.alloc_zeros::<u32>(1).map_err(|e| unavailable("first allocation", e))?;
        Ok(Self { device: Arc::new(Device { ordinal, name, arch, stream, blas, functions, unused_f32, unused_u32 }) })
    }

    /// The stream every kernel and copy of this device runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.device.stream
    }

    /// The loaded kernel `name` (`{op}_{dtype}`).
    pub fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.device.functions.get(name).ok_or_else(|| BackendError::Kernel {
            device: self.name(),
            kernel: name.into(),
            message: "no such kernel in kernels/*.cu".into(),
        })
    }

    /// The error of kernel `kernel`'s launch.
    pub fn launch_error(&self, kernel: &str, e: DriverError) -> BackendError {
        BackendError::Kernel { device: self.name(), kernel: kernel.into(), message: format!("{e:?}") }
    }

    /// A placeholder for an unused `const float*` argument.
    pub fn unused_f32(&self) -> CudaView<'_, f32> {
        self.device.unused_f32.slice(0..1)
    }

    /// A placeholder for an unused `const u32*` argument.
    pub fn unused_u32(&self) -> CudaView<'_, u32> {
        self.device.unused_u32.slice(0..1)
    }

    fn transfer_error(&self, e: DriverError) -> BackendError {
        BackendError::Transfer { device: self.name(), message: format!("{e:?}") }
    }

    fn alloc_error(&self, e: DriverError, bytes: u64, what: String) -> BackendError {
        if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            BackendError::OutOfMemory { device: self.name(), bytes, what }
        } else {
            BackendError::Kernel { device: self.name(), kernel: "alloc".into(), message: format!("{e:?}") }
        }
    }
}

/// A launch of a grid-stride kernel over `n` elements.
pub fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS as usize) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// A launch of exactly `blocks` blocks of [`THREADS`].
pub fn blocks(blocks: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// The window `v` as a cudarc view.
pub fn view<'a, E: Element>(v: &View<'a, Cuda, E>) -> CudaView<'a, E> {
    v.buf.slice(v.offset..v.offset + v.len())
}

/// The window `v` as a writable cudarc view.
pub fn view_mut<'a, E: Element>(v: ViewMut<'a, Cuda, E>) -> CudaViewMut<'a, E> {
    let n = v.len();
    v.buf.slice_mut(v.offset..v.offset + n)
}

/// Launches `$name` with `$cfg` and the arguments (each a reference the builder keeps).
#[macro_export]
#[doc(hidden)]
macro_rules! cuda_launch {
    ($be:expr, $name:expr, $cfg:expr, $($arg:expr),* $(,)?) => {{
        let f = $be.function($name)?;
        let mut builder = $be.stream().launch_builder(f);
        $( cudarc::driver::PushKernelArg::arg(&mut builder, $arg); )*
        // SAFETY: the arguments match the kernel's signature in kernels/*.cu, and every pointer
        // covers the elements the kernel reads or writes for the given sizes.
        unsafe { builder.launch($cfg) }.map_err(|e| $be.launch_error($name, e))?;
    }};
}

impl Backend for Cuda {
    type T = f32;
    type Buffer<E: Element> = CudaSlice<E>;

    fn name(&self) -> String {
        format!("cuda:{} ({}, {})", self.device.ordinal, self.device.name, self.device.arch)
    }

    fn alloc<E: Element>(&self, len: usize) -> Result<CudaSlice<E>> {
        let bytes = crate::element::bytes_of::<E>(len);
        self.stream().alloc_zeros::<E>(len).map_err(|e| self.alloc_error(e, bytes, format!("{len} {} values", E::NAME)))
    }

    fn buffer_len<E: Element>(&self, buf: &CudaSlice<E>) -> usize {
        buf.len()
    }

    fn upload<E: Element>(&self, host: &[E]) -> Result<CudaSlice<E>> {
        if host.is_empty() {
            return self.alloc(0);
        }
        self.stream().clone_htod(host).map_err(|e| self.transfer_error(e))
    }

    fn upload_into<E: Element>(&self, host: &[E], dst: ViewMut<'_, Self, E>) -> Result<()> {
        crate::backend::same_len("upload_into", host.len(), dst.len());
        if host.is_empty() {
            return Ok(());
        }
        let mut d = view_mut(dst);
        self.stream().memcpy_htod(host, &mut d).map_err(|e| self.transfer_error(e))
    }

    fn download<E: Element>(&self, src: View<'_, Self, E>) -> Result<Vec<E>> {
        if src.is_empty() {
            return Ok(Vec::new());
        }
        self.stream().clone_dtoh(&view(&src)).map_err(|e| self.transfer_error(e))
    }

    fn copy<E: Element>(&self, src: View<'_, Self, E>, dst: ViewMut<'_, Self, E>) -> Result<()> {
        crate::backend::same_len("copy", src.len(), dst.len());
        if src.is_empty() {
            return Ok(());
        }
        let mut d = view_mut(dst);
        self.stream().memcpy_dtod(&view(&src), &mut d).map_err(|e| self.transfer_error(e))
    }

    fn fill<E: Element>(&self, dst: ViewMut<'_, Self, E>, value: E) -> Result<()> {
        self.fill_kernel(dst, value)
    }

    fn synchronize(&self) -> Result<()> {
        self.stream().synchronize().map_err(|e| self.launch_error("synchronize", e))
    }

    fn matmul(
        &self,
        a: View<'_, Self>,
        trans_a: bool,
        b: View<'_, Self>,
        trans_b: bool,
        out: ViewMut<'_, Self>,
        accumulate: bool,
    ) -> Result<()> {
        self.gemm(a, trans_a, b, trans_b, out, accumulate)
    }

    fn add_row(&self, x: View<'_, Self>, row: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.add_row_kernel(x, row, out)
    }

    fn add_bias(&self, y: ViewMut<'_, Self>, bias: View<'_, Self>, relu: bool) -> Result<()> {
        self.add_bias_kernel(y, bias, relu)
    }

    fn sum_rows(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, accumulate: bool) -> Result<()> {
        self.sum_rows_kernel(x, out, accumulate)
    }

    fn add(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.binary("add_f32", a, b, out)
    }

    fn sub(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.binary("sub_f32", a, b, out)
    }

    fn mul(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.binary("mul_f32", a, b, out)
    }

    fn scale(&self, a: View<'_, Self>, s: f32, out: ViewMut<'_, Self>) -> Result<()> {
        self.scale_kernel(a, s, out)
    }

    fn accumulate(&self, acc: ViewMut<'_, Self>, x: View<'_, Self>) -> Result<()> {
        self.accumulate_kernel(acc, x)
    }

    fn abs(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.unary("abs_f32", x, out)
    }

    fn relu(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.unary("relu_f32", x, out)
    }

    fn relu_backward(&self, x: View<'_, Self>, gy: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.binary("relu_backward_f32", x, gy, out)
    }

    fn sum_all(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.sum_all_kernel(x, out)
    }

    fn broadcast_scalar(&self, g: View<'_, Self>, s: f32, out: ViewMut<'_, Self>) -> Result<()> {
        self.broadcast_scalar_kernel(g, s, out)
    }

    fn accumulate_f64(&self, acc: ViewMut<'_, Self, f64>, x: View<'_, Self>) -> Result<()> {
        self.accumulate_f64_kernel(acc, x)
    }

    fn dots_f64(&self, rows: View<'_, Self>, v: View<'_, Self>, out: ViewMut<'_, Self, f64>) -> Result<()> {
        self.dots_f64_kernel(rows, v, out)
    }

    fn gram_f64(&self, rows: View<'_, Self>, out: ViewMut<'_, Self, f64>) -> Result<()> {
        self.gram_f64_kernel(rows, out)
    }

    fn combine_f64(&self, g: ViewMut<'_, Self>, rows: View<'_, Self>, weights: View<'_, Self, f64>) -> Result<()> {
        self.combine_f64_kernel(g, rows, weights)
    }

    fn first_non_finite(&self, x: View<'_, Self>, out: ViewMut<'_, Self, u64>) -> Result<()> {
        self.first_non_finite_kernel(x, out)
    }

    fn count_nonzero(&self, x: View<'_, Self>, out: ViewMut<'_, Self, u64>) -> Result<()> {
        self.count_nonzero_kernel(x, out)
    }

    fn log_softmax(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.log_softmax_kernel(x, out)
    }

    fn log_softmax_backward(&self, y: View<'_, Self>, gy: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.log_softmax_backward_kernel(y, gy, out)
    }

    fn masked_xent(
        &self,
        logits: View<'_, Self>,
        labels: View<'_, Self, u32>,
        mask: Option<View<'_, Self>>,
        loss: ViewMut<'_, Self>,
        probs: ViewMut<'_, Self>,
    ) -> Result<()> {
        self.masked_xent_kernel(logits, labels, mask, loss, probs)
    }

    fn masked_xent_backward(
        &self,
        probs: View<'_, Self>,
        labels: View<'_, Self, u32>,
        gy: View<'_, Self>,
        out: ViewMut<'_, Self>,
    ) -> Result<()> {
        self.masked_xent_backward_kernel(probs, labels, gy, out)
    }

    fn gather_rows<E: Element>(
        &self,
        src: View<'_, Self, E>,
        rows: View<'_, Self, u32>,
        map: PixelMap<'_, Self>,
        out: ViewMut<'_, Self, E>,
    ) -> Result<()> {
        self.gather_rows_kernel(src, rows, map, out)
    }

    fn count_correct(
        &self,
        logits: View<'_, Self>,
        labels: View<'_, Self, u32>,
        mask: Option<View<'_, Self>>,
        out: ViewMut<'_, Self, u32>,
    ) -> Result<()> {
        self.count_correct_kernel(logits, labels, mask, out)
    }
}
