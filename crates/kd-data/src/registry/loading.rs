//! Loading a dataset: [`load_dataset`] reads its samples, splits them (the one split plan
//! [`super::dataset_info`] counts too), normalises and augments them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kd_core::{BatchSource, KdError, Result};
use serde::{Deserialize, Serialize};

use super::catalog::{DatasetName, Entry, Source, Task, datasets_dir, fashion_mnist_full_dir};
use crate::cifar::{self, CifarLabels};
use crate::dataset::{Augment, InMemoryDataset, Values};
use crate::idx::load_idx_pair;
use crate::images::{FolderOptions, ImageFolderReport, read_image_folder};
use crate::split::{shuffled, stratified_split};
use crate::table::{CsvTable, LabelCoding, read_csv};

/// Default fraction of an official training split held out for validation.
pub const DEFAULT_VALID_FRACTION_OF_TRAIN: f64 = 0.1;
/// Default validation fraction of a dataset with no official split (of all samples).
pub const DEFAULT_VALID_FRACTION: f64 = 0.2;
/// Default test fraction of a dataset with no official split (of all samples).
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

/// The largest `image_size` (a side in pixels) that [`LoadOptions`] accepts.
pub const MAX_IMAGE_SIDE: usize = 8192;

/// How to load a dataset. Every field has a default, so a config file may give any subset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadOptions {
    /// Keep only the first `n` samples of the training split (quick runs). Applied after the
    /// validation split is carved out, so the validation split does not depend on it. Where the
    /// split comes sorted by class (an image folder, read class folder by class folder), it
    /// takes `n` samples drawn at random with the split seed instead, so that every class stays.
    pub train_limit: Option<usize>,
    /// Keep only the first `n` samples of the test split, and of the validation split (drawn at
    /// random where the split comes sorted by class, as for `train_limit`).
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
        if let Some(side) = self.image_size.filter(|&s| s > MAX_IMAGE_SIDE) {
            return Err(KdError::InvalidConfig(format!("image_size {side} is above the limit of {MAX_IMAGE_SIDE} pixels")));
        }
        if let Some(m) = self.mean.iter().flatten().find(|v| !v.is_finite()) {
            return Err(KdError::InvalidConfig(format!("mean: every value must be finite, got {m}")));
        }
        if let Some(s) = self.std.iter().flatten().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(KdError::InvalidConfig(format!("std: every value must be finite and > 0, got {s}")));
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
    /// The data files as they were read (size, time, content hash): what a run records so
    /// that it is bound to this content, not only to the name (empty for data made in memory).
    pub files: Vec<kd_core::files::FileFingerprint>,
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

/// A dataset's own parts, before it is split: `T` is a part's samples when loading, or only
/// their labels when [`super::dataset_info`] counts them.
pub(crate) enum Raw<T> {
    /// The dataset's own train/test split.
    Official { train: T, test: T },
    /// The dataset's own train, validation and test splits.
    Three { train: T, valid: T, test: T },
    /// All samples, to split by stratified sampling.
    Pool(T),
}

impl<T> Raw<T> {
    /// The parts in order: train, (valid,) test; or the pool.
    fn parts(&self) -> Vec<&T> {
        match self {
            Raw::Official { train, test } => vec![train, test],
            Raw::Three { train, valid, test } => vec![train, valid, test],
            Raw::Pool(all) => vec![all],
        }
    }

    /// [`Raw::parts`], owned.
    pub(crate) fn into_parts(self) -> Vec<T> {
        match self {
            Raw::Official { train, test } => vec![train, test],
            Raw::Three { train, valid, test } => vec![train, valid, test],
            Raw::Pool(all) => vec![all],
        }
    }

    /// The same parts, each through `f`.
    pub(crate) fn map<U>(&self, f: impl Fn(&T) -> U) -> Raw<U> {
        match self {
            Raw::Official { train, test } => Raw::Official { train: f(train), test: f(test) },
            Raw::Three { train, valid, test } => Raw::Three { train: f(train), valid: f(valid), test: f(test) },
            Raw::Pool(all) => Raw::Pool(f(all)),
        }
    }

    /// The parts of an image folder: its own validation and test splits where it has them
    /// (then `valid_fraction` may not carve another), else a pool.
    pub(crate) fn of_folder(dir: &Path, options: &LoadOptions, train: T, valid: Option<T>, test: Option<T>) -> Result<Raw<T>> {
        Ok(match (valid, test) {
            (Some(valid), Some(test)) => {
                if options.valid_fraction.is_some_and(|f| f > 0.0) {
                    return Err(KdError::InvalidConfig(format!(
                        "images:{}: has its own val/ split; valid_fraction would carve a second one (leave it unset)",
                        dir.display()
                    )));
                }
                Raw::Three { train, valid, test }
            }
            (None, Some(test)) => Raw::Official { train, test },
            (_, None) => Raw::Pool(train),
        })
    }
}

