#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod abf;
pub mod distiller;
pub mod loss;
pub mod registry;

pub use abf::{Abf, ReviewFusion};
pub use distiller::{NAME, ReviewKd, ReviewKdConfig, review_inputs};
pub use loss::{POOL_LEVELS, hcl_loss, hcl_stage, resize_nearest};
