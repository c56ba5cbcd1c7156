//! A model named on the command line (`--run DIR`, or `--model`, `--classes`, `--input-shape`
//! and `--weights`), loaded on a backend, and the inputs it runs on: a dataset's test split or
//! image files, prepared as its training data was.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use kd::core::BatchSource;
use kd::core::burn::tensor::{Device, Tensor, TensorData};
use kd::data::registry::LoadOptions;
use kd::models::import::{WeightsFile, load_weights};
use kd::prelude::*;

use crate::experiment::open_device;
use crate::model_files::{ModelCard, read_model_folder};

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

/// The most values one input sample may hold (`C*H*W`): a 4096x4096 RGB image is 50 M.
pub const MAX_SAMPLE_VALUES: usize = 1 << 28;

/// `CxHxW` as three positive sizes.
pub fn parse_shape(text: &str) -> Result<[usize; 3]> {
    let dims: Vec<usize> = text
        .split('x')
        .map(|d| d.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("input shape `{text}`: expected CxHxW with positive integers, such as 3x32x32"))?;
    match dims[..] {
        [c, h, w] if c > 0 && h > 0 && w > 0 => {
            // One sample must be an allocation that exists (and whose size fits the arithmetic).
            let values = c.checked_mul(h).and_then(|v| v.checked_mul(w)).filter(|&v| v <= MAX_SAMPLE_VALUES);
            match values {
                Some(_) => Ok([c, h, w]),
                None => bail!("input shape `{text}`: more than {MAX_SAMPLE_VALUES} values per sample"),
            }
        }
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
            return read_model_folder(dir);
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
            data_files: Vec::new(),
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

impl LoadedModel {
    /// Logits of `inputs` (`[n, c, h, w]`, row-major), `batch` samples at a time.
    pub fn logits(&self, inputs: &[f32], n: usize, batch: usize) -> Result<Vec<f32>> {
        let [c, h, w] = self.card.input_shape;
        let per = c * h * w;
        let mut out = Vec::with_capacity(n * self.card.classes);
        for start in (0..n).step_by(batch.max(1)) {
            let rows = batch.min(n - start);
            let chunk = inputs[start * per..(start + rows) * per].to_vec();
            let x: Tensor<4> = Tensor::from_data(TensorData::new(chunk, [rows, c, h, w]), &self.device);
            let values = self.model.forward(x).logits.into_data().convert::<f32>();
            out.extend(values.try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("reading logits back: {e:?}"))?);
        }
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            bail!("the model's logit {} of sample {} is not finite ({})", i % self.card.classes, i / self.card.classes, out[i]);
        }
        Ok(out)
    }
}

/// Inputs and labels of a dataset's test split, prepared as in training.
/// On the model's own dataset, other content than it was trained on is an error naming the file
/// (`allow_changed`: a warning); another dataset, chosen on purpose, is said.
pub fn dataset_inputs(name: &str, card: &ModelCard, allow_changed: bool) -> Result<(Vec<f32>, Vec<usize>, String)> {
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
    match &card.dataset {
        Some(trained_on) if trained_on == name => {
            if let Some(change) = kd::core::files::changed_file(&card.data_files, &data.files) {
                ensure!(
                    allow_changed,
                    "{name}: the data changed since the model was trained: {change}; its recorded accuracy does not apply to it \
                     (evaluate on it anyway with --allow-changed-data)"
                );
                eprintln!("warning: {name} changed since the model was trained ({change}); evaluated anyway (--allow-changed-data)");
            }
        }
        Some(trained_on) => eprintln!("note: evaluating on {name}, not on {trained_on}, the dataset the model was trained on"),
        None => {}
    }
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

/// Softmax of each row of `classes` logits.
pub fn softmax_rows(logits: &[f32], classes: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks(classes) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        out.extend(exp.iter().map(|e| e / sum));
    }
    out
}

/// How a model's training images were prepared: `(mean, std, class names)`, from its card, or
/// else from its dataset loaded as training loaded it.
pub fn preparation(card: &ModelCard) -> Result<(Vec<f32>, Vec<f32>, Vec<String>)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_refuse() {
        assert_eq!(parse_shape("3x32x32").unwrap(), [3, 32, 32]);
        for bad in ["3x32", "0x32x32", "3x32x32x1", "ax1x1", ""] {
            assert!(parse_shape(bad).is_err(), "{bad}");
        }
    }
}
