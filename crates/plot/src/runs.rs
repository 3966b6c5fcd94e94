//! The runs figure: one panel per task with its accuracy after each training task (every run
//! overlaid), the average-accuracy curve, and each run's R as an annotated heatmap.

use crate::*;
use plotters::coord::Shift;
use plotters::style::text_anchor::{HPos, VPos};
use serde_json::Value;
use std::path::Path;

/// What [`plot_runs`] needs of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCurves {
    /// Legend text (method, key hyperparameters, ACC); see [`label_runs`].
    pub label: String,
    /// The method's name.
    pub method: String,
    /// Scenario name (`split-mnist`, ...), when known.
    pub scenario: Option<String>,
    /// Task names in training order.
    pub task_names: Vec<String>,
    /// `R[i][j]`: accuracy on task `j` after training task `i` (`T` rows, or 1 for joint training).
    pub r: Vec<Vec<f64>>,
    /// Accuracy of the untrained network on each task, when known.
    pub b: Option<Vec<f64>>,
    /// What the accuracies were measured on: `"test"` or `"validation"`.
    pub eval: String,
    /// The run's hyperparameters (the `params` object of the JSON), for the legend.
    pub params: serde_json::Map<String, Value>,
    /// The run's seed, when known.
    pub seed: Option<u64>,
}

impl RunCurves {
    /// Reads the JSON object `engram run --out` writes. `source_name` names the input in errors.
    ///
    /// Needs `method`, `task_names` (T strings) and `R` (T rows, or one row for joint training,
    /// of T accuracies in [0, 1]); `b`, `params`, `seed`, `scenario` are optional.
    pub fn from_json(v: &Value, source_name: &str) -> Result<RunCurves, PlotError> {
        let bad = |msg: String| PlotError::Input { source_name: source_name.to_string(), msg };
        let hint = "(is this a run written by `engram run --out` or `engram sweep`?)";
        let obj = v.as_object().ok_or_else(|| bad(format!("expected a JSON object {hint}")))?;
        let method = obj
            .get("method")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("missing the string field `method` {hint}")))?
            .to_string();
        let names = obj
            .get("task_names")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("missing the array field `task_names` {hint}")))?;
        let task_names: Vec<String> = names
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("`task_names` must hold strings".into()))?;
        let t = task_names.len();
        if t == 0 {
            return Err(bad("`task_names` is empty: a run has at least one task".into()));
        }
        let acc_vec = |field: &str, x: &Value| -> Result<Vec<f64>, PlotError> {
            let row = x.as_array().ok_or_else(|| bad(format!("`{field}` must be an array of numbers")))?;
            let row: Vec<f64> = row
                .iter()
                .map(Value::as_f64)
                .collect::<Option<_>>()
                .ok_or_else(|| bad(format!("`{field}` must hold numbers only")))?;
            if row.len() != t {
                return Err(bad(format!("`{field}` has {} entries, expected {t} (one per task)", row.len())));
            }
            if let Some(x) = row.iter().find(|x| !(x.is_finite() && (0.0..=1.0).contains(*x))) {
                return Err(bad(format!("`{field}` holds {x}, not an accuracy in [0, 1]")));
            }
            Ok(row)
        };
        let r_rows = obj
            .get("R")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("missing the array field `R` (the accuracy matrix) {hint}")))?;
        if !(r_rows.len() == t || r_rows.len() == 1) {
            return Err(bad(format!(
                "`R` has {} rows, expected {t} (one per training task) or 1 (joint training)",
                r_rows.len()
            )));
        }
        let r = r_rows.iter().enumerate().map(|(i, row)| acc_vec(&format!("R[{i}]"), row)).collect::<Result<_, _>>()?;
        let b = match obj.get("b") {
            None | Some(Value::Null) => None,
            Some(x) => Some(acc_vec("b", x)?),
        };
        let eval = obj.get("sweep").and_then(|s| s.get("eval")).and_then(Value::as_str).unwrap_or("test").to_string();
        let params = obj.get("params").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut run = RunCurves {
            label: String::new(),
            method,
            scenario: obj.get("scenario").and_then(Value::as_str).map(str::to_string),
            task_names,
            r,
            b,
            eval,
            params,
            seed: obj.get("seed").and_then(Value::as_u64),
        };
        run.label = label_runs(std::slice::from_ref(&run)).remove(0);
        Ok(run)
    }

    /// Number of tasks.
    pub fn tasks(&self) -> usize {
        self.task_names.len()
    }

    /// Joint training: one row for all tasks at once.
    pub fn is_joint(&self) -> bool {
        self.r.len() == 1 && self.tasks() > 1
    }

    /// Average accuracy over the tasks seen after each training task (`mean_{j<=i} R[i][j]`);
    /// joint training gives one value, the mean over every task.
    pub fn acc_curve(&self) -> Vec<f64> {
        if self.is_joint() {
            return vec![self.r[0].iter().sum::<f64>() / self.tasks() as f64];
        }
        self.r.iter().enumerate().map(|(i, row)| row[..=i].iter().sum::<f64>() / (i + 1) as f64).collect()
    }

    /// ACC: the mean of the last row of `R`.
    pub fn acc(&self) -> f64 {
        let last = self.r.last().expect("R has a row");
        last.iter().sum::<f64>() / last.len() as f64
    }
}

