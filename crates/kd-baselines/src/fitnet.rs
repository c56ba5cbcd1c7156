//! FitNets hints (Romero et al., ICLR 2015), in mdistiller's single-stage form.
//!
//! A learnable regressor `r` maps the student's hint feature to the teacher's shape and
//! `L = w_ce * CE + w_hint * MSE(r(f_s), f_t)`, trained jointly (mdistiller
//! `distillers/FitNet.py` and `_common.py`'s `ConvReg`; docs/methods.md, "FitNet"). With
//! `kd_weight > 0` a Hinton KD term is added (FitNet+KD, the naive combination).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use kd_core::Student;
use kd_core::Warmup;
use kd_core::check;
use kd_core::loss::{cross_entropy_mean, kd_kl_mean, mse_mean};
use kd_core::model::feature_shape;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{AuxModule, Distiller, KdError, LossTerms, ModelOutput, Result, Step, TeacherNeed, require_teacher};
use serde::{Deserialize, Serialize};

/// The method's name.
pub const NAME: &str = "fitnet";
/// FitNet's hint plus Hinton's KD.
pub const NAME_KD: &str = "fitnet+kd";

/// Configuration of [`FitNet`]. Defaults: mdistiller's `FITNET` config (`engine/cfg.py`: hint
/// layer 2, CE weight 1.0, feature weight 100.0); the KD term is off (`kd_weight` 0) and its
/// temperature is mdistiller's CIFAR KD value, 4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitNetConfig {
    /// Index into [`ModelOutput::features`] of the hint layer, for both networks
    /// (2: the output of the second stage of a CIFAR ResNet, `feats[2]`).
    pub hint_layer: usize,
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the hint (MSE) term.
    pub hint_weight: f64,
    /// Weight of an added KD term (0: plain FitNet; > 0: FitNet+KD).
    pub kd_weight: f64,
    /// Temperature of the added KD term.
    pub kd_temperature: f64,
    /// Epochs `W` of a linear warm-up `min(epoch / W, 1)` of the hint and KD terms, as DKD and
    /// DCKD warm theirs up: a number of epochs or a fraction of the schedule ([`Warmup`]); 0
    /// (mdistiller's FitNet): full weight from the first step. The bench gives FitNet and
    /// FitNet+KD the warm-up it gives DCKD+FitNet, so the comparison is fair.
    pub warmup_epochs: Warmup,
}

impl Default for FitNetConfig {
    fn default() -> Self {
        FitNetConfig {
            hint_layer: 2,
            ce_weight: 1.0,
            hint_weight: 100.0,
            kd_weight: 0.0,
            kd_temperature: 4.0,
            warmup_epochs: Warmup::Epochs(0),
        }
    }
}

impl FitNetConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("FitNet", &[("ce_weight", self.ce_weight), ("hint_weight", self.hint_weight), ("kd_weight", self.kd_weight)])?;
        check::positive("FitNet", &[("kd_temperature", self.kd_temperature)])
    }
}

/// How the regressor's first layer is chosen from the spatial sizes (mdistiller `ConvReg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegressorKind {
    /// `s_H = 2 t_H`: 3x3 convolution, stride 2, padding 1.
    Downsample,
    /// `2 s_H = t_H`: 4x4 transposed convolution, stride 2, padding 1.
    Upsample,
    /// Otherwise: unpadded convolution with kernel `(1 + s_H - t_H, 1 + s_W - t_W)` (1x1 when
    /// the sizes match).
    Valid {
        /// The kernel's height and width.
        kernel: [usize; 2],
    },
}

