//! Weight import and export through burn-store (cargo feature `import`).
//!
//! Files use PyTorch's layout and names: BatchNorm `weight`/`bias` (Burn's `gamma`/`beta`),
//! Linear weights `[out, in]`, and no enum variant names in the keys, so a checkpoint of the
//! RepDistiller / mdistiller / TAKD originals loads into the matching zoo network, and a file
//! saved here loads into PyTorch with
//! `model.load_state_dict(safetensors.torch.load_file(p), strict=False)` (`strict=False`
//! because BatchNorm's `num_batches_tracked` is not stored).
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

use std::path::Path;

use burn::module::Module;
use burn::store::{
    ApplyResult, BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, PytorchStoreError,
    SafetensorsStore, SafetensorsStoreError,
};
use kd_core::{KdError, Result};

/// How many key names an error lists before summarising the rest.
const NAMES_SHOWN: usize = 12;

/// Writes every parameter and running statistic of `model` to a safetensors file at `path`
/// (replacing it), in PyTorch's layout.
pub fn save_safetensors<M: Module>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut store = SafetensorsStore::from_file(path).skip_enum_variants(true).with_to_adapter(BurnToPyTorchAdapter).overwrite(true);
    model.save_into(&mut store).map_err(|e| match e {
        SafetensorsStoreError::Io(source) => KdError::io("writing", path, source),
        other => KdError::Record(format!("saving {}: {other}", path.display())),
    })
}

/// Loads `model`'s weights from a safetensors file in PyTorch's layout (as written by
/// [`save_safetensors`] or by `safetensors.torch.save_file(model.state_dict(), p)`).
///
/// `remap` renames the file's keys (`(regex, replacement)`, applied in order) before matching.
/// On error the model is dropped rather than returned half-loaded.
pub fn load_safetensors<M: Module>(model: M, path: impl AsRef<Path>, remap: &[(&str, &str)]) -> Result<M> {
    let path = path.as_ref();
    ensure_readable(path)?;
    let mut store = SafetensorsStore::from_file(path)
        .skip_enum_variants(true)
        .with_from_adapter(PyTorchToBurnAdapter)
        .allow_partial(true)
        .validate(false)
        .remap(remapper(remap)?);
    let mut model = model;
    let result = model.load_from(&mut store).map_err(|e| match e {
        SafetensorsStoreError::Io(source) => KdError::io("reading", path, source),
        other => malformed(path, other.to_string()),
    })?;
    check(path, &result)?;
    Ok(model)
}

/// Loads `model`'s weights from a PyTorch checkpoint (`torch.save` of a state dict, or of a dict
/// holding one under `top_level_key`, such as RepDistiller's `"model"`).
///
/// `remap` renames the file's keys (`(regex, replacement)`, applied in order) before matching.
/// Sequential indices are kept as they are (the zoo's structs reproduce them, gaps included).
/// On error the model is dropped rather than returned half-loaded.
pub fn load_pytorch<M: Module>(model: M, path: impl AsRef<Path>, top_level_key: Option<&str>, remap: &[(&str, &str)]) -> Result<M> {
    let path = path.as_ref();
    ensure_readable(path)?;
    let mut store = PytorchStore::from_file(path).allow_partial(true).validate(false).map_indices_contiguous(false).remap(remapper(remap)?);
    if let Some(key) = top_level_key {
        store = store.with_top_level_key(key);
    }
    let mut model = model;
    let result = model.load_from(&mut store).map_err(|e: PytorchStoreError| malformed(path, e.to_string()))?;
    check(path, &result)?;
    Ok(model)
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
    use std::path::PathBuf;

    /// A scratch file path unique to this process and test, removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Self {
            Scratch(std::env::temp_dir().join(format!("kd-models-{}-{name}", std::process::id())))
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn input(device: &Device) -> Tensor<4> {
        let values: Vec<f32> = (0..2 * 3 * 32 * 32).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        Tensor::from_data(TensorData::new(values, [2, 3, 32, 32]), device)
    }

    #[test]
    fn safetensors_round_trip() {
        let device = Device::flex();
        let spec = ModelSpec::parse("resnet8").unwrap();
        let file = Scratch::new("resnet8.safetensors");
        // One training-mode pass on an autodiff device moves the BatchNorm running statistics
        // away from their initial values, so the round trip has to carry them.
        let trained = spec.build([3, 32, 32], 10, &device.clone().autodiff()).unwrap();
        let _ = trained.forward(input(&device.clone().autodiff()));
        let model = trained.valid();
        save_safetensors(&model, &file.0).unwrap();

        let fresh = spec.build([3, 32, 32], 10, &device).unwrap();
        let before: Vec<f32> = fresh.forward(input(&device)).logits.into_data().try_to_vec::<f32>().unwrap();
        let loaded = load_safetensors(fresh, &file.0, &[]).unwrap();
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
        let file = Scratch::new("resnet8-for-resnet14.safetensors");
        let small = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 10, &device).unwrap();
        save_safetensors(&small, &file.0).unwrap();
        let big = ModelSpec::parse("resnet14").unwrap().build([3, 32, 32], 10, &device).unwrap();
        let err = load_safetensors(big, &file.0, &[]).unwrap_err().to_string();
        assert!(err.contains("not in the file") && err.contains("layer1.1.conv1.weight"), "{err}");

        // Different class counts: a shape error naming the classifier.
        let other = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 7, &device).unwrap();
        let err = load_safetensors(other, &file.0, &[]).unwrap_err().to_string();
        assert!(err.contains("fc.weight"), "{err}");
    }

    #[test]
    fn remapping_and_its_errors() {
        let device = Device::flex();
        let file = Scratch::new("resnet8-renamed.safetensors");
        let model = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 10, &device).unwrap();
        save_safetensors(&model, &file.0).unwrap();
        // Renaming `fc.` away leaves the classifier unmatched on both sides.
        let fresh = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 10, &device).unwrap();
        let err = load_safetensors(fresh, &file.0, &[(r"^fc\.", "head.")]).unwrap_err().to_string();
        assert!(err.contains("head.weight") && err.contains("fc.weight"), "{err}");
        // A bad regex is a configuration error, not a panic.
        let fresh = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 10, &device).unwrap();
        assert!(matches!(load_safetensors(fresh, &file.0, &[("(", "")]), Err(KdError::InvalidConfig(_))));
        // A missing file is an I/O error naming it.
        let fresh = ModelSpec::parse("resnet8").unwrap().build([3, 32, 32], 10, &device).unwrap();
        let err = load_pytorch(fresh, "/nonexistent/ckpt.pth", Some("model"), &[]).unwrap_err();
        assert!(matches!(err, KdError::Io { .. }), "{err}");
    }
}
