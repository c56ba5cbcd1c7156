//! ReviewKD as a [`Distiller`]: configuration, the stages it reads, and the loss
//! `L = w_ce * CE + w_review * min(epoch / W, 1) * sum_i hcl(ABF_i(...), F_t,i)`.

use burn::tensor::{Device, Tensor};
use kd_core::check;
use kd_core::loss::cross_entropy_mean;
use kd_core::model::feature_shape;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{Distiller, KdError, LossTerms, ModelOutput, Result, Step, Student, TeacherNeed, Warmup, require_teacher};
use serde::{Deserialize, Serialize};

use crate::abf::ReviewFusion;
use crate::loss::hcl_loss;

/// The method's name.
pub const NAME: &str = "reviewkd";

/// Configuration of [`ReviewKd`]. Defaults: mdistiller's `REVIEWKD` config (`engine/cfg.py`:
/// CE weight 1, warm-up 20 epochs, mid channels at most 512) with the review weight of its
/// CIFAR-100 config (`configs/cifar100/reviewkd.yaml`: `REVIEWKD_WEIGHT: 5.0`; `cfg.py`'s own
/// default is 1). The reference's `IN_CHANNELS`, `OUT_CHANNELS`, `SHAPES` and `OUT_SHAPES` are
/// not settings here: they are read from the networks' outputs on a probe batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewKdConfig {
    /// Weight of the cross-entropy with the labels (`CE_WEIGHT`).
    pub ce_weight: f64,
    /// Weight of the review (HCL) term (`REVIEWKD_WEIGHT`).
    pub reviewkd_weight: f64,
    /// Epochs `W` of the linear warm-up `min(epoch / W, 1)` of the review term
    /// (`WARMUP_EPOCHS`; [`Warmup`]: a number of epochs or a fraction of the schedule).
    pub warmup_epochs: Warmup,
    /// The ABFs' middle width is `min(max_mid_channels, C)` with `C` the student's embedding
    /// width (the reference hard-codes 512 and never reads its `MAX_MID_CHANNEL`).
    pub max_mid_channels: usize,
}

impl Default for ReviewKdConfig {
    fn default() -> Self {
        ReviewKdConfig { ce_weight: 1.0, reviewkd_weight: 5.0, warmup_epochs: Warmup::Epochs(20), max_mid_channels: 512 }
    }
}

impl ReviewKdConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("ReviewKD", &[("ce_weight", self.ce_weight), ("reviewkd_weight", self.reviewkd_weight)])?;
        if self.max_mid_channels == 0 {
            return Err(KdError::InvalidConfig("ReviewKD: max_mid_channels must be at least 1".into()));
        }
        Ok(())
    }
}

/// The maps ReviewKD reads from one network's outputs, shallow to deep: the stage outputs after
/// the first (`features[1..]`, mdistiller's `feats[1:]`; `features[0]` is the stem) and the
/// pooled embedding as `[B, D, 1, 1]` last. `who` (student, teacher) names the network in errors.
pub fn review_inputs(output: &ModelOutput, who: &str) -> Result<Vec<Tensor<4>>> {
    let embedding = output.embedding(NAME).map_err(|e| KdError::InvalidConfig(format!("ReviewKD ({who}): {e}")))?;
    let [b, d] = embedding.dims();
    let mut maps: Vec<Tensor<4>> = output.features.iter().skip(1).cloned().collect();
    maps.push(embedding.clone().reshape([b, d, 1, 1]));
    Ok(maps)
}

/// The student's and the teacher's maps, paired from the deep end: when one network has more
/// stages, its shallowest extra ones are left out (mdistiller lists the stages per
/// architecture; the deepest are the ones every pair shares).
fn paired(student: &ModelOutput, teacher: &ModelOutput) -> Result<(Vec<Tensor<4>>, Vec<Tensor<4>>)> {
    let (mut s, mut t) = (review_inputs(student, "student")?, review_inputs(teacher, "teacher")?);
    let n = s.len().min(t.len());
    s.drain(..s.len() - n);
    t.drain(..t.len() - n);
    Ok((s, t))
}

/// ReviewKD (Chen et al., CVPR 2021); its [`ReviewFusion`] is the `Aux` module.
#[derive(Debug, Clone)]
pub struct ReviewKd {
    config: ReviewKdConfig,
}

impl ReviewKd {
    /// A ReviewKD distiller; the configuration is checked.
    pub fn new(config: ReviewKdConfig) -> Result<Self> {
        config.validate()?;
        Ok(ReviewKd { config })
    }

    /// The configuration.
    pub fn config(&self) -> &ReviewKdConfig {
        &self.config
    }
}

impl Distiller<ReviewFusion> for ReviewKd {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::LogitsAndFeatures
    }

    fn init_aux(&self, student: &ModelOutput, teacher: Option<&ModelOutput>, device: &Device) -> Result<ReviewFusion> {
        let teacher = require_teacher(NAME, teacher, "features and embedding")?;
        let (s, t) = paired(student, teacher)?;
        let shapes = |maps: &[Tensor<4>]| maps.iter().map(feature_shape).collect::<Vec<_>>();
        ReviewFusion::new(&shapes(&s), &shapes(&t), self.config.max_mid_channels, device)
    }

    fn loss(&mut self, step: &Step<'_, ReviewFusion>) -> Result<LossTerms> {
        let teacher = step.teacher(NAME, "features and embedding")?;
        let c = &self.config;
        let (s, t) = paired(step.student, teacher)?;
        for (i, (x, want)) in t.iter().zip(step.aux.teacher_shapes()).enumerate() {
            if feature_shape(x) != *want {
                return Err(KdError::ShapeMismatch {
                    what: format!("ReviewKD: teacher map {i} vs the probe batch's"),
                    expected: want.to_vec(),
                    actual: x.dims()[1..].to_vec(),
                });
            }
        }
        let fused = step.aux.forward(s)?;
        let review = hcl_loss(&fused, &t)?.mul_scalar(c.reviewkd_weight * c.warmup_epochs.factor(&step.ctx));
        let ce = cross_entropy_mean(step.student.logits.clone(), step.batch.labels.clone()).mul_scalar(c.ce_weight);
        Ok(LossTerms::new().with("ce", ce).with("review", review))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: ReviewKdConfig = method_config(NAME, ReviewKdConfig::default(), user)?;
    Prepared::new(NAME, &cfg, ReviewKd::new(cfg.clone())?)
}

#[cfg(test)]
mod tests;
