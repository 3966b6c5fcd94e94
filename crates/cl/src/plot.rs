//! Figures, as PNG or SVG (chosen by the file name's extension), drawn with `plotters`.
//!
//! * [`plot_runs`]: the SI paper's Split MNIST figure for one or more runs: one panel per task
//!   with its accuracy after each training task (every run overlaid), the average-accuracy
//!   curve, and each run's accuracy matrix `R` as an annotated heatmap.
//! * [`plot_sweep`]: a sweep's ACC (mean over seeds, min-max band, each seed a dot) against a
//!   swept hyperparameter, on a log axis when the values are positive numbers.
//!
//! Text is rendered with the DejaVu Sans subset embedded from `assets/fonts` (through plotters'
//! `ab_glyph` feature), so drawing needs no system font library. Runs are read from the JSON
//! that `engram run --out` writes ([`RunCurves::from_json`]).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;
use std::path::Path;
use std::sync::Once;

/// DejaVu Sans, cut down to Latin, Greek and a few signs (see `assets/fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is a fixed, tested asset; should it ever fail to parse, drawing text reports
        // "font unavailable" as an ordinary error.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// A figure that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The input (a run's JSON) does not hold what a figure needs.
    #[error("{source_name}: {msg}")]
    Input {
        /// Where the input came from (a file name).
        source_name: String,
        /// What is wrong.
        msg: String,
    },
    /// The file name does not end in `.png` or `.svg`.
    #[error("cannot tell the figure format of {0}: the file name must end in .png or .svg")]
    Format(String),
    /// Drawing or writing failed.
    #[error("cannot draw {path}: {msg}")]
    Draw {
        /// The figure file.
        path: String,
        /// The backend's message.
        msg: String,
    },
}

/// Image format of a figure file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PNG (bitmap).
    Png,
    /// SVG (vector).
    Svg,
}

impl Format {
    /// The format named by `path`'s extension (case-insensitive).
    pub fn of(path: &Path) -> Result<Format, PlotError> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => Err(PlotError::Format(path.display().to_string())),
        }
    }
}

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

/// Colours of overlaid runs (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

// Layout of the runs figure, in pixels.
const MARGIN: u32 = 16;
const TITLE_H: u32 = 36;
const LEGEND_LINE_H: u32 = 22;
const PANEL_W: u32 = 250;
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

fn draw_err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |msg| PlotError::Draw { path: path.display().to_string(), msg }
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
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
            draw_runs(&root, runs, &labels, size).and_then(|_| root.present().map_err(s))
        }
        Format::Svg => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw_runs(&root, runs, &labels, size).and_then(|_| root.present().map_err(s))
        }
    };
    result.map_err(draw_err(path))
}

fn text_style(size: f64, colour: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle { font: (FAMILY, size).into_font(), color: colour.to_backend_color(), pos: Pos::new(h, v) }
}

