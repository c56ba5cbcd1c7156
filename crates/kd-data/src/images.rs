//! Image folders (`images:DIR`): JPEG, PNG and BMP files in class folders, decoded once in
//! parallel into 8-bit storage, cached on disk and memory-mapped on reopen.
//!
//! Layouts (class names are the sorted class-folder names of the training split):
//!
//! | layout | what is read |
//! |---|---|
//! | `DIR/train/<class>/…`, `DIR/test/<class>/…`, optional `DIR/val/<class>/…` | official splits; `val/` is the validation split (without it one is carved from `train/`; without `test/`, `val/` is the test split) |
//! | `DIR/<class>/…` | one pool, split by the stratified split options |
//! | `DIR/val/*.JPEG` + `label_file` | a flat split folder (ImageNet's validation set): `file,label` CSV with a header row, or `file label` lines; the label is a class name (the first word of the field, so ImageNet's `LOC_val_solution.csv` works), the file a name in the folder with or without its extension |
//!
//! Every image becomes `[channels, height, width]` bytes. Images of the dataset's size are used
//! as they are; others are an error unless `resize` is set, which resizes the shorter side to
//! the size and crops the centre (torchvision's evaluation transform, bilinear). Grey, RGBA and
//! palette images are converted to the dataset's channel count (3 unless `channels = 1`); 16-bit,
//! floating-point and CMYK images are refused by name.
//!
//! The decoded bytes are written to a cache folder keyed by the file list, every file's size
//! and modification time, and the decoding options ([`ImageFolderReport::cache`] says where);
//! reopening maps that file instead of decoding again. Sets larger than the memory budget are
//! decoded chunk by chunk into the cache and always read through the map.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, imageops::FilterType};
use kd_core::checkpoint::write_atomic;
use kd_core::rng::hash_key;
use kd_core::{KdError, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{InMemoryDataset, Values};

/// The file extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp"];
/// Decoded sets up to this many MiB are held in memory; larger ones are read through the map.
pub const DEFAULT_MEMORY_BUDGET_MB: usize = 2048;
/// The decode cache's folder when none is named: `$KD_CACHE_DIR/images`, else
/// `target/kd-cache/images` under the working folder (beside the teacher cache).
pub fn default_decode_cache_dir() -> PathBuf {
    std::env::var_os("KD_CACHE_DIR").map(|d| PathBuf::from(d).join("images")).unwrap_or_else(|| PathBuf::from("target/kd-cache/images"))
}

/// Bumped when the cache's content or key changes meaning.
const CACHE_FORMAT: u64 = 1;

/// How every image becomes bytes: the part of the options that the decoded bytes depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeSpec {
    /// Output width and height.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Resize images of another size (shorter side, centre crop) instead of refusing them.
    pub resize: bool,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
}

impl DecodeSpec {
    /// Bytes of one decoded image.
    pub fn bytes_per_image(&self) -> usize {
        self.channels * self.width as usize * self.height as usize
    }
}

/// Decodes one JPEG, PNG or BMP file's bytes into `out` (`[channels, height, width]`), returning
/// the size the file had. The error says what is wrong with the content (the caller names the
/// file). This is the whole path untrusted bytes take (the fuzz target calls it).
pub fn decode_image(bytes: &[u8], spec: &DecodeSpec, out: &mut [u8]) -> std::result::Result<(u32, u32), String> {
    if out.len() != spec.bytes_per_image() {
        return Err(format!("output buffer of {} bytes for {} per image", out.len(), spec.bytes_per_image()));
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    let format = reader.format();
    if !matches!(format, Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Bmp)) {
        return Err(match format {
            Some(f) => format!("a {f:?} image; only JPEG, PNG and BMP are read"),
            None => "not an image (no JPEG, PNG or BMP signature)".into(),
        });
    }
    if format == Some(ImageFormat::Jpeg)
        && let Some(components) = jpeg_components(bytes)
        && components == 4
    {
        return Err("a CMYK (4-component) JPEG; convert it to RGB".into());
    }
    let decoder = reader.into_decoder().map_err(|e| format!("cannot decode: {e}"))?;
    let colour = decoder.color_type();
    if !matches!(colour, ColorType::L8 | ColorType::La8 | ColorType::Rgb8 | ColorType::Rgba8) {
        return Err(format!("{colour:?} pixels: only 8-bit images are read (convert 16-bit or floating-point images to 8 bits)"));
    }
    let image = DynamicImage::from_decoder(decoder).map_err(|e| format!("cannot decode: {e}"))?;
    let found = (image.width(), image.height());
    let image = if found == (spec.width, spec.height) {
        image
    } else if spec.resize {
        image.resize_to_fill(spec.width, spec.height, FilterType::Triangle)
    } else {
        return Err(format!(
            "{}x{} pixels, the dataset's images are {}x{}; set `resize = true` (with `image_size`) to resize the shorter side and crop \
             the centre",
            found.0, found.1, spec.width, spec.height
        ));
    };
    let plane = (spec.width * spec.height) as usize;
    match spec.channels {
        1 => out.copy_from_slice(image.to_luma8().as_raw()),
        _ => {
            let rgb = image.to_rgb8();
            for (p, px) in rgb.as_raw().chunks_exact(3).enumerate() {
                out[p] = px[0];
                out[plane + p] = px[1];
                out[2 * plane + p] = px[2];
            }
        }
    }
    Ok(found)
}

