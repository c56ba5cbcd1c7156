//! Variational information distillation (Ahn et al., CVPR 2019), in mdistiller's form.
//!
//! For every stage `k` after the stem (mdistiller's `feats[1:]`), the teacher feature `t` is
//! modelled as a Gaussian whose mean a learnable regressor `mu_k` predicts from the student
//! feature `s` (1x1 conv - ReLU - 1x1 conv - ReLU - 1x1 conv, no biases, `C_s -> C_t -> C_t ->
//! C_t`) and whose per-channel variance is learnable, `sigma_c^2 = softplus(alpha_c) + eps`:
//!
//! `L_k = mean_{b,c,h,w} 1/2 ((mu_k(s) - t)^2 / sigma_c^2 + log sigma_c^2)`,
//! `L = w_ce * CE + w_vid * sum_k L_k`.
//!
//! When the spatial sizes differ the larger map is average-pooled to the smaller one's height,
//! square (`(H, H)`), as the reference does. `alpha` starts at `log(exp(init_pred_var - eps) - 1)`
//! (variance `init_pred_var`). mdistiller `distillers/VID.py` (`vid_loss`, `init_vid_modules`),
//! RepDistiller `distiller_zoo/VID.py`; docs/methods.md, "VID".

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::{relu, softplus};
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use kd_core::Student;
use kd_core::check;
use kd_core::loss::cross_entropy_mean;
use kd_core::model::feature_shape;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{AuxModule, Distiller, KdError, LossTerms, ModelOutput, Result, Step, TeacherNeed, require_teacher};
use serde::{Deserialize, Serialize};

use crate::feature_maps::align_last;

/// The method's name.
pub const NAME: &str = "vid";

/// Configuration of [`Vid`]. Defaults: mdistiller's `VID` config (`engine/cfg.py`: CE weight
/// 1.0, feature weight 1.0, initial variance 5.0, eps 1e-5; `configs/cifar100/vid.yaml` keeps them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VidConfig {
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the summed per-stage negative log-likelihoods.
    pub feat_weight: f64,
    /// The variance every channel starts with.
    pub init_pred_var: f64,
    /// Added to the softplus, so the variance stays positive.
    pub eps: f64,
}

impl Default for VidConfig {
    fn default() -> Self {
        VidConfig { ce_weight: 1.0, feat_weight: 1.0, init_pred_var: 5.0, eps: 1e-5 }
    }
}

impl VidConfig {
    /// Checks the values (the initial variance must exceed `eps`, so that its softplus inverse exists).
    pub fn validate(&self) -> Result<()> {
        check::non_negative("VID", &[("ce_weight", self.ce_weight), ("feat_weight", self.feat_weight)])?;
        check::positive("VID", &[("eps", self.eps), ("init_pred_var - eps", self.init_pred_var - self.eps)])
    }

    /// The initial `alpha`: the softplus inverse of `init_pred_var - eps`.
    pub fn initial_log_scale(&self) -> f64 {
        (self.init_pred_var - self.eps).exp_m1().ln()
    }
}

/// One stage's learnable parts: the mean regressor and the variance parameter `alpha`.
#[derive(Module, Debug)]
pub struct VidStage {
    /// `C_s -> C_t` 1x1 convolution (no bias).
    pub conv1: Conv2d,
    /// `C_t -> C_t` 1x1 convolution (no bias).
    pub conv2: Conv2d,
    /// `C_t -> C_t` 1x1 convolution (no bias).
    pub conv3: Conv2d,
    /// `alpha`, `[C_t]`: the variance is `softplus(alpha) + eps`.
    pub log_scale: Param<Tensor<1>>,
}

fn conv1x1(cin: usize, cout: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [1, 1]).with_bias(false).init(device)
}

impl VidStage {
    /// A stage from `student_channels` to `teacher_channels`, with PyTorch's default
    /// convolution initialisation and `alpha` at `log_scale` in every channel.
    pub fn new(student_channels: usize, teacher_channels: usize, log_scale: f64, device: &Device) -> Self {
        VidStage {
            conv1: conv1x1(student_channels, teacher_channels, device),
            conv2: conv1x1(teacher_channels, teacher_channels, device),
            conv3: conv1x1(teacher_channels, teacher_channels, device),
            log_scale: Param::from_tensor(Tensor::full([teacher_channels], log_scale, device)),
        }
    }

    /// The predicted mean of the teacher feature, `[batch, C_t, H, W]`.
    pub fn mean(&self, student: Tensor<4>) -> Tensor<4> {
        let x = relu(self.conv1.forward(student));
        let x = relu(self.conv2.forward(x));
        self.conv3.forward(x)
    }
}

/// VID's learnable parts: one [`VidStage`] per distilled stage, shallow to deep (checkpoints
/// name them `stages.{k}.conv1.weight`, ..., `stages.{k}.log_scale`).
#[derive(Module, Debug)]
pub struct VidParts {
    /// The stages.
    pub stages: Vec<VidStage>,
}

impl AuxModule for VidParts {}