/// The samples one split takes from a part of [`Raw`].
pub(crate) struct Pick {
    /// The part's index in [`Raw::parts`].
    pub part: usize,
    /// The positions taken, in order (`None`: the whole part, in file order).
    pub positions: Option<Vec<usize>>,
    /// Only the first this many are kept (`train_limit`, `test_limit`).
    pub limit: Option<usize>,
}

/// The shuffling streams of limited splits whose files come sorted by class (three splits).
const SORTED_LIMIT_STREAM: u64 = 0x11_0000;

impl Pick {
    /// A limit takes the first samples of a split, which keeps a split in file order (MNIST's and
    /// CIFAR's files are already mixed). Where the split's labels come sorted by class (an image
    /// folder is read class folder by class folder), that prefix would hold only the first
    /// classes, so a limit smaller than the split takes a seeded random sample instead.
    fn sample_if_class_sorted(&mut self, part: &[usize], seed: u64, stream: u64) {
        let Some(limit) = self.limit else { return };
        let all = self.unlimited_labels(part);
        let sorted_by_class = all.windows(2).all(|w| w[0] <= w[1]) && all.first() != all.last();
        if limit < all.len() && sorted_by_class {
            let positions = self.positions.take().unwrap_or_else(|| (0..part.len()).collect());
            self.positions = Some(shuffled(positions, seed, stream));
        }
    }

    /// The labels of the samples this pick takes before its limit.
    fn unlimited_labels(&self, part: &[usize]) -> Vec<usize> {
        match &self.positions {
            Some(p) => p.iter().map(|&i| part[i]).collect(),
            None => part.to_vec(),
        }
    }

    /// The split of `part` this pick takes, named `name`.
    fn apply(&self, part: &InMemoryDataset, name: String) -> Result<InMemoryDataset> {
        let split = match &self.positions {
            Some(p) => part.subset(p, name)?,
            None => part.clone().with_name(name),
        };
        match self.limit {
            Some(n) => split.take(n),
            None => Ok(split),
        }
    }

    /// The labels of the samples this pick takes from a part with labels `part`.
    pub(crate) fn labels(&self, part: &[usize]) -> Vec<usize> {
        let all = self.unlimited_labels(part);
        let n = self.limit.map_or(all.len(), |n| n.min(all.len()));
        all[..n].to_vec()
    }
}

/// Which samples the training, validation and test splits take.
pub(crate) struct SplitPlan {
    pub train: Pick,
    pub valid: Option<Pick>,
    pub test: Pick,
}

/// How `options` split a dataset whose parts have the labels `raw` (of `classes` classes): a
/// stratified validation split carved out of an official training split, stratified seeded
/// splits of a pool, the limits. The one place splits are decided, for loading and for
/// [`super::dataset_info`]; every split must keep a sample.
pub(crate) fn plan_splits(name: &str, raw: &Raw<Vec<usize>>, classes: usize, options: &LoadOptions) -> Result<SplitPlan> {
    let seed = options.split_seed;
    let whole = |part: usize| Pick { part, positions: None, limit: None };
    let (mut train, mut valid, mut test) = match raw {
        Raw::Official { train, .. } => {
            let vf = options.valid_fraction.unwrap_or(DEFAULT_VALID_FRACTION_OF_TRAIN);
            if vf > 0.0 {
                let parts = stratified_split(train, classes, &[vf], seed)?;
                // Training keeps the file order (so `train_limit` takes the first samples, as
                // before); the validation split is in random order, so a limit keeps it random.
                let valid = Pick { part: 0, positions: Some(shuffled(parts[1].clone(), seed, 1)), limit: None };
                (Pick { part: 0, positions: Some(parts[0].clone()), limit: None }, Some(valid), whole(1))
            } else {
                (whole(0), None, whole(1))
            }
        }
        Raw::Three { .. } => {
            let valid = if options.valid_fraction == Some(0.0) { None } else { Some(whole(1)) };
            (whole(0), valid, whole(2))
        }
        Raw::Pool(all) => {
            let tf = options.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
            let vf = options.valid_fraction.unwrap_or(DEFAULT_VALID_FRACTION);
            if tf + vf >= 1.0 {
                return Err(KdError::InvalidConfig(format!("test_fraction {tf} + valid_fraction {vf} leave nothing for training")));
            }
            let parts = stratified_split(all, classes, &[tf, vf], seed)?;
            // Random order within each split: files are often sorted by class, and a limit must
            // still take a representative sample.
            let part = |k: usize| Pick { part: 0, positions: Some(shuffled(parts[k].clone(), seed, k as u64)), limit: None };
            let valid = if vf > 0.0 { Some(part(2)) } else { None };
            (part(0), valid, part(1))
        }
    };
    train.limit = options.train_limit;
    for pick in valid.iter_mut().chain([&mut test]) {
        pick.limit = options.test_limit;
    }
    let parts = raw.parts();
    // One stream per split (train 0, valid 1, test 2), whether or not there is a validation split.
    for (stream, pick) in [Some(&mut train), valid.as_mut(), Some(&mut test)].into_iter().enumerate() {
        if let Some(pick) = pick {
            pick.sample_if_class_sorted(parts[pick.part], seed, SORTED_LIMIT_STREAM + stream as u64);
        }
    }
    for (pick, split) in [(Some(&train), "train"), (valid.as_ref(), "valid"), (Some(&test), "test")] {
        if let Some(pick) = pick
            && pick.labels(parts[pick.part]).is_empty()
        {
            return Err(KdError::InvalidConfig(format!("split {name}/{split} is empty: too few samples for the split fractions")));
        }
    }
    Ok(SplitPlan { train, valid, test })
}

