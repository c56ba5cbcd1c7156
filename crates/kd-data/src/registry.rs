//! The bundled datasets, by name.

use std::path::{Path, PathBuf};

use kd_core::{KdError, Result};
use serde::{Deserialize, Serialize};

use crate::dataset::{Augment, InMemoryDataset, Values};
use crate::idx::read_idx;

/// The folder of bundled datasets: `$KD_DATASETS_DIR`, else the workspace's `datasets/`.
pub fn datasets_dir() -> PathBuf {
    std::env::var_os("KD_DATASETS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets"))
}

/// How to load a dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadOptions {
    /// Keep only the first `n` training samples (quick runs).
    pub train_limit: Option<usize>,
    /// Keep only the first `n` test samples.
    pub test_limit: Option<usize>,
    /// Augmentation of the training split.
    pub augment: Augment,
    /// Seed of the augmentation draws.
    pub seed: u64,
}

/// The splits of a dataset.
#[derive(Debug, Clone)]
pub struct DatasetSplits {
    /// Canonical name.
    pub name: String,
    /// Training split.
    pub train: InMemoryDataset,
    /// Validation split, where the dataset has one.
    pub valid: Option<InMemoryDataset>,
    /// Test split.
    pub test: InMemoryDataset,
}

/// Loads a dataset by name: `mnist`, `fashion-mnist`.
pub fn load_dataset(name: &str, options: &LoadOptions) -> Result<DatasetSplits> {
    let dir = datasets_dir();
    let (canonical, folder, train_prefix) = match name {
        "mnist" => ("mnist", "mnist", "train"),
        "fashion-mnist" | "fashion" => ("fashion-mnist", "fashion-mnist", "train20k"),
        other => return Err(KdError::InvalidConfig(format!("unknown dataset `{other}`; known: mnist, fashion-mnist"))),
    };
    let folder = dir.join(folder);
    let train = read_idx_pair(&folder, train_prefix, &format!("{canonical}/train"))?;
    let test = read_idx_pair(&folder, "t10k", &format!("{canonical}/test"))?;
    let train = match options.train_limit {
        Some(n) => train.take(n)?,
        None => train,
    };
    let test = match options.test_limit {
        Some(n) => test.take(n)?,
        None => test,
    };
    // Normalise with the training split's statistics only.
    let (mean, std) = train.channel_stats();
    let train = train.with_normalization(mean.clone(), std.clone())?.with_augment(options.augment, options.seed);
    let test = test.with_normalization(mean, std)?;
    Ok(DatasetSplits { name: canonical.into(), train, valid: None, test })
}

fn read_idx_pair(folder: &Path, prefix: &str, name: &str) -> Result<InMemoryDataset> {
    let images_path = folder.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let labels_path = folder.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    if images.dims.len() != 3 {
        return Err(KdError::Malformed { path: images_path, reason: format!("expected 3 image dimensions, got {:?}", images.dims) });
    }
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        return Err(KdError::Malformed {
            path: labels_path,
            reason: format!("{:?} labels for {} images", labels.dims, images.dims[0]),
        });
    }
    let labels: Vec<usize> = labels.data.iter().map(|&l| l as usize).collect();
    if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l >= 10) {
        return Err(KdError::Malformed { path: labels_path, reason: format!("label {l} at sample {i} is out of range 0..10") });
    }
    let shape = [1, images.dims[1], images.dims[2]];
    InMemoryDataset::new(name, Values::U8 { data: std::sync::Arc::new(images.data), scale: 255.0 }, labels, shape, 10)
}
