//! The hostile-input suite (issue 17): cases generated from real checkpoints of short runs, each
//! handed to `engram resume` (and `engram inspect`), asserting a clean outcome: a refusal (exit
//! 1 with a message) or an acceptance (exit 0), never a panic, a signal or a hang.
//!
//! * Manifest fields: every value of the run record of a mid-task SI checkpoint and of a
//!   task-boundary GEM checkpoint is replaced, one at a time, by values chosen to hurt (0, -1,
//!   2^64-1, 1e300, a fraction, NaN's stand-in null, an empty array, a shortened array, a
//!   string, a flipped boolean).
//!   Cases are written with engram's own writer, so their run record carries a valid digest:
//!   they test the checks of values, not the digest.
//! * Digest: a value of the run record changed in manifest.json by hand (the digest left as it
//!   was): always refused.
//! * Files: the manifest or the tensors replaced by a FIFO, a folder, an empty file, a link to
//!   /dev/zero.
//!
//! Prints a table: category (the record's top-level field, or the file), cases, refused,
//! accepted, and the accepted cases' fields. Needs MNIST (ENGRAM_DATA; a SKIP line without it).
//! About two minutes on 2 cores.

mod common;

use common::{engram, map_parallel, mnist_dir, run_limited, text, Outcome};

use engram_ckpt::Checkpoint;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A short run's flags: 200 samples a task, 2 epochs, a checkpoint every 5 steps.
fn short_run(method: &str, scenario: &str) -> Vec<String> {
    let args = [
        "run",
        "--scenario",
        scenario,
        "--method",
        method,
        "--samples-per-task",
        "200",
        "--epochs",
        "2",
        "--checkpoint-every",
        "5",
        "--keep-checkpoints",
        "1000",
        "--quiet",
        "--no-verify",
    ];
    args.iter().map(|s| s.to_string()).collect()
}

/// One case: a checkpoint directory to hand to `resume` and `inspect`.
struct Case {
    category: String,
    label: String,
    dir: PathBuf,
}

/// Every leaf of `v` with its path (object keys and array indices).
fn leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                path.push(k.clone());
                leaves(x, path, out);
                path.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => {
            out.push(path.clone());
            // Arrays of arrays (R): each row, and the first element of each row.
            for (i, x) in a.iter().enumerate().take(3) {
                path.push(i.to_string());
                leaves(x, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k).expect("key"),
        Value::Array(a) => &mut a[k.parse::<usize>().expect("index")],
        _ => unreachable!("a leaf's path"),
    })
}

/// The hostile replacements of a value.
fn mutations(v: &Value) -> Vec<(String, Value)> {
    let j = |s: &str| serde_json::from_str::<Value>(s).expect("json");
    match v {
        Value::Number(_) => vec![
            ("0".into(), j("0")),
            ("-1".into(), j("-1")),
            ("2^64-1".into(), j("18446744073709551615")),
            ("1e300".into(), j("1e300")),
            ("0.5".into(), j("0.5")),
            ("null".into(), Value::Null),
        ],
        Value::Bool(b) => vec![("flipped".into(), Value::Bool(!b)), ("0".into(), j("0"))],
        Value::String(_) => vec![("empty".into(), j("\"\"")), ("other".into(), j("\"zzz\"")), ("1".into(), j("1"))],
        Value::Array(a) => {
            let mut short = a.clone();
            short.pop();
            let mut long = a.clone();
            long.push(a[a.len() - 1].clone());
            vec![
                ("empty".into(), j("[]")),
                ("shortened".into(), Value::Array(short)),
                ("lengthened".into(), Value::Array(long)),
            ]
        }
        Value::Null => vec![("0".into(), j("0")), ("[]".into(), j("[]"))],
        Value::Object(_) => vec![("{}".into(), j("{}"))],
    }
}

/// The newest checkpoint of `ck_dir` that satisfies `pick`.
fn pick_checkpoint(ck_dir: &Path, pick: impl Fn(&Value) -> bool) -> Checkpoint {
    let mut dirs = engram_ckpt::list(ck_dir).expect("checkpoints listed");
    dirs.reverse();
    dirs.iter().map(|d| Checkpoint::read(d).expect("a valid checkpoint")).find(|c| pick(&c.run)).expect("a match")
}

/// A run's checkpoints in `root/name`.
fn make_checkpoints(root: &Path, name: &str, data: &Path, method: &str, scenario: &str) -> PathBuf {
    let dir = root.join(name);
    let o = engram()
        .args(short_run(method, scenario))
        .arg("--data-dir")
        .arg(data)
        .arg("--checkpoint-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{name}: {}", text(&o).1);
    dir
}

/// Field cases of checkpoint `base` (written under `root`, named `prefix-N`).
fn field_cases(base: &Checkpoint, root: &Path, prefix: &str, cases: &mut Vec<Case>) {
    let mut paths = Vec::new();
    leaves(&base.run, &mut Vec::new(), &mut paths);
    for path in paths {
        let original = at(&mut base.run.clone(), &path).clone();
        for (what, value) in mutations(&original) {
            let mut ck = Checkpoint { run: base.run.clone(), tensors: base.tensors.clone() };
            *at(&mut ck.run, &path) = value;
            let name = format!("{prefix}-{}", cases.len());
            let dir = engram_ckpt::write_atomic(root, &name, &ck).expect("written");
            cases.push(Case {
                category: format!("{prefix} {}", path[0]),
                label: format!("{} = {what}", path.join(".")),
                dir,
            });
        }
    }
}

