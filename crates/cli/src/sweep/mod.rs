//! `engram sweep`: a hyperparameter grid x seeds, whole runs side by side, chosen honestly.
//!
//! Protocol (default `--selection validation`): every setting of the grid is trained on each
//! task's training data minus a held-out validation part (`--validation`, 10%) and judged by its
//! ACC on those held-out samples (optionally only over the first `--select-tasks K` tasks, as
//! A-GEM does). The setting with the best mean validation ACC is then retrained on the full
//! training data with every seed, and its TEST ACC is reported. The test set is never seen
//! while choosing. `--selection test` picks on the test set instead (the common, optimistic
//! shortcut), and says so everywhere.
//!
//! Layout of the output directory:
//! ```text
//! DIR/sweep.json          what was swept (written at the start)
//! DIR/runs/<id>.json      one file per run, as `engram run --out` plus a "sweep" object;
//!                         a run whose file exists (with the same configuration) is skipped
//! DIR/results.jsonl       every run, one JSON object per line (rewritten by every merge)
//! DIR/summary.json        the table, the chosen setting and its test ACC
//! DIR/sweep.png           ACC against the first swept hyperparameter
//! ```

use crate::common::DeviceSpec;
use crate::common::LoadedMnist;
use crate::common::{write_json_atomic, DataArgs};
use crate::run::RunArgs;
use crate::session::{execute, Device};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use engram_cl::methods::Method;
use engram_cl::output;
use engram_cl::scenario::{self, ScenarioKind};
use engram_plot::{self as plot, SweepFigure, SweepSeries};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// How the hyperparameters are chosen.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// On a validation split carved from the training data; the chosen setting is then retrained
    /// on all the training data and its test ACC reported (honest).
    Validation,
    /// On the test set (optimistic: the reported ACC is the maximum over the grid).
    Test,
}

impl Selection {
    fn eval(self) -> &'static str {
        match self {
            Selection::Validation => "validation",
            Selection::Test => "test",
        }
    }
}

/// Arguments of `engram sweep`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    sub: Option<SweepSub>,
    #[command(flatten)]
    spec: SweepSpec,
}

#[derive(Subcommand, Debug)]
enum SweepSub {
    /// Gather the per-run files of DIR (e.g. written by cluster jobs from --emit-jobs) into
    /// results.jsonl, print the summary table, write summary.json and the sweep figure.
    Merge(MergeArgs),
}

/// Arguments of `engram sweep merge`.
#[derive(Args, Debug)]
struct MergeArgs {
    /// The sweep's output directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The hyperparameter on the figure's x axis (default: the first --grid key).
    #[arg(long, value_name = "KEY")]
    x: Option<String>,
    /// The figure file (.png or .svg; default DIR/sweep.png).
    #[arg(long, value_name = "FIG")]
    plot: Option<PathBuf>,
}

/// What to sweep.
#[derive(Args, Debug, Clone)]
struct SweepSpec {
    /// The benchmark.
    #[arg(long, value_enum, required = true)]
    scenario: Option<ScenarioKind>,
    /// The method.
    #[arg(long, value_enum, required = true)]
    method: Option<Method>,
    /// A swept hyperparameter: KEY=V1,V2,... where KEY is an `engram run` flag that takes a value
    /// (c, lambda, xi, lr, epochs, batch, hidden, optimizer, si-grad, si-relu, memories, ...).
    /// Repeat for a grid: every combination is run.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    grid: Vec<String>,
    /// Seeds 0, 1, ..., N-1 for every setting.
    #[arg(long, default_value_t = 3, value_name = "N")]
    seeds: u64,
    /// Whole runs side by side (default: one per core on the CPU, one at a time on a GPU). Each
    /// run keeps its own determinism: results do not depend on --jobs or --threads.
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Worker threads of each run (default: cores / jobs, at least 1). Keep jobs x threads at
    /// most the number of cores.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Output directory (per-run files, results.jsonl, summary.json, the figure). Rerunning with
    /// the same directory skips the runs already there. Default: sweep-SCENARIO-METHOD.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Where the hyperparameters are chosen (validation: honest; test: optimistic).
    #[arg(long, value_enum, default_value_t = Selection::Validation)]
    selection: Selection,
    /// Fraction of each task's training samples held out for validation.
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    validation: f64,
    /// Choose on the first K tasks only (as A-GEM does); the chosen setting is then run on all.
    #[arg(long, value_name = "K")]
    select_tasks: Option<usize>,
    /// The hyperparameter on the figure's x axis (default: the first --grid key).
    #[arg(long, value_name = "KEY")]
    x: Option<String>,
    /// The figure file (.png or .svg; default DIR/sweep.png).
    #[arg(long, value_name = "FIG")]
    plot: Option<PathBuf>,
    /// Print one command line per run of the current phase instead of running (for Slurm job
    /// arrays or GNU parallel), then `engram sweep merge DIR`. Once every selection run is
    /// done, --emit-jobs prints the test-phase runs of the chosen setting.
    #[arg(long)]
    emit_jobs: bool,
    /// Run only the run with this id (what --emit-jobs prints).
    #[arg(long, value_name = "ID")]
    only: Option<String>,
    /// No per-run lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Where each run computes: cpu (the default), or cuda / cuda:N (builds with `--features
    /// cuda`). With a GPU, --jobs N runs N runs side by side on it, each with its own context.
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = crate::common::parse_device)]
    device: DeviceSpec,
    #[command(flatten)]
    data: DataArgs,
    /// Flags given to every run, as `engram run` takes them, after `--` (e.g. `-- --epochs 2
    /// --xi 0.01`).
    #[arg(last = true, value_name = "RUN FLAGS")]
    run_args: Vec<String>,
}

