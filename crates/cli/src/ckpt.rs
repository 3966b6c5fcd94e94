//! `engram resume` and `engram inspect`, and the checkpoint side of `engram run`
//! (`--checkpoint-dir`, `--init-from`).

use crate::common::{ComputeArgs, DataArgs, LoadedMnist};
use crate::session::{execute_with, finish, Outputs};
use anyhow::{bail, Context, Result};
use clap::Args;
use engram_ckpt::{Checkpoint, Data};
use engram_cl::checkpoint as cc;
use engram_cl::config::RunConfig;
use engram_cl::methods::Method;
use engram_cl::report;
use engram_cl::run::Start;
use engram_cl::scenario::Scenario;
use std::path::{Path, PathBuf};

/// Arguments of `engram resume`.
#[derive(Args, Debug, Clone)]
pub struct ResumeArgs {
    /// The stopped run's --checkpoint-dir (its newest checkpoint is used), or one checkpoint
    /// directory `ckpt-<steps>` in it (e.g. the previous one, when the newest is damaged).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Write the run's JSON here instead of where the run was asked to.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// Arguments of `engram inspect`.
#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// A checkpoint directory (`ckpt-<steps>`), or a run's --checkpoint-dir (its newest).
    #[arg(value_name = "CKPT")]
    pub ckpt: PathBuf,
    /// Print the whole manifest as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Creates the checkpoint directory if needed and checks that it can be written and holds no
/// other run's checkpoints. With `create` false (`engram run --check`) nothing is left behind:
/// the folders it had to make are removed again.
pub fn prepare_dir(d: &Path, create: bool) -> Result<()> {
    if d.as_os_str().is_empty() {
        bail!("--checkpoint-dir: the path is empty");
    }
    if d.exists() && !d.is_dir() {
        bail!("--checkpoint-dir {} is a file, not a directory", d.display());
    }
    // With `create` false, the folders that do not exist yet are made to check that they can
    // be, and removed again at the end.
    let made = if create || d.is_dir() {
        Vec::new()
    } else {
        let abs = std::path::absolute(d).with_context(|| format!("--checkpoint-dir {}", d.display()))?;
        abs.ancestors().take_while(|a| !a.exists()).map(Path::to_path_buf).collect()
    };
    let checked = std::fs::create_dir_all(d)
        .with_context(|| format!("cannot create --checkpoint-dir {}", d.display()))
        .and_then(|()| check_empty_and_writable(d));
    // Deepest first.
    for m in &made {
        let _ = std::fs::remove_dir(m);
    }
    checked
}

/// The rest of [`prepare_dir`], on an existing directory.
fn check_empty_and_writable(d: &Path) -> Result<()> {
    if let Some(old) = engram_ckpt::latest(d)? {
        bail!(
            "--checkpoint-dir {} already holds checkpoints ({}); continue that run with `engram resume {}`, \
             or choose an empty directory",
            d.display(),
            old.display(),
            d.display()
        );
    }
    let probe = d.join(format!(".probe-{}", std::process::id()));
    engram_ckpt::write_file_synced(&probe, b"engram")
        .with_context(|| format!("--checkpoint-dir {} is not writable", d.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Reads the checkpoint at `path` (a run's directory: its newest) and checks its run record as a
/// whole; a refusal names the next-older checkpoint of the same run that passes both.
fn read(path: &Path) -> Result<(PathBuf, Checkpoint)> {
    let dir = engram_ckpt::resolve(path)?;
    let intact = |d: &Path| Checkpoint::read(d).ok().filter(|ck| cc::describe(ck).is_ok());
    let hint = || {
        let mut hint = format!("checkpoint {} is refused", dir.display());
        let older = dir.parent().and_then(|p| engram_ckpt::list(p).ok()).and_then(|l| {
            l.into_iter().rev().filter(|c| c != &dir && c.file_name() < dir.file_name()).find(|c| intact(c).is_some())
        });
        match older {
            Some(prev) => hint.push_str(&format!("; an older one is intact: engram resume {}", prev.display())),
            None => hint.push_str("; no older checkpoint of this run is intact"),
        }
        hint
    };
    let ck = Checkpoint::read(&dir).with_context(hint)?;
    cc::describe(&ck).map_err(|e| anyhow::anyhow!("{e}")).with_context(hint)?;
    Ok((dir, ck))
}

/// `--init-from`: the start of a new run from a trained model.
pub fn init_from(path: &Path, sc: &Scenario, cfg: &RunConfig) -> Result<Start> {
    let (dir, ck) = read(path)?;
    let (carried, notes) =
        cc::carried(&ck, sc, cfg).map_err(|e| anyhow::anyhow!("cannot --init-from {}: {e}", dir.display()))?;
    eprintln!("starting from {}:", dir.display());
    for n in notes {
        eprintln!("  {n}");
    }
    Ok(Start::InitFrom(Box::new(carried)))
}

/// Runs `engram resume`.
pub fn resume(a: ResumeArgs) -> Result<()> {
    let (dir, ck) = read(&a.dir)?;
    let parent = dir.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let (spec, cfg, cli) = cc::describe(&ck).map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", dir.display()))?;
    let mut outputs: Outputs = serde_json::from_value(cli).map_err(|e| {
        anyhow::anyhow!("checkpoint {}: its record of the run's outputs is invalid: {e}", dir.display())
    })?;
    if let Some(o) = a.out {
        outputs.out = Some(o);
    }
    if outputs.checkpoint_every == Some(0) || outputs.keep_checkpoints == 0 {
        bail!(
            "checkpoint {}: its record of the run's outputs has checkpoint_every {:?} and keep_checkpoints {}; \
             both must be at least 1",
            dir.display(),
            outputs.checkpoint_every,
            outputs.keep_checkpoints
        );
    }
    crate::preflight::check_memory("the checkpoint's run", &engram_cl::footprint::footprint(&spec, &cfg))?;
    // The run's outputs are written at its end: refuse now what would fail then.
    if let Some(p) = &outputs.plot {
        engram_plot::Format::of(p)?;
    }
    crate::preflight::check_output_files([
        ("--out", outputs.out.as_deref()),
        ("the run's --csv", outputs.csv.as_deref()),
        ("the run's --plot", outputs.plot.as_deref()),
    ])?;
    let device = a.compute.device()?;
    let sc = LoadedMnist::load(&a.data)?.scenario(&spec)?;
    let p = cc::progress(&ck).map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", dir.display()))?;
    let phases = engram_cl::scenario::phases(sc.tasks.len(), cfg.method == Method::Joint).len();
    if p.mid_phase() {
        eprintln!(
            "resuming {} from {}: task {}/{}, epoch {}, after step {} of the epoch ({} steps done)",
            cfg.method.name(),
            dir.display(),
            p.phases_done + 1,
            phases,
            p.epoch + 1,
            p.step,
            p.steps
        );
    } else {
        eprintln!(
            "resuming {} from {}: {}/{} tasks done ({} steps)",
            cfg.method.name(),
            dir.display(),
            p.phases_done,
            phases,
            p.steps
        );
    }
    let res = execute_with(&device, &sc, &spec, &cfg, Start::Resume(Box::new(ck)), Some(&parent), &outputs, a.quiet)
        .with_context(|| format!("cannot resume from {}", dir.display()))?;
    finish(&spec, &sc, &cfg, &res, &outputs)
}

fn stats(d: &Data) -> String {
    match d {
        Data::F32(v) if v.is_empty() => "empty".into(),
        Data::F32(v) => {
            let (mut lo, mut hi, mut sum, mut sq, mut zeros) = (f32::INFINITY, f32::NEG_INFINITY, 0f64, 0f64, 0usize);
            for &x in v {
                lo = lo.min(x);
                hi = hi.max(x);
                sum += x as f64;
                sq += (x as f64) * (x as f64);
                zeros += usize::from(x == 0.0);
            }
            format!(
                "min {lo:.4e} max {hi:.4e} mean {:.4e} norm {:.4e} zeros {:.1}%",
                sum / v.len() as f64,
                sq.sqrt(),
                100.0 * zeros as f64 / v.len() as f64
            )
        }
        Data::U32(v) if v.is_empty() => "empty".into(),
        Data::U32(v) => format!("min {} max {}", v.iter().min().unwrap_or(&0), v.iter().max().unwrap_or(&0)),
    }
}

/// Runs `engram inspect`.
pub fn inspect(a: InspectArgs) -> Result<()> {
    let (dir, ck) = read(&a.ckpt)?;
    if a.json {
        let bytes = std::fs::read(dir.join(engram_ckpt::MANIFEST_FILE))?;
        print!("{}", String::from_utf8_lossy(&bytes));
        return Ok(());
    }
    let (spec, cfg, cli) = cc::describe(&ck).map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", dir.display()))?;
    let p = cc::progress(&ck).map_err(anyhow::Error::msg)?;
    let run = &ck.run;
    let names: Vec<String> = run["task_names"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    println!("checkpoint {}", dir.display());
    println!(
        "  {} ({} setting, {} tasks), method {}, seed {}",
        spec.kind.name(),
        spec.setting.name(),
        names.len(),
        cfg.method.name(),
        cfg.seed
    );
    println!("  layer sizes {}, {} parameters", run["layer_sizes"], run["num_params"]);
    if p.mid_phase() {
        println!(
            "  progress: in task {} at epoch {}, after step {} of the epoch; {} training steps in all",
            p.phases_done + 1,
            p.epoch + 1,
            p.step,
            p.steps
        );
    } else {
        println!("  progress: {} task(s) done (at a task boundary); {} training steps in all", p.phases_done, p.steps);
    }
    println!("  wall time so far {:.1} s", run["seconds"].as_f64().unwrap_or(0.0));
    let mut hyper = serde_json::to_value(&cfg)?;
    if let Some(h) = hyper.as_object_mut() {
        h.remove("method");
        h.remove("seed");
    }
    println!("  hyperparameters {hyper}");
    println!("  outputs on completion {cli}");
    let r: Vec<Vec<f64>> = serde_json::from_value(run["R"].clone()).unwrap_or_default();
    let b: Vec<f64> = serde_json::from_value(run["b"].clone()).unwrap_or_default();
    if !r.is_empty() && !names.is_empty() {
        print!("{}", report::matrix("test accuracy R so far", &names, &r, Some(&b)));
    }
    println!("tensors (all {} sha256 digests verified):", ck.tensors.len());
    let width = ck.tensors.keys().map(String::len).max().unwrap_or(0);
    for (name, t) in &ck.tensors {
        println!("  {name:width$}  {}  {:<12}  {}", t.data.dtype(), format!("{:?}", t.shape), stats(&t.data));
    }
    Ok(())
}