impl RegressorKind {
    /// The kind for student `[C, H, W]` and teacher `[C, H, W]` feature shapes; an error when
    /// no convolution maps one onto the other (the student map smaller than the teacher's and
    /// not by exactly half).
    pub fn for_shapes(student: [usize; 3], teacher: [usize; 3]) -> Result<Self> {
        let [_, sh, sw] = student;
        let [_, th, tw] = teacher;
        let kind = if sh == 2 * th {
            RegressorKind::Downsample
        } else if 2 * sh == th {
            RegressorKind::Upsample
        } else if sh >= th && sw >= tw {
            RegressorKind::Valid { kernel: [1 + sh - th, 1 + sw - tw] }
        } else {
            return Err(KdError::InvalidConfig(format!(
                "FitNet cannot map a student hint of {sh}x{sw} onto a teacher hint of {th}x{tw}: \
                 the student map must be twice, half, or at least the teacher's size"
            )));
        };
        // The width follows the height's rule; check it really lands on the teacher's width.
        let out_w = match kind {
            RegressorKind::Downsample => (sw + 2 - 3) / 2 + 1,
            RegressorKind::Upsample => 2 * sw,
            RegressorKind::Valid { kernel } => sw + 1 - kernel[1],
        };
        if out_w != tw {
            return Err(KdError::InvalidConfig(format!(
                "FitNet regressor for a {sh}x{sw} student hint gives width {out_w}, but the teacher hint is {th}x{tw}"
            )));
        }
        Ok(kind)
    }
}

/// The hint regressor: convolution (see [`RegressorKind`]) -> BatchNorm -> ReLU, from the
/// student's channels to the teacher's.
#[derive(Module, Debug)]
pub struct HintRegressor {
    conv: Option<Conv2d>,
    deconv: Option<ConvTranspose2d>,
    bn: BatchNorm,
}

impl HintRegressor {
    /// A regressor from student feature shape `[C, H, W]` to teacher feature shape `[C, H, W]`.
    pub fn new(student: [usize; 3], teacher: [usize; 3], device: &Device) -> Result<Self> {
        if student.contains(&0) || teacher.contains(&0) {
            return Err(KdError::InvalidConfig(format!(
                "FitNet hint features must be non-empty: student {student:?}, teacher {teacher:?}"
            )));
        }
        let channels = [student[0], teacher[0]];
        let (conv, deconv) = match RegressorKind::for_shapes(student, teacher)? {
            RegressorKind::Downsample => (
                Some(
                    Conv2dConfig::new(channels, [3, 3])
                        .with_stride([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(device),
                ),
                None,
            ),
            RegressorKind::Upsample => {
                (None, Some(ConvTranspose2dConfig::new(channels, [4, 4]).with_stride([2, 2]).with_padding([1, 1]).init(device)))
            }
            RegressorKind::Valid { kernel } => (Some(Conv2dConfig::new(channels, kernel).init(device)), None),
        };
        Ok(HintRegressor { conv, deconv, bn: BatchNormConfig::new(teacher[0]).init(device) })
    }

    /// Maps a student feature `[batch, C_s, H_s, W_s]` to `[batch, C_t, H_t, W_t]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match (&self.conv, &self.deconv) {
            (Some(conv), _) => conv.forward(x),
            (None, Some(deconv)) => deconv.forward(x),
            // `new` always builds one of the two.
            (None, None) => x,
        };
        relu(self.bn.forward(x))
    }
}

/// The hint term alone: `MSE(r(f_s), f_t)`, mean over every element; checks the shapes.
pub fn hint_loss(regressor: &HintRegressor, student_feature: Tensor<4>, teacher_feature: Tensor<4>) -> Result<Tensor<1>> {
    let mapped = regressor.forward(student_feature);
    let (m, t) = (mapped.dims(), teacher_feature.dims());
    if m != t {
        return Err(KdError::ShapeMismatch {
            what: "FitNet regressor output vs teacher hint".into(),
            expected: t.to_vec(),
            actual: m.to_vec(),
        });
    }
    Ok(mse_mean(mapped, teacher_feature))
}

/// FitNet (optionally FitNet+KD) as a [`Distiller`]; its regressor is the `Aux` module.
#[derive(Debug, Clone)]
pub struct FitNet {
    config: FitNetConfig,
}

impl FitNet {
    /// A FitNet distiller; the configuration is checked.
    pub fn new(config: FitNetConfig) -> Result<Self> {
        config.validate()?;
        Ok(FitNet { config })
    }

    /// The configuration.
    pub fn config(&self) -> &FitNetConfig {
        &self.config
    }
}

impl AuxModule for HintRegressor {}

impl Distiller<HintRegressor> for FitNet {
    fn name(&self) -> &str {
        if self.config.kd_weight > 0.0 { NAME_KD } else { NAME }
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::LogitsAndFeatures
    }