/// Flags a sweep sets itself: neither --grid keys nor run flags after `--`.
const RESERVED: [&str; 11] =
    ["seed", "out", "csv", "plot", "threads", "data-dir", "no-verify", "scenario", "method", "quiet", "device"];

/// One setting of the grid: (key, value) in --grid order.
type Setting = Vec<(String, String)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Select,
    Test,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Select => "select",
            Phase::Test => "test",
        }
    }
}

struct Job {
    id: String,
    phase: Phase,
    setting: Setting,
    seed: u64,
    args: RunArgs,
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '_' }).collect()
}

fn setting_text(s: &Setting) -> String {
    if s.is_empty() {
        return "(base)".into();
    }
    s.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

fn job_id(phase: Phase, s: &Setting, seed: u64) -> String {
    let mut id = phase.name().to_string();
    for (k, v) in s {
        id.push_str(&format!("__{}={}", sanitize(k), sanitize(v)));
    }
    id.push_str(&format!("__seed={seed}"));
    id
}

/// Parses `--grid KEY=V1,V2` values.
fn parse_grid(grid: &[String]) -> Result<Vec<(String, Vec<String>)>> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for g in grid {
        let (k, vs) = g
            .split_once('=')
            .ok_or_else(|| anyhow!("--grid {g}: expected KEY=V1,V2,... (e.g. --grid c=0.01,0.1,1)"))?;
        let k = k.trim().trim_start_matches("--").to_string();
        if k.is_empty() {
            bail!("--grid {g}: the key is empty");
        }
        if RESERVED.contains(&k.as_str()) {
            bail!("--grid {k}: the sweep sets --{k} itself (seeds come from --seeds)");
        }
        if out.iter().any(|(o, _)| *o == k) {
            bail!("--grid {k} is given twice: list every value in one --grid");
        }
        let vals: Vec<String> = vs.split(',').map(|v| v.trim().to_string()).collect();
        if vals.iter().any(String::is_empty) {
            bail!("--grid {g}: empty value (values are separated by commas)");
        }
        let mut dedup = vals.clone();
        dedup.sort();
        dedup.dedup();
        if dedup.len() != vals.len() {
            bail!("--grid {g}: a value is listed twice");
        }
        out.push((k, vals));
    }
    Ok(out)
}

fn settings(grid: &[(String, Vec<String>)]) -> Vec<Setting> {
    let mut out: Vec<Setting> = vec![Vec::new()];
    for (k, vals) in grid {
        out = out
            .into_iter()
            .flat_map(|s| {
                vals.iter().map(move |v| {
                    let mut s = s.clone();
                    s.push((k.clone(), v.clone()));
                    s
                })
            })
            .collect();
    }
    out
}

fn check_run_args(run_args: &[String]) -> Result<()> {
    for a in run_args {
        if let Some(flag) = a.strip_prefix("--") {
            let name = flag.split('=').next().unwrap_or(flag);
            if RESERVED.contains(&name) {
                bail!("--{name} cannot be given to the runs of a sweep: the sweep sets it itself");
            }
        }
    }
    Ok(())
}

