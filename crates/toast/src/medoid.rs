//! Stage 1's state: a per-class bank of the epoch's detached logits, and the class medoids
//! computed from it at every epoch's end.
//!
//! **Bank (a reservoir per class).** Every recorded sample gets a pseudo-random key, a hash of
//! `(seed, epoch, sample index, augmentation view)`. A class keeps the at most `K` entries of
//! highest rank, where the rank is `(correct, key)` with `prefer_correct` (correctly classified
//! samples first, the key deciding among equals) and `key` alone without it. The kept set is
//! therefore a uniform sample of the correct samples, topped up with a uniform sample of the
//! misclassified ones when fewer than `K` were correct; and it depends only on which samples
//! were recorded, not on their order, so it is reproducible and resumable.
//!
//! **Medoid.** For a class with recorded vectors `x_1..x_n`, the medoid is the `x_i` with the
//! least `sum_j ||x_i - x_j||_2`, over all pairs (exact, no sampling), computed on the device
//! from the differences themselves (not the `|x|^2 + |y|^2 - 2xy` expansion, which loses
//! precision for nearby vectors). Ties go to the entry of highest rank.

use burn::tensor::{Device, Tensor, TensorData};
use kd_core::rng::hash_key;
use kd_core::{KdError, Result};

use crate::loss::tempered_softmax_row;
use kd_core::state::{StateReader as Reader, put_f32s, put_u64, put_usize};

/// Salt of the bank's keys, so they never coincide with the shuffles' or augmentations' draws.
const KEY_SALT: u64 = 0x70A5_7BA4;

/// The reservoir key of a recorded sample: a hash of `(seed, epoch, index, view)`.
pub fn sample_key(seed: u64, epoch: usize, index: usize, view: u64) -> u64 {
    hash_key(&[seed, epoch as u64, index as u64, view, KEY_SALT])
}

/// One recorded logit vector.
#[derive(Debug, Clone, PartialEq)]
pub struct BankEntry {
    /// Whether the sample was classified correctly (argmax of the logits, lowest index on ties,
    /// equals the label).
    pub correct: bool,
    /// Its reservoir key ([`sample_key`]).
    pub key: u64,
    /// Dataset index of the sample.
    pub index: usize,
    /// Augmentation view it was drawn with.
    pub view: u64,
    /// The detached logits, `classes` long.
    pub logits: Vec<f32>,
}

impl BankEntry {
    /// The rank the reservoir keeps the highest of (index and view only break exact ties).
    fn rank(&self, prefer_correct: bool) -> (bool, u64, usize, u64) {
        (prefer_correct && self.correct, self.key, self.index, self.view)
    }
}

/// Sum over `j` of `||x_i - x_j||_2` for every row `i` of `points` (`[n, d]`), `[n]`.
///
/// Exact pairwise, in row chunks of at most `max_chunk_elements` elements of the `[rows, n, d]`
/// difference tensor (at least one row per chunk).
pub fn distance_sums(points: Tensor<2>, max_chunk_elements: usize) -> Tensor<1> {
    let [n, d] = points.dims();
    let device = points.device();
    if n == 0 {
        return Tensor::zeros([0], &device);
    }
    let rows_per_chunk = (max_chunk_elements / (n * d).max(1)).clamp(1, n);
    let all = points.clone().unsqueeze_dim::<3>(0);
    let mut parts = Vec::with_capacity(n.div_ceil(rows_per_chunk));
    let mut start = 0;
    while start < n {
        let len = rows_per_chunk.min(n - start);
        let rows = points.clone().narrow(0, start, len).unsqueeze_dim::<3>(1);
        let dist = (rows - all.clone()).square().sum_dim(2).sqrt();
        parts.push(dist.sum_dim(1).reshape([len]));
        start += len;
    }
    Tensor::cat(parts, 0)
}

