//! Running a sweep's jobs: each run's file, the check that skips a finished run, running jobs
//! side by side on the cores, and the commands that run them elsewhere.

use super::*;

/// What a run file records about the configuration: a rerun skips a run only when this matches.
pub(super) fn fingerprint(job: &Job, spec: &SweepSpec) -> Result<Value> {
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

pub(super) fn run_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("runs").join(format!("{id}.json"))
}

/// The stored result of `job`, if its file exists and matches the configuration.
pub(super) fn existing(dir: &Path, job: &Job, fp: &Value) -> Result<Option<Value>> {
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

pub(super) fn read_json(p: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))
}

/// Runs one job (in the calling thread's rayon pool) and returns its record.
pub(super) fn execute_job(shared: &LoadedMnist, spec: &SweepSpec, job: &Job, fp: &Value) -> Result<Value> {
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
    let device = Device::open(spec.device)?;
    match execute(&device, &sc, &cfg, true, "") {
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

/// Runs `jobs` with `n_jobs` whole runs side by side; skips those already in `dir`.
pub(super) fn run_jobs(
    shared: &LoadedMnist,
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

pub(super) fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./=:,+-@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// One command line per job: this process's arguments without --emit-jobs/--jobs/--only/--out,
/// plus `--only ID --jobs 1 --out DIR`.
pub(super) fn job_commands(jobs: &[Job], dir: &Path) -> Vec<String> {
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
