//! The catalog: the registered datasets (what each is, where its files are) and how a dataset
//! name resolves to a source, for loading and for [`super::dataset_info`].

use std::fmt;
use std::path::{Path, PathBuf};

use kd_core::{KdError, Result};
use serde::{Deserialize, Serialize};

use crate::cifar::CifarLabels;

/// The folder of bundled datasets: `$KD_DATASETS_DIR`, else the workspace's `datasets/`.
pub fn datasets_dir() -> PathBuf {
    std::env::var_os("KD_DATASETS_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets"))
}

/// Where `fashion-mnist-full` is read from: `$KD_FASHION_MNIST_DIR`, else the folder the Debian
/// package `dataset-fashion-mnist` installs, `/usr/share/datasets/fashion-mnist`.
pub fn fashion_mnist_full_dir() -> PathBuf {
    std::env::var_os("KD_FASHION_MNIST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"))
}

/// The kind of task a dataset poses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Image classification.
    Image,
    /// Multi-class classification of feature vectors.
    Tabular,
    /// Two-class classification of feature vectors (label 1: the positive class).
    Binary,
}

impl Task {
    /// The task of a dataset that is not registered: images when samples have height and
    /// width, else binary for two classes and tabular for more.
    pub(crate) fn infer(shape: [usize; 3], classes: usize) -> Task {
        if shape[1] * shape[2] > 1 {
            Task::Image
        } else if classes == 2 {
            Task::Binary
        } else {
            Task::Tabular
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` (not `write_str`) so that `{:<8}` aligns listings.
        f.pad(match self {
            Task::Image => "image",
            Task::Tabular => "tabular",
            Task::Binary => "binary",
        })
    }
}

/// Where a registered dataset's samples come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// IDX train/test pair in a bundled folder.
    Idx { folder: &'static str, train: &'static str },
    /// The Debian package's Fashion-MNIST.
    SystemFashionMnist,
    /// One CSV file, split by stratified sampling; `image`: reshape the features to this shape,
    /// dividing by `scale`.
    CsvPool { file: &'static str, image: Option<([usize; 3], f32)> },
    /// Official train and test CSV files.
    CsvOfficial { train: &'static str, test: &'static str },
}

/// A registered dataset: what it is and where its files are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) name: &'static str,
    pub(crate) aliases: &'static [&'static str],
    pub(crate) task: Task,
    pub(crate) shape: [usize; 3],
    pub(crate) classes: usize,
    pub(crate) class_names: &'static [&'static str],
    pub(crate) source: Source,
    pub(crate) description: &'static str,
    pub(crate) licence: &'static str,
}

const DIGITS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
const FASHION: &[&str] = &["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Every registered dataset, in listing order.
pub(crate) const REGISTRY: &[Entry] = &[
    Entry {
        name: "mnist",
        aliases: &[],
        task: Task::Image,
        shape: [1, 28, 28],
        classes: 10,
        class_names: DIGITS,
        source: Source::Idx { folder: "mnist", train: "train" },
        description: "MNIST handwritten digits, 60,000 train + 10,000 test, 28x28 grey",
        licence: "CC BY-SA 3.0, Yann LeCun and Corinna Cortes",
    },
    Entry {
        name: "fashion-mnist",
        aliases: &["fashion"],
        task: Task::Image,
        shape: [1, 28, 28],
        classes: 10,
        class_names: FASHION,
        source: Source::Idx { folder: "fashion-mnist", train: "train20k" },
        description: "Fashion-MNIST, first 20,000 train + 10,000 test, 28x28 grey",
        licence: "MIT, Zalando SE (Xiao, Rasul, Vollgraf 2017)",
    },
    Entry {
        name: "fashion-mnist-full",
        aliases: &[],
        task: Task::Image,
        shape: [1, 28, 28],
        classes: 10,
        class_names: FASHION,
        source: Source::SystemFashionMnist,
        description: "Fashion-MNIST, 60,000 train + 10,000 test, from the Debian package dataset-fashion-mnist",
        licence: "MIT, Zalando SE (Xiao, Rasul, Vollgraf 2017)",
    },
    Entry {
        name: "digits-8x8",
        aliases: &["digits"],
        task: Task::Image,
        shape: [1, 8, 8],
        classes: 10,
        class_names: DIGITS,
        source: Source::CsvPool { file: "digits-8x8/digits.csv", image: Some(([1, 8, 8], 16.0)) },
        description: "UCI optical digits (scikit-learn load_digits), 1,797 images 8x8, values 0..16",
        licence: "CC BY 4.0, Alpaydin and Kaynak (UCI)",
    },
    Entry {
        name: "statlog-shuttle",
        aliases: &["shuttle"],
        task: Task::Tabular,
        shape: [9, 1, 1],
        classes: 7,
        class_names: &["Rad.Flow", "Fpv.Close", "Fpv.Open", "High", "Bypass", "Bpv.Close", "Bpv.Open"],
        source: Source::CsvOfficial { train: "statlog-shuttle/shuttle-train.csv", test: "statlog-shuttle/shuttle-test.csv" },
        description: "Statlog (Shuttle), 43,500 train + 14,500 test, 9 features, 78.6% one class",
        licence: "CC BY 4.0, UCI (Jason Catlett, StatLog)",
    },
    Entry {
        name: "spambase",
        aliases: &[],
        task: Task::Binary,
        shape: [57, 1, 1],
        classes: 2,
        class_names: &["non-spam", "spam"],
        source: Source::CsvPool { file: "spambase/spambase.csv", image: None },
        description: "UCI Spambase, 4,601 e-mails, 57 features, label 1 = spam",
        licence: "CC BY 4.0, Hopkins, Reeber, Forman, Suermondt (HP Labs, UCI)",
    },
    Entry {
        name: "breast-cancer-wisconsin",
        aliases: &["wdbc", "breast-cancer"],
        task: Task::Binary,
        shape: [30, 1, 1],
        classes: 2,
        class_names: &["benign", "malignant"],
        source: Source::CsvPool { file: "breast-cancer-wisconsin/wdbc.csv", image: None },
        description: "Breast Cancer Wisconsin (Diagnostic), 569 samples, 30 features, label 1 = malignant",
        licence: "CC BY 4.0, Wolberg, Street, Mangasarian (UCI)",
    },
    Entry {
        name: "german-credit",
        aliases: &["german"],
        task: Task::Binary,
        shape: [61, 1, 1],
        classes: 2,
        class_names: &["good", "bad"],
        source: Source::CsvPool { file: "german-credit/german-credit.csv", image: None },
        description: "Statlog German Credit (one-hot), 1,000 samples, 61 features, label 1 = bad risk",
        licence: "CC BY 4.0, Hans Hofmann (UCI)",
    },
    Entry {
        name: "isl-default",
        aliases: &["default"],
        task: Task::Binary,
        shape: [3, 1, 1],
        classes: 2,
        class_names: &["no default", "default"],
        source: Source::CsvPool { file: "isl-default/default.csv", image: None },
        description: "ISLR/ISLP Default (simulated), 10,000 samples, 3 features, 3.3% positive",
        licence: "BSD-3-style (ISLP package), James, Witten, Hastie, Tibshirani, Taylor",
    },
];

/// The registered dataset of a name or alias.
pub(crate) fn find_entry(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name || e.aliases.contains(&name))
}

/// The names of the registered datasets (those that need no path).
pub fn dataset_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// A dataset name resolved to the source of its samples (the module documentation lists the
/// names).
#[derive(Debug, Clone, Copy)]
pub(crate) enum DatasetName<'a> {
    /// `images:DIR`.
    Images(&'a Path),
    /// `cifar10:PATH`.
    Cifar10(&'a Path),
    /// `cifar100:PATH` (`coarse`: `cifar100-coarse:PATH`, which forces the coarse labels).
    Cifar100 { path: &'a Path, coarse: bool },
    /// `idx:DIR`.
    Idx(&'a Path),
    /// `csv:PATH`.
    Csv(&'a Path),
    /// A registered name or alias.
    Registered(&'static Entry),
}

impl<'a> DatasetName<'a> {
    /// Resolves a (trimmed) name; an unknown one is an error listing the known names.
    pub(crate) fn resolve(name: &'a str) -> Result<DatasetName<'a>> {
        let path = |p: &'a str| Path::new(p);
        Ok(if let Some(dir) = name.strip_prefix("images:") {
            DatasetName::Images(path(dir))
        } else if let Some(p) = name.strip_prefix("cifar10:") {
            DatasetName::Cifar10(path(p))
        } else if let Some(p) = name.strip_prefix("cifar100-coarse:") {
            DatasetName::Cifar100 { path: path(p), coarse: true }
        } else if let Some(p) = name.strip_prefix("cifar100:") {
            DatasetName::Cifar100 { path: path(p), coarse: false }
        } else if let Some(dir) = name.strip_prefix("idx:") {
            DatasetName::Idx(path(dir))
        } else if let Some(p) = name.strip_prefix("csv:") {
            DatasetName::Csv(path(p))
        } else if let Some(entry) = find_entry(name) {
            DatasetName::Registered(entry)
        } else {
            return Err(KdError::InvalidConfig(format!(
                "unknown dataset `{name}`; known: {}, cifar10:PATH, cifar100:PATH, cifar100-coarse:PATH, csv:PATH, idx:DIR, images:DIR",
                dataset_names().join(", ")
            )));
        })
    }

    /// The CIFAR-100 labels learnt: coarse for `cifar100-coarse:`, else the options' choice.
    pub(crate) fn cifar100_labels(coarse: bool, chosen: CifarLabels) -> CifarLabels {
        if coarse { CifarLabels::Coarse } else { chosen }
    }

    /// The files and folders the samples are read from: what a run fingerprints
    /// ([`kd_core::files::fingerprint_paths`]) to be bound to its data's content.
    pub(crate) fn roots(&self) -> Vec<PathBuf> {
        match *self {
            DatasetName::Images(p)
            | DatasetName::Cifar10(p)
            | DatasetName::Cifar100 { path: p, .. }
            | DatasetName::Idx(p)
            | DatasetName::Csv(p) => {
                vec![p.to_path_buf()]
            }
            DatasetName::Registered(entry) => match entry.source {
                Source::Idx { folder, .. } => vec![datasets_dir().join(folder)],
                Source::SystemFashionMnist => vec![fashion_mnist_full_dir()],
                Source::CsvPool { file, .. } => vec![datasets_dir().join(file)],
                Source::CsvOfficial { train, test } => vec![datasets_dir().join(train), datasets_dir().join(test)],
            },
        }
    }

    /// The canonical name the loaded splits carry (`cifar_labels`: the options' choice).
    pub(crate) fn canonical(&self, cifar_labels: CifarLabels) -> String {
        match *self {
            DatasetName::Images(dir) => format!("images:{}", fs_name(dir)),
            DatasetName::Cifar10(_) => "cifar10".into(),
            DatasetName::Cifar100 { coarse, .. } => match Self::cifar100_labels(coarse, cifar_labels) {
                CifarLabels::Coarse => "cifar100-coarse".into(),
                CifarLabels::Fine => "cifar100".into(),
            },
            DatasetName::Idx(_) => "idx".into(),
            DatasetName::Csv(path) => {
                format!("csv:{}", path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "table".into()))
            }
            DatasetName::Registered(entry) => entry.name.into(),
        }
    }
}

/// The last component of a folder's path (`data/cifar10-jpg/` -> `cifar10-jpg`).
pub(crate) fn fs_name(dir: &Path) -> String {
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    canonical.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "images".into())
}
