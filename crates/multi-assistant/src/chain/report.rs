//! What a chain run did: per stage and for the whole chain.

use std::path::PathBuf;

use kd_models::AnyModel;
use serde::{Deserialize, Serialize};

use super::plan::ChainMode;

use crate::stopping::StoppingReport;

/// The place of a model in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageRole {
    /// Stage 0.
    Teacher,
    /// Between the teacher and the student.
    Assistant,
    /// The last stage.
    Student,
}

/// What one stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Position in the chain (0: teacher).
    pub index: usize,
    /// Teacher, assistant or student.
    pub role: StageRole,
    /// The network.
    pub model: String,
    /// Its scale in the family.
    pub scale: usize,
    /// The method that trained it (`ce`, `takd`, `dgkd`, with `+stop` under dynamic stopping;
    /// `loaded` for a teacher given as a checkpoint).
    pub method: String,
    /// The models it distilled from.
    pub teachers: Vec<String>,
    /// Its checkpoint folder.
    pub dir: Option<PathBuf>,
    /// Epochs of its fixed schedule.
    pub planned_epochs: usize,
    /// Epochs trained (across resumes).
    pub epochs: usize,
    /// Epochs trained by this call.
    pub epochs_this_run: usize,
    /// The epoch selected as best (on the validation split when there is one).
    pub best_epoch: usize,
    /// Test top-1 at the selected epoch (percent).
    pub selected_acc: f64,
    /// Highest test top-1 over the epochs.
    pub best_acc: f64,
    /// Test top-1 of the last epoch.
    pub last_acc: f64,
    /// Validation top-1 at the selected epoch.
    pub selected_valid_acc: Option<f64>,
    /// Wall time of the training steps (across resumes), seconds.
    pub train_seconds: f64,
    /// Whether it was loaded from a finished stage's checkpoint rather than trained now.
    pub loaded: bool,
    /// Whether it finished (its schedule, or a dynamic stop).
    pub complete: bool,
    /// What dynamic stopping did.
    pub stopping: Option<StoppingReport>,
}

impl StageReport {
    /// The accuracy that steers decisions: validation top-1 at the selected epoch when there
    /// is a validation split, test top-1 otherwise.
    pub fn decision_acc(&self) -> f64 {
        self.selected_valid_acc.unwrap_or(self.selected_acc)
    }
}

/// What a chain run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainReport {
    /// The family's name.
    pub family: String,
    /// TAKD or DGKD.
    pub mode: ChainMode,
    /// The networks, teacher first.
    pub chain: Vec<String>,
    /// Their scales.
    pub scales: Vec<usize>,
    /// One report per stage that trained at least one epoch or was loaded.
    pub stages: Vec<StageReport>,
    /// Whether every stage finished (false when `stop_after_epochs` cut the run short).
    pub finished: bool,
    /// Epochs trained over all stages (across resumes).
    pub total_epochs: usize,
    /// Epochs of the fixed schedule over all stages.
    pub planned_epochs: usize,
    /// Epochs trained by this call.
    pub epochs_this_run: usize,
    /// Wall time of this call, seconds.
    pub wall_seconds: f64,
    /// Wall time of all training steps (across resumes), seconds.
    pub train_seconds: f64,
}

impl ChainReport {
    /// The student's stage, once it has finished.
    pub fn student(&self) -> Option<&StageReport> {
        self.stages.last().filter(|s| s.role == StageRole::Student && s.complete)
    }

    /// Epochs saved by dynamic stopping over all stages.
    pub fn epochs_saved(&self) -> usize {
        self.stages.iter().filter_map(|s| s.stopping.as_ref()).map(|s| s.epochs_saved).sum()
    }

    /// One line for logs: the chain, the student's accuracy and the epochs.
    pub fn summary_line(&self) -> String {
        let student =
            self.student().map_or("unfinished".to_string(), |s| format!("student {:.2}% (best {:.2}%)", s.selected_acc, s.best_acc));
        format!(
            "{} {}: {student}; {} of {} epochs ({} saved), {:.1}s",
            self.mode.name(),
            self.chain.join(" > "),
            self.total_epochs,
            self.planned_epochs,
            self.epochs_saved(),
            self.wall_seconds
        )
    }
}

/// A chain run with its trained networks.
#[derive(Debug)]
pub struct ChainRun {
    /// The report.
    pub report: ChainReport,
    /// The networks of the finished stages, teacher first, with the weights that taught the
    /// next stage (for the student: the same choice), on `device.autodiff()`.
    pub models: Vec<AnyModel>,
}