/// Digest cases: one value of the run record changed in manifest.json by hand, its digest left
/// as written (a flipped byte in a hyperparameter, or an edit that did not know of the digest).
fn digest_cases(base: &Checkpoint, root: &Path, cases: &mut Vec<Case>) {
    let mut paths = Vec::new();
    leaves(&base.run, &mut Vec::new(), &mut paths);
    for path in paths.iter().filter(|p| matches!(p[0].as_str(), "config" | "scenario" | "progress" | "optimizer_steps"))
    {
        let name = format!("digest-{}", cases.len());
        let dir = engram_ckpt::write_atomic(root, &name, base).expect("written");
        let mp = dir.join("manifest.json");
        let mut m: Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
        let v = at(&mut m["run"], path);
        *v = match v {
            Value::Number(n) if n.is_u64() => Value::from(n.as_u64().unwrap() ^ 1),
            Value::Number(n) => Value::from(n.as_f64().unwrap() * 1.5 + 0.25),
            Value::Bool(b) => Value::Bool(!*b),
            Value::String(s) => Value::String(format!("{s}x")),
            _ => continue,
        };
        std::fs::write(&mp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        cases.push(Case { category: "digest (manifest edited by hand)".into(), label: path.join("."), dir });
    }
}

/// File cases: the manifest or the tensors file replaced.
#[cfg(unix)]
fn file_cases(base: &Checkpoint, root: &Path, cases: &mut Vec<Case>) {
    for file in ["manifest.json", "tensors.safetensors"] {
        for kind in ["fifo", "folder", "empty", "link to /dev/zero"] {
            let name = format!("file-{}", cases.len());
            let dir = engram_ckpt::write_atomic(root, &name, base).expect("written");
            let p = dir.join(file);
            std::fs::remove_file(&p).expect("the file is there");
            match kind {
                "fifo" => {
                    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
                    // SAFETY: a valid NUL-terminated path.
                    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
                }
                "folder" => std::fs::create_dir(&p).unwrap(),
                "empty" => std::fs::write(&p, b"").unwrap(),
                _ => std::os::unix::fs::symlink("/dev/zero", &p).unwrap(),
            }
            cases.push(Case { category: format!("file {file}"), label: format!("{file}: {kind}"), dir });
        }
    }
}

#[test]
fn hostile_checkpoints_are_refused_or_accepted_cleanly() {
    let Some(data) = mnist_dir() else { return };
    let root = tempfile::tempdir().unwrap();
    let si = make_checkpoints(root.path(), "si", &data, "si", "split-mnist");
    let gem = make_checkpoints(root.path(), "gem", &data, "gem", "split-mnist");
    let mid =
        pick_checkpoint(&si, |r| r["at_task_boundary"] == false && r["progress"]["phases_done"].as_u64() >= Some(1));
    let boundary =
        pick_checkpoint(&gem, |r| r["at_task_boundary"] == true && r["progress"]["phases_done"].as_u64() >= Some(2));
    let cases_dir = root.path().join("cases");
    std::fs::create_dir(&cases_dir).unwrap();
    let mut cases = Vec::new();
    field_cases(&mid, &cases_dir, "si-mid-task", &mut cases);
    field_cases(&boundary, &cases_dir, "gem-boundary", &mut cases);
    digest_cases(&mid, &cases_dir, &mut cases);
    #[cfg(unix)]
    file_cases(&mid, &cases_dir, &mut cases);

    let results = map_parallel(&cases, |c| {
        let out = c.dir.with_extension("out.json");
        let mut resume = engram();
        resume.arg("resume").arg(&c.dir).args(["--quiet", "--no-verify", "--threads", "1", "--data-dir"]);
        resume.arg(&data).arg("--out").arg(&out);
        let r = run_limited(resume);
        let mut inspect = engram();
        inspect.arg("inspect").arg(&c.dir);
        (r, run_limited(inspect))
    });
    // category -> (cases, refused, accepted, accepted labels)
    let mut table: BTreeMap<String, (usize, usize, usize, Vec<String>)> = BTreeMap::new();
    let mut bad = Vec::new();
    for (c, (resume, inspect)) in cases.iter().zip(&results) {
        let row = table.entry(c.category.clone()).or_default();
        row.0 += 1;
        match resume {
            Outcome::Refused(_) => row.1 += 1,
            Outcome::Accepted => {
                row.2 += 1;
                row.3.push(c.label.clone());
            }
            Outcome::Bad(why) => bad.push(format!("resume, {}: {why}", c.label)),
        }
        if let Outcome::Bad(why) = inspect {
            bad.push(format!("inspect, {}: {why}", c.label));
        }
    }
    println!("{:<40} {:>6} {:>8} {:>9}  accepted", "category", "cases", "refused", "accepted");
    for (cat, (n, refused, accepted, labels)) in &table {
        println!("{cat:<40} {n:>6} {refused:>8} {accepted:>9}  {}", labels.join("; "));
    }
    println!("{} cases, {} bad", results.len(), bad.len());
    let (n, refused, _, _) = &table["digest (manifest edited by hand)"];
    assert_eq!(n, refused, "an edited run record was accepted despite its digest");
    assert!(results.len() >= 300, "only {} cases", results.len());
    assert!(bad.is_empty(), "{} cases ended badly:\n{}", bad.len(), bad.join("\n"));
}