impl SweepSpec {
    fn scenario(&self) -> ScenarioKind {
        self.scenario.expect("required by clap")
    }

    fn method(&self) -> Method {
        self.method.expect("required by clap")
    }

    fn dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("sweep-{}-{}", self.scenario().name(), self.method().name())))
    }

    /// The parsed `engram run` arguments of one run.
    fn run_args(&self, setting: &Setting, seed: u64) -> Result<RunArgs> {
        let mut argv: Vec<String> =
            vec!["--scenario".into(), self.scenario().name().into(), "--method".into(), self.method().name().into()];
        argv.extend(self.run_args.iter().cloned());
        for (k, v) in setting {
            argv.push(format!("--{k}={v}"));
        }
        argv.extend(["--seed".into(), seed.to_string(), "--quiet".into()]);
        let args = crate::run::parse_run_flags(&argv).map_err(|e| {
            anyhow!(
                "the run flags of setting {} are not valid `engram run` flags:\n{}",
                setting_text(setting),
                e.render().to_string().trim_end()
            )
        })?;
        // Resolve once now, so a bad value fails before any training.
        args.resolve().with_context(|| format!("setting {}", setting_text(setting)))?;
        Ok(args)
    }

    fn select_jobs(&self, grid: &[(String, Vec<String>)]) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        for s in settings(grid) {
            for seed in 0..self.seeds {
                jobs.push(Job {
                    id: job_id(Phase::Select, &s, seed),
                    phase: Phase::Select,
                    args: self.run_args(&s, seed)?,
                    setting: s.clone(),
                    seed,
                });
            }
        }
        let mut ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            bail!("two settings map to the same run file name; use plainer --grid values");
        }
        Ok(jobs)
    }

    fn test_jobs(&self, s: &Setting) -> Result<Vec<Job>> {
        (0..self.seeds)
            .map(|seed| {
                Ok(Job {
                    id: job_id(Phase::Test, s, seed),
                    phase: Phase::Test,
                    args: self.run_args(s, seed)?,
                    setting: s.clone(),
                    seed,
                })
            })
            .collect()
    }
}

/// Runs `engram sweep`.
pub fn run(a: SweepArgs) -> Result<()> {
    if let Some(SweepSub::Merge(m)) = a.sub {
        let figure = m.plot.unwrap_or_else(|| m.dir.join("sweep.png"));
        plot::Format::of(&figure)?;
        merge(&m.dir, m.x.as_deref(), &figure, false).map(|_| ())
    } else {
        sweep(a.spec)
    }
}

