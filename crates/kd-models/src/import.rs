//! Weight import and export through burn-store (cargo feature `import`).
//!
//! Files use PyTorch's layout and names: BatchNorm `weight`/`bias` (Burn's `gamma`/`beta`),
//! Linear weights `[out, in]`, and no enum variant names in the keys, so a checkpoint of the
//! RepDistiller / mdistiller / TAKD originals loads into the matching zoo network, and a file
//! saved here loads into PyTorch with
//! `model.load_state_dict(safetensors.torch.load_file(p))`, strict: BatchNorm's
//! `num_batches_tracked`, which Burn does not keep, is written as 0 (PyTorch reads it only when a
//! BatchNorm's momentum is `None`).
//!
//! [`load_weights`] takes any of the formats a user meets, chosen by the file name:
//! `.safetensors`, PyTorch's `.pth`/`.pt`/`.bin`/`.tar` (the state dict at the top level or
//! under a key: by default `model`, then `state_dict`, whichever the file has), and this
//! project's own checkpoints (`.ckpt`: a teacher-cache file, or `best.ckpt`/`last.ckpt` of a
//! training run; a run folder means its `best.ckpt`).
//!
//! Loading is strict, as PyTorch's default: every parameter and running statistic of the model
//! must come from the file, and every tensor of the file must be used, `num_batches_tracked`
//! excepted. A `module.` prefix (left by `nn.DataParallel`) is removed before matching. Further
//! renames are `(regex, replacement)` pairs applied in order to the file's keys.
//!
//! ```no_run
//! # fn main() -> kd_core::Result<()> {
//! use kd_models::ModelSpec;
//! use kd_models::import::{load_pytorch, save_safetensors};
//!
//! let device = burn::tensor::Device::flex();
//! let teacher = ModelSpec::parse("resnet32x4")?.build([3, 32, 32], 100, &device)?;
//! // RepDistiller checkpoints keep the weights under "model".
//! let teacher = load_pytorch(teacher, "resnet32x4_vanilla/ckpt_epoch_240.pth", Some("model"), &[])?;
//! save_safetensors(&teacher, "resnet32x4.safetensors")?;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::pytorch_reader::PytorchReader;
use burn::store::{
    ApplyResult, BurnToPyTorchAdapter, FloatCastAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter,
    SafetensorsStore, SafetensorsStoreError, bridge,
};
use burn::tensor::DType;
use kd_core::checkpoint::{Checkpoint, write_atomic};
use kd_core::train::load_module;
use kd_core::{KdError, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// How many key names an error lists before summarising the rest.
const NAMES_SHOWN: usize = 12;

/// The top-level keys tried, in order, when a PyTorch checkpoint is a dict holding the state
/// dict rather than the state dict itself (RepDistiller and mdistiller: `model`).
pub const DEFAULT_PYTORCH_KEYS: [&str; 2] = ["model", "state_dict"];

/// Writes every parameter and running statistic of `model` to a safetensors file at `path`
/// (replacing it atomically), in PyTorch's layout, with a `num_batches_tracked` of 0 beside each
/// BatchNorm's running statistics.
pub fn save_safetensors<M: Module>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path.as_ref(), &safetensors_bytes(model)?)
}

/// The bytes [`save_safetensors`] writes.
pub fn safetensors_bytes<M: Module>(model: &M) -> Result<Vec<u8>> {
    let mut store = SafetensorsStore::from_bytes(None).skip_enum_variants(true).with_to_adapter(BurnToPyTorchAdapter);
    model.save_into(&mut store).map_err(|e| KdError::Record(format!("saving to safetensors: {e}")))?;
    let bytes = store.get_bytes().map_err(|e| KdError::Record(format!("saving to safetensors: {e}")))?;
    with_batch_counters(&bytes)
}

