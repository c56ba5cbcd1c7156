//! Replay of earlier samples with their past predictions: the mechanism DLB and TOAST share.
//!
//! After a step a method keeps some of its samples (DLB: every fresh one; TOAST: the highest
//! per-sample loss, [`select_hardest`]) with the logits that step computed on them, detached.
//! The next step re-draws those samples with another augmentation view
//! ([`ReplayBuffer::draw`], from the method's `Distiller::prepare_batch`) and distils them
//! toward the stored logits. The buffer persists across epoch boundaries and has one exact
//! encoding for checkpoints.

use burn::tensor::Device;

use crate::data::{Batch, BatchSource};
use crate::error::{KdError, Result};
use crate::state::{StateReader as Reader, put_f32s, put_u64, put_usize};

/// One sample kept for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayEntry {
    /// Dataset index.
    pub index: usize,
    /// The augmentation view the sample had in the step that kept it.
    pub view: u64,
    /// Its score in that step (higher: more under-trained; 0 where the method ranks nothing).
    pub score: f64,
    /// Its logits in that step (computed before that step's update), detached, `classes` long.
    pub logits: Vec<f32>,
}

/// The samples the next step replays, in the order they were kept (hardest first, for a method
/// that ranks them).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayBuffer {
    /// The epoch of the step that kept them (the replay re-draws them as that epoch did).
    pub epoch: usize,
    /// Width of the stored logits.
    pub classes: usize,
    /// The kept samples, highest score first.
    pub entries: Vec<ReplayEntry>,
}

const REPLAY_MAGIC: &[u8; 8] = b"KDREPLY1";

/// Which augmentation view a replayed sample is drawn with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayView {
    /// The same view for every replayed sample (DLB's second loader view).
    Fixed(u64),
    /// The view after the one the sample had when it was kept (TOAST), so a sample replayed
    /// again and again never sees the same draw twice.
    Next,
}

impl ReplayView {
    fn of(self, entry: &ReplayEntry) -> u64 {
        match self {
            ReplayView::Fixed(v) => v,
            ReplayView::Next => entry.view.wrapping_add(1),
        }
    }
}

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

    /// Re-draws the first `count` samples (all when fewer are stored) from `data`, as
    /// [`ReplayBuffer::epoch`] drew them but with the view `view` gives. Returns the batch with
    /// the entries in its row order in [`Batch::replayed`] (samples are fetched grouped by view,
    /// in kept order within a view). `method` names the caller in errors.
    pub fn draw(&self, method: &str, count: usize, view: ReplayView, data: &dyn BatchSource, device: &Device) -> Result<Batch> {
        let mut chosen: Vec<&ReplayEntry> = self.entries.iter().take(count).collect();
        if chosen.is_empty() {
            return Err(KdError::InvalidConfig(format!("{method}: nothing to replay")));
        }
        // One source call per view; a stable sort keeps the kept order within a view.
        chosen.sort_by_key(|e| view.of(e));
        let mut batch: Option<Batch> = None;
        let mut start = 0;
        while start < chosen.len() {
            let v = view.of(chosen[start]);
            let end = start + chosen[start..].iter().take_while(|e| view.of(e) == v).count();
            let indices: Vec<usize> = chosen[start..end].iter().map(|e| e.index).collect();
            let part = data.batch(&indices, self.epoch, v, device)?;
            if part.len() != indices.len() {
                return Err(KdError::ShapeMismatch {
                    what: format!("{method} replayed samples from {}", data.name()),
                    expected: vec![indices.len()],
                    actual: vec![part.len()],
                });
            }
            if part.indices != indices {
                return Err(KdError::InvalidConfig(format!("{method}: {} returned other samples than the replay asked for", data.name())));
            }
            batch = Some(match batch {
                None => part,
                Some(b) => Batch::concat(b, part),
            });
            start = end;
        }
        let mut batch = batch.ok_or_else(|| KdError::InvalidConfig(format!("{method}: nothing to replay")))?;
        batch.replayed = chosen.into_iter().cloned().collect();
        Ok(batch)
    }

    /// The stored logits of `entries` as one row-major `[entries.len(), classes]` block.
    pub fn logits_of(&self, entries: &[ReplayEntry]) -> Vec<f32> {
        entries.iter().flat_map(|e| e.logits.iter().copied()).collect()
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
