//! CIFAR-10 and CIFAR-100 from their official binary files.
//!
//! The "binary version" archives of <https://www.cs.toronto.edu/~kriz/cifar.html> unpack to
//! `cifar-10-batches-bin/` (`data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`: records
//! of 1 label byte + 3072 pixel bytes) and `cifar-100-binary/` (`train.bin`, `test.bin`: records
//! of a coarse label byte, a fine label byte, then 3072 pixel bytes). Pixels are 1024 red, 1024
//! green, 1024 blue values, each a row-major 32x32 plane: already the `[3, 32, 32]` layout.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kd_core::{KdError, Result};
use serde::{Deserialize, Serialize};

use crate::dataset::{InMemoryDataset, Values};

/// Pixel bytes of one CIFAR image.
pub const CIFAR_PIXELS: usize = 3 * 32 * 32;

/// CIFAR-10 per-channel mean (the standard training-set statistics).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 per-channel std (the standard training-set statistics).
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// CIFAR-100 per-channel mean (as in mdistiller).
pub const CIFAR100_MEAN: [f32; 3] = [0.5071, 0.4867, 0.4408];
/// CIFAR-100 per-channel std (as in mdistiller).
pub const CIFAR100_STD: [f32; 3] = [0.2675, 0.2565, 0.2761];

const CIFAR10_NAMES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Which CIFAR-100 labels to learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CifarLabels {
    /// The 100 fine classes (the usual benchmark).
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

/// The record layout of a CIFAR binary file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarFormat {
    /// CIFAR-10: one label byte (0..10) per record.
    Cifar10,
    /// CIFAR-100: a coarse (0..20) and a fine (0..100) label byte per record; keep one.
    Cifar100(CifarLabels),
}

impl CifarFormat {
    /// Label bytes before the pixels.
    fn label_bytes(self) -> usize {
        match self {
            CifarFormat::Cifar10 => 1,
            CifarFormat::Cifar100(_) => 2,
        }
    }

    /// Bytes per record.
    pub fn record_len(self) -> usize {
        self.label_bytes() + CIFAR_PIXELS
    }

    /// Number of classes of the kept label.
    pub fn classes(self) -> usize {
        match self {
            CifarFormat::Cifar10 => 10,
            CifarFormat::Cifar100(CifarLabels::Fine) => 100,
            CifarFormat::Cifar100(CifarLabels::Coarse) => 20,
        }
    }
}

/// Reads one CIFAR binary file: `(pixels, labels)`, `labels.len()` records of
/// [`CIFAR_PIXELS`] bytes each. Both labels of a CIFAR-100 record are checked.
pub fn read_cifar_file(path: &Path, format: CifarFormat) -> Result<(Vec<u8>, Vec<usize>)> {
    let bytes = kd_core::files::read_regular(path)?;
    parse_cifar(&bytes, path, format)
}

/// Parses the bytes of a CIFAR binary file as [`read_cifar_file`] does; `path` names the
/// source in errors.
pub fn parse_cifar(bytes: &[u8], path: &Path, format: CifarFormat) -> Result<(Vec<u8>, Vec<usize>)> {
    let malformed = |reason: String| KdError::Malformed { path: path.into(), reason };
    let n = record_count(bytes.len() as u64, format).map_err(malformed)?;
    let mut pixels = Vec::with_capacity(n * CIFAR_PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, record) in bytes.chunks_exact(format.record_len()).enumerate() {
        labels.push(record_label(record, format, i).map_err(malformed)?);
        pixels.extend_from_slice(&record[format.label_bytes()..]);
    }
    Ok((pixels, labels))
}

/// The labels of a CIFAR binary file, checked as [`read_cifar_file`] checks them, read by
/// seeking from record to record: the pixels are not read.
pub fn read_cifar_labels(path: &Path, format: CifarFormat) -> Result<Vec<usize>> {
    let mut file = kd_core::files::open_regular(path)?;
    let malformed = |reason: String| KdError::Malformed { path: path.into(), reason };
    let len = file.metadata().map_err(|e| KdError::io("reading", path, e))?.len();
    let n = record_count(len, format).map_err(malformed)?;
    let mut head = [0u8; 2];
    let head = &mut head[..format.label_bytes()];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        file.seek(SeekFrom::Start((i * format.record_len()) as u64)).map_err(|e| KdError::io("reading", path, e))?;
        file.read_exact(head).map_err(|e| KdError::io("reading", path, e))?;
        labels.push(record_label(head, format, i).map_err(malformed)?);
    }
    Ok(labels)
}