/// One stage's negative log-likelihood, `[1]`: pools the larger map to the smaller one's
/// height (square), then the mean over `[batch, C_t, H, W]`. Errors name the stage and shapes.
pub fn vid_stage_loss(stage: &VidStage, student: Tensor<4>, teacher: Tensor<4>, eps: f64, index: usize) -> Result<Tensor<1>> {
    let ([bs, _, sh, _], [bt, ct, th, _]) = (student.dims(), teacher.dims());
    let (student, teacher) = match sh.cmp(&th) {
        std::cmp::Ordering::Greater => (adaptive_avg_pool2d(student, [th, th]), teacher),
        std::cmp::Ordering::Less => (student, adaptive_avg_pool2d(teacher, [sh, sh])),
        std::cmp::Ordering::Equal => (student, teacher),
    };
    let mean = stage.mean(student);
    let (m, t) = (mean.dims(), teacher.dims());
    if m != t || bs != bt || stage.log_scale.dims() != [ct] {
        return Err(KdError::ShapeMismatch {
            what: format!("VID stage {index}: regressor output vs teacher feature (after pooling)"),
            expected: t.to_vec(),
            actual: m.to_vec(),
        });
    }
    let var = softplus(stage.log_scale.val(), 1.0).add_scalar(eps).reshape([1, ct, 1, 1]);
    let nll = (mean - teacher).square().div(var.clone()) + var.log();
    Ok(nll.mul_scalar(0.5).mean().reshape([1]))
}

/// The VID term, `sum_k L_k` over the paired stages (unweighted); checks the stage count.
pub fn vid_loss(parts: &VidParts, student: &[Tensor<4>], teacher: &[Tensor<4>], eps: f64) -> Result<Tensor<1>> {
    if student.len() != parts.stages.len() || teacher.len() != parts.stages.len() || student.is_empty() {
        return Err(KdError::InvalidConfig(format!(
            "VID has {} stage regressors but got {} student and {} teacher stages",
            parts.stages.len(),
            student.len(),
            teacher.len()
        )));
    }
    let mut total: Option<Tensor<1>> = None;
    for (k, ((stage, s), t)) in parts.stages.iter().zip(student).zip(teacher).enumerate() {
        let l = vid_stage_loss(stage, s.clone(), t.clone(), eps, k)?;
        total = Some(match total {
            Some(acc) => acc + l,
            None => l,
        });
    }
    total.ok_or_else(|| KdError::InvalidConfig("VID: no stage to distil".into()))
}

/// The stages VID distils: `features[1..]` of each network, the deepest common ones.
fn stages<'a>(student: &'a ModelOutput, teacher: &'a ModelOutput) -> Result<(&'a [Tensor<4>], &'a [Tensor<4>])> {
    let (s, t) = (student.features.get(1..).unwrap_or(&[]), teacher.features.get(1..).unwrap_or(&[]));
    if s.is_empty() || t.is_empty() {
        return Err(KdError::InvalidConfig(format!(
            "VID distils the stages after the stem (features[1..]): the student has {} feature maps, the teacher {} \
             (each needs at least 2; a logits-only teacher cache has none)",
            student.features.len(),
            teacher.features.len()
        )));
    }
    Ok(align_last(s, t))
}

/// VID as a [`Distiller`]; its regressors and variances are the `Aux` module.
#[derive(Debug, Clone)]
pub struct Vid {
    config: VidConfig,
}

impl Vid {
    /// A VID distiller; the configuration is checked.
    pub fn new(config: VidConfig) -> Result<Self> {
        config.validate()?;
        Ok(Vid { config })
    }

    /// The configuration.
    pub fn config(&self) -> &VidConfig {
        &self.config
    }
}

impl Distiller<VidParts> for Vid {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::LogitsAndFeatures
    }

    fn init_aux(&self, student: &ModelOutput, teacher: Option<&ModelOutput>, device: &Device) -> Result<VidParts> {
        let teacher = require_teacher(NAME, teacher, "features")?;
        let (s, t) = stages(student, teacher)?;
        let alpha = self.config.initial_log_scale();
        let stages = s.iter().zip(t).map(|(s, t)| VidStage::new(feature_shape(s)[0], feature_shape(t)[0], alpha, device)).collect();
        Ok(VidParts { stages })
    }

    fn loss(&mut self, step: &Step<'_, VidParts>) -> Result<LossTerms> {
        let teacher = step.teacher(NAME, "features")?;
        let (s, t) = stages(step.student, teacher)?;
        let vid = vid_loss(step.aux, s, t, self.config.eps)?.mul_scalar(self.config.feat_weight);
        let ce = cross_entropy_mean(step.student.logits.clone(), step.batch.labels.clone()).mul_scalar(self.config.ce_weight);
        Ok(LossTerms::new().with("ce", ce).with("vid", vid))
    }
}

