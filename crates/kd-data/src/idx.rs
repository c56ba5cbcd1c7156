//! The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! Layout (big-endian): two zero bytes, an element-type byte (only `0x08`, unsigned byte, is
//! supported), a rank byte, one `u32` per dimension, then the values row-major. Image files have
//! rank 3 (magic `0x00000803`), label files rank 1 (magic `0x00000801`).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kd_core::{KdError, Result};

use crate::dataset::{InMemoryDataset, Values};

/// An IDX file's content: dimensions and bytes.
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// Dimensions (`[n]` for labels, `[n, rows, cols]` for images).
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (`.gz` or raw, recognised by the gzip magic number).
///
/// The declared dimensions bound what is read, so a corrupt header cannot make it decompress
/// or allocate more than the file announces.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    with_idx_reader(path, |r, gzip| read_idx_from(r, gzip))
}

/// The dimensions an IDX file's header announces, read without its values (`dataset_info`).
pub fn read_idx_dims(path: &Path) -> Result<Vec<usize>> {
    with_idx_reader(path, |r, gzip| read_idx_header(r, gzip))
}

/// Opens an IDX file, raw or gzip-compressed, and reads it with `read` (which gets the reader
/// and whether it decompresses); errors name the file.
fn with_idx_reader<T>(path: &Path, read: impl FnOnce(&mut dyn Read, bool) -> std::result::Result<T, String>) -> Result<T> {
    let file = kd_core::files::open_regular(path)?;
    let mut reader = BufReader::new(file);
    let mut head = [0u8; 2];
    let got = read_up_to(&mut reader, &mut head).map_err(|e| KdError::io("reading", path, e))?;
    let malformed = |reason: String| KdError::Malformed { path: path.into(), reason };
    let prefix = std::io::Cursor::new(head[..got].to_vec());
    if got == 2 && head == [0x1f, 0x8b] {
        // MultiGz: `cat a.gz b.gz` is a valid gzip file too.
        let mut gz = flate2::read::MultiGzDecoder::new(prefix.chain(reader));
        read(&mut gz, true).map_err(malformed)
    } else {
        read(&mut prefix.chain(reader), false).map_err(malformed)
    }
}

/// Parses the bytes of an IDX file (ubyte data only), raw or gzip-compressed, as
/// [`read_idx`] reads a file.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        read_idx_from(&mut flate2::read::MultiGzDecoder::new(bytes), true)
    } else {
        read_idx_from(&mut &bytes[..], false)
    }
}

/// Reads as many bytes as are there, up to `buf.len()`.
fn read_up_to(reader: &mut (impl Read + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Decoder errors mean a damaged compressed stream, not a bad IDX header.
fn stream_error(gzip: bool) -> impl Fn(std::io::Error) -> String {
    move |e| if gzip { format!("corrupt or truncated gzip stream: {e}") } else { format!("read error: {e}") }
}

/// Reads the header (magic number and dimensions) and leaves the reader at the values.
fn read_idx_header(reader: &mut (impl Read + ?Sized), gzip: bool) -> std::result::Result<Vec<usize>, String> {
    let io = stream_error(gzip);
    let mut magic = [0u8; 4];
    let got = read_up_to(reader, &mut magic).map_err(&io)?;
    if got == 0 {
        return Err(if gzip { "empty IDX content inside the gzip stream".into() } else { "empty file".into() });
    }
    if got < 4 {
        return Err(format!("{got} bytes is too short for an IDX header (truncated)"));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(format!(
            "wrong IDX magic number 0x{:02x}{:02x}{:02x}{:02x} (expected 0x00000801 for labels or 0x00000803 for images)",
            magic[0], magic[1], magic[2], magic[3]
        ));
    }
    if magic[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x} is not unsigned byte (0x08)", magic[2]));
    }
    let rank = magic[3] as usize;
    if rank == 0 || rank > 4 {
        return Err(format!("IDX rank {rank} is not supported (1 to 4)"));
    }
    let mut dim_bytes = vec![0u8; 4 * rank];
    let got = read_up_to(reader, &mut dim_bytes).map_err(&io)?;
    if got < dim_bytes.len() {
        return Err(format!("truncated header: {} bytes, need {}", 4 + got, 4 + 4 * rank));
    }
    Ok(dim_bytes.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect())
}

fn read_idx_from(reader: &mut (impl Read + ?Sized), gzip: bool) -> std::result::Result<IdxArray, String> {
    let dims = read_idx_header(reader, gzip)?;
    let io = stream_error(gzip);
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("dimensions {dims:?} overflow the addressable size (corrupt header)"))?;
    // Read at most one byte past the announced size: enough to detect trailing garbage. The
    // header alone does not reserve more than 16 MB: the data has to be there to grow further.
    let mut data = Vec::with_capacity(expected.min(1 << 24));
    reader.take(expected as u64 + 1).read_to_end(&mut data).map_err(&io)?;
    if data.len() < expected {
        return Err(format!("dimensions {dims:?} need {expected} data bytes but the file has {} (truncated)", data.len()));
    }
    if data.len() > expected {
        return Err(format!("dimensions {dims:?} need {expected} data bytes but the file has more (trailing bytes: corrupt header?)"));
    }
    Ok(IdxArray { dims, data })
}

