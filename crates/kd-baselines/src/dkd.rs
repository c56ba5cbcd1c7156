//! Decoupled knowledge distillation (Zhao et al., CVPR 2022), in mdistiller's form.
//!
//! With `p^X = softmax(z^X / T)` and `y` the label (docs/methods.md, "DKD"):
//! - TCKD: KL between the binary distributions `b^X = [p^X_y, sum_{c != y} p^X_c]`;
//! - NCKD: KL between the softmaxes over the non-target classes (the target logit is shifted by
//!   -1000 after the division by T, for teacher and student, as `DKD.py` does);
//! - `L = w_ce * CE + min(epoch / W, 1) * (alpha * T^2 * TCKD + beta * T^2 * NCKD)`, each KL
//!   summed over classes and averaged over the batch.
//!
//! The binary terms are the log of summed probabilities in the reference; here they are
//! computed in the log domain ([`kd_core::loss::binary_log_split`]), which is the same number
//! and gradient but does not underflow to `log(0)` in f32 for a saturated student.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use kd_core::check;
use kd_core::loss::{binary_log_split, cross_entropy_mean, kl_from_log_probs, label_mask};
use kd_core::{Distiller, LossTerms, Result, Step, Warmup};
use serde::{Deserialize, Serialize};

use kd_core::Student;
use kd_core::logit_stand::{LogitStandardization, standardize_pair};
use kd_core::registry::{Prepared, Value, method_config};

/// The method's name.
pub const NAME: &str = "dkd";
/// DKD on standardized logits (LSKD's recipe).
pub const NAME_LS: &str = "dkd+ls";

/// What DKD subtracts from the target logit (after the division by T) to drop it from the
/// non-target softmax (`DKD.py`, `dkd_loss`).
pub const NCKD_TARGET_SHIFT: f64 = 1000.0;

/// Configuration of [`Dkd`]. Defaults: mdistiller's `CFG.DKD` and
/// `configs/cifar100/dkd/res32x4_res8x4.yaml` (CE weight 1, alpha 1, beta 8, T 4, warm-up 20
/// epochs). Other CIFAR pairs use beta 2 or 6 (docs/methods.md, "DKD"); ImageNet uses
/// T 1, warm-up 1 and beta 0.5 (R34->R18) or 2 (R50->MV1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DkdConfig {
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of TCKD.
    pub alpha: f64,
    /// Weight of NCKD.
    pub beta: f64,
    /// Softmax temperature T of both terms.
    pub temperature: f64,
    /// Epochs W of the linear warm-up of the distillation term, `min(epoch / W, 1)`: a number of
    /// epochs or a fraction of the schedule ([`Warmup`]); 0: none.
    pub warmup_epochs: Warmup,
    /// Logit standardization applied to both logit sets inside the distillation term.
    pub logit_stand: Option<LogitStandardization>,
}

impl Default for DkdConfig {
    fn default() -> Self {
        DkdConfig { ce_weight: 1.0, alpha: 1.0, beta: 8.0, temperature: 4.0, warmup_epochs: Warmup::Epochs(20), logit_stand: None }
    }
}

impl DkdConfig {
    /// The LSKD recipe on top of this configuration (the `--logit-stand` flag of the LSKD and
    /// RLD code; docs/methods.md, "Logit standardization"): z-scored logits, `alpha` and `beta` multiplied
    /// by `kd_weight` (9 in the paper's CIFAR runs), `T = base_temp` (2 in those runs).
    pub fn with_logit_stand(mut self, kd_weight: f64, base_temp: f64) -> Self {
        self.alpha *= kd_weight;
        self.beta *= kd_weight;
        self.temperature = base_temp;
        self.logit_stand = Some(LogitStandardization::default());
        self
    }

    /// The distillation term's hyper-parameters.
    pub fn params(&self) -> DkdParams {
        DkdParams { alpha: self.alpha, beta: self.beta, temperature: self.temperature, logit_stand: self.logit_stand }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::positive("DKD", &[("temperature", self.temperature)])?;
        check::non_negative("DKD", &[("ce_weight", self.ce_weight), ("alpha", self.alpha), ("beta", self.beta)])?;
        LogitStandardization::validate_optional(self.logit_stand.as_ref(), "DKD")
    }
}

/// Per-sample TCKD times `T^2`, `[batch]`: `T^2 * KL(b^T || b^S)` with
/// `b^X = [p^X_y, 1 - p^X_y]` at temperature T.
pub fn dkd_tckd(student_logits: Tensor<2>, teacher_logits: Tensor<2>, labels: Tensor<1, Int>, temperature: f64) -> Tensor<1> {
    let classes = student_logits.dims()[1];
    let target = label_mask(labels, classes);
    let log_b_student = binary_log_split(student_logits, target.clone(), temperature);
    let log_b_teacher = binary_log_split(teacher_logits, target, temperature);
    kl_from_log_probs(log_b_teacher, log_b_student).mul_scalar(temperature * temperature)
}

/// Per-sample NCKD times `T^2`, `[batch]`: `T^2 * KL(p^T || p^S)` over the non-target classes.
pub fn dkd_nckd(student_logits: Tensor<2>, teacher_logits: Tensor<2>, labels: Tensor<1, Int>, temperature: f64) -> Tensor<1> {
    let classes = student_logits.dims()[1];
    // A shift rather than a masked fill, as in the reference: the target entry keeps a
    // (vanishing) probability and gradient instead of exactly none.
    let shift = label_mask(labels, classes).float().mul_scalar(NCKD_TARGET_SHIFT);
    let log_p_student = log_softmax(student_logits.div_scalar(temperature) - shift.clone(), 1);
    let log_p_teacher = log_softmax(teacher_logits.div_scalar(temperature) - shift, 1);
    kl_from_log_probs(log_p_teacher, log_p_student).mul_scalar(temperature * temperature)
}

