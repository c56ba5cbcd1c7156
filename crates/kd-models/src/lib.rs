//! # kd-models
//!
//! The model zoo of the KD literature. Every model implements [`kd_core::Classifier`]: it
//! returns logits, its stage features (shallow to deep) and the penultimate embedding.
//!
//! Families, one module each: TAKD's plain CNNs ([`plane`]), CIFAR ResNets ([`resnet`]), Wide
//! ResNets ([`wrn`]), VGG with BatchNorm ([`vgg`]), MobileNetV2 ([`mobilenetv2`]),
//! ShuffleNetV2 ([`shufflenetv2`]) and an MLP ([`mlp`]). [`ModelSpec`] names them at run time,
//! [`AnyModel`] holds any of them, [`model_summary`] gives their size and cost without building
//! them. Parameter counts equal the PyTorch originals (RepDistiller, mdistiller, TAKD) and
//! struct fields keep PyTorch's names, so checkpoints load with the `import` feature.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use kd_core::Classifier;
//! use kd_models::{ModelSpec, model_summary};
//!
//! let device = Device::flex().autodiff();
//! let spec = ModelSpec::parse("resnet8x4")?;
//! let student = spec.build([3, 32, 32], 100, &device)?;
//!
//! let out = student.forward(Tensor::zeros([8, 3, 32, 32], &device));
//! assert_eq!(out.logits.dims(), [8, 100]);
//! assert_eq!(out.features.len(), 4); // stem, stage 1, 2, 3 (after ReLU)
//! assert_eq!(out.embedding("test").unwrap().dims(), [8, 256]);
//!
//! let summary = model_summary(&spec, [3, 32, 32], 100)?; // analytic, builds nothing
//! assert_eq!(summary.params, 1_233_540);
//! assert_eq!(summary.mult_adds, 177_071_104);
//! # Ok::<(), kd_core::KdError>(())
//! ```
#![warn(missing_docs)]

#[cfg(feature = "flex")]
mod flex_kernels;
pub mod layers;
pub mod mlp;
pub mod mobilenetv2;
#[cfg(feature = "tch")]
mod native;
pub mod plane;
pub mod resnet;
pub mod shufflenetv2;
pub mod summary;
pub mod vgg;
pub mod wrn;
pub mod zoo;

#[cfg(feature = "import")]
pub mod import;

#[cfg(test)]
mod tests;

pub use layers::{batch_norm_forward, conv2d_forward, trainable_params};
pub use mlp::Mlp;
pub use mobilenetv2::MobileNetV2;
pub use plane::PlaneCnn;
pub use resnet::ResNet;
pub use shufflenetv2::ShuffleNetV2;
pub use summary::{ModelSummary, model_summary};
pub use vgg::Vgg;
pub use wrn::WideResNet;
pub use zoo::{AnyModel, ModelSpec};
