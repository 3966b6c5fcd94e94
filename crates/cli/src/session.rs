//! Running one configuration for a command: the device, a progress bar, checkpoints, and what
//! the run prints and writes at its end. Used by `engram run`, `resume`, `reproduce` and
//! `sweep`.

use crate::common::{progress, write_json_atomic, DeviceSpec};
use anyhow::{Context, Result};
use engram_cl::config::RunConfig;
use engram_cl::run::{self, Checkpointing, Event, RunResult, Start};
use engram_cl::scenario::{Scenario, ScenarioSpec};
use engram_cl::{output, report};
use engram_nn::Cpu;

/// The backend a command runs on (`--device`).
#[derive(Clone, Debug)]
pub enum Device {
    /// The CPU (rayon + matrixmultiply), f32.
    Cpu(Cpu<f32>),
    /// A CUDA GPU.
    #[cfg(feature = "cuda")]
    Cuda(engram_tape::cuda::Cuda),
}

impl Device {
    /// Opens `spec`: the CPU always; a GPU when this engram is built with CUDA and the machine
    /// has the driver, the libraries and the GPU (otherwise an error that says what is missing).
    pub fn open(spec: DeviceSpec) -> Result<Self> {
        match spec {
            DeviceSpec::Cpu => Ok(Device::Cpu(Cpu::new())),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(n) => Ok(Device::Cuda(
                engram_tape::cuda::Cuda::new(n).with_context(|| format!("cannot use --device cuda:{n}"))?,
            )),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(n) => anyhow::bail!(
                "--device cuda:{n}: this engram was built without CUDA support; build it with \
                 `cargo build --release --features cuda` (no CUDA toolkit needed to build), or run with --device cpu"
            ),
        }
    }
}

/// Runs `$body` with `$be` bound to the device's backend (each arm its own monomorphised copy).
#[macro_export]
macro_rules! on_device {
    ($device:expr, $be:ident => $body:expr) => {
        match $device {
            $crate::session::Device::Cpu(b) => {
                let $be = b;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::session::Device::Cuda(b) => {
                let $be = b;
                $body
            }
        }
    };
}

/// Runs one configuration with a progress bar; prints nothing else.
pub fn execute(device: &Device, sc: &Scenario, cfg: &RunConfig, quiet: bool, label: &str) -> Result<RunResult> {
    execute_from(device, sc, cfg, Start::Fresh, None, quiet, label)
}

/// [`execute`] from `start`, with optional checkpointing.
pub fn execute_from(
    device: &Device,
    sc: &Scenario,
    cfg: &RunConfig,
    start: Start,
    ckpt: Option<Checkpointing<'_>>,
    quiet: bool,
    label: &str,
) -> Result<RunResult> {
    let mut pb = progress(0, true);
    let mut desc = String::new();
    let on_event = |e: Event| match e {
        Event::TaskStart { task, name, steps, done } => {
            pb = progress(steps as u64, quiet);
            pb.set_position(done as u64);
            desc = format!("task {}/{} {name}", task + 1, sc.tasks.len());
            pb.set_prefix(format!("{label}{desc}"));
        }
        Event::Step { loss } => {
            pb.inc(1);
            if pb.position() % 50 == 0 {
                pb.set_message(format!("loss {loss:.4}"));
            }
        }
        Event::TrainingDone { .. } => {}
        Event::TaskEnd { row, .. } => {
            pb.finish_and_clear();
            let shown: Vec<String> = row.iter().map(|v| format!("{:.1}", 100.0 * v)).collect();
            if !quiet {
                eprintln!("{label}after {desc}: [{}]", shown.join(" "));
            }
        }
    };
    let res = on_device!(device, be => run::run_with(be, sc, cfg, start, ckpt, on_event));
    pb.finish_and_clear();
    Ok(res?)
}

/// Prints a run's tables to stdout.
pub fn print_result(sc: &Scenario, cfg: &RunConfig, res: &RunResult, profile: bool) {
    println!();
    println!(
        "{} ({} setting, {} tasks), method {}, seed {}",
        sc.kind.name(),
        sc.setting.name(),
        sc.tasks.len(),
        cfg.method.name(),
        cfg.seed
    );
    print!("{}", report::matrix("test accuracy R", &res.task_names, &res.r, Some(&res.b)));
    print!("{}", report::summary(&res.metrics));
    if let (Some(rt), Some(mt)) = (&res.r_train, &res.metrics_train) {
        print!("{}", report::matrix("training-set accuracy", &res.task_names, rt, None));
        println!("ACC on the training sets                  {:.2}", 100.0 * mt.acc);
    }
    let per: Vec<String> = res.per_task_seconds.iter().map(|s| format!("{s:.1}")).collect();
    println!("wall time {:.1} s (per task: {})", res.wall_seconds, per.join(" "));
    if let Some(b) = res.peak_rss_bytes {
        println!(
            "peak resident memory {:.1} MiB; method state {:.2} MiB for {} parameters",
            b as f64 / 1048576.0,
            res.strategy_state_bytes as f64 / 1048576.0,
            res.num_params
        );
    }
    if let Some(d) = &res.diagnostics {
        print!("{}", engram_cl::diagnose::table(d));
    }
    if profile {
        let p = &res.profile;
        println!(
            "profile (s): forward {:.2}, backward {:.2}, consolidation step {:.2}, importance {:.2}, evaluation {:.2}, data {:.2}",
            p.forward, p.backward, p.consolidation_step, p.importance, p.evaluation, p.data
        );
        if cfg.method.is_episodic() {
            println!(
                "episodic memory (s): memory gradients {:.2}, projection {:.2}; {} of {} constrained steps projected",
                p.memory_gradients, p.projection, p.projected_steps, p.constrained_steps
            );
        }
        println!("device: {}", res.device);
    }
}

/// What a run writes at its end and how it checkpoints: kept in each checkpoint so that
/// `engram resume` finishes the run as it was asked to.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// `--out`.
    pub out: Option<std::path::PathBuf>,
    /// `--csv`.
    pub csv: Option<std::path::PathBuf>,
    /// `--plot`.
    pub plot: Option<std::path::PathBuf>,
    /// `--profile`.
    pub profile: bool,
    /// `--checkpoint-every`.
    pub checkpoint_every: Option<u64>,
    /// `--keep-checkpoints`.
    pub keep_checkpoints: usize,
}