/// A number the short way: `1`, `0.001`, `1e-4`, `2.5`, `10000`.
pub fn fmt_num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if (1e-3..1e5).contains(&a) {
        let s = format!("{:.4}", x);
        let s = s.trim_end_matches('0').trim_end_matches('.');
        // Keep values like 0.00012 readable instead of rounding them away.
        if s.parse::<f64>().is_ok_and(|v| ((v - x) / x).abs() < 1e-3) {
            return s.to_string();
        }
    }
    // Rust writes 1e-4 as "1e-4" and 0.00012 as "1.2e-4": already short.
    format!("{x:e}")
}

fn param_str(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_f64().map(fmt_num),
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Legend texts for runs shown together: the method, its key hyperparameters (SI: `c` and
/// `xi`; L2, EWC, MAS: `lambda`; online EWC: `gamma`), every other hyperparameter whose value
/// differs between the runs (e.g. `lr`, `epochs`, `seed`), and ACC.
pub fn label_runs(runs: &[RunCurves]) -> Vec<String> {
    // Hyperparameters that describe the machine or are shown otherwise, never in the legend.
    const SKIP: [&str; 7] = ["threads", "strength", "c", "xi", "layer_sizes", "angles", "method"];
    let mut differing: Vec<String> = Vec::new();
    if runs.len() > 1 {
        let mut keys: Vec<&String> = runs.iter().flat_map(|r| r.params.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if SKIP.contains(&k.as_str()) {
                continue;
            }
            let vals: Vec<Option<String>> = runs.iter().map(|r| r.params.get(k).and_then(param_str)).collect();
            if vals.iter().any(|v| v != &vals[0]) {
                differing.push(k.clone());
            }
        }
    }
    let seeds_differ = runs.iter().any(|r| r.seed != runs[0].seed);
    runs.iter()
        .map(|r| {
            let p = |k: &str| r.params.get(k).and_then(param_str);
            let mut parts = vec![match (r.method.as_str(), p("ewc_mode").as_deref()) {
                ("ewc", Some("online")) => "online-ewc".to_string(),
                (m, _) => m.to_string(),
            }];
            match r.method.as_str() {
                "si" => {
                    parts.extend(p("strength").map(|v| format!("c={v}")));
                    parts.extend(p("xi").map(|v| format!("ξ={v}")));
                }
                "l2" | "mas" => parts.extend(p("strength").map(|v| format!("λ={v}"))),
                "ewc" => {
                    parts.extend(p("strength").map(|v| format!("λ={v}")));
                    if p("ewc_mode").as_deref() == Some("online") {
                        parts.extend(p("gamma").map(|v| format!("γ={v}")));
                    }
                }
                _ => {
                    // Methods added later (GEM, A-GEM, ...): their memory settings, when present.
                    for k in ["memory_strength", "memories", "memory_per_task", "memory"] {
                        if !differing.iter().any(|d| d == k) {
                            parts.extend(p(k).map(|v| format!("{k}={v}")));
                        }
                    }
                }
            }
            for k in &differing {
                let shown = matches!(k.as_str(), "gamma" | "ewc_mode");
                if !shown {
                    parts.push(format!("{k}={}", p(k).unwrap_or_else(|| "-".into())));
                }
            }
            if seeds_differ {
                parts.extend(r.seed.map(|s| format!("seed {s}")));
            }
            format!("{}  (ACC {:.1}%)", parts.join(" "), 100.0 * r.acc())
        })
        .collect()
}

// Layout of the runs figure, in pixels.
const MARGIN: u32 = 16;
const TITLE_H: u32 = 36;
const LEGEND_LINE_H: u32 = 22;
pub(crate) const PANEL_W: u32 = 250;
const PANEL_H: u32 = 240;
const MAX_PANEL_COLS: u32 = 6;
const HEAT_LABEL_W: u32 = 70;
const HEAT_HEADER_H: u32 = 64;
const HEAT_FOOTER_H: u32 = 28;

fn panel_cols(tasks: usize) -> u32 {
    (tasks as u32 + 1).min(MAX_PANEL_COLS)
}

fn heat_cell(tasks: usize) -> u32 {
    (380 / tasks.max(1) as u32).clamp(30, 64)
}

fn heat_size(tasks: usize) -> (u32, u32) {
    let cell = heat_cell(tasks);
    (HEAT_LABEL_W + cell * tasks as u32 + 12, HEAT_HEADER_H + cell * (tasks as u32 + 1) + HEAT_FOOTER_H)
}

fn heat_cols(tasks: usize, runs: usize) -> u32 {
    let inner = panel_cols(tasks) * PANEL_W;
    let (hw, _) = heat_size(tasks);
    (inner / hw).max(1).min(runs.max(1) as u32)
}

/// The pixel size of [`plot_runs`]'s figure for `tasks` tasks and `runs` runs (PNG; the SVG
/// has the same size in user units).
pub fn runs_figure_size(tasks: usize, runs: usize) -> (u32, u32) {
    let cols = panel_cols(tasks);
    let panel_rows = (tasks as u32 + 1).div_ceil(cols);
    let (hw, hh) = heat_size(tasks);
    let hcols = heat_cols(tasks, runs);
    let hrows = (runs.max(1) as u32).div_ceil(hcols);
    let width = (cols * PANEL_W).max(hcols * hw) + 2 * MARGIN;
    let height = MARGIN + TITLE_H + LEGEND_LINE_H * runs.max(1) as u32 + 8 + panel_rows * PANEL_H + hrows * hh + MARGIN;
    (width, height)
}

/// Draws the runs figure into `path` (`.png` or `.svg`). Every run must have the same number of
/// tasks; the first run's task names label the panels.
pub fn plot_runs(runs: &[RunCurves], path: &Path) -> Result<(), PlotError> {
    let format = Format::of(path)?;
    let first = runs
        .first()
        .ok_or_else(|| PlotError::Input { source_name: path.display().to_string(), msg: "no run to plot".into() })?;
    if let Some(r) = runs.iter().find(|r| r.tasks() != first.tasks()) {
        return Err(PlotError::Input {
            source_name: r.label.clone(),
            msg: format!(
                "has {} tasks but {} has {}: only runs of the same scenario can share a figure",
                r.tasks(),
                first.label,
                first.tasks()
            ),
        });
    }
    register_font();
    let size = runs_figure_size(first.tasks(), runs.len());
    let labels = label_runs(runs);
    let result = match format {
        Format::Png => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            draw_runs(&root, runs, &labels, size).and_then(|_| root.present().map_err(to_text))
        }
        Format::Svg => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw_runs(&root, runs, &labels, size).and_then(|_| root.present().map_err(to_text))
        }
    };
    result.map_err(draw_err(path))
}

