//! Overhaul of feature distillation (Heo et al., ICCV 2019), in mdistiller's form.
//!
//! On the stages' outputs before their last ReLU (mdistiller's `preact_feats[1:]`, here
//! [`ModelOutput::preact`]), a learnable connector `r_k` (1x1 conv without bias, then
//! BatchNorm) maps the student's stage `k` to the teacher's channels, the teacher's is
//! average-pooled to the student's spatial size, and the partial L2 distance is
//!
//! `d(s, t) = (s - m)^2 [s > m, t <= m] + (s - t)^2 [s > t, m < t <= 0] + (s - t)^2 [t > 0]`
//!
//! with the per-channel margin `m_c = E[x | x < 0]` for `x ~ N(beta_c, gamma_c^2)`, the
//! teacher's BatchNorm before the stage's ReLU (`-|gamma| phi(z) / Phi(z) + beta`, `z =
//! -beta / |gamma|`; `-3 |gamma|` when `Phi(z) <= 0.001`). Per stage, the sum over channels and
//! positions of the batch mean; the stages are weighted `1 / 2^(n - 1 - k)` (the deepest 1):
//!
//! `L = w_ce * CE + w_ofd * sum_k 2^-(n-1-k) sum_{c,h,w} mean_b d(r_k(s_k), pool(t_k))`
//!
//! mdistiller `distillers/OFD.py` (`feat_loss`, `ConnectorConvBN`, `init_ofd_modules`,
//! `ofd_loss`); docs/methods.md, "OFD".

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use kd_core::Student;
use kd_core::check;
use kd_core::loss::cross_entropy_mean;
use kd_core::model::feature_shape;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{AuxModule, Distiller, KdError, LossTerms, ModelOutput, PreActivation, Result, Step, TeacherNeed, require_teacher};
use serde::{Deserialize, Serialize};

use crate::feature_maps::align_last;

/// The method's name.
pub const NAME: &str = "ofd";

/// Configuration of [`Ofd`]. Defaults: mdistiller's `OFD` config (`engine/cfg.py`: CE weight
/// 1.0, feature weight 0.001, connector kernel 1; `configs/cifar100/ofd.yaml` keeps them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfdConfig {
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the distillation term.
    pub feat_weight: f64,
    /// The connector's (odd) convolution kernel size, padded to keep the spatial size.
    pub kernel_size: usize,
}

impl Default for OfdConfig {
    fn default() -> Self {
        OfdConfig { ce_weight: 1.0, feat_weight: 0.001, kernel_size: 1 }
    }
}

impl OfdConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("OFD", &[("ce_weight", self.ce_weight), ("feat_weight", self.feat_weight)])?;
        if self.kernel_size.is_multiple_of(2) {
            return Err(KdError::InvalidConfig(format!(
                "OFD: kernel_size must be odd (the connector keeps the spatial size), got {}",
                self.kernel_size
            )));
        }
        Ok(())
    }
}

/// One stage's connector: convolution (no bias, `N(0, 2 / (k^2 C_t))` weights) then BatchNorm
/// (weight 1, bias 0), from the student's channels to the teacher's.
#[derive(Module, Debug)]
pub struct Connector {
    /// The convolution.
    pub conv: Conv2d,
    /// The BatchNorm after it.
    pub bn: BatchNorm,
}

impl Connector {
    /// A connector from `student_channels` to `teacher_channels` with a `kernel` x `kernel` convolution.
    pub fn new(student_channels: usize, teacher_channels: usize, kernel: usize, device: &Device) -> Self {
        let std = (2.0 / (kernel * kernel * teacher_channels) as f64).sqrt();
        let pad = (kernel - 1) / 2;
        let conv = Conv2dConfig::new([student_channels, teacher_channels], [kernel, kernel])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(false)
            .with_initializer(Initializer::Normal { mean: 0.0, std })
            .init(device);
        Connector { conv, bn: BatchNormConfig::new(teacher_channels).init(device) }
    }

    /// The student feature in the teacher's channels.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// OFD's learnable parts: one [`Connector`] per distilled stage, shallow to deep (checkpoints
/// name them `connectors.{k}.conv.weight`, `connectors.{k}.bn.gamma`, ...).
#[derive(Module, Debug)]
pub struct OfdParts {
    /// The connectors.
    pub connectors: Vec<Connector>,
}

impl AuxModule for OfdParts {}

/// The standard normal CDF and density at `z`, in f64 on the host.
fn normal_cdf_pdf(z: f64) -> (f64, f64) {
    (0.5 * erfc(-z / std::f64::consts::SQRT_2), (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt())
}

/// `erfc(x)` to about 1e-15 relative (W. J. Cody's rational approximations are not in `std`;
/// this is the continued fraction for large `|x|` and the Taylor series of `erf` for small).
fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf(x) = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        return 1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum;
    }
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), evaluated backwards.
    let mut frac = 0.0;
    for k in (1..=60).rev() {
        frac = (k as f64 / 2.0) / (x + frac);
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / (x + frac)
}

