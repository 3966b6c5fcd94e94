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

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
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

/// Colours of overlaid runs (Tableau 10).
pub(crate) const PALETTE: [RGBColor; 10] = [
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

pub(crate) fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

pub(crate) fn draw_err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |msg| PlotError::Draw { path: path.display().to_string(), msg }
}

pub(crate) fn to_text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

pub(crate) fn text_style(size: f64, colour: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle { font: (FAMILY, size).into_font(), color: colour.to_backend_color(), pos: Pos::new(h, v) }
}

mod runs;
mod sweep;
#[cfg(test)]
mod tests;

pub use runs::{fmt_num, label_runs, plot_runs, runs_figure_size, RunCurves};
pub use sweep::{plot_sweep, SweepFigure, SweepSeries, SWEEP_FIGURE_SIZE};
