//! Flags and helpers shared by the commands.

use anyhow::{bail, Context, Result};
use clap::Args;
use engram_cl::scenario::{self, Scenario, ScenarioSpec};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where MNIST comes from.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Directory holding the four MNIST IDX files (gzipped or raw). When absent, engram tries
    /// $ENGRAM_DATA, then ./data/mnist, then the repository's data/mnist.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Skip the sha256 check of the MNIST files against the official digests.
    #[arg(long)]
    pub no_verify: bool,
}

impl DataArgs {
    /// Finds, verifies and decodes MNIST.
    pub fn load(&self) -> Result<engram_mnist::Mnist> {
        let verify = if self.no_verify { engram_mnist::Verify::Skip } else { engram_mnist::Verify::Sha256 };
        Ok(engram_mnist::load(self.data_dir.as_deref(), verify)?)
    }
}

/// Compute flags.
#[derive(Args, Debug, Clone)]
pub struct ComputeArgs {
    /// Worker threads for the CPU kernels (default: one per core). Results do not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Where the run computes: cpu (the default), or cuda / cuda:N for GPU N (builds with
    /// `--features cuda`; the driver, cuBLAS and NVRTC of CUDA 13 are loaded at run time).
    /// Checkpoints do not depend on it: a run checkpointed on one device resumes on the other.
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceSpec,
}

/// A device asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU backend.
    Cpu,
    /// CUDA GPU number N.
    Cuda(usize),
}

pub(crate) fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    match s {
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
            _ => Err(format!("{s:?} is not a device: cpu, cuda or cuda:N")),
        },
    }
}

impl ComputeArgs {
    /// Opens the device asked for (`--device`).
    pub fn device(&self) -> Result<crate::session::Device> {
        crate::session::Device::open(self.device)
    }

    /// The thread pool the command runs in: `--threads` workers (default: rayon's, one per core
    /// or `RAYON_NUM_THREADS`). The command itself runs on one of them, so that a parallel
    /// kernel it starts is shared with the other workers directly instead of being handed
    /// across from a thread outside the pool (which then sleeps until the kernel is done).
    pub fn pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
        // The command's stack: what the main thread would have.
        let mut builder = rayon::ThreadPoolBuilder::new().stack_size(COMMAND_STACK);
        if let Some(n) = threads {
            crate::preflight::check_threads("--threads", n)?;
            builder = builder.num_threads(n);
        }
        builder.build().context("starting the thread pool")
    }
}

/// Stack of the pool's threads (the command runs on one of them): the main thread's usual 8 MiB.
const COMMAND_STACK: usize = 8 << 20;

/// Writes `value` as pretty JSON to `path` atomically: a temporary file in the same directory,
/// flushed and synced, then renamed over the target (a crash never leaves a half-written file).
pub fn write_json_atomic(path: &Path, value: &serde_json::Value) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!("cannot write {}: directory {} does not exist", path.display(), dir.display());
    }
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, value)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal or `quiet`).
pub fn progress(len: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

/// MNIST loaded once and shared by every scenario built from it.
#[derive(Clone)]
pub struct LoadedMnist {
    /// The 60,000 training images.
    pub train: Arc<engram_mnist::Split>,
    /// The 10,000 test images.
    pub test: Arc<engram_mnist::Split>,
}

impl LoadedMnist {
    /// Loads MNIST as `data` says.
    pub fn load(data: &DataArgs) -> Result<Self> {
        let m = data.load()?;
        Ok(Self { train: Arc::new(m.train), test: Arc::new(m.test) })
    }

    /// Builds the tasks of `spec` over the shared data.
    pub fn scenario(&self, spec: &ScenarioSpec) -> Result<Scenario> {
        scenario::build(spec, self.train.clone(), self.test.clone()).map_err(anyhow::Error::msg)
    }
}

/// The optimizer on the command line (the library's [`engram_si::Optimizer`] carries the
/// learning rate, which `--lr` or the benchmark sets).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerName {
    /// Bias-corrected Adam, betas (0.9, 0.999), eps 1e-8.
    Adam,
    /// Plain stochastic gradient descent.
    Sgd,
}

impl OptimizerName {
    /// The rule, with a learning rate still to be set (`Optimizer::with_lr`).
    pub fn rule(self) -> engram_si::Optimizer {
        match self {
            OptimizerName::Adam => engram_si::Optimizer::adam(0.0),
            OptimizerName::Sgd => engram_si::Optimizer::Sgd { lr: 0.0 },
        }
    }
}
