//! Backend parity: every registered method trains the same on each compiled backend as on flex.
//!
//! A seed means the same initial weights (drawn on the host, `kd_core::init`) and the same batch
//! order (drawn on the host by the trainer) everywhere, so two backends differ only by f32
//! rounding: kernels sum in different orders (LibTorch's oneDNN/MKL, wgpu's fused shaders).
//! Each method trains two epochs of six steps from the same start on flex and on the other
//! backend; the loss terms of every epoch, every parameter of the student and the test accuracy
//! must agree within the tolerances below.
//!
//! The backends compared are the build's (`kd::backend::compiled`) apart from flex, or the list
//! in `KD_PARITY_BACKENDS` (comma-separated; empty: none). `tch-cuda` is compared only when
//! LibTorch sees a GPU. A compiled backend that cannot run (wgpu without a Vulkan driver) fails
//! the test: install Mesa's `mesa-vulkan-drivers` or leave it out of `KD_PARITY_BACKENDS`.
//! `KD_PARITY_METHODS` (comma-separated) narrows the methods compared, to chase one failure.

use kd::core::EpochRecord;
use kd::core::burn::module::{Module, ModuleVisitor, Param};
use kd::core::burn::tensor::{Device, Tensor};
use kd::prelude::*;

use crate::common::{blobs, config};

/// Relative tolerance on an epoch's mean loss terms: |a - b| <= LOSS_TOL * max(|a|, 1e-2).
/// Twelve SGD steps of f32 arithmetic in another summation order; the largest differences
/// measured are printed by the test (`max loss rel diff`), and this bound keeps a margin of
/// about 10x over them.
const LOSS_TOL: f64 = 2e-3;
/// Tolerance on each student parameter after the two epochs, relative above magnitude 1 and
/// absolute below: |a - b| <= PARAM_TOL * max(|a|, 1). (BatchNorm running variances of FitNet's
/// and RKD's students reach several hundred, weights are O(0.1-1).) The largest differences
/// measured are FitNet's, whose hint loss follows intermediate features step by step: 1.3e-3
/// on tch and 3.2e-3 on wgpu since Flex's batch norm accumulates its sums in f64
/// (`flex_kernels.rs`) where libtorch's and Burn's composition accumulate in f32 (before,
/// 3.9e-4 on tch); this bound keeps a margin of 3x over them. A wrong gradient moves parameters
/// by far more (the kernel tests' mutations: 1e-1).
const PARAM_TOL: f64 = 1e-2;
/// RKD's parameter tolerance: its angle term divides pairwise embedding differences by their
/// norms, which amplifies rounding step after step; measured 8.0e-3 on wgpu (tch: 5e-4), with
/// its loss terms within the common LOSS_TOL.
const RKD_PARAM_TOL: f64 = 3e-2;
/// Test accuracy may differ by at most one sample (an argmax flipped at a near tie).
const ACCURACY_SAMPLES: f64 = 1.0;

/// The backends to compare against flex, with their devices.
pub fn parity_backends() -> Vec<(&'static str, Device)> {
    let names: Vec<String> = match std::env::var("KD_PARITY_BACKENDS") {
        Ok(list) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
        Err(_) => kd::backend::compiled()
            .into_iter()
            // wgpu-cpu is wgpu on another adapter; flex is the reference.
            .filter(|n| !matches!(*n, "flex" | "wgpu-cpu"))
            .filter(|n| *n != "tch-cuda" || kd::backend::device(n).is_ok())
            .map(String::from)
            .collect(),
    };
    names
        .into_iter()
        .map(|name| {
            let device = kd::backend::device(&name).unwrap_or_else(|e| panic!("backend {name}: {e}"));
            kd::backend::probe(&name, &device).unwrap_or_else(|e| panic!("backend {name} cannot run here: {e}"));
            let name: &'static str = Box::leak(name.into_boxed_str());
            (name, device)
        })
        .collect()
}

/// Every float parameter of a module, in visiting order, on the host.
fn parameters<M: Module>(module: &M) -> Vec<f32> {
    struct Flatten(Vec<f32>);
    impl ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param.val().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 parameters");
            self.0.extend(values);
        }
    }
    let mut flat = Flatten(Vec::new());
    module.visit(&mut flat);
    flat.0
}

fn two_class(n: usize, seed: u64, name: &str) -> kd::data::InMemoryDataset {
    let base = blobs(n, seed, name);
    let labels: Vec<usize> = (0..n).map(|i| base.label(i).min(1)).collect();
    let batch = base.batch(&(0..n).collect::<Vec<_>>(), 0, 0, &crate::common::device()).unwrap();
    let values: Vec<f32> = batch.inputs.into_data().convert::<f32>().try_to_vec().unwrap();
    kd::data::InMemoryDataset::new(name, kd::data::Values::F32(std::sync::Arc::new(values)), labels, [1, 2, 2], 2).unwrap()
}

/// What one training run leaves to compare.
struct Run {
    epochs: Vec<EpochRecord>,
    parameters: Vec<f32>,
}