    fn init_aux(&self, student: &ModelOutput, teacher: Option<&ModelOutput>, device: &Device) -> Result<HintRegressor> {
        let teacher = require_teacher(self.name(), teacher, "features")?;
        let s = student.feature(self.config.hint_layer, "FitNet", "student")?;
        let t = teacher.feature(self.config.hint_layer, "FitNet", "teacher")?;
        HintRegressor::new(feature_shape(s), feature_shape(t), device)
    }

    fn loss(&mut self, step: &Step<'_, HintRegressor>) -> Result<LossTerms> {
        let teacher = step.teacher(self.name(), "features")?;
        let (c, student) = (&self.config, step.student);
        let warm = c.warmup_epochs.factor(&step.ctx);
        let s = student.feature(c.hint_layer, "FitNet", "student")?;
        let t = teacher.feature(c.hint_layer, "FitNet", "teacher")?;
        let hint = hint_loss(step.aux, s.clone(), t.clone())?.mul_scalar(c.hint_weight * warm);
        let ce = cross_entropy_mean(student.logits.clone(), step.batch.labels.clone()).mul_scalar(c.ce_weight);
        let mut terms = LossTerms::new().with("ce", ce).with("hint", hint);
        if c.kd_weight > 0.0 {
            let kd = kd_kl_mean(student.logits.clone(), teacher.logits.clone(), c.kd_temperature);
            terms.push("kd", kd.mul_scalar(c.kd_weight * warm));
        }
        Ok(terms)
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: FitNetConfig = method_config(NAME, FitNetConfig::default(), user)?;
    Prepared::new(NAME, &cfg, FitNet::new(cfg.clone())?)
}

/// FitNet's hint plus mdistiller's KD weight (0.9).
pub fn prepare_with_kd<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: FitNetConfig = method_config(NAME_KD, FitNetConfig { kd_weight: 0.9, ..Default::default() }, user)?;
    Prepared::new(NAME_KD, &cfg, FitNet::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Distribution;
    use burn::tensor::Gradients;
    use kd_core::distiller::step_without_update;

    fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    struct GradCheck<'a> {
        grads: &'a Gradients,
        params: usize,
        non_zero: usize,
    }

