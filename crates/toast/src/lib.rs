#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod config;
pub mod distiller;
pub mod loss;
pub mod medoid;
pub mod registry;

pub use config::{BatchMode, Hardness, ReplayCandidates, ToastConfig};
pub use distiller::Toast;
pub use kd_core::replay::{ReplayBuffer, ReplayEntry, ReplayView, select_hardest};
pub use loss::{medoid_loss_per_sample, medoid_targets, replay_kl_per_sample, toast_loss_rows, toast_loss_terms};
pub use medoid::{BankEntry, MedoidBank, distance_sums, medoid_index};

#[cfg(test)]
mod tests;
