//! Checkpoints end to end, through the `engram` binary on the real MNIST (ENGRAM_DATA; a SKIP
//! line without it): a run killed with SIGKILL in the middle of a task, or in the middle of
//! writing a checkpoint, and resumed ends bit-identical to an uninterrupted run; Python's safetensors and NumPy read engram's tensors
//! exactly; damaged checkpoints and unusable locations are refused with clear messages;
//! `--init-from` starts new tasks from a trained model.

mod common;

use common::{engram, mnist_dir, text};

use engram_ckpt::{Checkpoint, Data};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn r_bits(p: &Path) -> Vec<Vec<u64>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).expect("output written")).unwrap();
    v["R"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap().to_bits()).collect())
        .collect()
}

/// split-mnist SI on 2,000 samples a task (10 epochs of 32 steps each: 1,600 steps).
const SPLIT_SI: [&str; 9] =
    ["run", "--scenario", "split-mnist", "--method", "si", "--samples-per-task", "2000", "--quiet", "--data-dir"];

/// The uninterrupted [`SPLIT_SI`] run the killed runs are compared with: its JSON, in `dir`.
fn uninterrupted_run(dir: &std::path::Path, data: &std::path::Path) -> std::path::PathBuf {
    let full = dir.join("full.json");
    let o = engram().args(SPLIT_SI).arg(data).arg("--out").arg(&full).output().unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    full
}

