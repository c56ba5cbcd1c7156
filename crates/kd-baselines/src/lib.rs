//! # kd-baselines
//!
//! The methods the papers compare against, each a [`kd_core::Distiller`] in a small file with
//! its loss as a pure function of tensors: plain cross-entropy ([`CrossEntropy`]), vanilla KD
//! ([`Kd`]), and logit standardization ([`LogitStandardization`]) as a plug-in.

pub mod ce;
pub mod kd;
pub mod logit_stand;

pub use ce::CrossEntropy;
pub use kd::{Kd, KdConfig, kd_loss};
pub use logit_stand::LogitStandardization;