/// The number of colour components of a JPEG's frame header (4: CMYK or YCCK), if one is found
/// before the scan data.
fn jpeg_components(bytes: &[u8]) -> Option<u8> {
    let mut i = 2; // after SOI
    while i + 3 < bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        match marker {
            0xFF => i += 1, // fill byte
            0x01 | 0xD0..=0xD7 => i += 2,
            0xDA | 0xD9 => return None, // scan data or end before a frame header
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => return bytes.get(i + 9).copied(),
            _ => {
                let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
                i += 2 + len;
            }
        }
    }
    None
}

/// One image file of a split.
#[derive(Debug, Clone)]
struct ImageFile {
    path: PathBuf,
    /// Path relative to the dataset folder (for messages and the cache key).
    rel: String,
    class: usize,
    len: u64,
    modified_ns: u128,
}

/// A split's files, in class order then path order.
#[derive(Debug, Clone)]
struct SplitFiles {
    /// `train`, `valid`, `test` or `all`.
    split: &'static str,
    files: Vec<ImageFile>,
}

/// What an image folder holds and how it was read (listed by `cargo xtask datasets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageFolderReport {
    /// The folder.
    pub root: PathBuf,
    /// `splits` (train/test[/val] folders) or `pool` (class folders, split by the options).
    pub layout: String,
    /// Class names (sorted class-folder names).
    pub class_names: Vec<String>,
    /// Files per split and class: `(split, count per class)`.
    pub files: Vec<(String, Vec<usize>)>,
    /// Image sizes found in the files, `(width, height, count)`; empty when reopened from a
    /// cache written before sizes were recorded.
    pub sizes_found: Vec<(u32, u32, usize)>,
    /// `[channels, height, width]` of the decoded images.
    pub shape: [usize; 3],
    /// Where the decoded bytes are cached (`None`: cache off).
    pub cache: Option<PathBuf>,
    /// `decoded` (this call decoded the files), `reopened` (read from the cache), or why a
    /// decoded set could not be cached.
    pub cache_status: String,
    /// Seconds spent scanning, decoding (or reopening) and caching.
    pub seconds: f64,
    /// Whether the decoded bytes are held in memory (else read through a memory map).
    pub in_memory: bool,
}

/// The splits read from a folder, before the registry splits, limits and normalises them.
pub(crate) struct ImageFolder {
    /// The training split, or the whole pool.
    pub train: InMemoryDataset,
    /// `val/`, where the folder has it beside `test/`.
    pub valid: Option<InMemoryDataset>,
    /// `test/` (or `val/` alone); `None` for a pool.
    pub test: Option<InMemoryDataset>,
    pub report: ImageFolderReport,
}

/// The options of an image folder (fields of [`crate::LoadOptions`]).
pub(crate) struct FolderOptions<'a> {
    pub image_size: Option<usize>,
    pub resize: bool,
    pub channels: Option<usize>,
    pub label_file: Option<&'a Path>,
    pub memory_budget_mb: Option<usize>,
    pub decode_cache: Option<&'a str>,
}

fn invalid(msg: String) -> KdError {
    KdError::InvalidConfig(msg)
}

fn malformed(path: &Path, reason: impl Into<String>) -> KdError {
    KdError::Malformed { path: path.to_path_buf(), reason: reason.into() }
}

/// An image folder's files, listed without decoding any: its layout, classes, every split's
/// files with their classes, and what the images become (from the options, else from the first
/// training image's header).
pub(crate) struct FolderListing {
    /// `splits` or `pool`.
    pub layout: &'static str,
    /// Class names (sorted class-folder names of the training split).
    pub classes: Vec<String>,
    splits: Vec<SplitFiles>,
    spec: DecodeSpec,
    /// `[channels, height, width]` of the decoded images.
    pub shape: [usize; 3],
}

impl FolderListing {
    /// Each split's name (`train`, `valid`, `test` or `all`) and the class of each of its files.
    pub fn split_labels(&self) -> Vec<(&'static str, Vec<usize>)> {
        self.splits.iter().map(|s| (s.split, s.files.iter().map(|f| f.class).collect())).collect()
    }
}

/// Lists an image folder (see the module documentation) and checks the options, without
/// decoding: only the first training image's header is read, for its size, when the options
/// do not give one.
pub(crate) fn list_image_folder(root: &Path, options: &FolderOptions) -> Result<FolderListing> {
    let meta = fs::metadata(root).map_err(|e| KdError::io("reading image folder", root, e))?;
    if !meta.is_dir() {
        return Err(invalid(format!("images:{}: not a folder", root.display())));
    }
    if let Some(c) = options.channels
        && c != 1
        && c != 3
    {
        return Err(invalid(format!("channels = {c}: an image dataset has 1 (grey) or 3 (RGB) channels")));
    }
    if options.image_size == Some(0) {
        return Err(invalid("image_size = 0: images need at least one pixel".into()));
    }
    if options.resize && options.image_size.is_none() {
        return Err(invalid("resize = true needs image_size (the side every image is resized and cropped to)".into()));
    }
    let labels = options.label_file.map(read_label_file).transpose()?;
    let (layout, classes, splits) = scan(root, labels.as_ref())?;
    let first = splits[0].files.first().ok_or_else(|| invalid(format!("images:{}: no images", root.display())))?;
    let (width, height) = match options.image_size {
        Some(s) => (s as u32, s as u32),
        None => image::image_dimensions(&first.path).map_err(|e| malformed(&first.path, format!("cannot read its size: {e}")))?,
    };
    let spec = DecodeSpec { width, height, resize: options.resize, channels: options.channels.unwrap_or(3) };
    let shape = [spec.channels, height as usize, width as usize];
    Ok(FolderListing { layout, classes, splits, spec, shape })
}