fn draw_runs<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    runs: &[RunCurves],
    labels: &[String],
    size: (u32, u32),
) -> Result<(), String> {
    root.fill(&WHITE).map_err(to_text)?;
    let first = &runs[0];
    let t = first.tasks();
    let eval = if runs.iter().all(|r| r.eval == "validation") { "validation" } else { "test" };
    let scenario = match runs.iter().map(|r| r.scenario.as_deref()).collect::<Vec<_>>() {
        v if v.iter().all(|x| *x == v[0]) => v[0].unwrap_or("runs").to_string(),
        _ => "runs of different scenarios".into(),
    };
    let title =
        format!("{scenario}: {eval} accuracy of each task after each training task (grey: task not trained yet)");
    root.draw(&Text::new(
        title,
        (MARGIN as i32, (MARGIN + TITLE_H / 2) as i32),
        text_style(22.0, BLACK, HPos::Left, VPos::Center),
    ))
    .map_err(to_text)?;

    // Legend: one line per run.
    let mut y = MARGIN + TITLE_H;
    for (i, label) in labels.iter().enumerate() {
        let c = colour(i);
        let yc = (y + LEGEND_LINE_H / 2) as i32;
        let x0 = MARGIN as i32 + 4;
        root.draw(&PathElement::new(vec![(x0, yc), (x0 + 30, yc)], c.stroke_width(3))).map_err(to_text)?;
        root.draw(&Circle::new((x0 + 15, yc), 4, c.filled())).map_err(to_text)?;
        root.draw(&Text::new(label.clone(), (x0 + 40, yc), text_style(15.0, BLACK, HPos::Left, VPos::Center)))
            .map_err(to_text)?;
        y += LEGEND_LINE_H;
    }
    y += 8;

    // One panel per task plus the average; shared y range.
    let mut lo = 1.0f64;
    for r in runs {
        for (i, row) in r.r.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                if r.is_joint() || j <= i {
                    lo = lo.min(*v);
                }
            }
        }
        lo = r.acc_curve().iter().fold(lo, |a, &b| a.min(b));
    }
    let ylo = ((lo * 10.0).floor() * 10.0).clamp(0.0, 90.0);
    let yhi = 101.0;
    let cols = panel_cols(t);
    let names = &first.task_names;
    for p in 0..=t {
        let (col, row) = (p as u32 % cols, p as u32 / cols);
        let area =
            root.clone().shrink(((MARGIN + col * PANEL_W) as i32, (y + row * PANEL_H) as i32), (PANEL_W, PANEL_H));
        let avg = p == t;
        let caption = if avg { "average over tasks seen".to_string() } else { format!("task {}: {}", p + 1, names[p]) };
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, (FAMILY, 16))
            .margin(6)
            .x_label_area_size(36)
            .y_label_area_size(if col == 0 { 52 } else { 36 })
            .build_cartesian_2d(0.5f64..(t as f64 + 0.5), ylo..yhi)
            .map_err(to_text)?;
        let fmt_x = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 1.0 && i as usize <= t {
                names[i as usize - 1].clone()
            } else {
                String::new()
            }
        };
        let fmt_y = |v: &f64| if *v <= 100.0 { format!("{v:.0}") } else { String::new() };
        let mut mesh = chart.configure_mesh();
        mesh.x_labels(t.min(10))
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .y_labels(6)
            .x_desc("after training on")
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(225, 225, 225))
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13));
        if col == 0 {
            mesh.y_desc(format!("{eval} accuracy (%)"));
        }
        mesh.draw().map_err(to_text)?;
        if !avg && p > 0 {
            // Grey: before the task is trained.
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.5, ylo), (p as f64 + 0.5, yhi)],
                    RGBColor(238, 238, 238).filled(),
                )))
                .map_err(to_text)?;
        }
        for (ri, r) in runs.iter().enumerate() {
            let c = colour(ri);
            let pts: Vec<(f64, f64)> = if r.is_joint() {
                let v = if avg { r.acc_curve()[0] } else { r.r[0][p] };
                vec![(t as f64, 100.0 * v)]
            } else if avg {
                r.acc_curve().iter().enumerate().map(|(i, v)| ((i + 1) as f64, 100.0 * v)).collect()
            } else {
                (p..t).map(|i| ((i + 1) as f64, 100.0 * r.r[i][p])).collect()
            };
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2))).map_err(to_text)?;
            if r.is_joint() {
                chart.draw_series(pts.iter().map(|&pt| TriangleMarker::new(pt, 6, c.filled()))).map_err(to_text)?;
            } else {
                chart.draw_series(pts.iter().map(|&pt| Circle::new(pt, 3, c.filled()))).map_err(to_text)?;
            }
        }
    }
    y += (t as u32 + 1).div_ceil(cols) * PANEL_H;

    // Heatmaps of R, one per run.
    let (hw, hh) = heat_size(t);
    let hcols = heat_cols(t, runs.len());
    for (ri, r) in runs.iter().enumerate() {
        let (col, row) = (ri as u32 % hcols, ri as u32 / hcols);
        let x0 = MARGIN + col * hw;
        let y0 = y + row * hh;
        draw_heatmap(root, r, &labels[ri], colour(ri), (x0 as i32, y0 as i32), eval)?;
    }
    debug_assert!(y + (runs.len() as u32).div_ceil(hcols) * hh + MARGIN <= size.1);
    Ok(())
}

