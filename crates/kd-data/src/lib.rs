//! # kd-data
//!
//! Datasets for the `kd` workspace: readers (IDX, CIFAR binary, CSV, image folders), the bundled real
//! datasets, stratified seeded splits, training-statistics normalisation and deterministic
//! augmentation. Every split is a [`kd_core::BatchSource`]; [`load_dataset`] is the entry point.
//!
//! ```no_run
//! use kd_data::{LoadOptions, load_dataset};
//!
//! # fn main() -> kd_core::Result<()> {
//! let data = load_dataset("spambase", &LoadOptions { split_seed: 1, ..Default::default() })?;
//! kd_data::require_binary(&data)?;
//! println!("{}", data.info().summary_line());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod cifar;
pub mod dataset;
pub mod idx;
pub mod images;
pub mod registry;
pub mod split;
pub mod table;

pub use cifar::CifarLabels;
pub use dataset::{Augment, HostBatch, InMemoryDataset, Values};
pub use images::{DecodeSpec, ImageFolderReport, decode_image, read_image_files};
pub use registry::{
    DatasetInfo, DatasetSplits, LoadOptions, Task, dataset_info, dataset_names, list_datasets, list_datasets_with, load_dataset,
    require_binary,
};
