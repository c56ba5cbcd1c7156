//! Relational knowledge distillation (Park et al., CVPR 2019), in mdistiller's form.
//!
//! On the penultimate embeddings `e` (mdistiller's `pooled_feat`, here
//! [`ModelOutput::embedding`]) of the student and the teacher:
//! - distance term: pairwise Euclidean distances, each matrix divided by the mean of its
//!   off-diagonal entries, compared with smooth L1 (beta 1, mean over the `B x B` entries);
//! - angle term: for every triple `(i, j, k)`, the cosine of the angle at `j` between
//!   `e_i - e_j` and `e_k - e_j`, compared with smooth L1 (mean over the `B x B x B` entries).
//!
//! `L = w_ce * CE + w_dist * L_dist + w_angle * L_angle`
//! (mdistiller `distillers/RKD.py`, `rkd_loss` and `_pdist`; the teacher side is constant).

use burn::tensor::{Bool, Device, Tensor};
use kd_core::Student;
use kd_core::check;
use kd_core::loss::{cross_entropy_mean, smooth_l1_mean};
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{Distiller, KdError, LossTerms, Result, Step, TeacherNeed};
use serde::{Deserialize, Serialize};

use crate::feature_maps::l2_normalize;

/// The method's name.
pub const NAME: &str = "rkd";

/// Configuration of [`Rkd`]. Defaults: mdistiller's `RKD` config (`engine/cfg.py`: CE weight
/// 1.0, distance weight 25, angle weight 50, non-squared distances, eps 1e-12), which are also
/// the RKD paper's CIFAR weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RkdConfig {
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the distance term.
    pub distance_weight: f64,
    /// Weight of the angle term.
    pub angle_weight: f64,
    /// Use squared distances in the distance term.
    pub squared: bool,
    /// Floor of the squared distances before the square root (keeps its gradient finite).
    pub eps: f64,
}

impl Default for RkdConfig {
    fn default() -> Self {
        RkdConfig { ce_weight: 1.0, distance_weight: 25.0, angle_weight: 50.0, squared: false, eps: 1e-12 }
    }
}

impl RkdConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative(
            "RKD",
            &[("ce_weight", self.ce_weight), ("distance_weight", self.distance_weight), ("angle_weight", self.angle_weight)],
        )?;
        check::positive("RKD", &[("eps", self.eps)])
    }
}

/// `[batch, batch]` true on the diagonal.
fn diagonal_mask(n: usize, device: &Device) -> Tensor<2, Bool> {
    Tensor::<2>::eye(n, device).equal_elem(1.0)
}

/// Pairwise distances `[batch, batch]`, zero on the diagonal, as mdistiller's `_pdist`:
/// `|a|^2 + |b|^2 - 2 a.b`, floored at `eps`, square-rooted unless `squared`.
pub fn pairwise_distances(embedding: Tensor<2>, squared: bool, eps: f64) -> Tensor<2> {
    let n = embedding.dims()[0];
    let device = embedding.device();
    let sq_norm = embedding.clone().square().sum_dim(1); // [n, 1]
    let prod = embedding.clone().matmul(embedding.transpose());
    let dist = (sq_norm.clone() + sq_norm.transpose() - prod.mul_scalar(2.0)).clamp_min(eps);
    let dist = if squared { dist } else { dist.sqrt() };
    dist.mask_fill(diagonal_mask(n, &device), 0.0)
}

/// The distance term: smooth L1 between the two distance matrices, each divided by the mean of
/// its off-diagonal entries. `[1]`; zero for a batch of fewer than two samples.
pub fn rkd_distance_loss(student: Tensor<2>, teacher: Tensor<2>, squared: bool, eps: f64) -> Tensor<1> {
    let n = student.dims()[0];
    if n < 2 {
        return Tensor::zeros([1], &student.device());
    }
    // The floor makes every off-diagonal entry > 0, so "mean over entries > 0" (the reference)
    // is the sum over the n(n-1) off-diagonal entries.
    let pairs = (n * (n - 1)) as f64;
    let normalise = |d: Tensor<2>| {
        let mean = d.clone().sum().div_scalar(pairs);
        d / mean.unsqueeze::<2>()
    };
    let t = normalise(pairwise_distances(teacher, squared, eps));
    let s = normalise(pairwise_distances(student, squared, eps));
    smooth_l1_mean(s, t, 1.0)
}

/// Cosines of the angles of every triple, `[batch, batch, batch]`: entry `(j, i, k)` is the
/// cosine between `e_i - e_j` and `e_k - e_j` (0 where a difference vector is 0).
pub fn triple_angles(embedding: Tensor<2>) -> Tensor<3> {
    let diff = embedding.clone().unsqueeze_dim::<3>(0) - embedding.unsqueeze_dim::<3>(1); // [n, n, d]
    // `F.normalize`: a zero vector stays zero instead of 0/0.
    let unit = l2_normalize(diff, 2);
    unit.clone().matmul(unit.swap_dims(1, 2))
}

/// The angle term: smooth L1 between the two tables of [`triple_angles`]. `[1]`.
pub fn rkd_angle_loss(student: Tensor<2>, teacher: Tensor<2>) -> Tensor<1> {
    smooth_l1_mean(triple_angles(student), triple_angles(teacher), 1.0)
}

