//! Model files: the card (`student.json`) that says how to rebuild a trained model, the student
//! folders `--save-students` writes, and reading a card back from a student folder or a `train`
//! run folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kd::core::BatchSource;
use kd::core::checkpoint::write_atomic;
use kd::data::registry::LoadOptions;
use kd::models::import::{WeightsFile, save_safetensors};
use serde::{Deserialize, Serialize};

/// The file `--save-students` writes beside the student's weights.
pub const STUDENT_CARD: &str = "student.json";
/// The weights file of a student folder.
pub const STUDENT_WEIGHTS: &str = "student.safetensors";

/// What is needed to rebuild a trained model and where its data came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// The architecture (`ModelSpec` name).
    pub model: String,
    /// Number of classes.
    pub classes: usize,
    /// `[channels, height, width]` of one input.
    pub input_shape: [usize; 3],
    /// The weights, relative to the card's folder.
    pub weights: PathBuf,
    /// The dataset it was trained on, and the loading options (so that `eval` prepares the test
    /// split exactly as training did).
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub data: Option<LoadOptions>,
    /// How it was trained (informative).
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// The epoch the weights are from, and the test accuracy there (informative).
    #[serde(default)]
    pub epoch: Option<usize>,
    #[serde(default)]
    pub test_top1: Option<f64>,
    /// The per-channel `(mean, std)` its inputs were normalised with, so that image files are
    /// prepared for `predict` as its training images were.
    #[serde(default)]
    pub normalization: Option<(Vec<f32>, Vec<f32>)>,
    /// The names of its classes, where the dataset has them.
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    /// The data files it was trained on, as they were (size, time, content hash): `eval` and
    /// `predict` on its recorded dataset refuse other content, naming the file.
    #[serde(default)]
    pub data_files: Vec<kd::core::files::FileFingerprint>,
}

/// Writes `model` to `dir` as `student.safetensors` (PyTorch's layout) with its card.
///
/// The folder is written whole ([`kd::core::atomic::write_folder_atomic`]): weights and card of
/// one write, never the weights of one and the card of another.
pub fn save_student<M: kd::core::burn::module::Module>(dir: &Path, model: &M, card: &ModelCard) -> Result<()> {
    let card_bytes = serde_json::to_vec_pretty(card)?;
    kd::core::atomic::write_folder_atomic(dir, |tmp| {
        save_safetensors(model, tmp.join(&card.weights))?;
        write_atomic(&tmp.join(STUDENT_CARD), &card_bytes)
    })?;
    Ok(())
}

