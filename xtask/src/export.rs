//! `export`: a model (a run folder, or weights in any format) written as safetensors in
//! PyTorch's layout.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use clap::Args;
use kd::models::import::save_safetensors;

use crate::loaded_model::ModelArgs;

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The safetensors file to write (PyTorch's layout, BatchNorm counters included).
    #[arg(long)]
    output: PathBuf,
}

pub fn export(args: ExportArgs) -> Result<()> {
    ensure!(
        args.output.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors")),
        "--output {}: the export format is safetensors (name the file `.safetensors`)",
        args.output.display()
    );
    let loaded = args.model.load()?;
    kd::core::atomic::refuse_overwriting_input(&args.output, [("weights file", loaded.weights.resolved().as_path())])?;
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    save_safetensors(&loaded.model, &args.output)?;
    let [c, h, w] = loaded.card.input_shape;
    println!("{} written to {}", loaded.card.model, args.output.display());
    println!(
        "load it in PyTorch: python3 xtask/pytorch/load_exported.py --model {} --classes {} --input-shape {c}x{h}x{w} --weights {}",
        loaded.card.model,
        loaded.card.classes,
        args.output.display()
    );
    Ok(())
}