/// The file names an IDX file may have: gzip or raw, `-idx3-ubyte` or LeCun's `.idx3-ubyte`.
fn candidates(folder: &Path, prefix: &str, kind: &str, rank: usize) -> Vec<PathBuf> {
    [
        format!("{prefix}-{kind}-idx{rank}-ubyte.gz"),
        format!("{prefix}-{kind}-idx{rank}-ubyte"),
        format!("{prefix}-{kind}.idx{rank}-ubyte"),
        format!("{prefix}-{kind}.idx{rank}-ubyte.gz"),
    ]
    .into_iter()
    .map(|n| folder.join(n))
    .collect()
}

fn find_file(folder: &Path, prefix: &str, kind: &str, rank: usize) -> Result<PathBuf> {
    let all = candidates(folder, prefix, kind, rank);
    if let Some(p) = all.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let names: Vec<String> = all.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
    Err(KdError::io(
        "finding",
        &all[0],
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no IDX {kind} file in {} (tried {})", folder.display(), names.join(", ")),
        ),
    ))
}

/// The number of classes of an IDX label file `{prefix}-labels-idx1-ubyte[.gz]` in `folder`:
/// its largest label plus one.
pub fn idx_classes(folder: &Path, prefix: &str) -> Result<usize> {
    let path = find_file(folder, prefix, "labels", 1)?;
    let labels = read_idx(&path)?;
    labels.data.iter().max().map(|&m| m as usize + 1).ok_or_else(|| KdError::Malformed { path, reason: "no labels".into() })
}

/// Loads an images + labels pair (`{prefix}-images-idx3-ubyte[.gz]`,
/// `{prefix}-labels-idx1-ubyte[.gz]`) as a dataset of `[1, rows, cols]` byte images scaled to
/// `[0, 1]`, checking that the counts agree and every label is below `classes`.
pub fn load_idx_pair(folder: &Path, prefix: &str, name: &str, classes: usize) -> Result<InMemoryDataset> {
    let images_path = find_file(folder, prefix, "images", 3)?;
    let labels_path = find_file(folder, prefix, "labels", 1)?;
    let images = read_idx(&images_path)?;
    let (labels, shape) = checked_pair(&images_path, &images.dims, &labels_path, classes)?;
    InMemoryDataset::new(name, Values::U8 { data: Arc::new(images.data), scale: 255.0 }, labels, shape, classes)
}

/// The labels of the pair [`load_idx_pair`] loads and the `[1, rows, cols]` shape of its images,
/// from the label file and the image file's header only: the images are not read.
pub fn idx_pair_labels(folder: &Path, prefix: &str, classes: usize) -> Result<(Vec<usize>, [usize; 3])> {
    let images_path = find_file(folder, prefix, "images", 3)?;
    let labels_path = find_file(folder, prefix, "labels", 1)?;
    checked_pair(&images_path, &read_idx_dims(&images_path)?, &labels_path, classes)
}

