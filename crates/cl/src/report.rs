//! Human-readable tables of a run's results.

use crate::metrics::Metrics;
use std::fmt::Write;

fn pct(x: f64) -> String {
    format!("{:6.2}", 100.0 * x)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("     -".into(), |v| format!("{:+6.2}", 100.0 * v))
}

/// The accuracy matrix with task names, in percent: one line per training stage.
pub fn matrix(title: &str, names: &[String], r: &[Vec<f64>], b: Option<&[f64]>) -> String {
    let w = names.iter().map(|n| n.len()).max().unwrap_or(6).max(6);
    let mut s = String::new();
    let _ = writeln!(s, "{title} (%; row = after training on, column = tested on)");
    let _ = write!(s, "{:>w$} ", "");
    for n in names {
        let _ = write!(s, " {n:>w$}");
    }
    let _ = writeln!(s, " {:>w$}", "mean");
    if let Some(b) = b {
        let _ = write!(s, "{:>w$} ", "init");
        for v in b {
            let _ = write!(s, " {:>w$}", pct(*v));
        }
        let _ = writeln!(s, " {:>w$}", pct(b.iter().sum::<f64>() / b.len().max(1) as f64));
    }
    let joint = r.len() == 1 && names.len() > 1;
    for (i, row) in r.iter().enumerate() {
        let label = if joint { "all" } else { names.get(i).map_or("?", |s| s.as_str()) };
        let _ = write!(s, "{label:>w$} ");
        let seen = if joint { row.len() } else { i + 1 };
        for v in row {
            let _ = write!(s, " {:>w$}", pct(*v));
        }
        let _ = writeln!(s, " {:>w$}", pct(row[..seen].iter().sum::<f64>() / seen as f64));
    }
    s
}

/// The summary metrics in percentage points, one per line, with the BWT convention stated.
pub fn summary(m: &Metrics) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "ACC (mean final accuracy)                 {}", pct(m.acc).trim());
    let _ = writeln!(s, "BWT (mean over the T-1 earlier tasks)     {}", opt_pct(m.bwt).trim());
    let _ = writeln!(s, "BWT (GEM code's convention, divided by T) {}", opt_pct(m.bwt_gem).trim());
    let _ = writeln!(s, "FWT (vs the untrained network)            {}", opt_pct(m.fwt).trim());
    let forgetting = m.forgetting.map_or("-".to_string(), |f| format!("{:.2}", 100.0 * f));
    let _ = writeln!(s, "forgetting (Chaudhry et al. 2018)         {forgetting}");
    if !m.learning_accuracy.is_empty() {
        let la: Vec<String> = m.learning_accuracy.iter().map(|v| pct(*v).trim().to_string()).collect();
        let _ = writeln!(s, "learning accuracy R[j][j]                 {}", la.join(" "));
    }
    s
}
