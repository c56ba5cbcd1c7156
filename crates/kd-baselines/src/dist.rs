//! DIST: knowledge distillation from a stronger teacher (Huang et al., NeurIPS 2022).
//!
//! With `Y^X = softmax(z^X / T)` over a batch (rows: samples, columns: classes) and the Pearson
//! correlation `rho(u, v) = cos(u - mean(u), v - mean(v))`, where `cos(a, b) = a.b / (|a| |b| + eps)`:
//! - inter-class relation: `1 - mean_i rho(Y^S_i, Y^T_i)` over the rows,
//! - intra-class relation: the same over the columns (`Y^T` transposed),
//! - `L = w_ce * CE(z_s, y) + beta * T^2 * inter + gamma * T^2 * intra`
//!
//! (hunto/DIST_KD `dist_kd.py`, `DIST.forward`; defaults beta = gamma = tau = 1 and weight 1 on
//! the label loss, as the official loss and training code set them). A row or column whose
//! values are all equal has no direction: its correlation is 0 (the `eps`), and its gradient 0,
//! as PyTorch's `norm` gives; the norms here add 1e-30 under the square root for that, which
//! moves no value above 1e-15. A relation over single values (the intra-class term of a batch
//! of one) is the constant 1, as in the reference, without computing it.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use kd_core::loss::cross_entropy_mean;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{Distiller, LossTerms, Result, Step, Student, check};
use serde::{Deserialize, Serialize};

/// The method's name.
pub const NAME: &str = "dist";

/// `eps` of the reference's cosine similarity.
const COSINE_EPS: f64 = 1e-8;

/// Configuration of [`Dist`]. Defaults: the official code's (`DIST(beta=1.0, gamma=1.0,
/// tau=1.0)`, label-loss weight 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistConfig {
    /// Softmax temperature T (the paper's tau).
    pub temperature: f64,
    /// Weight beta of the inter-class relation.
    pub beta: f64,
    /// Weight gamma of the intra-class relation.
    pub gamma: f64,
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig { temperature: 1.0, beta: 1.0, gamma: 1.0, ce_weight: 1.0 }
    }
}

impl DistConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::positive("DIST", &[("temperature", self.temperature)])?;
        check::non_negative("DIST", &[("beta", self.beta), ("gamma", self.gamma), ("ce_weight", self.ce_weight)])
    }
}

/// `1 - mean_i rho(a_i, b_i)`, the mean Pearson correlation of the rows of `a` and `b`
/// (`[rows, n]`) subtracted from 1; `[1]`.
pub fn relation_loss(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let [_, n] = a.dims();
    if n < 2 {
        // One value per row: centred, it is 0, so the correlation is 0 and the term a constant
        // 1 (the reference's value and gradient). Computed, the centring can leave rounding
        // noise (fused kernels recompute the values), which `eps` would amplify.
        return Tensor::ones([1], &a.device());
    }
    let centre = |x: Tensor<2>| x.clone() - x.mean_dim(1);
    let (a, b) = (centre(a), centre(b));
    let norm = |x: &Tensor<2>| x.clone().powi_scalar(2).sum_dim(1).add_scalar(1e-30).sqrt();
    let rho = (a.clone() * b.clone()).sum_dim(1) / (norm(&a) * norm(&b)).add_scalar(COSINE_EPS);
    rho.mean().neg().add_scalar(1.0)
}

/// The two weighted DIST terms `(beta T^2 inter, gamma T^2 intra)`, each `[1]`.
pub fn dist_terms(student_logits: Tensor<2>, teacher_logits: Tensor<2>, config: &DistConfig) -> (Tensor<1>, Tensor<1>) {
    let t = config.temperature;
    let y_s = softmax(student_logits.div_scalar(t), 1);
    let y_t = softmax(teacher_logits.div_scalar(t), 1);
    let inter = relation_loss(y_s.clone(), y_t.clone()).mul_scalar(config.beta * t * t);
    let intra = relation_loss(y_s.transpose(), y_t.transpose()).mul_scalar(config.gamma * t * t);
    (inter, intra)
}

/// DIST as a [`Distiller`].
#[derive(Debug, Clone)]
pub struct Dist {
    config: DistConfig,
}

impl Dist {
    /// A DIST distiller; the configuration is checked.
    pub fn new(config: DistConfig) -> Result<Self> {
        config.validate()?;
        Ok(Dist { config })
    }
}

impl Distiller for Dist {
    fn name(&self) -> &str {
        NAME
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let teacher = step.logit_teacher(NAME)?;
        let student = &step.student.logits;
        let ce = cross_entropy_mean(student.clone(), step.batch.labels.clone()).mul_scalar(self.config.ce_weight);
        let (inter, intra) = dist_terms(student.clone(), teacher.logits.clone(), &self.config);
        Ok(LossTerms::new().with("ce", ce).with("inter", inter).with("intra", intra))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: DistConfig = method_config(NAME, DistConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Dist::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn matrix(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_scalar::<f32>() as f64
    }

    #[test]
    fn relation_is_zero_for_equal_rows_two_for_opposite_and_matches_a_hand_computation() {
        let device = Device::flex();
        let a = matrix(vec![1.0, 2.0, 3.0, 0.0, 1.0, 0.0], [2, 3], &device);
        assert!(scalar(relation_loss(a.clone(), a.clone())).abs() < 1e-6);
        assert!((scalar(relation_loss(a.clone(), a.clone().neg())) - 2.0).abs() < 1e-6);
        // Row 1: rho([1,2,3], [3,1,2]) = (-1*1 + 0*-1 + 1*0) / (sqrt 2 * sqrt 2) = -0.5;
        // row 2: rho([0,1,0], [0,1,0]) = 1. Loss: 1 - (-0.5 + 1) / 2 = 0.75.
        let b = matrix(vec![3.0, 1.0, 2.0, 0.0, 1.0, 0.0], [2, 3], &device);
        assert!((scalar(relation_loss(a, b)) - 0.75).abs() < 1e-6);
    }

    #[test]
    fn a_constant_row_has_no_correlation_and_a_finite_gradient() {
        let device = Device::flex().autodiff();
        let student = matrix(vec![0.0, 0.0, 0.0, 1.0, -1.0, 2.0], [2, 3], &device).require_grad();
        let teacher = matrix(vec![1.0, 2.0, 0.5, 0.3, 0.1, 2.0], [2, 3], &device);
        let (inter, intra) = dist_terms(student.clone(), teacher, &DistConfig { temperature: 4.0, ..Default::default() });
        let grads = (inter + intra).backward();
        let g: Vec<f32> = student.grad(&grads).unwrap().into_data().convert::<f32>().try_to_vec().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        // A batch of one: every class column is constant, so the intra relation is 1 - 0.
        let one = matrix(vec![0.5, -1.0, 2.0], [1, 3], &Device::flex());
        let (_, intra) = dist_terms(one.clone(), one, &DistConfig::default());
        assert!((scalar(intra) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Dist::new(DistConfig { temperature: 0.0, ..Default::default() }).is_err());
        assert!(Dist::new(DistConfig { beta: -1.0, ..Default::default() }).is_err());
    }
}