/// The method by name: its configuration over the defaults, and the distiller.
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: VidConfig = method_config(NAME, VidConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Vid::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use kd_core::distiller::step_without_update;

    fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    fn output(features: Vec<Tensor<4>>, device: &Device) -> ModelOutput {
        let b = features[0].dims()[0];
        ModelOutput::new(Tensor::zeros([b, 3], device), features, None)
    }

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()[0]
    }

    #[test]
    fn initial_variance_and_hand_computed_loss() {
        let device = Device::flex();
        let cfg = VidConfig::default();
        let alpha = cfg.initial_log_scale();
        // softplus(alpha) + eps is the configured variance.
        assert!(((1.0 + alpha.exp()).ln() + cfg.eps - 5.0).abs() < 1e-9);
        // Identity-like regressor on one channel: weights 1, so mu = relu(relu(s)) = s for s >= 0.
        let mut stage = VidStage::new(1, 1, 0.0, &device);
        for conv in [&mut stage.conv1, &mut stage.conv2, &mut stage.conv3] {
            conv.weight = Param::from_tensor(Tensor::ones([1, 1, 1, 1], &device));
        }
        let s = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 1, 1, 2]), &device);
        let t = Tensor::<4>::from_data(TensorData::new(vec![0.0f32, 0.0], [1, 1, 1, 2]), &device);
        let var = 2f64.ln() + 1e-5;
        let expected = 0.5 * ((1.0 + 4.0) / 2.0 / var + var.ln());
        let got = scalar(vid_stage_loss(&stage, s, t, 1e-5, 0).unwrap());
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn pools_the_larger_map_and_trains_every_part() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let d = Vid::new(VidConfig::default()).unwrap();
        // Stem, then two stages: the student's larger in the first, smaller in the second.
        let s = output(
            vec![random([2, 1, 8, 8], &ad), random([2, 3, 8, 8], &ad).require_grad(), random([2, 4, 2, 2], &ad).require_grad()],
            &ad,
        );
        let t = output(vec![random([2, 2, 8, 8], &device), random([2, 5, 4, 4], &device), random([2, 6, 4, 4], &device)], &device);
        let parts = d.init_aux(&s.without_autodiff(), Some(&t), &ad).unwrap();
        assert_eq!(parts.stages.len(), 2);
        assert_eq!(parts.stages[1].log_scale.dims(), [6]);
        let loss = vid_loss(&parts, &s.features[1..], &t.features[1..], 1e-5).unwrap();
        let grads = loss.backward();
        for stage in &parts.stages {
            assert!(stage.log_scale.val().grad(&grads).is_some());
            assert!(stage.conv1.weight.val().grad(&grads).is_some());
        }
        assert!(s.features[1].grad(&grads).is_some() && s.features[2].grad(&grads).is_some());
    }

    #[test]
    fn loss_terms_and_clear_errors() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        assert!(Vid::new(VidConfig { init_pred_var: 1e-6, ..Default::default() }).unwrap_err().to_string().contains("init_pred_var"));
        assert!(Vid::new(VidConfig { feat_weight: -1.0, ..Default::default() }).is_err());
        let mut d = Vid::new(VidConfig::default()).unwrap();
        let one = output(vec![random([2, 3, 4, 4], &device)], &device);
        let err = d.init_aux(&one, Some(&one), &ad).unwrap_err().to_string();
        assert!(err.contains("VID") && err.contains("features[1..]"), "{err}");
        let err = d.init_aux(&one, None, &ad).unwrap_err().to_string();
        assert!(err.contains("vid") && err.contains("teacher"), "{err}");

        let s = output(vec![random([2, 1, 4, 4], &ad), random([2, 3, 4, 4], &ad)], &ad);
        let t = output(vec![random([2, 1, 4, 4], &device), random([2, 5, 4, 4], &device)], &device);
        let parts = d.init_aux(&s.without_autodiff(), Some(&t), &ad).unwrap();
        let batch = kd_testkit::label_batch(vec![0, 2], vec![0, 1], &device);
        let terms = step_without_update(&mut d, &Step::new(kd_testkit::ctx(1, 1), &batch, &s, Some(&t)).with_aux(&parts)).unwrap();
        let names: Vec<&str> = terms.terms().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ce", "vid"]);
        assert!(scalar(terms.total().unwrap()).is_finite());
        // Parts built for other channel counts: an error naming the stage, not a panic.
        let wrong = output(vec![random([2, 1, 4, 4], &device), random([2, 7, 4, 4], &device)], &device);
        let err = d.loss(&Step::new(kd_testkit::ctx(1, 1), &batch, &s, Some(&wrong)).with_aux(&parts)).unwrap_err().to_string();
        assert!(err.contains("VID stage 0"), "{err}");
    }

    #[test]
    fn trains_the_parts_through_the_trainer_and_resumes() {
        use kd_core::FrozenTeacher;
        use kd_core::train::parameter_values;
        use kd_testkit::{TinyStages, stop_and_resume};
        let device = Device::flex();
        let teacher = FrozenTeacher::new(TinyStages::new(3, 2, &device), "tiny");
        let (first, resumed) =
            stop_and_resume(TinyStages::new(2, 1, &device.clone().autodiff()), &teacher, || Vid::new(VidConfig::default()).unwrap());
        assert!(first.history[0].train_terms["vid"].is_finite());
        assert_eq!(parameter_values(&first.aux).len(), parameter_values(&resumed.aux).len());
        assert_ne!(parameter_values(&first.aux), parameter_values(&resumed.aux));
    }
}
