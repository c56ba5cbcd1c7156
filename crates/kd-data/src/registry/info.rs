//! What a dataset is: [`DatasetInfo`] (task, shape, classes, split sizes, class balance), of
//! loaded splits or, through [`dataset_info`], of a dataset that is not loaded.
//!
//! [`dataset_info`] reads what the counts need and no sample: the catalog for registered sets,
//! the label files and the image file's header of IDX pairs, the label column of CSV files, the
//! label bytes of CIFAR records, the file listing (and the first image's header) of image
//! folders. The split sizes and class counts follow the split plan loading follows, so they are
//! those of the loaded splits.

use kd_core::{BatchSource, KdError, Result};
use serde::Serialize;

use super::catalog::{DatasetName, Entry, REGISTRY, Source, Task, datasets_dir, fashion_mnist_full_dir, find_entry};
use super::loading::{
    DatasetSplits, LoadOptions, Raw, check_system_dir, checked_name, folder_options, plan_splits, same_columns, table_shape,
};
use crate::cifar::{cifar10_labels, cifar100_labels};
use crate::idx::{idx_classes, idx_pair_labels};
use crate::images::list_image_folder;
use crate::table::{LabelCoding, read_csv_labels};

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

impl DatasetSplits {
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

/// Describes any dataset [`crate::load_dataset`] accepts, with the sizes and class counts its
/// splits would have under `options`, without loading it (the module documentation says what
/// is read).
pub fn dataset_info(name: &str, options: &LoadOptions) -> Result<DatasetInfo> {
    let resolved = checked_name(name, options)?;
    let name = resolved.canonical(options.cifar_labels);
    let labels = source_labels(resolved, options)?;
    let plan = plan_splits(&name, &labels.raw, labels.classes, options)?;
    let parts = labels.raw.into_parts();
    let count = |pick: &super::loading::Pick| pick.labels(&parts[pick.part]);
    let (train, valid, test) = (count(&plan.train), plan.valid.as_ref().map(count).unwrap_or_default(), count(&plan.test));
    let mut class_counts = vec![0; labels.classes];
    for &l in train.iter().chain(&valid).chain(&test) {
        class_counts[l] += 1;
    }
    let entry = find_entry(&name);
    Ok(DatasetInfo {
        aliases: entry.map(|e| e.aliases.iter().map(|s| s.to_string()).collect()).unwrap_or_default(),
        task: entry.map(|e| e.task).unwrap_or_else(|| Task::infer(labels.shape, labels.classes)),
        description: entry.map(|e| e.description.to_string()).unwrap_or_default(),
        licence: entry.map(|e| e.licence.to_string()).unwrap_or_default(),
        name,
        input_shape: labels.shape,
        classes: labels.classes,
        train: train.len(),
        valid: valid.len(),
        test: test.len(),
        class_counts,
        class_names: labels.class_names,
        error: None,
    })
}

/// Every registered dataset described by [`dataset_info`] with default options. A dataset
/// whose files cannot be read is listed with its `error`.
pub fn list_datasets() -> Vec<DatasetInfo> {
    list_datasets_with(&LoadOptions::default())
}

/// [`list_datasets`] with the given options (split fractions, limits).
pub fn list_datasets_with(options: &LoadOptions) -> Vec<DatasetInfo> {
    REGISTRY
        .iter()
        .map(|e| match dataset_info(e.name, options) {
            Ok(info) => info,
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

/// A dataset's labels per part, and what its samples are, as loading would find them.
struct SourceLabels {
    raw: Raw<Vec<usize>>,
    shape: [usize; 3],
    classes: usize,
    class_names: Option<Vec<String>>,
}

/// Reads the labels of a dataset's parts without its samples.
fn source_labels(resolved: DatasetName<'_>, options: &LoadOptions) -> Result<SourceLabels> {
    Ok(match resolved {
        DatasetName::Images(dir) => {
            let listing = list_image_folder(dir, &folder_options(options))?;
            let mut splits = listing.split_labels();
            let mut take = |split: &str| splits.iter().position(|(s, _)| *s == split).map(|p| splits.remove(p).1);
            let train = take("train")
                .or_else(|| take("all"))
                .ok_or_else(|| KdError::InvalidConfig(format!("images:{}: no training split", dir.display())))?;
            let (valid, test) = (take("valid"), take("test"));
            SourceLabels {
                raw: Raw::of_folder(dir, options, train, valid, test)?,
                shape: listing.shape,
                classes: listing.classes.len(),
                class_names: Some(listing.classes),
            }
        }
        DatasetName::Cifar10(path) => {
            let read = cifar10_labels(path)?;
            SourceLabels {
                raw: Raw::Official { train: read.train, test: read.test },
                shape: [3, 32, 32],
                classes: read.classes,
                class_names: read.names,
            }
        }
        DatasetName::Cifar100 { path, coarse } => {
            let read = cifar100_labels(path, DatasetName::cifar100_labels(coarse, options.cifar_labels))?;
            SourceLabels {
                raw: Raw::Official { train: read.train, test: read.test },
                shape: [3, 32, 32],
                classes: read.classes,
                class_names: read.names,
            }
        }
        DatasetName::Idx(dir) => {
            let classes = idx_classes(dir, "train")?;
            let (train, shape) = idx_pair_labels(dir, "train", classes)?;
            let (test, _) = idx_pair_labels(dir, "t10k", classes)?;
            SourceLabels { raw: Raw::Official { train, test }, shape, classes, class_names: None }
        }
        DatasetName::Csv(path) => {
            let table = read_csv_labels(path, options.label_column.as_deref(), LabelCoding::Auto)?;
            let (shape, classes) = ([table.feature_names.len(), 1, 1], table.classes());
            SourceLabels { raw: Raw::Pool(table.labels), shape, classes, class_names: Some(table.class_names) }
        }
        DatasetName::Registered(entry) => registered_labels(entry)?,
    })
}

/// The labels of a registered dataset's files; their shape is checked against the catalog's.
fn registered_labels(entry: &Entry) -> Result<SourceLabels> {
    let dir = datasets_dir();
    let coding = LabelCoding::Integers { classes: Some(entry.classes) };
    let (raw, shape) = match entry.source {
        Source::Idx { folder, train } => idx_labels(&dir.join(folder), train, entry.classes)?,
        Source::SystemFashionMnist => {
            let folder = fashion_mnist_full_dir();
            check_system_dir(&folder)?;
            idx_labels(&folder, "train", entry.classes)?
        }
        Source::CsvPool { file, image } => {
            let table = read_csv_labels(&dir.join(file), None, coding)?;
            let shape = table_shape(&table, image.map(|(shape, _)| shape))?;
            (Raw::Pool(table.labels), shape)
        }
        Source::CsvOfficial { train, test } => {
            let train_t = read_csv_labels(&dir.join(train), None, coding)?;
            let test_t = read_csv_labels(&dir.join(test), None, coding)?;
            same_columns(&train_t, &test_t)?;
            (Raw::Official { train: train_t.labels, test: test_t.labels }, [train_t.feature_names.len(), 1, 1])
        }
    };
    if shape != entry.shape {
        return Err(KdError::InvalidConfig(format!(
            "{}: samples have shape {shape:?}, but dataset `{}` has {:?} (files of another dataset or image size?)",
            entry.name, entry.name, entry.shape
        )));
    }
    Ok(SourceLabels { raw, shape, classes: entry.classes, class_names: Some(entry.class_names.iter().map(|s| s.to_string()).collect()) })
}

/// The labels of an IDX training pair `{train}-…` and test pair `t10k-…` in `folder`, and the
/// images' shape (the training file's header; the test file's must agree).
fn idx_labels(folder: &std::path::Path, train: &str, classes: usize) -> Result<(Raw<Vec<usize>>, [usize; 3])> {
    let (train, shape) = idx_pair_labels(folder, train, classes)?;
    let (test, test_shape) = idx_pair_labels(folder, "t10k", classes)?;
    if test_shape != shape {
        return Err(KdError::InvalidConfig(format!(
            "{}: test images have shape {test_shape:?} but training images {shape:?}: the splits must agree",
            folder.display()
        )));
    }
    Ok((Raw::Official { train, test }, shape))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cifar::CifarLabels;
    use crate::cifar::tests::{write_cifar10, write_cifar100};
    use crate::images::tests::write_class_folders;
    use crate::load_dataset;

    fn same_as_loaded(name: &str, options: &LoadOptions) {
        let loaded = load_dataset(name, options).unwrap().info();
        assert_eq!(dataset_info(name, options).unwrap(), loaded, "{name} with {options:?}");
    }

    /// The described sizes, class counts, shapes and names are those of the loaded splits,
    /// for every kind of source and the split options.
    #[test]
    fn dataset_info_describes_what_loading_loads() {
        let o = LoadOptions::default();
        for name in dataset_names_and_aliases() {
            same_as_loaded(name, &o);
        }
        let limits = LoadOptions { train_limit: Some(1000), test_limit: Some(300), split_seed: 4, ..LoadOptions::default() };
        for name in ["mnist", "spambase", "statlog-shuttle", "digits-8x8"] {
            same_as_loaded(name, &limits);
        }
        let fractions = LoadOptions { valid_fraction: Some(0.0), test_fraction: Some(0.3), ..LoadOptions::default() };
        same_as_loaded("spambase", &fractions);
        same_as_loaded("mnist", &fractions);
        same_as_loaded(&format!("idx:{}", datasets_dir().join("mnist").display()), &o);

        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path(), 20);
        same_as_loaded(&format!("cifar10:{}", dir.path().display()), &o);
        write_cifar100(dir.path(), 200, 20);
        same_as_loaded(&format!("cifar100:{}", dir.path().display()), &o);
        same_as_loaded(&format!("cifar100-coarse:{}", dir.path().display()), &o);
        same_as_loaded(&format!("cifar100:{}", dir.path().display()), &LoadOptions { cifar_labels: CifarLabels::Coarse, ..o.clone() });

        let csv = dir.path().join("c.csv");
        let rows: String = (0..60).map(|i| format!("{},{i},{}\n", ["red", "green", "blue"][i % 3], i % 7)).collect();
        std::fs::write(&csv, format!("colour,x,y\n{rows}")).unwrap();
        same_as_loaded(&format!("csv:{}", csv.display()), &LoadOptions { label_column: Some("colour".into()), ..o.clone() });

        let cache = LoadOptions { decode_cache: Some("off".into()), ..o.clone() };
        let pool = dir.path().join("pets");
        write_class_folders(&pool, &["cat", "dog"], 10, 8, "png");
        same_as_loaded(&format!("images:{}", pool.display()), &cache);
        let three = dir.path().join("three");
        for (split, n) in [("train", 6), ("val", 2), ("test", 3)] {
            write_class_folders(&three.join(split), &["a", "b", "c"], n, 6, "png");
        }
        same_as_loaded(&format!("images:{}", three.display()), &cache);
        same_as_loaded(&format!("images:{}", three.display()), &LoadOptions { image_size: Some(4), resize: true, ..cache.clone() });
    }

    fn dataset_names_and_aliases() -> Vec<&'static str> {
        REGISTRY
            .iter()
            .filter(|e| !matches!(e.source, Source::SystemFashionMnist) || fashion_mnist_full_dir().is_dir())
            .flat_map(|e| std::iter::once(e.name).chain(e.aliases.iter().copied()))
            .collect()
    }

    /// Samples that cannot be decoded or parsed do not stop the description: it reads none.
    /// Loading the same data fails on them.
    #[test]
    fn dataset_info_reads_no_sample() {
        let dir = tempfile::tempdir().unwrap();
        let o = LoadOptions { decode_cache: Some("off".into()), ..LoadOptions::default() };
        // An image folder whose last image is not an image at all.
        let pets = dir.path().join("pets");
        write_class_folders(&pets, &["cat", "dog"], 10, 8, "jpg");
        std::fs::write(pets.join("dog/009.jpg"), b"not a JPEG").unwrap();
        let name = format!("images:{}", pets.display());
        let info = dataset_info(&name, &o).unwrap();
        assert_eq!((info.total(), info.class_counts.clone(), info.input_shape), (20, vec![10, 10], [3, 8, 8]));
        let err = load_dataset(&name, &o).unwrap_err().to_string();
        assert!(err.contains("009.jpg"), "{err}");

        // An IDX pair whose image file holds a header and no pixels.
        let idx = dir.path().join("idx");
        std::fs::create_dir_all(&idx).unwrap();
        let header = |rank: u8, dims: &[u32]| {
            let mut b = vec![0, 0, 8, rank];
            dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
            b
        };
        for (prefix, n) in [("train", 40u32), ("t10k", 10)] {
            std::fs::write(idx.join(format!("{prefix}-images-idx3-ubyte")), header(3, &[n, 4, 4])).unwrap();
            let mut labels = header(1, &[n]);
            labels.extend((0..n).map(|i| (i % 4) as u8));
            std::fs::write(idx.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
        }
        let name = format!("idx:{}", idx.display());
        let info = dataset_info(&name, &LoadOptions::default()).unwrap();
        assert_eq!((info.total(), info.classes, info.input_shape, info.test), (50, 4, [1, 4, 4], 10));
        let err = load_dataset(&name, &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");

        // A CSV file with a feature cell that is not a number.
        let csv = dir.path().join("t.csv");
        let rows: String = (0..30).map(|i| format!("{},{}\n", if i == 17 { "x".to_string() } else { i.to_string() }, i % 2)).collect();
        std::fs::write(&csv, format!("a,label\n{rows}")).unwrap();
        let name = format!("csv:{}", csv.display());
        assert_eq!(dataset_info(&name, &LoadOptions::default()).unwrap().total(), 30);
        let err = load_dataset(&name, &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("`x` is not a number"), "{err}");
    }

    #[test]
    fn dataset_info_refuses_what_loading_refuses() {
        let o = LoadOptions::default();
        assert!(dataset_info("imagenet", &o).unwrap_err().to_string().contains("unknown dataset `imagenet`"));
        let err = dataset_info("digits", &LoadOptions { resize: true, ..o.clone() }).unwrap_err().to_string();
        assert!(err.contains("resize applies to `images:DIR` datasets"), "{err}");
        let both = LoadOptions { valid_fraction: Some(0.5), test_fraction: Some(0.5), ..o };
        assert!(dataset_info("spambase", &both).is_err());
        assert!(dataset_info(&format!("images:{}", Path::new("/nonexistent").display()), &LoadOptions::default()).is_err());
    }
}
