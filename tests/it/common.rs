//! Small data and models shared by the tests.

use kd::core::burn::tensor::Device;
use kd::data::{InMemoryDataset, Values};
use kd::prelude::*;

pub fn device() -> Device {
    kd::backend::device("flex").expect("flex is the default backend")
}

/// A small synthetic 3-class problem: class-dependent Gaussian blobs of 2x2 "images".
pub fn blobs(n: usize, seed: u64, name: &str) -> InMemoryDataset {
    let mut rng = kd::core::rng::KeyedRng::new(&[seed]);
    let mut values = Vec::with_capacity(n * 4);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 3;
        for f in 0..4 {
            let centre = if f == class { 2.0 } else { 0.0 };
            let noise = (rng.unit() + rng.unit() + rng.unit() - 1.5) * 1.6;
            values.push((centre + noise) as f32);
        }
        labels.push(class);
    }
    InMemoryDataset::new(name, Values::F32(std::sync::Arc::new(values)), labels, [1, 2, 2], 3).unwrap()
}

pub fn config(epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        optimizer: OptimizerConfig::Sgd { lr: 0.1, momentum: 0.9, nesterov: false, weight_decay: 5e-4 },
        schedule: LrSchedule::Constant,
        lr_warmup_epochs: 0,
        seed,
        drop_last: false,
        eval_batch_size: 64,
    }
}

pub fn mlp(widths: &str, classes: usize, seed: u64) -> AnyModel {
    ModelSpec::parse(widths).unwrap().build_seeded([1, 2, 2], classes, &device().autodiff(), seed).unwrap()
}