/// Adds PyTorch's BatchNorm counter (`<prefix>.num_batches_tracked`, an int64 scalar) for every
/// `<prefix>.running_mean`, so that a strict `load_state_dict` finds every key it expects.
fn with_batch_counters(bytes: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: safetensors::SafeTensorError| KdError::Record(format!("re-reading the safetensors Burn wrote: {e}"));
    let file = SafeTensors::deserialize(bytes).map_err(bad)?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let zero = 0i64.to_le_bytes();
    let mut tensors: Vec<(String, TensorView<'_>)> = file.tensors();
    let counters: Vec<String> = tensors
        .iter()
        .filter_map(|(key, _)| key.strip_suffix("running_mean").map(|prefix| format!("{prefix}num_batches_tracked")))
        .collect();
    for key in counters {
        tensors.push((key, TensorView::new(Dtype::I64, vec![], &zero).map_err(bad)?));
    }
    safetensors::serialize(tensors, header.metadata().clone()).map_err(bad)
}

/// Where a model's weights come from: a file in any supported format, and how to read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightsFile {
    /// A `.safetensors`, `.pth`/`.pt`/`.bin`/`.tar` or `.ckpt` file, or a run folder (its
    /// `best.ckpt`).
    pub path: PathBuf,
    /// The key of a PyTorch checkpoint's dict that holds the state dict (none: the file's own
    /// top level, or the first of [`DEFAULT_PYTORCH_KEYS`] the file has).
    pub key: Option<String>,
    /// Renames of the file's keys, `(regex, replacement)` applied in order (PyTorch and
    /// safetensors files).
    pub remap: Vec<(String, String)>,
}

/// The formats [`load_weights`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// safetensors, in PyTorch's layout.
    Safetensors,
    /// `torch.save` of a state dict (or of a dict holding one).
    PyTorch,
    /// This project's checkpoint files.
    Checkpoint,
}

impl WeightsFile {
    /// A file read with the defaults (no key, no renames).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        WeightsFile { path: path.into(), ..Default::default() }
    }

    /// The file to read: the path itself, or `best.ckpt` of a run folder.
    pub fn resolved(&self) -> PathBuf {
        if self.path.is_dir() { self.path.join("best.ckpt") } else { self.path.clone() }
    }

    /// Checks that the file exists, is a regular file (a run folder: holds `best.ckpt`) and has
    /// a known format, before anything is trained: a missing teacher file is an error even
    /// where a run would not reach it.
    pub fn check(&self) -> Result<()> {
        self.format()?;
        kd_core::files::check_regular(&self.resolved())
    }

    /// The format, from the file name.
    pub fn format(&self) -> Result<WeightsFormat> {
        let path = self.resolved();
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        match ext.as_str() {
            "safetensors" => Ok(WeightsFormat::Safetensors),
            "pth" | "pt" | "bin" | "tar" => Ok(WeightsFormat::PyTorch),
            "ckpt" => Ok(WeightsFormat::Checkpoint),
            _ => Err(KdError::InvalidConfig(format!(
                "weights file {}: unknown format `.{ext}`; known: .safetensors, .pth/.pt/.bin/.tar (PyTorch), .ckpt (this project's checkpoints), or a run folder",
                path.display()
            ))),
        }
    }
}

/// Loads `model`'s weights from `file` in whichever format its name says (see the module
/// documentation), strictly: every tensor of the model from the file, every tensor of the file
/// used.
pub fn load_weights<M: Module>(model: M, file: &WeightsFile) -> Result<M> {
    let path = file.resolved();
    let remap: Vec<(&str, &str)> = file.remap.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let format = file.format()?;
    if file.key.is_some() && format != WeightsFormat::PyTorch {
        return Err(KdError::InvalidConfig(format!("weights file {}: a key is only meaningful for PyTorch checkpoints", path.display())));
    }
    match format {
        WeightsFormat::Safetensors => load_safetensors(model, &path, &remap),
        WeightsFormat::PyTorch => {
            let key = match &file.key {
                Some(key) => Some(key.clone()),
                None => default_pytorch_key(&path)?,
            };
            load_pytorch(model, &path, key.as_deref(), &remap)
        }
        WeightsFormat::Checkpoint => {
            if !remap.is_empty() {
                return Err(KdError::InvalidConfig(format!(
                    "weights file {}: renames apply to PyTorch and safetensors files, not to this project's checkpoints",
                    path.display()
                )));
            }
            load_checkpoint_weights(model, &path)
        }
    }
}

/// The first of [`DEFAULT_PYTORCH_KEYS`] that names a dict of tensors at the file's top level,
/// or none when the file is the state dict itself.
fn default_pytorch_key(path: &Path) -> Result<Option<String>> {
    ensure_readable(path)?;
    let reader = PytorchReader::new(path).map_err(|e| malformed(path, e.to_string()))?;
    let keys = reader.keys();
    Ok(DEFAULT_PYTORCH_KEYS.iter().find(|k| keys.iter().any(|name| name.starts_with(&format!("{k}.")))).map(|k| k.to_string()))
}

