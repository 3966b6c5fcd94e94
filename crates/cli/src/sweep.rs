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

use crate::common::{write_json_atomic, DataArgs};
use crate::run::{execute, RunArgs, Shared};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use engram_cl::output;
use engram_cl::plot::{self, SweepFigure, SweepSeries};
use engram_cl::scenario::{self, ScenarioKind};
use engram_cl::strategy::Method;
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
    /// Whole runs side by side (default: one per core). Each run keeps its own determinism:
    /// results do not depend on --jobs or --threads.
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
    #[command(flatten)]
    data: DataArgs,
    /// Flags given to every run, as `engram run` takes them, after `--` (e.g. `-- --epochs 2
    /// --xi 0.01`).
    #[arg(last = true, value_name = "RUN FLAGS")]
    run_args: Vec<String>,
}

/// `engram run`'s flags, parsed on their own.
#[derive(Parser, Debug)]
#[command(name = "engram run (inside engram sweep)", no_binary_name = true)]
struct RunOnly {
    #[command(flatten)]
    run: RunArgs,
}

/// Flags a sweep sets itself: neither --grid keys nor run flags after `--`.
const RESERVED: [&str; 10] =
    ["seed", "out", "csv", "plot", "threads", "data-dir", "no-verify", "scenario", "method", "quiet"];

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
        let parsed = RunOnly::try_parse_from(&argv).map_err(|e| {
            anyhow!(
                "the run flags of setting {} are not valid `engram run` flags:\n{}",
                setting_text(setting),
                e.render().to_string().trim_end()
            )
        })?;
        let args = parsed.run;
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

/// What a run file records about the configuration: a rerun skips a run only when this matches.
fn fingerprint(job: &Job, spec: &SweepSpec) -> Result<Value> {
    let (scn, cfg) = job.args.resolve()?;
    let eval = if job.phase == Phase::Select { spec.selection.eval() } else { "test" };
    Ok(json!({
        "scenario": format!("{scn:?}"),
        "config": format!("{cfg:?}"),
        "eval": eval,
        "validation": (eval == "validation").then_some(spec.validation),
        "select_tasks": if job.phase == Phase::Select { spec.select_tasks } else { None },
    }))
}

fn run_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("runs").join(format!("{id}.json"))
}

/// The stored result of `job`, if its file exists and matches the configuration.
fn existing(dir: &Path, job: &Job, fp: &Value) -> Result<Option<Value>> {
    let p = run_path(dir, &job.id);
    if !p.exists() {
        return Ok(None);
    }
    let v = read_json(&p)?;
    if v.pointer("/sweep/fingerprint") != Some(fp) {
        bail!(
            "{} holds a run with a different configuration (the flags changed since it was written); \
             use another --out directory or delete the file",
            p.display()
        );
    }
    Ok(Some(v))
}

fn read_json(p: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))
}

