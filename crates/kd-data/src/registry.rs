//! Datasets by name: the bundled sets, the system Fashion-MNIST, CIFAR folders and CSV files.
//!
//! [`load_dataset`] is the one entry point. Names:
//!
//! | name | task | source | splits |
//! |---|---|---|---|
//! | `mnist` | image | `datasets/mnist` (IDX) | official train/test, valid carved from train |
//! | `fashion-mnist` | image | `datasets/fashion-mnist` (first 20k train) | official, valid carved |
//! | `fashion-mnist-full` | image | `/usr/share/datasets/fashion-mnist` (Debian `dataset-fashion-mnist`) | official, valid carved |
//! | `digits-8x8` | image | `datasets/digits-8x8` (CSV, 8x8) | stratified train/valid/test |
//! | `statlog-shuttle` | tabular | `datasets/statlog-shuttle` (CSV) | official, valid carved |
//! | `spambase`, `breast-cancer-wisconsin`, `german-credit`, `isl-default` | binary | `datasets/*` (CSV) | stratified |
//! | `cifar10:PATH`, `cifar100:PATH`, `cifar100-coarse:PATH` | image | official binary files | official, valid carved |
//! | `csv:PATH` | tabular/binary | any numeric CSV | stratified |
//! | `idx:DIR` | image | MNIST-format files in `DIR` (`train-*` and `t10k-*`, raw or `.gz`) | official, valid carved |
//! | `images:DIR` | image | JPEG/PNG/BMP files in class folders ([`crate::images`]) | `train/`, `test/`, `val/` folders, or one pool split by the options |

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kd_core::{BatchSource, KdError, Result};
use serde::{Deserialize, Serialize};

use crate::cifar::{self, CifarLabels};
use crate::dataset::{Augment, InMemoryDataset, Values};
use crate::idx::load_idx_pair;
use crate::images::{FolderOptions, ImageFolderReport, read_image_folder};
use crate::split::{shuffled, stratified_split};
use crate::table::{CsvTable, LabelCoding, read_csv};

/// The folder of bundled datasets: `$KD_DATASETS_DIR`, else the workspace's `datasets/`.
pub fn datasets_dir() -> PathBuf {
    std::env::var_os("KD_DATASETS_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets"))
}

/// Where `fashion-mnist-full` is read from: `$KD_FASHION_MNIST_DIR`, else the folder the Debian
/// package `dataset-fashion-mnist` installs, `/usr/share/datasets/fashion-mnist`.
pub fn fashion_mnist_full_dir() -> PathBuf {
    std::env::var_os("KD_FASHION_MNIST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"))
}

/// Default fraction of an official training split held out for validation.
pub const DEFAULT_VALID_FRACTION_OF_TRAIN: f64 = 0.1;
/// Default validation fraction of a dataset with no official split (of all samples).
pub const DEFAULT_VALID_FRACTION: f64 = 0.2;
/// Default test fraction of a dataset with no official split (of all samples).
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

/// How to load a dataset. Every field has a default, so a config file may give any subset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadOptions {
    /// Keep only the first `n` samples of the training split (quick runs). Applied after the
    /// validation split is carved out, so the validation split does not depend on it.
    pub train_limit: Option<usize>,
    /// Keep only the first `n` samples of the test split, and of the validation split.
    pub test_limit: Option<usize>,
    /// Augmentation of the training split; `None`: the dataset's default (pad-4 crop + flip for
    /// CIFAR, none for the others). Only image datasets can be augmented.
    pub augment: Option<Augment>,
    /// Seed of the augmentation draws.
    pub seed: u64,
    /// Validation fraction; `None`: the dataset's default. For a dataset with an official
    /// train/test split it is a fraction of the training split (default 0.1); otherwise a fraction
    /// of all samples (default 0.2). `0` means no validation split.
    pub valid_fraction: Option<f64>,
    /// Test fraction of all samples, for datasets without an official test split (default 0.2;
    /// ignored where the dataset has its own test split).
    pub test_fraction: Option<f64>,
    /// Seed of the stratified splits (separate from `seed`, so that changing the training seed
    /// keeps the same validation and test samples).
    pub split_seed: u64,
    /// The label column of a `csv:` dataset: a column name, or a 0-based index (`-1`: last).
    /// Default: the last column.
    pub label_column: Option<String>,
    /// Which CIFAR-100 labels `cifar100:PATH` learns (`cifar100-coarse:PATH` forces coarse).
    pub cifar_labels: CifarLabels,
    /// `images:DIR`: the side of the square input every image becomes (default: the size of
    /// the first training image, which every image must then have).
    pub image_size: Option<usize>,
    /// `images:DIR`: resize images of another size (shorter side to `image_size`, then the
    /// centre crop, bilinear) instead of refusing them.
    pub resize: bool,
    /// `images:DIR`: 1 (grey) or 3 (RGB, the default) channels; images are converted.
    pub channels: Option<usize>,
    /// `images:DIR`: per-channel normalisation mean of pixel values in `[0, 1]` (default: the
    /// training split's own, recorded in the run).
    pub mean: Option<Vec<f32>>,
    /// `images:DIR`: per-channel normalisation std (with `mean`).
    pub std: Option<Vec<f32>>,
    /// `images:DIR`: labels of a split folder that holds images without class folders
    /// (ImageNet's `val/`): `file,label` CSV with a header row, or `file label` lines.
    pub label_file: Option<PathBuf>,
    /// `images:DIR`: decoded sets up to this many MiB are held in memory; larger ones are read
    /// through a memory map of the decode cache (default 2048).
    pub memory_budget_mb: Option<usize>,
    /// `images:DIR`: the decode cache's folder (default `$KD_CACHE_DIR/images`, else
    /// `target/kd-cache/images`), or `off`.
    pub decode_cache: Option<String>,
}

impl LoadOptions {
    fn check(&self) -> Result<()> {
        if let Some(f) = self.valid_fraction
            && !(0.0..1.0).contains(&f)
        {
            return Err(KdError::InvalidConfig(format!("valid_fraction {f} is not in [0, 1)")));
        }
        if let Some(f) = self.test_fraction
            && !(f > 0.0 && f < 1.0)
        {
            return Err(KdError::InvalidConfig(format!("test_fraction {f} is not in (0, 1)")));
        }
        if self.train_limit == Some(0) {
            return Err(KdError::InvalidConfig("train_limit 0 leaves no training samples".into()));
        }
        if self.test_limit == Some(0) {
            return Err(KdError::InvalidConfig("test_limit 0 leaves no test samples".into()));
        }
        if let Some(a) = &self.augment {
            a.check()?;
        }
        if self.std.is_some() != self.mean.is_some() {
            return Err(KdError::InvalidConfig("mean and std are given together (or neither: training statistics)".into()));
        }
        Ok(())
    }

