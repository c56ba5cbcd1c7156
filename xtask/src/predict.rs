//! `predict`: a model's logits or probabilities on a `.npy` of inputs, a dataset's test split,
//! or image files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use kd::core::atomic::refuse_overwriting_input;
use kd::core::checkpoint::write_atomic;

use crate::csv::csv_field;
use crate::loaded_model::{LoadedModel, ModelArgs, dataset_inputs, preparation, softmax_rows};
use crate::npy::{read_npy_inputs, write_npy};

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A float32 `.npy` of shape [N, C, H, W]; a dataset name (its test split, prepared as in
    /// training); or image files and folders of images (JPEG, PNG, BMP; several allowed),
    /// prepared as the student's training images were (size, channels, normalisation).
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<String>,
    /// Where to write: `.npy` (float32 [N, classes]) or `.csv` (a header, one row per sample);
    /// for image files also `.json`, and the rows name each file and its predicted class.
    #[arg(long)]
    output: PathBuf,
    /// Write softmax probabilities instead of logits.
    #[arg(long)]
    probabilities: bool,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
}

pub fn predict(args: PredictArgs) -> Result<()> {
    let ext = args.output.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    ensure!(
        args.batch_size <= kd::core::train::MAX_BATCH_SIZE,
        "--batch-size {} is above the limit of {}",
        args.batch_size,
        kd::core::train::MAX_BATCH_SIZE
    );
    let images = args.input.iter().all(|i| {
        let path = Path::new(i);
        path.is_dir() || kd::data::images::is_image_name(&path.file_name().unwrap_or_default().to_string_lossy())
    });
    if images {
        return predict_images(&args, &ext);
    }
    ensure!(ext == "npy" || ext == "csv", "--output {}: write `.npy` or `.csv`", args.output.display());
    let [input] = args.input.as_slice() else {
        bail!("--input: several values are image files or folders only; {} is not one", args.input.join(", "));
    };
    let loaded = args.model.load()?;
    refuse_overwriting_inputs(&args, &loaded)?;
    let (inputs, n) = if input.to_ascii_lowercase().ends_with(".npy") {
        read_npy_inputs(Path::new(input), loaded.card.input_shape)?
    } else {
        let (inputs, labels, _) = dataset_inputs(input, &loaded.card, false)?;
        (inputs, labels.len())
    };
    let classes = loaded.card.classes;
    let mut values = loaded.logits(&inputs, n, args.batch_size)?;
    if args.probabilities {
        values = softmax_rows(&values, classes);
    }
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if ext == "npy" {
        write_npy(&args.output, &[n, classes], &values)?;
    } else {
        let mut text = String::new();
        let kind = if args.probabilities { "p" } else { "logit" };
        text.push_str(&(0..classes).map(|c| format!("{kind}_{c}")).collect::<Vec<_>>().join(","));
        text.push('\n');
        for row in values.chunks(classes) {
            text.push_str(&row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
            text.push('\n');
        }
        write_atomic(&args.output, text.as_bytes())?;
    }
    println!(
        "{} {} of {n} samples written to {}",
        classes,
        if args.probabilities { "probabilities" } else { "logits" },
        args.output.display()
    );
    Ok(())
}

/// An `--output` that is one of the inputs (a `--input` file, the weights) is refused before
/// anything is written.
fn refuse_overwriting_inputs(args: &PredictArgs, loaded: &LoadedModel) -> Result<()> {
    let weights = loaded.weights.resolved();
    let inputs = args.input.iter().map(|i| ("input", Path::new(i.as_str()))).chain([("weights file", weights.as_path())]);
    Ok(refuse_overwriting_input(&args.output, inputs)?)
}

/// `predict --input` with image files or folders: each file's predicted class and probabilities.
fn predict_images(args: &PredictArgs, ext: &str) -> Result<()> {
    ensure!(matches!(ext, "csv" | "json" | "npy"), "--output {}: write `.csv`, `.json` or `.npy` (probabilities)", args.output.display());
    if args.probabilities {
        eprintln!("warning: --probabilities is not used: image files always give probabilities");
    }
    let loaded = args.model.load()?;
    refuse_overwriting_inputs(args, &loaded)?;
    let card = &loaded.card;
    let [c, h, w] = card.input_shape;
    ensure!(c == 1 || c == 3, "the model takes {c} input channels; image files give 1 (grey) or 3 (RGB)");
    let (mean, std, class_names) = preparation(card)?;
    ensure!(mean.len() == c && std.len() == c, "the card's normalisation has {} channels; the model takes {c}", mean.len());
    let resize = card.data.as_ref().is_some_and(|d| d.resize);
    let spec = kd::data::DecodeSpec { width: w as u32, height: h as u32, resize, channels: c };
    let paths: Vec<PathBuf> = args.input.iter().map(PathBuf::from).collect();
    let (files, bytes) = kd::data::read_image_files(&paths, &spec)?;
    let plane = h * w;
    let inputs: Vec<f32> =
        bytes.iter().enumerate().map(|(i, &b)| (b as f32 / 255.0 - mean[(i / plane) % c]) / std[(i / plane) % c]).collect();
    let n = files.len();
    let probs = softmax_rows(&loaded.logits(&inputs, n, args.batch_size)?, card.classes);
    let predicted: Vec<usize> = probs
        .chunks(card.classes)
        .map(|row| row.iter().enumerate().fold((0, f32::MIN), |best, (k, &p)| if p > best.1 { (k, p) } else { best }).0)
        .collect();
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match ext {
        "npy" => write_npy(&args.output, &[n, card.classes], &probs)?,
        "json" => {
            let rows: Vec<serde_json::Value> = files
                .iter()
                .zip(probs.chunks(card.classes))
                .zip(&predicted)
                .map(|((file, row), &k)| {
                    serde_json::json!({
                        "file": file,
                        "predicted": class_names[k],
                        "probabilities": class_names.iter().zip(row).map(|(name, p)| (name.clone(), serde_json::json!(*p))).collect::<serde_json::Map<_, _>>(),
                    })
                })
                .collect();
            write_atomic(&args.output, &serde_json::to_vec_pretty(&rows)?)?;
        }
        _ => {
            let mut text = String::from("file,predicted");
            class_names.iter().for_each(|name| text.push_str(&format!(",{}", csv_field(&format!("p_{name}")))));
            text.push('\n');
            for ((file, row), &k) in files.iter().zip(probs.chunks(card.classes)).zip(&predicted) {
                text.push_str(&format!("{},{}", csv_field(&file.display().to_string()), csv_field(&class_names[k])));
                row.iter().for_each(|p| text.push_str(&format!(",{p}")));
                text.push('\n');
            }
            write_atomic(&args.output, text.as_bytes())?;
        }
    }
    println!("predicted classes and probabilities of {n} image files written to {}", args.output.display());
    Ok(())
}