fn sweep(spec: SweepSpec) -> Result<()> {
    if spec.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if !(spec.validation.is_finite() && spec.validation > 0.0 && spec.validation < 1.0) {
        bail!("--validation must lie strictly between 0 and 1, got {}", spec.validation);
    }
    check_run_args(&spec.run_args)?;
    let grid = parse_grid(&spec.grid)?;
    if let Some(x) = &spec.x {
        if !grid.iter().any(|(k, _)| k == x) {
            bail!("--x {x} is not a --grid key");
        }
    }
    let dir = spec.dir();
    let figure = spec.plot.clone().unwrap_or_else(|| dir.join("sweep.png"));
    plot::Format::of(&figure)?;
    let select = spec.select_jobs(&grid)?;
    // Every setting's run must fit the machine (runs side by side are warned about below).
    for job in &select {
        let (scn, cfg) = job.args.resolve()?;
        crate::preflight::check_memory(&format!("run {}", job.id), &engram_cl::footprint::footprint(&scn, &cfg))?;
    }
    if let Some(k) = spec.select_tasks {
        let (scn, _) = select[0].args.resolve()?;
        if k == 0 || k > scn.tasks {
            bail!("--select-tasks must lie in 1..={} for {}", scn.tasks, spec.scenario().name());
        }
    }
    // Fail now, not in the first run, when the device cannot be used.
    Device::open(spec.device)?;
    let cores = crate::preflight::cores();
    let n_jobs = spec.jobs.unwrap_or(if spec.device == DeviceSpec::Cpu { cores } else { 1 });
    crate::preflight::check_threads("--jobs", n_jobs)?;
    let threads = spec.threads.unwrap_or((cores / n_jobs).max(1));
    crate::preflight::check_threads("--threads", threads)?;
    if n_jobs * threads > cores && !spec.quiet {
        eprintln!(
            "warning: --jobs {n_jobs} x --threads {threads} = {} threads on {cores} core(s): runs will compete for cores",
            n_jobs * threads
        );
    }
    std::fs::create_dir_all(dir.join("runs"))
        .with_context(|| format!("cannot create {}", dir.join("runs").display()))?;

    if let Some(id) = &spec.only {
        let shared = LoadedMnist::load(&spec.data)?;
        let mut all = select;
        for s in settings(&grid) {
            all.extend(spec.test_jobs(&s)?);
        }
        let Some(job) = all.into_iter().find(|j| &j.id == id) else {
            bail!("--only {id}: no run of this sweep has that id (see --emit-jobs)");
        };
        let (n, _) = run_jobs(&shared, &spec, std::slice::from_ref(&job), &dir, 1, threads)?;
        if n == 0 && !spec.quiet {
            eprintln!("{} already exists: skipped", run_path(&dir, id).display());
        }
        return Ok(());
    }

    write_json_atomic(
        &dir.join("sweep.json"),
        &json!({
            "scenario": spec.scenario().name(),
            "method": spec.method().name(),
            "grid": grid.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "seeds": spec.seeds,
            "selection": spec.selection.eval(),
            "validation_fraction": spec.validation,
            "select_tasks": spec.select_tasks,
            "run_flags": spec.run_args,
            "x": spec.x.clone().or_else(|| grid.first().map(|g| g.0.clone())),
        }),
    )?;

    if spec.emit_jobs {
        let done = select
            .iter()
            .map(|j| Ok(existing(&dir, j, &fingerprint(j, &spec)?)?.is_some()))
            .collect::<Result<Vec<bool>>>()?;
        if done.iter().all(|d| *d) && spec.selection == Selection::Validation {
            let s = merge(&dir, spec.x.as_deref(), &figure, true)?;
            let chosen = s.chosen.ok_or_else(|| anyhow!("every selection run failed: no setting to test"))?;
            eprintln!(
                "# test phase: the chosen setting {} retrained on all the training data, one run per seed",
                setting_text(&chosen)
            );
            for c in job_commands(&spec.test_jobs(&chosen)?, &dir) {
                println!("{c}");
            }
        } else {
            eprintln!(
                "# {} selection run(s) ({} done); then `engram sweep merge {}`{}",
                select.len(),
                done.iter().filter(|d| **d).count(),
                dir.display(),
                if spec.selection == Selection::Validation {
                    " and --emit-jobs again for the test-phase runs of the chosen setting"
                } else {
                    ""
                }
            );
            for c in job_commands(&select, &dir) {
                println!("{c}");
            }
        }
        return Ok(());
    }

    let shared = LoadedMnist::load(&spec.data)?;
    let t0 = Instant::now();
    if !spec.quiet {
        eprintln!(
            "engram sweep: {} setting(s) x {} seed(s) = {} selection run(s) on {}; {n_jobs} run(s) side by side, {threads} thread(s) each",
            select.len() as u64 / spec.seeds,
            spec.seeds,
            select.len(),
            match spec.selection {
                Selection::Validation => format!("a {:.0}% validation split of the training data", 100.0 * spec.validation),
                Selection::Test => "the TEST set (optimistic)".into(),
            }
        );
    }
    let (ran_sel, _) = run_jobs(&shared, &spec, &select, &dir, n_jobs, threads)?;
    let mut ran_test = 0;
    if spec.selection == Selection::Validation {
        let table = summarize(&collect_runs(&dir)?, &select);
        let chosen = table.rows.first().filter(|r| r.acc.is_some()).map(|r| r.setting.clone());
        match chosen {
            Some(c) => {
                if !spec.quiet {
                    eprintln!(
                        "chosen on validation: {}; retraining on all the training data, testing",
                        setting_text(&c)
                    );
                }
                ran_test = run_jobs(&shared, &spec, &spec.test_jobs(&c)?, &dir, n_jobs, threads)?.0;
            }
            None => eprintln!("every selection run failed: no setting to test"),
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    merge(&dir, spec.x.as_deref(), &figure, false)?;
    println!(
        "sweep wall time {wall:.1} s: {} run(s) done now ({ran_sel} selection, {ran_test} test), {n_jobs} side by side x {threads} thread(s)",
        ran_sel + ran_test
    );
    Ok(())
}

mod jobs;
mod merge;
#[cfg(test)]
mod tests;

use jobs::*;
use merge::*;