fn train(method: &str, classes: usize, data: &[kd::data::InMemoryDataset; 3], device: &Device) -> Result<Run, String> {
    let [train, valid, test] = data;
    let trainer = Trainer::new(config(2, 4), train, test, device.clone()).with_validation(valid);
    let build = |spec: &str, seed| ModelSpec::parse(spec).unwrap().build_seeded([1, 2, 2], classes, &device.clone().autodiff(), seed);
    let teacher = FrozenTeacher::new(build("mlpbn-16-16-16", 1).map_err(|e| e.to_string())?, "teacher");
    let student = build("mlpbn-8-8-8", 2).map_err(|e| e.to_string())?;
    let out = kd::methods::train_method(method, None, &trainer, student, &teacher).map_err(|e| e.to_string())?;
    Ok(Run { parameters: parameters(&out.student), epochs: out.history })
}

/// The largest differences between two runs, and what exceeds the tolerances.
#[derive(Default)]
struct Drift {
    loss_rel: f64,
    param_scaled: f64,
    accuracy_samples: f64,
}

fn compare(method: &str, reference: &Run, other: &Run, drift: &mut Drift) -> Vec<String> {
    let param_tol = if method == "rkd" { RKD_PARAM_TOL } else { PARAM_TOL };
    let mut problems = Vec::new();
    if reference.epochs.len() != other.epochs.len() || reference.parameters.len() != other.parameters.len() {
        return vec![format!(
            "ran {} epochs with {} parameters, flex {} with {}",
            other.epochs.len(),
            other.parameters.len(),
            reference.epochs.len(),
            reference.parameters.len()
        )];
    }
    for (r, o) in reference.epochs.iter().zip(&other.epochs) {
        let mut terms: Vec<(&str, f64, f64)> = vec![("loss", r.train_loss, o.train_loss)];
        for (name, &value) in &r.train_terms {
            match o.train_terms.get(name) {
                Some(&v) => terms.push((name, value, v)),
                None => problems.push(format!("epoch {}: term `{name}` missing", r.epoch)),
            }
        }
        for (name, a, b) in terms {
            let rel = (a - b).abs() / a.abs().max(1e-2);
            drift.loss_rel = drift.loss_rel.max(rel);
            if rel.is_nan() || rel > LOSS_TOL {
                problems.push(format!("epoch {}: {name} {b:.7} vs flex {a:.7} (rel diff {rel:.1e})", r.epoch));
            }
        }
        let samples = ((r.test.top1 - o.test.top1).abs() * r.test.samples as f64 / 100.0).round();
        drift.accuracy_samples = drift.accuracy_samples.max(samples);
        if samples > ACCURACY_SAMPLES {
            problems.push(format!("epoch {}: test accuracy {:.2} vs flex {:.2}", r.epoch, o.test.top1, r.test.top1));
        }
    }
    let (worst, at) = reference
        .parameters
        .iter()
        .zip(&other.parameters)
        .enumerate()
        .map(|(i, (a, b))| (f64::from((a - b).abs()) / f64::from(a.abs()).max(1.0), i))
        .fold((0.0, 0), |acc, x| if x.0 > acc.0 || x.0.is_nan() { x } else { acc });
    drift.param_scaled = drift.param_scaled.max(worst);
    if worst.is_nan() || worst > param_tol {
        problems.push(format!(
            "parameter {at} of {}: {} vs flex {} (scaled diff {worst:.1e})",
            reference.parameters.len(),
            other.parameters[at],
            reference.parameters[at]
        ));
    }
    problems
}

#[test]
fn every_method_trains_the_same_on_every_backend() {
    let backends = parity_backends();
    if backends.is_empty() {
        println!("backend parity: only flex in this build, nothing to compare");
        return;
    }
    let mut failures = Vec::new();
    for (backend, device) in &backends {
        let mut drift = Drift::default();
        let mut methods = 0;
        for classes in [3, 2] {
            let data = if classes == 2 {
                [two_class(96, 1, "train"), two_class(48, 3, "valid"), two_class(48, 2, "test")]
            } else {
                [blobs(96, 1, "train"), blobs(48, 3, "valid"), blobs(48, 2, "test")]
            };
            let chosen = std::env::var("KD_PARITY_METHODS").ok();
            let wanted = |name: &str| chosen.as_deref().is_none_or(|list| list.split(',').any(|m| m.trim() == name));
            for info in kd::methods::methods().unwrap().into_iter().filter(|m| m.applies_to(classes) && wanted(m.name)) {
                let name = info.name;
                let reference = train(name, classes, &data, &crate::common::device())
                    .unwrap_or_else(|e| panic!("{name} on flex ({classes} classes): {e}"));
                match train(name, classes, &data, device) {
                    Ok(other) => failures.extend(
                        compare(name, &reference, &other, &mut drift)
                            .into_iter()
                            .map(|p| format!("{name} on {backend} ({classes} classes): {p}")),
                    ),
                    Err(e) => failures.push(format!("{name} on {backend} ({classes} classes): failed: {e}")),
                }
                methods += 1;
            }
        }
        println!(
            "backend parity {backend} vs flex: {methods} method runs; max loss rel diff {:.1e} (tol {LOSS_TOL:.0e}), \
             max parameter diff {:.1e} (tol {PARAM_TOL:.0e}, rkd {RKD_PARAM_TOL:.0e}), max accuracy diff {} samples (tol {ACCURACY_SAMPLES})",
            drift.loss_rel, drift.param_scaled, drift.accuracy_samples
        );
    }
    assert!(failures.is_empty(), "{} backend parity failures:\n{}", failures.len(), failures.join("\n"));
}

