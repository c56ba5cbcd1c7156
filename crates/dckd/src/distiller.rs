//! DCKD as a [`Distiller`], with its learnable parts ([`DckdAux`]).

use burn::module::Module;
use burn::tensor::Device;
use kd_baselines::fitnet::hint_loss;
use kd_baselines::rkd::rkd_loss;
use kd_baselines::{HintRegressor, RkdConfig};
use kd_core::loss::cross_entropy_mean;
use kd_core::model::feature_shape;
use kd_core::{AuxModule, Distiller, KdError, LossTerms, ModelOutput, Result, Step, TeacherNeed, require_teacher};

use crate::config::{Companion, DckdConfig, TargetMode};
use crate::loss::{DckdLogitParams, dckd_logit_terms};

/// DCKD alone.
pub const NAME: &str = "dckd";
/// The abstract's literal reading: DCKD without the non-target term (beta = 0).
pub const NAME_BETA0: &str = "dckd-beta0";
/// DCKD with FitNet's hint as its companion loss.
pub const NAME_FITNET: &str = "dckd+fitnet";
/// DCKD with RKD as its companion loss.
pub const NAME_RKD: &str = "dckd+rkd";
/// The control of DCKD+FitNet that differs from it in the decoupling alone: DKD's TCKD (the
/// target-class binary is the teacher's, `target_mode = teacher`) with the same NCKD, FitNet
/// companion, weights and warm-up.
pub const NAME_DKD_FITNET: &str = "dkd+fitnet";

/// DCKD's learnable parts: FitNet's hint regressor when the companion is `fitnet`, nothing
/// otherwise. The trainer optimises and checkpoints it with the student.
#[derive(Module, Debug)]
pub struct DckdAux {
    /// The hint regressor (student hint -> teacher hint shape); `None` without a FitNet companion.
    pub regressor: Option<HintRegressor>,
}

impl AuxModule for DckdAux {}

impl DckdAux {
    /// No learnable parts (companion `rkd` or `none`).
    pub fn empty() -> Self {
        DckdAux { regressor: None }
    }
}

/// Decoupled classifier KD, our reading of the abstract (see the crate docs).
///
/// Loss terms, already weighted (warm-up included): `ce`, `tckd` (alpha * TCKD*), `nckd`
/// (beta * NCKD; absent when beta is 0), and the companion's: `hint` (FitNet) or
/// `rkd_distance` and `rkd_angle` (RKD), each times gamma.
#[derive(Debug, Clone)]
pub struct Dckd {
    config: DckdConfig,
    name: &'static str,
}

impl Dckd {
    /// A DCKD distiller, named by its companion loss; the configuration is checked.
    pub fn new(config: DckdConfig) -> Result<Self> {
        config.validate()?;
        let name = match config.companion {
            Companion::None => NAME,
            Companion::FitNet { .. } => NAME_FITNET,
            Companion::Rkd { .. } => NAME_RKD,
        };
        Ok(Dckd { config, name })
    }

    /// The abstract's literal reading ([`NAME_BETA0`]): no companion and beta 0, or an error.
    pub fn literal(config: DckdConfig) -> Result<Self> {
        if config.companion != Companion::None || config.beta != 0.0 {
            return Err(KdError::InvalidConfig(format!(
                "`{NAME_BETA0}` is DCKD without a companion and with beta 0 (got companion `{}`, beta {})",
                config.companion.kind(),
                config.beta
            )));
        }
        Ok(Dckd { name: NAME_BETA0, ..Self::new(config)? })
    }

    /// DKD+FitNet ([`NAME_DKD_FITNET`]): the FitNet companion with `target_mode = teacher`, or
    /// an error naming what differs.
    pub fn dkd_with_fitnet(config: DckdConfig) -> Result<Self> {
        if config.target_mode != TargetMode::Teacher || !matches!(config.companion, Companion::FitNet { .. }) {
            return Err(KdError::InvalidConfig(format!(
                "`{NAME_DKD_FITNET}` is DKD's target term with FitNet's hint (target_mode `teacher`, companion `fitnet`; got `{}`, `{}`)",
                config.target_mode,
                config.companion.kind()
            )));
        }
        Ok(Dckd { name: NAME_DKD_FITNET, ..Self::new(config)? })
    }