    /// The image-folder options that are set, by name (refused for other datasets).
    fn image_options_set(&self) -> Vec<&'static str> {
        let set = [
            ("image_size", self.image_size.is_some()),
            ("resize", self.resize),
            ("channels", self.channels.is_some()),
            ("mean", self.mean.is_some()),
            ("std", self.std.is_some()),
            ("label_file", self.label_file.is_some()),
            ("memory_budget_mb", self.memory_budget_mb.is_some()),
            ("decode_cache", self.decode_cache.is_some()),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(n, _)| n).collect()
    }
}

/// The splits of a dataset.
#[derive(Debug, Clone)]
pub struct DatasetSplits {
    /// Canonical name.
    pub name: String,
    /// Training split (augmented where configured, normalised with its own statistics).
    pub train: InMemoryDataset,
    /// Validation split, where configured (`valid_fraction > 0`).
    pub valid: Option<InMemoryDataset>,
    /// Test split.
    pub test: InMemoryDataset,
    /// What is odd about the data but still trainable (a class missing from an evaluation
    /// split, a class with a single sample...). Printed by the jobs and recorded in results.
    pub warnings: Vec<String>,
    /// What an `images:DIR` folder held and how it was read (layout, counts, sizes, cache).
    pub image_folder: Option<Arc<ImageFolderReport>>,
}

impl DatasetSplits {
    /// The splits for a run of seed `run_seed`: the training split's augmentation draws follow
    /// the run seed ([`InMemoryDataset::for_run_seed`]); validation and test are unchanged.
    /// Every job trains each seed on this, so seeds differ in their crops and flips as well as in
    /// their initialisation and shuffle.
    pub fn for_run_seed(&self, run_seed: u64) -> DatasetSplits {
        DatasetSplits { train: self.train.clone().for_run_seed(run_seed), ..self.clone() }
    }

    /// Prints [`DatasetSplits::warnings`] to stderr.
    pub fn print_warnings(&self) {
        for w in &self.warnings {
            eprintln!("warning: {}: {w}", self.name);
        }
    }

    /// A description of the loaded splits (sizes, classes, balance).
    pub fn info(&self) -> DatasetInfo {
        let entry = find_entry(&self.name);
        let shape = self.train.input_shape();
        let classes = self.train.num_classes();
        let mut class_counts = vec![0; classes];
        for split in [Some(&self.train), self.valid.as_ref(), Some(&self.test)].into_iter().flatten() {
            for (c, n) in split.class_counts().into_iter().enumerate() {
                class_counts[c] += n;
            }
        }
        DatasetInfo {
            name: self.name.clone(),
            aliases: entry.map(|e| e.aliases.iter().map(|s| s.to_string()).collect()).unwrap_or_default(),
            task: entry.map(|e| e.task).unwrap_or_else(|| Task::infer(shape, classes)),
            description: entry.map(|e| e.description.to_string()).unwrap_or_default(),
            licence: entry.map(|e| e.licence.to_string()).unwrap_or_default(),
            input_shape: shape,
            classes,
            train: self.train.len(),
            valid: self.valid.as_ref().map_or(0, |v| v.len()),
            test: self.test.len(),
            class_counts,
            class_names: self.train.class_names().map(<[String]>::to_vec),
            error: None,
        }
    }
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
    fn infer(shape: [usize; 3], classes: usize) -> Task {
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

/// A description of a dataset for listings (`cargo xtask datasets`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetInfo {
    /// The name [`load_dataset`] takes.
    pub name: String,
    /// Other accepted names.
    pub aliases: Vec<String>,
    /// Image, tabular or binary.
    pub task: Task,
    /// One line on what it is.
    pub description: String,
    /// Licence and credit, in short.
    pub licence: String,
    /// `[channels, height, width]` of one input (`[features, 1, 1]` for tables).
    pub input_shape: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Training samples (with the options it was loaded with).
    pub train: usize,
    /// Validation samples (0: no validation split).
    pub valid: usize,
    /// Test samples.
    pub test: usize,
    /// Samples per class over all splits.
    pub class_counts: Vec<usize>,
    /// Class names, where known.
    pub class_names: Option<Vec<String>>,
    /// Why it could not be loaded (then the sizes are 0), e.g. a package that is not installed.
    pub error: Option<String>,
}

impl DatasetInfo {
    /// Samples over all splits.
    pub fn total(&self) -> usize {
        self.train + self.valid + self.test
    }

    /// The fraction of the samples in each class.
    pub fn class_fractions(&self) -> Vec<f64> {
        let total = self.class_counts.iter().sum::<usize>().max(1) as f64;
        self.class_counts.iter().map(|&c| c as f64 / total).collect()
    }

    /// Class balance in words: the positive rate of a binary task, else the largest and
    /// smallest class shares.
    pub fn balance(&self) -> String {
        let fr = self.class_fractions();
        if fr.is_empty() || self.error.is_some() {
            return "-".into();
        }
        if self.classes == 2 {
            return format!("{:.1}% positive", 100.0 * fr[1]);
        }
        let max = fr.iter().copied().fold(0.0, f64::max);
        let min = fr.iter().copied().fold(1.0, f64::min);
        format!("largest class {:.1}%, smallest {:.2}%", 100.0 * max, 100.0 * min)
    }

    /// One line for a listing.
    pub fn summary_line(&self) -> String {
        let [c, h, w] = self.input_shape;
        let shape = if h * w > 1 { format!("{c}x{h}x{w}") } else { format!("{c} features") };
        match &self.error {
            Some(e) => format!("{:<24} {:<8} {:<12} {:>3} classes  unavailable: {e}", self.name, self.task, shape, self.classes),
            None => format!(
                "{:<24} {:<8} {:<12} {:>3} classes  train {:>6} / valid {:>5} / test {:>5}  {}",
                self.name,
                self.task,
                shape,
                self.classes,
                self.train,
                self.valid,
                self.test,
                self.balance()
            ),
        }
    }
}

/// Where a registered dataset's samples come from.
#[derive(Debug, Clone, Copy)]
enum Source {
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

#[derive(Debug, Clone, Copy)]
struct Entry {
    name: &'static str,
    aliases: &'static [&'static str],
    task: Task,
    shape: [usize; 3],
    classes: usize,
    class_names: &'static [&'static str],
    source: Source,
    description: &'static str,
    licence: &'static str,
}

