//! Models outside training: `predict`, `eval` and `export`, and the student folders that
//! `--save-students` writes.
//!
//! A model is named either by a folder (a `train` run folder: its `run.json` and `best.ckpt`;
//! or a student folder of `--save-students`: its `student.json`) or by its parts: `--model`,
//! `--classes`, `--input-shape` and `--weights` (any format `kd::models::import::load_weights`
//! reads: `.pth`, `.safetensors`, `.ckpt`).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use kd::core::burn::tensor::{Device, Tensor, TensorData};
use kd::core::checkpoint::write_atomic;
use kd::core::metrics::binary_metrics;
use kd::core::{BatchSource, BinaryMetrics};
use kd::data::registry::LoadOptions;
use kd::models::import::{WeightsFile, load_weights, save_safetensors};
use kd::prelude::*;
use npyz::WriterBuilder;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use kd::data::DatasetSplits;

use crate::experiment::{open_device, sanitize};
use crate::report::Record;

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
}

/// Writes `model` to `dir` as `student.safetensors` (PyTorch's layout) with its card.
pub fn save_student<M: kd::core::burn::module::Module>(dir: &Path, model: &M, card: &ModelCard) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    save_safetensors(model, dir.join(&card.weights))?;
    write_atomic(&dir.join(STUDENT_CARD), &serde_json::to_vec_pretty(card)?)?;
    Ok(())
}

/// Writes a trained student to `root/<dataset>-<method>-<student>-seed<N>/` (weights and card;
/// the dataset as the record names it) and returns that folder. `dataset` and `options` are what
/// `load_dataset` was given, so that `eval` prepares the test split as training did.
pub fn save_student_run(
    root: &Path,
    record: &Record,
    student: &AnyModel,
    dataset: &str,
    options: &LoadOptions,
    data: &DatasetSplits,
) -> Result<PathBuf> {
    let dir =
        root.join(format!("{}-{}-{}-seed{}", sanitize(&record.dataset), sanitize(&record.method), sanitize(&record.student), record.seed));
    let card = ModelCard {
        model: record.student.clone(),
        classes: data.train.num_classes(),
        input_shape: data.train.input_shape(),
        weights: STUDENT_WEIGHTS.into(),
        dataset: Some(dataset.to_string()),
        data: Some(options.clone()),
        method: Some(record.method.clone()),
        seed: Some(record.seed),
        epoch: Some(record.curve.len()),
        test_top1: Some(record.last_acc),
        normalization: Some((data.train.normalization().0.to_vec(), data.train.normalization().1.to_vec())),
        class_names: data.train.class_names().map(<[String]>::to_vec),
    };
    save_student(&dir, student, &card)?;
    Ok(dir)
}

/// The flags `train` and `bench` share: a teacher from a file, and the students written out.
#[derive(Args, Debug, Clone, Default)]
pub struct ModelFileFlags {
    /// Load the teacher from this file instead of training it: `.pth`/`.pt` (PyTorch),
    /// `.safetensors`, a checkpoint of this project or a `train` run folder (`train`: overrides
    /// the file's `teacher_weights`; `bench`: the architecture is `--teacher`, one dataset only).
    #[arg(long)]
    pub teacher_weights: Option<PathBuf>,
    /// The key of a PyTorch checkpoint's dict that holds the teacher's state dict (default:
    /// `model`, then `state_dict`, whichever the file has).
    #[arg(long, requires = "teacher_weights")]
    pub teacher_key: Option<String>,
    /// Also write each trained student (its last epoch) as safetensors with a `student.json`,
    /// under `OUT/students/`, for `predict`, `eval` and `export`.
    #[arg(long)]
    pub save_students: bool,
}