/// Checks the options and resolves the name: what both [`load_dataset`] and
/// [`super::dataset_info`] accept.
pub(crate) fn checked_name<'a>(name: &'a str, options: &LoadOptions) -> Result<DatasetName<'a>> {
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
    let resolved = DatasetName::resolve(name)?;
    if let DatasetName::Registered(entry) = resolved
        && options.label_column.is_some()
    {
        return Err(KdError::InvalidConfig(format!("label_column applies to `csv:PATH` datasets, not to `{}`", entry.name)));
    }
    Ok(resolved)
}

/// The image-folder options of `options`.
pub(crate) fn folder_options(options: &LoadOptions) -> FolderOptions<'_> {
    FolderOptions {
        image_size: options.image_size,
        resize: options.resize,
        channels: options.channels,
        label_file: options.label_file.as_deref(),
        memory_budget_mb: options.memory_budget_mb,
        decode_cache: options.decode_cache.as_deref(),
    }
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
    raw: Raw<InMemoryDataset>,
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
    let resolved = checked_name(name, options)?;
    let canonical = resolved.canonical(options.cifar_labels);
    let roots = resolved.roots();
    let recipe = match resolved {
        DatasetName::Images(dir) => image_folder_recipe(dir, canonical, options)?,
        DatasetName::Cifar10(path) => {
            let (train, test) = cifar::load_cifar10(path)?;
            let norm = Norm::Fixed(cifar::CIFAR10_MEAN.to_vec(), cifar::CIFAR10_STD.to_vec());
            image_recipe(&canonical, train, test, norm, Augment::cifar())
        }
        DatasetName::Cifar100 { path, coarse } => {
            let (train, test) = cifar::load_cifar100(path, DatasetName::cifar100_labels(coarse, options.cifar_labels))?;
            let norm = Norm::Fixed(cifar::CIFAR100_MEAN.to_vec(), cifar::CIFAR100_STD.to_vec());
            image_recipe(&canonical, train, test, norm, Augment::cifar())
        }
        DatasetName::Idx(dir) => {
            let classes = crate::idx::idx_classes(dir, "train")?;
            let train = load_idx_pair(dir, "train", "idx/train", classes)?;
            let test = load_idx_pair(dir, "t10k", "idx/test", classes)?;
            image_recipe(&canonical, train, test, Norm::TrainStats, Augment::none())
        }
        DatasetName::Csv(path) => {
            let table = read_csv(path, options.label_column.as_deref(), LabelCoding::Auto)?;
            let ds = table_dataset(&canonical, &table, None)?;
            let task = if table.classes() == 2 { Task::Binary } else { Task::Tabular };
            Recipe {
                name: canonical,
                task,
                raw: Raw::Pool(ds),
                norm: Norm::TrainStats,
                default_augment: Augment::none(),
                shape: None,
                image_folder: None,
            }
        }
        DatasetName::Registered(entry) => registered(entry)?,
    };
    let mut splits = finish(recipe, options)?;
    splits.files = kd_core::files::fingerprint_paths(&roots)?;
    Ok(splits)
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