/// Runs one job (in the calling thread's rayon pool) and returns its record.
fn execute_job(shared: &Shared, spec: &SweepSpec, job: &Job, fp: &Value) -> Result<Value> {
    let (scn, cfg) = job.args.resolve()?;
    let mut sc = shared.scenario(&scn)?;
    let eval = if job.phase == Phase::Select { spec.selection.eval() } else { "test" };
    if job.phase == Phase::Select {
        if spec.selection == Selection::Validation {
            sc = scenario::validation_split(&sc, spec.validation, job.seed).map_err(anyhow::Error::msg)?;
        }
        if let Some(k) = spec.select_tasks {
            sc.tasks.truncate(k);
        }
    }
    let sweep = json!({
        "id": job.id,
        "phase": job.phase.name(),
        "eval": eval,
        "setting": job.setting.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "validation_fraction": (eval == "validation").then_some(spec.validation),
        "select_tasks": if job.phase == Phase::Select { spec.select_tasks } else { None },
        "fingerprint": fp,
    });
    match execute(&sc, &cfg, true, "") {
        Ok(res) => {
            let mut v = output::run_json(&scn, &sc, &cfg, &res, false);
            v["sweep"] = sweep;
            Ok(v)
        }
        // A run that diverges is a result (the setting is unusable), not a failure of the sweep.
        Err(e) => Ok(json!({
            "scenario": scn.kind.name(),
            "method": cfg.method.name(),
            "seed": job.seed,
            "error": format!("{e:#}"),
            "sweep": sweep,
        })),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `jobs` with `n_jobs` whole runs side by side; skips those already in `dir`.
fn run_jobs(
    shared: &Shared,
    spec: &SweepSpec,
    jobs: &[Job],
    dir: &Path,
    n_jobs: usize,
    threads: usize,
) -> Result<(usize, usize)> {
    let mut todo = Vec::new();
    let mut skipped = 0;
    for j in jobs {
        let fp = fingerprint(j, spec)?;
        if existing(dir, j, &fp)?.is_some() {
            skipped += 1;
        } else {
            todo.push((j, fp));
        }
    }
    if todo.is_empty() {
        return Ok((0, skipped));
    }
    if !spec.quiet && skipped > 0 {
        eprintln!("{skipped} run(s) already in {}: skipped", dir.display());
    }
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let total = todo.len();
    std::thread::scope(|scope| {
        for _ in 0..n_jobs.min(total) {
            scope.spawn(|| {
                let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                    Ok(p) => p,
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        first_err.lock().expect("lock").get_or_insert(anyhow!("cannot start a thread pool: {e}"));
                        return;
                    }
                };
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((job, fp)) = todo.get(i) else { return };
                    let t = Instant::now();
                    let r = pool
                        .install(|| execute_job(shared, spec, job, fp))
                        .and_then(|v| write_json_atomic(&run_path(dir, &job.id), &v).map(|_| v));
                    match r {
                        Ok(v) => {
                            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                            if !spec.quiet {
                                let what = match (v.get("acc").and_then(Value::as_f64), v.get("error")) {
                                    (Some(a), _) => {
                                        format!("{} ACC {:.2}%", v["sweep"]["eval"].as_str().unwrap_or(""), 100.0 * a)
                                    }
                                    (None, Some(e)) => format!("FAILED: {}", e.as_str().unwrap_or("?")),
                                    _ => "?".into(),
                                };
                                eprintln!(
                                    "[{n}/{total}] {} {} seed {}: {what} ({:.0} s)",
                                    job.phase.name(),
                                    setting_text(&job.setting),
                                    job.seed,
                                    t.elapsed().as_secs_f64()
                                );
                            }
                        }
                        Err(e) => {
                            stop.store(true, Ordering::SeqCst);
                            first_err.lock().expect("lock").get_or_insert(e.context(format!("run {}", job.id)));
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().expect("lock") {
        return Err(e);
    }
    Ok((total, skipped))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./=:,+-@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// One command line per job: this process's arguments without --emit-jobs/--jobs/--only/--out,
/// plus `--only ID --jobs 1 --out DIR`.
fn job_commands(jobs: &[Job], dir: &Path) -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    let (head, tail) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i..]),
        None => (&args[..], &args[args.len()..]),
    };
    let mut kept: Vec<String> = Vec::new();
    let mut skip_next = false;
    for a in head {
        if skip_next {
            skip_next = false;
            continue;
        }
        match a.as_str() {
            "--emit-jobs" => continue,
            "--jobs" | "--only" | "--out" => {
                skip_next = true;
                continue;
            }
            s if s.starts_with("--jobs=") || s.starts_with("--only=") || s.starts_with("--out=") => continue,
            _ => kept.push(a.clone()),
        }
    }
    jobs.iter()
        .map(|j| {
            let mut c: Vec<String> = kept.clone();
            c.extend(["--only".into(), j.id.clone(), "--jobs".into(), "1".into(), "--out".into()]);
            c.push(dir.display().to_string());
            c.extend(tail.iter().cloned());
            c.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
        })
        .collect()
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
    if let Some(k) = spec.select_tasks {
        let (scn, _) = select[0].args.resolve()?;
        if k == 0 || k > scn.tasks {
            bail!("--select-tasks must lie in 1..={} for {}", scn.tasks, spec.scenario().name());
        }
    }
    let cores = cores();
    let n_jobs = spec.jobs.unwrap_or(cores);
    if n_jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let threads = spec.threads.unwrap_or((cores / n_jobs).max(1));
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    if n_jobs * threads > cores && !spec.quiet {
        eprintln!(
            "warning: --jobs {n_jobs} x --threads {threads} = {} threads on {cores} core(s): runs will compete for cores",
            n_jobs * threads
        );
    }
    std::fs::create_dir_all(dir.join("runs"))
        .with_context(|| format!("cannot create {}", dir.join("runs").display()))?;

    if let Some(id) = &spec.only {
        let shared = Shared::load(&spec.data)?;
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

    let shared = Shared::load(&spec.data)?;
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

/// Every run file of `dir`, by id.
fn collect_runs(dir: &Path) -> Result<BTreeMap<String, Value>> {
    let runs_dir = dir.join("runs");
    let entries = std::fs::read_dir(&runs_dir)
        .with_context(|| format!("cannot read {} (is {} a sweep directory?)", runs_dir.display(), dir.display()))?;
    let mut out = BTreeMap::new();
    for e in entries {
        let p = e.with_context(|| format!("cannot list {}", runs_dir.display()))?.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let v = read_json(&p)?;
        let id = v
            .pointer("/sweep/id")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{} is not a sweep run file (no sweep.id)", p.display()))?
            .to_string();
        out.insert(id, v);
    }
    Ok(out)
}

fn setting_of(v: &Value) -> Setting {
    v.pointer("/sweep/setting")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter().filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.as_str()?.to_string()))).collect()
        })
        .unwrap_or_default()
}

fn phase_of(v: &Value) -> &str {
    v.pointer("/sweep/phase").and_then(Value::as_str).unwrap_or("")
}

struct Row {
    setting: Setting,
    accs: Vec<f64>,
    failed: usize,
    acc: Option<f64>,
    sd: f64,
    bwt: Option<f64>,
    secs: Option<f64>,
}

struct Table {
    rows: Vec<Row>,
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// The selection table: one row per setting, best mean ACC first, failed settings last.
/// `only`: restrict to these jobs' settings (a sweep run), or every selection run (a merge).
fn summarize(runs: &BTreeMap<String, Value>, only: &[Job]) -> Table {
    let mut by: Vec<(Setting, Vec<&Value>)> = Vec::new();
    let wanted: Vec<&str> = only.iter().map(|j| j.id.as_str()).collect();
    for (id, v) in runs {
        if phase_of(v) != "select" || (!only.is_empty() && !wanted.contains(&id.as_str())) {
            continue;
        }
        let s = setting_of(v);
        match by.iter_mut().find(|(k, _)| *k == s) {
            Some((_, vs)) => vs.push(v),
            None => by.push((s, vec![v])),
        }
    }
    let mut rows: Vec<Row> = by
        .into_iter()
        .map(|(setting, vs)| {
            let accs: Vec<f64> = vs.iter().filter_map(|v| v.get("acc").and_then(Value::as_f64)).collect();
            let failed = vs.len() - accs.len();
            let bwts: Vec<f64> = vs.iter().filter_map(|v| v.get("bwt").and_then(Value::as_f64)).collect();
            let secs: Vec<f64> = vs.iter().filter_map(|v| v.get("wall_seconds").and_then(Value::as_f64)).collect();
            // A setting with a failed (diverged) seed is not eligible: it is unusable as it stands.
            let (acc, sd) = if !accs.is_empty() && failed == 0 {
                let (m, s) = mean_sd(&accs);
                (Some(m), s)
            } else {
                (None, 0.0)
            };
            Row {
                setting,
                accs,
                failed,
                acc,
                sd,
                bwt: (!bwts.is_empty()).then(|| mean_sd(&bwts).0),
                secs: (!secs.is_empty()).then(|| mean_sd(&secs).0),
            }
        })
        .collect();
    rows.sort_by(|a, b| match (a.acc, b.acc) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Table { rows }
}

/// What a merge found.
struct MergeSummary {
    chosen: Option<Setting>,
}

/// Gathers `dir`, prints the table, writes results.jsonl, summary.json and the figure.
fn merge(dir: &Path, x: Option<&str>, figure: &Path, to_stderr: bool) -> Result<MergeSummary> {
    // The report goes to stderr when stdout carries --emit-jobs' command lines.
    macro_rules! say {
        ($($t:tt)*) => {
            if to_stderr {
                eprintln!($($t)*)
            } else {
                println!($($t)*)
            }
        };
    }
    let runs = collect_runs(dir)?;
    if runs.is_empty() {
        bail!("{} holds no run yet", dir.join("runs").display());
    }
    let manifest = read_json(&dir.join("sweep.json")).ok();
    let mut lines = String::new();
    for v in runs.values() {
        lines.push_str(&serde_json::to_string(v)?);
        lines.push('\n');
    }
    std::fs::write(dir.join("results.jsonl"), lines)
        .with_context(|| format!("cannot write {}", dir.join("results.jsonl").display()))?;
    let table = summarize(&runs, &[]);
    let first = runs.values().next().expect("non-empty");
    let eval = runs
        .values()
        .find(|v| phase_of(v) == "select")
        .and_then(|v| v.pointer("/sweep/eval").and_then(Value::as_str))
        .unwrap_or("validation")
        .to_string();
    let keys: Vec<String> =
        table.rows.first().map(|r| r.setting.iter().map(|p| p.0.clone()).collect()).unwrap_or_default();
    let scenario = first.get("scenario").and_then(Value::as_str).unwrap_or("?").to_string();
    let method = first.get("method").and_then(Value::as_str).unwrap_or("?").to_string();

    say!();
    say!(
        "engram sweep {scenario} {method}: {} setting(s), chosen on {}",
        table.rows.len(),
        if eval == "validation" { "a validation split of the training data" } else { "the TEST set (optimistic)" }
    );
    let mut header = format!("{:>4}", "rank");
    for k in &keys {
        header.push_str(&format!(" {:>10}", k));
    }
    header.push_str(&format!(
        " {:>6} {:>20} {:>7} {:>7} {:>7} {:>8}",
        "seeds",
        format!("{eval} ACC"),
        "min",
        "max",
        "BWT",
        "s/run"
    ));
    say!("{header}");
    let mut table_json = Vec::new();
    for (i, r) in table.rows.iter().enumerate() {
        let mut line = format!("{:>4}", i + 1);
        for (_, v) in &r.setting {
            line.push_str(&format!(" {:>10}", v));
        }
        let n = r.accs.len() + r.failed;
        let (mn, mx) = (
            r.accs.iter().copied().fold(f64::INFINITY, f64::min),
            r.accs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        let acc = match r.acc {
            Some(m) => format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * r.sd),
            None => format!("{} failed", r.failed),
        };
        let pct = |x: f64| if x.is_finite() { format!("{:.2}", 100.0 * x) } else { "-".into() };
        line.push_str(&format!(
            " {:>6} {:>20} {:>7} {:>7} {:>7} {:>8}",
            n,
            acc,
            pct(mn),
            pct(mx),
            r.bwt.map_or("-".into(), |b| format!("{:+.2}", 100.0 * b)),
            r.secs.map_or("-".into(), |s| format!("{s:.0}"))
        ));
        say!("{line}");
        table_json.push(json!({
            "setting": r.setting.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "seeds": n, "failed": r.failed, "acc_mean": r.acc, "acc_std": r.sd, "accs": r.accs,
            "bwt_mean": r.bwt, "seconds_per_run": r.secs,
        }));
    }
    let chosen = table.rows.first().filter(|r| r.acc.is_some()).map(|r| r.setting.clone());
    // Test phase of the chosen setting.
    let mut test_json = Value::Null;
    let mut note = None;
    if let Some(c) = &chosen {
        say!("chosen: {} ({eval} ACC {:.2}%)", setting_text(c), 100.0 * table.rows[0].acc.unwrap_or(0.0));
        if eval == "validation" {
            let tests: Vec<&Value> = runs.values().filter(|v| phase_of(v) == "test" && &setting_of(v) == c).collect();
            let accs: Vec<f64> = tests.iter().filter_map(|v| v.get("acc").and_then(Value::as_f64)).collect();
            if tests.is_empty() {
                say!("test phase not run yet: `engram sweep ... --emit-jobs` prints its commands");
            } else if accs.is_empty() {
                say!("test phase: every run failed");
            } else {
                let (m, s) = mean_sd(&accs);
                let line = format!(
                    "TEST ACC of the chosen setting, retrained on all the training data: {:.2} ± {:.2}% over {} seed(s){}",
                    100.0 * m,
                    100.0 * s,
                    accs.len(),
                    if accs.len() < tests.len() { format!(" ({} failed)", tests.len() - accs.len()) } else { String::new() }
                );
                say!("{line}");
                note = Some(line);
                test_json = json!({"setting": c.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(), "acc_mean": m, "acc_std": s, "accs": accs, "runs": tests.len()});
            }
        } else {
            let line = format!(
                "chosen on the TEST set: its ACC {:.2}% is optimistic (the maximum over {} settings)",
                100.0 * table.rows[0].acc.unwrap_or(0.0),
                table.rows.len()
            );
            say!("{line}");
            note = Some(line);
        }
    }
    write_json_atomic(
        &dir.join("summary.json"),
        &json!({
            "scenario": scenario, "method": method, "selection": eval,
            "table": table_json,
            "chosen": chosen.as_ref().map(|c| c.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()),
            "test": test_json,
        }),
    )?;
    say!("wrote {}, {}", dir.join("results.jsonl").display(), dir.join("summary.json").display());

    // The figure: ACC against the x key, one series per setting of the other keys.
    let x_key = x
        .map(str::to_string)
        .or_else(|| manifest.as_ref().and_then(|m| m.get("x").and_then(Value::as_str).map(str::to_string)))
        .or_else(|| keys.first().cloned());
    match x_key {
        Some(xk) if keys.contains(&xk) => {
            // Say how the runs were made when it differs from the benchmark's protocol.
            let flags: Vec<String> = manifest
                .as_ref()
                .and_then(|m| m.get("run_flags").and_then(Value::as_array))
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let note = match (flags.is_empty(), note) {
                (true, n) => n,
                (false, Some(n)) => Some(format!("runs: {}.  {n}", flags.join(" "))),
                (false, None) => Some(format!("runs: {}", flags.join(" "))),
            };
            let fig = sweep_figure(&table, &xk, &eval, &scenario, &method, chosen.as_ref(), note, manifest.as_ref())?;
            plot::plot_sweep(&fig, figure)?;
            say!("wrote {}", figure.display());
        }
        Some(xk) => bail!("--x {xk} is not a swept hyperparameter (swept: {})", keys.join(", ")),
        None => say!("nothing was swept (no --grid): no sweep figure"),
    }
    Ok(MergeSummary { chosen })
}

#[allow(clippy::too_many_arguments)]
fn sweep_figure(
    table: &Table,
    xk: &str,
    eval: &str,
    scenario: &str,
    method: &str,
    chosen: Option<&Setting>,
    note: Option<String>,
    manifest: Option<&Value>,
) -> Result<SweepFigure> {
    let get = |s: &Setting, k: &str| s.iter().find(|p| p.0 == k).map(|p| p.1.clone()).unwrap_or_default();
    // x values in the order of the grid (the manifest), else first seen.
    let mut xvals: Vec<String> = manifest
        .and_then(|m| m.get("grid").and_then(Value::as_array))
        .and_then(|g| g.iter().find(|p| p.get(0).and_then(Value::as_str) == Some(xk)))
        .and_then(|p| p.get(1).and_then(Value::as_array))
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    for r in &table.rows {
        let v = get(&r.setting, xk);
        if !xvals.contains(&v) {
            xvals.push(v);
        }
    }
    let numeric: Option<Vec<f64>> = xvals.iter().map(|v| v.parse::<f64>().ok().filter(|x| x.is_finite())).collect();
    let (categories, log_x) = match &numeric {
        Some(xs) if xs.iter().all(|&x| x > 0.0) => {
            let (mn, mx) = xs.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
            (None, mx / mn >= 10.0)
        }
        Some(_) => (None, false),
        None => (Some(xvals.clone()), false),
    };
    let xpos = |v: &str| -> f64 {
        match &categories {
            Some(c) => c.iter().position(|x| x == v).unwrap_or(0) as f64,
            None => v.parse().unwrap_or(0.0),
        }
    };
    let mut series: Vec<SweepSeries> = Vec::new();
    let mut failed = Vec::new();
    for r in &table.rows {
        let rest: Vec<String> = r.setting.iter().filter(|p| p.0 != xk).map(|(k, v)| format!("{k}={v}")).collect();
        let label = rest.join(" ");
        let x = get(&r.setting, xk);
        if r.acc.is_none() {
            failed.push(setting_text(&r.setting));
            continue;
        }
        let point = (xpos(&x), r.accs.clone());
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push(point),
            None => series.push(SweepSeries { label, points: vec![point] }),
        }
    }
    series.sort_by(|a, b| a.label.cmp(&b.label));
    let highlight = chosen.and_then(|c| {
        let label: String =
            c.iter().filter(|p| p.0 != xk).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
        let si = series.iter().position(|s| s.label == label)?;
        Some((si, xpos(&get(c, xk)), format!("chosen: {} ", setting_text(c))))
    });
    let seeds = table.rows.iter().map(|r| r.accs.len() + r.failed).max().unwrap_or(0);
    let mut title = format!("{scenario}, {method}: {eval} ACC after all tasks vs {xk} ({seeds} seeds; band = min-max)");
    if !failed.is_empty() {
        title.push_str(&format!("; failed: {}", failed.join(", ")));
    }
    Ok(SweepFigure {
        title,
        x_label: xk.to_string(),
        y_label: format!("{eval} ACC (%)"),
        categories,
        log_x,
        series,
        highlight,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_parses_and_expands_in_order() {
        let g = parse_grid(&["c=0.01,0.1".into(), "--lr=1e-4, 1e-3".into()]).unwrap();
        assert_eq!(g[1].0, "lr");
        let s = settings(&g);
        assert_eq!(s.len(), 4);
        assert_eq!(setting_text(&s[0]), "c=0.01 lr=1e-4");
        assert_eq!(setting_text(&s[3]), "c=0.1 lr=1e-3");
        assert_eq!(settings(&[]), vec![Vec::<(String, String)>::new()]);
    }

    #[test]
    fn bad_grids_are_refused() {
        for (g, want) in [
            (vec!["c"], "KEY=V1"),
            (vec!["=1,2"], "key is empty"),
            (vec!["c=1,,2"], "empty value"),
            (vec!["c=1,1"], "twice"),
            (vec!["c=1", "c=2"], "given twice"),
            (vec!["seed=1,2"], "--seeds"),
        ] {
            let g: Vec<String> = g.into_iter().map(String::from).collect();
            let e = parse_grid(&g).unwrap_err().to_string();
            assert!(e.contains(want), "{want} not in {e}");
        }
        assert!(check_run_args(&["--epochs".into(), "2".into()]).is_ok());
        assert!(check_run_args(&["--out=x".into()]).unwrap_err().to_string().contains("--out"));
    }

    #[test]
    fn ids_are_file_names() {
        let s: Setting = vec![("c".into(), "0.1".into()), ("optimizer".into(), "a b/c".into())];
        assert_eq!(job_id(Phase::Select, &s, 2), "select__c=0.1__optimizer=a_b_c__seed=2");
        assert_eq!(shell_quote("--c=0.1"), "--c=0.1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    fn rec(id: &str, phase: &str, c: &str, acc: Option<f64>) -> (String, Value) {
        let mut v = json!({"sweep": {"id": id, "phase": phase, "eval": "validation", "setting": [["c", c]]}});
        match acc {
            Some(a) => v["acc"] = json!(a),
            None => v["error"] = json!("diverged"),
        }
        (id.to_string(), v)
    }

    #[test]
    fn table_is_sorted_by_mean_acc_and_failures_go_last() {
        let runs: BTreeMap<String, Value> = [
            rec("a0", "select", "0.1", Some(0.90)),
            rec("a1", "select", "0.1", Some(0.92)),
            rec("b0", "select", "1", Some(0.97)),
            rec("b1", "select", "1", Some(0.95)),
            rec("c0", "select", "100", Some(0.99)),
            rec("c1", "select", "100", None),
            rec("t0", "test", "1", Some(0.5)),
        ]
        .into_iter()
        .collect();
        let t = summarize(&runs, &[]);
        let order: Vec<String> = t.rows.iter().map(|r| r.setting[0].1.clone()).collect();
        assert_eq!(order, ["1", "0.1", "100"]);
        assert!((t.rows[0].acc.unwrap() - 0.96).abs() < 1e-12);
        assert_eq!((t.rows[2].acc, t.rows[2].failed), (None, 1), "a setting with a diverged seed is never chosen");
        assert_eq!(t.rows[0].accs.len(), 2, "test-phase runs are not part of the selection table");
    }
}