/// The position of the medoid among the rows of `points` (`[n, d]`, n >= 1): the row with the
/// least [`distance_sums`]; the first such row on ties.
pub fn medoid_index(points: Tensor<2>, max_chunk_elements: usize) -> Result<usize> {
    let n = points.dims()[0];
    if n == 0 {
        return Err(KdError::InvalidConfig("a medoid needs at least one point".into()));
    }
    let sums = distance_sums(points, max_chunk_elements)
        .try_into_vec_as::<f64>()
        .map_err(|e| KdError::Record(format!("reading medoid distances: {e:?}")))?;
    let mut best = 0;
    for (i, &s) in sums.iter().enumerate() {
        if !s.is_finite() {
            return Err(KdError::NonFinite { what: "TOAST medoid distances (recorded logits)".into() });
        }
        if s < sums[best] {
            best = i;
        }
    }
    Ok(best)
}

/// Stage 1's state: this epoch's per-class reservoirs and the medoids of the last epoch that
/// recorded each class.
#[derive(Debug, Clone, PartialEq)]
pub struct MedoidBank {
    classes: usize,
    capacity: usize,
    prefer_correct: bool,
    entries: Vec<Vec<BankEntry>>,
    medoids: Vec<Option<Vec<f32>>>,
}

const BANK_MAGIC: &[u8; 8] = b"KDTOAMB1";

impl MedoidBank {
    /// An empty bank of at most `capacity` entries per class; the number of classes is fixed
    /// by the first call to [`MedoidBank::set_classes`].
    pub fn new(capacity: usize, prefer_correct: bool) -> Self {
        MedoidBank { classes: 0, capacity, prefer_correct, entries: Vec::new(), medoids: Vec::new() }
    }

    /// Fixes the number of classes (a no-op when it is already that); another number is an error.
    pub fn set_classes(&mut self, classes: usize) -> Result<()> {
        if self.classes == classes {
            return Ok(());
        }
        if self.classes != 0 {
            return Err(KdError::ShapeMismatch {
                what: "TOAST medoid bank (classes)".into(),
                expected: vec![self.classes],
                actual: vec![classes],
            });
        }
        if classes == 0 {
            return Err(KdError::InvalidConfig("TOAST needs at least one class".into()));
        }
        self.classes = classes;
        self.entries = vec![Vec::new(); classes];
        self.medoids = vec![None; classes];
        Ok(())
    }

    /// Number of classes (0 until fixed).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// At most this many entries per class (`K`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// This epoch's entries of `class` (unordered until the epoch ends).
    pub fn entries(&self, class: usize) -> &[BankEntry] {
        self.entries.get(class).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Number of entries recorded this epoch, over all classes.
    pub fn len(&self) -> usize {
        self.entries.iter().map(Vec::len).sum()
    }

    /// Whether nothing was recorded this epoch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The medoid logits of `class`, once an epoch has recorded it.
    pub fn medoid(&self, class: usize) -> Option<&[f32]> {
        self.medoids.get(class).and_then(|m| m.as_deref())
    }

    /// Number of classes that have a medoid.
    pub fn medoid_count(&self) -> usize {
        self.medoids.iter().filter(|m| m.is_some()).count()
    }

    /// Offers one sample of class `label` to the bank; it is kept if it ranks among the `K` best.
    pub fn record(&mut self, label: usize, entry: BankEntry) -> Result<()> {
        if label >= self.classes {
            return Err(KdError::LabelOutOfRange { label, sample: entry.index, num_classes: self.classes });
        }
        if entry.logits.len() != self.classes {
            return Err(KdError::ShapeMismatch {
                what: "TOAST bank entry".into(),
                expected: vec![self.classes],
                actual: vec![entry.logits.len()],
            });
        }
        let prefer = self.prefer_correct;
        let class = &mut self.entries[label];
        if class.len() < self.capacity {
            class.push(entry);
            return Ok(());
        }
        // Full: the new entry replaces the lowest-ranked one if it outranks it. A linear scan:
        // K is small and this runs once per recorded sample.
        let (lowest, _) = class
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.rank(prefer))
            .ok_or_else(|| KdError::InvalidConfig("TOAST bank_size must be at least 1".into()))?;
        if entry.rank(prefer) > class[lowest].rank(prefer) {
            class[lowest] = entry;
        }
        Ok(())
    }

