//! Correlation congruence (Peng et al., ICCV 2019), in RepDistiller's form.
//!
//! Two learnable linear heads map the student's and the teacher's penultimate embeddings
//! ([`kd_core::ModelOutput::embedding`], RepDistiller's `feat[-1]`) to a common width `d`
//! (`feat_dim`, 128): `f_s = W_s e_s + b_s`, `f_t = W_t e_t + b_t`. With `delta_i = |f_s,i - f_t,i|`
//! for the batch rows `i`,
//!
//! `L_CC = mean_{i < B-1} sum_k delta_i,k delta_i+1,k`, and `L = w_ce * CE + w_cc * L_CC`
//!
//! (RepDistiller `distiller_zoo/CC.py`, `Correlation`, as `helper/loops.py` and
//! `train_student.py` use it: `LinearEmbed` heads on both sides, both trained with the student;
//! the teacher's embedding itself is constant). Both heads are this method's `Aux` module.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use kd_core::Student;
use kd_core::check;
use kd_core::loss::cross_entropy_mean;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{AuxModule, Distiller, KdError, LossTerms, ModelOutput, Result, Step, TeacherNeed, require_teacher};
use serde::{Deserialize, Serialize};

/// The method's name.
pub const NAME: &str = "cc";

/// Configuration of [`Cc`]. Defaults: RepDistiller's CIFAR-100 run of `correlation`
/// (`scripts/run_cifar_distill.sh`: `-r 1 -a 0 -b 0.02`, i.e. CE weight 1, no KD term, CC weight
/// 0.02; `train_student.py`: `--feat_dim 128`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CcConfig {
    /// Weight of the cross-entropy with the labels (RepDistiller's `gamma`).
    pub ce_weight: f64,
    /// Weight of the correlation term (RepDistiller's `beta`).
    pub feat_weight: f64,
    /// Width of the two heads' outputs.
    pub feat_dim: usize,
}

impl Default for CcConfig {
    fn default() -> Self {
        CcConfig { ce_weight: 1.0, feat_weight: 0.02, feat_dim: 128 }
    }
}

impl CcConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("CC", &[("ce_weight", self.ce_weight), ("feat_weight", self.feat_weight)])?;
        if self.feat_dim == 0 {
            return Err(KdError::InvalidConfig("CC feat_dim must be > 0".into()));
        }
        Ok(())
    }
}

/// The two linear heads (RepDistiller's `embed_s`, `embed_t`), initialised as PyTorch's
/// `nn.Linear` (uniform in `+-1/sqrt(fan_in)`, weight and bias).
#[derive(Module, Debug)]
pub struct CcHeads {
    /// Student embedding -> `feat_dim`.
    pub student: Linear,
    /// Teacher embedding -> `feat_dim`.
    pub teacher: Linear,
}

impl AuxModule for CcHeads {}

impl CcHeads {
    /// Heads for student and teacher embedding widths.
    pub fn new(student_dim: usize, teacher_dim: usize, feat_dim: usize, device: &Device) -> Self {
        CcHeads {
            student: LinearConfig::new(student_dim, feat_dim).init(device),
            teacher: LinearConfig::new(teacher_dim, feat_dim).init(device),
        }
    }

    /// `L_CC` of the projected embeddings; checks the widths and batch sizes. `[1]`.
    pub fn loss(&self, student: Tensor<2>, teacher: Tensor<2>) -> Result<Tensor<1>> {
        let (s, t) = (student.dims(), teacher.dims());
        let (ws, wt) = (self.student.weight.dims()[0], self.teacher.weight.dims()[0]);
        if s[1] != ws || t[1] != wt || s[0] != t[0] {
            return Err(KdError::ShapeMismatch {
                what: format!("CC embeddings [batch, dim] for heads of {ws} (student) and {wt} (teacher) inputs: teacher vs student {s:?}"),
                expected: vec![s[0], wt],
                actual: t.to_vec(),
            });
        }
        Ok(correlation_congruence(self.student.forward(student), self.teacher.forward(teacher.detach())))
    }
}

