//! A teacher backed by stored outputs: distil without running the teacher at every step.
//!
//! The frozen teacher runs once over the training split (with a progress bar) and its logits
//! are written to disk, keyed by the teacher's weights, the data (its fingerprint includes the
//! preprocessing and augmentation settings) and the pool of augmentation draws. Training then
//! reads the teacher's outputs from the cache.
//!
//! - Without augmentation the cache holds the exact logits of every sample.
//! - With augmentation it holds a fixed pool of `draws` augmentation draws per sample, and
//!   training replays them ([`DrawPool`]): epoch `e` uses draw `(e - 1) mod draws`, each draw
//!   a different random crop and flip for every sample (FKD's idea, Shen and Xing 2022, at
//!   CIFAR scale).
//! - Full logits by default. [`CacheContent::TopK`] stores FKD's top-k probabilities with
//!   marginal smoothing instead, for many classes; its outputs are approximate, and only
//!   methods that accept that ([`TeacherCache::outputs`] is asked with [`TeacherNeed::Logits`]
//!   and the distiller opts in) may use it.
//! - Teacher features are not stored: a method that needs them is refused with an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::data::{Batch, BatchSource};
use crate::error::{KdError, Result};
use crate::model::{Classifier, FrozenTeacher, ModelOutput, Teacher, TeacherNeed};
use crate::rng::hash_key;

/// What the cache stores per sample and draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CacheContent {
    /// Every logit (exact; what DKD, RLD and DCKD need).
    #[default]
    FullLogits,
    /// The top-k probabilities at temperature 1; the other classes share the rest equally
    /// (FKD's marginal smoothing). Recovered outputs are log-probabilities.
    TopK {
        /// Number of classes kept per row.
        k: usize,
    },
}

/// A view of a training split whose augmentation cycles through a fixed pool of draws:
/// epoch `e` (from 1) uses draw `(e - 1) mod draws`. Evaluation (epoch 0) is unchanged.
pub struct DrawPool<'a> {
    inner: &'a dyn BatchSource,
    draws: usize,
}

impl<'a> DrawPool<'a> {
    /// Wraps `inner`; `draws` must be at least 1 (and is 1 for data without augmentation).
    pub fn new(inner: &'a dyn BatchSource, draws: usize) -> Result<Self> {
        if draws == 0 {
            return Err(KdError::InvalidConfig("a teacher cache needs at least one augmentation draw per sample".into()));
        }
        let draws = if inner.augmented() { draws } else { 1 };
        Ok(DrawPool { inner, draws })
    }

    /// The number of draws per sample.
    pub fn draws(&self) -> usize {
        self.draws
    }

    fn pool_epoch(&self, epoch: usize) -> usize {
        if epoch == 0 { 0 } else { 1 + (epoch - 1) % self.draws }
    }
}