/// Reads an image folder (see the module documentation).
pub(crate) fn read_image_folder(root: &Path, options: &FolderOptions) -> Result<ImageFolder> {
    let started = Instant::now();
    let FolderListing { layout, classes, splits, spec, shape } = list_image_folder(root, options)?;
    let budget = options.memory_budget_mb.unwrap_or(DEFAULT_MEMORY_BUDGET_MB).saturating_mul(1 << 20);
    let total_bytes: usize = splits.iter().map(|s| s.files.len() * spec.bytes_per_image()).sum();
    let cache_dir = match options.decode_cache {
        Some("off") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(default_decode_cache_dir()),
    };
    if cache_dir.is_none() && total_bytes > budget {
        return Err(invalid(format!(
            "images:{}: {} MiB of decoded images exceed memory_budget_mb = {}; turn the decode cache on (it is read through a memory \
             map) or raise the budget",
            root.display(),
            total_bytes >> 20,
            budget >> 20
        )));
    }
    let key = cache_key(root, &classes, &splits, &spec);
    let cache = cache_dir.map(|d| d.join(format!("{key:016x}")));
    let mut sizes_found = BTreeMap::new();
    let mut values = Vec::new();
    let mut reopened = false;
    let mut cache_note = None;
    if let Some(folder) = &cache
        && let Some(mapped) = reopen(folder, &splits, &spec)?
    {
        values = mapped.0;
        sizes_found = mapped.1;
        reopened = true;
    }
    if !reopened {
        for split in &splits {
            let (v, sizes) = match &cache {
                Some(folder) if total_bytes > budget => decode_to_file(split, &spec, folder, budget)?,
                _ => {
                    let (bytes, sizes) = decode_in_memory(split, &spec)?;
                    (Values::U8 { data: Arc::new(bytes), scale: 255.0 }, sizes)
                }
            };
            for (k, n) in sizes {
                *sizes_found.entry(k).or_insert(0) += n;
            }
            values.push(v);
        }
        // A cache that cannot be written (a read-only working folder) costs the next load a
        // decode, not this one its data: said in the report, which `datasets` prints.
        // Mapped splits live in the cache already, so there a failure is the load's.
        if let Some(folder) = &cache
            && let Err(e) = write_cache(folder, &splits, &values, &spec, &sizes_found)
        {
            if !in_memory(&values) {
                return Err(e);
            }
            cache_note = Some(format!("decoded; the cache could not be written ({e}); set `decode_cache` to a writable folder or `off`"));
        }
    }
    let in_memory = in_memory(&values);
    let name = "images";
    let mut datasets = Vec::new();
    for (split, v) in splits.iter().zip(values) {
        let labels = split.files.iter().map(|f| f.class).collect();
        let ds =
            InMemoryDataset::new(format!("{name}/{}", split.split), v, labels, shape, classes.len())?.with_class_names(classes.clone())?;
        datasets.push((split.split, ds));
    }
    let report = ImageFolderReport {
        root: root.to_path_buf(),
        layout: layout.into(),
        files: splits
            .iter()
            .map(|s| {
                let mut counts = vec![0; classes.len()];
                s.files.iter().for_each(|f| counts[f.class] += 1);
                (s.split.to_string(), counts)
            })
            .collect(),
        class_names: classes,
        sizes_found: sizes_found.into_iter().map(|((w, h), n)| (w, h, n)).collect(),
        shape,
        cache,
        cache_status: cache_note.unwrap_or_else(|| if reopened { "reopened" } else { "decoded" }.into()),
        seconds: started.elapsed().as_secs_f64(),
        in_memory,
    };
    let mut take = |split: &str| datasets.iter().position(|(s, _)| *s == split).map(|p| datasets.remove(p).1);
    let train = take("train").or_else(|| take("all")).ok_or_else(|| invalid(format!("images:{}: no training split", root.display())))?;
    Ok(ImageFolder { valid: take("valid"), test: take("test"), train, report })
}

/// Whether every split's bytes are held in memory (none read through a map).
fn in_memory(values: &[Values]) -> bool {
    values.iter().all(|v| matches!(v, Values::U8 { .. }))
}

/// Label-file lines: `(file, class name, line number)`.
type LabelLines = Vec<(String, String, usize)>;

