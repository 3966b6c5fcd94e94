//! Tests of the figures: sizes, labels, formats, and that drawings are not blank.
use super::*;
use crate::runs::PANEL_W;
use serde_json::json;
use serde_json::Value;

fn run_json(method: &str, c: f64) -> Value {
    json!({
        "scenario": "split-mnist", "method": method, "seed": 0,
        "params": {"strength": c, "xi": 0.001, "lr": 0.001, "epochs": 10, "threads": 2},
        "task_names": ["0/1", "2/3", "4/5"],
        "R": [[0.99, 0.5, 0.4], [0.9, 0.98, 0.5], [0.8, 0.85, 0.97]],
        "b": [0.5, 0.45, 0.52],
    })
}

#[test]
fn numbers_are_short() {
    assert_eq!(fmt_num(1.0), "1");
    assert_eq!(fmt_num(0.001), "0.001");
    assert_eq!(fmt_num(1e-4), "1e-4");
    assert_eq!(fmt_num(2.5), "2.5");
    assert_eq!(fmt_num(10000.0), "10000");
    assert_eq!(fmt_num(0.1), "0.1");
}

#[test]
fn legend_names_method_key_hyperparameters_and_what_differs() {
    let a = RunCurves::from_json(&run_json("si", 1.0), "a").unwrap();
    let mut b = RunCurves::from_json(&run_json("finetune", 0.0), "b").unwrap();
    b.params.insert("lr".into(), json!(0.01));
    let l = label_runs(&[a, b]);
    assert!(l[0].starts_with("si c=1 ξ=0.001 lr=0.001"), "{}", l[0]);
    assert!(l[1].starts_with("finetune lr=0.01"), "{}", l[1]);
    assert!(l[0].ends_with("(ACC 87.3%)"), "{}", l[0]);
    assert!(!l[0].contains("threads"));
}

#[test]
fn acc_curve_averages_the_tasks_seen() {
    let r = RunCurves::from_json(&run_json("si", 1.0), "a").unwrap();
    let c = r.acc_curve();
    assert!((c[0] - 0.99).abs() < 1e-12);
    assert!((c[1] - 0.94).abs() < 1e-12);
    assert!((c[2] - (0.8 + 0.85 + 0.97) / 3.0).abs() < 1e-12);
}

#[test]
fn malformed_runs_are_errors_naming_the_fault() {
    let cases: Vec<(Value, &str)> = vec![
        (json!([1, 2]), "JSON object"),
        (json!({"task_names": ["a"], "R": [[0.5]]}), "`method`"),
        (json!({"method": "si", "R": [[0.5]]}), "`task_names`"),
        (json!({"method": "si", "task_names": ["a", "b"]}), "`R`"),
        (json!({"method": "si", "task_names": ["a", "b"], "R": [[0.5, 0.5], [0.5]]}), "R[1]"),
        (json!({"method": "si", "task_names": ["a", "b"], "R": [[0.5, 1.5], [0.5, 0.5]]}), "[0, 1]"),
        (json!({"method": "si", "task_names": ["a", "b"], "R": [[0.5, "x"], [0.5, 0.5]]}), "numbers"),
        (json!({"method": "si", "task_names": [], "R": []}), "empty"),
        (json!({"method": "si", "task_names": ["a"], "R": [[0.5]], "b": [0.1, 0.2]}), "`b`"),
    ];
    for (v, want) in cases {
        let e = RunCurves::from_json(&v, "f.json").unwrap_err().to_string();
        assert!(e.starts_with("f.json: "), "{e}");
        assert!(e.contains(want), "{want} not in {e}");
    }
}

#[test]
fn figure_format_comes_from_the_extension() {
    assert_eq!(Format::of(Path::new("a/b.PNG")).unwrap(), Format::Png);
    assert_eq!(Format::of(Path::new("b.svg")).unwrap(), Format::Svg);
    assert!(Format::of(Path::new("b.pdf")).unwrap_err().to_string().contains(".png or .svg"));
    assert!(Format::of(Path::new("noext")).is_err());
}

#[test]
fn runs_of_different_task_counts_cannot_share_a_figure() {
    let a = RunCurves::from_json(&run_json("si", 1.0), "a").unwrap();
    let mut b = a.clone();
    b.task_names.pop();
    b.r = vec![vec![0.5, 0.5], vec![0.5, 0.5]];
    let e = plot_runs(&[a, b], Path::new("/nonexistent/x.png")).unwrap_err().to_string();
    assert!(e.contains("same scenario"), "{e}");
}

#[test]
fn figure_size_grows_with_tasks_and_runs() {
    let (w5, h5) = runs_figure_size(5, 2);
    let (w20, h20) = runs_figure_size(20, 2);
    assert!(w20 >= w5 && h20 > h5);
    assert!(runs_figure_size(5, 3).1 > h5);
    assert!(w5 >= 6 * PANEL_W, "six panels side by side for Split MNIST");
}