const DIGITS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
const FASHION: &[&str] = &["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

const REGISTRY: &[Entry] = &[
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

fn find_entry(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name || e.aliases.contains(&name))
}

/// The names of the registered datasets (those that need no path).
pub fn dataset_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// Every registered dataset, loaded with default options to count its splits (the bundled sets
/// are small; this takes about a second). A dataset that cannot be loaded is listed with its
/// `error`.
pub fn list_datasets() -> Vec<DatasetInfo> {
    list_datasets_with(&LoadOptions::default())
}

/// [`list_datasets`] with the given options (split fractions, limits).
pub fn list_datasets_with(options: &LoadOptions) -> Vec<DatasetInfo> {
    REGISTRY
        .iter()
        .map(|e| match load_dataset(e.name, options) {
            Ok(splits) => splits.info(),
            Err(err) => DatasetInfo {
                name: e.name.into(),
                aliases: e.aliases.iter().map(|s| s.to_string()).collect(),
                task: e.task,
                description: e.description.into(),
                licence: e.licence.into(),
                input_shape: e.shape,
                classes: e.classes,
                train: 0,
                valid: 0,
                test: 0,
                class_counts: vec![0; e.classes],
                class_names: Some(e.class_names.iter().map(|s| s.to_string()).collect()),
                error: Some(err.to_string()),
            },
        })
        .collect()
}

/// Loads any dataset [`load_dataset`] accepts and describes it.
pub fn dataset_info(name: &str, options: &LoadOptions) -> Result<DatasetInfo> {
    Ok(load_dataset(name, options)?.info())
}

/// Checks that a dataset is a binary task: two classes, and both present in every split (a
/// binary metric such as AUC is undefined on a single class).
pub fn require_binary(splits: &DatasetSplits) -> Result<()> {
    let k = splits.train.num_classes();
    if k != 2 {
        return Err(KdError::InvalidConfig(format!(
            "dataset `{}` has {k} classes; a binary task needs exactly 2 (labels 0 and 1)",
            splits.name
        )));
    }
    for split in [Some(&splits.train), splits.valid.as_ref(), Some(&splits.test)].into_iter().flatten() {
        let counts = split.class_counts();
        if counts.contains(&0) {
            return Err(KdError::InvalidConfig(format!(
                "split {} has class counts {counts:?}: a binary task needs both classes in every split",
                split.name()
            )));
        }
    }
    Ok(())
}

/// How a loaded dataset is split and normalised.
enum Raw {
    /// The dataset's own train/test split.
    Official { train: InMemoryDataset, test: InMemoryDataset },
    /// The dataset's own train, validation and test splits.
    Three { train: InMemoryDataset, valid: InMemoryDataset, test: InMemoryDataset },
    /// All samples, to split by stratified sampling.
    Pool(InMemoryDataset),
}

enum Norm {
    /// Per-channel (per-feature) mean and std of the training split.
    TrainStats,
    /// Published constants (CIFAR) or the user's.
    Fixed(Vec<f32>, Vec<f32>),
}

struct Recipe {
    name: String,
    task: Task,
    raw: Raw,
    norm: Norm,
    default_augment: Augment,
    /// The shape every sample must have (registered datasets), checked on every split.
    shape: Option<[usize; 3]>,
    image_folder: Option<Arc<ImageFolderReport>>,
}

/// Loads a dataset by name (see the module documentation for the names): splits it (stratified
/// and seeded where there is no official split; a stratified validation split carved out of an
/// official training split), normalises every split with training statistics, and augments the
/// training split as configured.
pub fn load_dataset(name: &str, options: &LoadOptions) -> Result<DatasetSplits> {
    options.check()?;
    let name = name.trim();
    let image_options = options.image_options_set();
    if !image_options.is_empty() && !name.starts_with("images:") {
        return Err(KdError::InvalidConfig(format!(
            "{} appl{} to `images:DIR` datasets, not to `{name}`",
            image_options.join(", "),
            if image_options.len() == 1 { "ies" } else { "y" }
        )));
    }
    let recipe = if let Some(dir) = name.strip_prefix("images:") {
        image_folder_recipe(Path::new(dir), options)?
    } else if let Some(path) = name.strip_prefix("cifar10:") {
        let (train, test) = cifar::load_cifar10(Path::new(path))?;
        image_recipe("cifar10", train, test, Norm::Fixed(cifar::CIFAR10_MEAN.to_vec(), cifar::CIFAR10_STD.to_vec()), Augment::cifar())
    } else if let Some((coarse, path)) =
        name.strip_prefix("cifar100-coarse:").map(|p| (true, p)).or_else(|| name.strip_prefix("cifar100:").map(|p| (false, p)))
    {
        let labels = if coarse { CifarLabels::Coarse } else { options.cifar_labels };
        let (train, test) = cifar::load_cifar100(Path::new(path), labels)?;
        let canonical = if labels == CifarLabels::Coarse { "cifar100-coarse" } else { "cifar100" };
        image_recipe(canonical, train, test, Norm::Fixed(cifar::CIFAR100_MEAN.to_vec(), cifar::CIFAR100_STD.to_vec()), Augment::cifar())
    } else if let Some(dir) = name.strip_prefix("idx:") {
        let dir = Path::new(dir);
        let classes = crate::idx::idx_classes(dir, "train")?;
        let train = load_idx_pair(dir, "train", "idx/train", classes)?;
        let test = load_idx_pair(dir, "t10k", "idx/test", classes)?;
        Recipe {
            name: "idx".into(),
            task: Task::Image,
            raw: Raw::Official { train, test },
            norm: Norm::TrainStats,
            default_augment: Augment::none(),
            shape: None,
            image_folder: None,
        }
    } else if let Some(path) = name.strip_prefix("csv:") {
        let path = Path::new(path);
        let table = read_csv(path, options.label_column.as_deref(), LabelCoding::Auto)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "table".into());
        let name = format!("csv:{stem}");
        let ds = table_dataset(&name, &table, None)?;
        let task = if table.classes() == 2 { Task::Binary } else { Task::Tabular };
        Recipe { name, task, raw: Raw::Pool(ds), norm: Norm::TrainStats, default_augment: Augment::none(), shape: None, image_folder: None }
    } else if let Some(entry) = find_entry(name) {
        if options.label_column.is_some() {
            return Err(KdError::InvalidConfig(format!("label_column applies to `csv:PATH` datasets, not to `{}`", entry.name)));
        }
        registered(entry)?
    } else {
        return Err(KdError::InvalidConfig(format!(
            "unknown dataset `{name}`; known: {}, cifar10:PATH, cifar100:PATH, cifar100-coarse:PATH, csv:PATH, idx:DIR, images:DIR",
            dataset_names().join(", ")
        )));
    };
    finish(recipe, options)
}