/// The margin of one channel: `E[x | x < 0]` for `x ~ N(bias, weight^2)`, or `-3 |weight|` when
/// `P(x < 0) <= 0.001` (mdistiller's `get_margin_from_BN`).
pub fn margin(weight: f64, bias: f64) -> f64 {
    let s = weight.abs();
    let (cdf, pdf) = normal_cdf_pdf(-bias / s);
    if cdf > 0.001 { -s * pdf / cdf + bias } else { -3.0 * s }
}

/// The margins of a stage, `[C]`, from its BatchNorm's weight and bias (read on the host).
pub fn margins(weight: &Tensor<1>, bias: &Tensor<1>) -> Result<Tensor<1>> {
    let read = |t: &Tensor<1>| -> Result<Vec<f64>> {
        t.clone()
            .without_autodiff()
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .map_err(|e| KdError::InvalidConfig(format!("OFD: reading the teacher's BatchNorm parameters: {e:?}")))
    };
    let (w, b) = (read(weight)?, read(bias)?);
    if w.len() != b.len() {
        return Err(KdError::ShapeMismatch {
            what: "OFD: teacher BatchNorm bias vs weight".into(),
            expected: vec![w.len()],
            actual: vec![b.len()],
        });
    }
    let m: Vec<f32> = w.iter().zip(&b).map(|(&w, &b)| margin(w, b) as f32).collect();
    Ok(Tensor::from_floats(m.as_slice(), &weight.device()))
}

/// The partial L2 distance of one stage, `[1]`: `source` (the connector's output) against
/// `target` (the teacher's pre-activation feature, pooled to the source's size) with `margin`
/// `[C]`; the sum over `[C, H, W]` of the batch mean.
pub fn partial_l2(source: Tensor<4>, target: Tensor<4>, margin: Tensor<1>) -> Tensor<1> {
    let [b, c, _, _] = source.dims();
    let m = margin.reshape([1, c, 1, 1]);
    let s_gt_m = source.clone().greater(m.clone());
    let t_le_m = target.clone().lower_equal(m.clone());
    let first = (source.clone() - m.clone()).square().mask_fill(s_gt_m.bool_and(t_le_m.clone()).bool_not(), 0.0);
    // Where the teacher is positive, or between the margin and 0 with the student above it.
    let active = target
        .clone()
        .greater_elem(0.0)
        .bool_or(source.clone().greater(target.clone()).bool_and(t_le_m.bool_not()).bool_and(target.clone().lower_equal_elem(0.0)));
    let second = (source - target).square().mask_fill(active.bool_not(), 0.0);
    (first + second).sum().div_scalar(b as f64).reshape([1])
}

/// The margins of the stages OFD distils from the teacher's BatchNorm parameters, `[C_t]` each
/// (the deepest `stages`, as the teacher's features pair).
pub fn stage_margins(teacher: &PreActivation, stages: usize) -> Result<Vec<Tensor<1>>> {
    let bns = &teacher.bn_before_relu;
    if bns.len() < stages {
        return Err(KdError::InvalidConfig(format!("OFD distils {stages} stages but the teacher gives {} BatchNorms", bns.len())));
    }
    bns[bns.len() - stages..].iter().map(|(w, b)| margins(w, b)).collect()
}

/// The OFD term, unweighted: the connectors on the student stages, each stage's partial L2
/// distance against the teacher's pre-activation stage pooled to its size with its `margins`
/// ([`stage_margins`]), weighted `2^-(n-1-k)`.
pub fn ofd_loss(parts: &OfdParts, student: &[Tensor<4>], teacher: &[Tensor<4>], margins: &[Tensor<1>]) -> Result<Tensor<1>> {
    let (s, t) = align_last(student, teacher);
    let n = parts.connectors.len();
    if s.len() != n || t.len() != n || margins.len() != n || n == 0 {
        return Err(KdError::InvalidConfig(format!(
            "OFD has {n} connectors but got {} student stages, {} teacher stages and {} margins",
            s.len(),
            t.len(),
            margins.len()
        )));
    }
    let mut total: Option<Tensor<1>> = None;
    for (k, (((connector, s), t), m)) in parts.connectors.iter().zip(s).zip(t).zip(margins).enumerate() {
        let source = connector.forward(s.clone());
        let [bs, cs, hs, ws] = source.dims();
        let [bt, ct, _, _] = t.dims();
        if bs != bt || cs != ct || m.dims() != [ct] {
            return Err(KdError::ShapeMismatch {
                what: format!("OFD stage {k}: connector output vs teacher pre-activation feature ({} margins)", m.dims()[0]),
                expected: t.dims().to_vec(),
                actual: source.dims().to_vec(),
            });
        }
        let target = adaptive_avg_pool2d(t.clone(), [hs, ws]);
        let l = partial_l2(source, target, m.clone()).div_scalar(2f64.powi((n - 1 - k) as i32));
        total = Some(match total {
            Some(acc) => acc + l,
            None => l,
        });
    }
    total.ok_or_else(|| KdError::InvalidConfig("OFD: no stage to distil".into()))
}