/// Runs with a progress bar from `start`, checkpointing into `ckpt_dir` when given.
#[allow(clippy::too_many_arguments)]
pub fn execute_with(
    device: &Device,
    sc: &Scenario,
    spec: &ScenarioSpec,
    cfg: &RunConfig,
    start: Start,
    ckpt_dir: Option<&std::path::Path>,
    outputs: &Outputs,
    quiet: bool,
) -> Result<RunResult> {
    let Some(dir) = ckpt_dir else { return execute_from(device, sc, cfg, start, None, quiet, "") };
    let keep = outputs.keep_checkpoints.max(1);
    let mut save = |ck: &engram_ckpt::Checkpoint, steps: u64| -> std::result::Result<(), String> {
        let name = engram_ckpt::name_for(steps);
        engram_ckpt::write_atomic(dir, &name, ck).map_err(|e| e.to_string())?;
        engram_ckpt::prune(dir, keep).map_err(|e| e.to_string())?;
        Ok(())
    };
    let ck = Checkpointing {
        every: outputs.checkpoint_every,
        spec,
        cli: serde_json::to_value(outputs).expect("serializable outputs"),
        save: &mut save,
    };
    execute_from(device, sc, cfg, start, Some(ck), quiet, "")
}

/// Prints the tables and writes the files a run was asked for.
pub fn finish(spec: &ScenarioSpec, sc: &Scenario, cfg: &RunConfig, res: &RunResult, o: &Outputs) -> Result<()> {
    print_result(sc, cfg, res, o.profile);
    if let Some(p) = &o.out {
        write_json_atomic(p, &output::run_json(spec, sc, cfg, res, o.profile))?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &o.csv {
        std::fs::write(p, output::r_csv(res)).with_context(|| format!("cannot write {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &o.plot {
        let v = output::run_json(spec, sc, cfg, res, false);
        engram_plot::plot_runs(&[engram_plot::RunCurves::from_json(&v, "this run")?], p)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