/// An image folder for the image-folder parity run: `$KD_CIFAR10_JPG` (CI points it at 100
/// training and 50 test images per class of the CIFAR-10 JPEG archive), else one written here
/// (3 classes of small PNG files).
fn image_folder(tmp: &std::path::Path) -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("KD_CIFAR10_JPG") {
        return dir.into();
    }
    for (split, n) in [("train", 24), ("test", 8)] {
        for c in 0..3u8 {
            let folder = tmp.join(split).join(format!("class{c}"));
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..n {
                let img =
                    image::RgbImage::from_fn(20, 20, |x, y| image::Rgb([c * 80 + (x as u8 * 3), (i * 9) as u8, (y as u8 * 7) ^ (c * 31)]));
                img.save(folder.join(format!("{i:03}.png"))).unwrap();
            }
        }
    }
    tmp.to_path_buf()
}

/// The decoded, resized, normalised and augmented images of a folder train a CNN the same on
/// every backend (the batches are assembled on the host, so only the kernels differ).
#[test]
fn an_image_folder_trains_the_same_on_every_backend() {
    let backends = parity_backends();
    if backends.is_empty() {
        println!("image-folder parity: only flex in this build, nothing to compare");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = image_folder(tmp.path());
    let options = kd::data::registry::LoadOptions {
        image_size: Some(16),
        resize: true,
        decode_cache: Some("off".into()),
        augment: Some(kd::data::Augment::cifar()),
        ..Default::default()
    };
    let data = kd::data::load_dataset(&format!("images:{}", dir.display()), &options).unwrap();
    // At most about 200 training and 100 test images of every class (wgpu runs on a software
    // Vulkan driver in CI).
    let every = |split: &kd::data::InMemoryDataset, n: usize| {
        let step = split.len().div_ceil(n).max(1);
        split.subset(&(0..split.len()).step_by(step).collect::<Vec<_>>(), split.name()).unwrap()
    };
    let (train, test) = (every(&data.train, 200), every(&data.test, 100));
    let classes = data.train.num_classes();
    let run = |device: &Device| -> Result<Run, String> {
        // A small step (lr 0.01): a CNN at the MLPs' lr 0.1 amplifies f32 rounding between
        // kernels past the tolerances within a dozen steps, on any pair of backends.
        let recipe = TrainConfig {
            optimizer: OptimizerConfig::Sgd { lr: 0.01, momentum: 0.9, nesterov: false, weight_decay: 5e-4 },
            ..config(2, 4)
        };
        let trainer = Trainer::new(recipe, &train, &test, device.clone()).with_validation(data.valid.as_ref().unwrap());
        let build = |seed| ModelSpec::parse("plane2").unwrap().build_seeded([3, 16, 16], classes, &device.clone().autodiff(), seed);
        let teacher = FrozenTeacher::new(build(1).map_err(|e| e.to_string())?, "teacher");
        let out =
            kd::methods::train_method("kd", None, &trainer, build(2).map_err(|e| e.to_string())?, &teacher).map_err(|e| e.to_string())?;
        Ok(Run { parameters: parameters(&out.student), epochs: out.history })
    };
    let reference = run(&crate::common::device()).expect("kd on an image folder on flex");
    let mut failures = Vec::new();
    for (backend, device) in &backends {
        let mut drift = Drift::default();
        match run(device) {
            Ok(other) => failures.extend(compare("kd", &reference, &other, &mut drift).into_iter().map(|p| format!("{backend}: {p}"))),
            Err(e) => failures.push(format!("{backend}: failed: {e}")),
        }
        println!(
            "image-folder parity {backend} vs flex ({}, {} training images): max loss rel diff {:.1e}, max parameter diff {:.1e}, max \
             accuracy diff {} samples",
            dir.display(),
            train.len(),
            drift.loss_rel,
            drift.param_scaled,
            drift.accuracy_samples
        );
    }
    assert!(failures.is_empty(), "{} image-folder parity failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_seed_means_the_same_initial_weights_on_every_backend() {
    let spec = ModelSpec::parse("resnet8").unwrap();
    let reference = parameters(&spec.build_seeded([3, 8, 8], 5, &crate::common::device().autodiff(), 7).unwrap());
    let other_seed = parameters(&spec.build_seeded([3, 8, 8], 5, &crate::common::device().autodiff(), 8).unwrap());
    assert_ne!(reference, other_seed, "two seeds gave the same weights");
    for (backend, device) in parity_backends() {
        let moved = parameters(&spec.build_seeded([3, 8, 8], 5, &device.autodiff(), 7).unwrap());
        assert_eq!(moved, reference, "seed 7 on {backend} differs from flex");
    }
}
