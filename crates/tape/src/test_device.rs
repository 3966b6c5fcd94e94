//! One test body, run per device (candle's `test_device!` idea).
//!
//! A test body is a generic function of the backend, `fn relu<B: Backend<T = f32>>(be: &B)`, that
//! checks an op against a reference. [`test_device!`](crate::test_device!) turns it into two
//! tests, `relu::cpu` and `relu::cuda`: the first runs on [`Cpu`](crate::cpu::Cpu); the second
//! runs on GPU 0 where the test binary is built with `--features cuda` and a GPU can be used,
//! and elsewhere passes after one line on stderr, printed once per test binary, that says why it
//! skipped. With `ENGRAM_REQUIRE_GPU=1` a missing GPU fails the test instead (the GPU check
//! script sets it, so that a GPU test can never pass by skipping there).

use std::io::Write;
use std::sync::Once;

/// Prints, once per process, that the GPU tests are skipped and why. Written to the process's
/// stderr directly, so that the test harness's capture does not hide it.
pub fn skip(reason: &str) {
    if std::env::var_os("ENGRAM_REQUIRE_GPU").is_some_and(|v| v != "0") {
        panic!("ENGRAM_REQUIRE_GPU is set, but the GPU tests cannot run: {reason}");
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(std::io::stderr(), "skipping the GPU tests of this binary: {reason}");
    });
}

/// GPU 0, opened once per process and shared by the tests; `None` (after [`skip`]) when it
/// cannot be used.
#[cfg(feature = "cuda")]
pub fn gpu() -> Option<crate::cuda::Cuda> {
    static GPU: std::sync::OnceLock<Result<crate::cuda::Cuda, String>> = std::sync::OnceLock::new();
    match GPU.get_or_init(|| crate::cuda::Cuda::new(0).map_err(|e| format!("no usable GPU ({e})"))) {
        Ok(gpu) => Some(gpu.clone()),
        Err(reason) => {
            skip(reason);
            None
        }
    }
}

/// Defines, for each named generic test body `f`, the tests `f::cpu` and `f::cuda` (see the
/// [module](crate::test_device)). The `cuda` feature is the calling crate's.
#[macro_export]
macro_rules! test_device {
    ($($body:ident),+ $(,)?) => {
        $(
            mod $body {
                #[test]
                fn cpu() {
                    super::$body(&$crate::cpu::Cpu::<f32>::new());
                }

                #[test]
                fn cuda() {
                    #[cfg(feature = "cuda")]
                    if let Some(gpu) = $crate::test_device::gpu() {
                        super::$body(&gpu);
                    }
                    #[cfg(not(feature = "cuda"))]
                    $crate::test_device::skip("built without --features cuda");
                }
            }
        )+
    };
}