fn image_recipe(name: &str, train: InMemoryDataset, test: InMemoryDataset, norm: Norm, default_augment: Augment) -> Recipe {
    Recipe {
        name: name.into(),
        task: Task::Image,
        raw: Raw::Official { train, test },
        norm,
        default_augment,
        shape: None,
        image_folder: None,
    }
}

/// The last component of a folder's path (`data/cifar10-jpg/` -> `cifar10-jpg`).
fn fs_name(dir: &Path) -> String {
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    canonical.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "images".into())
}

/// `images:DIR`: the folder's own splits (or its pool), normalised with the given constants or
/// training statistics. Default augmentation: CIFAR's pad-crop (a padding of 1/8 of the side)
/// and flip for images up to 64 pixels, ImageNet's random-resized crop and flip above.
fn image_folder_recipe(dir: &Path, options: &LoadOptions) -> Result<Recipe> {
    let folder = read_image_folder(
        dir,
        &FolderOptions {
            image_size: options.image_size,
            resize: options.resize,
            channels: options.channels,
            label_file: options.label_file.as_deref(),
            memory_budget_mb: options.memory_budget_mb,
            decode_cache: options.decode_cache.as_deref(),
        },
    )?;
    let [_, h, w] = folder.report.shape;
    let default_augment =
        if h.max(w) <= 64 { Augment { crop_padding: (h.min(w) / 8).max(1), hflip: true, ..Augment::none() } } else { Augment::imagenet() };
    let norm = match (&options.mean, &options.std) {
        (Some(m), Some(s)) => Norm::Fixed(m.clone(), s.clone()),
        _ => Norm::TrainStats,
    };
    let raw = match (folder.valid, folder.test) {
        (Some(valid), Some(test)) => {
            if options.valid_fraction.is_some_and(|f| f > 0.0) {
                return Err(KdError::InvalidConfig(format!(
                    "images:{}: has its own val/ split; valid_fraction would carve a second one (leave it unset)",
                    dir.display()
                )));
            }
            Raw::Three { train: folder.train, valid, test }
        }
        (None, Some(test)) => Raw::Official { train: folder.train, test },
        (_, None) => Raw::Pool(folder.train),
    };
    let folder_name = fs_name(dir);
    Ok(Recipe {
        name: format!("images:{folder_name}"),
        task: Task::Image,
        raw,
        norm,
        default_augment,
        shape: None,
        image_folder: Some(Arc::new(folder.report)),
    })
}

fn registered(entry: &Entry) -> Result<Recipe> {
    let dir = datasets_dir();
    let n = entry.name;
    let raw = match entry.source {
        Source::Idx { folder, train } => {
            let folder = dir.join(folder);
            Raw::Official {
                train: load_idx_pair(&folder, train, &format!("{n}/train"), entry.classes)?,
                test: load_idx_pair(&folder, "t10k", &format!("{n}/test"), entry.classes)?,
            }
        }
        Source::SystemFashionMnist => {
            let folder = fashion_mnist_full_dir();
            check_system_dir(&folder)?;
            Raw::Official {
                train: load_idx_pair(&folder, "train", &format!("{n}/train"), entry.classes)?,
                test: load_idx_pair(&folder, "t10k", &format!("{n}/test"), entry.classes)?,
            }
        }
        Source::CsvPool { file, image } => {
            let table = read_csv(&dir.join(file), None, LabelCoding::Integers { classes: Some(entry.classes) })?;
            Raw::Pool(table_dataset(n, &table, image)?)
        }
        Source::CsvOfficial { train, test } => {
            let coding = LabelCoding::Integers { classes: Some(entry.classes) };
            let train_t = read_csv(&dir.join(train), None, coding)?;
            let test_t = read_csv(&dir.join(test), None, coding)?;
            if test_t.feature_names != train_t.feature_names {
                return Err(KdError::Malformed {
                    path: test_t.path,
                    reason: format!("columns {:?} differ from the training file's {:?}", test_t.feature_names, train_t.feature_names),
                });
            }
            Raw::Official {
                train: table_dataset(&format!("{n}/train"), &train_t, None)?,
                test: table_dataset(&format!("{n}/test"), &test_t, None)?,
            }
        }
    };
    let names: Vec<String> = entry.class_names.iter().map(|s| s.to_string()).collect();
    let raw = match raw {
        Raw::Official { train, test } => {
            Raw::Official { train: train.with_class_names(names.clone())?, test: test.with_class_names(names)? }
        }
        Raw::Pool(all) => Raw::Pool(all.with_class_names(names)?),
        three @ Raw::Three { .. } => three, // registered datasets have two splits at most
    };
    Ok(Recipe {
        name: n.into(),
        task: entry.task,
        raw,
        norm: Norm::TrainStats,
        default_augment: Augment::none(),
        shape: Some(entry.shape),
        image_folder: None,
    })
}

/// The error for a missing system Fashion-MNIST: what to install.
fn check_system_dir(folder: &Path) -> Result<()> {
    if folder.is_dir() {
        return Ok(());
    }
    Err(KdError::Missing {
        method: "dataset `fashion-mnist-full`".into(),
        what: format!(
            "the Debian package dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`): {} was not found \
             (or set KD_FASHION_MNIST_DIR to a folder holding its four .gz files; `fashion-mnist` is the bundled \
             20,000-image subset)",
            folder.display()
        ),
    })
}

