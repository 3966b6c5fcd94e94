//! `engram reproduce NAME`: a published protocol, run exactly, over several seeds, with our mean
//! and spread printed next to the published figure.

use crate::common::{write_json_atomic, ComputeArgs, DataArgs, LoadedMnist};
use crate::on_device;
use crate::presets::{self, Preset};
use crate::session::{execute, print_result, Device};
use anyhow::{bail, Context, Result};
use clap::Args;
use engram_cl::config::RunConfig;
use engram_cl::output;
use engram_cl::scenario::ScenarioSpec;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `engram reproduce`.
#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// Which published protocol (crates/cli/src/presets.toml lists each one's runs and figures).
    #[arg(value_parser = presets::parser(), value_name = "PRESET")]
    preset: String,
    /// Number of seeds (0, 1, ..., N-1); the summary gives mean and standard deviation.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Also measure training-set accuracy (the SI notebook's published figure is on the
    /// training set).
    #[arg(long)]
    eval_train: bool,
    /// Print each run's full accuracy matrix, not only the summary.
    #[arg(long)]
    verbose: bool,
    /// Write every run and the summary as JSON.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    pub(crate) compute: ComputeArgs,
}

/// One configuration of the preset, resolved.
struct Job {
    label: String,
    spec: ScenarioSpec,
    cfg: RunConfig,
    published: &'static [presets::Published],
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// Runs `engram reproduce`.
pub fn run(a: ReproduceArgs) -> Result<()> {
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    crate::preflight::check_output_files([("--out", a.out.as_deref())])?;
    let device = a.compute.device()?;
    let preset: &Preset = presets::find(&a.preset).with_context(|| format!("no preset {:?}", a.preset))?;
    let name = preset.name.clone();
    let jobs: Vec<Job> = preset
        .job
        .iter()
        .map(|j| {
            let (spec, cfg) = j.resolve(0, a.eval_train)?;
            Ok(Job { label: j.label.clone(), spec, cfg, published: &j.published })
        })
        .collect::<Result<_>>()?;
    let shared = LoadedMnist::load(&a.data)?;
    let total_runs = jobs.len() as u64 * a.seeds;
    // Expected time, from a short calibration of each job's training step.
    // A job whose scenario cannot be built is left out here; its runs fail and are reported.
    let mut expected = 0.0;
    for j in &jobs {
        if let Ok(sc) = shared.scenario(&j.spec) {
            let secs = on_device!(&device, be => engram_cl::estimate::estimate_seconds(be, &sc, &j.cfg, 5))?;
            expected += secs * a.seeds as f64;
        }
    }
    eprintln!(
        "engram reproduce {name}: {} configuration(s) x {} seed(s) = {total_runs} run(s); expected time on this machine about {}",
        jobs.len(),
        a.seeds,
        human(expected)
    );
    let t0 = Instant::now();
    let mut runs_json = Vec::new();
    let mut results: Vec<Vec<serde_json::Value>> = vec![Vec::new(); jobs.len()];
    let mut times: Vec<Vec<(f64, engram_cl::state::Profile)>> = vec![Vec::new(); jobs.len()];
    // Runs that failed (an error or a panic), per job: (seed, message). The others go on.
    let mut failures: Vec<Vec<(u64, String)>> = vec![Vec::new(); jobs.len()];
    for seed in 0..a.seeds {
        for (ji, j) in jobs.iter().enumerate() {
            let mut spec = j.spec.clone();
            spec.seed = seed;
            let mut cfg = j.cfg.clone();
            cfg.seed = seed;
            let label = format!("[{} seed {seed}] ", j.label);
            let (sc, res) = match run_one(&device, &shared, &spec, &cfg, a.quiet, &label) {
                Ok(x) => x,
                Err(e) => {
                    let msg = format!("{e:#}");
                    eprintln!("{label}FAILED: {msg}");
                    runs_json.push(json!({
                        "label": j.label, "seed": seed, "method": cfg.method.name(), "failed": true, "error": msg,
                    }));
                    failures[ji].push((seed, msg));
                    continue;
                }
            };
            if a.verbose {
                print_result(&sc, &cfg, &res, false);
            }
            let mut v = output::run_json(&spec, &sc, &cfg, &res, false);
            v["label"] = json!(j.label);
            if res.r.last().map(Vec::len) == Some(2) {
                let last = res.r.last().expect("a row");
                v["task_a"] = json!(last[0]);
                v["task_b"] = json!(last[1]);
            }
            eprintln!("{label}ACC {:.2}% in {:.0} s", 100.0 * res.metrics.acc, res.wall_seconds);
            times[ji].push((res.wall_seconds, res.profile.clone()));
            results[ji].push(v.clone());
            runs_json.push(v);
        }
    }
    // Summary: every metric with a published figure, plus ACC, BWT and forgetting.
    let mut summary = Vec::new();
    println!();
    println!("engram reproduce {name}: {} seed(s), test-set figures unless marked train", a.seeds);
    println!(
        "{:<24} {:<10} {:>16} {:>10}  source of the published figure",
        "method", "metric", "ours (mean ± sd)", "published"
    );
    for ((j, runs), failed) in jobs.iter().zip(&results).zip(&failures) {
        if !failed.is_empty() {
            println!(
                "{:<24} {:<10} {:>16} {:>10}  {}",
                j.label,
                "FAILED",
                format!("{} of {} runs", failed.len(), failed.len() + runs.len()),
                "",
                failed.iter().map(|(s, e)| format!("seed {s}: {e}")).collect::<Vec<_>>().join("; ")
            );
            summary.push(json!({
                "method": j.label, "failed_runs": failed.len(), "n": runs.len(),
                "errors": failed.iter().map(|(s, e)| json!({"seed": s, "error": e})).collect::<Vec<_>>(),
            }));
        }
        let mut metrics: Vec<&str> = vec!["acc", "bwt", "forgetting"];
        if j.cfg.method.is_episodic() || preset.gem_metrics {
            metrics.extend(["bwt_gem", "fwt"]);
        }
        if a.eval_train {
            metrics.push("acc_train");
        }
        for pb in j.published {
            if !metrics.contains(&pb.metric.as_str()) {
                metrics.push(&pb.metric);
            }
        }
        for metric in metrics {
            let xs: Vec<f64> = runs.iter().filter_map(|r| r.get(metric).and_then(|v| v.as_f64())).collect();
            if xs.is_empty() {
                continue;
            }
            let (m, s) = mean_std(&xs);
            let pubv = j.published.iter().find(|p| p.metric == metric && p.value.is_finite());
            println!(
                "{:<24} {:<10} {:>16} {:>10}  {}",
                j.label,
                metric,
                format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * s),
                pubv.map_or("-".into(), |p| format!("{:.2}", 100.0 * p.value)),
                pubv.map_or("", |p| p.note.as_str())
            );
            // Further published figures for the same metric (e.g. the official code and the
            // paper), one line each, side by side with ours above.
            for other in j.published.iter().filter(|p| p.metric == metric && p.value.is_finite()).skip(1) {
                println!(
                    "{:<24} {:<10} {:>16} {:>10}  {}",
                    "",
                    "",
                    "",
                    format!("{:.2}", 100.0 * other.value),
                    other.note
                );
            }
            summary.push(json!({
                "method": j.label, "metric": metric, "ours_mean": m, "ours_std": s, "n": xs.len(),
                "published": pubv.map(|p| p.value), "published_note": pubv.map(|p| p.note.as_str()),
            }));
        }
    }
    // Where the time went, mean over seeds (GEM's acceptance figure is its training time and
    // the split between memory gradients, projection and the rest).
    println!();
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9}",
        "time per run (s)", "wall", "training", "memory g", "projection", "evaluation", "other"
    );
    for (j, ts) in jobs.iter().zip(&times) {
        if ts.is_empty() {
            println!("{:<24} {:>9}", j.label, "failed");
            continue;
        }
        let n = ts.len() as f64;
        let mean = |f: &dyn Fn(&(f64, engram_cl::state::Profile)) -> f64| ts.iter().map(f).sum::<f64>() / n;
        let wall = mean(&|t| t.0);
        let eval = mean(&|t| t.1.evaluation);
        let imp = mean(&|t| t.1.importance);
        let memg = mean(&|t| t.1.memory_gradients);
        let proj = mean(&|t| t.1.projection);
        let training = wall - eval - imp;
        println!(
            "{:<24} {:>9.1} {:>9.1} {:>9.1} {:>11.1} {:>11.1} {:>9.1}",
            j.label,
            wall,
            training,
            memg,
            proj,
            eval,
            training - memg - proj
        );
    }
    println!("(training = wall - evaluation - end-of-task importance; other = training - memory g - projection)");
    println!("total time {}", human(t0.elapsed().as_secs_f64()));
    if let Some(path) = &a.out {
        write_json_atomic(path, &json!({ "preset": name, "seeds": a.seeds, "runs": runs_json, "summary": summary }))?;
        println!("wrote {}", path.display());
    }
    let failed: usize = failures.iter().map(Vec::len).sum();
    if failed > 0 {
        bail!("{failed} of {total_runs} run(s) failed (reported above; the others completed)");
    }
    Ok(())
}

