//! Neuron selectivity transfer (Huang & Wang, 2017), in mdistiller's form.
//!
//! Each channel of a stage output, flattened over `H * W` and L2-normalised, is a sample of the
//! stage's distribution; NST matches the student's and the teacher's distributions by the
//! squared MMD with the polynomial kernel `k(x, y) = (x . y)^2`:
//!
//! `L_NST = sum_stages mean k(F_t, F_t) + mean k(F_s, F_s) - 2 mean k(F_s, F_t)`
//!
//! (means over the batch and the channel pairs), on every stage after the stem (`feats[1:]`),
//! the larger map average-pooled to the smaller one's size; `L = w_ce * CE + w_nst * L_NST`
//! (mdistiller `distillers/NST.py`, `nst_loss`; the teacher-teacher term is constant).

use burn::tensor::Tensor;
use kd_core::Student;
use kd_core::check;
use kd_core::loss::cross_entropy_mean;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{Distiller, LossTerms, Result, Step, TeacherNeed};
use serde::{Deserialize, Serialize};

use crate::feature_maps::{l2_normalize, match_sizes, stage_pairs, sum_over_stages};

/// The method's name.
pub const NAME: &str = "nst";

/// Configuration of [`Nst`]. Defaults: mdistiller's `NST` config (`engine/cfg.py`: CE weight
/// 1.0, feature weight 50.0; the CIFAR-100 configs keep them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NstConfig {
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the MMD term.
    pub feat_weight: f64,
}

impl Default for NstConfig {
    fn default() -> Self {
        NstConfig { ce_weight: 1.0, feat_weight: 50.0 }
    }
}

impl NstConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("NST", &[("ce_weight", self.ce_weight), ("feat_weight", self.feat_weight)])
    }
}

/// `[batch, C, H * W]`, each channel L2-normalised over its positions.
fn channel_distribution(feature: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = feature.dims();
    l2_normalize(feature.reshape([b, c, h * w]), 2)
}

/// Mean of the polynomial kernel `(a_i . b_j)^2` over the batch and every channel pair. `[1]`.
fn mean_poly_kernel(a: Tensor<3>, b: Tensor<3>) -> Tensor<1> {
    a.matmul(b.swap_dims(1, 2)).square().mean()
}

/// One stage's squared MMD after [`match_sizes`]. `[1]`.
pub fn single_stage_nst_loss(student: Tensor<4>, teacher: Tensor<4>, stage: usize) -> Result<Tensor<1>> {
    let (s, t) = match_sizes("NST", stage, student, teacher)?;
    let (s, t) = (channel_distribution(s), channel_distribution(t.detach()));
    let tt = mean_poly_kernel(t.clone(), t.clone());
    Ok(tt + mean_poly_kernel(s.clone(), s.clone()) - mean_poly_kernel(s, t).mul_scalar(2.0))
}

/// `L_NST` over paired stages (`stages[i]` is stage `i + 1`, as `feats[1:]`). `[1]`.
pub fn nst_loss(stages: Vec<(Tensor<4>, Tensor<4>)>) -> Result<Tensor<1>> {
    sum_over_stages("NST", stages, single_stage_nst_loss)
}

/// NST as a [`Distiller`]; reads the teacher's stage outputs.
#[derive(Debug, Clone)]
pub struct Nst {
    config: NstConfig,
}

impl Nst {
    /// An NST distiller; the configuration is checked.
    pub fn new(config: NstConfig) -> Result<Self> {
        config.validate()?;
        Ok(Nst { config })
    }
}

impl Distiller for Nst {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::LogitsAndFeatures
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let (teacher, student) = (step.teacher(NAME, "stage features")?, step.student);
        let nst = nst_loss(stage_pairs("NST", student, teacher)?)?.mul_scalar(self.config.feat_weight);
        let ce = cross_entropy_mean(student.logits.clone(), step.batch.labels.clone()).mul_scalar(self.config.ce_weight);
        Ok(LossTerms::new().with("ce", ce).with("nst", nst))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: NstConfig = method_config(NAME, NstConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Nst::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn zero_for_equal_distributions_positive_otherwise() {
        let device = Device::flex();
        let t = Tensor::<4>::random([3, 4, 2, 2], Distribution::Uniform(0.0, 1.0), &device);
        // A positive rescaling of each channel leaves the normalised channels unchanged.
        let same = single_stage_nst_loss(t.clone().mul_scalar(5.0), t.clone(), 1).unwrap().into_scalar::<f32>();
        assert!(same.abs() < 1e-5, "{same}");
        let other = Tensor::<4>::random([3, 6, 4, 4], Distribution::Uniform(0.0, 1.0), &device);
        let v = nst_loss(vec![(other, t.clone())]).unwrap().into_scalar::<f32>();
        assert!(v > 0.0 && v.is_finite(), "{v}");
        // Maps of 1x1 (an MLP's) are one-element distributions: the loss is 0.
        let a = Tensor::<4>::random([3, 4, 1, 1], Distribution::Uniform(0.1, 1.0), &device);
        let b = Tensor::<4>::random([3, 7, 1, 1], Distribution::Uniform(0.1, 1.0), &device);
        assert!(single_stage_nst_loss(a, b, 1).unwrap().into_scalar::<f32>().abs() < 1e-6);
        assert!(nst_loss(vec![]).is_err());
    }

    #[test]
    fn hand_computed_kernel() {
        let device = Device::flex();
        // One sample, student channels e1 and e2, teacher channel e1 (2 positions).
        let s = Tensor::<4>::from_data(burn::tensor::TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [1, 2, 2, 1]), &device);
        let t = Tensor::<4>::from_data(burn::tensor::TensorData::new(vec![1.0f32, 0.0], [1, 1, 2, 1]), &device);
        // tt = 1; ss = mean(1, 0, 0, 1) = 0.5; st = mean(1, 0) = 0.5 -> 1 + 0.5 - 1 = 0.5.
        let v = single_stage_nst_loss(s, t, 1).unwrap().into_scalar::<f32>();
        assert!((v - 0.5).abs() < 1e-6, "{v}");
    }
}
