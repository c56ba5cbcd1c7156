//! What a chain is: its models (scales of a family), how each stage distils, and the recipes.

use std::path::PathBuf;

use kd_core::{KdError, Result, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::family::ModelFamily;
use crate::multi_teacher::{DropPolicy, StageLoss};
use crate::stopping::StoppingConfig;

/// Which earlier models a stage distils from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChainMode {
    /// TAKD (Mirzadeh et al., AAAI 2020): the previous model only.
    #[default]
    Takd,
    /// DGKD (Son et al., ICCV 2021): every previous model, teacher included.
    Dgkd,
}

impl ChainMode {
    /// `takd` or `dgkd`.
    pub fn name(self) -> &'static str {
        match self {
            ChainMode::Takd => "takd",
            ChainMode::Dgkd => "dgkd",
        }
    }
}

/// Stochastic DGKD. Default: the DGKD code, `drop_num = 1` teacher term dropped per batch, in
/// the student's stage only (the code covers that stage only; the paper applies its Bernoulli
/// drops to the final student too).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DropConfig {
    /// How teacher terms are dropped ([`DropPolicy::KeepAll`]: deterministic DGKD).
    pub policy: DropPolicy,
    /// Drop only in the final student's stage; assistants keep all their teachers.
    pub student_only: bool,
}

impl Default for DropConfig {
    fn default() -> Self {
        DropConfig { policy: DropPolicy::Fixed { count: 1 }, student_only: true }
    }
}

/// Which weights of a finished stage teach the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TeacherWeights {
    /// The best epoch's (the TAKD code). Needs a checkpoint folder: without one, the last.
    #[default]
    Best,
    /// The last epoch's.
    Last,
}

/// A chain to train: its models (as scales of a family), the method and the recipes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainPlan {
    /// The pool of networks.
    pub family: ModelFamily,
    /// Scale of the teacher.
    pub teacher: usize,
    /// Scales of the assistants, largest first.
    #[serde(default)]
    pub assistants: Vec<usize>,
    /// Scale of the student.
    pub student: usize,
    /// TAKD or DGKD.
    #[serde(default)]
    pub mode: ChainMode,
    /// Loss of the distillation stages (and of the KD control).
    #[serde(default)]
    pub loss: StageLoss,
    /// Stochastic dropping of teacher terms (DGKD only).
    #[serde(default)]
    pub drop: DropConfig,
    /// Recipe of the teacher (stage 0, cross-entropy).
    pub teacher_train: TrainConfig,
    /// Recipe of every distillation stage.
    pub stage_train: TrainConfig,
    /// Dynamic stopping of the distillation stages (none: fixed schedules).
    #[serde(default)]
    pub stopping: Option<StoppingConfig>,
    /// Which weights of a stage teach the next.
    #[serde(default)]
    pub teacher_weights: TeacherWeights,
    /// A trained teacher to load instead of training stage 0: a checkpoint file whose `model`
    /// section holds the network (a trainer's `best.ckpt`, a chain's `model.ckpt`).
    #[serde(default)]
    pub teacher_checkpoint: Option<PathBuf>,
}

impl ChainPlan {
    /// A TAKD chain from `teacher` to `student` with no assistant, every stage trained with
    /// `train`, and the defaults of every other choice.
    pub fn new(family: ModelFamily, teacher: usize, student: usize, train: TrainConfig) -> Self {
        ChainPlan {
            family,
            teacher,
            assistants: Vec::new(),
            student,
            mode: ChainMode::Takd,
            loss: StageLoss::default(),
            drop: DropConfig::default(),
            teacher_train: train.clone(),
            stage_train: train,
            stopping: None,
            teacher_weights: TeacherWeights::Best,
            teacher_checkpoint: None,
        }
    }

    /// The same plan with these assistants (largest first).
    pub fn with_assistants(mut self, assistants: Vec<usize>) -> Self {
        self.assistants = assistants;
        self
    }

    /// The same plan in another mode.
    pub fn with_mode(mut self, mode: ChainMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same plan with dynamic stopping.
    pub fn with_stopping(mut self, stopping: Option<StoppingConfig>) -> Self {
        self.stopping = stopping;
        self
    }

    /// Every scale of the chain, teacher first.
    pub fn scales(&self) -> Vec<usize> {
        let mut scales = vec![self.teacher];
        scales.extend(&self.assistants);
        scales.push(self.student);
        scales
    }

    /// The networks of the chain, teacher first.
    pub fn model_names(&self) -> Result<Vec<String>> {
        self.scales().into_iter().map(|s| self.family.model_name(s)).collect()
    }

    /// Epochs of the fixed schedule over all stages trained (the teacher's unless loaded).
    pub fn planned_epochs(&self) -> usize {
        let teacher = if self.teacher_checkpoint.is_some() { 0 } else { self.teacher_train.epochs };
        teacher + self.stage_train.epochs * (self.assistants.len() + 1)
    }

    /// Checks the plan: a valid family, every scale in it, strictly decreasing from the teacher
    /// to the student, valid recipes and losses.
    pub fn validate(&self) -> Result<()> {
        self.family.validate()?;
        let scales = self.scales();
        for &s in &scales {
            self.family.spec(s)?;
        }
        if let Some(w) = scales.windows(2).find(|w| w[0] <= w[1]) {
            return Err(KdError::InvalidConfig(format!(
                "a chain goes from larger to smaller models: scale {} comes before {} in {scales:?}",
                w[0], w[1]
            )));
        }
        self.teacher_train.validate()?;
        self.stage_train.validate()?;
        self.loss.validate()?;
        self.drop.policy.validate()?;
        if let Some(s) = &self.stopping {
            s.validate()?;
        }
        Ok(())
    }
}
