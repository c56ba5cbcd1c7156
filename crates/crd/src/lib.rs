#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod distiller;
pub mod loss;
pub mod memory;
pub mod registry;

pub use distiller::{Crd, CrdConfig};
pub use loss::{
    CrdHeads, CrdParams, contrast_loss, contrast_scores, contrast_scores_from_bank, crd_loss, crd_loss_from_scores, l2_normalize,
    momentum_update, normalisation_constants, normalisation_from_scores,
};
pub use memory::{ContrastMemory, NegativeSampler};

#[cfg(test)]
mod tests;