impl BatchSource for DrawPool<'_> {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn input_shape(&self) -> [usize; 3] {
        self.inner.input_shape()
    }
    fn label(&self, index: usize) -> usize {
        self.inner.label(index)
    }
    fn augmented(&self) -> bool {
        self.inner.augmented()
    }
    fn batch(&self, indices: &[usize], epoch: usize, view: u64, device: &Device) -> Result<Batch> {
        self.inner.batch(indices, self.pool_epoch(epoch), view, device)
    }
    fn fingerprint(&self) -> u64 {
        hash_key(&[self.inner.fingerprint(), self.draws as u64])
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct CacheKey {
    teacher: u64,
    data: u64,
    draws: usize,
    samples: usize,
    classes: usize,
    content: CacheContent,
}

/// Teacher outputs read from a cache file.
#[derive(Debug, Clone)]
pub struct TeacherCache {
    name: String,
    key: CacheKey,
    /// `(sample index, batch view key)` -> row in `values`.
    rows: HashMap<(usize, u64), usize>,
    /// Per row: `classes` logits, or `k` (index, probability) pairs.
    values: Vec<f32>,
    indices: Vec<u32>,
    device: Device,
    path: PathBuf,
}

/// A key of a module's weights: every float parameter's and running statistic's value, in the
/// module's traversal order (the architecture is in the cache's file name). Not the record's
/// bytes: those carry each parameter's id, which can differ between processes for the same
/// weights (a file without ids, such as safetensors, draws them anew), and did for the CIFAR-10
/// suite's teacher: every run rebuilt its cache.
fn weights_key<M: Module>(module: &M) -> u64 {
    let bits: Vec<u64> = crate::train::parameter_values(module).iter().map(|v| u64::from(v.to_bits())).collect();
    hash_key(&bits)
}

impl TeacherCache {
    /// Opens the cache at `path` if it matches `teacher` and `data`, or builds it with one pass
    /// of the teacher (written atomically; a stale or unreadable file is rebuilt, and the
    /// reason printed).
    pub fn open_or_build<M: Classifier>(
        path: &Path,
        teacher: &FrozenTeacher<M>,
        data: &DrawPool<'_>,
        content: CacheContent,
        batch_size: usize,
        device: &Device,
        progress: bool,
    ) -> Result<Self> {
        let key = CacheKey {
            teacher: weights_key(teacher.model()),
            data: data.fingerprint(),
            draws: data.draws(),
            samples: data.len(),
            classes: data.num_classes(),
            content,
        };
        if let TeacherCacheContentCheck::Bad(reason) = check_content(content, key.classes) {
            return Err(KdError::InvalidConfig(reason));
        }
        // A complete file (renamed into place whole) is read without a lock.
        if path.exists()
            && let Ok(cache) = Self::load(path, &key, device)
        {
            return Ok(cache);
        }
        // One writer per cache file: a second process building it fails at once naming the holder.
        let _lock = crate::lock::FolderLock::for_file(path, "teacher cache")?;
        if path.exists() {
            match Self::load(path, &key, device) {
                Ok(cache) => return Ok(cache),
                Err(e) => eprintln!("rebuilding teacher cache {}: {e}", path.display()),
            }
        }
        Self::build(path, teacher, data, key, batch_size.max(1), device, progress)
    }

    fn build<M: Classifier>(
        path: &Path,
        teacher: &FrozenTeacher<M>,
        data: &DrawPool<'_>,
        key: CacheKey,
        batch_size: usize,
        device: &Device,
        progress: bool,
    ) -> Result<Self> {
        let n = data.len();
        let bar = if progress { ProgressBar::new((n * key.draws) as u64) } else { ProgressBar::hidden() };
        bar.set_message(format!("teacher cache for {}", data.name()));
        let mut rows = HashMap::with_capacity(n * key.draws);
        let mut values = Vec::new();
        let mut indices = Vec::new();
        let all: Vec<usize> = (0..n).collect();
        for draw in 0..key.draws {
            for chunk in all.chunks(batch_size) {
                let batch = data.batch(chunk, draw + 1, 0, device)?;
                let out = teacher
                    .outputs(&batch, TeacherNeed::Logits)?
                    .ok_or_else(|| KdError::Missing { method: "teacher cache".into(), what: "teacher outputs".into() })?;
                let logits = to_host(out.logits)?;
                if logits.iter().any(|v| !v.is_finite()) {
                    return Err(KdError::NonFinite { what: "teacher logits while building the cache".into() });
                }
                for (pos, (&index, &view)) in batch.indices.iter().zip(&batch.views).enumerate() {
                    rows.insert((index, view), rows.len());
                    let row = &logits[pos * key.classes..(pos + 1) * key.classes];
                    match key.content {
                        CacheContent::FullLogits => values.extend_from_slice(row),
                        CacheContent::TopK { k } => {
                            let (idx, probs) = top_k_probabilities(row, k);
                            indices.extend(idx);
                            values.extend(probs);
                        }
                    }
                }
                bar.inc(chunk.len() as u64);
            }
        }
        bar.finish_and_clear();
        let mut keys: Vec<(usize, u64, usize)> = rows.iter().map(|(&(i, v), &r)| (i, v, r)).collect();
        keys.sort_by_key(|&(_, _, r)| r);
        let ckpt = Checkpoint {
            meta: serde_json::json!({ "key": key, "teacher": teacher.describe() }),
            sections: vec![
                ("rows".into(), keys.iter().flat_map(|&(i, v, _)| (i as u64).to_le_bytes().into_iter().chain(v.to_le_bytes())).collect()),
                ("values".into(), values.iter().flat_map(|v| v.to_le_bytes()).collect()),
                ("indices".into(), indices.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ],
        };
        ckpt.save(path)?;
        Ok(TeacherCache {
            name: format!("cache of {}", teacher.describe()),
            key,
            rows,
            values,
            indices,
            device: device.clone(),
            path: path.into(),
        })
    }

    fn load(path: &Path, key: &CacheKey, device: &Device) -> Result<Self> {
        let bytes = crate::files::read_regular(path)?;
        let malformed = |reason: String| KdError::Malformed { path: path.into(), reason };
        let parsed = parse_cache(&bytes).map_err(malformed)?;
        if &parsed.key != key {
            let what = if parsed.key.teacher != key.teacher {
                "another teacher (different weights)"
            } else if parsed.key.data != key.data || parsed.key.samples != key.samples {
                "other data or preprocessing"
            } else {
                "other cache settings"
            };
            return Err(KdError::InvalidConfig(format!("the cache was built for {what}")));
        }
        Ok(TeacherCache {
            name: format!("cache of {}", parsed.teacher),
            key: parsed.key,
            rows: parsed.rows,
            values: parsed.values,
            indices: parsed.indices,
            device: device.clone(),
            path: path.into(),
        })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the stored outputs in bytes.
    pub fn stored_bytes(&self) -> usize {
        self.values.len() * 4 + self.indices.len() * 4 + self.rows.len() * 16
    }

    /// Whether outputs are exact logits (not top-k).
    pub fn exact(&self) -> bool {
        self.key.content == CacheContent::FullLogits
    }
}

/// The parts of a cache file.
struct ParsedCache {
    key: CacheKey,
    teacher: String,
    rows: HashMap<(usize, u64), usize>,
    values: Vec<f32>,
    indices: Vec<u32>,
}

/// Checks the bytes of a teacher-cache file as opening it does (its checksum, key, row table,
/// values and indices), whatever teacher it was built for. For tools and the fuzzers.
pub fn check_cache_bytes(bytes: &[u8]) -> std::result::Result<(), String> {
    parse_cache(bytes).map(|_| ())
}

fn parse_cache(bytes: &[u8]) -> std::result::Result<ParsedCache, String> {
    let ckpt = Checkpoint::from_bytes(bytes)?;
    let key: CacheKey = serde_json::from_value(ckpt.meta["key"].clone()).map_err(|e| format!("cache key: {e}"))?;
    if let TeacherCacheContentCheck::Bad(reason) = check_content(key.content, key.classes) {
        return Err(reason);
    }
    let section = |name: &str| ckpt.section(name).map_err(|e| e.to_string());
    let (raw_rows, raw_values, raw_indices) = (section("rows")?, section("values")?, section("indices")?);
    let per = match key.content {
        CacheContent::FullLogits => key.classes,
        CacheContent::TopK { k } => k,
    };
    let expected_rows = key.samples.checked_mul(key.draws).ok_or("the key's sample and draw counts overflow")?;
    let sizes_ok = raw_rows.len() % 16 == 0
        && raw_rows.len() / 16 == expected_rows
        && Some(raw_values.len()) == expected_rows.checked_mul(per).and_then(|n| n.checked_mul(4))
        && raw_indices.len() == if matches!(key.content, CacheContent::TopK { .. }) { raw_values.len() } else { 0 };
    if !sizes_ok {
        return Err(format!(
            "sections of {} / {} / {} bytes do not hold {expected_rows} rows of {per} values (samples x draws of the key)",
            raw_rows.len(),
            raw_values.len(),
            raw_indices.len()
        ));
    }
    let mut rows = HashMap::with_capacity(expected_rows);
    for (r, chunk) in raw_rows.chunks_exact(16).enumerate() {
        let (i, v) = chunk.split_at(8);
        let i = u64::from_le_bytes(i.try_into().map_err(|_| "row table")?);
        let v = u64::from_le_bytes(v.try_into().map_err(|_| "row table")?);
        if i >= key.samples as u64 {
            return Err(format!("row {r} names sample {i}, but the cache holds {} samples", key.samples));
        }
        if rows.insert((i as usize, v), r).is_some() {
            return Err(format!("row {r} repeats sample {i}, draw key {v}"));
        }
    }
    let values: Vec<f32> = raw_values.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!("value {pos} is not finite"));
    }
    let indices: Vec<u32> = raw_indices.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if let Some(pos) = indices.iter().position(|&c| c as usize >= key.classes) {
        return Err(format!("top-k index {pos} names class {}, out of range 0..{}", indices[pos], key.classes));
    }
    let teacher = ckpt.meta["teacher"].as_str().unwrap_or("teacher").to_string();
    Ok(ParsedCache { key, teacher, rows, values, indices })
}

enum TeacherCacheContentCheck {
    Ok,
    Bad(String),
}

fn check_content(content: CacheContent, classes: usize) -> TeacherCacheContentCheck {
    match content {
        CacheContent::TopK { k } if k == 0 || k >= classes => {
            TeacherCacheContentCheck::Bad(format!("top-k cache needs 0 < k < classes ({classes}), got k = {k}"))
        }
        _ => TeacherCacheContentCheck::Ok,
    }
}

/// Top-k indices and softmax probabilities (temperature 1) of one row of logits.
fn top_k_probabilities(logits: &[f32], k: usize) -> (Vec<u32>, Vec<f32>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&z| ((z - max) as f64).exp()).collect();
    let total: f64 = exp.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
    order.truncate(k);
    (order.iter().map(|&i| i as u32).collect(), order.iter().map(|&i| (exp[i] / total) as f32).collect())
}

