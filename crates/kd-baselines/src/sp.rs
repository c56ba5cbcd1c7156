//! Similarity-preserving distillation (Tung & Mori, ICCV 2019), in mdistiller's form.
//!
//! On the last stage output, flattened per sample (`Q`, `[B, C * H * W]`), the batch similarity
//! `G = Q Q^T` with each row L2-normalised; the student matches the teacher's:
//!
//! `L_SP = |G_t - G_s|_F^2 / B^2`, and `L = w_ce * CE + w_sp * L_SP`
//!
//! (mdistiller `distillers/SP.py`, `similarity_loss` on `feats[-1]`; the teacher side is
//! constant). Student and teacher widths may differ: only `B x B` matrices are compared.

use burn::tensor::Tensor;
use kd_core::Student;
use kd_core::check;
use kd_core::loss::cross_entropy_mean;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{Distiller, KdError, LossTerms, Result, Step, TeacherNeed};
use serde::{Deserialize, Serialize};

use crate::feature_maps::{flatten, l2_normalize, same_batch};

/// The method's name.
pub const NAME: &str = "sp";

/// Configuration of [`Sp`]. Defaults: mdistiller's `SP` config (`engine/cfg.py`: CE weight
/// 1.0, feature weight 3000.0; the CIFAR-100 configs keep them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpConfig {
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the similarity term.
    pub feat_weight: f64,
}

impl Default for SpConfig {
    fn default() -> Self {
        SpConfig { ce_weight: 1.0, feat_weight: 3000.0 }
    }
}

impl SpConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("SP", &[("ce_weight", self.ce_weight), ("feat_weight", self.feat_weight)])
    }
}

/// The row-normalised batch similarity of a stage output, `[batch, batch]`.
pub fn batch_similarity(feature: Tensor<4>) -> Tensor<2> {
    let q = flatten(feature);
    l2_normalize(q.clone().matmul(q.transpose()), 1)
}

/// `L_SP` of one pair of stage outputs (batch sizes checked). `[1]`.
pub fn similarity_loss(student: Tensor<4>, teacher: Tensor<4>) -> Result<Tensor<1>> {
    same_batch("SP", 0, &student, &teacher)?;
    let b = student.dims()[0];
    let diff = batch_similarity(teacher) - batch_similarity(student);
    Ok(diff.square().sum().div_scalar((b * b) as f64))
}

/// SP as a [`Distiller`]; reads the teacher's last stage output.
#[derive(Debug, Clone)]
pub struct Sp {
    config: SpConfig,
}

impl Sp {
    /// An SP distiller; the configuration is checked.
    pub fn new(config: SpConfig) -> Result<Self> {
        config.validate()?;
        Ok(Sp { config })
    }
}

impl Distiller for Sp {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::LogitsAndFeatures
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let (teacher, student) = (step.teacher(NAME, "stage features")?, step.student);
        let (s, t) = match (student.features.last(), teacher.features.last()) {
            (Some(s), Some(t)) => (s.clone(), t.clone()),
            _ => {
                return Err(KdError::InvalidConfig(format!(
                    "SP reads the last stage output: the student has {} feature maps and the teacher {} (a logits-only teacher \
                     cache has none)",
                    student.features.len(),
                    teacher.features.len()
                )));
            }
        };
        let sp = similarity_loss(s, t)?.mul_scalar(self.config.feat_weight);
        let ce = cross_entropy_mean(student.logits.clone(), step.batch.labels.clone()).mul_scalar(self.config.ce_weight);
        Ok(LossTerms::new().with("ce", ce).with("sp", sp))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: SpConfig = method_config(NAME, SpConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Sp::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    #[test]
    fn invariant_to_scale_sensitive_to_relations() {
        let device = Device::flex();
        let t = Tensor::<4>::random([4, 3, 2, 2], Distribution::Uniform(0.0, 1.0), &device);
        // Scaling the whole map scales G, and the row normalisation removes it; widths may differ.
        let scaled = Tensor::cat(vec![t.clone(), t.clone()], 1).mul_scalar(3.0);
        assert!(similarity_loss(scaled, t.clone()).unwrap().into_scalar::<f32>() < 1e-6);
        let other = Tensor::<4>::random([4, 5, 1, 1], Distribution::Uniform(-1.0, 1.0), &device);
        assert!(similarity_loss(other, t.clone()).unwrap().into_scalar::<f32>() > 0.0);
        let err = similarity_loss(Tensor::zeros([3, 3, 2, 2], &device), t).unwrap_err().to_string();
        assert!(err.contains("SP"), "{err}");
    }

    #[test]
    fn hand_computed_value() {
        let device = Device::flex();
        let v = |x: Vec<f32>| Tensor::<4>::from_data(TensorData::new(x, [2, 2, 1, 1]), &device);
        // Teacher rows orthogonal: G_t = I. Student rows equal: G_s rows [1, 1] / sqrt 2.
        let loss = similarity_loss(v(vec![1.0, 0.0, 1.0, 0.0]), v(vec![1.0, 0.0, 0.0, 1.0])).unwrap().into_scalar::<f32>();
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let expected = 2.0 * ((1.0 - h).powi(2) + h * h) / 4.0;
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    }
}
