//! What an epoch of training records: its losses, and the evaluation of the model after it.
//!
//! Its own module, so that the training loop and the `SideModels` trait (whose `end_epoch`
//! reads a record) both depend on it and not on each other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::BinaryMetrics;
use crate::phases::StepPhases;

/// Evaluation of a model on a data split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Top-1 accuracy in percent.
    pub top1: f64,
    /// Top-5 accuracy in percent.
    pub top5: f64,
    /// Mean cross-entropy.
    pub ce_loss: f64,
    /// Number of samples.
    pub samples: usize,
    /// Binary metrics, for two-class tasks (positive class: 1).
    #[serde(default)]
    pub binary: Option<BinaryMetrics>,
    /// The accuracy of always predicting the split's most frequent class, percent.
    #[serde(default)]
    pub chance: f64,
    /// How many distinct classes the model predicted on the split (1: a collapsed model).
    #[serde(default)]
    pub predicted_classes: usize,
}

fn evaluated() -> bool {
    true
}

/// What one epoch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean of each named loss term over the epoch's steps.
    pub train_terms: BTreeMap<String, f64>,
    /// Mean total training loss.
    pub train_loss: f64,
    /// Training accuracy (on the augmented batches, as seen during the epoch), percent.
    pub train_acc: f64,
    /// Evaluation on the validation split, when there is one.
    pub valid: Option<EvalMetrics>,
    /// Evaluation on the test split (carried from an earlier epoch when `test_evaluated` is
    /// false).
    pub test: EvalMetrics,
    /// Whether this epoch evaluated the test split ([`crate::TestEvaluation`]); records written
    /// before the field existed evaluated every epoch.
    #[serde(default = "evaluated")]
    pub test_evaluated: bool,
    /// Wall time of the epoch's training steps, seconds.
    pub train_seconds: f64,
    /// Where the steps' time went, per step (only when [`RunOptions::time_phases`] was on).
    ///
    /// [`RunOptions::time_phases`]: crate::RunOptions::time_phases
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<StepPhases>,
}
