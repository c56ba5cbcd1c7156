//! Small data and models shared by the tests.

use kd::core::burn::tensor::Device;
use kd::prelude::*;

pub fn device() -> Device {
    kd::backend::device("flex").expect("flex is the default backend")
}

pub use kd_testkit::blobs;

/// Batches of 16, SGD at 0.1.
pub fn config(epochs: usize, seed: u64) -> TrainConfig {
    kd_testkit::recipe(epochs, 16, 0.1, seed)
}

pub fn mlp(widths: &str, classes: usize, seed: u64) -> AnyModel {
    ModelSpec::parse(widths).unwrap().build_seeded([1, 2, 2], classes, &device().autodiff(), seed).unwrap()
}