/// Reads the label file of a pair whose image file announces `image_dims`, checking that the
/// counts agree and every label is below `classes`: the labels and the images' shape.
fn checked_pair(images_path: &Path, image_dims: &[usize], labels_path: &Path, classes: usize) -> Result<(Vec<usize>, [usize; 3])> {
    let labels = read_idx(labels_path)?;
    let malformed = |path: &Path, reason: String| KdError::Malformed { path: path.into(), reason };
    let &[n, rows, cols] = image_dims else {
        return Err(malformed(images_path, format!("an image file needs 3 dimensions (magic 0x00000803), this one has {image_dims:?}")));
    };
    if labels.dims.len() != 1 {
        return Err(malformed(labels_path, format!("a label file needs 1 dimension (magic 0x00000801), this one has {:?}", labels.dims)));
    }
    if n == 0 || rows == 0 || cols == 0 {
        return Err(malformed(images_path, format!("no images (dimensions {image_dims:?})")));
    }
    if labels.dims[0] != n {
        return Err(malformed(labels_path, format!("{} labels for {n} images in {}", labels.dims[0], images_path.display())));
    }
    if let Some((i, &l)) = labels.data.iter().enumerate().find(|&(_, &l)| l as usize >= classes) {
        return Err(malformed(labels_path, format!("label {l} at sample {i} is out of range 0..{classes}")));
    }
    Ok((labels.data.iter().map(|&l| l as usize).collect(), [1, rows, cols]))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use kd_core::BatchSource;

    fn idx_bytes(rank: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, rank];
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn write_pair(dir: &Path, prefix: &str, n: u32, labels: &[u8], gz: bool) {
        let images: Vec<u8> = (0..n * 4).map(|i| (i * 17 % 256) as u8).collect();
        let img = idx_bytes(3, &[n, 2, 2], &images);
        let lab = idx_bytes(1, &[labels.len() as u32], labels);
        if gz {
            std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), gzip(&img)).unwrap();
            std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), gzip(&lab)).unwrap();
        } else {
            std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
            std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
        }
    }

    fn reason(err: KdError) -> String {
        match err {
            KdError::Malformed { reason, .. } => reason,
            other => panic!("expected a Malformed error, got {other}"),
        }
    }

    #[test]
    fn reads_raw_and_gzip_pairs() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "train", 3, &[0, 9, 4], true);
        write_pair(dir.path(), "t10k", 2, &[1, 2], false);
        let train = load_idx_pair(dir.path(), "train", "x/train", 10).unwrap();
        assert_eq!(train.len(), 3);
        assert_eq!(train.input_shape(), [1, 2, 2]);
        assert_eq!(train.labels(), vec![0, 9, 4]);
        let test = load_idx_pair(dir.path(), "t10k", "x/test", 10).unwrap();
        assert_eq!(test.labels(), vec![1, 2]);
        // Pixels scaled by 1/255: sample 1, pixel 0 is byte 4*17 = 68.
        let b = test.host_batch(&[1], 0, 0).unwrap();
        assert!((b.inputs[0] - 68.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn parse_errors_name_the_problem() {
        assert_eq!(parse_idx(&[]).unwrap_err(), "empty file");
        assert!(parse_idx(&[0, 0, 8]).unwrap_err().contains("too short"));
        assert!(parse_idx(&[0x50, 0x4b, 3, 4, 0, 0, 0, 0]).unwrap_err().contains("wrong IDX magic number 0x504b0304"));
        assert!(parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 0]).unwrap_err().contains("element type 0x0d"));
        assert!(parse_idx(&[0, 0, 8, 9]).unwrap_err().contains("rank 9"));
        assert!(parse_idx(&[0, 0, 8, 3, 0, 0, 0, 1]).unwrap_err().contains("truncated header"));
        let full = idx_bytes(3, &[2, 2, 2], &[1; 8]);
        assert!(parse_idx(&full[..full.len() - 1]).unwrap_err().contains("need 8 data bytes but the file has 7 (truncated)"));
        let mut long = full.clone();
        long.push(0);
        assert!(parse_idx(&long).unwrap_err().contains("trailing bytes"));
        let huge = idx_bytes(4, &[u32::MAX, u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(parse_idx(&huge).unwrap_err().contains("overflow"));
        assert_eq!(parse_idx(&full).unwrap().dims, vec![2, 2, 2]);
    }

    #[test]
    fn bad_files_are_malformed_errors_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty");
        std::fs::write(&p, b"").unwrap();
        match read_idx(&p).unwrap_err() {
            KdError::Malformed { path, reason } => {
                assert_eq!(path, p);
                assert_eq!(reason, "empty file");
            }
            other => panic!("{other}"),
        }
        // A gzip stream cut in the middle.
        let gz = gzip(&idx_bytes(3, &[50, 10, 10], &[7; 5000]));
        std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
        assert!(reason(read_idx(&p).unwrap_err()).contains("gzip"));
        // Garbage after the gzip magic.
        std::fs::write(&p, [0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        assert!(reason(read_idx(&p).unwrap_err()).contains("corrupt or truncated gzip"));
        // Gzip of a truncated IDX file.
        std::fs::write(&p, gzip(&idx_bytes(1, &[10], &[1; 9]))).unwrap();
        assert!(reason(read_idx(&p).unwrap_err()).contains("truncated"));
        // A missing file is an I/O error naming it.
        let missing = read_idx(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(missing.contains("nope"), "{missing}");
    }

    #[test]
    fn pair_checks_ranks_counts_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "a", 3, &[0, 1, 12], false);
        let msg = load_idx_pair(dir.path(), "a", "a", 10).unwrap_err().to_string();
        assert!(msg.contains("label 12 at sample 2 is out of range 0..10"), "{msg}");
        assert!(msg.contains("a-labels-idx1-ubyte"), "{msg}");

        write_pair(dir.path(), "b", 3, &[0, 1], false);
        let msg = load_idx_pair(dir.path(), "b", "b", 10).unwrap_err().to_string();
        assert!(msg.contains("2 labels for 3 images"), "{msg}");

        // Labels and images swapped: the rank tells.
        write_pair(dir.path(), "c", 2, &[0, 1], false);
        std::fs::copy(dir.path().join("c-labels-idx1-ubyte"), dir.path().join("c-images-idx3-ubyte")).unwrap();
        let msg = load_idx_pair(dir.path(), "c", "c", 10).unwrap_err().to_string();
        assert!(msg.contains("needs 3 dimensions"), "{msg}");

        let msg = load_idx_pair(dir.path(), "zzz", "z", 10).unwrap_err().to_string();
        assert!(msg.contains("no IDX images file"), "{msg}");
    }
}
