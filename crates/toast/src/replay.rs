//! Stage 2's state: the previous step's "under-trained" samples and their detached logits.
//!
//! After each step the distiller keeps the rows with the highest per-sample score
//! ([`select_hardest`]), as many as the next step may replay. The next step re-draws those
//! samples with a new augmentation view ([`ReplayBuffer::draw`]) and distils them toward
//! `softmax(z_prev / T)` of the stored logits. The buffer persists across epoch boundaries.

use burn::tensor::Device;
use kd_core::{Batch, BatchSource, KdError, Result};

use kd_core::state::{StateReader as Reader, put_f32s, put_u64, put_usize};

/// One sample kept for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayEntry {
    /// Dataset index.
    pub index: usize,
    /// The augmentation view the sample had in the step that kept it; the replay draws view
    /// `view + 1`, so a sample replayed again and again never sees the same draw twice.
    pub view: u64,
    /// Its score in that step (higher: more under-trained).
    pub score: f64,
    /// Its logits in that step (computed before that step's update), detached, `classes` long.
    pub logits: Vec<f32>,
}

/// The samples the next step replays, hardest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayBuffer {
    /// The epoch of the step that kept them (the replay re-draws them as that epoch did).
    pub epoch: usize,
    /// Width of the stored logits.
    pub classes: usize,
    /// The kept samples, highest score first.
    pub entries: Vec<ReplayEntry>,
}

const REPLAY_MAGIC: &[u8; 8] = b"KDTOARB1";

/// The rows `first..scores.len()` of a step ranked by score, highest first (the lower row on
/// ties), cut to at most `k`: the positions of the `k` most under-trained candidates.
pub fn select_hardest(scores: &[f64], first: usize, k: usize) -> Vec<usize> {
    let mut rows: Vec<usize> = (first.min(scores.len())..scores.len()).collect();
    // total_cmp: a deterministic order even for NaN (which the trainer rejects right after).
    rows.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    rows.truncate(k);
    rows
}

impl ReplayBuffer {
    /// Number of stored samples.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Re-draws the `count` hardest samples (all when fewer are stored) from `data`, each with
    /// the view after the one it had, as [`ReplayBuffer::epoch`] drew them. Returns the batch
    /// and the entries in its row order (samples are fetched grouped by view).
    pub fn draw(&self, count: usize, data: &dyn BatchSource, device: &Device) -> Result<(Batch, Vec<ReplayEntry>)> {
        let mut chosen: Vec<&ReplayEntry> = self.entries.iter().take(count).collect();
        if chosen.is_empty() {
            return Err(KdError::InvalidConfig("TOAST: nothing to replay".into()));
        }
        // One source call per view; a stable sort keeps the hardness order within a view.
        chosen.sort_by_key(|e| e.view);
        let mut batch: Option<Batch> = None;
        let mut start = 0;
        while start < chosen.len() {
            let view = chosen[start].view;
            let end = start + chosen[start..].iter().take_while(|e| e.view == view).count();
            let indices: Vec<usize> = chosen[start..end].iter().map(|e| e.index).collect();
            let part = data.batch(&indices, self.epoch, view.wrapping_add(1), device)?;
            if part.len() != indices.len() {
                return Err(KdError::ShapeMismatch {
                    what: format!("TOAST replayed samples from {}", data.name()),
                    expected: vec![indices.len()],
                    actual: vec![part.len()],
                });
            }
            if part.indices != indices {
                return Err(KdError::InvalidConfig(format!("TOAST: {} returned other samples than the replay asked for", data.name())));
            }
            batch = Some(match batch {
                None => part,
                Some(b) => Batch::concat(b, part),
            });
            start = end;
        }
        let batch = batch.ok_or_else(|| KdError::InvalidConfig("TOAST: nothing to replay".into()))?;
        Ok((batch, chosen.into_iter().cloned().collect()))
    }

    /// Exact encoding: magic, epoch, classes, count, then per entry index, view, score bits
    /// and logits (floats bit for bit).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = REPLAY_MAGIC.to_vec();
        put_usize(&mut out, self.epoch);
        put_usize(&mut out, self.classes);
        put_usize(&mut out, self.entries.len());
        for e in &self.entries {
            put_usize(&mut out, e.index);
            put_u64(&mut out, e.view);
            put_u64(&mut out, e.score.to_bits());
            put_f32s(&mut out, &e.logits);
        }
        out
    }

    /// Decodes what [`ReplayBuffer::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "replay buffer");
        r.magic(REPLAY_MAGIC)?;
        let epoch = r.usize()?;
        let classes = r.usize()?;
        let row_bytes = classes.checked_mul(4).ok_or_else(|| r.error(format!("{classes} classes is not plausible")))?;
        let count = r.count(24usize.saturating_add(row_bytes))?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let index = r.usize()?;
            let view = r.u64()?;
            let score = f64::from_bits(r.u64()?);
            let logits = r.f32s(classes)?;
            entries.push(ReplayEntry { index, view, score, logits });
        }
        r.finish()?;
        Ok(ReplayBuffer { epoch, classes, entries })
    }
}
