//! Fixtures the workspace's tests share, so that each crate's tests stop carrying a copy.
//!
//! Dev-only (`publish = false`): a crate names it under `[dev-dependencies]`. It picks no
//! backend: the tests choose their device (`Device::flex()`) themselves. kd-core and kd-data
//! cannot use it (it depends on them).
//!
//! - Step-level fixtures, for calling a distiller's loss by hand: [`ctx`], [`ctx_at`],
//!   [`logits`], [`label_batch`], [`label_batch_in_view`].
//! - Training fixtures, for short real runs through the trainer: [`recipe`], the sources
//!   [`Samples`] (one from a per-sample function), [`noisy`] and [`blobs`], the model
//!   [`TinyConv`], and [`temp_dir`] for checkpoints.
//!
//! The parameters of a trained module, for exact comparisons, are
//! `kd_core::train::parameter_values`.

use std::sync::Arc;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use kd_core::rng::KeyedRng;
use kd_core::{
    AuxModule, Batch, BatchSource, Classifier, Distiller, LrSchedule, ModelOutput, OptimizerConfig, PreActivation, Result, RunOptions,
    StepContext, Student, Teacher, TrainConfig, TrainOutcome, Trainer,
};
use kd_data::{InMemoryDataset, Values};

// ---------------------------------------------------------------- one step by hand

/// The context of the first step (step 0, seed 0) of the 1-based `epoch` of `total`: what a
/// loss with an epoch schedule (warm-up, PS-KD's alpha) reads.
pub fn ctx(epoch: usize, total: usize) -> StepContext {
    ctx_at(epoch, total, 0)
}

/// The context of step `step` of the 1-based `epoch` of `total`, with `step` also the global
/// step (the first epoch's steps, or a test that only counts steps) and seed 0. Set another
/// seed with `StepContext { seed, ..ctx_at(..) }`.
pub fn ctx_at(epoch: usize, total: usize, step: usize) -> StepContext {
    StepContext { epoch, total_epochs: total, step_in_epoch: step, global_step: step, seed: 0 }
}

/// Outputs that are only logits: `values` row by row, `classes` to a row. For the loss
/// functions, which read nothing else.
pub fn logits(values: Vec<f32>, classes: usize, device: &Device) -> ModelOutput {
    let rows = values.len() / classes;
    ModelOutput::logits_only(Tensor::from_data(TensorData::new(values, [rows, classes]), device))
}

/// A batch of the samples `indices` with the labels `labels`, view 0, and a 1x1x1 zero input
/// each: for losses that read only the labels and the sample indices (the inputs never matter).
pub fn label_batch(labels: Vec<usize>, indices: Vec<usize>, device: &Device) -> Batch {
    label_batch_in_view(labels, indices, 0, device).expect("a label batch with one index per label")
}

/// [`label_batch`] in augmentation view `view`, with `Batch::from_host`'s error (a label count
/// that differs from the index count) returned rather than raised.
pub fn label_batch_in_view(labels: Vec<usize>, indices: Vec<usize>, view: u64, device: &Device) -> Result<Batch> {
    let n = labels.len();
    Batch::from_host(vec![0.0; n], [n, 1, 1, 1], labels, indices, vec![view; n], device)
}

// ---------------------------------------------------------------- short training runs

/// A short training recipe: SGD (`OptimizerConfig::sgd`: momentum 0.9, weight decay 5e-4) at
/// a constant learning rate `lr`, no warm-up, the last partial batch kept, evaluation in
/// batches of 64.
pub fn recipe(epochs: usize, batch_size: usize, lr: f64, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size,
        optimizer: OptimizerConfig::sgd(lr),
        schedule: LrSchedule::Constant,
        lr_warmup_epochs: 0,
        seed,
        drop_last: false,
        eval_batch_size: 64,
    }
}

/// A fresh temporary folder (checkpoints of one test), removed with everything in it when the
/// value is dropped: keep it alive as long as the test reads the folder (`dir.path()`).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("kd-test-").tempdir().expect("a temporary folder")
}