/// OFD as a [`Distiller`]; its connectors are the `Aux` module.
#[derive(Debug, Clone)]
pub struct Ofd {
    config: OfdConfig,
    /// The margins, from the frozen teacher's BatchNorms on the first step (read on the host
    /// once, not every step).
    margins: Option<Vec<Tensor<1>>>,
}

impl Ofd {
    /// An OFD distiller; the configuration is checked.
    pub fn new(config: OfdConfig) -> Result<Self> {
        config.validate()?;
        Ok(Ofd { config, margins: None })
    }

    /// The configuration.
    pub fn config(&self) -> &OfdConfig {
        &self.config
    }
}

impl Distiller<OfdParts> for Ofd {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::PreActivation
    }

    fn init_aux(&self, student: &ModelOutput, teacher: Option<&ModelOutput>, device: &Device) -> Result<OfdParts> {
        let teacher = require_teacher(NAME, teacher, "pre-activation features")?.preact(NAME, "teacher")?;
        let student = student.preact(NAME, "student")?;
        let (s, t) = align_last(&student.features, &teacher.features);
        if s.is_empty() {
            return Err(KdError::InvalidConfig(format!(
                "OFD: no stage to distil (the student has {} pre-activation features, the teacher {})",
                student.features.len(),
                teacher.features.len()
            )));
        }
        let k = self.config.kernel_size;
        Ok(OfdParts {
            connectors: s.iter().zip(t).map(|(s, t)| Connector::new(feature_shape(s)[0], feature_shape(t)[0], k, device)).collect(),
        })
    }

    fn loss(&mut self, step: &Step<'_, OfdParts>) -> Result<LossTerms> {
        let teacher = step.teacher(NAME, "pre-activation features")?.preact(NAME, "teacher")?;
        let student = step.student.preact(NAME, "student")?;
        let margins = match self.margins.take() {
            Some(m) => m,
            None => stage_margins(teacher, step.aux.connectors.len())?,
        };
        let ofd = ofd_loss(step.aux, &student.features, &teacher.features, &margins);
        self.margins = Some(margins);
        let ofd = ofd?.mul_scalar(self.config.feat_weight);
        let ce = cross_entropy_mean(step.student.logits.clone(), step.batch.labels.clone()).mul_scalar(self.config.ce_weight);
        Ok(LossTerms::new().with("ce", ce).with("ofd", ofd))
    }
}