/// A checkpoint of this project: a training run's `student` section, or the `model` section of
/// a teacher-cache file.
fn load_checkpoint_weights<M: Module>(model: M, path: &Path) -> Result<M> {
    let ckpt = Checkpoint::load(path)?;
    let names: Vec<&str> = ckpt.sections.iter().map(|(n, _)| n.as_str()).collect();
    let bytes = if names.contains(&"student") {
        ckpt.section("student")?
    } else if names.contains(&"optimizer") || ckpt.meta.get("method").is_some() {
        // A training run's model section holds the student and the method's learnable parts
        // together; runs write the student alone beside it.
        return Err(malformed(
            path,
            "this training checkpoint has no `student` section (it was written before students were stored on their own): retrain, or load the run with the version that wrote it",
        ));
    } else {
        ckpt.section("model")?
    };
    load_module(model, bytes).map_err(|e| malformed(path, format!("the weights do not fit the model: {e}")))
}

/// Loads `model`'s weights from a safetensors file in PyTorch's layout (as written by
/// [`save_safetensors`] or by `safetensors.torch.save_file(model.state_dict(), p)`).
///
/// `remap` renames the file's keys (`(regex, replacement)`, applied in order) before matching;
/// two keys that become one are an error listing them. Float tensors of another precision
/// (float16, bfloat16, float64) are converted to the model's float32, which is said once on
/// stderr; an integer or boolean tensor where the model has floats is an error naming the key.
/// On error the model is dropped rather than returned half-loaded.
pub fn load_safetensors<M: Module>(model: M, path: impl AsRef<Path>, remap: &[(&str, &str)]) -> Result<M> {
    let path = path.as_ref();
    let remapper = remapper(remap)?;
    let bytes = kd_core::files::read_regular(path)?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| malformed(path, format!("not a safetensors file: {e}")))?;
    let mut keys: Vec<(String, DType)> = metadata.tensors().into_iter().map(|(name, info)| (name, safetensors_dtype(info.dtype))).collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    renamed_keys(path, keys.iter().map(|(k, _)| k.as_str()), &remapper)?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .skip_enum_variants(true)
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(MODEL_DTYPE)))
        .allow_partial(true)
        .validate(false)
        .remap(remapper);
    let mut model = model;
    let result = model.load_from(&mut store).map_err(|e| match e {
        SafetensorsStoreError::Io(source) => KdError::io("reading", path, source),
        other => malformed(path, other.to_string()),
    })?;
    check(path, &result)?;
    say_conversions(path, keys.iter().map(|(_, d)| *d));
    Ok(model)
}

/// Loads `model`'s weights from a PyTorch checkpoint (`torch.save` of a state dict, or of a dict
/// holding one under `top_level_key`, such as RepDistiller's `"model"`).
///
/// `remap` renames the file's keys (`(regex, replacement)`, applied in order) before matching;
/// two keys that become one are an error listing them. Sequential indices are kept as they are
/// (the zoo's structs reproduce them, gaps included). Precision as [`load_safetensors`]: half,
/// bfloat16 and double storages are converted to float32 (said once), integer or boolean
/// tensors where floats belong are an error naming the key. On error the model is dropped
/// rather than returned half-loaded.
pub fn load_pytorch<M: Module>(model: M, path: impl AsRef<Path>, top_level_key: Option<&str>, remap: &[(&str, &str)]) -> Result<M> {
    let path = path.as_ref();
    let remapper = remapper(remap)?;
    ensure_readable(path)?;
    let reader = match top_level_key {
        Some(key) => PytorchReader::with_top_level_key(path, key),
        None => PytorchReader::new(path),
    }
    .map_err(|e| malformed(path, e.to_string()))?;
    // In the order of the names, not of the reader's hash map: loading is deterministic.
    let mut tensors: Vec<PackTensor> = reader.into_tensors().into_values().map(bridge::from_pytorch).collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let names = renamed_keys(path, tensors.iter().map(|t| t.name.as_str()), &remapper)?;
    let dtypes: Vec<DType> = tensors.iter().map(|t| t.dtype).collect();
    for (tensor, name) in tensors.iter_mut().zip(names) {
        tensor.name = name;
    }
    let mut model = model;
    let adapter = PyTorchToBurnAdapter.chain(FloatCastAdapter::to(MODEL_DTYPE));
    let result = model.apply(tensors, None, Some(Box::new(adapter)), true);
    check(path, &result)?;
    say_conversions(path, dtypes);
    Ok(model)
}

