//! Tests of the sweep's grid, selection, job files and merge.
use super::*;

#[test]
fn grid_parses_and_expands_in_order() {
    let g = parse_grid(&["c=0.01,0.1".into(), "--lr=1e-4, 1e-3".into()]).unwrap();
    assert_eq!(g[1].0, "lr");
    let s = settings(&g);
    assert_eq!(s.len(), 4);
    assert_eq!(setting_text(&s[0]), "c=0.01 lr=1e-4");
    assert_eq!(setting_text(&s[3]), "c=0.1 lr=1e-3");
    assert_eq!(settings(&[]), vec![Vec::<(String, String)>::new()]);
}

#[test]
fn bad_grids_are_refused() {
    for (g, want) in [
        (vec!["c"], "KEY=V1"),
        (vec!["=1,2"], "key is empty"),
        (vec!["c=1,,2"], "empty value"),
        (vec!["c=1,1"], "twice"),
        (vec!["c=1", "c=2"], "given twice"),
        (vec!["seed=1,2"], "--seeds"),
    ] {
        let g: Vec<String> = g.into_iter().map(String::from).collect();
        let e = parse_grid(&g).unwrap_err().to_string();
        assert!(e.contains(want), "{want} not in {e}");
    }
    assert!(check_run_args(&["--epochs".into(), "2".into()]).is_ok());
    assert!(check_run_args(&["--out=x".into()]).unwrap_err().to_string().contains("--out"));
}

#[test]
fn ids_are_file_names() {
    let s: Setting = vec![("c".into(), "0.1".into()), ("optimizer".into(), "a b/c".into())];
    assert_eq!(job_id(Phase::Select, &s, 2), "select__c=0.1__optimizer=a_b_c__seed=2");
    assert_eq!(shell_quote("--c=0.1"), "--c=0.1");
    assert_eq!(shell_quote("a b"), "'a b'");
    assert_eq!(shell_quote("it's"), "'it'\\''s'");
}

fn rec(id: &str, phase: &str, c: &str, acc: Option<f64>) -> (String, Value) {
    let mut v = json!({"sweep": {"id": id, "phase": phase, "eval": "validation", "setting": [["c", c]]}});
    match acc {
        Some(a) => v["acc"] = json!(a),
        None => v["error"] = json!("diverged"),
    }
    (id.to_string(), v)
}

#[test]
fn table_is_sorted_by_mean_acc_and_failures_go_last() {
    let runs: BTreeMap<String, Value> = [
        rec("a0", "select", "0.1", Some(0.90)),
        rec("a1", "select", "0.1", Some(0.92)),
        rec("b0", "select", "1", Some(0.97)),
        rec("b1", "select", "1", Some(0.95)),
        rec("c0", "select", "100", Some(0.99)),
        rec("c1", "select", "100", None),
        rec("t0", "test", "1", Some(0.5)),
    ]
    .into_iter()
    .collect();
    let t = summarize(&runs, &[]);
    let order: Vec<String> = t.rows.iter().map(|r| r.setting[0].1.clone()).collect();
    assert_eq!(order, ["1", "0.1", "100"]);
    assert!((t.rows[0].acc.unwrap() - 0.96).abs() < 1e-12);
    assert_eq!((t.rows[2].acc, t.rows[2].failed), (None, 1), "a setting with a diverged seed is never chosen");
    assert_eq!(t.rows[0].accs.len(), 2, "test-phase runs are not part of the selection table");
}