/// `mean_{i < B-1} sum_k |f_s - f_t|_i,k |f_s - f_t|_i+1,k` over projected embeddings
/// `[batch, d]`. `[1]`; zero for a batch of fewer than two rows (where the reference's mean is
/// over nothing, NaN).
pub fn correlation_congruence(student: Tensor<2>, teacher: Tensor<2>) -> Tensor<1> {
    let [b, d] = student.dims();
    if b < 2 {
        return Tensor::zeros([1], &student.device());
    }
    let delta = (student - teacher).abs();
    let products = delta.clone().slice([0..b - 1, 0..d]) * delta.slice([1..b, 0..d]);
    products.sum_dim(1).mean()
}

/// CC as a [`Distiller`]; its two heads are the `Aux` module.
#[derive(Debug, Clone)]
pub struct Cc {
    config: CcConfig,
}

impl Cc {
    /// A CC distiller; the configuration is checked.
    pub fn new(config: CcConfig) -> Result<Self> {
        config.validate()?;
        Ok(Cc { config })
    }
}

impl Distiller<CcHeads> for Cc {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::LogitsAndFeatures
    }

    fn init_aux(&self, student: &ModelOutput, teacher: Option<&ModelOutput>, device: &Device) -> Result<CcHeads> {
        let teacher = require_teacher(NAME, teacher, "embeddings")?;
        let (s, t) = (student.embedding(NAME)?.dims()[1], teacher.embedding(NAME)?.dims()[1]);
        Ok(CcHeads::new(s, t, self.config.feat_dim, device))
    }

    fn loss(&mut self, step: &Step<'_, CcHeads>) -> Result<LossTerms> {
        let (teacher, student) = (step.teacher(NAME, "embeddings")?, step.student);
        let (s, t) = (student.embedding(NAME)?, teacher.embedding(NAME)?);
        let cc = step.aux.loss(s.clone(), t.clone())?.mul_scalar(self.config.feat_weight);
        let ce = cross_entropy_mean(student.logits.clone(), step.batch.labels.clone()).mul_scalar(self.config.ce_weight);
        Ok(LossTerms::new().with("ce", ce).with("cc", cc))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: CcConfig = method_config(NAME, CcConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Cc::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn emb(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    #[test]
    fn congruence_by_hand() {
        let device = Device::flex();
        // delta rows [1, 2], [3, 0], [1, 1] -> (1*3 + 2*0 + 3*1 + 0*1) / 2 = 3.
        let s = emb(vec![1.0, 2.0, -3.0, 0.0, 1.0, 1.0], [3, 2], &device);
        let v = correlation_congruence(s.clone(), Tensor::zeros([3, 2], &device)).into_scalar::<f32>();
        assert!((v - 3.0).abs() < 1e-6, "{v}");
        assert_eq!(correlation_congruence(s.slice([0..1, 0..2]), Tensor::zeros([1, 2], &device)).into_scalar::<f32>(), 0.0);
    }

    #[test]
    fn heads_train_and_shapes_are_checked() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let out = |dim: usize, d: &Device| {
            ModelOutput::new(
                Tensor::zeros([4, 3], d),
                vec![],
                Some(Tensor::random([4, dim], burn::tensor::Distribution::Normal(0.0, 1.0), d)),
            )
        };
        let (s, t) = (out(5, &ad), out(7, &device));
        let mut d = Cc::new(CcConfig { feat_dim: 6, ..Default::default() }).unwrap();
        let heads = d.init_aux(&s.without_autodiff(), Some(&t), &ad).unwrap();
        assert_eq!(heads.student.weight.dims(), [5, 6]);
        assert_eq!(heads.teacher.weight.dims(), [7, 6]);
        let batch = kd_testkit::label_batch(vec![0, 2, 1, 1], vec![0, 1, 2, 3], &device);
        let step = Step::new(kd_testkit::ctx(1, 1), &batch, &s, Some(&t)).with_aux(&heads);
        let terms = kd_core::distiller::step_without_update(&mut d, &step).unwrap();
        let total = terms.total().unwrap();
        let grads = total.backward();
        // Both heads get gradients (the teacher's head is trained too).
        assert!(heads.teacher.weight.val().grad(&grads).is_some());
        assert!(heads.student.weight.val().grad(&grads).is_some());
        let err = heads.loss(Tensor::zeros([4, 3], &device), Tensor::zeros([4, 7], &device)).unwrap_err().to_string();
        assert!(err.contains("CC embeddings"), "{err}");
        assert!(Cc::new(CcConfig { feat_dim: 0, ..Default::default() }).is_err());
    }
}