/// Which model: a folder, or its parts.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A `train` run folder, or a student folder written by `--save-students`.
    #[arg(long, conflicts_with_all = ["model", "weights", "classes", "input_shape"])]
    run: Option<PathBuf>,
    /// The architecture (`cargo xtask models` lists them).
    #[arg(long, requires_all = ["weights", "classes", "input_shape"])]
    model: Option<String>,
    /// Number of classes.
    #[arg(long)]
    classes: Option<usize>,
    /// Input shape CxHxW (`3x32x32`).
    #[arg(long, value_parser = parse_shape)]
    input_shape: Option<[usize; 3]>,
    /// The weights: `.pth`/`.pt` (PyTorch), `.safetensors`, or a checkpoint of this project.
    #[arg(long, requires = "model")]
    weights: Option<PathBuf>,
    /// The key of a PyTorch checkpoint's dict that holds the state dict (default: `model`, then
    /// `state_dict`, whichever the file has, else the top level).
    #[arg(long, requires = "weights")]
    weights_key: Option<String>,
    /// Backend (flex, tch, wgpu...; each but flex needs its cargo feature).
    #[arg(long, default_value = "flex")]
    backend: String,
}

/// `CxHxW` as three positive sizes.
pub fn parse_shape(text: &str) -> Result<[usize; 3]> {
    let dims: Vec<usize> = text
        .split('x')
        .map(|d| d.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("input shape `{text}`: expected CxHxW with positive integers, such as 3x32x32"))?;
    match dims[..] {
        [c, h, w] if c > 0 && h > 0 && w > 0 => Ok([c, h, w]),
        _ => bail!("input shape `{text}`: expected CxHxW with positive integers, such as 3x32x32"),
    }
}

/// A model ready to run, and what is known about it.
pub struct LoadedModel {
    pub model: AnyModel,
    pub card: ModelCard,
    pub weights: WeightsFile,
    pub device: Device,
}

impl ModelArgs {
    /// The card of the named model, and the weights file it points at.
    fn card(&self) -> Result<(ModelCard, WeightsFile)> {
        if let Some(dir) = &self.run {
            return read_folder(dir);
        }
        let (Some(model), Some(classes), Some(input_shape), Some(weights)) = (&self.model, self.classes, self.input_shape, &self.weights)
        else {
            bail!("name the model: `--run DIR`, or `--model SPEC --classes N --input-shape CxHxW --weights FILE`");
        };
        let card = ModelCard {
            model: model.clone(),
            classes,
            input_shape,
            weights: weights.clone(),
            dataset: None,
            data: None,
            method: None,
            seed: None,
            epoch: None,
            test_top1: None,
            normalization: None,
            class_names: None,
        };
        Ok((card, WeightsFile { path: weights.clone(), key: self.weights_key.clone(), remap: Vec::new() }))
    }

    /// Builds the model on the chosen backend and loads its weights.
    pub fn load(&self) -> Result<LoadedModel> {
        let (card, weights) = self.card()?;
        ensure!(card.classes > 0, "--classes must be at least 1");
        let (device, _) = open_device(&self.backend)?;
        let spec = ModelSpec::parse(&card.model)?;
        let model = spec.build(card.input_shape, card.classes, &device)?;
        let model =
            load_weights(model, &weights).with_context(|| format!("loading {} into {}", weights.resolved().display(), card.model))?;
        eprintln!("model {} ({} classes, input {:?}) from {}", card.model, card.classes, card.input_shape, weights.resolved().display());
        Ok(LoadedModel { model, card, weights, device })
    }
}

/// The card of a student folder (`student.json`) or of a `train` run folder (`run.json`, whose
/// `best.ckpt` holds the student of the selected epoch).
fn read_folder(dir: &Path) -> Result<(ModelCard, WeightsFile)> {
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
    let text = kd::core::files::read_regular_text(&run_path)?;
    let run: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("reading {}", run_path.display()))?;
    let experiment = &run["experiment"];
    let field = |name: &str| {
        experiment[name].as_str().map(str::to_string).with_context(|| format!("{}: `experiment.{name}` is missing", run_path.display()))
    };
    let (model, dataset) = (field("student")?, field("dataset")?);
    let data: LoadOptions =
        serde_json::from_value(experiment["data"].clone()).with_context(|| format!("{}: `experiment.data`", run_path.display()))?;
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
        method: run["method"].as_str().map(str::to_string),
        seed: experiment["seed"].as_u64(),
        epoch: None,
        test_top1: None,
        normalization: Some((mean.to_vec(), std.to_vec())),
        class_names: loaded.train.class_names().map(<[String]>::to_vec),
    };
    Ok((card, WeightsFile::new(weights)))
}