/// The number of records in a file of `len` bytes: a whole, non-zero number.
fn record_count(len: u64, format: CifarFormat) -> std::result::Result<usize, String> {
    let rec = format.record_len() as u64;
    if len == 0 {
        return Err("empty file".into());
    }
    if !len.is_multiple_of(rec) {
        return Err(format!(
            "{len} bytes is not a whole number of {rec}-byte records: record {} has only {} bytes (truncated or not a {} file)",
            len / rec,
            len % rec,
            if rec == 3073 { "CIFAR-10" } else { "CIFAR-100" }
        ));
    }
    Ok((len / rec) as usize)
}

/// The kept label of record `i`, whose first bytes are `record`; both labels of a CIFAR-100
/// record are checked.
fn record_label(record: &[u8], format: CifarFormat, i: usize) -> std::result::Result<usize, String> {
    match format {
        CifarFormat::Cifar10 => check_label(record[0], 10, i, "label"),
        CifarFormat::Cifar100(which) => {
            let coarse = check_label(record[0], 20, i, "coarse label")?;
            let fine = check_label(record[1], 100, i, "fine label")?;
            Ok(if which == CifarLabels::Fine { fine } else { coarse })
        }
    }
}

fn check_label(byte: u8, classes: usize, record: usize, what: &str) -> std::result::Result<usize, String> {
    if (byte as usize) < classes {
        Ok(byte as usize)
    } else {
        Err(format!("{what} {byte} of record {record} is out of range 0..{classes} (corrupt file, or not this CIFAR variant)"))
    }
}

/// The folder holding the files: `dir` itself, or the archive's folder inside it.
fn locate(dir: &Path, inner: &str, first_file: &str, what: &str, archive: &str) -> Result<PathBuf> {
    for candidate in [dir.to_path_buf(), dir.join(inner)] {
        if candidate.join(first_file).is_file() {
            return Ok(candidate);
        }
    }
    Err(KdError::io(
        "finding",
        dir,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no {what} binary files here or in {inner}/ (expected {first_file}; download {archive} from \
                 https://www.cs.toronto.edu/~kriz/cifar.html and unpack it)"
            ),
        ),
    ))
}

fn build(name: &str, parts: Vec<(Vec<u8>, Vec<usize>)>, classes: usize, names: Option<Vec<String>>) -> Result<InMemoryDataset> {
    let mut pixels = Vec::with_capacity(parts.iter().map(|p| p.0.len()).sum());
    let mut labels = Vec::new();
    for (p, l) in parts {
        pixels.extend(p);
        labels.extend(l);
    }
    let ds = InMemoryDataset::new(name, Values::U8 { data: Arc::new(pixels), scale: 255.0 }, labels, [3, 32, 32], classes)?;
    match names {
        Some(n) if n.len() == classes => ds.with_class_names(n),
        _ => Ok(ds),
    }
}

