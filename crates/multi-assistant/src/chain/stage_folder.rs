//! The stage folders: where each stage of a chain keeps its checkpoints, named by a key of
//! everything the stage depends on, and what an earlier call left there.

use std::path::{Path, PathBuf};

use kd_core::rng::hash_key;
use kd_core::train::SavedRun;
use kd_core::{BatchSource, Distiller, KdError, Result};

use super::runner::ChainRunner;
use crate::stopping::ControlStudents;

/// What the stage folder records from an earlier call.
pub(super) struct PriorRun {
    pub(super) epochs: usize,
    pub(super) stopped: bool,
}

impl ChainRunner<'_> {
    /// A key of everything stage `k` depends on: the folder name carries it.
    pub(super) fn stage_key(&self, k: usize) -> Result<u64> {
        let p = self.plan;
        let mut key = serde_json::json!({
            "chain": &self.names[..=k],
            "data": self.data.train.fingerprint(),
            "input": self.input,
            "classes": self.classes,
            "teacher_train": p.teacher_train,
            "teacher_checkpoint": p.teacher_checkpoint,
        });
        if k > 0 {
            key["stages"] = serde_json::json!({
                "mode": p.mode,
                "loss": p.loss,
                "drop": p.drop,
                "train": p.stage_train,
                "stopping": p.stopping,
                "weights": p.teacher_weights,
                "last": k + 1 == self.names.len(),
            });
        }
        let text = serde_json::to_string(&key).map_err(|e| KdError::Record(e.to_string()))?;
        let words: Vec<u64> = text.as_bytes().chunks(8).map(|c| c.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64)).collect();
        Ok(hash_key(&words))
    }

    pub(super) fn stage_dir(&self, k: usize) -> Result<Option<PathBuf>> {
        let Some(root) = &self.options.checkpoint_dir else { return Ok(None) };
        let key = self.stage_key(k)? & 0xFFFF_FFFF_FFFF;
        Ok(Some(root.join(format!("stage{k}-{}-{key:012x}", sanitize(&self.names[k])))))
    }

    /// Reads what an earlier call left in the stage folder, and restores the method's state
    /// from it (so that a stage stopped by the rule is known to be finished).
    pub(super) fn prior_run<D: Distiller>(
        &self,
        dir: &Path,
        distiller: &mut D,
        controls: Option<&mut ControlStudents>,
    ) -> Result<Option<PriorRun>> {
        let last = dir.join("last.ckpt");
        if !self.options.resume || !last.exists() {
            return Ok(None);
        }
        let saved = SavedRun::read(&last)?;
        if saved.method != distiller.name() {
            // The trainer refuses this checkpoint with a clear message.
            return Ok(None);
        }
        distiller.load_state(&saved.distiller_state)?;
        let stopped = match controls {
            Some(c) => {
                c.restore_rule(&saved.side_state)?;
                c.stopped()
            }
            None => false,
        };
        Ok(Some(PriorRun { epochs: saved.history.len(), stopped }))
    }
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}
