//! The machine-readable record of a run (`--out` JSON, `--csv`).

use crate::config::RunConfig;
use crate::run::RunResult;
use crate::scenario::{Scenario, ScenarioSpec};
use serde_json::{json, Value};

/// The JSON object `engram run --out` writes: scenario, setting, method, params (every
/// hyperparameter, defaults included), seed, R, b, acc, bwt, fwt, forgetting, wall_seconds,
/// per_task_seconds, peak_rss_bytes, and more.
pub fn run_json(spec: &ScenarioSpec, sc: &Scenario, cfg: &RunConfig, res: &RunResult, profile: bool) -> Value {
    let m = &res.metrics;
    let mut params = serde_json::to_value(cfg).expect("serializable config");
    if let Value::Object(p) = &mut params {
        p.insert("lr".into(), json!(cfg.optimizer.lr()));
        p.insert("optimizer".into(), json!(cfg.optimizer.name()));
        p.insert("tasks".into(), json!(sc.tasks.len()));
        p.insert("samples_per_task".into(), json!(spec.samples_per_task));
        p.insert("permute_first".into(), json!(spec.permute_first));
        p.insert("rotation_step".into(), json!(spec.rotation_step));
        p.insert("angles".into(), json!(spec.angles));
        p.insert("layer_sizes".into(), json!(crate::config::layer_sizes(sc, cfg)));
        p.insert("threads".into(), json!(rayon::current_num_threads()));
    }
    let mut v = json!({
        "scenario": sc.kind.name(),
        "setting": sc.setting.name(),
        "method": cfg.method.name(),
        "params": params,
        "seed": cfg.seed,
        "task_names": res.task_names,
        "R": res.r,
        "b": res.b,
        "acc": m.acc,
        "bwt": m.bwt,
        "bwt_convention": "mean over the T-1 earlier tasks; bwt_gem divides the same sum by T as GEM's code does",
        "bwt_gem": m.bwt_gem,
        "fwt": m.fwt,
        "forgetting": m.forgetting,
        "learning_accuracy": m.learning_accuracy,
        "acc_curve": m.acc_curve,
        "wall_seconds": res.wall_seconds,
        "per_task_seconds": res.per_task_seconds,
        "peak_rss_bytes": res.peak_rss_bytes,
        "strategy_state_bytes": res.strategy_state_bytes,
        "num_params": res.num_params,
        "device": res.device,
    });
    if let (Some(rt), Some(mt)) = (&res.r_train, &res.metrics_train) {
        v["R_train"] = json!(rt);
        v["acc_train"] = json!(mt.acc);
    }
    if let Some(d) = &res.diagnostics {
        v["diagnostics"] = Value::Array(d.iter().map(|t| t.json()).collect());
    }
    if profile {
        v["profile"] = serde_json::to_value(&res.profile).expect("serializable profile");
    }
    v
}

/// The accuracy matrix as CSV: a header `after,<task names...>`, then one line per training stage
/// (the first line, `init`, is the untrained network).
pub fn r_csv(res: &RunResult) -> String {
    let mut s = String::from("after");
    for n in &res.task_names {
        s.push(',');
        s.push_str(&csv_field(n));
    }
    s.push('\n');
    let mut line = |label: &str, row: &[f64]| {
        s.push_str(&csv_field(label));
        for v in row {
            s.push_str(&format!(",{v:.6}"));
        }
        s.push('\n');
    };
    line("init", &res.b);
    let joint = res.r.len() == 1 && res.task_names.len() > 1;
    for (i, row) in res.r.iter().enumerate() {
        line(if joint { "all" } else { &res.task_names[i] }, row);
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