fn draw_runs<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    runs: &[RunCurves],
    labels: &[String],
    size: (u32, u32),
) -> Result<(), String> {
    root.fill(&WHITE).map_err(s)?;
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
    .map_err(s)?;

    // Legend: one line per run.
    let mut y = MARGIN + TITLE_H;
    for (i, label) in labels.iter().enumerate() {
        let c = colour(i);
        let yc = (y + LEGEND_LINE_H / 2) as i32;
        let x0 = MARGIN as i32 + 4;
        root.draw(&PathElement::new(vec![(x0, yc), (x0 + 30, yc)], c.stroke_width(3))).map_err(s)?;
        root.draw(&Circle::new((x0 + 15, yc), 4, c.filled())).map_err(s)?;
        root.draw(&Text::new(label.clone(), (x0 + 40, yc), text_style(15.0, BLACK, HPos::Left, VPos::Center)))
            .map_err(s)?;
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
            .map_err(s)?;
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
        mesh.draw().map_err(s)?;
        if !avg && p > 0 {
            // Grey: before the task is trained.
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.5, ylo), (p as f64 + 0.5, yhi)],
                    RGBColor(238, 238, 238).filled(),
                )))
                .map_err(s)?;
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
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2))).map_err(s)?;
            if r.is_joint() {
                chart.draw_series(pts.iter().map(|&pt| TriangleMarker::new(pt, 6, c.filled()))).map_err(s)?;
            } else {
                chart.draw_series(pts.iter().map(|&pt| Circle::new(pt, 3, c.filled()))).map_err(s)?;
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
        .map_err(s)?;
    root.draw(&Text::new(
        format!("{eval} accuracy (%): row = after training on, column = tested on"),
        (x0, y0 + 30),
        text_style(12.0, RGBColor(80, 80, 80), HPos::Left, VPos::Center),
    ))
    .map_err(s)?;
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
        .map_err(s)?;
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
        .map_err(s)?;
        for j in 0..t {
            let xr = gx + j as i32 * cell;
            let rect = [(xr, yr), (xr + cell, yr + cell)];
            match vals {
                Some(v) => {
                    let a = v[j];
                    root.draw(&Rectangle::new(rect, blues(a, lo).filled())).map_err(s)?;
                    let tc = if (a - lo) / (1.0 - lo) > 0.55 { WHITE } else { BLACK };
                    let txt = if a >= 0.9995 { "100".to_string() } else { format!("{:.1}", 100.0 * a) };
                    root.draw(&Text::new(
                        txt,
                        (xr + cell / 2, yr + cell / 2),
                        text_style(font, tc, HPos::Center, VPos::Center),
                    ))
                    .map_err(s)?;
                }
                None => {
                    root.draw(&Rectangle::new(rect, RGBColor(230, 230, 230).filled())).map_err(s)?;
                }
            }
            root.draw(&Rectangle::new(rect, WHITE.stroke_width(1))).map_err(s)?;
            if *diag == Some(j) {
                let inner = [(xr + 1, yr + 1), (xr + cell - 1, yr + cell - 1)];
                root.draw(&Rectangle::new(inner, RGBColor(255, 180, 0).stroke_width(2))).map_err(s)?;
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
        .map_err(s)?;
    Ok(())
}

/// One curve of a sweep figure: a setting of the hyperparameters that are not on the x axis.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSeries {
    /// Legend text (e.g. `lr=0.001`; empty when nothing else was swept).
    pub label: String,
    /// `(x, values over seeds)`; x is the swept value, or the category's position for
    /// categorical values.
    pub points: Vec<(f64, Vec<f64>)>,
}

/// A sweep figure: ACC against one hyperparameter.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepFigure {
    /// Title.
    pub title: String,
    /// Name of the swept hyperparameter.
    pub x_label: String,
    /// What is plotted (e.g. "validation ACC (%)").
    pub y_label: String,
    /// `Some(names)`: categorical x (positions 0, 1, ...); `None`: numeric x.
    pub categories: Option<Vec<String>>,
    /// Logarithmic x axis (numeric x only; every x must be positive).
    pub log_x: bool,
    /// The curves; values are accuracies in [0, 1].
    pub series: Vec<SweepSeries>,
    /// A point to mark (series index, x) with a star and this note, e.g. the chosen setting.
    pub highlight: Option<(usize, f64, String)>,
    /// A last line under the plot (e.g. the test ACC of the chosen setting).
    pub note: Option<String>,
}

/// Pixel size of [`plot_sweep`]'s figure.
pub const SWEEP_FIGURE_SIZE: (u32, u32) = (960, 600);

/// Draws a sweep figure into `path` (`.png` or `.svg`): per series, the mean over seeds as a
/// line with markers, the min-max range over seeds as a band, and every seed as a dot.
pub fn plot_sweep(fig: &SweepFigure, path: &Path) -> Result<(), PlotError> {
    let format = Format::of(path)?;
    let input_err = |msg: String| PlotError::Input { source_name: path.display().to_string(), msg };
    let xs: Vec<f64> = fig.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    if xs.is_empty() {
        return Err(input_err("the sweep has no finished run to plot".into()));
    }
    if xs.iter().any(|x| !x.is_finite()) || (fig.log_x && xs.iter().any(|&x| x <= 0.0)) {
        return Err(input_err("a log x axis needs positive, finite values".into()));
    }
    register_font();
    let result = match format {
        Format::Png => {
            let root = BitMapBackend::new(path, SWEEP_FIGURE_SIZE).into_drawing_area();
            draw_sweep(&root, fig, &xs).and_then(|_| root.present().map_err(s))
        }
        Format::Svg => {
            let root = SVGBackend::new(path, SWEEP_FIGURE_SIZE).into_drawing_area();
            draw_sweep(&root, fig, &xs).and_then(|_| root.present().map_err(s))
        }
    };
    result.map_err(draw_err(path))
}

