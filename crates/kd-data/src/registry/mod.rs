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
//!
//! [`catalog`] lists the registered datasets and resolves names; [`loading`] reads, splits,
//! normalises and augments them; [`info`] describes a dataset, loaded or not.

pub mod catalog;
pub mod info;
pub mod loading;

pub use catalog::{Task, dataset_names, datasets_dir, fashion_mnist_full_dir};
pub use info::{DatasetInfo, dataset_info, list_datasets, list_datasets_with};
pub use loading::{
    DEFAULT_TEST_FRACTION, DEFAULT_VALID_FRACTION, DEFAULT_VALID_FRACTION_OF_TRAIN, DatasetSplits, LoadOptions, load_dataset,
    require_binary,
};
