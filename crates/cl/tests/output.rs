//! output::run_json, output::r_csv and the report tables, on a tiny synthetic run.

mod common;

use common::{cfg, run, split_scenario};
use engram_cl::config::RunConfig;
use engram_cl::methods::Method;
use engram_cl::output::{r_csv, run_json};
use engram_cl::report;
use engram_cl::run::RunResult;
use engram_cl::scenario::{Scenario, ScenarioKind, ScenarioSpec};
use serde_json::Value;

fn small_run(method: Method, tasks: usize) -> (ScenarioSpec, Scenario, RunConfig, RunResult) {
    let sc = split_scenario(tasks, 60, 30);
    let c = RunConfig { epochs: 1, ..cfg(method) };
    let res = run(&sc, &c, |_| {}).unwrap();
    (ScenarioSpec::new(ScenarioKind::SplitMnist), sc, c, res)
}

/// The JSON record holds every documented key, with values matching the run and config;
/// "profile" appears only when asked for.
#[test]
fn run_json_has_the_documented_keys() {
    let (spec, sc, c, res) = small_run(Method::Si, 3);
    let v = run_json(&spec, &sc, &c, &res, false);
    for key in [
        "scenario",
        "setting",
        "method",
        "params",
        "seed",
        "R",
        "b",
        "acc",
        "bwt",
        "bwt_gem",
        "fwt",
        "forgetting",
        "learning_accuracy",
        "acc_curve",
        "wall_seconds",
        "per_task_seconds",
        "peak_rss_bytes",
        "strategy_state_bytes",
        "num_params",
        "task_names",
    ] {
        assert!(v.get(key).is_some(), "missing key {key}");
    }
    assert!(v.get("profile").is_none(), "profile only when asked");
    assert!(v.get("R_train").is_none(), "no training matrix unless asked");
    assert_eq!(v["scenario"], "split-mnist");
    assert_eq!(v["setting"], "task");
    assert_eq!(v["method"], "si");
    assert_eq!(v["seed"], c.seed);
    assert_eq!(v["R"], serde_json::to_value(&res.r).unwrap());
    assert_eq!(v["b"], serde_json::to_value(&res.b).unwrap());
    assert_eq!(v["acc"].as_f64().unwrap(), res.metrics.acc);
    assert_eq!(v["bwt"].as_f64(), res.metrics.bwt);
    assert_eq!(v["fwt"].as_f64(), res.metrics.fwt);
    assert_eq!(v["forgetting"].as_f64(), res.metrics.forgetting);
    assert_eq!(v["per_task_seconds"].as_array().unwrap().len(), 3);
    let p = &v["params"];
    for key in [
        "lr",
        "optimizer",
        "epochs",
        "batch",
        "hidden",
        "layers",
        "seed",
        "c",
        "strength",
        "xi",
        "method",
        "zero_output",
        "init",
        "reset_optimizer",
        "si_grad",
        "si_relu",
        "fisher",
        "ewc_mode",
        "gamma",
        "importance_samples",
        "tasks",
        "samples_per_task",
        "layer_sizes",
        "threads",
    ] {
        assert!(p.get(key).is_some(), "params lacks {key}");
    }
    assert_eq!(p["optimizer"], "adam");
    assert_eq!(p["lr"].as_f64().unwrap(), c.optimizer.lr() as f64);
    assert_eq!((p["epochs"].as_u64(), p["batch"].as_u64(), p["hidden"].as_u64()), (Some(1), Some(16), Some(16)));
    assert_eq!(p["layers"], 1);
    assert_eq!(p["c"].as_f64().unwrap(), c.c as f64);
    assert_eq!(p["xi"].as_f64().unwrap(), c.xi as f64);
    assert_eq!(p["tasks"], 3);
    assert_eq!(p["layer_sizes"], serde_json::json!([784, 16, 10]));
    assert_eq!(p["method"], "si");
    assert_eq!(p["si_relu"], "official");

    let with = run_json(&spec, &sc, &c, &res, true);
    let prof = with.get("profile").expect("profile when asked");
    for key in ["forward", "backward", "consolidation_step", "importance", "evaluation", "data"] {
        assert!(prof[key].as_f64().is_some_and(|s| s >= 0.0), "profile.{key}");
    }
    // Round trip through text.
    let text = serde_json::to_string_pretty(&with).unwrap();
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["R"], with["R"]);
}

/// SGD is written as "sgd"; a training matrix appears when it was measured.
#[test]
fn run_json_sgd_and_training_matrix() {
    let sc = split_scenario(2, 60, 30);
    let c = RunConfig {
        epochs: 1,
        eval_train: true,
        optimizer: engram_si::Optimizer::Sgd { lr: 0.05 },
        ..cfg(Method::Finetune)
    };
    let res = run(&sc, &c, |_| {}).unwrap();
    let v = run_json(&ScenarioSpec::new(ScenarioKind::SplitMnist), &sc, &c, &res, false);
    assert_eq!(v["params"]["optimizer"], "sgd");
    assert_eq!(v["params"]["lr"].as_f64().unwrap(), 0.05f32 as f64);
    assert_eq!(v["R_train"].as_array().unwrap().len(), 2);
    assert!(v["acc_train"].is_number());
}

/// CSV: a header `after,<names>`, an `init` line (b), then one line per task: T + 2 lines, each
/// with T + 1 fields; names with commas are quoted; joint training has a single `all` line.
#[test]
fn r_csv_layout() {
    let (_, _, _, mut res) = small_run(Method::L2, 3);
    let csv = r_csv(&res);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3 + 2);
    assert_eq!(lines[0], "after,0/1,2/3,4/5");
    assert!(lines[1].starts_with("init,"));
    assert_eq!(lines[2].split(',').next(), Some("0/1"));
    for (i, l) in lines.iter().enumerate().skip(1) {
        let fields: Vec<&str> = l.split(',').collect();
        assert_eq!(fields.len(), 4, "line {i}: {l}");
        let row = if i == 1 { &res.b } else { &res.r[i - 2] };
        for (f, v) in fields[1..].iter().zip(row) {
            assert!((f.parse::<f64>().unwrap() - v).abs() <= 5e-7, "line {i}: {f} vs {v}");
        }
    }
    res.task_names[1] = "a,\"b\"".into();
    assert!(r_csv(&res).lines().next().unwrap().contains(",\"a,\"\"b\"\"\","));

    let (_, _, _, joint) = small_run(Method::Joint, 3);
    let lines: Vec<String> = r_csv(&joint).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[2].starts_with("all,"));
}

/// The human-readable matrix has a line per stage and the summary states the BWT conventions.
#[test]
fn report_tables() {
    let (_, _, _, res) = small_run(Method::Si, 3);
    let m = report::matrix("R", &res.task_names, &res.r, Some(&res.b));
    assert_eq!(m.lines().count(), 2 + 1 + 3, "title, header, init, 3 rows:\n{m}");
    let s = report::summary(&res.metrics);
    for part in ["ACC", "BWT (mean over the T-1 earlier tasks)", "GEM", "FWT", "forgetting", "learning accuracy"] {
        assert!(s.contains(part), "{part} missing:\n{s}");
    }
    let (_, _, _, joint) = small_run(Method::Joint, 3);
    let m = report::matrix("R", &joint.task_names, &joint.r, Some(&joint.b));
    assert!(m.lines().last().unwrap().trim_start().starts_with("all"));
    assert!(report::summary(&joint.metrics).contains("BWT"));
}
