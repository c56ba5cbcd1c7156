//! Label smoothing (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016).
//!
//! `L = mean_b -sum_c y~_c log softmax(z)_c` with `y~ = (1 - eps) * onehot(y) + eps / K`, the
//! same target as PyTorch's `CrossEntropyLoss(label_smoothing=eps)`. No teacher. PS-KD
//! (docs/methods.md, "PS-KD") lists it as a baseline.

use burn::tensor::{Int, Tensor};
use kd_core::Student;
use kd_core::loss::{one_hot, soft_cross_entropy};
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{Distiller, KdError, LossTerms, Result, Step, TeacherNeed};
use serde::{Deserialize, Serialize};

/// The method's name.
pub const NAME: &str = "label_smoothing";

/// Configuration of [`LabelSmoothing`]. Default: eps = 0.1 (the Inception-v3 paper's value,
/// also the usual CIFAR/ImageNet baseline setting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelSmoothingConfig {
    /// Probability mass spread uniformly over the `K` classes, in `[0, 1]`.
    pub epsilon: f64,
}

impl Default for LabelSmoothingConfig {
    fn default() -> Self {
        LabelSmoothingConfig { epsilon: 0.1 }
    }
}

impl LabelSmoothingConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !(self.epsilon.is_finite() && (0.0..=1.0).contains(&self.epsilon)) {
            return Err(KdError::InvalidConfig(format!("label smoothing epsilon must be in [0, 1], got {}", self.epsilon)));
        }
        Ok(())
    }
}

/// The smoothed target `(1 - eps) * onehot(y) + eps / K`, `[batch, classes]`.
pub fn smoothed_targets(labels: Tensor<1, Int>, num_classes: usize, epsilon: f64) -> Tensor<2> {
    one_hot(labels, num_classes).mul_scalar(1.0 - epsilon).add_scalar(epsilon / num_classes as f64)
}

/// Batch mean of the cross-entropy against [`smoothed_targets`], `[1]`.
pub fn label_smoothing_loss(logits: Tensor<2>, labels: Tensor<1, Int>, epsilon: f64) -> Tensor<1> {
    let classes = logits.dims()[1];
    soft_cross_entropy(logits, smoothed_targets(labels, classes, epsilon)).mean()
}

/// Label smoothing as a [`Distiller`] (no teacher).
#[derive(Debug, Clone)]
pub struct LabelSmoothing {
    config: LabelSmoothingConfig,
}

impl LabelSmoothing {
    /// A label-smoothing trainer; the configuration is checked.
    pub fn new(config: LabelSmoothingConfig) -> Result<Self> {
        config.validate()?;
        Ok(LabelSmoothing { config })
    }
}

impl Distiller for LabelSmoothing {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::Nothing
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let loss = label_smoothing_loss(step.student.logits.clone(), step.batch.labels.clone(), self.config.epsilon);
        Ok(LossTerms::new().with("ce_smoothed", loss))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: LabelSmoothingConfig = method_config(NAME, LabelSmoothingConfig::default(), user)?;
    Prepared::new(NAME, &cfg, LabelSmoothing::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use burn::tensor::TensorData;

    fn host(t: Tensor<2>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn targets_sum_to_one_and_zero_epsilon_is_cross_entropy() {
        let device = Device::flex();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device);
        let t = host(smoothed_targets(labels.clone(), 4, 0.1));
        assert!((t[0] - 0.925).abs() < 1e-6 && (t[1] - 0.025).abs() < 1e-6);
        for row in t.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let logits = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.5, -0.3, 2.0, 0.1, 0.2, 0.3, 0.4], [2, 4]), &device);
        let ls = label_smoothing_loss(logits.clone(), labels.clone(), 0.0).into_scalar::<f32>();
        let ce = kd_core::loss::cross_entropy_mean(logits, labels).into_scalar::<f32>();
        assert!((ls - ce).abs() < 1e-6);
        assert!(LabelSmoothing::new(LabelSmoothingConfig { epsilon: 1.5 }).is_err());
    }
}