/// A small augmented 3-class source from a function: `len` samples, sample `index` labelled
/// `index % 3`, its `shape` of values `sample(index, epoch, view)`. A test writes how its samples
/// look (distinct per epoch and view, or values it can recognise in a batch) and nothing else;
/// batches stay pure functions of `(indices, epoch, view)`, as resume tests need.
#[derive(Debug, Clone, Copy)]
pub struct Samples {
    /// The name in logs and records.
    pub name: &'static str,
    /// Number of samples.
    pub len: usize,
    /// Shape of one sample's input, `[C, H, W]`.
    pub shape: [usize; 3],
    /// The input values of sample `index` (`C * H * W` of them) in `(epoch, view)`.
    pub sample: fn(index: usize, epoch: usize, view: u64) -> Vec<f32>,
}

impl BatchSource for Samples {
    fn name(&self) -> String {
        self.name.into()
    }
    fn len(&self) -> usize {
        self.len
    }
    fn num_classes(&self) -> usize {
        3
    }
    fn input_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn label(&self, index: usize) -> usize {
        index % 3
    }
    fn augmented(&self) -> bool {
        true
    }
    fn batch(&self, indices: &[usize], epoch: usize, view: u64, device: &Device) -> Result<Batch> {
        let inputs = indices.iter().flat_map(|&i| (self.sample)(i, epoch, view)).collect();
        let labels = indices.iter().map(|&i| i % 3).collect();
        let [c, h, w] = self.shape;
        Batch::from_host(inputs, [indices.len(), c, h, w], labels, indices.to_vec(), vec![view; indices.len()], device)
    }
    fn fingerprint(&self) -> u64 {
        self.len as u64
    }
}

/// `n` samples for [`TinyConv`], inputs `[1, 4, 4]`: the label's offset plus deterministic
/// noise that depends on `(index, epoch, view)`, so that every epoch and view is a different
/// draw (the methods that compare two views, DLB and PS-KD, and resume tests that must see the
/// same draws again).
pub fn noisy(n: usize) -> Samples {
    Samples {
        name: "noisy",
        len: n,
        shape: [1, 4, 4],
        sample: |i, epoch, view| {
            (0..16u64)
                .map(|k| {
                    let h = (i as u64 * 7919 + epoch as u64 * 104_729 + view * 1_299_709 + k * 15_485_863) % 1000;
                    (i % 3) as f32 - 1.0 + (h as f32 / 1000.0 - 0.5)
                })
                .collect()
        },
    }
}

/// The smallest model with every output a method may read, for [`noisy`]'s `[1, 4, 4]` inputs:
/// conv (3x3, the given stride) -> ReLU (the one feature map) -> mean pool (the embedding) ->
/// linear classifier over 3 classes. Two of them with other widths or strides are a student and
/// a teacher whose feature maps differ (FitNet's regressor).
#[derive(Module, Debug)]
pub struct TinyConv {
    conv: Conv2d,
    fc: Linear,
}

impl TinyConv {
    /// `channels` feature maps, the convolution at `stride`.
    pub fn new(channels: usize, stride: usize, device: &Device) -> Self {
        let conv = Conv2dConfig::new([1, channels], [3, 3])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        TinyConv { conv, fc: LinearConfig::new(channels, 3).init(device) }
    }
}

impl Classifier for TinyConv {
    fn forward(&self, inputs: Tensor<4>) -> ModelOutput {
        let f = relu(self.conv.forward(inputs));
        let [b, c, _, _] = f.dims();
        let embedding: Tensor<2> = f.clone().mean_dim(3).mean_dim(2).reshape([b, c]);
        ModelOutput::new(self.fc.forward(embedding.clone()), vec![f], Some(embedding))
    }
    fn num_classes(&self) -> usize {
        3
    }
}