/// A dataset from a CSV table: `[features, 1, 1]` samples, or images of `shape` scaled by `1/scale`.
fn table_dataset(name: &str, table: &CsvTable, image: Option<([usize; 3], f32)>) -> Result<InMemoryDataset> {
    let f = table.feature_names.len();
    let (shape, values) = match image {
        Some((shape, scale)) => {
            if shape.iter().product::<usize>() != f {
                return Err(KdError::Malformed {
                    path: table.path.clone(),
                    reason: format!("{f} feature columns cannot form images of {shape:?}"),
                });
            }
            (shape, table.features.iter().map(|v| v / scale).collect())
        }
        None => ([f, 1, 1], table.features.clone()),
    };
    InMemoryDataset::new(name, Values::F32(Arc::new(values)), table.labels.clone(), shape, table.classes())?
        .with_class_names(table.class_names.clone())
}

fn finish(recipe: Recipe, options: &LoadOptions) -> Result<DatasetSplits> {
    let Recipe { name, task, raw, norm, default_augment, shape, image_folder } = recipe;
    let mut warnings = check_raw(&name, &raw, shape)?;
    let seed = options.split_seed;
    let (train, valid, test) = match raw {
        Raw::Official { train, test } => {
            let vf = options.valid_fraction.unwrap_or(DEFAULT_VALID_FRACTION_OF_TRAIN);
            if vf > 0.0 {
                let parts = stratified_split(&train.labels(), train.num_classes(), &[vf], seed)?;
                // Training keeps the file order (so `train_limit` takes the first samples, as
                // before); the validation split is in random order, so a limit keeps it random.
                let valid = train.subset(&shuffled(parts[1].clone(), seed, 1), format!("{name}/valid"))?;
                (train.subset(&parts[0], format!("{name}/train"))?, Some(valid), test.with_name(format!("{name}/test")))
            } else {
                (train.with_name(format!("{name}/train")), None, test.with_name(format!("{name}/test")))
            }
        }
        Raw::Three { train, valid, test } => {
            let valid = if options.valid_fraction == Some(0.0) { None } else { Some(valid.with_name(format!("{name}/valid"))) };
            (train.with_name(format!("{name}/train")), valid, test.with_name(format!("{name}/test")))
        }
        Raw::Pool(all) => {
            let tf = options.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
            let vf = options.valid_fraction.unwrap_or(DEFAULT_VALID_FRACTION);
            if tf + vf >= 1.0 {
                return Err(KdError::InvalidConfig(format!("test_fraction {tf} + valid_fraction {vf} leave nothing for training")));
            }
            let parts = stratified_split(&all.labels(), all.num_classes(), &[tf, vf], seed)?;
            // Random order within each split: files are often sorted by class, and a limit must
            // still take a representative sample.
            let part = |k: usize, split: &str| all.subset(&shuffled(parts[k].clone(), seed, k as u64), format!("{name}/{split}"));
            let valid = if vf > 0.0 { Some(part(2, "valid")?) } else { None };
            (part(0, "train")?, valid, part(1, "test")?)
        }
    };
    let train = match options.train_limit {
        Some(n) => train.take(n)?,
        None => train,
    };
    let limit = |d: InMemoryDataset| match options.test_limit {
        Some(n) => d.take(n),
        None => Ok(d),
    };
    let (valid, test) = (valid.map(limit).transpose()?, limit(test)?);
    for split in [Some(&train), valid.as_ref(), Some(&test)].into_iter().flatten() {
        if split.is_empty() {
            return Err(KdError::InvalidConfig(format!("split {} is empty: too few samples for the split fractions", split.name())));
        }
    }
    warnings.extend(check_splits(&train, valid.as_ref(), &test)?);
    let (mean, std) = match norm {
        // Training statistics only: the evaluation splits must not leak into preprocessing.
        Norm::TrainStats => train.channel_stats(),
        Norm::Fixed(m, s) => (m, s),
    };
    let augment = options.augment.unwrap_or(default_augment);
    if augment.is_active() && task != Task::Image {
        return Err(KdError::InvalidConfig(format!("dataset `{name}` is {task}: augmentation (crop, flip) applies to images only")));
    }
    let train = train.with_normalization(mean.clone(), std.clone())?.with_augment(augment, options.seed);
    let valid = valid.map(|v| v.with_normalization(mean.clone(), std.clone())).transpose()?;
    let test = test.with_normalization(mean, std)?;
    Ok(DatasetSplits { name, train, valid, test, warnings, image_folder })
}

/// The class's name for messages: its index, and its label value where that differs.
fn class_label(data: &InMemoryDataset, class: usize) -> String {
    match data.class_names().and_then(|n| n.get(class)) {
        Some(n) if *n != class.to_string() => format!("{class} (`{n}`)"),
        _ => class.to_string(),
    }
}

/// Checks the data before it is split: at least two classes, every sample of the shape the
/// dataset has, train and test of one shape; warns about classes with a single sample.
fn check_raw(name: &str, raw: &Raw, shape: Option<[usize; 3]>) -> Result<Vec<String>> {
    let parts: Vec<&InMemoryDataset> = match raw {
        Raw::Official { train, test } => vec![train, test],
        Raw::Three { train, valid, test } => vec![train, valid, test],
        Raw::Pool(all) => vec![all],
    };
    let first = parts[0];
    if first.num_classes() < 2 {
        return Err(KdError::InvalidConfig(format!(
            "dataset `{name}` has a single class ({}): classification needs at least two",
            class_label(first, 0)
        )));
    }
    for part in &parts {
        if let Some(expected) = shape
            && part.input_shape() != expected
        {
            return Err(KdError::InvalidConfig(format!(
                "{}: samples have shape {:?}, but dataset `{name}` has {expected:?} (files of another dataset or image size?)",
                part.name(),
                part.input_shape()
            )));
        }
        if part.input_shape() != first.input_shape() {
            return Err(KdError::InvalidConfig(format!(
                "{} has samples of shape {:?} but {} has {:?}: the splits must agree",
                part.name(),
                part.input_shape(),
                first.name(),
                first.input_shape()
            )));
        }
    }
    let mut totals = vec![0usize; first.num_classes()];
    for part in &parts {
        for (c, n) in part.class_counts().into_iter().enumerate() {
            totals[c] += n;
        }
    }
    Ok(totals
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n == 1)
        .map(|(c, _)| {
            format!("class {} has a single sample in the whole dataset: it cannot be both learnt and evaluated", class_label(first, c))
        })
        .collect())
}

