//! # kd-models
//!
//! The model zoo of the KD literature. Every model implements [`kd_core::Classifier`]: it
//! returns logits, its stage features and the penultimate embedding.

pub mod mlp;
pub mod zoo;

pub use mlp::Mlp;
pub use zoo::{AnyModel, ModelSpec};