    /// The configuration.
    pub fn config(&self) -> &DckdConfig {
        &self.config
    }

    fn missing(&self, what: &str) -> KdError {
        KdError::Missing { method: self.name.into(), what: what.into() }
    }
}

impl Distiller<DckdAux> for Dckd {
    fn name(&self) -> &str {
        self.name
    }

    fn teacher_need(&self) -> TeacherNeed {
        if self.config.companion.needs_features() { TeacherNeed::LogitsAndFeatures } else { TeacherNeed::Logits }
    }

    fn init_aux(&self, student: &ModelOutput, teacher: Option<&ModelOutput>, device: &Device) -> Result<DckdAux> {
        match self.config.companion {
            Companion::FitNet { hint_layer } => {
                let teacher = require_teacher(self.name, teacher, "features")?;
                let s = student.feature(hint_layer, "DCKD companion fitnet", "student")?;
                let t = teacher.feature(hint_layer, "DCKD companion fitnet", "teacher")?;
                Ok(DckdAux { regressor: Some(HintRegressor::new(feature_shape(s), feature_shape(t), device)?) })
            }
            Companion::Rkd { .. } | Companion::None => Ok(DckdAux::empty()),
        }
    }

    fn loss(&mut self, step: &Step<'_, DckdAux>) -> Result<LossTerms> {
        let name = self.name;
        let (student, labels) = (step.student, &step.batch.labels);
        let teacher = step.logit_teacher(name)?;
        let c = &self.config;
        let warm = c.warmup_epochs.factor(&step.ctx);

        let ce = cross_entropy_mean(student.logits.clone(), labels.clone()).mul_scalar(c.ce_weight);
        let params = DckdLogitParams { alpha: c.alpha, beta: c.beta, temperature: c.temperature, mode: c.target_mode };
        let (tckd, nckd) = dckd_logit_terms(student.logits.clone(), teacher.logits.clone(), labels.clone(), &params);
        let mut terms = LossTerms::new().with("ce", ce).with("tckd", tckd.mul_scalar(warm));
        if let Some(nckd) = nckd {
            terms.push("nckd", nckd.mul_scalar(warm));
        }

        let gamma = c.effective_gamma() * if c.warmup_companion { warm } else { 1.0 };
        match c.companion {
            Companion::FitNet { hint_layer } => {
                let regressor = step.aux.regressor.as_ref().ok_or_else(|| self.missing("its hint regressor (built by init_aux)"))?;
                let s = student.feature(hint_layer, "DCKD companion fitnet", "student")?;
                let t = teacher.feature(hint_layer, "DCKD companion fitnet", "teacher")?;
                terms.push("hint", hint_loss(regressor, s.clone(), t.clone())?.mul_scalar(gamma));
            }
            Companion::Rkd { distance_weight, angle_weight, squared, eps } => {
                let (student_embedding, teacher_embedding) = (student.embedding(name)?, teacher.embedding(name)?);
                let (s, t) = (student_embedding.dims(), teacher_embedding.dims());
                if s[0] != t[0] {
                    return Err(KdError::ShapeMismatch {
                        what: format!("{name}: teacher embedding (batch)"),
                        expected: vec![s[0]],
                        actual: vec![t[0]],
                    });
                }
                let rkd = RkdConfig { ce_weight: 0.0, distance_weight, angle_weight, squared, eps };
                let (dist, angle) = rkd_loss(student_embedding.clone(), teacher_embedding.clone(), &rkd);
                terms.push("rkd_distance", dist.mul_scalar(gamma));
                terms.push("rkd_angle", angle.mul_scalar(gamma));
            }
            Companion::None => {}
        }
        Ok(terms)
    }
}