/// The card of a student folder (`student.json`) or of a `train` run folder (`run.json`, whose
/// `best.ckpt` holds the student of the selected epoch).
pub fn read_model_folder(dir: &Path) -> Result<(ModelCard, WeightsFile)> {
    let card_path = dir.join(STUDENT_CARD);
    if card_path.is_file() {
        let text = kd::core::files::read_regular_text(&card_path)?;
        let mut card: ModelCard = serde_json::from_str(&text).with_context(|| format!("reading {}", card_path.display()))?;
        card.weights = dir.join(&card.weights);
        let weights = WeightsFile::new(&card.weights);
        return Ok((card, weights));
    }
    let run_path = dir.join("run.json");
    if !run_path.is_file() {
        bail!("{} holds neither {STUDENT_CARD} (a student folder of --save-students) nor run.json (a `train` run folder)", dir.display());
    }
    let run = kd::core::run_files::RunIdentity::read(dir)?;
    let experiment: kd::experiment::RunConfig = serde_json::from_value(run.experiment.clone())
        .with_context(|| format!("{}: `experiment` is not the configuration of a `train` run", run_path.display()))?;
    let (model, dataset, data) = (experiment.student, experiment.dataset, experiment.data);
    let loaded = kd::data::load_dataset(&dataset, &data)?;
    let (mean, std) = loaded.train.normalization();
    let weights = dir.join("best.ckpt");
    let card = ModelCard {
        model,
        classes: loaded.train.num_classes(),
        input_shape: loaded.train.input_shape(),
        weights: weights.clone(),
        dataset: Some(dataset),
        data: Some(data),
        method: Some(run.method),
        seed: Some(experiment.seed),
        epoch: None,
        test_top1: None,
        normalization: Some((mean.to_vec(), std.to_vec())),
        class_names: loaded.train.class_names().map(<[String]>::to_vec),
        data_files: experiment.data_files,
    };
    Ok((card, WeightsFile::new(weights)))
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::BufReader;

    use clap::Parser;
    use kd::core::burn::tensor::{Device, Tensor, TensorData};
    use kd::prelude::*;

    use super::*;
    use crate::{Cli, dispatch};

    fn run(args: &[&str]) -> Result<()> {
        dispatch(Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))?)
    }

    fn read_f32_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
        let npy = npyz::NpyFile::new(BufReader::new(File::open(path).unwrap())).unwrap();
        let shape = npy.shape().to_vec();
        (shape, npy.into_vec::<f32>().unwrap())
    }

    /// Train with `--save-students`, then predict, export, load the export back, evaluate,
    /// and distil from the trained run as a teacher: every command on one small task.
    #[test]
    fn trained_students_go_through_predict_eval_export_and_back() {
        let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bad-inputs/files");
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let config = |name: &str| {
            let text = std::fs::read_to_string(files.join(name)).unwrap().replace("{files}", &files.display().to_string());
            let path = t.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let out = t.join("train").display().to_string();
        run(&["train", "--config", &config("ce-teacher.toml"), "--out", &out, "--save-students"]).unwrap();
        let student = t.join("train/students/csv_blobs-ce-mlp-16-seed0");
        let card: ModelCard = serde_json::from_str(&std::fs::read_to_string(student.join(STUDENT_CARD)).unwrap()).unwrap();
        assert_eq!((card.model.as_str(), card.classes, card.input_shape, card.epoch), ("mlp-16", 3, [2, 1, 1], Some(2)));

        // Logits of a .npy through the command line, and of the exported file loaded back.
        let predicted = t.join("p.npy");
        let input = files.join("good.npy");
        let predict = |output: &Path, extra: &[&str]| {
            let (student, input, output) = (student.display().to_string(), input.display().to_string(), output.display().to_string());
            let mut argv = vec!["predict", "--run", &student, "--input", &input, "--output", &output];
            argv.extend_from_slice(extra);
            run(&argv).unwrap();
        };
        predict(&predicted, &[]);
        let (shape, logits) = read_f32_npy(&predicted);
        assert_eq!(shape, vec![2, 3]);
        let exported = t.join("student.safetensors");
        run(&["export", "--run", &student.display().to_string(), "--output", &exported.display().to_string()]).unwrap();
        let device = Device::flex();
        let fresh = ModelSpec::parse("mlp-16").unwrap().build([2, 1, 1], 3, &device).unwrap();
        let loaded = kd::models::import::load_safetensors(fresh, &exported, &[]).unwrap();
        let (_, values) = read_f32_npy(&input);
        let x: Tensor<4> = Tensor::from_data(TensorData::new(values, [2, 2, 1, 1]), &device);
        let again: Vec<f32> = loaded.forward(x).logits.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(logits, again);

        // Probabilities as CSV: a header and rows summing to one.
        let csv = t.join("p.csv");
        predict(&csv, &["--probabilities"]);
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("p_0,p_1,p_2"));
        for line in lines {
            let sum: f32 = line.split(',').map(|v| v.parse::<f32>().unwrap()).sum();
            assert!((sum - 1.0).abs() < 1e-5, "{line}");
        }

        // The evaluation of the saved student is the accuracy training recorded for it.
        let eval_dir = t.join("eval");
        run(&["eval", "--run", &student.display().to_string(), "--out", &eval_dir.display().to_string(), "--json"]).unwrap();
        let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(eval_dir.join("eval.json")).unwrap()).unwrap();
        assert!((eval["top1"].as_f64().unwrap() - card.test_top1.unwrap()).abs() < 1e-9, "{eval}");
        let confusion: Vec<Vec<usize>> = serde_json::from_value(eval["confusion"].clone()).unwrap();
        assert_eq!(confusion.iter().flatten().sum::<usize>(), eval["samples"].as_u64().unwrap() as usize);
        assert!(eval_dir.join("confusion.svg").is_file() && eval_dir.join("confusion.csv").is_file());

        // The `train` run folder itself (run.json, best.ckpt) is a teacher for KD.
        let run_dir = t.join("train/ce-mlp-16-seed0");
        let kd_out = t.join("kd");
        run(&[
            "train",
            "--config",
            &config("kd.toml"),
            "--out",
            &kd_out.display().to_string(),
            "--teacher-weights",
            &run_dir.display().to_string(),
        ])
        .unwrap();
        let records: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(kd_out.join("results.json")).unwrap()).unwrap();
        let teacher = records.iter().find(|r| r["method"] == "teacher").expect("a teacher row");
        assert!(teacher["weights"].as_str().unwrap().ends_with("best.ckpt"), "{teacher}");
        assert_eq!(teacher["epochs"], 0);
        let eval_run = t.join("eval-run");
        run(&["eval", "--run", &run_dir.display().to_string(), "--out", &eval_run.display().to_string(), "--json"]).unwrap();
        let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(eval_run.join("eval.json")).unwrap()).unwrap();
        assert_eq!(eval["top1"], teacher["last_acc"]);
        assert!(records.iter().any(|r| r["method"] == "kd" && r["error"].is_null()));
    }
}
