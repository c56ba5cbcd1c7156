//! Vanilla knowledge distillation (Hinton et al. 2015), in mdistiller's form.
//!
//! `L = w_ce * CE(z_s, y) + w_kd * T^2 * mean_b KL(softmax(z_t/T) || softmax(z_s/T))`
//! (mdistiller `distillers/KD.py`, `kd_loss`; docs/methods.md, "KD"), optionally on
//! standardized logits (docs/methods.md, "Logit standardization").

use burn::tensor::{Device, Tensor};
use kd_core::check;
use kd_core::loss::{cross_entropy_mean, kd_kl_mean};
use kd_core::{Batch, Distiller, LossTerms, ModelOutput, NoAux, Result, StepContext, TeacherNeed, logit_teacher};
use serde::{Deserialize, Serialize};

use kd_core::Student;
use kd_core::logit_stand::{LogitStandardization, standardize_pair};
use kd_core::registry::{Prepared, Value, method_config};

/// Configuration of [`Kd`]. Defaults: mdistiller's CIFAR config (`configs/cifar100/kd.yaml`:
/// T = 4, CE weight 0.1, KD weight 0.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KdConfig {
    /// Softmax temperature T.
    pub temperature: f64,
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the distillation term.
    pub kd_weight: f64,
    /// Logit standardization applied to both logit sets inside the KD term (off by default).
    pub logit_stand: Option<LogitStandardization>,
}

impl Default for KdConfig {
    fn default() -> Self {
        KdConfig { temperature: 4.0, ce_weight: 0.1, kd_weight: 0.9, logit_stand: None }
    }
}

impl KdConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::positive("KD", &[("temperature", self.temperature)])?;
        check::non_negative("KD", &[("ce_weight", self.ce_weight), ("kd_weight", self.kd_weight)])
    }
}

/// The distillation term alone: `T^2 * mean_b KL(p_t || p_s)`, with the optional logit
/// standardization. This is what the golden cases of `kd.json` check.
pub fn kd_loss(student_logits: Tensor<2>, teacher_logits: Tensor<2>, temperature: f64, stand: Option<&LogitStandardization>) -> Tensor<1> {
    let (student, teacher) = standardize_pair(stand, student_logits, teacher_logits);
    kd_kl_mean(student, teacher, temperature)
}

/// Vanilla KD as a [`Distiller`].
#[derive(Debug, Clone)]
pub struct Kd {
    config: KdConfig,
}

impl Kd {
    /// A KD distiller; the configuration is checked.
    pub fn new(config: KdConfig) -> Result<Self> {
        config.validate()?;
        Ok(Kd { config })
    }
}

impl Distiller for Kd {
    type Aux = NoAux;

    fn name(&self) -> String {
        if self.config.logit_stand.is_some() { "kd+ls".into() } else { "kd".into() }
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::Logits
    }

    fn init_aux(&self, _: &ModelOutput, _: Option<&ModelOutput>, _: &Device) -> Result<NoAux> {
        Ok(NoAux::new())
    }

    fn loss(
        &mut self,
        _: &StepContext,
        batch: &Batch,
        student: &ModelOutput,
        teacher: Option<&ModelOutput>,
        _: &NoAux,
    ) -> Result<LossTerms> {
        let teacher = logit_teacher("kd", batch, student, teacher)?;
        let c = &self.config;
        let ce = cross_entropy_mean(student.logits.clone(), batch.labels.clone()).mul_scalar(c.ce_weight);
        let kd = kd_loss(student.logits.clone(), teacher.logits.clone(), c.temperature, c.logit_stand.as_ref()).mul_scalar(c.kd_weight);
        Ok(LossTerms::new().with("ce", ce).with("kd", kd))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: KdConfig = method_config("kd", KdConfig::default(), user)?;
    Prepared::new("kd", &cfg, Kd::new(cfg.clone())?)
}

/// LSKD's CIFAR recipe for KD: base temperature 2, KD weight 9, CE weight 0.1, z-scored logits.
pub fn prepare_with_logit_stand<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let defaults = KdConfig { temperature: 2.0, ce_weight: 0.1, kd_weight: 9.0, logit_stand: Some(Default::default()) };
    let mut cfg: KdConfig = method_config("kd+ls", defaults, user)?;
    cfg.logit_stand.get_or_insert_with(Default::default);
    Prepared::new("kd+ls", &cfg, Kd::new(cfg.clone())?)
}