/// The acceptance test: SIGKILL in the middle of a task, `engram resume`, and the accuracy
/// matrix is identical to an uninterrupted run's, bit for bit.
#[test]
fn sigkill_in_the_middle_of_a_task_then_resume_is_bit_identical() {
    let Some(data) = mnist_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let full = uninterrupted_run(dir.path(), &data);

    let ck = dir.path().join("ckpt");
    let resumed = dir.path().join("resumed.json");
    let mut child = engram()
        .args(SPLIT_SI)
        .arg(&data)
        .args(["--checkpoint-every", "25", "--checkpoint-dir"])
        .arg(&ck)
        .arg("--out")
        .arg(&resumed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a mid-task checkpoint of task 2 or later, then kill without warning.
    let t0 = Instant::now();
    let killed_after = loop {
        let newest = engram_ckpt::latest(&ck).ok().flatten();
        if let Some(p) = newest.as_ref().and_then(|p| Checkpoint::read(p).ok().map(|c| (p.clone(), c))) {
            let (path, c) = p;
            if c.run["at_task_boundary"] == false && c.run["progress"]["phases_done"].as_u64() >= Some(1) {
                break path;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "no mid-task checkpoint appeared");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run was not killed");
    assert!(!resumed.exists(), "the killed run must not have finished");
    eprintln!("killed after {}", killed_after.display());

    let o = engram().args(["resume", "--quiet", "--data-dir"]).arg(&data).arg(&ck).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming si from") && err.contains("epoch"), "{err}");
    assert!(out.contains("ACC"), "{out}");
    assert_eq!(r_bits(&resumed), r_bits(&full), "resumed R differs from the uninterrupted run's");

    // Resuming a finished run repeats its result without training.
    let again = dir.path().join("again.json");
    let o = engram()
        .args(["resume", "--quiet", "--data-dir"])
        .arg(&data)
        .arg(&ck)
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(text(&o).1.contains("5/5 tasks done"), "{}", text(&o).1);
    assert_eq!(r_bits(&again), r_bits(&full));
}

/// Whether process `pid` has a checkpoint write under way in `ck` (its temporary directory
/// `.tmp-<name>-<pid>` exists).
fn write_under_way(ck: &Path, pid: u32) -> bool {
    let suffix = format!("-{pid}");
    std::fs::read_dir(ck).is_ok_and(|d| {
        d.filter_map(Result::ok).any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(".tmp-") && n.ends_with(&suffix)
        })
    })
}

/// SIGKILL while a checkpoint is being written (a checkpoint after every step, the kill sent as
/// soon as a write's temporary directory appears), three times over, each time resuming the
/// killed run: the half-written checkpoint is never read, and the run ends bit-identical to an
/// uninterrupted one.
#[test]
fn sigkill_during_a_checkpoint_write_then_resume_is_bit_identical() {
    let Some(data) = mnist_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let full = uninterrupted_run(dir.path(), &data);

    let ck = dir.path().join("ckpt");
    let resumed = dir.path().join("resumed.json");
    let mut hits = 0;
    for round in 0..3 {
        let mut cmd = engram();
        if round == 0 {
            cmd.args(SPLIT_SI).arg(&data).args(["--checkpoint-every", "1", "--checkpoint-dir"]).arg(&ck);
            cmd.arg("--out").arg(&resumed);
        } else {
            cmd.args(["resume", "--quiet", "--data-dir"]).arg(&data).arg(&ck);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // Let it train a while, then kill it the moment a write is under way.
        std::thread::sleep(Duration::from_millis(300 + 400 * round));
        let t0 = Instant::now();
        let complete = || engram_ckpt::latest(&ck).ok().flatten().is_some();
        let pid = child.id();
        while !complete() || !write_under_way(&ck, pid) {
            assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint write seen");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("round {round}: the run ended ({status}) before it could be killed");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().unwrap(); // SIGKILL on Unix
        assert!(!child.wait().unwrap().success(), "the run was not killed");
        // The write was cut: its temporary directory is left, and never read as a checkpoint.
        if write_under_way(&ck, pid) {
            hits += 1;
        }
        let newest = engram_ckpt::latest(&ck).unwrap().expect("a complete checkpoint");
        Checkpoint::read(&newest).expect("the newest complete checkpoint reads");
    }
    eprintln!("{hits} of 3 kills landed in the middle of a checkpoint write");
    assert!(hits >= 1, "no kill landed in the middle of a write");
    let o = engram().args(["resume", "--quiet", "--data-dir"]).arg(&data).arg(&ck).output().unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(r_bits(&resumed), r_bits(&full), "resumed R differs from the uninterrupted run's");
}

const PY: &str = r#"
import hashlib, json, sys
import numpy as np
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
out = {}
for name, a in t.items():
    flat = a.reshape(-1)
    out[name] = {
        "dtype": str(a.dtype), "shape": list(a.shape),
        "sha256": hashlib.sha256(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest(),
        "first": [float(x).hex() if a.dtype.kind == "f" else int(x) for x in flat[:5]],
        "sum": float(flat.astype(np.float64).sum()) if flat.size else 0.0,
    }
print(json.dumps(out))
"#;

fn python_with_safetensors() -> bool {
    Command::new("python3")
        .args(["-c", "import numpy, safetensors.numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A checkpoint read from Python with `safetensors.numpy` and NumPy: the same tensors, dtypes
/// and shapes, every byte equal (sha256), values equal to engram's.
#[test]
fn python_safetensors_and_numpy_read_the_same_tensors() {
    let Some(data) = mnist_dir() else { return };
    if !python_with_safetensors() {
        assert!(
            std::env::var_os("ENGRAM_REQUIRE_PYTHON").is_none(),
            "ENGRAM_REQUIRE_PYTHON is set but python3 cannot import numpy and safetensors"
        );
        eprintln!("SKIP: python3 with numpy and safetensors not found (pip install safetensors numpy)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ckpt");
    // GEM with a mid-task checkpoint: F32 and U32 tensors, 1-D and 2-D.
    let o = engram()
        .args(["run", "--scenario", "split-mnist", "--method", "gem", "--epochs", "1", "--samples-per-task", "300"])
        .args(["--memories", "20", "--quiet", "--checkpoint-every", "7", "--keep-checkpoints", "100", "--data-dir"])
        .arg(&data)
        .arg("--checkpoint-dir")
        .arg(&ck)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    let all = engram_ckpt::list(&ck).unwrap();
    let mid = all
        .iter()
        .find(|p| {
            let c = Checkpoint::read(p).unwrap();
            c.run["at_task_boundary"] == false && c.run["progress"]["phases_done"].as_u64() >= Some(1)
        })
        .expect("a mid-task checkpoint after task 1");
    let c = Checkpoint::read(mid).unwrap();
    for name in ["model.theta", "optimizer.m", "episodic.x", "episodic.y", "progress.order"] {
        assert!(c.tensors.contains_key(name), "{name} missing");
    }
    let o = Command::new("python3").args(["-c", PY]).arg(mid.join(engram_ckpt::TENSORS_FILE)).output().unwrap();
    assert!(o.status.success(), "python: {}", text(&o).1);
    let py: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let py = py.as_object().unwrap();
    assert_eq!(py.len(), c.tensors.len(), "python sees {:?}", py.keys().collect::<Vec<_>>());
    for (name, t) in &c.tensors {
        let p = &py[name];
        let (dtype, first, sum): (&str, Vec<serde_json::Value>, f64) = match &t.data {
            Data::F32(v) => (
                "float32",
                v.iter().take(5).map(|x| serde_json::json!(hexfloat(*x as f64))).collect(),
                v.iter().map(|&x| x as f64).sum(),
            ),
            Data::U32(v) => {
                ("uint32", v.iter().take(5).map(|&x| serde_json::json!(x)).collect(), v.iter().map(|&x| x as f64).sum())
            }
        };
        assert_eq!(p["dtype"], dtype, "{name}");
        assert_eq!(p["shape"], serde_json::json!(t.shape), "{name}");
        assert_eq!(p["sha256"], engram_ckpt::sha256_hex(&t.data.to_le_bytes()), "{name}: bytes differ");
        assert_eq!(p["first"], serde_json::Value::Array(first), "{name}: values differ");
        let psum = p["sum"].as_f64().unwrap();
        assert!((psum - sum).abs() <= 1e-9 * sum.abs().max(1.0), "{name}: sum {psum} vs {sum}");
    }
}

/// Python's `float.hex()` of a finite double.
fn hexfloat(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0x0.0p+0".into() } else { "0x0.0p+0".into() };
    }
    let bits = x.to_bits();
    let sign = if bits >> 63 == 1 { "-" } else { "" };
    let exp = ((bits >> 52) & 0x7ff) as i64;
    let mant = bits & ((1u64 << 52) - 1);
    let (lead, e) = if exp == 0 { (0, -1022) } else { (1, exp - 1023) };
    format!("{sign}0x{lead}.{mant:013x}p{}{e}", if e >= 0 { "+" } else { "" })
}

#[test]
fn hexfloat_matches_python() {
    // As printed by Python 3.11's float.hex().
    assert_eq!(hexfloat(1.0), "0x1.0000000000000p+0");
    assert_eq!(hexfloat(-0.1), "-0x1.999999999999ap-4");
    assert_eq!(hexfloat(3.0), "0x1.8000000000000p+1");
    assert_eq!(hexfloat(f32::MIN_POSITIVE as f64), "0x1.0000000000000p-126");
    assert_eq!(hexfloat(5e-324), "0x0.0000000000001p-1022");
}

/// Unusable locations and damaged checkpoints: clear errors, nothing half-loaded.
#[test]
fn bad_locations_and_damaged_checkpoints_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = engram()
        .args(["run", "--scenario", "split-mnist", "--method", "si", "--data-dir", "/nonexistent", "--checkpoint-dir"])
        .arg(&file)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is a file, not a directory"), "{err}");
    let o = engram()
        .args(["run", "--scenario", "split-mnist", "--method", "si", "--checkpoint-every", "5"])
        .output()
        .unwrap();
    assert!(text(&o).1.contains("--checkpoint-every needs --checkpoint-dir"), "{}", text(&o).1);
    let o = engram().arg("resume").arg(dir.path().join("nothing-here")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("does not exist"), "{}", text(&o).1);
    let o = engram().arg("inspect").arg(dir.path()).output().unwrap();
    assert!(text(&o).1.contains("no checkpoint in"), "{}", text(&o).1);

    let Some(data) = mnist_dir() else { return };
    let ck = dir.path().join("ckpt");
    let base = ["run", "--scenario", "split-mnist", "--method", "si", "--epochs", "1", "--samples-per-task", "400"];
    let o = engram()
        .args(base)
        .args(["--quiet", "--checkpoint-every", "3", "--data-dir"])
        .arg(&data)
        .arg("--checkpoint-dir")
        .arg(&ck)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    // The directory now holds a run: a second run there is refused.
    let o = engram()
        .args(base)
        .args(["--quiet", "--data-dir"])
        .arg(&data)
        .arg("--checkpoint-dir")
        .arg(&ck)
        .output()
        .unwrap();
    assert!(text(&o).1.contains("already holds checkpoints") && text(&o).1.contains("engram resume"), "{}", text(&o).1);
    let kept = engram_ckpt::list(&ck).unwrap();
    assert_eq!(kept.len(), 2, "--keep-checkpoints defaults to 2: {kept:?}");

    // inspect: the run, R so far and every tensor, verified.
    let o = engram().arg("inspect").arg(&ck).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    for s in ["method si", "5 task(s) done", "model.theta", "penalty.big_omega", "sha256 digests verified"] {
        assert!(out.contains(s), "inspect lacks {s:?}:\n{out}");
    }
    let o = engram().args(["inspect", "--json"]).arg(&kept[1]).output().unwrap();
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["format"], "engram-checkpoint");

    // A run record out of range (an accuracy of 2 in R), written with a valid digest: refused
    // before anything resumes, the field named, the older intact checkpoint suggested.
    let newest = kept[1].clone();
    let mut bad = Checkpoint::read(&newest).unwrap();
    bad.run["R"][0][0] = serde_json::json!(2.0);
    let name = newest.file_name().unwrap().to_str().unwrap().to_string();
    engram_ckpt::write_atomic(&ck, &name, &bad).unwrap();
    let o = engram().args(["resume", "--quiet", "--data-dir"]).arg(&data).arg(&ck).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("row 1 of R holds 2") && err.contains("[0, 1]"), "{err}");
    assert!(err.contains(&format!("engram resume {}", kept[0].display())), "no pointer to the older one: {err}");

    // Flip one byte inside `model.theta` (the first tensor in the file): refused, the tensor
    // named, the older checkpoint suggested.
    let tf = newest.join(engram_ckpt::TENSORS_FILE);
    let mut bytes = std::fs::read(&tf).unwrap();
    let n = bytes.len();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[header + 1000] ^= 0x40;
    std::fs::write(&tf, &bytes).unwrap();
    let o = engram().args(["resume", "--quiet", "--data-dir"]).arg(&data).arg(&ck).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("tensor `model.theta`") && err.contains("corrupted"), "{err}");
    assert!(err.contains(&kept[0].display().to_string()), "no hint of the older checkpoint: {err}");
    // Truncated: refused, a tensor named.
    std::fs::write(&tf, &bytes[..n - 1000]).unwrap();
    let o = engram().arg("inspect").arg(&newest).output().unwrap();
    let (_, err) = text(&o);
    assert!(err.contains("truncated") && err.contains("tensor `"), "{err}");

    // --init-from a mid-task checkpoint: refused with the reason.
    let ck2 = dir.path().join("ckpt2");
    let o = engram()
        .args(base)
        .args(["--quiet", "--checkpoint-every", "4", "--keep-checkpoints", "50", "--data-dir"])
        .arg(&data)
        .arg("--checkpoint-dir")
        .arg(&ck2)
        .output()
        .unwrap();
    assert!(o.status.success());
    let mid = engram_ckpt::list(&ck2)
        .unwrap()
        .into_iter()
        .find(|p| Checkpoint::read(p).unwrap().run["at_task_boundary"] == false)
        .unwrap();
    let o =
        engram().args(base).args(["--quiet", "--data-dir"]).arg(&data).arg("--init-from").arg(&mid).output().unwrap();
    assert!(text(&o).1.contains("middle of a task"), "{}", text(&o).1);
}

fn first_acc(p: &Path) -> f64 {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["R"][0][0].as_f64().unwrap()
}

/// `--init-from`: new tasks learned from a trained model. A model trained on plain MNIST, then
/// a new run of two steps on 100 images: from the trained model it keeps its accuracy; from
/// scratch the same two steps are far from it.
#[test]
fn init_from_starts_new_tasks_from_the_trained_model() {
    let Some(data) = mnist_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("trained");
    let o = engram()
        .args(["run", "--scenario", "permuted-mnist", "--tasks", "1", "--method", "si", "--epochs", "1"])
        .args(["--samples-per-task", "6000", "--quiet", "--data-dir"])
        .arg(&data)
        .arg("--checkpoint-dir")
        .arg(&ck)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    let new_run = |init: bool, out: &Path| {
        let mut c = engram();
        c.args(["run", "--scenario", "permuted-mnist", "--tasks", "2", "--seed", "1", "--method", "si"])
            .args(["--epochs", "1", "--samples-per-task", "100", "--batch", "50", "--quiet", "--data-dir"])
            .arg(&data)
            .arg("--out")
            .arg(out);
        if init {
            c.arg("--init-from").arg(&ck);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", text(&o).1);
        text(&o).1
    };
    let (with, without) = (dir.path().join("with.json"), dir.path().join("without.json"));
    let err = new_run(true, &with);
    assert!(err.contains("Omega and theta* carried over"), "{err}");
    new_run(false, &without);
    let (a, b) = (first_acc(&with), first_acc(&without));
    eprintln!("plain-MNIST accuracy after two steps: from the trained model {a:.4}, from scratch {b:.4}");
    assert!(a > 0.75, "from the trained model: {a}");
    assert!(a > b + 0.3, "from the trained model {a} vs from scratch {b}");
}
