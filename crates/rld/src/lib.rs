#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod distiller;
pub mod loss;
pub mod registry;

pub use distiller::{Rld, RldConfig};
pub use kd_core::logit_stand::LogitStandardization;
pub use loss::{MCD_MASK_FILL, RldParams, rank_mask, rld_loss, rld_mcd, rld_scd, rld_terms};