/// One class name per line (the `.txt` metadata of the official archives), blank lines dropped.
fn read_names(path: &Path) -> Option<Vec<String>> {
    let text = kd_core::files::read_regular_text(path).ok()?;
    Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// The files of a CIFAR set in `dir` (its archive's folder or the parent): the training files,
/// the test file, the record format and the class names (where known).
struct CifarFiles {
    train: Vec<PathBuf>,
    test: PathBuf,
    format: CifarFormat,
    names: Option<Vec<String>>,
}

impl CifarFiles {
    fn cifar10(dir: &Path) -> Result<CifarFiles> {
        let dir = locate(dir, "cifar-10-batches-bin", "data_batch_1.bin", "CIFAR-10", "cifar-10-binary.tar.gz")?;
        let names = read_names(&dir.join("batches.meta.txt")).unwrap_or_else(|| CIFAR10_NAMES.iter().map(|s| s.to_string()).collect());
        Ok(CifarFiles {
            train: (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect(),
            test: dir.join("test_batch.bin"),
            format: CifarFormat::Cifar10,
            names: Some(names),
        })
    }

    fn cifar100(dir: &Path, labels: CifarLabels) -> Result<CifarFiles> {
        let dir = locate(dir, "cifar-100-binary", "train.bin", "CIFAR-100", "cifar-100-binary.tar.gz")?;
        let names_file = if labels == CifarLabels::Fine { "fine_label_names.txt" } else { "coarse_label_names.txt" };
        Ok(CifarFiles {
            train: vec![dir.join("train.bin")],
            test: dir.join("test.bin"),
            format: CifarFormat::Cifar100(labels),
            names: read_names(&dir.join(names_file)),
        })
    }

    /// `(train, test)`, unnormalised and unaugmented; `name` prefixes the split names.
    fn load(&self, name: &str) -> Result<(InMemoryDataset, InMemoryDataset)> {
        let train = self.train.iter().map(|f| read_cifar_file(f, self.format)).collect::<Result<Vec<_>>>()?;
        let test = read_cifar_file(&self.test, self.format)?;
        let classes = self.format.classes();
        Ok((
            build(&format!("{name}/train"), train, classes, self.names.clone())?,
            build(&format!("{name}/test"), vec![test], classes, self.names.clone())?,
        ))
    }

    fn labels(&self) -> Result<CifarLabelsRead> {
        let mut train = Vec::new();
        for f in &self.train {
            train.extend(read_cifar_labels(f, self.format)?);
        }
        let classes = self.format.classes();
        let names = self.names.clone().filter(|n| n.len() == classes);
        Ok(CifarLabelsRead { train, test: read_cifar_labels(&self.test, self.format)?, classes, names })
    }
}

/// The labels of a CIFAR set's files, read without the pixels.
#[derive(Debug, Clone)]
pub struct CifarLabelsRead {
    /// The training files' labels, in file order.
    pub train: Vec<usize>,
    /// The test file's labels.
    pub test: Vec<usize>,
    /// Number of classes of the kept labels.
    pub classes: usize,
    /// Class names, where the archive has them (as loading names the classes).
    pub names: Option<Vec<String>>,
}

/// Loads CIFAR-10 `(train, test)` from `dir` (the `cifar-10-batches-bin` folder or its parent),
/// unnormalised and unaugmented.
pub fn load_cifar10(dir: &Path) -> Result<(InMemoryDataset, InMemoryDataset)> {
    CifarFiles::cifar10(dir)?.load("cifar10")
}

/// Loads CIFAR-100 `(train, test)` with the chosen labels from `dir` (the `cifar-100-binary`
/// folder or its parent), unnormalised and unaugmented.
pub fn load_cifar100(dir: &Path, labels: CifarLabels) -> Result<(InMemoryDataset, InMemoryDataset)> {
    CifarFiles::cifar100(dir, labels)?.load("cifar100")
}

/// The labels [`load_cifar10`] would load, read without the pixels.
pub fn cifar10_labels(dir: &Path) -> Result<CifarLabelsRead> {
    CifarFiles::cifar10(dir)?.labels()
}

/// The labels [`load_cifar100`] would load, read without the pixels.
pub fn cifar100_labels(dir: &Path, labels: CifarLabels) -> Result<CifarLabelsRead> {
    CifarFiles::cifar100(dir, labels)?.labels()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kd_core::BatchSource;

    /// Writes CIFAR-10 files in the official format: `per_file` records each, labels cycling.
    pub(crate) fn write_cifar10(dir: &Path, per_file: usize) {
        let folder = dir.join("cifar-10-batches-bin");
        std::fs::create_dir_all(&folder).unwrap();
        let files: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).chain(["test_batch.bin".to_string()]).collect();
        for (f, file) in files.iter().enumerate() {
            let mut bytes = Vec::new();
            for r in 0..per_file {
                bytes.push(((f * per_file + r) % 10) as u8);
                bytes.extend((0..CIFAR_PIXELS).map(|p| ((p + r + f) % 256) as u8));
            }
            std::fs::write(folder.join(file), bytes).unwrap();
        }
    }

    /// Writes CIFAR-100 files in the official format: fine label `r % 100`, coarse `r % 20`.
    pub(crate) fn write_cifar100(dir: &Path, train: usize, test: usize) {
        let folder = dir.join("cifar-100-binary");
        std::fs::create_dir_all(&folder).unwrap();
        for (file, n) in [("train.bin", train), ("test.bin", test)] {
            let mut bytes = Vec::new();
            for r in 0..n {
                bytes.push((r % 20) as u8);
                bytes.push((r % 100) as u8);
                bytes.extend((0..CIFAR_PIXELS).map(|p| ((p * 3 + r) % 256) as u8));
            }
            std::fs::write(folder.join(file), bytes).unwrap();
        }
    }

    #[test]
    fn reads_cifar10_from_the_folder_or_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path(), 4);
        let (train, test) = load_cifar10(dir.path()).unwrap();
        assert_eq!((train.len(), test.len()), (20, 4));
        assert_eq!(train.input_shape(), [3, 32, 32]);
        assert_eq!(train.num_classes(), 10);
        assert_eq!(test.labels(), vec![0, 1, 2, 3]);
        assert_eq!(train.class_names().unwrap()[9], "truck");
        // Record 1 of data_batch_1: byte p of the image is (p + 1) % 256; the green plane starts at 1024.
        let b = train.host_batch(&[1], 0, 0).unwrap();
        assert!((b.inputs[1024] - (1025 % 256) as f32 / 255.0).abs() < 1e-6);
        let (again, _) = load_cifar10(&dir.path().join("cifar-10-batches-bin")).unwrap();
        assert_eq!(again.labels(), train.labels());
    }

    #[test]
    fn reads_cifar100_fine_and_coarse() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar100(dir.path(), 30, 5);
        let (train, test) = load_cifar100(dir.path(), CifarLabels::Fine).unwrap();
        assert_eq!((train.len(), test.len(), train.num_classes()), (30, 5, 100));
        assert_eq!(train.label(25), 25);
        let (train, _) = load_cifar100(dir.path(), CifarLabels::Coarse).unwrap();
        assert_eq!(train.num_classes(), 20);
        assert_eq!(train.label(25), 5);
        let b = train.host_batch(&[2], 0, 0).unwrap();
        assert!((b.inputs[1] - 5.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn bad_cifar_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let msg = load_cifar10(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("no CIFAR-10 binary files"), "{msg}");

        write_cifar10(dir.path(), 2);
        let folder = dir.path().join("cifar-10-batches-bin");
        // Truncated: the last record is cut.
        let f = folder.join("data_batch_3.bin");
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 10]).unwrap();
        let msg = load_cifar10(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("data_batch_3.bin") && msg.contains("record 1 has only 3063 bytes"), "{msg}");
        // Label out of range.
        let mut bytes = bytes.clone();
        bytes[3073] = 10;
        std::fs::write(&f, &bytes).unwrap();
        let msg = load_cifar10(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("label 10 of record 1") && msg.contains("out of range 0..10"), "{msg}");
        // Empty and missing files.
        std::fs::write(&f, b"").unwrap();
        assert!(load_cifar10(dir.path()).unwrap_err().to_string().contains("empty file"));
        std::fs::remove_file(&f).unwrap();
        assert!(load_cifar10(dir.path()).unwrap_err().to_string().contains("data_batch_3.bin"));

        // CIFAR-100: a bad fine label; a CIFAR-10 file in its place (record size mismatch).
        write_cifar100(dir.path(), 3, 2);
        let f = dir.path().join("cifar-100-binary/test.bin");
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[3074 + 1] = 100;
        std::fs::write(&f, &bytes).unwrap();
        let msg = load_cifar100(dir.path(), CifarLabels::Coarse).unwrap_err().to_string();
        assert!(msg.contains("fine label 100 of record 1"), "{msg}");
        std::fs::write(&f, vec![0u8; 3073 * 2]).unwrap();
        let msg = load_cifar100(dir.path(), CifarLabels::Fine).unwrap_err().to_string();
        assert!(msg.contains("not a whole number of 3074-byte records"), "{msg}");
    }
}
