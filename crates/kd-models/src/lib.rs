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

pub mod layers;
pub mod mlp;
pub mod mobilenetv2;
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

pub use layers::trainable_params;
pub use mlp::Mlp;
pub use mobilenetv2::MobileNetV2;
pub use plane::PlaneCnn;
pub use resnet::ResNet;
pub use shufflenetv2::ShuffleNetV2;
pub use summary::{ModelSummary, model_summary};
pub use vgg::Vgg;
pub use wrn::WideResNet;
pub use zoo::{AnyModel, ModelSpec};
