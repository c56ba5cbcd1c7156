//! `cargo xtask`: the project's jobs.
//!
//! - `bench`: trains teachers (or reuses them from the on-disk cache), students alone and with
//!   each method, on the bundled data; prints a table and writes `results.json` and `results.md`.
//! - `train --config FILE`: one experiment described by a TOML file (see `configs/`).
//! - `throughput`: images per second of one distillation step per method.
//! - `predict`, `eval`, `export`: a trained model (a run folder, or weights from PyTorch) on new
//!   inputs, on a dataset's test split, or written as safetensors for PyTorch.
//! - `datasets`, `models`, `methods`: what is available, with sizes, papers and teacher needs.

#[cfg(test)]
mod bad_inputs;
mod bench;
mod catalog;
mod chains;
mod claims;
mod csv;
mod eval;
mod experiment;
mod export;
mod loaded_model;
mod model_files;
mod npy;
mod plots;
mod predict;
mod report;
mod throughput;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Knowledge-distillation jobs: bench, train, predict, eval, export")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train and compare methods on the bundled data; print a table, write results.
    Bench(Box<bench::BenchArgs>),
    /// Run one experiment described by a TOML file.
    Train(experiment::TrainArgs),
    /// Images per second of one distillation step, per method and batch size.
    Throughput(throughput::ThroughputArgs),
    /// Logits (or probabilities) of a model on a `.npy` of inputs or a dataset's test split.
    Predict(predict::PredictArgs),
    /// Top-1, top-5, per-class accuracy, confusion matrix (and binary metrics) on a test split.
    Eval(eval::EvalArgs),
    /// Write a model (a run folder, or weights in any format) as safetensors in PyTorch's layout.
    Export(export::ExportArgs),
    /// List every dataset: task, split sizes, classes, class balance.
    Datasets(catalog::DatasetsArgs),
    /// List the model zoo: parameters and multiply-adds for an input shape.
    Models(catalog::ModelsArgs),
    /// List every method: name, paper, what it needs from a teacher, its crate.
    Methods,
}

/// Runs the command; an error is printed as anyhow prints it (the message, then each cause),
/// without the backtrace anyhow captures under `RUST_BACKTRACE`: a user's error is the message,
/// not a trace of this program (panics still print theirs).
fn main() -> std::process::ExitCode {
    // Before any thread starts: a step's freed buffers stay for the next step (see the module).
    kd::allocator::retain_freed_memory();
    match dispatch(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {err}");
            let causes: Vec<String> = err.chain().skip(1).map(|c| c.to_string()).collect();
            if !causes.is_empty() {
                eprintln!("\nCaused by:");
                for (i, cause) in causes.iter().enumerate() {
                    eprintln!("    {i}: {cause}");
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command line (the tests drive the jobs through it too).
fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench(args) => bench::run(*args),
        Command::Train(args) => experiment::run(args),
        Command::Throughput(args) => throughput::run(args),
        Command::Predict(args) => predict::predict(args),
        Command::Eval(args) => eval::eval(args),
        Command::Export(args) => export::export(args),
        Command::Datasets(args) => catalog::datasets(args),
        Command::Models(args) => catalog::models(args),
        Command::Methods => catalog::methods(),
    }
}
