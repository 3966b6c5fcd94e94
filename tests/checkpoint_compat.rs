//! Checkpoints written before the run was reshaped for any backend (issue 13) still load and
//! resume. The fixtures in tests/fixtures/checkpoints-before-redesign/ were written by the
//! `engram` binary of commit 6d1ca04 (layout version 1) with these runs (784-8-10 networks, 100
//! samples per task, so that they are small):
//!
//! ```text
//! si:   engram run --scenario split-mnist --method si --epochs 2 --hidden 8 --layers 1 \
//!           --samples-per-task 100 --checkpoint-dir si --checkpoint-every 7
//! gem:  engram run --scenario rotated-mnist --method gem --tasks 3 --memories 20 --hidden 8 \
//!           --layers 1 --samples-per-task 100 --checkpoint-dir gem --checkpoint-every 13
//! agem: engram run --scenario split-mnist --method agem --epochs 1 --memories 20 --hidden 8 \
//!           --layers 1 --samples-per-task 100 --checkpoint-dir agem --checkpoint-every 3
//! ```
//!
//! and `uninterrupted.json` holds R of the same runs without interruption, from that binary.

mod common;

use common::{engram, mnist_dir, read_json, text};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints-before-redesign")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Resumes a copy of the fixture `name` (its checkpoint directory is a fresh temporary one, where
/// the resumed run writes its own checkpoints) and returns the run's JSON.
fn resume(data: &Path, name: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("run").join(name);
    copy_dir(&fixtures().join(name), &ck);
    let out = dir.path().join("out.json");
    let o = engram()
        .arg("resume")
        .arg(&ck)
        .args(["--quiet", "--data-dir"])
        .arg(data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(o.status.success(), "resuming the fixture {name} failed: {err}");
    read_json(&out)
}

/// A fresh uninterrupted run of this binary.
fn fresh(data: &Path, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let o = engram()
        .arg("run")
        .args(args)
        .args(["--hidden", "8", "--layers", "1", "--samples-per-task", "100", "--quiet", "--data-dir"])
        .arg(data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    read_json(&out)
}

fn r_bits(v: &Value) -> Vec<Vec<u64>> {
    v.as_array()
        .expect("R is an array")
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap().to_bits()).collect())
        .collect()
}

fn recorded(method: &str) -> Value {
    read_json(&fixtures().join("uninterrupted.json"))[method].clone()
}

/// SI, in the middle of task 4: the resumed run's R is the old binary's uninterrupted R, bit for bit.
#[test]
fn si_checkpoint_from_before_the_redesign_resumes_bit_identically() {
    let Some(data) = mnist_dir() else { return };
    let got = resume(&data, "si-mid-task");
    assert_eq!(r_bits(&got["R"]), r_bits(&recorded("si")["R"]), "R after resuming the old SI checkpoint");
    assert_eq!(got["b"], recorded("si")["b"]);
}

/// GEM and A-GEM at the end of task 1 (the memory of task 1 stored, no memory gradient taken yet):
/// resuming gives this binary's uninterrupted run, bit for bit.
#[test]
fn episodic_checkpoints_at_a_task_boundary_resume_to_this_binarys_run() {
    let Some(data) = mnist_dir() else { return };
    let cases: [(&str, &[&str]); 2] = [
        ("gem-task-boundary", &["--scenario", "rotated-mnist", "--method", "gem", "--tasks", "3", "--memories", "20"]),
        ("agem-task-boundary", &["--scenario", "split-mnist", "--method", "agem", "--epochs", "1", "--memories", "20"]),
    ];
    for (name, args) in cases {
        let got = resume(&data, name);
        let want = fresh(&data, args);
        assert_eq!(r_bits(&got["R"]), r_bits(&want["R"]), "{name}: resumed vs uninterrupted R");
    }
}

/// GEM and A-GEM in the middle of a task, with a finished task in memory: they load and run to the
/// end. R matches the old binary's uninterrupted run to within the rounding of the memory
/// gradients' arithmetic (see the README's note on the GEM memory gradients).
#[test]
fn episodic_checkpoints_in_the_middle_of_a_task_resume() {
    let Some(data) = mnist_dir() else { return };
    for (name, method, tasks) in [("gem-mid-task", "gem", 3), ("agem-mid-task", "agem", 5)] {
        let got = resume(&data, name);
        let want = recorded(method);
        let r = r_bits(&got["R"]);
        assert_eq!(r.len(), tasks, "{name}: a row of R per task");
        let acc = got["acc"].as_f64().unwrap();
        let old = want["acc"].as_f64().unwrap();
        assert!((acc - old).abs() <= 0.05, "{name}: ACC {acc} after resuming, {old} uninterrupted before the redesign");
    }
}
