//! The files a training run writes beside its checkpoints, as types: `run.json` (what the run
//! is) and the metadata of `last.ckpt` and `best.ckpt` (where it stands). Both are written and
//! read through these types only, so a field cannot be renamed on one side alone.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, write_atomic};
use crate::error::{KdError, Result};
use crate::record::EpochRecord;
use crate::train::TrainConfig;

/// What a run is: `run.json` in its checkpoint folder, repeated in every checkpoint so that
/// resuming under another method, recipe or configuration is refused with the difference named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// The method's name.
    pub method: String,
    /// The training recipe.
    pub recipe: TrainConfig,
    /// The caller's whole configuration (data, models, method configuration...), or null.
    pub experiment: serde_json::Value,
}

impl RunIdentity {
    /// The file name in a checkpoint folder.
    pub const FILE: &'static str = "run.json";

    /// Writes `run.json` into `dir`, atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| KdError::Record(format!("run identity: {e}")))?;
        write_atomic(&dir.join(Self::FILE), &bytes)
    }

    /// Reads `run.json` from `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(Self::FILE);
        let text = crate::files::read_regular_text(&path)?;
        serde_json::from_str(&text).map_err(|e| KdError::Malformed { path, reason: e.to_string() })
    }
}

/// The metadata of a trainer checkpoint (`last.ckpt`, `best.ckpt`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The method's name.
    pub method: String,
    /// The training recipe.
    pub config: TrainConfig,
    /// The run the checkpoint belongs to (absent in checkpoints of the first format, which
    /// identified a run by method and recipe alone).
    #[serde(default)]
    pub run: Option<RunIdentity>,
    /// One record per epoch trained so far.
    pub history: Vec<EpochRecord>,
    /// The best epoch so far and its selection score.
    pub best: Option<(usize, f64)>,
    /// The loss of the very first step (the divergence check's reference).
    pub initial_loss: Option<f64>,
    /// The last epoch trained.
    pub epoch: usize,
}

impl CheckpointMeta {
    /// The metadata of `ckpt`, read from `path` (named in errors).
    pub fn of(ckpt: &Checkpoint, path: &Path) -> Result<Self> {
        serde_json::from_value(ckpt.meta.clone()).map_err(|e| KdError::Malformed { path: path.into(), reason: format!("metadata: {e}") })
    }

    /// As a checkpoint's JSON metadata.
    pub fn to_value(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| KdError::Record(format!("checkpoint metadata: {e}")))
    }

    /// The run this checkpoint belongs to; for the first format, its method and recipe.
    pub fn run_identity(&self) -> RunIdentity {
        self.run.clone().unwrap_or_else(|| RunIdentity {
            method: self.method.clone(),
            recipe: self.config.clone(),
            experiment: serde_json::Value::Null,
        })
    }
}

/// What a trainer's `last.ckpt` says about the run it interrupted, typed: for callers that
/// resume around the trainer (a chain restores its stopping rule's state before the stage
/// continues).
#[derive(Debug, Clone)]
pub struct SavedRun {
    /// The method's name.
    pub method: String,
    /// The epochs trained so far.
    pub history: Vec<EpochRecord>,
    /// The method's state (`Distiller::save_state`).
    pub distiller_state: Vec<u8>,
    /// The state of what trained beside the student (`SideModels::save_state`; empty when the
    /// checkpoint predates side models).
    pub side_state: Vec<u8>,
}

impl SavedRun {
    /// Reads a `last.ckpt` written by [`crate::Trainer::fit`].
    pub fn read(path: &Path) -> Result<Self> {
        let ckpt = Checkpoint::load(path)?;
        let meta = CheckpointMeta::of(&ckpt, path)?;
        Ok(SavedRun {
            method: meta.method,
            history: meta.history,
            distiller_state: ckpt.section("distiller")?.to_vec(),
            side_state: ckpt.optional_section("side_models").unwrap_or_default().to_vec(),
        })
    }
}