/// Logits of `inputs` (`[n, c, h, w]`, row-major), `batch` samples at a time.
fn logits(loaded: &LoadedModel, inputs: &[f32], n: usize, batch: usize) -> Result<Vec<f32>> {
    let [c, h, w] = loaded.card.input_shape;
    let per = c * h * w;
    let mut out = Vec::with_capacity(n * loaded.card.classes);
    for start in (0..n).step_by(batch.max(1)) {
        let rows = batch.min(n - start);
        let chunk = inputs[start * per..(start + rows) * per].to_vec();
        let x: Tensor<4> = Tensor::from_data(TensorData::new(chunk, [rows, c, h, w]), &loaded.device);
        let values = loaded.model.forward(x).logits.into_data().convert::<f32>();
        out.extend(values.try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("reading logits back: {e:?}"))?);
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        bail!("the model's logit {} of sample {} is not finite ({})", i % loaded.card.classes, i / loaded.card.classes, out[i]);
    }
    Ok(out)
}

/// Inputs and labels of a dataset's test split, prepared as in training.
fn dataset_inputs(name: &str, card: &ModelCard) -> Result<(Vec<f32>, Vec<usize>, String)> {
    // The run's own options when the dataset is the one it trained on: the same normalisation.
    let options = match (&card.dataset, &card.data) {
        (Some(d), Some(o)) if d == name => o.clone(),
        // Another image folder: decoded and normalised as the model's training images were.
        (_, o) if name.starts_with("images:") => {
            let (mean, std, _) = preparation(card)?;
            let o = o.clone().unwrap_or_default();
            LoadOptions {
                image_size: o.image_size.or(Some(card.input_shape[1])),
                resize: o.resize,
                channels: Some(card.input_shape[0]),
                mean: Some(mean),
                std: Some(std),
                decode_cache: o.decode_cache,
                ..LoadOptions::default()
            }
        }
        _ => LoadOptions::default(),
    };
    let data = kd::data::load_dataset(name, &options)?;
    data.print_warnings();
    if let (Some(model_names), Some(data_names)) = (&card.class_names, data.test.class_names()) {
        ensure!(
            model_names.as_slice() == data_names,
            "dataset {name} has classes {}; the model was trained on {}",
            data_names.join(", "),
            model_names.join(", ")
        );
    }
    ensure!(
        data.test.input_shape() == card.input_shape,
        "dataset {name} has inputs {:?}; the model takes {:?}",
        data.test.input_shape(),
        card.input_shape
    );
    ensure!(
        data.test.num_classes() == card.classes,
        "dataset {name} has {} classes; the model has {}",
        data.test.num_classes(),
        card.classes
    );
    let host = Device::flex();
    let indices: Vec<usize> = (0..data.test.len()).collect();
    let mut inputs = Vec::with_capacity(data.test.len() * card.input_shape.iter().product::<usize>());
    let mut labels = Vec::with_capacity(data.test.len());
    for chunk in indices.chunks(1000) {
        let batch = data.test.batch(chunk, 0, 0, &host)?;
        inputs.extend(batch.inputs.into_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?);
        labels.extend(batch.labels_host);
    }
    Ok((inputs, labels, data.test.name()))
}

