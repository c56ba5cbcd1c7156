#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod distiller;
pub mod loss;
pub mod memory;
pub mod registry;

pub use distiller::{Crd, CrdConfig};
pub use loss::{CrdHeads, CrdParams, contrast_loss, contrast_scores, crd_loss, l2_normalize, momentum_update, normalisation_constants};
pub use memory::{ContrastMemory, NegativeSampler};

#[cfg(test)]
mod tests;