/// Builds the scenario and trains one run; an error or a panic comes back as an error, so that
/// `reproduce` can report the run as failed and go on with the others.
fn run_one(
    device: &Device,
    shared: &LoadedMnist,
    spec: &ScenarioSpec,
    cfg: &RunConfig,
    quiet: bool,
    label: &str,
) -> Result<(engram_cl::scenario::Scenario, engram_cl::run::RunResult)> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<_> {
        let sc = shared.scenario(spec)?;
        let res = execute(device, &sc, cfg, quiet, label)?;
        Ok((sc, res))
    }));
    match attempt {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            bail!("panicked: {msg}")
        }
    }
}

fn human(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A tiny MNIST stand-in: each digit a bright band of rows, plus noise.
    fn fake(n: usize) -> Arc<engram_mnist::Split> {
        let dim = 784;
        let images = (0..n * dim)
            .map(|k| {
                let (i, row) = (k / dim, (k % dim) / 28);
                let d = i % 10;
                if row >= 2 + 2 * d && row < 4 + 2 * d {
                    0.9
                } else {
                    0.05 * ((k * 7919 % 13) as f32 / 13.0)
                }
            })
            .collect();
        Arc::new(engram_mnist::Split { n, dim, images, labels: (0..n).map(|i| (i % 10) as u8).collect() })
    }

    /// `run_one` turns each kind of failure into an error naming it (the run loop reports it and
    /// goes on) and passes a good run through.
    #[test]
    fn run_one_reports_failures_as_errors() {
        let shared = LoadedMnist { train: fake(200), test: fake(50) };
        let (mut spec, cfg) = presets::find("gem-permuted-mnist").unwrap().job[0].resolve(0, false).unwrap();
        spec.tasks = 2;
        spec.samples_per_task = Some(50);
        let device = crate::session::Device::open(crate::common::DeviceSpec::Cpu).unwrap();
        let ok = run_one(&device, &shared, &spec, &cfg, true, "");
        assert!(ok.is_ok(), "{:?}", ok.err());
        // Divergence (an error from the run).
        let mut diverging = cfg.clone();
        diverging.optimizer = engram_si::Optimizer::Sgd { lr: 1e30 };
        let Err(e) = run_one(&device, &shared, &spec, &diverging, true, "") else { panic!("diverges") };
        assert!(format!("{e:#}").contains("NaN"), "{e:#}");
        // A scenario that cannot be built.
        let bad = ScenarioSpec { tasks: 0, ..spec.clone() };
        let Err(e) = run_one(&device, &shared, &bad, &cfg, true, "") else { panic!("no task") };
        assert!(format!("{e:#}").contains("at least one task"), "{e:#}");
    }
}