/// A run of 2 epochs on [`noisy`] data, stopped after the first and resumed from its
/// checkpoint: the outcomes of both calls (the second trained on the restored learnable parts).
/// Methods with learnable parts check that they round-trip through the checkpoint with it.
pub fn stop_and_resume<S: Student + Clone, A: AuxModule, D: Distiller<A>>(
    student: S,
    teacher: &dyn Teacher,
    distiller: impl Fn() -> D,
) -> (TrainOutcome<S, A>, TrainOutcome<S, A>) {
    let device = Device::flex();
    let (train, test) = (noisy(10), noisy(6));
    let dir = temp_dir();
    let options =
        RunOptions { checkpoint_dir: Some(dir.path().to_path_buf()), resume: true, stop_after_epochs: Some(1), ..Default::default() };
    let run = |student: S| {
        Trainer::new(recipe(2, 4, 0.05, 3), &train, &test, device.clone())
            .with_options(options.clone())
            .fit(student, &mut distiller(), teacher)
            .unwrap()
    };
    let first = run(student.clone());
    assert!(!first.finished);
    let resumed = run(student);
    assert!(resumed.finished);
    (first, resumed)
}

/// [`TinyConv`] with a stem and one stage, for methods that distil the stages after the stem
/// (VID, OFD), on [`noisy`]'s `[1, 4, 4]` inputs: conv 3x3 -> BN -> ReLU (feature 0), conv 3x3
/// at `stride` -> BN -> ReLU (feature 1; before the ReLU, its pre-activation feature), mean
/// pool, linear over 3 classes.
#[derive(Module, Debug)]
pub struct TinyStages {
    stem: Conv2d,
    stem_bn: BatchNorm,
    conv: Conv2d,
    bn: BatchNorm,
    fc: Linear,
}

impl TinyStages {
    /// `channels` feature maps in both layers, the stage's convolution at `stride`.
    pub fn new(channels: usize, stride: usize, device: &Device) -> Self {
        let conv3x3 = |cin: usize, stride: usize| {
            Conv2dConfig::new([cin, channels], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        TinyStages {
            stem: conv3x3(1, 1),
            stem_bn: BatchNormConfig::new(channels).init(device),
            conv: conv3x3(channels, stride),
            bn: BatchNormConfig::new(channels).init(device),
            fc: LinearConfig::new(channels, 3).init(device),
        }
    }

    fn run(&self, inputs: Tensor<4>) -> (ModelOutput, Tensor<4>) {
        let f0 = relu(self.stem_bn.forward(self.stem.forward(inputs)));
        let pre = self.bn.forward(self.conv.forward(f0.clone()));
        let f1 = relu(pre.clone());
        let [b, c, _, _] = f1.dims();
        let embedding: Tensor<2> = f1.clone().mean_dim(3).mean_dim(2).reshape([b, c]);
        (ModelOutput::new(self.fc.forward(embedding.clone()), vec![f0, f1], Some(embedding)), pre)
    }
}

impl Classifier for TinyStages {
    fn forward(&self, inputs: Tensor<4>) -> ModelOutput {
        self.run(inputs).0
    }
    fn forward_preact(&self, inputs: Tensor<4>) -> Result<ModelOutput> {
        let (out, pre) = self.run(inputs);
        let bn_before_relu = vec![(self.bn.gamma.val(), self.bn.beta.val())];
        Ok(out.with_preact(PreActivation { features: vec![pre], bn_before_relu }))
    }
    fn num_classes(&self) -> usize {
        3
    }
}

/// A small synthetic 3-class problem of `n` samples: Gaussian-like blobs in 2x2 "images", class
/// `c` (`index % 3`) bright at pixel `c`, the noise drawn from `seed`. Easy enough that a small
/// MLP learns it in a few epochs, hard enough that students and teachers differ (assistant
/// chains, the facade's end-to-end runs).
pub fn blobs(n: usize, seed: u64, name: &str) -> InMemoryDataset {
    let mut rng = KeyedRng::new(&[seed]);
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
    InMemoryDataset::new(name, Values::F32(Arc::new(values)), labels, [1, 2, 2], 3).expect("a valid blobs dataset")
}