/// Checks the splits: training needs two classes at least; a two-class task needs both classes
/// in every split (its metrics are undefined otherwise); other missing classes are warnings.
fn check_splits(train: &InMemoryDataset, valid: Option<&InMemoryDataset>, test: &InMemoryDataset) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let classes = train.num_classes();
    for split in [Some(train), valid, Some(test)].into_iter().flatten() {
        let counts = split.class_counts();
        let missing: Vec<usize> = (0..classes).filter(|&c| counts.get(c).copied().unwrap_or(0) == 0).collect();
        if missing.is_empty() {
            continue;
        }
        let names: Vec<String> = missing.iter().map(|&c| class_label(train, c)).collect();
        let is_train = std::ptr::eq(split, train);
        if is_train && classes - missing.len() < 2 {
            let only = (0..classes).find(|c| !missing.contains(c)).map(|c| class_label(train, c)).unwrap_or_default();
            return Err(KdError::InvalidConfig(format!(
                "training split {} holds samples of class {only} only (class counts {counts:?}): there is nothing to learn",
                split.name()
            )));
        }
        if classes == 2 {
            return Err(KdError::InvalidConfig(format!(
                "split {} has no sample of class {}: binary metrics (F1, ROC-AUC, PR-AUC) are undefined without both classes",
                split.name(),
                names.join(", ")
            )));
        }
        warnings.push(if is_train {
            format!("training split {} has no sample of class {}: the model cannot learn it", split.name(), names.join(", "))
        } else {
            format!("split {} has no sample of class {}: its accuracy is not measured there", split.name(), names.join(", "))
        });
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cifar::tests::{write_cifar10, write_cifar100};

    fn opts() -> LoadOptions {
        LoadOptions::default()
    }

    #[test]
    fn mnist_has_a_stratified_validation_split_and_limits() {
        let d = load_dataset("mnist", &opts()).unwrap();
        assert_eq!((d.train.len(), d.valid.as_ref().unwrap().len(), d.test.len()), (54_000, 6_000, 10_000));
        assert_eq!(d.train.name(), "mnist/train");
        // Validation counts follow the training counts (5923 zeros: 592).
        assert_eq!(d.valid.as_ref().unwrap().class_counts()[0], 592);
        let d = load_dataset("mnist", &LoadOptions { train_limit: Some(1000), test_limit: Some(300), valid_fraction: Some(0.0), ..opts() })
            .unwrap();
        assert_eq!((d.train.len(), d.test.len()), (1000, 300));
        assert!(d.valid.is_none());
        // First training labels of the canonical MNIST.
        assert_eq!((0..10).map(|i| d.train.label(i)).collect::<Vec<_>>(), vec![5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    }

    #[test]
    fn every_bundled_dataset_loads_with_the_documented_sizes() {
        let expect = [
            ("fashion-mnist", 30_000, [1, 28, 28], 10),
            ("digits-8x8", 1_797, [1, 8, 8], 10),
            ("statlog-shuttle", 58_000, [9, 1, 1], 7),
            ("spambase", 4_601, [57, 1, 1], 2),
            ("breast-cancer-wisconsin", 569, [30, 1, 1], 2),
            ("german-credit", 1_000, [61, 1, 1], 2),
            ("isl-default", 10_000, [3, 1, 1], 2),
        ];
        for (name, total, shape, classes) in expect {
            let d = load_dataset(name, &opts()).unwrap();
            let info = d.info();
            assert_eq!(info.total(), total, "{name}");
            assert_eq!((info.input_shape, info.classes), (shape, classes), "{name}");
            assert!(d.valid.is_some(), "{name}");
            if info.task == Task::Binary {
                require_binary(&d).unwrap();
            }
        }
        let d = load_dataset("statlog-shuttle", &opts()).unwrap();
        assert_eq!((d.train.len(), d.valid.as_ref().unwrap().len(), d.test.len()), (39_150, 4_350, 14_500));
        let d = load_dataset("spambase", &opts()).unwrap();
        assert_eq!((d.train.len(), d.valid.as_ref().unwrap().len(), d.test.len()), (2_761, 920, 920));
        assert_eq!(load_dataset("wdbc", &opts()).unwrap().name, "breast-cancer-wisconsin");
    }

    #[test]
    fn tabular_splits_are_stratified() {
        // Spambase is sorted by class in the file: the splits must still share its balance.
        let d = load_dataset("spambase", &LoadOptions { split_seed: 3, ..opts() }).unwrap();
        let rate = |s: &InMemoryDataset| s.class_counts()[1] as f64 / s.len() as f64;
        for s in [&d.train, d.valid.as_ref().unwrap(), &d.test] {
            assert!((rate(s) - 1813.0 / 4601.0).abs() < 0.002, "{}: {}", s.name(), rate(s));
        }
        // A prefix of the training split is a random sample, not one class.
        let small = load_dataset("spambase", &LoadOptions { train_limit: Some(200), ..opts() }).unwrap();
        assert!((rate(&small.train) - 0.394).abs() < 0.1);
        // Other split seeds give other (but equally sized) splits; the same seed the same.
        let again = load_dataset("spambase", &LoadOptions { split_seed: 3, ..opts() }).unwrap();
        assert_eq!(again.test.fingerprint(), d.test.fingerprint());
        let other = load_dataset("spambase", &LoadOptions { split_seed: 4, ..opts() }).unwrap();
        assert_ne!(other.test.fingerprint(), d.test.fingerprint());
        let custom = load_dataset("spambase", &LoadOptions { valid_fraction: Some(0.0), test_fraction: Some(0.3), ..opts() }).unwrap();
        assert!(custom.valid.is_none());
        assert_eq!(custom.test.len(), 1380);
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn standardisation_uses_training_statistics_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("a,b,label\n");
        for i in 0..100 {
            text += &format!("{},{},{}\n", i, (i * i) % 17, i % 2);
        }
        let p = write(dir.path(), "t.csv", &text);
        let d = load_dataset(&format!("csv:{}", p.display()), &opts()).unwrap();
        assert_eq!(d.name, "csv:t");
        assert_eq!(d.train.input_shape(), [2, 1, 1]);
        // The recorded statistics are exactly those of the training rows...
        let (mean, std) = d.train.normalization();
        let rows: Vec<usize> = (0..d.train.len()).collect();
        let raw = d.train.clone().with_normalization(vec![0.0, 0.0], vec![1.0, 1.0]).unwrap().host_batch(&rows, 0, 0).unwrap();
        for f in 0..2 {
            let vals: Vec<f64> = (0..rows.len()).map(|r| raw.inputs[r * 2 + f] as f64).collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let s = (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
            assert!((mean[f] as f64 - m).abs() < 1e-4 && (std[f] as f64 - s).abs() < 1e-4, "feature {f}");
        }
        // ...so the training split is standardised, and the other splits use the same numbers.
        let b = d.train.host_batch(&rows, 0, 0).unwrap();
        let m0 = (0..rows.len()).map(|r| b.inputs[r * 2] as f64).sum::<f64>() / rows.len() as f64;
        assert!(m0.abs() < 1e-5);
        assert_eq!(d.test.normalization(), d.train.normalization());
        assert_eq!(d.valid.as_ref().unwrap().normalization(), d.train.normalization());
        // Test statistics differ from training statistics: they were not used.
        assert_ne!(d.test.channel_stats().0, mean.to_vec());
    }

    #[test]
    fn csv_datasets_take_a_label_column_and_check_binary() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("colour,x,y\n");
        for i in 0..60 {
            text += &format!("{},{},{}\n", ["red", "green", "blue"][i % 3], i, i % 7);
        }
        let p = write(dir.path(), "c.csv", &text);
        let name = format!("csv:{}", p.display());
        let d = load_dataset(&name, &LoadOptions { label_column: Some("colour".into()), ..opts() }).unwrap();
        assert_eq!(d.train.num_classes(), 3);
        assert_eq!(d.train.class_names().unwrap(), ["blue", "green", "red"]);
        let msg = require_binary(&d).unwrap_err().to_string();
        assert!(msg.contains("has 3 classes"), "{msg}");
        // By default the label is the last column (y), and the text colour is then a bad feature.
        let msg = load_dataset(&name, &opts()).unwrap_err().to_string();
        assert!(msg.contains("line 2, column 0 (`colour`): `red` is not a number"), "{msg}");
        // Index 0 is the colour again.
        assert_eq!(load_dataset(&name, &LoadOptions { label_column: Some("0".into()), ..opts() }).unwrap().train.num_classes(), 3);
        // Bad cells are errors naming the line.
        let p = write(dir.path(), "bad.csv", "a,label\n1,0\nx,1\n");
        let msg = load_dataset(&format!("csv:{}", p.display()), &opts()).unwrap_err().to_string();
        assert!(msg.contains("bad.csv") && msg.contains("line 3, column 0 (`a`): `x` is not a number"), "{msg}");
        // A binary dataset whose test split has a single class.
        let p = write(
            dir.path(),
            "b.csv",
            &(String::from("a,label\n") + &(0..20).map(|i| format!("{i},{}\n", (i == 0) as u8)).collect::<String>()),
        );
        let msg = load_dataset(&format!("csv:{}", p.display()), &opts()).unwrap_err().to_string();
        assert!(msg.contains("has no sample of class 1: binary metrics (F1, ROC-AUC, PR-AUC) are undefined"), "{msg}");
    }

    #[test]
    fn files_of_another_image_size_are_refused_for_a_registered_dataset() {
        let images = |n: usize, side: usize, name: &str| {
            let pixels = Arc::new((0..n * side * side).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            InMemoryDataset::new(name, Values::U8 { data: pixels, scale: 255.0 }, (0..n).map(|i| i % 10).collect(), [1, side, side], 10)
                .unwrap()
        };
        let raw = Raw::Official { train: images(20, 14, "mnist/train"), test: images(10, 14, "mnist/test") };
        let err = check_raw("mnist", &raw, Some([1, 28, 28])).unwrap_err().to_string();
        assert!(err.contains("mnist/train: samples have shape [1, 14, 14], but dataset `mnist` has [1, 28, 28]"), "{err}");
        // Only the test files smaller: refused before any evaluation can fail inside Burn.
        let raw = Raw::Official { train: images(20, 28, "mnist/train"), test: images(10, 14, "mnist/test") };
        let err = check_raw("mnist", &raw, Some([1, 28, 28])).unwrap_err().to_string();
        assert!(err.contains("mnist/test: samples have shape [1, 14, 14]"), "{err}");
        let raw = Raw::Official { train: images(20, 28, "mnist/train"), test: images(10, 28, "mnist/test") };
        assert!(check_raw("mnist", &raw, Some([1, 28, 28])).unwrap().is_empty());
    }

    #[test]
    fn cifar_names_normalise_and_augment_the_training_split() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path(), 20);
        let d = load_dataset(&format!("cifar10:{}", dir.path().display()), &opts()).unwrap();
        assert_eq!((d.train.len(), d.valid.as_ref().unwrap().len(), d.test.len()), (90, 10, 20));
        assert_eq!(d.train.augment(), Augment::cifar());
        assert!(!d.valid.as_ref().unwrap().augmented() && !d.test.augmented());
        assert_eq!(d.test.normalization().0, &cifar::CIFAR10_MEAN[..]);
        let off = LoadOptions { augment: Some(Augment::none()), valid_fraction: Some(0.0), ..opts() };
        let d = load_dataset(&format!("cifar10:{}", dir.path().display()), &off).unwrap();
        assert!(!d.train.augmented() && d.valid.is_none());

        write_cifar100(dir.path(), 200, 20);
        let d = load_dataset(&format!("cifar100:{}", dir.path().display()), &opts()).unwrap();
        assert_eq!((d.name.as_str(), d.train.num_classes()), ("cifar100", 100));
        assert_eq!(d.train.normalization().1, &cifar::CIFAR100_STD[..]);
        let d = load_dataset(&format!("cifar100-coarse:{}", dir.path().display()), &opts()).unwrap();
        assert_eq!((d.name.as_str(), d.train.num_classes()), ("cifar100-coarse", 20));
        let coarse = LoadOptions { cifar_labels: CifarLabels::Coarse, ..opts() };
        assert_eq!(load_dataset(&format!("cifar100:{}", dir.path().display()), &coarse).unwrap().train.num_classes(), 20);
    }

    #[test]
    fn byte_statistics_equal_the_float_statistics_bit_for_bit() {
        // The integer fast path of `channel_stats` must give the normalisation the two-pass
        // float path gave, so that runs on the bundled image sets keep their numbers.
        for name in ["mnist", "fashion-mnist", "digits-8x8"] {
            let d = load_dataset(name, &opts()).unwrap();
            let rows: Vec<usize> = (0..d.train.len()).collect();
            let raw = d.train.clone().with_normalization(vec![0.0], vec![1.0]).unwrap().host_batch(&rows, 0, 0).unwrap();
            let floats = InMemoryDataset::new("f", Values::F32(Arc::new(raw.inputs)), raw.labels, d.train.input_shape(), 10).unwrap();
            assert_eq!(d.train.channel_stats(), floats.channel_stats(), "{name}");
        }
    }

    #[test]
    fn image_folders_load_in_every_layout() {
        use crate::images::tests::write_class_folders;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache").to_string_lossy().into_owned();
        let o = LoadOptions { decode_cache: Some(cache.clone()), ..opts() };
        // One pool of class folders: split by the stratified options, normalised by training
        // statistics, pad-crop and flip by default for small images.
        let pool = dir.path().join("pets");
        write_class_folders(&pool, &["cat", "dog"], 10, 8, "png");
        let d = load_dataset(&format!("images:{}", pool.display()), &o).unwrap();
        assert_eq!(d.name, "images:pets");
        assert_eq!((d.train.len(), d.valid.as_ref().unwrap().len(), d.test.len()), (12, 4, 4));
        assert_eq!(d.train.class_names().unwrap(), ["cat", "dog"]);
        assert_eq!(d.train.augment(), Augment { crop_padding: 1, hflip: true, ..Augment::none() });
        let (mean, std) = d.train.channel_stats();
        assert_eq!(d.train.normalization(), (&mean[..], &std[..]));
        let report = d.image_folder.as_ref().unwrap();
        assert_eq!((report.layout.as_str(), report.files[0].1.clone()), ("pool", vec![10, 10]));
        // train/, val/, test/: the folder's own validation split; given constants normalise.
        let three = dir.path().join("three");
        for (split, n) in [("train", 6), ("val", 2), ("test", 3)] {
            write_class_folders(&three.join(split), &["a", "b", "c"], n, 6, "png");
        }
        let fixed = LoadOptions { mean: Some(vec![0.5; 3]), std: Some(vec![0.25; 3]), augment: Some(Augment::imagenet()), ..o.clone() };
        let d = load_dataset(&format!("images:{}", three.display()), &fixed).unwrap();
        assert_eq!((d.train.len(), d.valid.as_ref().unwrap().len(), d.test.len()), (18, 6, 9));
        assert_eq!(d.test.normalization(), (&[0.5; 3][..], &[0.25; 3][..]));
        assert!(d.train.augment().random_resized_crop);
        let carve = LoadOptions { valid_fraction: Some(0.2), ..o.clone() };
        assert!(load_dataset(&format!("images:{}", three.display()), &carve).unwrap_err().to_string().contains("has its own val/ split"));
        // A class folder missing from the test split is a recorded warning.
        std::fs::remove_dir_all(three.join("test/c")).unwrap();
        let d = load_dataset(&format!("images:{}", three.display()), &o).unwrap();
        assert!(d.warnings.iter().any(|w| w.contains("images:three/test has no sample of class 2 (`c`)")), "{:?}", d.warnings);
        // Image options on another dataset are refused by name.
        let err = load_dataset("digits", &LoadOptions { resize: true, ..opts() }).unwrap_err().to_string();
        assert!(err.contains("resize applies to `images:DIR` datasets"), "{err}");
        let both = LoadOptions { augment: Some(Augment { crop_padding: 4, ..Augment::imagenet() }), ..o };
        assert!(load_dataset(&format!("images:{}", pool.display()), &both).unwrap_err().to_string().contains("two crops"));
    }

    #[test]
    fn bad_names_and_options_are_errors() {
        assert!(load_dataset("imagenet", &opts()).unwrap_err().to_string().contains("unknown dataset `imagenet`"));
        let bad = LoadOptions { valid_fraction: Some(1.0), ..opts() };
        assert!(load_dataset("digits", &bad).unwrap_err().to_string().contains("valid_fraction"));
        let flip = LoadOptions { augment: Some(Augment { hflip: true, ..Augment::none() }), ..opts() };
        assert!(load_dataset("spambase", &flip).unwrap_err().to_string().contains("images only"));
        let col = LoadOptions { label_column: Some("x".into()), ..opts() };
        assert!(load_dataset("spambase", &col).is_err());
        let both = LoadOptions { valid_fraction: Some(0.5), test_fraction: Some(0.5), ..opts() };
        assert!(load_dataset("spambase", &both).is_err());
    }

    #[test]
    fn missing_system_fashion_mnist_says_what_to_install() {
        let msg = check_system_dir(Path::new("/nonexistent/fashion-mnist")).unwrap_err().to_string();
        assert!(msg.contains("apt-get install dataset-fashion-mnist"), "{msg}");
        // Where the package is installed, the full set loads.
        if fashion_mnist_full_dir().is_dir() {
            let d = load_dataset("fashion-mnist-full", &opts()).unwrap();
            assert_eq!(d.info().total(), 70_000);
        }
    }

    #[test]
    fn listing_covers_every_registered_name() {
        let list = list_datasets();
        assert_eq!(list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), dataset_names());
        let shuttle = list.iter().find(|i| i.name == "statlog-shuttle").unwrap();
        assert_eq!(shuttle.class_counts[0], 45_586);
        assert!(shuttle.balance().starts_with("largest class 78.6%"));
        let spam = list.iter().find(|i| i.name == "spambase").unwrap();
        assert_eq!(spam.balance(), "39.4% positive");
        assert!(spam.summary_line().contains("57 features"));
        for i in &list {
            assert!(i.error.is_none() || i.name == "fashion-mnist-full", "{}: {:?}", i.name, i.error);
        }
    }

    #[test]
    fn options_deserialise_with_defaults() {
        let o: LoadOptions = serde_json::from_str(r#"{"train_limit": 10, "augment": {"hflip": true}}"#).unwrap();
        assert_eq!(o.train_limit, Some(10));
        assert_eq!(o.augment, Some(Augment { hflip: true, ..Augment::none() }));
        assert_eq!(o.cifar_labels, CifarLabels::Fine);
        assert!(serde_json::from_str::<LoadOptions>(r#"{"valid_frac": 0.1}"#).is_err());
    }
}