fn draw_sweep<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &SweepFigure, xs: &[f64]) -> Result<(), String> {
    root.fill(&WHITE).map_err(s)?;
    let vals: Vec<f64> = fig.series.iter().flat_map(|s| s.points.iter().flat_map(|p| p.1.iter().copied())).collect();
    let lo = vals.iter().copied().fold(1.0f64, f64::min);
    let hi = vals.iter().copied().fold(0.0f64, f64::max);
    let ylo = ((lo * 20.0).floor() * 5.0).clamp(0.0, 95.0);
    let yhi = ((hi * 20.0).ceil() * 5.0).clamp(ylo + 5.0, 100.0) + 1.0;
    let footer = if fig.note.is_some() { 30 } else { 0 };
    let (w, h) = SWEEP_FIGURE_SIZE;
    let (plot_area, foot_area) = root.split_vertically(h - footer);
    if let Some(note) = &fig.note {
        foot_area
            .draw(&Text::new(note.clone(), (20, 12), text_style(14.0, BLACK, HPos::Left, VPos::Center)))
            .map_err(s)?;
    }
    let xmin = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let xmax = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let fmt_y = |v: &f64| if *v <= 100.0 { format!("{v:.0}") } else { String::new() };
    macro_rules! body {
        ($chart:expr, $fmt_x:expr, $nx:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_labels($nx)
                .x_label_formatter($fmt_x)
                .y_label_formatter(&fmt_y)
                .x_desc(fig.x_label.clone())
                .y_desc(fig.y_label.clone())
                .light_line_style(RGBColor(240, 240, 240))
                .bold_line_style(RGBColor(220, 220, 220))
                .label_style((FAMILY, 14))
                .axis_desc_style((FAMILY, 16))
                .draw()
                .map_err(s)?;
            for (si, ser) in fig.series.iter().enumerate() {
                let c = colour(si);
                let mut pts = ser.points.clone();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let stats: Vec<(f64, f64, f64, f64)> = pts
                    .iter()
                    .filter(|p| !p.1.is_empty())
                    .map(|(x, v)| {
                        let mean = v.iter().sum::<f64>() / v.len() as f64;
                        let mn = v.iter().copied().fold(f64::INFINITY, f64::min);
                        let mx = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        (*x, 100.0 * mean, 100.0 * mn, 100.0 * mx)
                    })
                    .collect();
                if stats.len() > 1 {
                    let mut band: Vec<(f64, f64)> = stats.iter().map(|p| (p.0, p.3)).collect();
                    band.extend(stats.iter().rev().map(|p| (p.0, p.2)));
                    chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.18).filled()))).map_err(s)?;
                }
                for p in &stats {
                    chart
                        .draw_series(std::iter::once(PathElement::new(vec![(p.0, p.2), (p.0, p.3)], c.stroke_width(1))))
                        .map_err(s)?;
                }
                let series = chart
                    .draw_series(LineSeries::new(stats.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))
                    .map_err(s)?;
                if !ser.label.is_empty() {
                    series
                        .label(ser.label.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
                }
                chart.draw_series(stats.iter().map(|p| Circle::new((p.0, p.1), 5, c.filled()))).map_err(s)?;
                chart
                    .draw_series(
                        pts.iter()
                            .flat_map(|(x, v)| v.iter().map(move |a| Circle::new((*x, 100.0 * a), 2, BLACK.filled()))),
                    )
                    .map_err(s)?;
            }
            if let Some((si, x, note)) = &fig.highlight {
                if let Some(p) = fig.series.get(*si).and_then(|ser| ser.points.iter().find(|p| p.0 == *x)) {
                    if !p.1.is_empty() {
                        let mean = 100.0 * p.1.iter().sum::<f64>() / p.1.len() as f64;
                        chart
                            .draw_series(std::iter::once(Circle::new(
                                (*x, mean),
                                9,
                                RGBColor(255, 160, 0).stroke_width(3),
                            )))
                            .map_err(s)?;
                        // Left of the point when it is the rightmost value, so the note stays inside.
                        let h = if xs.iter().all(|v| v <= x) { HPos::Right } else { HPos::Left };
                        chart
                            .draw_series(std::iter::once(Text::new(
                                note.clone(),
                                (*x, mean + 0.02 * (yhi - ylo)),
                                text_style(14.0, RGBColor(170, 90, 0), h, VPos::Bottom),
                            )))
                            .map_err(s)?;
                    }
                }
            }
            if fig.series.iter().any(|ser| !ser.label.is_empty()) {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(180, 180, 180))
                    .label_font((FAMILY, 14))
                    .position(SeriesLabelPosition::LowerRight)
                    .draw()
                    .map_err(s)?;
            }
        }};
    }
    let mut builder = ChartBuilder::on(&plot_area);
    builder.caption(fig.title.clone(), (FAMILY, 20)).margin(18).x_label_area_size(50).y_label_area_size(64);
    let _ = w;
    if let Some(cats) = &fig.categories {
        let n = cats.len().max(1);
        let fmt_x = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < cats.len() {
                cats[i as usize].clone()
            } else {
                String::new()
            }
        };
        let chart = builder.build_cartesian_2d(-0.5f64..(n as f64 - 0.5), ylo..yhi).map_err(s)?;
        body!(chart, &fmt_x, n);
    } else if fig.log_x {
        let (a, b) = if xmax > xmin { (xmin / 2.0, xmax * 2.0) } else { (xmin / 3.0, xmin * 3.0) };
        let fmt_x = |x: &f64| fmt_num(*x);
        let chart = builder.build_cartesian_2d((a..b).log_scale(), ylo..yhi).map_err(s)?;
        body!(chart, &fmt_x, 10);
    } else {
        let pad = if xmax > xmin { (xmax - xmin) * 0.08 } else { xmin.abs().max(1.0) * 0.5 };
        let fmt_x = |x: &f64| fmt_num(*x);
        let chart = builder.build_cartesian_2d((xmin - pad)..(xmax + pad), ylo..yhi).map_err(s)?;
        body!(chart, &fmt_x, 10);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