/// Reads a float32 `.npy` of shape `[n, c, h, w]` matching the model's input.
fn read_npy_inputs(path: &Path, shape: [usize; 3]) -> Result<(Vec<f32>, usize)> {
    kd::core::files::check_regular(path)?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).with_context(|| format!("{}: not a readable .npy file", path.display()))?;
    let dims: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let dtype = npy.dtype();
    let float32 = matches!(&dtype, npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4);
    ensure!(float32, "{}: dtype {} where float32 is needed (numpy: x.astype(np.float32))", path.display(), dtype.descr());
    ensure!(npy.order() == npyz::Order::C, "{}: Fortran order; save a C-ordered array (np.ascontiguousarray)", path.display());
    let [c, h, w] = shape;
    ensure!(
        dims.len() == 4 && dims[1..] == [c, h, w],
        "{}: shape {dims:?}; the model takes [N, {c}, {h}, {w}] (float32, NCHW)",
        path.display()
    );
    let n = dims[0];
    let values: Vec<f32> = npy.into_vec::<f32>().with_context(|| format!("{}: reading the values", path.display()))?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let per = c * h * w;
        bail!("{}: sample {} holds a non-finite value ({}) at flat index {}", path.display(), i / per, values[i], i % per);
    }
    Ok((values, n))
}

fn softmax_rows(logits: &[f32], classes: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks(classes) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        out.extend(exp.iter().map(|e| e / sum));
    }
    out
}

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
    let (inputs, n) = if input.to_ascii_lowercase().ends_with(".npy") {
        read_npy_inputs(Path::new(input), loaded.card.input_shape)?
    } else {
        let (inputs, labels, _) = dataset_inputs(input, &loaded.card)?;
        (inputs, labels.len())
    };
    let classes = loaded.card.classes;
    let mut values = logits(&loaded, &inputs, n, args.batch_size)?;
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

/// How a model's training images were prepared: `(mean, std, class names)`, from its card, or
/// else from its dataset loaded as training loaded it.
fn preparation(card: &ModelCard) -> Result<(Vec<f32>, Vec<f32>, Vec<String>)> {
    let names = |given: Option<&[String]>| {
        given.map(<[String]>::to_vec).unwrap_or_else(|| (0..card.classes).map(|c| format!("class {c}")).collect::<Vec<_>>())
    };
    if let Some((mean, std)) = &card.normalization {
        return Ok((mean.clone(), std.clone(), names(card.class_names.as_deref())));
    }
    let Some(dataset) = &card.dataset else {
        bail!(
            "the model's card names neither its normalisation nor its dataset: image files cannot be prepared as its training images were"
        );
    };
    let data = kd::data::load_dataset(dataset, &card.data.clone().unwrap_or_default())
        .with_context(|| format!("loading {dataset}, the model's training data, for its normalisation"))?;
    let (mean, std) = data.train.normalization();
    Ok((mean.to_vec(), std.to_vec(), names(data.train.class_names())))
}

/// `predict --input` with image files or folders: each file's predicted class and probabilities.
fn predict_images(args: &PredictArgs, ext: &str) -> Result<()> {
    ensure!(matches!(ext, "csv" | "json" | "npy"), "--output {}: write `.csv`, `.json` or `.npy` (probabilities)", args.output.display());
    let loaded = args.model.load()?;
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
    let probs = softmax_rows(&logits(&loaded, &inputs, n, args.batch_size)?, card.classes);
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
            let field = csv_field;
            let mut text = String::from("file,predicted");
            class_names.iter().for_each(|name| text.push_str(&format!(",{}", field(&format!("p_{name}")))));
            text.push('\n');
            for ((file, row), &k) in files.iter().zip(probs.chunks(card.classes)).zip(&predicted) {
                text.push_str(&format!("{},{}", field(&file.display().to_string()), field(&class_names[k])));
                row.iter().for_each(|p| text.push_str(&format!(",{p}")));
                text.push('\n');
            }
            write_atomic(&args.output, text.as_bytes())?;
        }
    }
    println!("predicted classes and probabilities of {n} image files written to {}", args.output.display());
    Ok(())
}

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