    impl ModuleVisitor for GradCheck<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.params += 1;
            if let Some(g) = param.val().grad(self.grads) {
                let g = g.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
                assert!(g.iter().all(|v| v.is_finite()));
                if g.iter().any(|v| *v != 0.0) {
                    self.non_zero += 1;
                }
            }
        }
    }

    fn output(features: Vec<Tensor<4>>, device: &Device) -> ModelOutput {
        let b = features[0].dims()[0];
        ModelOutput::new(Tensor::zeros([b, 3], device), features, None)
    }

    #[test]
    fn regressor_matches_teacher_shape_and_gets_gradients() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        // (student [C,H,W], teacher [C,H,W], expected kind)
        let cases = [
            ([3, 8, 8], [5, 4, 4], RegressorKind::Downsample),
            ([3, 4, 4], [5, 8, 8], RegressorKind::Upsample),
            ([3, 6, 5], [5, 4, 4], RegressorKind::Valid { kernel: [3, 2] }),
            ([3, 4, 4], [5, 4, 4], RegressorKind::Valid { kernel: [1, 1] }),
        ];
        for (s, t, kind) in cases {
            assert_eq!(RegressorKind::for_shapes(s, t).unwrap(), kind);
            let distiller = FitNet::new(FitNetConfig { hint_layer: 1, ..Default::default() }).unwrap();
            // Feature 0 is a decoy: the hint layer is 1.
            let probe_s = output(vec![random([2, 1, 2, 2], &device), random([2, s[0], s[1], s[2]], &device)], &device);
            let probe_t = output(vec![random([2, 1, 2, 2], &device), random([2, t[0], t[1], t[2]], &device)], &device);
            let reg = distiller.init_aux(&probe_s, Some(&probe_t), &ad).unwrap();
            let fs = random([4, s[0], s[1], s[2]], &ad).require_grad();
            let mapped = reg.forward(fs.clone());
            assert_eq!(mapped.dims(), [4, t[0], t[1], t[2]], "{kind:?}");

            let loss = hint_loss(&reg, fs.clone(), random([4, t[0], t[1], t[2]], &device)).unwrap();
            let grads = loss.backward();
            let mut check = GradCheck { grads: &grads, params: 0, non_zero: 0 };
            reg.visit(&mut check);
            // conv weight + bias, BN gamma + beta get gradients; the BN running statistics
            // are visited too but are not trained.
            assert_eq!(check.params, 6, "{kind:?}");
            assert_eq!(check.non_zero, 4, "{kind:?}");
            assert!(fs.grad(&grads).is_some());
        }
    }

    #[test]
    fn loss_terms_and_clear_errors() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let few = output(vec![random([2, 3, 4, 4], &device)], &device);
        let err = FitNet::new(FitNetConfig::default()).unwrap().init_aux(&few, Some(&few), &ad).unwrap_err().to_string();
        assert!(err.contains("hint_layer is 2") && err.contains("only 1"), "{err}");
        assert!(RegressorKind::for_shapes([3, 3, 3], [3, 5, 5]).is_err());
        assert!(RegressorKind::for_shapes([3, 8, 3], [3, 4, 4]).is_err());
        assert!(FitNet::new(FitNetConfig { kd_temperature: 0.0, ..Default::default() }).is_err());

        let mut d = FitNet::new(FitNetConfig { hint_layer: 0, kd_weight: 0.5, ..Default::default() }).unwrap();
        assert_eq!(d.name(), "fitnet+kd");
        let s = output(vec![random([2, 3, 4, 4], &ad)], &ad);
        let t = output(vec![random([2, 6, 2, 2], &device)], &device);
        let aux = d.init_aux(&s.without_autodiff(), Some(&t), &ad).unwrap();
        let batch = kd_testkit::label_batch(vec![0, 2], vec![0, 1], &device);
        let ctx = kd_testkit::ctx(1, 1);
        let terms = step_without_update(&mut d, &Step::new(ctx, &batch, &s, Some(&t)).with_aux(&aux)).unwrap();
        let names: Vec<&str> = terms.terms().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ce", "hint", "kd"]);
        let total = terms.total().unwrap().into_scalar::<f32>();
        assert!(total.is_finite() && total > 0.0);

        // A warm-up of 4 epochs scales the hint and KD terms by 1/4 in epoch 1, not the CE.
        let mut warm =
            FitNet::new(FitNetConfig { hint_layer: 0, kd_weight: 0.5, warmup_epochs: Warmup::Epochs(4), ..Default::default() }).unwrap();
        let warm_terms = step_without_update(&mut warm, &Step::new(ctx, &batch, &s, Some(&t)).with_aux(&aux)).unwrap();
        let value = |terms: &LossTerms, name: &str| {
            terms.terms().iter().find(|(n, _)| n == name).map(|(_, v)| v.clone().into_scalar::<f32>()).unwrap()
        };
        for name in ["hint", "kd"] {
            assert!((value(&warm_terms, name) - value(&terms, name) / 4.0).abs() < 1e-6 * value(&terms, name).abs().max(1.0), "{name}");
        }
        assert_eq!(value(&warm_terms, "ce"), value(&terms, "ce"));
    }

    #[test]
    fn trains_the_regressor_through_the_trainer_and_resumes() {
        use kd_core::FrozenTeacher;
        use kd_core::train::parameter_values;
        use kd_testkit::{TinyConv, stop_and_resume};
        let device = Device::flex();
        // Student hint [2, 4, 4], teacher hint [3, 2, 2]: the stride-2 regressor.
        let teacher = FrozenTeacher::new(TinyConv::new(3, 2, &device), "tiny");
        let (first, resumed) = stop_and_resume(TinyConv::new(2, 1, &device.clone().autodiff()), &teacher, || {
            FitNet::new(FitNetConfig { hint_layer: 0, kd_weight: 0.5, ..Default::default() }).unwrap()
        });
        assert!(first.history[0].train_terms["hint"].is_finite() && first.history[0].train_terms["kd"] > 0.0);
        // The regressor (weights and BN statistics) was restored and trained on.
        assert_ne!(parameter_values(&first.aux), parameter_values(&resumed.aux));
        assert_eq!(parameter_values(&first.aux).len(), parameter_values(&resumed.aux).len());
    }
}