/// The method by name: its configuration over the defaults, and the distiller.
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: OfdConfig = method_config(NAME, OfdConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Ofd::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use kd_core::distiller::step_without_update;

    fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
    }

    fn preact_output(features: Vec<Tensor<4>>, device: &Device) -> ModelOutput {
        let b = features[0].dims()[0];
        let bns = features.iter().map(|f| (Tensor::ones([f.dims()[1]], device), Tensor::zeros([f.dims()[1]], device))).collect();
        ModelOutput::new(Tensor::zeros([b, 3], device), Vec::new(), None).with_preact(PreActivation { features, bn_before_relu: bns })
    }

    #[test]
    fn margin_is_the_mean_of_the_negative_part() {
        // N(0, 1): E[x | x < 0] = -sqrt(2 / pi).
        assert!((margin(1.0, 0.0) + (2.0 / std::f64::consts::PI).sqrt()).abs() < 1e-12);
        // The sign of the weight does not matter; a scale multiplies the margin.
        assert!((margin(-2.0, 0.0) - 2.0 * margin(1.0, 0.0)).abs() < 1e-12);
        // N(1, 1): Phi(-1) = 0.158655253931457, phi(-1) = 0.241970724519143.
        assert!((margin(1.0, 1.0) - (1.0 - 0.241970724519143 / 0.158655253931457)).abs() < 1e-12);
        // Almost never negative: -3 |weight|.
        assert_eq!(margin(0.5, 10.0), -1.5);
        // erfc on both sides of the switch between series and continued fraction.
        for (x, e) in [(0.0, 1.0), (0.5, 0.4795001221869535), (1.9, 0.007209570764742524), (2.5, 0.000406952017444959)] {
            assert!((erfc(x) - e).abs() < 1e-12 * e, "erfc({x})");
            assert!((erfc(-x) - (2.0 - e)).abs() < 1e-12, "erfc(-{x})");
        }
    }

    #[test]
    fn partial_l2_by_hand() {
        let device = Device::flex();
        // One channel, margin -1; five positions covering each case.
        let s = [0.5f32, -2.0, 0.0, 1.0, -0.5];
        let t = [-2.0f32, -2.0, -0.5, 2.0, -0.2];
        // (s - m)^2 where s > m and t <= m; (s - t)^2 where s > t, m < t <= 0, or t > 0.
        let expected = 1.5f64.powi(2) + 0.0 + 0.5f64.powi(2) + 1.0 + 0.0;
        let tensor = |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, 1, 1, 5]), &device);
        let got = values(partial_l2(tensor(&s), tensor(&t), Tensor::from_floats([-1.0f32], &device)))[0];
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn stages_weighted_and_every_part_trained() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let d = Ofd::new(OfdConfig::default()).unwrap();
        // The teacher has one more stage (aligned on the deepest) and a larger last map.
        let s = preact_output(vec![random([3, 2, 4, 4], &ad).require_grad(), random([3, 4, 2, 2], &ad).require_grad()], &ad);
        let t = preact_output(vec![random([3, 5, 8, 8], &device), random([3, 6, 4, 4], &device), random([3, 7, 4, 4], &device)], &device);
        let parts = d.init_aux(&s.without_autodiff(), Some(&t), &ad).unwrap();
        assert_eq!(parts.connectors.len(), 2);
        let sp = s.preact.as_ref().unwrap();
        let tp = t.preact.as_ref().unwrap();
        let loss = ofd_loss(&parts, &sp.features, &tp.features, &stage_margins(tp, 2).unwrap()).unwrap();
        let grads = loss.backward();
        for c in &parts.connectors {
            assert!(c.conv.weight.val().grad(&grads).is_some() && c.bn.gamma.val().grad(&grads).is_some());
        }
        assert!(sp.features[0].grad(&grads).is_some() && sp.features[1].grad(&grads).is_some());
    }

    #[test]
    fn loss_terms_and_clear_errors() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        assert!(Ofd::new(OfdConfig { kernel_size: 2, ..Default::default() }).unwrap_err().to_string().contains("kernel_size"));
        // An odd kernel keeps the spatial size.
        assert_eq!(Connector::new(2, 3, 3, &device).forward(random([1, 2, 4, 5], &device)).dims(), [1, 3, 4, 5]);
        let mut d = Ofd::new(OfdConfig::default()).unwrap();
        let plain = ModelOutput::new(Tensor::zeros([2, 3], &device), vec![random([2, 3, 4, 4], &device)], None);
        let err = d.init_aux(&plain, Some(&plain), &ad).unwrap_err().to_string();
        assert!(err.contains("ofd") && err.contains("pre-activation"), "{err}");
        // A logits-only teacher (a cache) is refused by name.
        let s = preact_output(vec![random([2, 3, 4, 4], &ad)], &ad);
        let cache_like = ModelOutput::logits_only(Tensor::zeros([2, 3], &device));
        let err = d.init_aux(&s.without_autodiff(), Some(&cache_like), &ad).unwrap_err().to_string();
        assert!(err.contains("teacher") && err.contains("teacher cache"), "{err}");

        let t = preact_output(vec![random([2, 5, 4, 4], &device)], &device);
        let parts = d.init_aux(&s.without_autodiff(), Some(&t), &ad).unwrap();
        let batch = kd_testkit::label_batch(vec![0, 2], vec![0, 1], &device);
        let terms = step_without_update(&mut d, &Step::new(kd_testkit::ctx(1, 1), &batch, &s, Some(&t)).with_aux(&parts)).unwrap();
        let names: Vec<&str> = terms.terms().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ce", "ofd"]);
        assert!(values(terms.total().unwrap())[0].is_finite());
        let wrong = preact_output(vec![random([2, 6, 4, 4], &device)], &device);
        let err = d.loss(&Step::new(kd_testkit::ctx(1, 1), &batch, &s, Some(&wrong)).with_aux(&parts)).unwrap_err().to_string();
        assert!(err.contains("OFD stage 0"), "{err}");
    }

    #[test]
    fn trains_the_connectors_through_the_trainer_and_resumes() {
        use kd_core::FrozenTeacher;
        use kd_core::train::parameter_values;
        use kd_testkit::{TinyStages, stop_and_resume};
        let device = Device::flex();
        let teacher = FrozenTeacher::new(TinyStages::new(3, 2, &device), "tiny");
        let (first, resumed) =
            stop_and_resume(TinyStages::new(2, 1, &device.clone().autodiff()), &teacher, || Ofd::new(OfdConfig::default()).unwrap());
        assert!(first.history[0].train_terms["ofd"].is_finite());
        assert_eq!(parameter_values(&first.aux).len(), parameter_values(&resumed.aux).len());
        assert_ne!(parameter_values(&first.aux), parameter_values(&resumed.aux));
    }
}
