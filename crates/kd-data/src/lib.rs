//! # kd-data
//!
//! Datasets for the `kd` workspace: readers, the bundled real datasets, splits and
//! deterministic augmentation. Every split is a [`kd_core::BatchSource`].

pub mod dataset;
pub mod idx;
pub mod registry;

pub use dataset::{Augment, InMemoryDataset, Values};
pub use registry::{DatasetSplits, load_dataset};
