//! Vanilla knowledge distillation (Hinton et al. 2015), in mdistiller's form.
//!
//! `L = w_ce * CE(z_s, y) + w_kd * T^2 * mean_b KL(softmax(z_t/T) || softmax(z_s/T))`
//! (mdistiller `distillers/KD.py`, `kd_loss`; docs/methods.md, "KD"), optionally on
//! standardized logits (docs/methods.md, "Logit standardization").

use burn::tensor::Tensor;
use kd_core::logit_stand::{LogitStandardization, standardize_pair};
use kd_core::loss::{cross_entropy_mean, kd_kl_mean};
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{Distiller, LossTerms, Result, Step, Student, check};
use serde::{Deserialize, Serialize};

/// The method's name.
pub const NAME: &str = "kd";
/// KD on standardized logits (LSKD's recipe).
pub const NAME_LS: &str = "kd+ls";

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
        check::non_negative("KD", &[("ce_weight", self.ce_weight), ("kd_weight", self.kd_weight)])?;
        LogitStandardization::validate_optional(self.logit_stand.as_ref(), "KD")
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
    fn name(&self) -> &str {
        if self.config.logit_stand.is_some() { NAME_LS } else { NAME }
    }

    fn accepts_top_k(&self) -> bool {
        // The KL term reads the teacher's distribution only, which top-k outputs approximate.
        self.config.logit_stand.is_none()
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let teacher = step.logit_teacher(self.name())?;
        let c = &self.config;
        let ce = cross_entropy_mean(step.student.logits.clone(), step.batch.labels.clone()).mul_scalar(c.ce_weight);
        let kd =
            kd_loss(step.student.logits.clone(), teacher.logits.clone(), c.temperature, c.logit_stand.as_ref()).mul_scalar(c.kd_weight);
        Ok(LossTerms::new().with("ce", ce).with("kd", kd))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: KdConfig = method_config(NAME, KdConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Kd::new(cfg.clone())?)
}

/// LSKD's CIFAR recipe for KD: base temperature 2, KD weight 9, CE weight 0.1, z-scored logits.
pub fn prepare_with_logit_stand<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let defaults = KdConfig { temperature: 2.0, ce_weight: 0.1, kd_weight: 9.0, logit_stand: Some(Default::default()) };
    let mut cfg: KdConfig = method_config(NAME_LS, defaults, user)?;
    cfg.logit_stand.get_or_insert_with(Default::default);
    Prepared::new(NAME_LS, &cfg, Kd::new(cfg.clone())?)
}