/// The hyper-parameters of DKD's distillation term.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DkdParams {
    /// Weight of TCKD.
    pub alpha: f64,
    /// Weight of NCKD.
    pub beta: f64,
    /// Softmax temperature T of both terms.
    pub temperature: f64,
    /// Logit standardization applied to both logit sets first.
    pub logit_stand: Option<LogitStandardization>,
}

/// The two weighted batch-mean terms `(alpha * TCKD, beta * NCKD)`, each `[1]`.
pub fn dkd_terms(student_logits: Tensor<2>, teacher_logits: Tensor<2>, labels: Tensor<1, Int>, p: &DkdParams) -> (Tensor<1>, Tensor<1>) {
    let (student, teacher) = standardize_pair(p.logit_stand.as_ref(), student_logits, teacher_logits);
    let tckd = dkd_tckd(student.clone(), teacher.clone(), labels.clone(), p.temperature).mean().mul_scalar(p.alpha);
    let nckd = dkd_nckd(student, teacher, labels, p.temperature).mean().mul_scalar(p.beta);
    (tckd, nckd)
}

/// The distillation term alone, `[1]`: `alpha * TCKD + beta * NCKD`, both times `T^2`, with the
/// optional logit standardization. This is what the golden cases of `dkd.json` check.
pub fn dkd_loss(student_logits: Tensor<2>, teacher_logits: Tensor<2>, labels: Tensor<1, Int>, p: &DkdParams) -> Tensor<1> {
    let (tckd, nckd) = dkd_terms(student_logits, teacher_logits, labels, p);
    tckd + nckd
}

/// DKD as a [`Distiller`]. Loss terms: `ce`, `tckd`, `nckd` (the last two already weighted by
/// alpha or beta and the warm-up factor).
#[derive(Debug, Clone)]
pub struct Dkd {
    config: DkdConfig,
}

impl Dkd {
    /// A DKD distiller; the configuration is checked.
    pub fn new(config: DkdConfig) -> Result<Self> {
        config.validate()?;
        Ok(Dkd { config })
    }

    /// The configuration.
    pub fn config(&self) -> &DkdConfig {
        &self.config
    }
}

impl Distiller for Dkd {
    fn name(&self) -> &str {
        if self.config.logit_stand.is_some() { NAME_LS } else { NAME }
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let teacher = step.logit_teacher(self.name())?;
        let (c, student, labels) = (&self.config, &step.student.logits, &step.batch.labels);
        let warm = c.warmup_epochs.factor(&step.ctx);
        let ce = cross_entropy_mean(student.clone(), labels.clone()).mul_scalar(c.ce_weight);
        let (tckd, nckd) = dkd_terms(student.clone(), teacher.logits.clone(), labels.clone(), &c.params());
        Ok(LossTerms::new().with("ce", ce).with("tckd", tckd.mul_scalar(warm)).with("nckd", nckd.mul_scalar(warm)))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: DkdConfig = method_config(NAME, DkdConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Dkd::new(cfg.clone())?)
}

/// LSKD's DKD recipe: alpha and beta times 9, temperature 2, CE weight 1, z-scored logits.
pub fn prepare_with_logit_stand<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let d = DkdConfig::default();
    let defaults = DkdConfig { alpha: d.alpha * 9.0, beta: d.beta * 9.0, temperature: 2.0, ..d };
    let mut cfg: DkdConfig = method_config(NAME_LS, defaults, user)?;
    cfg.logit_stand.get_or_insert_with(Default::default);
    Prepared::new(NAME_LS, &cfg, Dkd::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use burn::tensor::TensorData;

    fn device() -> Device {
        Device::flex()
    }

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()[0]
    }

    #[test]
    fn identical_logits_give_zero() {
        let d = device();
        let z = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, -2.0, 3.0, 0.5, 0.0, 0.2], [2, 3]), &d);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &d);
        let l = scalar(dkd_loss(z.clone(), z, y, &DkdParams { alpha: 1.0, beta: 8.0, temperature: 4.0, logit_stand: None }));
        assert!(l.abs() < 1e-6, "{l}");
    }

    #[test]
    fn two_classes_have_no_nckd() {
        // With two classes the non-target softmax has one entry: NCKD is 0 and DKD = TCKD = KD.
        let d = device();
        let s = Tensor::<2>::from_data(TensorData::new(vec![0.3f32, -1.0], [1, 2]), &d);
        let t = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.5], [1, 2]), &d);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64], [1]), &d);
        let nckd = scalar(dkd_nckd(s.clone(), t.clone(), y.clone(), 2.0));
        assert!(nckd.abs() < 1e-6, "{nckd}");
        let dkd = scalar(dkd_loss(s.clone(), t.clone(), y, &DkdParams { alpha: 1.0, beta: 8.0, temperature: 2.0, logit_stand: None }));
        let kd = scalar(kd_core::loss::kd_kl_mean(s, t, 2.0));
        assert!((dkd - kd).abs() < 1e-5 * (1.0 + kd), "{dkd} vs {kd}");
    }

    #[test]
    fn config_checks_and_logit_stand_recipe() {
        assert!(Dkd::new(DkdConfig { temperature: 0.0, ..Default::default() }).is_err());
        assert!(Dkd::new(DkdConfig { beta: -1.0, ..Default::default() }).is_err());
        let c = DkdConfig::default().with_logit_stand(9.0, 2.0);
        assert_eq!((c.alpha, c.beta, c.temperature), (9.0, 72.0, 2.0));
        assert!(c.logit_stand.is_some());
    }
}