/// The precision of every model of the zoo.
const MODEL_DTYPE: DType = DType::F32;

/// burn's name of a safetensors element type (what the conversion note and the checks read).
fn safetensors_dtype(dtype: Dtype) -> DType {
    match dtype {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U64 => DType::U64,
        Dtype::U32 => DType::U32,
        Dtype::U16 => DType::U16,
        Dtype::BOOL => DType::Bool(burn::tensor::BoolStore::Native),
        // Everything else (8-bit floats, sub-byte types) is refused by the loader by name.
        _ => DType::U8,
    }
}

/// The files whose conversion was already said (once per file and process).
static SAID: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Says on stderr, once per file, which float tensors were converted to the model's precision.
fn say_conversions(path: &Path, dtypes: impl IntoIterator<Item = DType>) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for dtype in dtypes {
        let name = match dtype {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F64 => "float64",
            _ => continue,
        };
        *counts.entry(name).or_default() += 1;
    }
    if counts.is_empty() {
        return;
    }
    let first_time = SAID.lock().map(|mut said| said.insert(path.to_path_buf())).unwrap_or(true);
    if first_time {
        let parts: Vec<String> = counts.iter().map(|(name, n)| format!("{n} {name}")).collect();
        eprintln!("{}: {} tensor(s) converted to float32, the model's precision", path.display(), parts.join(" and "));
    }
}

/// The model key each of the file's `keys` becomes (the `module.` strip, then the renames, as
/// burn-store applies them), in order; two keys that become one are an error listing them
/// (burn-store would keep one of them, which one depending on the process).
fn renamed_keys<'a>(path: &Path, keys: impl Iterator<Item = &'a str>, remapper: &KeyRemapper) -> Result<Vec<String>> {
    let patterns = remapper.to_regex_pairs();
    let mut sources: BTreeMap<String, Vec<&'a str>> = BTreeMap::new();
    let mut renamed = Vec::new();
    for key in keys {
        let mut name = key.to_string();
        for (pattern, replacement) in &patterns {
            if pattern.is_match(&name) {
                name = pattern.replace_all(&name, replacement.as_str()).into_owned();
            }
        }
        sources.entry(name.clone()).or_default().push(key);
        renamed.push(name);
    }
    let collisions: Vec<String> = sources
        .iter()
        .filter(|(_, from)| from.len() > 1)
        .map(|(to, from)| format!("{} all become `{to}`", from.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")))
        .collect();
    if collisions.is_empty() {
        return Ok(renamed);
    }
    let mut shown = collisions.iter().take(NAMES_SHOWN).cloned().collect::<Vec<_>>().join("; ");
    if collisions.len() > NAMES_SHOWN {
        shown.push_str(&format!("; and {} more", collisions.len() - NAMES_SHOWN));
    }
    Err(malformed(
        path,
        format!(
            "{} model key(s) would come from more than one tensor of the file after the `module.` strip and the renames: {shown}; rename or remove the duplicates",
            collisions.len()
        ),
    ))
}

/// A missing file (or a folder, a pipe) gets an error naming it, before burn-store's less
/// specific one.
fn ensure_readable(path: &Path) -> Result<()> {
    kd_core::files::check_regular(path)
}

fn malformed(path: &Path, reason: impl Into<String>) -> KdError {
    KdError::Malformed { path: path.to_path_buf(), reason: reason.into() }
}

/// The user's renames after the `module.` strip, compiled.
fn remapper(remap: &[(&str, &str)]) -> Result<KeyRemapper> {
    fn invalid(from: &str, e: impl std::fmt::Display) -> KdError {
        KdError::InvalidConfig(format!("key remapping `{from}`: {e}"))
    }
    // `nn.DataParallel` prefixes every key with `module.`; no field of the zoo has that name.
    let mut remapper = KeyRemapper::new().add_pattern(r"^module\.", "").map_err(|e| invalid(r"^module\.", e))?;
    for (from, to) in remap {
        remapper = remapper.add_pattern(*from, *to).map_err(|e| invalid(from, e))?;
    }
    Ok(remapper)
}

/// Turns an incomplete or inconsistent load into an error naming the keys concerned.
fn check(path: &Path, result: &ApplyResult) -> Result<()> {
    let missing: Vec<&str> = result.missing.iter().map(|(key, _)| key.as_str()).collect();
    // PyTorch's BatchNorm counter has no Burn counterpart.
    let unused: Vec<&str> = result.unused.iter().map(String::as_str).filter(|key| !key.ends_with("num_batches_tracked")).collect();
    let errors: Vec<String> = result.errors.iter().map(ToString::to_string).collect();
    if missing.is_empty() && unused.is_empty() && errors.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("{} model tensor(s) not in the file: {}", missing.len(), list(&missing)));
    }
    if !unused.is_empty() {
        parts.push(format!("{} file tensor(s) not in the model: {}", unused.len(), list(&unused)));
    }
    if !errors.is_empty() {
        let errors: Vec<&str> = errors.iter().map(String::as_str).collect();
        parts.push(format!("{} tensor(s) that do not fit: {}", errors.len(), list(&errors)));
    }
    let mut reason = parts.join("; ");
    if !missing.is_empty() || !unused.is_empty() {
        // Model names are Burn's: a BatchNorm `gamma`/`beta` is `weight`/`bias` in the file.
        reason.push_str(
            " (model names are Burn's, BatchNorm gamma/beta being weight/bias in the file; rename file keys with the remap argument)",
        );
    }
    Err(malformed(path, reason))
}

