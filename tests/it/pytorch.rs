//! Checkpoints written by PyTorch load into the zoo and give PyTorch's logits.
//!
//! The fixtures come from `xtask/pytorch/make_fixtures.py` (the project's own PyTorch
//! definitions of the zoo, random weights with BatchNorm statistics moved by a few training-mode
//! passes, `torch.save({"model": state_dict, ...})` as RepDistiller does, and the eval-mode
//! logits of a fixed input). A few small models are committed in `tests/fixtures/pytorch`; CI
//! regenerates the whole zoo and points `KD_PYTORCH_FIXTURES` at it.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use kd::core::burn::tensor::{Tensor, TensorData};
use kd::models::import::{WeightsFile, load_weights};
use kd::prelude::*;

use crate::common::device;

/// Largest difference allowed, relative to the largest reference logit (f32 summation order).
const LOGIT_RTOL: f64 = 1e-4;

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(BufReader::new(file)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("KD_PYTORCH_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch"),
    }
}

#[test]
fn pytorch_checkpoints_give_pytorchs_logits() {
    let dir = fixtures_dir();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json of the fixtures")).unwrap();
    let classes = manifest["classes"].as_u64().unwrap() as usize;
    let shape: Vec<usize> = serde_json::from_value(manifest["input_shape"].clone()).unwrap();
    let input_shape = [shape[0], shape[1], shape[2]];
    let (dims, input) = read_npy(&dir.join(manifest["input"].as_str().unwrap()));
    let device = device();
    let x: Tensor<4> = Tensor::from_data(TensorData::new(input, [dims[0], dims[1], dims[2], dims[3]]), &device);
    let models = manifest["models"].as_array().unwrap();
    assert!(!models.is_empty());
    let mut report = Vec::new();
    for entry in models {
        let name = entry["name"].as_str().unwrap();
        let model = ModelSpec::parse(name).unwrap().build(input_shape, classes, &device).unwrap();
        let mut weights = WeightsFile::new(dir.join(entry["weights"].as_str().unwrap()));
        // The key is found by default; the manifest's key is checked once to work as well.
        if report.is_empty() {
            weights.key = entry["key"].as_str().map(str::to_string);
        }
        let model = load_weights(model, &weights).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<f32> = model.forward(x.clone()).logits.into_data().try_to_vec::<f32>().unwrap();
        let (_, want) = read_npy(&dir.join(entry["logits"].as_str().unwrap()));
        assert_eq!(got.len(), want.len(), "{name}");
        let scale = want.iter().fold(0f64, |m, v| m.max(f64::from(v.abs()))).max(1e-6);
        let diff = got.iter().zip(&want).fold(0f64, |m, (g, w)| m.max(f64::from((g - w).abs())));
        report.push(format!("{name}: max |logit| {scale:.3}, max relative difference {:.2e}", diff / scale));
        assert!(
            diff / scale <= LOGIT_RTOL,
            "{name}: logits differ from PyTorch's by {:.2e} of their scale\n{}",
            diff / scale,
            report.join("\n")
        );
    }
    println!("{} PyTorch checkpoints from {}:\n{}", report.len(), dir.display(), report.join("\n"));
}
