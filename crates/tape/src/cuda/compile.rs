//! The CUDA kernels' sources (`kernels/*.cu`, embedded in the binary) and their compilation with
//! NVRTC to the device's machine code, once per process and architecture.
//!
//! NVRTC needs no GPU and no driver: the compilation alone runs anywhere `libnvrtc.so.13` can be
//! loaded (CI compiles every kernel for sm_90 and reads ptxas's register and spill report).

use crate::BackendError;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex, OnceLock};

/// What every kernel file starts with (types, the grid-stride loop, the block reduction).
pub const COMMON: &str = include_str!("../../../../kernels/common.cuh");

/// The kernel files: `(name, source)`.
pub const SOURCES: [(&str, &str); 5] = [
    ("elementwise.cu", include_str!("../../../../kernels/elementwise.cu")),
    ("reduce.cu", include_str!("../../../../kernels/reduce.cu")),
    ("softmax.cu", include_str!("../../../../kernels/softmax.cu")),
    ("data.cu", include_str!("../../../../kernels/data.cu")),
    ("fused_step.cu", include_str!("../../../../kernels/fused_step.cu")),
];

/// The options every kernel is compiled with: no FMA contraction, IEEE division and square root,
/// no flush of denormals (the CPU's arithmetic), C++17.
pub const OPTIONS: [&str; 5] = ["--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=false", "--std=c++17"];

/// One compiled kernel file.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The file's name (`elementwise.cu`).
    pub file: &'static str,
    /// Machine code for the architecture (a cubin).
    pub cubin: Vec<u8>,
    /// NVRTC's log: ptxas's report of each kernel's registers, shared memory and spills.
    pub log: String,
}

/// Whether the NVRTC library can be loaded (checked before any NVRTC call: cudarc panics when it
/// is missing).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Why NVRTC is missing and how to get it.
pub fn nvrtc_missing() -> BackendError {
    BackendError::Unavailable(
        "the CUDA backend needs NVRTC (libnvrtc.so.13), which could not be loaded: install the CUDA 13 \
         toolkit, or `pip download --no-deps nvidia-cuda-nvrtc==13.0.88`, unzip the wheel and put its \
         nvidia/cu13/lib on LD_LIBRARY_PATH (see ../shared/CUDA.md)"
            .into(),
    )
}

/// The source NVRTC compiles for `file`: the common header, then the file (its lines numbered
/// from 1, so that messages point into kernels/`file`).
pub fn full_source(file: &str, source: &str) -> String {
    format!("{COMMON}\n#line 1 \"{file}\"\n{source}")
}

fn nvrtc_error(file: &str, what: &str, e: impl std::fmt::Debug) -> BackendError {
    BackendError::Kernel { device: "nvrtc".into(), kernel: file.into(), message: format!("{what}: {e:?}") }
}

/// Compiles kernel `file` to machine code for `arch` (`sm_90`), with ptxas's verbose report in the
/// log. A compilation error is an error carrying the log.
pub fn compile(file: &'static str, source: &str, arch: &str) -> Result<Compiled, BackendError> {
    use cudarc::nvrtc::{result, sys};
    if !nvrtc_available() {
        return Err(nvrtc_missing());
    }
    let src = CString::new(full_source(file, source)).map_err(|e| nvrtc_error(file, "source", e))?;
    let name = CString::new(file).map_err(|e| nvrtc_error(file, "name", e))?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| nvrtc_error(file, "create program", e))?;
    let mut options: Vec<String> = OPTIONS.iter().map(|o| o.to_string()).collect();
    options.push(format!("--gpu-architecture={arch}"));
    options.push("--ptxas-options=-v".into());
    // SAFETY: `prog` was just created and is destroyed once, below; `src` and `name` outlive it.
    let compiled = unsafe { result::compile_program(prog, &options) };
    let log = unsafe { result::get_program_log(prog) }
        .map(|raw| unsafe { CStr::from_ptr(raw.as_ptr()) }.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cubin = compiled.map_err(|e| nvrtc_error(file, &format!("compilation failed\n{log}"), e)).and_then(|()| {
        let mut size = 0usize;
        // SAFETY: a compiled program; the buffer holds exactly the size NVRTC reports.
        unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }.result().map_err(|e| nvrtc_error(file, "cubin size", e))?;
        let mut cubin = vec![0u8; size];
        unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) }
            .result()
            .map_err(|e| nvrtc_error(file, "cubin", e))?;
        Ok(cubin)
    });
    // SAFETY: created above, destroyed once.
    let _ = unsafe { result::destroy_program(prog) };
    Ok(Compiled { file, cubin: cubin?, log })
}

/// Every kernel file compiled for `arch`, once per process (cached).
pub fn compile_all(arch: &str) -> Result<Arc<Vec<Compiled>>, BackendError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Vec<Compiled>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(done) = cache.lock().map_err(|_| nvrtc_error("*", "cache", "poisoned"))?.get(arch) {
        return Ok(done.clone());
    }
    let all: Vec<Compiled> = SOURCES.iter().map(|(file, src)| compile(file, src, arch)).collect::<Result<_, _>>()?;
    let all = Arc::new(all);
    cache.lock().map_err(|_| nvrtc_error("*", "cache", "poisoned"))?.insert(arch.to_string(), all.clone());
    Ok(all)
}

/// The kernels a file defines (its `extern "C" __global__ void name(` lines).
pub fn kernel_names(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("extern \"C\" __global__ void "))
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .collect()
}

/// ptxas's report of one kernel, read from a compilation log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelReport {
    /// The kernel's name.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory, bytes.
    pub shared_bytes: u32,
    /// Bytes of spill stores and loads.
    pub spill_stores: u32,
    /// See `spill_stores`.
    pub spill_loads: u32,
}

/// Every kernel's registers, shared memory and spills, from ptxas's verbose log.
pub fn reports(log: &str) -> Vec<KernelReport> {
    let number_before = |line: &str, unit: &str| -> u32 {
        line.find(unit)
            .and_then(|i| line[..i].split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty()))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let mut out: Vec<KernelReport> = Vec::new();
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelReport { name, ..Default::default() });
        } else if let Some(r) = out.last_mut() {
            if line.contains("spill stores") {
                r.spill_stores = number_before(line, "bytes spill stores");
                r.spill_loads = number_before(line, "bytes spill loads");
            }
            if line.contains("Used") && line.contains("registers") {
                r.registers = number_before(line, "registers");
                if line.contains("smem") {
                    r.shared_bytes = number_before(line, "bytes smem");
                }
            }
        }
    }
    out
}