/// Blues colour map over [lo, 1]: lo -> near white, 1 -> dark blue.
fn blues(v: f64, lo: f64) -> RGBColor {
    let v = if lo < 1.0 { ((v - lo) / (1.0 - lo)).clamp(0.0, 1.0) } else { 1.0 };
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    r: &RunCurves,
    label: &str,
    c: RGBColor,
    origin: (i32, i32),
    eval: &str,
) -> Result<(), String> {
    let t = r.tasks();
    let cell = heat_cell(t) as i32;
    let (x0, y0) = origin;
    let short: String = label.split("  (ACC").next().unwrap_or(label).chars().take(48).collect();
    root.draw(&Text::new(format!("R, {short}"), (x0, y0 + 12), text_style(15.0, c, HPos::Left, VPos::Center)))
        .map_err(to_text)?;
    root.draw(&Text::new(
        format!("{eval} accuracy (%): row = after training on, column = tested on"),
        (x0, y0 + 30),
        text_style(12.0, RGBColor(80, 80, 80), HPos::Left, VPos::Center),
    ))
    .map_err(to_text)?;
    // The colour scale spans this run's lowest accuracy (often chance level) to 100%.
    let lo = r.r.iter().flatten().chain(r.b.iter().flatten()).copied().fold(1.0f64, f64::min).min(0.9);
    let gx = x0 + HEAT_LABEL_W as i32;
    let gy = y0 + HEAT_HEADER_H as i32;
    let font = (cell as f64 * 0.34).clamp(9.0, 16.0);
    for (j, name) in r.task_names.iter().enumerate() {
        root.draw(&Text::new(
            name.clone(),
            (gx + j as i32 * cell + cell / 2, gy - 8),
            text_style(font.min(13.0), BLACK, HPos::Center, VPos::Bottom),
        ))
        .map_err(to_text)?;
    }
    // Rows: the untrained network (b), then one per training task (or "all" for joint).
    /// (row label, the row's accuracies if known, the diagonal column to outline).
    type HeatRow<'a> = (String, Option<&'a Vec<f64>>, Option<usize>);
    let mut rows: Vec<HeatRow> = vec![("init".into(), r.b.as_ref(), None)];
    if r.is_joint() {
        rows.push(("all".into(), Some(&r.r[0]), None));
    } else {
        rows.extend(r.r.iter().enumerate().map(|(i, row)| (r.task_names[i].clone(), Some(row), Some(i))));
    }
    for (ri, (name, vals, diag)) in rows.iter().enumerate() {
        let yr = gy + ri as i32 * cell;
        root.draw(&Text::new(
            name.clone(),
            (gx - 6, yr + cell / 2),
            text_style(font.min(13.0), BLACK, HPos::Right, VPos::Center),
        ))
        .map_err(to_text)?;
        for j in 0..t {
            let xr = gx + j as i32 * cell;
            let rect = [(xr, yr), (xr + cell, yr + cell)];
            match vals {
                Some(v) => {
                    let a = v[j];
                    root.draw(&Rectangle::new(rect, blues(a, lo).filled())).map_err(to_text)?;
                    let tc = if (a - lo) / (1.0 - lo) > 0.55 { WHITE } else { BLACK };
                    let txt = if a >= 0.9995 { "100".to_string() } else { format!("{:.1}", 100.0 * a) };
                    root.draw(&Text::new(
                        txt,
                        (xr + cell / 2, yr + cell / 2),
                        text_style(font, tc, HPos::Center, VPos::Center),
                    ))
                    .map_err(to_text)?;
                }
                None => {
                    root.draw(&Rectangle::new(rect, RGBColor(230, 230, 230).filled())).map_err(to_text)?;
                }
            }
            root.draw(&Rectangle::new(rect, WHITE.stroke_width(1))).map_err(to_text)?;
            if *diag == Some(j) {
                let inner = [(xr + 1, yr + 1), (xr + cell - 1, yr + cell - 1)];
                root.draw(&Rectangle::new(inner, RGBColor(255, 180, 0).stroke_width(2))).map_err(to_text)?;
            }
        }
    }
    let foot_y = gy + rows.len() as i32 * cell + HEAT_FOOTER_H as i32 / 2;
    let foot = if r.is_joint() {
        format!("joint training: one row; ACC {:.2}%", 100.0 * r.acc())
    } else {
        format!("orange: R[j][j], just after learning; ACC {:.2}%", 100.0 * r.acc())
    };
    root.draw(&Text::new(foot, (gx, foot_y), text_style(12.0, RGBColor(80, 80, 80), HPos::Left, VPos::Center)))
        .map_err(to_text)?;
    Ok(())
}
