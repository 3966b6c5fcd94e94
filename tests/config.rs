//! End-to-end tests of `engram run --config FILE`. The training run reads MNIST through
//! ENGRAM_DATA and prints a SKIP line when it is not set.

mod common;

use common::{engram, mnist_dir, text};

use std::process::Output;

/// Runs `engram run --config FILE` with `toml` as FILE's content.
fn run_with(toml: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run.toml");
    std::fs::write(&p, toml).unwrap();
    engram().arg("run").arg("--config").arg(&p).args(extra).current_dir(dir.path()).output().unwrap()
}

/// An unknown key is refused before anything runs, naming the key and the closest one.
#[test]
fn unknown_key_is_refused_and_named() {
    let o = run_with("scenario = \"split-mnist\"\nmethod = \"si\"\nepochz = 3\n", &[]);
    let (out, err) = text(&o);
    assert!(matches!(o.status.code(), Some(1 | 2)), "exit {:?}; stderr: {err}", o.status.code());
    assert!(out.is_empty(), "nothing runs: {out}");
    assert!(err.contains("run.toml:3: unknown key `epochz` (did you mean `epochs`?)"), "{err}");
    assert!(err.contains("engram run --help"), "the message says where the keys are listed: {err}");
}

/// A bad value names the file, the line and the key, with clap's possible values.
#[test]
fn bad_value_names_the_key() {
    let o = run_with("scenario = \"split-mnist\"\nmethod = \"sii\"\n", &[]);
    let (_, err) = text(&o);
    assert!(matches!(o.status.code(), Some(1 | 2)), "exit {:?}; stderr: {err}", o.status.code());
    assert!(err.contains("run.toml:2: key `method`: invalid value 'sii'"), "{err}");
    assert!(err.contains("possible values"), "{err}");
    // a value of the wrong type
    let o = run_with("scenario = \"split-mnist\"\nmethod = \"si\"\nepochs = \"3\"\n", &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("key `epochs`: expected an integer"), "{err}");
    // a missing file
    let o = engram().args(["run", "--config", "/nonexistent/run.toml"]).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("/nonexistent/run.toml"), "{err}");
}

/// `engram run --help` documents --config; help wins over a bad file.
#[test]
fn help_explains_config() {
    let o = engram().args(["run", "--config", "/nonexistent/run.toml", "--help"]).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(out.contains("--config <FILE>") && out.contains("scenario = \"split-mnist\""), "{out}");
}

/// A tiny real run driven by a configuration file, one of its keys overridden on the command
/// line: the JSON output shows both took effect.
#[test]
fn config_drives_a_real_run() {
    let Some(data) = mnist_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let cfg = format!(
        "# a tiny Split MNIST run\n\
         scenario = \"split-mnist\"\n\
         method = \"finetune\"\n\
         epochs = 1\n\
         samples_per_task = 200\n\
         batch = 32\n\
         hidden = 64\n\
         reset-optimizer = false\n\
         lr = 0.002\n\
         seed = 3\n\
         quiet = true\n\
         data-dir = {:?}\n\
         out = {:?}\n",
        data.display().to_string(),
        out.display().to_string()
    );
    let o = run_with(&cfg, &["--seed", "7", "--hidden=32"]);
    let (stdout, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout: {stdout}\nstderr: {err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let p = &v["params"];
    assert_eq!(v["scenario"], "split-mnist");
    assert_eq!(v["method"], "finetune");
    assert_eq!(p["epochs"], 1, "{p}");
    assert_eq!(p["samples_per_task"], 200, "{p}");
    assert_eq!(p["batch"], 32, "{p}");
    assert_eq!(p["reset_optimizer"], false, "{p}");
    assert!((p["lr"].as_f64().unwrap() - 0.002).abs() < 1e-6, "{p}");
    // overridden on the command line
    assert_eq!(v["seed"], 7, "the command line's --seed wins: {v}");
    assert_eq!(p["hidden"], 32, "the command line's --hidden wins: {p}");
    assert!(!err.contains("after task"), "quiet = true from the file: {err}");
}
