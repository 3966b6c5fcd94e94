//! `engram plot`: the figure of one or more runs from their JSON files.

use anyhow::{bail, Context, Result};
use clap::Args;
use engram_plot::{self as plot, RunCurves};
use std::path::PathBuf;

/// Arguments of `engram plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run files written by `engram run --out` (or the per-run files of `engram sweep`). Runs
    /// must have the same number of tasks; they are overlaid in the order given.
    #[arg(value_name = "RUN.json", required = true)]
    pub runs: Vec<PathBuf>,
    /// The figure file; its extension (.png or .svg) picks the format. The figure has one panel
    /// per task (its accuracy after each training task, grey before the task is trained), a
    /// panel with the average accuracy over the tasks seen so far, and each run's accuracy
    /// matrix R as an annotated heatmap.
    #[arg(long, value_name = "FIG.png|FIG.svg")]
    pub out: PathBuf,
}

/// Reads a run file for plotting, with errors that name the file.
pub fn read_run(path: &std::path::Path) -> Result<RunCurves> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(RunCurves::from_json(&v, &path.display().to_string())?)
}

/// Runs `engram plot`.
pub fn run(a: PlotArgs) -> Result<()> {
    plot::Format::of(&a.out)?;
    crate::preflight::check_output_file("--out", &a.out)?;
    if a.runs.is_empty() {
        bail!("give at least one run file");
    }
    let runs = a.runs.iter().map(|p| read_run(p)).collect::<Result<Vec<_>>>()?;
    plot::plot_runs(&runs, &a.out)?;
    let (w, h) = plot::runs_figure_size(runs[0].tasks(), runs.len());
    println!("wrote {} ({w} x {h}, {} run(s), {} tasks)", a.out.display(), runs.len(), runs[0].tasks());
    Ok(())
}