/// Reads a label file: `file,label` CSV (a header row first) for `.csv`, else `file label`
/// lines. The label is the first word of its field. Duplicate files are an error.
fn read_label_file(path: &Path) -> Result<LabelLines> {
    let text = kd_core::files::read_regular_text(path)?;
    let csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut lines = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate().skip(usize::from(csv)) {
        let number = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (file, label) = if csv {
            let mut parts = line.splitn(2, ',');
            (parts.next().unwrap_or("").trim(), parts.next().unwrap_or("").trim())
        } else {
            let mut parts = line.splitn(2, char::is_whitespace);
            (parts.next().unwrap_or("").trim(), parts.next().unwrap_or("").trim())
        };
        let label = label.split_whitespace().next().unwrap_or("");
        if file.is_empty() || label.is_empty() {
            return Err(malformed(path, format!("line {number}: expected a file and a label, found `{line}`")));
        }
        if let Some(first) = seen.insert(file.to_string(), number) {
            return Err(malformed(path, format!("line {number}: `{file}` is listed again (first on line {first})")));
        }
        lines.push((file.to_string(), label.to_string(), number));
    }
    if lines.is_empty() {
        return Err(malformed(path, "no labelled files"));
    }
    Ok(lines)
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Whether a file name has one of the [`IMAGE_EXTENSIONS`].
pub fn is_image_name(name: &str) -> bool {
    Path::new(name).extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The entries of a folder, sorted by name, hidden ones left out: `(name, path, is_dir)`.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| KdError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| KdError::io("listing", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_hidden(&name) {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links; a dangling link or a link loop is an error naming it.
        let meta = fs::metadata(&path).map_err(|e| KdError::io("reading", &path, e))?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(malformed(&path, "not a regular file or folder (a named pipe, socket or device)"));
        }
        out.push((name, path, meta.is_dir()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned()
}

fn image_file(root: &Path, path: PathBuf, class: usize) -> Result<ImageFile> {
    let meta = fs::metadata(&path).map_err(|e| KdError::io("reading", &path, e))?;
    let modified_ns = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok(ImageFile { rel: rel(root, &path), path, class, len: meta.len(), modified_ns })
}

/// Every image under a class folder (sub-folders included, links followed once).
fn class_files(root: &Path, dir: &Path, class: usize, out: &mut Vec<ImageFile>) -> Result<()> {
    let mut visited = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let canonical = fs::canonicalize(&d).map_err(|e| KdError::io("resolving", &d, e))?;
        if !visited.insert(canonical) {
            return Err(malformed(&d, "a symbolic-link loop: this folder was already read under another path"));
        }
        let mut subdirs = Vec::new();
        for (name, path, is_dir) in entries(&d)? {
            if is_dir {
                subdirs.push(path);
            } else if is_image_name(&name) {
                out.push(image_file(root, path, class)?);
            } else {
                return Err(malformed(
                    &path,
                    format!("not an image file name (read: {}); move it out of the class folder", IMAGE_EXTENSIONS.join(", ")),
                ));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// Named paths: `(file or folder name, path)`.
type Named = Vec<(String, PathBuf)>;

/// The class folders and loose image files of a split folder.
fn split_entries(dir: &Path) -> Result<(Named, Named)> {
    let mut folders = Vec::new();
    let mut files = Vec::new();
    for (name, path, is_dir) in entries(dir)? {
        if is_dir {
            folders.push((name, path));
        } else if is_image_name(&name) {
            files.push((name, path));
        }
    }
    Ok((folders, files))
}

/// Reads one split folder: class folders (each a known class when `classes` is given), or
/// loose images labelled by the label file.
fn read_split(
    root: &Path,
    dir: &Path,
    split: &'static str,
    classes: &mut Vec<String>,
    fixed_classes: bool,
    labels: Option<&LabelLines>,
) -> Result<SplitFiles> {
    let (folders, loose) = split_entries(dir)?;
    let mut files = Vec::new();
    if !folders.is_empty() && !loose.is_empty() {
        return Err(malformed(dir, format!("holds both class folders and loose images ({}): use one or the other", loose[0].0)));
    }
    if !loose.is_empty() {
        let labels = labels.ok_or_else(|| {
            malformed(
                dir,
                format!(
                    "holds images without class folders ({} …); name their classes with `label_file` (`file,label` CSV with a header, \
                     or `file label` lines)",
                    loose[0].0
                ),
            )
        })?;
        if !fixed_classes {
            let names: BTreeSet<&str> = labels.iter().map(|(_, l, _)| l.as_str()).collect();
            *classes = names.into_iter().map(String::from).collect();
        }
        // A label line names a file by its name in the folder, its path under the dataset
        // folder, or its name without the extension (ImageNet's solution file).
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (k, (name, path)) in loose.iter().enumerate() {
            by_name.insert(name.clone(), k);
            by_name.insert(rel(root, path), k);
            if let Some(stem) = Path::new(name).file_stem() {
                by_name.entry(stem.to_string_lossy().into_owned()).or_insert(k);
            }
        }
        let mut label_of: Vec<Option<usize>> = vec![None; loose.len()];
        for (file, label, line) in labels {
            let Some(&k) = by_name.get(file.as_str()) else {
                // Lines for another flat split of the same folder are theirs.
                if file.contains('/') && !file.starts_with(&format!("{split}/")) {
                    continue;
                }
                return Err(invalid(format!("label file line {line}: `{file}` is not an image in {}", dir.display())));
            };
            let class = classes.iter().position(|c| c == label).ok_or_else(|| {
                invalid(format!("label file line {line}: class `{label}` of `{file}` is not one of the classes ({})", classes.join(", ")))
            })?;
            if label_of[k].is_some() {
                return Err(invalid(format!("label file line {line}: `{file}` labels {} a second time", loose[k].0)));
            }
            label_of[k] = Some(class);
        }
        for ((name, path), class) in loose.into_iter().zip(label_of) {
            let class = class.ok_or_else(|| invalid(format!("{}: `{name}` has no line in the label file", dir.display())))?;
            files.push(image_file(root, path, class)?);
        }
        files.sort_by(|a, b| (a.class, &a.rel).cmp(&(b.class, &b.rel)));
        return Ok(SplitFiles { split, files });
    }
    if folders.is_empty() {
        return Err(malformed(dir, format!("no class folders and no images (expected {}/<class>/<image>)", dir.display())));
    }
    if !fixed_classes {
        *classes = folders.iter().map(|(n, _)| n.clone()).collect();
    }
    for (name, path) in folders {
        let class = classes
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| malformed(&path, format!("class `{name}` is not a class of the training split ({})", classes.join(", "))))?;
        let before = files.len();
        class_files(root, &path, class, &mut files)?;
        if files.len() == before && matches!(split, "train" | "all") {
            return Err(malformed(&path, "an empty class folder: every training class needs images"));
        }
    }
    Ok(SplitFiles { split, files })
}

/// Finds the layout and lists every split's files. The first split is `train` or `all`.
fn scan(root: &Path, labels: Option<&LabelLines>) -> Result<(&'static str, Vec<String>, Vec<SplitFiles>)> {
    let sub = |n: &str| {
        let p = root.join(n);
        p.is_dir().then_some(p)
    };
    let train = sub("train");
    let test = sub("test");
    let val = sub("val").or_else(|| sub("valid"));
    let mut classes = Vec::new();
    let Some(train) = train else {
        if test.is_some() || val.is_some() {
            return Err(invalid(format!(
                "images:{}: has test/ or val/ but no train/ (the split layout is train/<class>/, test/<class>/, optional val/<class>/)",
                root.display()
            )));
        }
        let all = read_split(root, root, "all", &mut classes, false, labels)?;
        check_classes(root, &classes)?;
        return Ok(("pool", classes, vec![all]));
    };
    let train = read_split(root, &train, "train", &mut classes, false, labels)?;
    check_classes(root, &classes)?;
    let mut splits = vec![train];
    match (val, test) {
        (Some(v), Some(t)) => {
            splits.push(read_split(root, &v, "valid", &mut classes, true, labels)?);
            splits.push(read_split(root, &t, "test", &mut classes, true, labels)?);
        }
        (Some(only), None) | (None, Some(only)) => splits.push(read_split(root, &only, "test", &mut classes, true, labels)?),
        (None, None) => {
            return Err(invalid(format!("images:{}: has train/ but neither test/ nor val/ to evaluate on", root.display())));
        }
    }
    for s in &splits[1..] {
        if s.files.is_empty() {
            return Err(invalid(format!("images:{}: the {} split holds no images", root.display(), s.split)));
        }
    }
    Ok(("splits", classes, splits))
}

fn check_classes(root: &Path, classes: &[String]) -> Result<()> {
    if classes.len() < 2 {
        return Err(invalid(format!(
            "images:{}: {} class{} ({}): classification needs at least two class folders",
            root.display(),
            classes.len(),
            if classes.len() == 1 { "" } else { "es" },
            classes.join(", ")
        )));
    }
    Ok(())
}

fn words_of(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    std::iter::once(bytes.len() as u64).chain(bytes.chunks(8).map(|c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    }))
}

/// The cache key: the folder, the classes, every file's path, size, modification time and
/// class, and how the images are decoded.
fn cache_key(root: &Path, classes: &[String], splits: &[SplitFiles], spec: &DecodeSpec) -> u64 {
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut words = vec![CACHE_FORMAT, spec.width as u64, spec.height as u64, spec.resize as u64, spec.channels as u64];
    words.extend(words_of(root.to_string_lossy().as_bytes()));
    for c in classes {
        words.extend(words_of(c.as_bytes()));
    }
    for s in splits {
        words.extend(words_of(s.split.as_bytes()));
        words.push(s.files.len() as u64);
        for f in &s.files {
            words.push(hash_key(&words_of(f.rel.as_bytes()).collect::<Vec<_>>()));
            words.extend([f.len, f.modified_ns as u64, (f.modified_ns >> 64) as u64, f.class as u64]);
        }
    }
    hash_key(&words)
}

type Sizes = BTreeMap<(u32, u32), usize>;

/// Decodes the files into `out`, in parallel; the first failing file (in order) is the error.
fn decode_into(files: &[ImageFile], spec: &DecodeSpec, out: &mut [u8]) -> Result<Sizes> {
    let per = spec.bytes_per_image();
    let results: Vec<Result<(u32, u32)>> = out
        .par_chunks_mut(per)
        .zip(files.par_iter())
        .map(|(o, f)| {
            let bytes = kd_core::files::read_regular(&f.path)?;
            decode_image(&bytes, spec, o).map_err(|reason| malformed(&f.path, reason))
        })
        .collect();
    let mut sizes = Sizes::new();
    for r in results {
        *sizes.entry(r?).or_insert(0) += 1;
    }
    Ok(sizes)
}

fn decode_in_memory(split: &SplitFiles, spec: &DecodeSpec) -> Result<(Vec<u8>, Sizes)> {
    let mut bytes = vec![0u8; split.files.len() * spec.bytes_per_image()];
    let sizes = decode_into(&split.files, spec, &mut bytes)?;
    Ok((bytes, sizes))
}

/// Decodes a split larger than the memory budget chunk by chunk into its cache file, then maps
/// it.
fn decode_to_file(split: &SplitFiles, spec: &DecodeSpec, folder: &Path, budget: usize) -> Result<(Values, Sizes)> {
    fs::create_dir_all(folder).map_err(|e| KdError::io("creating folder", folder, e))?;
    let per = spec.bytes_per_image();
    let chunk = (budget / 4 / per).max(1);
    let path = folder.join(format!("{}.u8", split.split));
    // Through kd_core's atomic writer: a kill mid-way leaves a temporary file that the next
    // build of this cache removes.
    let mut file = kd_core::atomic::AtomicFile::create(&path)?;
    let mut sizes = Sizes::new();
    let mut buffer = vec![0u8; chunk * per];
    for files in split.files.chunks(chunk) {
        let out = &mut buffer[..files.len() * per];
        for (k, n) in decode_into(files, spec, out)? {
            *sizes.entry(k).or_insert(0) += n;
        }
        file.write_all(out).map_err(|e| KdError::io("writing", &path, e))?;
    }
    file.commit()?;
    Ok((map_file(&path, split.files.len() * per)?, sizes))
}

fn map_file(path: &Path, expected: usize) -> Result<Values> {
    let file = fs::File::open(path).map_err(|e| KdError::io("opening", path, e))?;
    let len = file.metadata().map_err(|e| KdError::io("reading", path, e))?.len();
    if len != expected as u64 {
        return Err(malformed(path, format!("{len} bytes where {expected} were expected (a cache from an interrupted write?)")));
    }
    if expected == 0 {
        return Ok(Values::U8 { data: Arc::new(Vec::new()), scale: 255.0 });
    }
    // SAFETY: the cache file is written once under a temporary name and renamed into place; it is
    // never modified afterwards (a changed dataset gets a new key, so a new folder).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| KdError::io("mapping", path, e))?;
    Ok(Values::Mapped { map: Arc::new(map), scale: 255.0 })
}

/// The cache's description file: written last, so its presence means the cache is complete.
#[derive(Debug, Serialize, Deserialize)]
struct CacheMeta {
    format: u64,
    splits: Vec<(String, usize)>,
    bytes_per_image: usize,
    sizes_found: Vec<(u32, u32, usize)>,
}

fn reopen(folder: &Path, splits: &[SplitFiles], spec: &DecodeSpec) -> Result<Option<(Vec<Values>, Sizes)>> {
    let meta_path = folder.join("meta.json");
    let Ok(text) = fs::read_to_string(&meta_path) else { return Ok(None) };
    let Ok(meta) = serde_json::from_str::<CacheMeta>(&text) else { return Ok(None) };
    let expected: Vec<(String, usize)> = splits.iter().map(|s| (s.split.to_string(), s.files.len())).collect();
    if meta.format != CACHE_FORMAT || meta.splits != expected || meta.bytes_per_image != spec.bytes_per_image() {
        return Ok(None);
    }
    let mut values = Vec::new();
    for s in splits {
        match map_file(&folder.join(format!("{}.u8", s.split)), s.files.len() * spec.bytes_per_image()) {
            Ok(v) => values.push(v),
            Err(_) => return Ok(None), // decoded again and rewritten
        }
    }
    Ok(Some((values, meta.sizes_found.into_iter().map(|(w, h, n)| ((w, h), n)).collect())))
}

/// Writes the in-memory splits' bytes (over-budget splits are in the cache already) and then
/// `meta.json`.
fn write_cache(folder: &Path, splits: &[SplitFiles], values: &[Values], spec: &DecodeSpec, sizes: &Sizes) -> Result<()> {
    for (s, v) in splits.iter().zip(values) {
        if let Values::U8 { data, .. } = v {
            write_atomic(&folder.join(format!("{}.u8", s.split)), data)?;
        }
    }
    let meta = CacheMeta {
        format: CACHE_FORMAT,
        splits: splits.iter().map(|s| (s.split.to_string(), s.files.len())).collect(),
        bytes_per_image: spec.bytes_per_image(),
        sizes_found: sizes.iter().map(|(&(w, h), &n)| (w, h, n)).collect(),
    };
    write_atomic(&folder.join("meta.json"), serde_json::to_string_pretty(&meta).map_err(|e| KdError::Record(e.to_string()))?.as_bytes())
}

/// Reads image files for prediction, prepared as a dataset's images are (`spec`): the files
/// themselves, or every image in the given folders (recursively, sorted). Returns the files and
/// their bytes, `[channels, height, width]` each.
pub fn read_image_files(inputs: &[PathBuf], spec: &DecodeSpec) -> Result<(Vec<PathBuf>, Vec<u8>)> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = fs::metadata(input).map_err(|e| KdError::io("reading", input, e))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            class_files(input, input, 0, &mut found)?;
            if found.is_empty() {
                return Err(malformed(input, format!("a folder with no images ({})", IMAGE_EXTENSIONS.join(", "))));
            }
            let mut paths: Vec<PathBuf> = found.into_iter().map(|f| f.path).collect();
            paths.sort();
            files.extend(paths);
        } else {
            files.push(input.clone());
        }
    }
    let entries: Vec<ImageFile> =
        files.iter().map(|p| ImageFile { path: p.clone(), rel: String::new(), class: 0, len: 0, modified_ns: 0 }).collect();
    let mut bytes = vec![0u8; entries.len() * spec.bytes_per_image()];
    decode_into(&entries, spec, &mut bytes)?;
    Ok((files, bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, Rgba};

    /// Writes `n` images per class of `side` pixels into `dir/<class>/`, with pixel values that
    /// tell the class and the sample apart. PNG (lossless) unless `ext` says otherwise.
    pub(crate) fn write_class_folders(dir: &Path, classes: &[&str], n: usize, side: u32, ext: &str) {
        for (c, class) in classes.iter().enumerate() {
            let folder = dir.join(class);
            fs::create_dir_all(&folder).unwrap();
            for i in 0..n {
                let img = ImageBuffer::from_fn(side, side, |x, y| Rgb([(c * 40) as u8, (i * 7 % 256) as u8, ((x + y) * 5 % 256) as u8]));
                img.save(folder.join(format!("{i:03}.{ext}"))).unwrap();
            }
        }
    }

    fn spec(side: u32) -> DecodeSpec {
        DecodeSpec { width: side, height: side, resize: false, channels: 3 }
    }

    fn opts<'a>(cache: &'a str) -> FolderOptions<'a> {
        FolderOptions {
            image_size: None,
            resize: false,
            channels: None,
            label_file: None,
            memory_budget_mb: None,
            decode_cache: Some(cache),
        }
    }

    fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn png_pixels_come_out_channel_major_and_grey_rgba_convert() {
        let img = ImageBuffer::from_fn(2, 2, |x, y| Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let bytes = encode(DynamicImage::ImageRgb8(img), ImageFormat::Png);
        let mut out = vec![0u8; 12];
        assert_eq!(decode_image(&bytes, &spec(2), &mut out).unwrap(), (2, 2));
        assert_eq!(out, [0, 10, 0, 10, 0, 0, 20, 20, 7, 7, 7, 7]);
        // Grey to three channels: the grey value in each.
        let grey = encode(DynamicImage::ImageLuma8(ImageBuffer::from_fn(2, 2, |x, _| Luma([x as u8 * 100]))), ImageFormat::Png);
        decode_image(&grey, &spec(2), &mut out).unwrap();
        assert_eq!(out, [0, 100, 0, 100, 0, 100, 0, 100, 0, 100, 0, 100]);
        // RGBA drops alpha; one channel takes the luminance.
        let rgba = encode(DynamicImage::ImageRgba8(ImageBuffer::from_fn(2, 2, |_, _| Rgba([255, 255, 255, 0]))), ImageFormat::Png);
        let mut one = vec![0u8; 4];
        decode_image(&rgba, &DecodeSpec { channels: 1, ..spec(2) }, &mut one).unwrap();
        assert_eq!(one, [255; 4]);
        // BMP and JPEG read too.
        let bmp = encode(DynamicImage::ImageRgb8(ImageBuffer::from_fn(2, 2, |_, _| Rgb([1, 2, 3]))), ImageFormat::Bmp);
        decode_image(&bmp, &spec(2), &mut out).unwrap();
        assert_eq!(out[..4], [1; 4]);
        let jpg = encode(DynamicImage::ImageRgb8(ImageBuffer::from_fn(8, 8, |_, _| Rgb([200, 100, 50]))), ImageFormat::Jpeg);
        let mut out = vec![0u8; 3 * 64];
        decode_image(&jpg, &spec(8), &mut out).unwrap();
        assert!(out[..64].iter().all(|&v| v.abs_diff(200) <= 3), "{:?}", &out[..8]);
        assert_eq!(jpeg_components(&jpg), Some(3));
    }

    #[test]
    fn bad_images_are_errors_that_say_what_is_wrong() {
        let mut out = vec![0u8; 12];
        let png = encode(DynamicImage::ImageRgb8(ImageBuffer::from_fn(2, 2, |_, _| Rgb([1, 2, 3]))), ImageFormat::Png);
        let err = decode_image(&png[..png.len() / 2], &spec(2), &mut out).unwrap_err();
        assert!(err.contains("cannot decode"), "{err}");
        let err = decode_image(b"name,label\nx,1\n", &spec(2), &mut out).unwrap_err();
        assert!(err.contains("not an image"), "{err}");
        let deep = encode(DynamicImage::ImageLuma16(ImageBuffer::from_fn(2, 2, |_, _| Luma([1000u16]))), ImageFormat::Png);
        let err = decode_image(&deep, &spec(2), &mut out).unwrap_err();
        assert!(err.contains("L16 pixels: only 8-bit images are read"), "{err}");
        let big = encode(DynamicImage::ImageRgb8(ImageBuffer::from_fn(4, 3, |_, _| Rgb([1, 2, 3]))), ImageFormat::Png);
        let err = decode_image(&big, &spec(2), &mut out).unwrap_err();
        assert!(err.contains("4x3 pixels, the dataset's images are 2x2; set `resize = true`"), "{err}");
        // With resize: shorter side to 2, centre crop.
        decode_image(&big, &DecodeSpec { resize: true, ..spec(2) }, &mut out).unwrap();
        assert_eq!(out[..4], [1; 4]);
        // A CMYK frame header (4 components) is refused before decoding.
        let mut cmyk = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 17, 8, 0, 2, 0, 2, 4];
        cmyk.extend([0; 12]);
        assert_eq!(jpeg_components(&cmyk), Some(4));
        let err = decode_image(&cmyk, &spec(2), &mut out).unwrap_err();
        assert!(err.contains("CMYK"), "{err}");
    }

    #[test]
    fn split_layout_reads_classes_sizes_and_reopens_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let cache = cache.to_str().unwrap();
        write_class_folders(&dir.path().join("data/train"), &["cat", "dog", "emu"], 4, 5, "png");
        write_class_folders(&dir.path().join("data/test"), &["cat", "dog", "emu"], 2, 5, "png");
        let root = dir.path().join("data");
        let first = read_image_folder(&root, &opts(cache)).unwrap();
        assert_eq!(first.report.layout, "splits");
        assert_eq!(first.report.class_names, ["cat", "dog", "emu"]);
        assert_eq!(first.report.files, [("train".into(), vec![4, 4, 4]), ("test".into(), vec![2, 2, 2])]);
        assert_eq!(first.report.sizes_found, [(5, 5, 18)]);
        assert_eq!((first.report.cache_status.as_str(), first.report.shape), ("decoded", [3, 5, 5]));
        assert!(first.valid.is_none());
        let test = first.test.as_ref().unwrap();
        assert_eq!(test.labels(), [0, 0, 1, 1, 2, 2]);
        let again = read_image_folder(&root, &opts(cache)).unwrap();
        assert_eq!(again.report.cache_status, "reopened");
        assert!(!again.report.in_memory);
        let rows: Vec<usize> = (0..12).collect();
        assert_eq!(again.train.host_batch(&rows, 0, 0).unwrap(), first.train.host_batch(&rows, 0, 0).unwrap());
        // The class's red value, sample 1's green value, as written.
        let b = first.train.host_batch(&[5], 0, 0).unwrap();
        assert_eq!((b.inputs[0] * 255.0).round(), 40.0);
        assert_eq!((b.inputs[25] * 255.0).round(), 7.0);
        // A file touched or replaced: a new key, decoded again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_class_folders(&dir.path().join("data/test"), &["cat"], 1, 5, "png");
        assert_eq!(read_image_folder(&root, &opts(cache)).unwrap().report.cache_status, "decoded");
        // Over the memory budget: decoded into the cache chunk by chunk and mapped.
        let tiny = FolderOptions { memory_budget_mb: Some(0), decode_cache: Some(cache), ..opts(cache) };
        let small = tempfile::tempdir().unwrap();
        let tiny = FolderOptions { decode_cache: Some(small.path().to_str().unwrap()), ..tiny };
        let mapped = read_image_folder(&root, &tiny).unwrap();
        assert!(!mapped.report.in_memory);
        assert_eq!(read_image_folder(&root, &tiny).unwrap().report.cache_status, "reopened");
        // A cache folder that cannot be created: the set still loads, and the report says why
        // it was not cached.
        let blocked = dir.path().join("a-file");
        fs::write(&blocked, "").unwrap();
        let blocked = blocked.join("cache");
        let unwritable = read_image_folder(&root, &FolderOptions { decode_cache: Some(blocked.to_str().unwrap()), ..opts(cache) }).unwrap();
        assert!(
            unwritable.report.cache_status.starts_with("decoded; the cache could not be written"),
            "{}",
            unwritable.report.cache_status
        );
        assert_eq!(unwritable.train.host_batch(&rows, 0, 0).unwrap(), first.train.host_batch(&rows, 0, 0).unwrap());
        assert_eq!(mapped.train.host_batch(&rows, 0, 0).unwrap(), first.train.host_batch(&rows, 0, 0).unwrap());
        let off = FolderOptions { memory_budget_mb: Some(0), ..opts("off") };
        assert!(read_image_folder(&root, &off).err().unwrap().to_string().contains("exceed memory_budget_mb"));
    }

    #[test]
    fn a_flat_validation_folder_reads_its_label_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("net");
        write_class_folders(&root.join("train"), &["n01", "n02"], 3, 4, "png");
        write_class_folders(dir.path(), &["flat"], 4, 4, "png");
        fs::rename(dir.path().join("flat"), root.join("val")).unwrap();
        let csv = dir.path().join("labels.csv");
        fs::write(&csv, "ImageId,PredictionString\n000,n02 1 2 3 4\n001.png,n01\nval/002.png,n02\n003,n01\n").unwrap();
        let cache = dir.path().join("c");
        let o = FolderOptions { label_file: Some(&csv), ..opts(cache.to_str().unwrap()) };
        let folder = read_image_folder(&root, &o).unwrap();
        assert_eq!(folder.test.unwrap().labels(), [0, 0, 1, 1]);
        let lines = dir.path().join("labels.txt");
        fs::write(&lines, "000.png n02\n001.png n01\n002.png n02\n003.png n09\n").unwrap();
        let err = read_image_folder(&root, &FolderOptions { label_file: Some(&lines), ..o }).err().unwrap().to_string();
        assert!(err.contains("line 4: class `n09` of `003.png` is not one of the classes (n01, n02)"), "{err}");
        fs::write(&lines, "000.png n02\n001.png n01\n002.png n02\n").unwrap();
        let err = read_image_folder(&root, &FolderOptions { label_file: Some(&lines), ..o }).err().unwrap().to_string();
        assert!(err.contains("`003.png` has no line in the label file"), "{err}");
        fs::write(&lines, "000.png n02\n001.png n01\n002.png n02\n003.png n01\n000.png n01\n").unwrap();
        let err = read_image_folder(&root, &FolderOptions { label_file: Some(&lines), ..o }).err().unwrap().to_string();
        assert!(err.contains("line 5: `000.png` is listed again (first on line 1)"), "{err}");
        fs::write(&lines, "000.png n02\n001.png n01\n002.png n02\n003.png n01\n404.png n01\n").unwrap();
        let err = read_image_folder(&root, &FolderOptions { label_file: Some(&lines), ..o }).err().unwrap().to_string();
        assert!(err.contains("line 5: `404.png` is not an image in"), "{err}");
        let err = read_image_folder(&root, &opts("off")).err().unwrap().to_string();
        assert!(err.contains("holds images without class folders (000.png …); name their classes with `label_file`"), "{err}");
    }

    #[test]
    fn folder_faults_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_class_folders(root, &["a", "b"], 2, 4, "png");
        fs::write(root.join("a/notes.txt"), "x").unwrap();
        let err = read_image_folder(root, &opts("off")).err().unwrap().to_string();
        assert!(err.contains("a/notes.txt") && err.contains("not an image file name"), "{err}");
        fs::remove_file(root.join("a/notes.txt")).unwrap();
        fs::write(root.join("b/fake.jpg"), "id,label\n").unwrap();
        let err = read_image_folder(root, &opts("off")).err().unwrap().to_string();
        assert!(err.contains("b/fake.jpg") && err.contains("not an image"), "{err}");
        fs::remove_file(root.join("b/fake.jpg")).unwrap();
        fs::create_dir(root.join("c")).unwrap();
        let err = read_image_folder(root, &opts("off")).err().unwrap().to_string();
        assert!(err.contains("an empty class folder"), "{err}");
        fs::remove_dir(root.join("c")).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("a"), root.join("a/again")).unwrap();
            let err = read_image_folder(root, &opts("off")).err().unwrap().to_string();
            assert!(err.contains("symbolic-link loop"), "{err}");
            fs::remove_file(root.join("a/again")).unwrap();
        }
        image::RgbImage::new(6, 6).save(root.join("b/big.png")).unwrap();
        let err = read_image_folder(root, &opts("off")).err().unwrap().to_string();
        assert!(err.contains("b/big.png") && err.contains("6x6 pixels, the dataset's images are 4x4"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = read_image_folder(empty.path(), &opts("off")).err().unwrap().to_string();
        assert!(err.contains("no class folders and no images"), "{err}");
    }
}
