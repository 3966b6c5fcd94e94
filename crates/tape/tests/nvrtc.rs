//! NVRTC compiles every kernel file (kernels/*.cu) to sm_90 machine code with no error and no
//! warning, and ptxas's report of each kernel (registers, shared memory, spills) is printed.
//! Needs the NVRTC library, not a GPU (CI fetches it from PyPI and sets ENGRAM_REQUIRE_NVRTC=1,
//! so that its absence there is a failure, not a skip).
#![cfg(feature = "cuda")]

use engram_tape::cuda::compile::{compile, kernel_names, nvrtc_available, reports, SOURCES};

#[test]
fn nvrtc_compiles_every_kernel_to_sm_90_without_warnings() {
    if !nvrtc_available() {
        assert!(
            std::env::var_os("ENGRAM_REQUIRE_NVRTC").is_none(),
            "ENGRAM_REQUIRE_NVRTC is set but libnvrtc.so.13 cannot be loaded (LD_LIBRARY_PATH?)"
        );
        eprintln!("SKIP: NVRTC (libnvrtc.so.13) not found; set LD_LIBRARY_PATH to a CUDA 13 NVRTC (../shared/CUDA.md)");
        return;
    }
    println!("{:<34} {:>9} {:>11} {:>13}  file", "kernel", "registers", "smem bytes", "spills (st/ld)");
    let mut total = 0;
    for (file, source) in SOURCES {
        let compiled = compile(file, source, "sm_90").unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!compiled.cubin.is_empty(), "{file}: empty machine code");
        for line in compiled.log.lines() {
            let l = line.to_ascii_lowercase();
            assert!(!l.contains("warning") && !l.contains("error"), "{file}: {line}");
        }
        let found = reports(&compiled.log);
        let mut names: Vec<&str> = kernel_names(source);
        names.sort_unstable();
        let mut reported: Vec<&str> = found.iter().map(|r| r.name.as_str()).collect();
        reported.sort_unstable();
        assert_eq!(reported, names, "{file}: ptxas reports every kernel the file defines");
        for r in &found {
            println!(
                "{:<34} {:>9} {:>11} {:>13}  {file}",
                r.name,
                r.registers,
                r.shared_bytes,
                format!("{}/{}", r.spill_stores, r.spill_loads)
            );
            assert_eq!((r.spill_stores, r.spill_loads), (0, 0), "{}: spills", r.name);
            total += 1;
        }
    }
    println!("{total} kernels compiled for sm_90");
}