fn list(names: &[&str]) -> String {
    let shown = names.iter().take(NAMES_SHOWN).copied().collect::<Vec<_>>().join(", ");
    match names.len().saturating_sub(NAMES_SHOWN) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelSpec;
    use burn::tensor::{Device, Tensor, TensorData};
    use kd_core::Classifier;

    fn input(device: &Device) -> Tensor<4> {
        let values: Vec<f32> = (0..2 * 3 * 32 * 32).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        Tensor::from_data(TensorData::new(values, [2, 3, 32, 32]), device)
    }

    #[test]
    fn safetensors_round_trip() {
        let device = Device::flex();
        let spec = ModelSpec::parse("resnet8").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("resnet8.safetensors");
        // One training-mode pass on an autodiff device moves the BatchNorm running statistics
        // away from their initial values, so the round trip has to carry them.
        let trained = spec.build([3, 32, 32], 10, &device.clone().autodiff()).unwrap();
        let _ = trained.forward(input(&device.clone().autodiff()));
        let model = trained.valid();
        save_safetensors(&model, &file).unwrap();

        let fresh = spec.build([3, 32, 32], 10, &device).unwrap();
        let before: Vec<f32> = fresh.forward(input(&device)).logits.into_data().try_to_vec::<f32>().unwrap();
        let loaded = load_safetensors(fresh, &file, &[]).unwrap();
        let want: Vec<f32> = model.forward(input(&device)).logits.into_data().try_to_vec::<f32>().unwrap();
        let got: Vec<f32> = loaded.forward(input(&device)).logits.into_data().try_to_vec::<f32>().unwrap();
        assert_ne!(before, want);
        assert_eq!(want, got);
    }

    #[test]
    fn pytorch_checkpoint_gives_the_reference_logits() {
        // fixtures/make_plane2_pth.py writes the checkpoint (torch.save's zip layout, keys under
        // "model" with a DataParallel prefix) and the logits of a plain-Python forward pass.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let device = Device::flex();
        let model = ModelSpec::parse("plane2").unwrap().build([1, 8, 8], 3, &device).unwrap();
        let model = load_pytorch(model, dir.join("plane2.pth"), Some("model"), &[]).unwrap();
        let image: Vec<f32> = (0..64).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        let x = Tensor::from_data(TensorData::new(image, [1, 1, 8, 8]), &device);
        let got: Vec<f32> = model.forward(x).logits.into_data().try_to_vec::<f32>().unwrap();
        let text = std::fs::read_to_string(dir.join("plane2.logits.txt")).unwrap();
        let want: Vec<f32> = text.split_whitespace().map(|v| v.parse().unwrap()).collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "logits {got:?}, reference {want:?}");
        }

        // Without the top-level key nothing matches, and the error says what is missing.
        let model = ModelSpec::parse("plane2").unwrap().build([1, 8, 8], 3, &device).unwrap();
        let err = load_pytorch(model, dir.join("plane2.pth"), None, &[]).unwrap_err().to_string();
        assert!(err.contains("conv_layers.0.weight"), "{err}");
    }

    #[test]
    fn mismatched_architecture_names_the_keys() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("resnet8-for-resnet14.safetensors");
        let small = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 10, &device).unwrap();
        save_safetensors(&small, &file).unwrap();
        let big = ModelSpec::parse("resnet14").unwrap().build([3, 32, 32], 10, &device).unwrap();
        let err = load_safetensors(big, &file, &[]).unwrap_err().to_string();
        assert!(err.contains("not in the file") && err.contains("layer1.1.conv1.weight"), "{err}");

        // Different class counts: a shape error naming the classifier.
        let other = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 7, &device).unwrap();
        let err = load_safetensors(other, &file, &[]).unwrap_err().to_string();
        assert!(err.contains("fc.weight"), "{err}");
    }

    #[test]
    fn remapping_and_its_errors() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("resnet8-renamed.safetensors");
        let model = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 10, &device).unwrap();
        save_safetensors(&model, &file).unwrap();
        // Renaming `fc.` away leaves the classifier unmatched on both sides.
        let fresh = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 10, &device).unwrap();
        let err = load_safetensors(fresh, &file, &[(r"^fc\.", "head.")]).unwrap_err().to_string();
        assert!(err.contains("head.weight") && err.contains("fc.weight"), "{err}");
        // A bad regex is a configuration error, not a panic.
        let fresh = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 10, &device).unwrap();
        assert!(matches!(load_safetensors(fresh, &file, &[("(", "")]), Err(KdError::InvalidConfig(_))));
        // A missing file is an I/O error naming it.
        let fresh = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 10, &device).unwrap();
        let err = load_pytorch(fresh, "/nonexistent/ckpt.pth", Some("model"), &[]).unwrap_err();
        assert!(matches!(err, KdError::Io { .. }), "{err}");
    }

    /// The plane2 fixture's input and reference logits (fixtures/make_plane2_pth.py).
    fn plane2_reference(device: &Device) -> (Tensor<4>, Vec<f32>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let image: Vec<f32> = (0..64).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        let text = std::fs::read_to_string(dir.join("plane2.logits.txt")).unwrap();
        (Tensor::from_data(TensorData::new(image, [1, 1, 8, 8]), device), text.split_whitespace().map(|v| v.parse().unwrap()).collect())
    }

    fn logits(model: &crate::AnyModel, x: Tensor<4>) -> Vec<f32> {
        model.forward(x).logits.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn pytorch_checkpoints_of_every_float_precision_load_as_float32() {
        // fixtures/make_precision_pth.py: plane2.pth saved by torch in half, bfloat16, double.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let device = Device::flex();
        let (x, want) = plane2_reference(&device);
        for (file, tolerance) in [("plane2-f64.pth", 1e-4), ("plane2-f16.pth", 2e-2), ("plane2-bf16.pth", 1.5e-1)] {
            let model = ModelSpec::parse("plane2").unwrap().build([1, 8, 8], 3, &device).unwrap();
            let model = load_weights(model, &WeightsFile::new(dir.join(file))).unwrap_or_else(|e| panic!("{file}: {e}"));
            // The forward pass runs (no dtype mismatch inside Burn) and gives the reference.
            let got = logits(&model, x.clone());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= tolerance * w.abs().max(1.0), "{file}: logits {got:?}, reference {want:?}");
            }
        }
        // An int64 tensor where the model has floats is an error naming the key.
        let model = ModelSpec::parse("plane2").unwrap().build([1, 8, 8], 3, &device).unwrap();
        let err = load_weights(model, &WeightsFile::new(dir.join("plane2-int.pth"))).unwrap_err().to_string();
        assert!(err.contains("fc_layers.0.weight") && err.contains("expected F32, found I64"), "{err}");
    }

    /// A safetensors file holding `tensors` (name, dtype, shape, f32 values converted to dtype).
    fn write_safetensors(path: &Path, tensors: &[(String, DType, Vec<usize>, Vec<f32>)]) {
        let data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(name, dtype, shape, values)| {
                let bytes = TensorData::new(values.clone(), shape.clone()).convert_dtype(*dtype).into_bytes().to_vec();
                let st = match dtype {
                    DType::F64 => Dtype::F64,
                    DType::F32 => Dtype::F32,
                    DType::F16 => Dtype::F16,
                    DType::BF16 => Dtype::BF16,
                    DType::I64 => Dtype::I64,
                    other => panic!("{other:?}"),
                };
                (name.clone(), st, shape.clone(), bytes)
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> =
            data.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    /// The tensors of a safetensors file as f32 values.
    fn read_safetensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>, bool)> {
        let bytes = std::fs::read(path).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let mut out: Vec<_> = file
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let is_float = view.dtype() == Dtype::F32;
                let values: Vec<f32> = if is_float {
                    view.data().chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
                } else {
                    Vec::new()
                };
                (name, view.shape().to_vec(), values, is_float)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn safetensors_of_every_float_precision_load_as_float32() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let spec = ModelSpec::parse("resnet8").unwrap();
        let model = spec.build([3, 32, 32], 10, &device).unwrap();
        let f32_file = dir.path().join("resnet8.safetensors");
        save_safetensors(&model, &f32_file).unwrap();
        let want = logits(&model, input(&device));
        let tensors = read_safetensors(&f32_file);
        for (dtype, tolerance) in [(DType::F64, 1e-5), (DType::F16, 5e-2), (DType::BF16, 3e-1)] {
            let file = dir.path().join(format!("resnet8-{dtype:?}.safetensors"));
            // The float tensors in `dtype`; BatchNorm's int64 counters as they are.
            let converted: Vec<_> = tensors
                .iter()
                .filter(|t| t.3)
                .map(|(name, shape, values, _)| (name.clone(), dtype, shape.clone(), values.clone()))
                .collect();
            write_safetensors(&file, &converted);
            let fresh = spec.build([3, 32, 32], 10, &device).unwrap();
            let loaded = load_safetensors(fresh, &file, &[]).unwrap_or_else(|e| panic!("{dtype:?}: {e}"));
            let got = logits(&loaded, input(&device));
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= tolerance * w.abs().max(1.0), "{dtype:?}: logits {got:?}, float32 {want:?}");
            }
        }
        // An int64 tensor where the model has floats: an error naming the key.
        let file = dir.path().join("resnet8-int.safetensors");
        let with_int: Vec<_> = tensors
            .iter()
            .filter(|t| t.3)
            .map(|(name, shape, values, _)| {
                (name.clone(), if name == "fc.weight" { DType::I64 } else { DType::F32 }, shape.clone(), values.clone())
            })
            .collect();
        write_safetensors(&file, &with_int);
        let err = load_safetensors(spec.build([3, 32, 32], 10, &device).unwrap(), &file, &[]).unwrap_err().to_string();
        assert!(err.contains("'fc.weight': expected F32, found I64"), "{err}");
    }

    #[test]
    fn keys_that_collide_after_the_strip_or_a_rename_are_an_error_listing_them() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let spec = ModelSpec::parse("mlp-4").unwrap();
        let model = spec.build([2, 1, 1], 3, &device).unwrap();
        let file = dir.path().join("mlp.safetensors");
        save_safetensors(&model, &file).unwrap();
        let mut tensors: Vec<_> =
            read_safetensors(&file).into_iter().map(|(name, shape, values, _)| (name, DType::F32, shape, values)).collect();
        let first = tensors[0].clone();
        // The same key with DataParallel's prefix: both become one model key.
        tensors.push((format!("module.{}", first.0), DType::F32, first.2.clone(), first.3.iter().map(|v| v + 1.0).collect()));
        let doubled = dir.path().join("doubled.safetensors");
        write_safetensors(&doubled, &tensors);
        let err = load_safetensors(spec.build([2, 1, 1], 3, &device).unwrap(), &doubled, &[]).unwrap_err().to_string();
        let want = format!(
            "1 model key(s) would come from more than one tensor of the file after the `module.` strip and the renames: `{0}`, `module.{0}` all become `{0}`",
            first.0
        );
        assert!(err.contains(&want), "{err}");

        // A rename that maps two keys onto one.
        let err = load_safetensors(spec.build([2, 1, 1], 3, &device).unwrap(), &file, &[(r"\.bias$", ".weight")]).unwrap_err().to_string();
        assert!(err.contains("all become") && err.contains(".bias`, `"), "{err}");

        // The same in a PyTorch file (fixtures/plane2.pth: a rename folding a bias onto its weight).
        let pth = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plane2.pth");
        let plane = ModelSpec::parse("plane2").unwrap().build([1, 8, 8], 3, &device).unwrap();
        let err = load_pytorch(plane, &pth, Some("model"), &[(r"fc_layers\.0\.bias", "fc_layers.0.weight")]).unwrap_err().to_string();
        assert!(err.contains("`module.fc_layers.0.bias`, `module.fc_layers.0.weight` all become `fc_layers.0.weight`"), "{err}");
    }
}
