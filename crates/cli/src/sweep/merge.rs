//! Gathering a sweep's runs: the per-setting table, the choice, the summary and the figure.

use super::*;

/// Every run file of `dir`, by id.
pub(super) fn collect_runs(dir: &Path) -> Result<BTreeMap<String, Value>> {
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

pub(super) fn setting_of(v: &Value) -> Setting {
    v.pointer("/sweep/setting")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter().filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.as_str()?.to_string()))).collect()
        })
        .unwrap_or_default()
}

pub(super) fn phase_of(v: &Value) -> &str {
    v.pointer("/sweep/phase").and_then(Value::as_str).unwrap_or("")
}

pub(super) struct Row {
    pub(super) setting: Setting,
    pub(super) accs: Vec<f64>,
    pub(super) failed: usize,
    pub(super) acc: Option<f64>,
    pub(super) sd: f64,
    pub(super) bwt: Option<f64>,
    pub(super) secs: Option<f64>,
}

pub(super) struct Table {
    pub(super) rows: Vec<Row>,
}

pub(super) fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// The selection table: one row per setting, best mean ACC first, failed settings last.
/// `only`: restrict to these jobs' settings (a sweep run), or every selection run (a merge).
pub(super) fn summarize(runs: &BTreeMap<String, Value>, only: &[Job]) -> Table {
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
pub(super) struct MergeSummary {
    pub(super) chosen: Option<Setting>,
}

/// Gathers `dir`, prints the table, writes results.jsonl, summary.json and the figure.
pub(super) fn merge(dir: &Path, x: Option<&str>, figure: &Path, to_stderr: bool) -> Result<MergeSummary> {
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
pub(super) fn sweep_figure(
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
