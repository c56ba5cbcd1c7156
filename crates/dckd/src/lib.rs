#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod config;
pub mod distiller;
pub mod loss;
pub mod registry;

pub use config::{Companion, DEFAULT_MIX_G, DckdConfig, TargetMode};
pub use distiller::{Dckd, DckdAux};
pub use loss::{DckdLogitParams, dckd_logit_loss, dckd_logit_terms, dckd_target_log_binary, dckd_target_term};

#[cfg(test)]
mod tests;
