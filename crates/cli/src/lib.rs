//! The `engram` command line: argument parsing (clap) and the commands.
//!
//! The binary (`src/main.rs` of the root package) calls [`main`], which returns the process exit
//! code: 0 on success, 1 when a command fails (the error is printed with its causes), 2 for
//! malformed arguments (clap's convention).

mod ckpt;
mod common;
mod config;
pub use config::check_config_text;
mod explain_si;
mod plot;
mod preflight;
mod presets;
mod reproduce;
mod run;
mod session;
mod sweep;
mod train;

use clap::{Parser, Subcommand};

/// engram: a from-scratch continual-learning engine (tape autodiff, fused Synaptic Intelligence
/// step, MNIST benchmarks). No ML framework: every gradient is checked against finite differences.
#[derive(Parser, Debug)]
#[command(name = "engram", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a plain 10-class MLP on MNIST and report its test accuracy (a sanity check of the
    /// engine: no continual learning involved).
    Train(train::TrainArgs),
    /// One continual-learning run: train on each task in turn, test on every task after each,
    /// print the accuracy matrix R and ACC, BWT, FWT, forgetting. Unset hyperparameters follow
    /// the benchmark's published protocol.
    Run(Box<run::RunArgs>),
    /// Run a published protocol over several seeds and print our mean and spread next to the
    /// published figures.
    Reproduce(reproduce::ReproduceArgs),
    /// Draw runs' figure from their JSON files: each task's accuracy after each training task
    /// (runs overlaid), the average accuracy, and R as an annotated heatmap (PNG or SVG).
    Plot(plot::PlotArgs),
    /// Sweep hyperparameters over a grid and seeds, whole runs side by side; choose on a
    /// validation split of the training data, then report the chosen setting's test ACC.
    /// `engram sweep merge DIR` gathers the results of runs made elsewhere (--emit-jobs).
    Sweep(Box<sweep::SweepArgs>),
    /// Continue a stopped run (`engram run --checkpoint-dir DIR`) from its newest checkpoint;
    /// the result is bit-identical to an uninterrupted run's, and is written where the run was
    /// asked to write it (--out, --csv, --plot).
    Resume(ckpt::ResumeArgs),
    /// Print what a checkpoint holds: the run, its progress, R so far, and every tensor (name,
    /// dtype, shape, statistics), after verifying each tensor's sha256.
    Inspect(ckpt::InspectArgs),
    /// A printed walk-through of Synaptic Intelligence on the SI paper's quadratic toy problem:
    /// how the path integral omega and the importance Omega relate to the Hessian's diagonal.
    ExplainSi(explain_si::ExplainSiArgs),
}

/// Parses the process arguments and runs the command; returns the exit code.
pub fn main() -> i32 {
    let cli = match config::parse(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let threads = match &cli.command {
        Command::Train(a) => a.compute.threads,
        Command::Run(a) => a.compute.threads,
        Command::Reproduce(a) => a.compute.threads,
        Command::Resume(a) => a.compute.threads,
        _ => None,
    };
    let result = common::ComputeArgs::pool(threads).and_then(|pool| {
        engram_tape::cpu::install_polling(&pool, || match cli.command {
            Command::Train(a) => train::run(a),
            Command::Run(a) => run::run(*a),
            Command::Reproduce(a) => reproduce::run(a),
            Command::Plot(a) => plot::run(a),
            Command::Sweep(a) => sweep::run(*a),
            Command::ExplainSi(a) => explain_si::run(a),
            Command::Resume(a) => ckpt::resume(a),
            Command::Inspect(a) => ckpt::inspect(a),
        })
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            1
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks of every command and flag (run in debug builds).
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