/// `w_dist * L_dist + w_angle * L_angle` on flattened embeddings `[batch, dim]`; the two
/// weighted terms are returned separately, `(distance, angle)`.
pub fn rkd_loss(student: Tensor<2>, teacher: Tensor<2>, config: &RkdConfig) -> (Tensor<1>, Tensor<1>) {
    let dist = rkd_distance_loss(student.clone(), teacher.clone(), config.squared, config.eps).mul_scalar(config.distance_weight);
    let angle = rkd_angle_loss(student, teacher).mul_scalar(config.angle_weight);
    (dist, angle)
}

/// RKD as a [`Distiller`]; needs the teacher's embeddings.
#[derive(Debug, Clone)]
pub struct Rkd {
    config: RkdConfig,
}

impl Rkd {
    /// An RKD distiller; the configuration is checked.
    pub fn new(config: RkdConfig) -> Result<Self> {
        config.validate()?;
        Ok(Rkd { config })
    }
}

impl Distiller for Rkd {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        // The embedding comes with a full teacher pass; a logits-only cache has none.
        TeacherNeed::LogitsAndFeatures
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let (teacher, student) = (step.teacher(NAME, "embeddings")?, step.student);
        let (student_embedding, teacher_embedding) = (student.embedding(NAME)?, teacher.embedding(NAME)?);
        let (s, t) = (student_embedding.dims(), teacher_embedding.dims());
        if s[0] != t[0] {
            return Err(KdError::ShapeMismatch { what: "RKD embeddings (batch)".into(), expected: vec![s[0]], actual: vec![t[0]] });
        }
        // Student and teacher dimensions may differ: the relations are compared, not the vectors.
        let (dist, angle) = rkd_loss(student_embedding.clone(), teacher_embedding.clone(), &self.config);
        let ce = cross_entropy_mean(student.logits.clone(), step.batch.labels.clone()).mul_scalar(self.config.ce_weight);
        Ok(LossTerms::new().with("ce", ce).with("rkd_distance", dist).with("rkd_angle", angle))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: RkdConfig = method_config(NAME, RkdConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Rkd::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn emb(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    #[test]
    fn zero_when_embeddings_equal_and_gradients_finite() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let values = vec![0.5f32, -1.0, 2.0, 0.0, 1.5, 0.3, -0.7, 0.9, 1.1, 1.1, 1.1, 1.1];
        let teacher = emb(values.clone(), [4, 3], &device);
        let student = emb(values, [4, 3], &ad).require_grad();
        let (d, a) = rkd_loss(student.clone(), teacher, &RkdConfig::default());
        assert_eq!(d.clone().into_scalar::<f32>(), 0.0);
        assert_eq!(a.clone().into_scalar::<f32>(), 0.0);
        let grads = (d + a).backward();
        let g = student.grad(&grads).unwrap().into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        assert!(g.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn positive_for_different_relations_and_scale_invariant_distance() {
        let device = Device::flex();
        let t = emb(vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0], [3, 2], &device);
        let s = emb(vec![0.0, 0.0, 3.0, 0.0, 0.0, 0.5], [3, 2], &device);
        assert!(rkd_distance_loss(s.clone(), t.clone(), false, 1e-12).into_scalar::<f32>() > 0.0);
        assert!(rkd_angle_loss(s, t.clone()).into_scalar::<f32>() > 0.0);
        // Scaling and translating the embedding leaves both relations unchanged.
        let scaled = t.clone().mul_scalar(7.0).add_scalar(1.0);
        assert!(rkd_distance_loss(scaled.clone(), t.clone(), false, 1e-12).into_scalar::<f32>() < 1e-6);
        assert!(rkd_angle_loss(scaled, t).into_scalar::<f32>() < 1e-6);
        // Student and teacher dims may differ; one sample gives a zero distance term.
        let one = emb(vec![1.0, 2.0], [1, 2], &device);
        assert_eq!(rkd_distance_loss(one.clone(), one, false, 1e-12).into_scalar::<f32>(), 0.0);
    }

    #[test]
    fn smooth_l1_values() {
        let device = Device::flex();
        let p = emb(vec![0.5, -2.0, 0.0], [1, 3], &device);
        let v =
            kd_core::loss::smooth_l1(p, Tensor::zeros([1, 3], &device), 1.0).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        assert_eq!(v, vec![0.125, 1.5, 0.0]);
    }

    #[test]
    fn angle_values_match_hand_computation() {
        let device = Device::flex();
        // Right angle at sample 0 between samples 1 and 2.
        let e = emb(vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0], [3, 2], &device);
        let a = triple_angles(e).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        // Entry (j, i, k) sits at 9j + 3i + k.
        let at = |j: usize, i: usize, k: usize| a[9 * j + 3 * i + k];
        // (0, 1, 2): cos 90 deg = 0; (0, 1, 1): 1; (1, 0, 2): cos 45 deg.
        assert!(at(0, 1, 2).abs() < 1e-6);
        assert!((at(0, 1, 1) - 1.0).abs() < 1e-6);
        assert!((at(1, 0, 2) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        // A zero difference vector gives a zero row.
        assert_eq!(at(0, 0, 1), 0.0);
    }
}