/// `images:DIR`: the folder's own splits (or its pool), normalised with the given constants or
/// training statistics. Default augmentation: CIFAR's pad-crop (a padding of 1/8 of the side)
/// and flip for images up to 64 pixels, ImageNet's random-resized crop and flip above.
fn image_folder_recipe(dir: &Path, name: String, options: &LoadOptions) -> Result<Recipe> {
    let folder = read_image_folder(dir, &folder_options(options))?;
    let [_, h, w] = folder.report.shape;
    let default_augment =
        if h.max(w) <= 64 { Augment { crop_padding: (h.min(w) / 8).max(1), hflip: true, ..Augment::none() } } else { Augment::imagenet() };
    let norm = match (&options.mean, &options.std) {
        (Some(m), Some(s)) => Norm::Fixed(m.clone(), s.clone()),
        _ => Norm::TrainStats,
    };
    let raw = Raw::of_folder(dir, options, folder.train, folder.valid, folder.test)?;
    Ok(Recipe { name, task: Task::Image, raw, norm, default_augment, shape: None, image_folder: Some(Arc::new(folder.report)) })
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
            same_columns(&train_t, &test_t)?;
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
pub(crate) fn check_system_dir(folder: &Path) -> Result<()> {
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
    let shape = table_shape(table, image.map(|(shape, _)| shape))?;
    let values = match image {
        Some((_, scale)) => table.features.iter().map(|v| v / scale).collect(),
        None => table.features.clone(),
    };
    InMemoryDataset::new(name, Values::F32(Arc::new(values)), table.labels.clone(), shape, table.classes())?
        .with_class_names(table.class_names.clone())
}

/// Checks that an official test file has the training file's columns.
pub(crate) fn same_columns(train: &CsvTable, test: &CsvTable) -> Result<()> {
    if test.feature_names != train.feature_names {
        return Err(KdError::Malformed {
            path: test.path.clone(),
            reason: format!("columns {:?} differ from the training file's {:?}", test.feature_names, train.feature_names),
        });
    }
    Ok(())
}

/// The sample shape of a table's rows: `[features, 1, 1]`, or `image` where the features form
/// such images.
pub(crate) fn table_shape(table: &CsvTable, image: Option<[usize; 3]>) -> Result<[usize; 3]> {
    let f = table.feature_names.len();
    match image {
        Some(shape) if shape.iter().product::<usize>() != f => {
            Err(KdError::Malformed { path: table.path.clone(), reason: format!("{f} feature columns cannot form images of {shape:?}") })
        }
        Some(shape) => Ok(shape),
        None => Ok([f, 1, 1]),
    }
}

fn finish(recipe: Recipe, options: &LoadOptions) -> Result<DatasetSplits> {
    let Recipe { name, task, raw, norm, default_augment, shape, image_folder } = recipe;
    let mut warnings = check_raw(&name, &raw, shape)?;
    let classes = raw.parts()[0].num_classes();
    let plan = plan_splits(&name, &raw.map(InMemoryDataset::labels), classes, options)?;
    let parts = raw.into_parts();
    let split = |pick: &Pick, split: &str| pick.apply(&parts[pick.part], format!("{name}/{split}"));
    let train = split(&plan.train, "train")?;
    let valid = plan.valid.as_ref().map(|p| split(p, "valid")).transpose()?;
    let test = split(&plan.test, "test")?;
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
    Ok(DatasetSplits { name, train, valid, test, warnings, image_folder, files: Vec::new() })
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
fn check_raw(name: &str, raw: &Raw<InMemoryDataset>, shape: Option<[usize; 3]>) -> Result<Vec<String>> {
    let parts = raw.parts();
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
    use crate::registry::catalog::{dataset_names, fashion_mnist_full_dir};
    use crate::registry::info::list_datasets;

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
    fn a_limit_on_files_sorted_by_class_keeps_every_class() {
        let sorted: Vec<usize> = (0..4).flat_map(|c| [c; 25]).collect();
        let mixed: Vec<usize> = (0..100).map(|i| i % 4).collect();
        let limits = LoadOptions { train_limit: Some(20), test_limit: Some(8), valid_fraction: Some(0.0), ..opts() };
        let classes_of = |labels: Vec<usize>| labels.iter().collect::<std::collections::BTreeSet<_>>().len();
        // An image folder's order (class by class): a seeded sample of every class, the same
        // one each time.
        let raw = Raw::Official { train: sorted.clone(), test: sorted.clone() };
        let plan = plan_splits("images:x", &raw, 4, &limits).unwrap();
        let train = plan.train.labels(&sorted);
        assert_eq!((train.len(), classes_of(train.clone())), (20, 4));
        assert_eq!(classes_of(plan.test.labels(&sorted)), 4);
        assert_eq!(plan_splits("images:x", &raw, 4, &limits).unwrap().train.labels(&sorted), train);
        // Files already mixed (MNIST, CIFAR's binaries) keep the first samples, as before.
        let raw = Raw::Official { train: mixed.clone(), test: mixed.clone() };
        let plan = plan_splits("mnist", &raw, 4, &limits).unwrap();
        assert_eq!(plan.train.labels(&mixed), mixed[..20]);
        assert!(plan.train.positions.is_none());
        // No limit, or one that takes the whole split: the split as it was.
        let raw = Raw::Official { train: sorted.clone(), test: sorted.clone() };
        let whole = LoadOptions { train_limit: Some(100), ..limits };
        assert!(plan_splits("images:x", &raw, 4, &whole).unwrap().train.positions.is_none());
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
