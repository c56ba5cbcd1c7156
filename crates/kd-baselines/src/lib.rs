//! # kd-baselines
//!
//! The methods the papers compare against, each a [`kd_core::Distiller`] in a small file with
//! its loss as a pure function of tensors: plain cross-entropy ([`CrossEntropy`]), vanilla KD
//! ([`Kd`]), decoupled KD ([`Dkd`]), and logit standardization ([`LogitStandardization`]) as a plug-in;
//! the feature and relation baselines: attention transfer ([`At`]), neuron selectivity transfer
//! ([`Nst`]), similarity preserving ([`Sp`]), probabilistic knowledge transfer ([`Pkt`]),
//! correlation congruence ([`Cc`]), SVD distillation ([`KdSvd`]), variational information distillation
//! ([`Vid`]) and the feature-distillation overhaul ([`Ofd`]), among others.
#![warn(missing_docs)]

pub mod at;
pub mod cc;
pub mod ce;
pub mod dist;
pub mod dkd;
pub mod dlb;
pub mod feature_maps;
pub mod fitnet;
pub mod kd;
pub mod kdsvd;
pub mod label_smoothing;
pub mod nst;
pub mod ofd;
pub mod pkt;
pub mod pskd;
pub mod registry;
pub mod rkd;
pub mod sp;
pub mod vid;

pub use at::{At, AtConfig};
pub use cc::{Cc, CcConfig, CcHeads};
pub use ce::CrossEntropy;
pub use dist::{Dist, DistConfig, dist_terms};
pub use dkd::{Dkd, DkdConfig, DkdParams, dkd_loss, dkd_nckd, dkd_tckd, dkd_terms};
pub use dlb::{Dlb, DlbConfig};
pub use fitnet::{FitNet, FitNetConfig, HintRegressor};
pub use kd::{Kd, KdConfig, kd_loss};
pub use kd_core::logit_stand::{LogitStandardization, standardize_pair};
pub use kdsvd::{KdSvd, KdSvdConfig};
pub use label_smoothing::{LabelSmoothing, LabelSmoothingConfig};
pub use nst::{Nst, NstConfig};
pub use ofd::{Ofd, OfdConfig, OfdParts};
pub use pkt::{Pkt, PktConfig};
pub use pskd::{PsKd, PsKdConfig};
pub use rkd::{Rkd, RkdConfig};
pub use sp::{Sp, SpConfig};
pub use vid::{Vid, VidConfig, VidParts};
