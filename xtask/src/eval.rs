//! `eval`: top-1, top-5, per-class accuracy, the confusion matrix and, on two-class tasks, the
//! binary metrics of a model on a dataset's test split. Top-k counts and binary metrics are
//! kd_core's (those training records), so `eval` of a saved student repeats its recorded accuracy.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use kd::core::BinaryMetrics;
use kd::core::burn::tensor::{Device, Tensor, TensorData};
use kd::core::checkpoint::write_atomic;
use kd::core::loss::topk_correct;
use kd::core::metrics::binary_metrics;
use serde::Serialize;

use crate::csv::csv_field;
use crate::loaded_model::{ModelArgs, dataset_inputs, softmax_rows};
use crate::plots::confusion_heatmap;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The dataset whose test split is evaluated (default: the run's).
    #[arg(long)]
    dataset: Option<String>,
    /// Folder for `eval.json`, `confusion.csv` and `confusion.svg`.
    #[arg(long, default_value = "target/kd-eval")]
    out: PathBuf,
    /// Evaluate on the model's own dataset even when its files changed since it was trained
    /// (a warning instead of the error).
    #[arg(long)]
    allow_changed_data: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
}

/// What `eval` measures.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub model: String,
    pub weights: PathBuf,
    pub dataset: String,
    pub samples: usize,
    /// The classes' names (from the model's card), where the dataset has them.
    pub class_names: Option<Vec<String>>,
    #[serde(flatten)]
    pub scores: Scores,
}

impl Evaluation {
    /// The name of class `c`: its dataset's name for it, else its index.
    fn class_name(&self, c: usize) -> String {
        self.class_names.as_ref().and_then(|n| n.get(c).cloned()).unwrap_or_else(|| c.to_string())
    }
}

