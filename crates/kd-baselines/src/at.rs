//! Attention transfer (Zagoruyko & Komodakis, ICLR 2017), in mdistiller's form.
//!
//! The attention map of a stage output `F` (`[C, H, W]`) is `a(F) = vec(mean_c F_c^p)`, divided by
//! its L2 norm. On every stage after the stem (mdistiller's `feats[1:]`), with the larger map
//! average-pooled to the smaller one's size,
//!
//! `L_AT = sum_stages mean_{b, hw} (a(F_s) - a(F_t))^2`, and `L = w_ce * CE + w_at * L_AT`
//!
//! (mdistiller `distillers/AT.py`, `at_loss`; the teacher side is constant).

use burn::tensor::Tensor;
use kd_core::Student;
use kd_core::check;
use kd_core::loss::cross_entropy_mean;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{Distiller, LossTerms, Result, Step, TeacherNeed};
use serde::{Deserialize, Serialize};

use crate::feature_maps::{l2_normalize, match_sizes, stage_pairs, sum_over_stages};

/// The method's name.
pub const NAME: &str = "at";

/// Configuration of [`At`]. Defaults: mdistiller's `AT` config (`engine/cfg.py`: `P` 2, CE
/// weight 1.0, feature weight 1000.0; the CIFAR-100 configs keep them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AtConfig {
    /// The exponent `p` of the attention map.
    pub p: f64,
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the attention term.
    pub feat_weight: f64,
}

impl Default for AtConfig {
    fn default() -> Self {
        AtConfig { p: 2.0, ce_weight: 1.0, feat_weight: 1000.0 }
    }
}

impl AtConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("AT", &[("ce_weight", self.ce_weight), ("feat_weight", self.feat_weight)])?;
        check::positive("AT", &[("p", self.p)])
    }
}

/// The normalised attention map of a stage output, `[batch, H * W]`.
pub fn attention_map(feature: Tensor<4>, p: f64) -> Tensor<2> {
    let [b, _, h, w] = feature.dims();
    let powered = if p == 2.0 {
        feature.square()
    } else if p.fract() == 0.0 {
        // An integer power of a negative value is defined (as in PyTorch), while `powf` may
        // go through `exp(p log x)` and give NaN: the power of |x|, with x's sign for odd p.
        let magnitude = feature.clone().abs().powf_scalar(p);
        if p % 2.0 == 0.0 { magnitude } else { magnitude * feature.sign() }
    } else {
        feature.powf_scalar(p)
    };
    l2_normalize(powered.mean_dim(1).reshape([b, h * w]), 1)
}

/// One stage's term: `mean (a(F_s) - a(F_t))^2` after [`match_sizes`]. `[1]`.
pub fn single_stage_at_loss(student: Tensor<4>, teacher: Tensor<4>, p: f64, stage: usize) -> Result<Tensor<1>> {
    let (s, t) = match_sizes("AT", stage, student, teacher)?;
    Ok((attention_map(s, p) - attention_map(t, p)).square().mean())
}

/// `L_AT` over paired stages (`stages[i]` is stage `i + 1`, as `feats[1:]`). `[1]`.
pub fn at_loss(stages: Vec<(Tensor<4>, Tensor<4>)>, p: f64) -> Result<Tensor<1>> {
    sum_over_stages("AT", stages, |s, t, stage| single_stage_at_loss(s, t, p, stage))
}

/// AT as a [`Distiller`]; reads the teacher's stage outputs.
#[derive(Debug, Clone)]
pub struct At {
    config: AtConfig,
}

impl At {
    /// An AT distiller; the configuration is checked.
    pub fn new(config: AtConfig) -> Result<Self> {
        config.validate()?;
        Ok(At { config })
    }
}