/// Top-1, top-5, per-class accuracy, confusion matrix and binary metrics of logits.
pub fn evaluation(logits: &[f32], labels: &[usize], classes: usize) -> Result<Scores> {
    ensure!(logits.len() == labels.len() * classes, "{} logits for {} samples of {classes} classes", logits.len(), labels.len());
    let mut confusion = vec![vec![0usize; classes]; classes];
    let (mut top1, mut top5) = (0usize, 0usize);
    for (row, &label) in logits.chunks(classes).zip(labels) {
        ensure!(label < classes, "label {label} outside the model's {classes} classes");
        let mut order: Vec<usize> = (0..classes).collect();
        // Ties go to the lower class index, as argmax does.
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        confusion[label][order[0]] += 1;
        top1 += usize::from(order[0] == label);
        top5 += usize::from(order.iter().take(5).any(|&c| c == label));
    }
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

pub fn eval(args: EvalArgs) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let loaded = args.model.load()?;
    let dataset = match args.dataset.clone().or(loaded.card.dataset.clone()) {
        Some(d) => d,
        None => bail!("name the dataset to evaluate on: --dataset NAME (`cargo xtask datasets` lists them)"),
    };
    let (inputs, labels, split) = dataset_inputs(&dataset, &loaded.card)?;
    let classes = loaded.card.classes;
    let values = logits(&loaded, &inputs, labels.len(), args.batch_size)?;
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
    confusion_heatmap(&args.out.join("confusion.svg"), &result)?;
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

/// A CSV field, quoted as RFC 4180 quotes (file and class names may hold commas or quotes).
fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v.to_string() }
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

/// The confusion matrix as a heatmap, each row shaded by the fraction of its class.
fn confusion_heatmap(path: &Path, result: &Evaluation) -> Result<()> {
    let k = result.scores.confusion.len();
    let cell = (600 / k.max(1)).clamp(4, 48) as u32;
    let side = cell * k as u32;
    let root = SVGBackend::new(path, (side + 120, side + 110)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{} on {}: top-1 {:.2} %", result.model, result.dataset, result.scores.top1), ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0..k as i32, k as i32..0)?;
    let labels = k.min(20);
    let name = |v: &i32| result.class_name(*v as usize);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(labels)
        .y_labels(labels)
        .x_label_formatter(&name)
        .y_label_formatter(&name)
        .x_desc("predicted")
        .y_desc("true")
        .draw()?;
    for (t, row) in result.scores.confusion.iter().enumerate() {
        let total: usize = row.iter().sum();
        chart.draw_series(row.iter().enumerate().map(|(p, &count)| {
            let share = if total == 0 { 0.0 } else { count as f64 / total as f64 };
            let shade = |full: f64| (255.0 - share * (255.0 - full)).round() as u8;
            let colour = RGBColor(shade(8.0), shade(48.0), shade(107.0));
            Rectangle::new([(p as i32, t as i32), (p as i32 + 1, t as i32 + 1)], colour.filled())
        }))?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

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

/// Writes `values` as a C-ordered `.npy` array of `shape` (f32, i64, ...).
pub fn write_npy<T: npyz::Serialize + npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], values: &[T]) -> Result<()> {
    ensure!(shape.iter().product::<usize>() == values.len(), "{}: {} values for shape {shape:?}", path.display(), values.len());
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(&dims)
        .writer(BufWriter::new(file))
        .begin_nd()
        .with_context(|| format!("writing {}", path.display()))?;
    writer.extend(values.iter().copied()).with_context(|| format!("writing {}", path.display()))?;
    writer.finish().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, dispatch};
    use clap::Parser;

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

    #[test]
    fn shapes_parse_and_refuse() {
        assert_eq!(parse_shape("3x32x32").unwrap(), [3, 32, 32]);
        for bad in ["3x32", "0x32x32", "3x32x32x1", "ax1x1", ""] {
            assert!(parse_shape(bad).is_err(), "{bad}");
        }
    }

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
