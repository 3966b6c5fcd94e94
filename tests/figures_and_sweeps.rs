//! End-to-end tests of `engram plot`, `engram run --plot`, `engram sweep` and `engram explain-si`.
//! The sweep tests that train read MNIST through ENGRAM_DATA and print a SKIP line without it.

mod common;

use common::{engram, mnist_dir, text};

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A run file as `engram run --out` writes it (the fields a figure reads).
fn run_file(dir: &Path, name: &str, method: &str, c: f64, last_row: [f64; 3]) -> PathBuf {
    let v = json!({
        "scenario": "split-mnist", "setting": "task", "method": method, "seed": 0,
        "params": {"strength": c, "xi": 0.001, "lr": 0.001, "epochs": 10, "threads": 2},
        "task_names": ["0/1", "2/3", "4/5"],
        "R": [[0.999, 0.5, 0.48], [0.95, 0.99, 0.52], last_row],
        "b": [0.46, 0.5, 0.52],
        "acc": last_row.iter().sum::<f64>() / 3.0,
    });
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    p
}

/// Width and height from a PNG's IHDR chunk (after checking the signature).
fn png_size(p: &Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&b[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// `engram plot` overlays two runs into a valid PNG of the documented size, and into an SVG
/// of the same size that names the runs in its legend.
#[test]
fn plot_writes_png_and_svg_of_the_expected_size() {
    let tmp = tempfile::tempdir().unwrap();
    let a = run_file(tmp.path(), "ft.json", "finetune", 0.0, [0.7, 0.8, 0.99]);
    let b = run_file(tmp.path(), "si.json", "si", 1.0, [0.98, 0.97, 0.99]);
    let png = tmp.path().join("fig.png");
    let o = engram().arg("plot").arg(&a).arg(&b).arg("--out").arg(&png).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let want = engram_plot::runs_figure_size(3, 2);
    assert_eq!(png_size(&png), want);
    assert!(out.contains(&format!("{} x {}", want.0, want.1)), "{out}");
    // A PNG of that size that is not blank: the encoder compresses a white page to almost nothing.
    assert!(std::fs::metadata(&png).unwrap().len() > 20_000);

    let svg = tmp.path().join("fig.svg");
    let o = engram().arg("plot").arg(&a).arg(&b).arg("--out").arg(&svg).output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<svg"), "{}", &s[..60.min(s.len())]);
    assert!(s.contains(&format!("width=\"{}\"", want.0)) && s.contains(&format!("height=\"{}\"", want.1)));
    assert!(s.contains("si c=1 ξ=0.001") && s.contains("finetune"), "legend names the runs");
    assert!(s.contains("ACC 98.0%"), "legend gives each run's ACC");
    assert!(s.contains("average over tasks seen") && s.contains("task 3: 4/5"), "panels are titled");
}

/// Unreadable, malformed and wrong-shaped inputs are errors (exit 1) that name the file and the
/// fault, never panics; a figure name without .png/.svg is refused.
#[test]
fn plot_refuses_bad_input_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = run_file(tmp.path(), "good.json", "si", 1.0, [0.9, 0.9, 0.9]);
    let w = |name: &str, body: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let out = tmp.path().join("f.png");
    let cases: Vec<(PathBuf, &str)> = vec![
        (tmp.path().join("missing.json"), "cannot read"),
        (w("trunc.json", "{\"method\": \"si\", \"R\": [[0.5"), "not valid JSON"),
        (w("noR.json", r#"{"method": "si", "task_names": ["a"]}"#), "`R`"),
        (
            w("rows.json", r#"{"method": "si", "task_names": ["a", "b"], "R": [[0.5, 0.5], [0.5, 0.5], [1, 1]]}"#),
            "3 rows",
        ),
        (w("acc.json", r#"{"method": "si", "task_names": ["a"], "R": [[97.5]]}"#), "[0, 1]"),
        (w("array.json", "[1, 2, 3]"), "JSON object"),
    ];
    for (p, needle) in cases {
        let o = engram().arg("plot").arg(&good).arg(&p).arg("--out").arg(&out).output().unwrap();
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", p.display());
        assert!(err.contains(needle), "{}: expected '{needle}' in {err}", p.display());
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(err.contains(&name), "the error names the file: {err}");
        assert!(!out.exists(), "no figure is written from bad input");
    }
    let o = engram().arg("plot").arg(&good).arg("--out").arg(tmp.path().join("f.pdf")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains(".png or .svg"));
    let o = engram().arg("plot").arg(&good).arg("--out").arg("/nonexistent/dir/f.png").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    // runs of different scenarios cannot share panels
    let two = w("two.json", r#"{"method": "si", "task_names": ["a", "b"], "R": [[0.5, 0.5], [0.5, 0.5]]}"#);
    let o = engram().arg("plot").arg(&good).arg(&two).arg("--out").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("same scenario"));
}

/// `engram run --plot` refuses a bad figure name before loading data or training.
#[test]
fn run_plot_checks_the_figure_name_first() {
    let o = engram()
        .args(["run", "--scenario", "split-mnist", "--method", "si", "--plot", "fig.jpg", "--data-dir", "/nonexistent"])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains(".png or .svg") && !err.contains("/nonexistent"), "{err}");
}

/// Bad sweep arguments fail before any data is loaded, naming the fault.
#[test]
fn sweep_refuses_bad_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let base = ["sweep", "--scenario", "split-mnist", "--method", "si", "--data-dir", "/nonexistent", "--out"];
    let cases: &[(&[&str], &str)] = &[
        (&["--grid", "c"], "KEY=V1"),
        (&["--grid", "foo=1,2"], "--foo"),
        (&["--grid", "c=-1"], "strength"),
        (&["--grid", "lambda=1"], "--lambda"),
        (&["--grid", "seed=1,2"], "--seeds"),
        (&["--grid", "c=1", "--seeds", "0"], "--seeds"),
        (&["--grid", "c=1", "--validation", "1.5"], "--validation"),
        (&["--grid", "c=1", "--select-tasks", "9"], "--select-tasks"),
        (&["--grid", "c=1", "--x", "lr"], "--x lr"),
        (&["--grid", "c=1", "--plot", "f.gif"], ".png or .svg"),
        (&["--grid", "c=1", "--", "--seed", "3"], "--seed"),
        (&["--grid", "c=1", "--", "--epochs", "0"], "--epochs"),
    ];
    for (extra, needle) in cases {
        let o = engram().args(base).arg(tmp.path().join("s")).args(*extra).output().unwrap();
        let (_, err) = text(&o);
        assert!(matches!(o.status.code(), Some(1) | Some(2)), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: expected '{needle}' in {err}");
    }
    let o = engram().args(["sweep", "merge"]).arg(tmp.path().join("nothing")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("cannot read"), "{:?}", text(&o));
}

/// A small sweep on real Split MNIST: selection runs on the validation split, the chosen setting
/// retrained and tested, results as JSON lines and a summary; a rerun skips every run; another
/// --epochs in the same directory is refused; --emit-jobs prints one command per run and those
/// commands, then `sweep merge`, give the same table.
#[test]
fn sweep_selects_on_validation_resumes_and_emits_jobs() {
    let Some(data) = mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sw");
    let sweep = |extra: &[&str]| {
        let mut c = engram();
        c.env("ENGRAM_DATA", &data)
            .args(["sweep", "--scenario", "split-mnist", "--method", "si", "--grid", "c=0.1,100", "--seeds", "2"])
            .args(["--jobs", "2", "--out"])
            .arg(&dir)
            .args(extra)
            .args(["--", "--samples-per-task", "200", "--epochs", "1", "--hidden", "32"]);
        c.output().unwrap()
    };
    let o = sweep(&[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("6 run(s) done now (4 selection, 2 test)"), "{out}");
    let lines: Vec<Value> = std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    let sel: Vec<&Value> = lines.iter().filter(|v| v["sweep"]["phase"] == "select").collect();
    assert_eq!(sel.len(), 4);
    for v in &sel {
        assert_eq!(v["sweep"]["eval"], "validation");
        // 10% of the 200 samples of each task, evaluated instead of the test set
        assert!(v["R"].as_array().unwrap().len() == 5);
    }
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let table = summary["table"].as_array().unwrap();
    assert_eq!(table.len(), 2);
    assert!(table[0]["acc_mean"].as_f64().unwrap() >= table[1]["acc_mean"].as_f64().unwrap_or(0.0));
    assert_eq!(summary["chosen"], table[0]["setting"]);
    assert_eq!(summary["test"]["accs"].as_array().unwrap().len(), 2);
    assert_eq!(summary["test"]["setting"], summary["chosen"]);
    let tests: Vec<&Value> = lines.iter().filter(|v| v["sweep"]["phase"] == "test").collect();
    assert!(tests.iter().all(|v| v["sweep"]["eval"] == "test" && v["sweep"]["setting"] == summary["chosen"]));
    assert!(png_size(&dir.join("sweep.png")) == engram_plot::SWEEP_FIGURE_SIZE);

    // Resume: nothing left to do.
    let o = sweep(&[]);
    assert!(text(&o).0.contains("0 run(s) done now"), "{:?}", text(&o));
    // Different flags, same directory: refused, not silently mixed.
    let mut c = engram();
    c.env("ENGRAM_DATA", &data)
        .args(["sweep", "--scenario", "split-mnist", "--method", "si", "--grid", "c=0.1,100", "--seeds", "2", "--out"])
        .arg(&dir)
        .args(["--", "--samples-per-task", "200", "--epochs", "2", "--hidden", "32"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("different configuration"), "{:?}", text(&o));

    // --emit-jobs: one line per selection run, each with its own --only id.
    let dir2 = tmp.path().join("sw2");
    let mut c = engram();
    c.args(["sweep", "--scenario", "split-mnist", "--method", "si", "--grid", "c=0.1,100", "--seeds", "2", "--out"])
        .arg(&dir2)
        .args(["--emit-jobs", "--", "--samples-per-task", "200", "--epochs", "1", "--hidden", "32"]);
    let o = c.output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let cmds: Vec<&str> = out.lines().collect();
    assert_eq!(cmds.len(), 4, "{out}");
    assert!(cmds
        .iter()
        .all(|l| l.contains("--only select__c=") && l.contains("--jobs 1") && !l.contains("--emit-jobs")));
    for line in &cmds {
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let o = engram().env("ENGRAM_DATA", &data).args(&args).output().unwrap();
        assert!(o.status.success(), "{line}: {:?}", text(&o));
    }
    // The same selection results as the in-process sweep (runs are deterministic).
    for v in &sel {
        let id = v["sweep"]["id"].as_str().unwrap();
        let w: Value =
            serde_json::from_str(&std::fs::read_to_string(dir2.join("runs").join(format!("{id}.json"))).unwrap())
                .unwrap();
        assert_eq!(w["acc"], v["acc"], "{id}");
    }
    let o = engram().args(["sweep", "merge"]).arg(&dir2).output().unwrap();
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("test phase not run yet"), "{out}");
}

/// `engram explain-si` prints the walk-through; its averaged importance is about H_kk / 2.
#[test]
fn explain_si_prints_omega_against_the_hessian() {
    let o = engram().args(["explain-si", "--starts", "400", "--steps", "3000", "--lr", "0.03"]).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("Omega_est") && out.contains("path-integral identity"), "{out}");
    // The est/(H/2) column of section 2: every entry within 10% of 1.
    let sec2 = out.split("2. Averaged").nth(1).unwrap().split("3. What").next().unwrap();
    let ratios: Vec<f64> = sec2
        .lines()
        .filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().nth(7).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ratios.len(), 5, "{sec2}");
    assert!(ratios.iter().all(|r| (r - 1.0).abs() < 0.1), "{ratios:?}");
    let o = engram().args(["explain-si", "--lr", "1"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("diverges"));
}
