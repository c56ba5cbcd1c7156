//! RLD's configuration and its [`Distiller`].

use kd_core::check;
use kd_core::logit_stand::LogitStandardization;
use kd_core::loss::cross_entropy_mean;
use kd_core::{Distiller, LossTerms, Result, Step, Warmup};
use serde::{Deserialize, Serialize};

use crate::loss::{RldParams, rld_terms};

/// The method's name.
pub const NAME: &str = "rld";
/// RLD on standardized logits (the reference's `--logit-stand`).
pub const NAME_LS: &str = "rld+ls";

/// Configuration of [`Rld`].
///
/// Defaults: the authors' recommended CIFAR-100 command (`README.md` of `zju-SWJ/RLD`:
/// `--same-t RLD.ALPHA 1. RLD.BETA 8. RLD.T 4.`) with `CFG.RLD`'s CE weight 1 and warm-up 20
/// epochs: CE weight 1, alpha 1, beta 8, T = T_alpha = 4 (docs/methods.md, "Conventions"
/// and "RLD"). The code's own default `ALPHA_T = 1` is [`RldConfig::code_defaults`]. ImageNet
/// uses T 1, warm-up 1, beta 0.5 (R34->R18) or 2 (R50->MV1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RldConfig {
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of SCD (sample confidence distillation).
    pub alpha: f64,
    /// Weight of MCD (masked correlation distillation).
    pub beta: f64,
    /// Temperature T of MCD.
    pub temperature: f64,
    /// Temperature T_alpha of SCD; `None`: the same as `temperature`.
    pub alpha_temperature: Option<f64>,
    /// Epochs W of the linear warm-up of the distillation term, `min(epoch / W, 1)`: a number of
    /// epochs or a fraction of the schedule ([`Warmup`]); 0: none.
    pub warmup_epochs: Warmup,
    /// Logit standardization applied to both logit sets inside the distillation term.
    pub logit_stand: Option<LogitStandardization>,
}

impl Default for RldConfig {
    fn default() -> Self {
        RldConfig {
            ce_weight: 1.0,
            alpha: 1.0,
            beta: 8.0,
            temperature: 4.0,
            alpha_temperature: None,
            warmup_epochs: Warmup::Epochs(20),
            logit_stand: None,
        }
    }
}

impl RldConfig {
    /// `CFG.RLD` of the authors' code as it stands, without `--same-t`: as the default but with
    /// `T_alpha = 1`.
    pub fn code_defaults() -> Self {
        RldConfig { alpha_temperature: Some(1.0), ..Default::default() }
    }

    /// The `--logit-stand` recipe of the authors' `tools/train.py` on top of this
    /// configuration: z-scored logits (LSKD: unbiased std, eps 1e-7), `alpha` and `beta`
    /// multiplied by `kd_weight` (flag default 9), and `T = T_alpha = base_temp` (flag default 2).
    pub fn with_logit_stand(mut self, kd_weight: f64, base_temp: f64) -> Self {
        self.alpha *= kd_weight;
        self.beta *= kd_weight;
        self.temperature = base_temp;
        self.alpha_temperature = None;
        self.logit_stand = Some(LogitStandardization::default());
        self
    }

    /// [`RldConfig::with_logit_stand`] with the flags' defaults (kd_weight 9, base_temp 2) on the
    /// default configuration: alpha 9, beta 72, T = T_alpha = 2.
    pub fn logit_stand_defaults() -> Self {
        Self::default().with_logit_stand(9.0, 2.0)
    }

    /// The distillation term's hyper-parameters.
    pub fn params(&self) -> RldParams {
        RldParams {
            alpha: self.alpha,
            beta: self.beta,
            temperature: self.temperature,
            alpha_temperature: self.effective_alpha_temperature(),
            logit_stand: self.logit_stand,
        }
    }

    /// The temperature of SCD: `alpha_temperature`, or `temperature` when it is `None`.
    pub fn effective_alpha_temperature(&self) -> f64 {
        self.alpha_temperature.unwrap_or(self.temperature)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::positive("RLD", &[("temperature", self.temperature), ("alpha_temperature", self.effective_alpha_temperature())])?;
        check::non_negative("RLD", &[("ce_weight", self.ce_weight), ("alpha", self.alpha), ("beta", self.beta)])?;
        kd_core::logit_stand::LogitStandardization::validate_optional(self.logit_stand.as_ref(), "RLD")
    }
}

/// RLD as a [`Distiller`]: `L = w_ce * CE + min(epoch / W, 1) * (alpha * SCD + beta * MCD)`.
/// Loss terms: `ce`, `scd`, `mcd` (the last two already weighted and warmed up).
#[derive(Debug, Clone)]
pub struct Rld {
    config: RldConfig,
}

impl Rld {
    /// An RLD distiller; the configuration is checked.
    pub fn new(config: RldConfig) -> Result<Self> {
        config.validate()?;
        Ok(Rld { config })
    }

    /// The configuration.
    pub fn config(&self) -> &RldConfig {
        &self.config
    }
}

impl Distiller for Rld {
    fn name(&self) -> &str {
        if self.config.logit_stand.is_some() { NAME_LS } else { NAME }
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let teacher = step.logit_teacher(self.name())?;
        let (c, student, labels) = (&self.config, &step.student.logits, &step.batch.labels);
        let warm = c.warmup_epochs.factor(&step.ctx);
        let ce = cross_entropy_mean(student.clone(), labels.clone()).mul_scalar(c.ce_weight);
        let (scd, mcd) = rld_terms(student.clone(), teacher.logits.clone(), labels.clone(), &c.params());
        Ok(LossTerms::new().with("ce", ce).with("scd", scd.mul_scalar(warm)).with("mcd", mcd.mul_scalar(warm)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_recipes() {
        let d = RldConfig::default();
        assert_eq!((d.ce_weight, d.alpha, d.beta, d.temperature, d.warmup_epochs), (1.0, 1.0, 8.0, 4.0, Warmup::Epochs(20)));
        assert_eq!(d.effective_alpha_temperature(), 4.0);
        assert_eq!(RldConfig::code_defaults().effective_alpha_temperature(), 1.0);
        let ls = RldConfig::logit_stand_defaults();
        assert_eq!((ls.alpha, ls.beta, ls.temperature, ls.effective_alpha_temperature()), (9.0, 72.0, 2.0, 2.0));
        assert!(ls.logit_stand.is_some());
        assert_eq!(Rld::new(ls).unwrap().name(), "rld+ls");
    }

    #[test]
    fn invalid_values_are_errors() {
        assert!(Rld::new(RldConfig { temperature: 0.0, ..Default::default() }).is_err());
        assert!(Rld::new(RldConfig { alpha_temperature: Some(-1.0), ..Default::default() }).is_err());
        assert!(Rld::new(RldConfig { beta: f64::NAN, ..Default::default() }).is_err());
    }

    #[test]
    fn serde_fills_missing_fields_with_defaults() {
        let c: RldConfig = serde_json::from_str(r#"{"beta": 6.0, "alpha_temperature": 1.0}"#).unwrap();
        assert_eq!(c, RldConfig { beta: 6.0, alpha_temperature: Some(1.0), ..Default::default() });
        let c: RldConfig = serde_json::from_str(r#"{"logit_stand": {"std": "population"}}"#).unwrap();
        assert_eq!(c.logit_stand.unwrap().eps, 1e-7);
    }
}
