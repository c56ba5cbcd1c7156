//! # kd-baselines
//!
//! The methods the papers compare against, each a [`kd_core::Distiller`] in a small file with
//! its loss as a pure function of tensors: plain cross-entropy ([`CrossEntropy`]), vanilla KD
//! ([`Kd`]), decoupled KD ([`Dkd`]), and logit standardization ([`LogitStandardization`]) as a plug-in.
#![warn(missing_docs)]

pub mod ce;
pub mod dist;
pub mod dkd;
pub mod dlb;
pub mod fitnet;
pub mod kd;
pub mod label_smoothing;
pub mod ofd;
pub mod pskd;
pub mod registry;
pub mod rkd;
pub mod vid;

pub use ce::CrossEntropy;
pub use dist::{Dist, DistConfig, dist_terms};
pub use dkd::{Dkd, DkdConfig, DkdParams, dkd_loss, dkd_nckd, dkd_tckd, dkd_terms};
pub use dlb::{Dlb, DlbConfig};
pub use fitnet::{FitNet, FitNetConfig, HintRegressor};
pub use kd::{Kd, KdConfig, kd_loss};
pub use kd_core::logit_stand::{LogitStandardization, standardize_pair};
pub use label_smoothing::{LabelSmoothing, LabelSmoothingConfig};
pub use ofd::{Ofd, OfdConfig, OfdParts};
pub use pskd::{PsKd, PsKdConfig};
pub use rkd::{Rkd, RkdConfig};
pub use vid::{Vid, VidConfig, VidParts};