fn to_host(t: Tensor<2>) -> Result<Vec<f32>> {
    t.without_autodiff().into_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| KdError::Record(format!("{e:?}")))
}

impl Teacher for TeacherCache {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.key.classes)
    }

    fn top_k(&self) -> Option<usize> {
        match self.key.content {
            CacheContent::FullLogits => None,
            CacheContent::TopK { k } => Some(k),
        }
    }

    fn outputs(&self, batch: &Batch, need: TeacherNeed) -> Result<Option<ModelOutput>> {
        match need {
            TeacherNeed::Nothing => return Ok(None),
            TeacherNeed::LogitsAndFeatures | TeacherNeed::PreActivation => {
                return Err(KdError::Missing {
                    method: "this distiller (it reads the teacher's features)".into(),
                    what: "a live teacher: the teacher cache stores logits only; run without the cache".into(),
                });
            }
            TeacherNeed::Logits => {}
        }
        let c = self.key.classes;
        let mut out = Vec::with_capacity(batch.len() * c);
        for (&index, &view) in batch.indices.iter().zip(&batch.views) {
            let row = *self.rows.get(&(index, view)).ok_or_else(|| KdError::Missing {
                method: "teacher cache".into(),
                what: format!("an entry for sample {index} (draw {view:#x}): the batch does not come from the cached draw pool"),
            })?;
            match self.key.content {
                CacheContent::FullLogits => out.extend_from_slice(&self.values[row * c..(row + 1) * c]),
                CacheContent::TopK { k } => {
                    // Marginal smoothing: the classes outside the top-k share the rest equally;
                    // log-probabilities serve as logits (softmax of them gives the target back).
                    let probs = &self.values[row * k..(row + 1) * k];
                    let idx = &self.indices[row * k..(row + 1) * k];
                    let rest = ((1.0 - probs.iter().sum::<f32>()) / (c - k) as f32).max(1e-12);
                    let start = out.len();
                    out.extend(std::iter::repeat_n(rest.ln(), c));
                    for (&i, &p) in idx.iter().zip(probs) {
                        out[start + i as usize] = p.max(1e-12).ln();
                    }
                }
            }
        }
        let logits = Tensor::<2>::from_data(TensorData::new(out, [batch.len(), c]), &self.device);
        Ok(Some(ModelOutput::logits_only(logits)))
    }
}