    /// Ends the epoch: computes the medoid of every class that has entries (on `device`),
    /// keeps the previous medoid of the classes that have none, and empties the reservoirs.
    /// Returns the number of medoids updated.
    pub fn finish_epoch(&mut self, device: &Device, max_chunk_elements: usize) -> Result<usize> {
        let mut updated = 0;
        for class in 0..self.classes {
            let mut entries = std::mem::take(&mut self.entries[class]);
            if entries.is_empty() {
                continue;
            }
            // Highest rank first, so the result does not depend on arrival order.
            let prefer = self.prefer_correct;
            entries.sort_by_key(|e| std::cmp::Reverse(e.rank(prefer)));
            let flat: Vec<f32> = entries.iter().flat_map(|e| e.logits.iter().copied()).collect();
            let points = Tensor::<2>::from_data(TensorData::new(flat, [entries.len(), self.classes]), device);
            let best = medoid_index(points, max_chunk_elements)?;
            self.medoids[class] = Some(entries.swap_remove(best).logits);
            updated += 1;
        }
        Ok(updated)
    }

    /// The per-class soft distributions `Q`, `[classes, classes]` row-major: row `c` is
    /// `softmax(m_c / tau)` when class `c` has a medoid, `onehot(c)` otherwise (so that
    /// `(1 - eps) onehot(y) + eps Q[y]` is one-hot before the first medoids).
    pub fn class_distributions(&self, tau: f64) -> Vec<f32> {
        let c = self.classes;
        let mut out = vec![0.0f32; c * c];
        for (class, row) in out.chunks_mut(c.max(1)).enumerate().take(c) {
            match self.medoid(class) {
                Some(m) => row.copy_from_slice(&tempered_softmax_row(m, tau)),
                None => row[class] = 1.0,
            }
        }
        out
    }

    /// Exact encoding: magic, classes, the medoids (class, logits), then the entries (class,
    /// flag, key, index, view, logits); floats bit for bit.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = BANK_MAGIC.to_vec();
        put_usize(&mut out, self.classes);
        put_usize(&mut out, self.medoid_count());
        for (class, m) in self.medoids.iter().enumerate() {
            if let Some(m) = m {
                put_usize(&mut out, class);
                put_f32s(&mut out, m);
            }
        }
        put_usize(&mut out, self.len());
        for (class, entries) in self.entries.iter().enumerate() {
            for e in entries {
                put_usize(&mut out, class);
                out.push(u8::from(e.correct));
                put_u64(&mut out, e.key);
                put_usize(&mut out, e.index);
                put_u64(&mut out, e.view);
                put_f32s(&mut out, &e.logits);
            }
        }
        out
    }

    /// Decodes what [`MedoidBank::to_bytes`] wrote into a bank of the given capacity and
    /// preference (the configuration's); more entries in a class than `capacity` is an error.
    pub fn from_bytes(bytes: &[u8], capacity: usize, prefer_correct: bool) -> Result<Self> {
        let mut r = Reader::new(bytes, "medoid bank");
        r.magic(BANK_MAGIC)?;
        let classes = r.usize()?;
        let mut bank = MedoidBank::new(capacity, prefer_correct);
        if classes > 0 {
            if classes.checked_mul(classes).is_none_or(|n| n > isize::MAX as usize / 8) {
                return Err(r.error(format!("{classes} classes is not a plausible class count")));
            }
            bank.set_classes(classes)?;
        }
        let row_bytes = classes * 4;
        let medoids = r.count(8 + row_bytes)?;
        for _ in 0..medoids {
            let class = r.usize()?;
            if class >= classes || bank.medoids[class].is_some() {
                return Err(r.error(format!("medoid of class {class} is out of range or repeated")));
            }
            bank.medoids[class] = Some(r.f32s(classes)?);
        }
        let entries = r.count(33 + row_bytes)?;
        for _ in 0..entries {
            let class = r.usize()?;
            let correct = r.bool()?;
            let key = r.u64()?;
            let index = r.usize()?;
            let view = r.u64()?;
            let logits = r.f32s(classes)?;
            if class >= classes {
                return Err(r.error(format!("entry of class {class} is out of range")));
            }
            if bank.entries[class].len() >= capacity {
                return Err(r.error(format!("class {class} holds more entries than bank_size {capacity}")));
            }
            bank.entries[class].push(BankEntry { correct, key, index, view, logits });
        }
        r.finish()?;
        Ok(bank)
    }
}