impl Distiller for At {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::LogitsAndFeatures
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let (teacher, student) = (step.teacher(NAME, "stage features")?, step.student);
        let at = at_loss(stage_pairs("AT", student, teacher)?, self.config.p)?.mul_scalar(self.config.feat_weight);
        let ce = cross_entropy_mean(student.logits.clone(), step.batch.labels.clone()).mul_scalar(self.config.ce_weight);
        Ok(LossTerms::new().with("ce", ce).with("at", at))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: AtConfig = method_config(NAME, AtConfig::default(), user)?;
    Prepared::new(NAME, &cfg, At::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use kd_core::ModelOutput;

    fn map(values: Vec<f32>, shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn output(features: Vec<Tensor<4>>, device: &Device) -> ModelOutput {
        let b = features[0].dims()[0];
        ModelOutput::new(Tensor::zeros([b, 3], device), features, None)
    }

    #[test]
    fn attention_map_and_pooling_by_hand() {
        let device = Device::flex();
        // One sample, two channels, 2x2: mean of squares per pixel is [1, 4, 0, 0] -> norm sqrt(17).
        let f = map(vec![1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0], [1, 2, 2, 2], &device);
        let a = attention_map(f, 2.0).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let n = 17f32.sqrt();
        for (x, e) in a.iter().zip([1.0 / n, 4.0 / n, 0.0, 0.0]) {
            assert!((x - e).abs() < 1e-6, "{a:?}");
        }
        // A 4x4 student against a 2x2 teacher of the pooled values: zero loss.
        let s = map((0..16).map(|i| i as f32).collect(), [1, 1, 4, 4], &device);
        let t = map(vec![2.5, 4.5, 10.5, 12.5], [1, 1, 2, 2], &device);
        assert!(single_stage_at_loss(s.clone(), t.clone(), 1.0, 1).unwrap().into_scalar::<f32>() < 1e-10);
        // ... and the other way round (the teacher is pooled).
        assert!(single_stage_at_loss(t, s, 1.0, 1).unwrap().into_scalar::<f32>() < 1e-10);
        // Integer powers of negative values: p = 3 keeps the sign, p = 4 drops it.
        let neg = map(vec![-1.0, 2.0], [1, 1, 1, 2], &device);
        let cubed = attention_map(neg.clone(), 3.0).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let n = 65f32.sqrt();
        assert!((cubed[0] + 1.0 / n).abs() < 1e-6 && (cubed[1] - 8.0 / n).abs() < 1e-6, "{cubed:?}");
        let fourth = attention_map(neg, 4.0).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert!(fourth.iter().all(|v| v.is_finite() && *v > 0.0), "{fourth:?}");
        // A width that cannot pair is a clear error.
        let err = single_stage_at_loss(map(vec![0.0; 6], [1, 1, 2, 3], &device), map(vec![0.0; 4], [1, 1, 2, 2], &device), 2.0, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("AT features[2]"), "{err}");
    }

    #[test]
    fn distiller_reads_stages_after_the_stem() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let rand = |shape: [usize; 4], d: &Device| Tensor::<4>::random(shape, burn::tensor::Distribution::Uniform(0.0, 1.0), d);
        // The stems differ wildly (and could not pair): only features[1..] are read.
        let s = output(vec![rand([2, 1, 3, 5], &ad), rand([2, 3, 4, 4], &ad), rand([2, 4, 2, 2], &ad)], &ad);
        let t = output(vec![rand([2, 7, 9, 9], &device), rand([2, 5, 8, 8], &device), rand([2, 6, 2, 2], &device)], &device);
        let mut d = At::new(AtConfig::default()).unwrap();
        let batch = kd_testkit::label_batch(vec![0, 2], vec![0, 1], &device);
        let terms = kd_core::distiller::step_without_update(&mut d, &Step::new(kd_testkit::ctx(1, 1), &batch, &s, Some(&t))).unwrap();
        let names: Vec<&str> = terms.terms().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ce", "at"]);
        assert!(terms.total().unwrap().into_scalar::<f32>().is_finite());
        // Different stage counts and a logits-only teacher are errors that say so.
        let short = output(vec![rand([2, 1, 3, 5], &device), rand([2, 5, 8, 8], &device)], &device);
        let err = d.loss(&Step::new(kd_testkit::ctx(1, 1), &batch, &s, Some(&short))).unwrap_err().to_string();
        assert!(err.contains("student has 3 feature maps and the teacher 2"), "{err}");
        assert!(At::new(AtConfig { p: 0.0, ..Default::default() }).unwrap_err().to_string().contains("p must"));
    }
}
