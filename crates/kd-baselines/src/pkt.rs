//! Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018), in mdistiller's form.
//!
//! On the penultimate embeddings `e` ([`kd_core::ModelOutput::embedding`], mdistiller's
//! `pooled_feat`), each normalised as `e / (|e|_2 + eps)`, the cosine similarities
//! `K_ij = (1 + cos(e_i, e_j)) / 2` become, row by row, conditional probabilities
//! `P_ij = K_ij / sum_j K_ij`; the student matches the teacher's by the KL divergence
//!
//! `L_PKT = mean_{i, j} P^t_ij log((P^t_ij + eps) / (P^s_ij + eps))`, and
//! `L = w_ce * CE + w_pkt * L_PKT`
//!
//! (mdistiller `distillers/PKT.py`, `pkt_loss`; the teacher side is constant). Student and
//! teacher dimensions may differ.

use burn::tensor::Tensor;
use kd_core::Student;
use kd_core::check;
use kd_core::loss::cross_entropy_mean;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{Distiller, KdError, LossTerms, Result, Step, TeacherNeed};
use serde::{Deserialize, Serialize};

/// The method's name.
pub const NAME: &str = "pkt";

/// Configuration of [`Pkt`]. Defaults: mdistiller's `PKT` config (`engine/cfg.py`: CE weight
/// 1.0, feature weight 30000.0; the CIFAR-100 configs keep them) and `pkt_loss`'s `eps` 1e-7.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PktConfig {
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the KL term.
    pub feat_weight: f64,
    /// Added to the norms and inside the KL's logarithm.
    pub eps: f64,
}

impl Default for PktConfig {
    fn default() -> Self {
        PktConfig { ce_weight: 1.0, feat_weight: 30000.0, eps: 1e-7 }
    }
}

impl PktConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("PKT", &[("ce_weight", self.ce_weight), ("feat_weight", self.feat_weight)])?;
        check::positive("PKT", &[("eps", self.eps)])
    }
}

/// The conditional probabilities `P_ij` of an embedding batch, `[batch, batch]`.
pub fn similarity_probabilities(embedding: Tensor<2>, eps: f64) -> Tensor<2> {
    // The floor under the squared norm only keeps the root's gradient finite at a zero row
    // (the reference then gives NaN, which its `f[f != f] = 0` does not reach); far below eps.
    let norm = embedding.clone().square().sum_dim(1).clamp_min(1e-30).sqrt();
    let unit = embedding / norm.add_scalar(eps);
    let kernel = unit.clone().matmul(unit.transpose()).add_scalar(1.0).div_scalar(2.0);
    kernel.clone() / kernel.sum_dim(1)
}

/// `L_PKT` between student and teacher embeddings `[batch, dim]` (batch sizes checked). `[1]`.
pub fn pkt_loss(student: Tensor<2>, teacher: Tensor<2>, eps: f64) -> Result<Tensor<1>> {
    let (s, t) = (student.dims(), teacher.dims());
    if s[0] != t[0] {
        return Err(KdError::ShapeMismatch {
            what: format!("PKT embeddings: teacher batch vs student {s:?}"),
            expected: vec![s[0]],
            actual: t.to_vec(),
        });
    }
    if s[0] < 2 {
        // One sample: both distributions are [[1]], the loss is 0 and so is its gradient. Said
        // directly: wgpu's kernels (cubecl 0.11.3) give the 1x1 computation a wrong gradient.
        return Ok(student.sum().mul_scalar(0.0));
    }
    let p_s = similarity_probabilities(student, eps);
    let p_t = similarity_probabilities(teacher.detach(), eps);
    let ratio = (p_t.clone().add_scalar(eps) / p_s.add_scalar(eps)).log();
    Ok((p_t * ratio).mean())
}

/// PKT as a [`Distiller`]; reads the teacher's embeddings.
#[derive(Debug, Clone)]
pub struct Pkt {
    config: PktConfig,
}

impl Pkt {
    /// A PKT distiller; the configuration is checked.
    pub fn new(config: PktConfig) -> Result<Self> {
        config.validate()?;
        Ok(Pkt { config })
    }
}

impl Distiller for Pkt {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        // The embedding comes with a full teacher pass; a logits-only cache has none.
        TeacherNeed::LogitsAndFeatures
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let (teacher, student) = (step.teacher(NAME, "embeddings")?, step.student);
        let (s, t) = (student.embedding(NAME)?, teacher.embedding(NAME)?);
        let pkt = pkt_loss(s.clone(), t.clone(), self.config.eps)?.mul_scalar(self.config.feat_weight);
        let ce = cross_entropy_mean(student.logits.clone(), step.batch.labels.clone()).mul_scalar(self.config.ce_weight);
        Ok(LossTerms::new().with("ce", ce).with("pkt", pkt))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: PktConfig = method_config(NAME, PktConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Pkt::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn emb(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    #[test]
    fn probabilities_by_hand_and_zero_loss_for_the_same_geometry() {
        let device = Device::flex();
        // Orthogonal rows: K = [[1, .5], [.5, 1]] -> P rows [2/3, 1/3].
        let p = similarity_probabilities(emb(vec![2.0, 0.0, 0.0, 3.0], [2, 2], &device), 0.0)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        for (x, e) in p.iter().zip([2.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0]) {
            assert!((x - e).abs() < 1e-6, "{p:?}");
        }
        // A rotated, rescaled copy with another width has the same similarities.
        let t = emb(vec![1.0, 0.0, 0.6, 0.8, 0.0, 1.0], [3, 2], &device);
        let s = emb(vec![0.0, 5.0, 0.0, 0.0, 4.0, 3.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0], [3, 4], &device);
        assert!(pkt_loss(s, t.clone(), 1e-7).unwrap().into_scalar::<f32>().abs() < 1e-6);
        let other = emb(vec![1.0, 0.0, -1.0, 0.0, 0.0, 1.0], [3, 2], &device);
        assert!(pkt_loss(other, t.clone(), 1e-7).unwrap().into_scalar::<f32>() > 0.0);
        assert!(pkt_loss(emb(vec![1.0, 2.0], [1, 2], &device), t, 1e-7).unwrap_err().to_string().contains("PKT"));
    }

    #[test]
    fn zero_embedding_gives_finite_gradients() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let s = emb(vec![0.0, 0.0, 1.0, 2.0], [2, 2], &ad).require_grad();
        let t = emb(vec![1.0, 0.0, 0.0, 1.0], [2, 2], &device);
        let grads = pkt_loss(s.clone(), t, 1e-7).unwrap().backward();
        let g = s.grad(&grads).unwrap().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        assert!(Pkt::new(PktConfig { eps: 0.0, ..Default::default() }).is_err());
    }
}