/// The accuracy measures of a set of logits against their labels.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// Percent.
    pub top1: f64,
    /// Percent (top-k with k = min(5, classes)).
    pub top5: f64,
    /// Per class: samples and accuracy (percent; `null` for a class absent from the split).
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]`: counts.
    pub confusion: Vec<Vec<usize>>,
    /// Binary metrics (two-class tasks).
    pub binary: Option<BinaryMetrics>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassAccuracy {
    pub class: usize,
    pub samples: usize,
    pub accuracy: Option<f64>,
}

/// Top-1, top-5, per-class accuracy, confusion matrix and binary metrics of logits
/// (`labels.len()` rows of `classes`).
pub fn evaluation(logits: &[f32], labels: &[usize], classes: usize) -> Result<Scores> {
    ensure!(logits.len() == labels.len() * classes, "{} logits for {} samples of {classes} classes", logits.len(), labels.len());
    if let Some(&label) = labels.iter().find(|&&l| l >= classes) {
        bail!("label {label} outside the model's {classes} classes");
    }
    let rows: Tensor<2> = Tensor::from_data(TensorData::new(logits.to_vec(), [labels.len(), classes]), &Device::flex());
    let (top1, top5, predicted) = topk_correct(rows, labels, 5);
    ensure!(predicted.len() == labels.len(), "the top-k classes of {} samples came back as {}", labels.len(), predicted.len());
    let confusion = confusion_matrix(labels, &predicted, classes);
    let n = labels.len().max(1) as f64;
    let per_class = (0..classes)
        .map(|c| {
            let samples: usize = confusion[c].iter().sum();
            ClassAccuracy { class: c, samples, accuracy: (samples > 0).then(|| 100.0 * confusion[c][c] as f64 / samples as f64) }
        })
        .collect();
    let binary = if classes == 2 {
        let probs: Vec<f64> = softmax_rows(logits, 2).chunks(2).map(|p| f64::from(p[1])).collect();
        Some(binary_metrics(&probs, labels)?)
    } else {
        None
    };
    Ok(Scores { top1: 100.0 * top1 as f64 / n, top5: 100.0 * top5 as f64 / n, per_class, confusion, binary })
}

/// `confusion[true][predicted]`: how many samples of each class went to each class.
fn confusion_matrix(labels: &[usize], predicted: &[usize], classes: usize) -> Vec<Vec<usize>> {
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (&label, &p) in labels.iter().zip(predicted) {
        confusion[label][p] += 1;
    }
    confusion
}

pub fn eval(args: EvalArgs) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    ensure!(
        args.batch_size <= kd::core::train::MAX_BATCH_SIZE,
        "--batch-size {} is above the limit of {}",
        args.batch_size,
        kd::core::train::MAX_BATCH_SIZE
    );
    let loaded = args.model.load()?;
    let dataset = match args.dataset.clone().or(loaded.card.dataset.clone()) {
        Some(d) => d,
        None => bail!("name the dataset to evaluate on: --dataset NAME (`cargo xtask datasets` lists them)"),
    };
    let (inputs, labels, split) = dataset_inputs(&dataset, &loaded.card, args.allow_changed_data)?;
    let classes = loaded.card.classes;
    let values = loaded.logits(&inputs, labels.len(), args.batch_size)?;
    let scores = evaluation(&values, &labels, classes)?;
    let result = Evaluation {
        model: loaded.card.model.clone(),
        weights: loaded.weights.resolved(),
        dataset: split,
        samples: labels.len(),
        class_names: loaded.card.class_names.clone().filter(|n| n.len() == classes),
        scores,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    write_atomic(&args.out.join("eval.json"), &serde_json::to_vec_pretty(&result)?)?;
    write_confusion_csv(&args.out.join("confusion.csv"), &result)?;
    let title = format!("{} on {}: top-1 {:.2} %", result.model, result.dataset, result.scores.top1);
    confusion_heatmap(&args.out.join("confusion.svg"), &title, &result.scores.confusion, &|c| result.class_name(c))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} samples): top-1 {:.2} %, top-5 {:.2} %",
        result.model, result.dataset, result.samples, result.scores.top1, result.scores.top5
    );
    if let Some(b) = &result.scores.binary {
        println!(
            "binary: accuracy {:.2} %, F1 {:.4}, ROC-AUC {:.4}, PR-AUC {:.4}, Brier {:.4}, ECE {:.4}",
            b.accuracy, b.f1, b.roc_auc, b.pr_auc, b.brier, b.ece
        );
    }
    println!("| class | samples | accuracy (%) |");
    println!("|---|---|---|");
    for c in &result.scores.per_class {
        println!("| {} | {} | {} |", result.class_name(c.class), c.samples, c.accuracy.map_or("-".into(), |a| format!("{a:.2}")));
    }
    println!("eval.json, confusion.csv and confusion.svg in {}", args.out.display());
    Ok(())
}

/// The confusion matrix as CSV, rows and columns headed by the class names (or indices).
fn write_confusion_csv(path: &Path, result: &Evaluation) -> Result<()> {
    let confusion = &result.scores.confusion;
    let name = |c: usize| csv_field(&result.class_name(c));
    let mut text = String::from("true\\predicted");
    for c in 0..confusion.len() {
        text.push_str(&format!(",{}", name(c)));
    }
    text.push('\n');
    for (t, row) in confusion.iter().enumerate() {
        text.push_str(&name(t));
        for v in row {
            text.push_str(&format!(",{v}"));
        }
        text.push('\n');
    }
    Ok(write_atomic(path, text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_counts() {
        // Three samples of three classes: the first two right, the third predicted as class 0.
        let logits = [3.0, 1.0, 0.0, 0.0, 2.0, 1.0, 5.0, 0.0, 4.0];
        let scores = evaluation(&logits, &[0, 1, 2], 3).unwrap();
        assert!((scores.top1 - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(scores.top5, 100.0);
        assert_eq!(scores.confusion, vec![vec![1, 0, 0], vec![0, 1, 0], vec![1, 0, 0]]);
        assert_eq!(scores.per_class[2].accuracy, Some(0.0));
        assert!(scores.binary.is_none());
        // A label outside the classes is an error, not an index panic.
        assert!(evaluation(&logits, &[0, 1, 3], 3).is_err());
    }
}
