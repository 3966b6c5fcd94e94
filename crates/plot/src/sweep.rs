//! The sweep figure: ACC (mean over seeds, min-max band, each seed a dot) against a swept
//! hyperparameter.

use crate::*;
use plotters::coord::Shift;
use plotters::style::text_anchor::{HPos, VPos};
use std::path::Path;

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
            draw_sweep(&root, fig, &xs).and_then(|_| root.present().map_err(to_text))
        }
        Format::Svg => {
            let root = SVGBackend::new(path, SWEEP_FIGURE_SIZE).into_drawing_area();
            draw_sweep(&root, fig, &xs).and_then(|_| root.present().map_err(to_text))
        }
    };
    result.map_err(draw_err(path))
}

fn draw_sweep<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &SweepFigure, xs: &[f64]) -> Result<(), String> {
    root.fill(&WHITE).map_err(to_text)?;
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
            .map_err(to_text)?;
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
                .map_err(to_text)?;
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
                    chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.18).filled()))).map_err(to_text)?;
                }
                for p in &stats {
                    chart
                        .draw_series(std::iter::once(PathElement::new(vec![(p.0, p.2), (p.0, p.3)], c.stroke_width(1))))
                        .map_err(to_text)?;
                }
                let series = chart
                    .draw_series(LineSeries::new(stats.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))
                    .map_err(to_text)?;
                if !ser.label.is_empty() {
                    series
                        .label(ser.label.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
                }
                chart.draw_series(stats.iter().map(|p| Circle::new((p.0, p.1), 5, c.filled()))).map_err(to_text)?;
                chart
                    .draw_series(
                        pts.iter()
                            .flat_map(|(x, v)| v.iter().map(move |a| Circle::new((*x, 100.0 * a), 2, BLACK.filled()))),
                    )
                    .map_err(to_text)?;
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
                            .map_err(to_text)?;
                        // Left of the point when it is the rightmost value, so the note stays inside.
                        let h = if xs.iter().all(|v| v <= x) { HPos::Right } else { HPos::Left };
                        chart
                            .draw_series(std::iter::once(Text::new(
                                note.clone(),
                                (*x, mean + 0.02 * (yhi - ylo)),
                                text_style(14.0, RGBColor(170, 90, 0), h, VPos::Bottom),
                            )))
                            .map_err(to_text)?;
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
                    .map_err(to_text)?;
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
        let chart = builder.build_cartesian_2d(-0.5f64..(n as f64 - 0.5), ylo..yhi).map_err(to_text)?;
        body!(chart, &fmt_x, n);
    } else if fig.log_x {
        let (a, b) = if xmax > xmin { (xmin / 2.0, xmax * 2.0) } else { (xmin / 3.0, xmin * 3.0) };
        let fmt_x = |x: &f64| fmt_num(*x);
        let chart = builder.build_cartesian_2d((a..b).log_scale(), ylo..yhi).map_err(to_text)?;
        body!(chart, &fmt_x, 10);
    } else {
        let pad = if xmax > xmin { (xmax - xmin) * 0.08 } else { xmin.abs().max(1.0) * 0.5 };
        let fmt_x = |x: &f64| fmt_num(*x);
        let chart = builder.build_cartesian_2d((xmin - pad)..(xmax + pad), ylo..yhi).map_err(to_text)?;
        body!(chart, &fmt_x, 10);
    }
    Ok(())
}
