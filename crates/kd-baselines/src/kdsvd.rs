//! Self-supervised knowledge distillation using singular value decomposition (Lee et al., ECCV
//! 2018), in mdistiller's form (`KDSVD`).
//!
//! Each stage output after the stem (`feats[1:]`), viewed per sample as the matrix
//! `X = [C * H, W]`, is summarised by its top right singular vectors: the teacher's `k`
//! (`v_t,1..k`, with singular values `s_t`), the student's `k + 3`. Each teacher vector is
//! paired with the student vector of largest `|cos|`, sign-flipped to agree with it; both are
//! scaled by the L2-normalised `s_t`. Between consecutive stages `i - 1`, `i` the entries are
//! compared through an RBF, `R_ab,j = exp(-(v_i[a, j] - v_i-1[b, j])^2 / 8)`, and
//!
//! `L_SVD = sum_{i >= 1} sum_{a, b, j} (R^s_ab,j - R^t_ab,j)^2 / B`, `L = w_ce * CE + w_svd * L_SVD`
//!
//! (mdistiller `distillers/KDSVD.py`, `kdsvd_loss`, `svd`, `align_rsv`).
//!
//! Burn has no differentiable SVD. The right singular vectors of `X` are the eigenvectors of
//! the small Gram matrix `G = X^T X` (`[W, W]`), decomposed on the host in f64 (cyclic Jacobi);
//! the gradient is first-order eigenvector perturbation, `dv_j = sum_{l != j} v_l (v_l^T dG v_j)
//! / (lambda_j - lambda_l)`, written as tensor operations whose value is exactly the host's
//! vectors (`G - detach(G)` is exactly zero), so autodiff gives the same gradient as
//! `torch.svd`'s backward for the right singular vectors. Pairs of equal eigenvalues (no
//! well-defined derivative; the reference gives inf or NaN) contribute no gradient.
//!
//! A singular vector's sign is arbitrary and LAPACK leaves it to the implementation (MKL,
//! OpenBLAS and cuSOLVER differ), yet the RBF between stages depends on the teacher's signs.
//! This implementation makes the entry of largest magnitude of every vector negative (the sign
//! MKL usually gives a non-negative map's top vector); the golden cases run the reference with
//! `torch.svd`'s signs fixed by the same rule. The student's signs do not matter (the
//! alignment flips them).

use burn::tensor::{Device, Tensor, TensorData};
use kd_core::Student;
use kd_core::check;
use kd_core::loss::cross_entropy_mean;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{Distiller, KdError, LossTerms, Result, Step, TeacherNeed};
use serde::{Deserialize, Serialize};

use crate::feature_maps::{l2_normalize, stage_pairs};

/// The method's name.
pub const NAME: &str = "kdsvd";

/// Configuration of [`KdSvd`]. Defaults: mdistiller's `KDSVD` config (`engine/cfg.py`: `K` 1,
/// CE weight 1.0, feature weight 1.0; the CIFAR-100 configs keep them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KdSvdConfig {
    /// Number `k` of the teacher's singular vectors per stage (the student's: `k + 3`).
    pub k: usize,
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the SVD term.
    pub feat_weight: f64,
}

impl Default for KdSvdConfig {
    fn default() -> Self {
        KdSvdConfig { k: 1, ce_weight: 1.0, feat_weight: 1.0 }
    }
}

impl KdSvdConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("KDSVD", &[("ce_weight", self.ce_weight), ("feat_weight", self.feat_weight)])?;
        if self.k == 0 {
            return Err(KdError::InvalidConfig("KDSVD k must be >= 1".into()));
        }
        Ok(())
    }
}

/// Eigen-decomposition of the symmetric `n x n` matrix `a` (row-major) by cyclic Jacobi
/// rotations, in f64: eigenvalues in descending order and the eigenvectors as the columns of a
/// row-major `n x n` matrix, each with its entry of largest magnitude negative (the first such
/// entry on a tie, as `argmax`).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i * n + j].powi(2)).sum();
        if off.sqrt() <= 1e-15 * scale || scale == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, Algorithm 8.4.1).
                let tau = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let t = if tau == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vectors = vec![0.0; n * n];
    for (col, &src) in order.iter().enumerate() {
        let column: Vec<f64> = (0..n).map(|r| v[r * n + src]).collect();
        let largest = column.iter().enumerate().fold(0, |best, (i, x)| if x.abs() > column[best].abs() { i } else { best });
        let sign = if column[largest] > 0.0 { -1.0 } else { 1.0 };
        for (r, x) in column.iter().enumerate() {
            vectors[r * n + col] = sign * x;
        }
    }
    (values, vectors)
}

/// The top singular structure of one stage for a batch: the right singular vectors as a
/// differentiable `[B, W, r]` tensor, and on the host the vectors (`[B][W * r]`, row-major) and
/// singular values (`[B][r]`).
struct TopVectors {
    vectors: Tensor<3>,
    host: Vec<Vec<f64>>,
    singular: Vec<Vec<f64>>,
}

fn host_values<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f64>> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().map_err(|e| KdError::Record(format!("KDSVD reading {what}: {e:?}")))
}

/// The `r` top right singular vectors of every sample's `[C * H, W]` view of `feature`, with
/// the eigenvector-perturbation gradient (module docs).
fn top_vectors(feature: Tensor<4>, r: usize, who: &str, stage: usize) -> Result<TopVectors> {
    let [b, c, h, w] = feature.dims();
    if c * h < w {
        return Err(KdError::InvalidConfig(format!(
            "KDSVD views features[{stage}] of the {who} ({:?}) as [C * H, W] matrices and needs C * H >= W",
            [b, c, h, w]
        )));
    }
    let device: Device = feature.device();
    let x = feature.reshape([b, c * h, w]);
    let gram = x.clone().swap_dims(1, 2).matmul(x);
    let g = host_values(gram.clone(), "the Gram matrices")?;
    let (mut full, mut factors, mut host, mut singular) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for sample in g.chunks(w * w) {
        let (lambda, v) = symmetric_eigen(sample, w);
        // F[l][j] = 1 / (lambda_j - lambda_l), l != j, j < r; 0 where the gap vanishes.
        let tiny = 1e-12 * lambda.first().map_or(0.0, |l| l.abs()).max(f64::MIN_POSITIVE);
        for l in 0..w {
            for j in 0..r {
                let gap = lambda[j] - lambda[l];
                factors.push(if l == j || gap.abs() <= tiny { 0.0 } else { 1.0 / gap });
            }
        }
        host.push((0..w).flat_map(|row| v[row * w..row * w + r].to_vec()).collect());
        singular.push(lambda[..r].iter().map(|l| l.max(0.0).sqrt()).collect());
        full.extend(v);
    }
    let constant = |values: Vec<f64>, shape: [usize; 3]| Tensor::<3>::from_data(TensorData::new(values, shape), &device);
    let v = constant(full, [b, w, w]);
    let top = v.clone().slice([0..b, 0..w, 0..r]);
    // Exactly zero in value; carries d(X^T X) for autodiff.
    let delta = gram.clone() - gram.detach();
    let m = v.clone().swap_dims(1, 2).matmul(delta).matmul(top.clone());
    let vectors = top + v.matmul(m * constant(factors, [b, w, r]));
    Ok(TopVectors { vectors, host, singular })
}

/// `L_SVD` over paired stages (`stages[i]` is stage `i + 1`, as `feats[1:]`), for `k` teacher
/// vectors. `[1]`.
pub fn kdsvd_loss(stages: Vec<(Tensor<4>, Tensor<4>)>, k: usize) -> Result<Tensor<1>> {
    let mut previous: Option<(Tensor<3>, Tensor<3>)> = None;
    let mut total: Option<Tensor<1>> = None;
    let batch = stages.first().map_or(1, |(s, _)| s.dims()[0]);
    for (i, (fs, ft)) in stages.into_iter().enumerate() {
        let stage = i + 1;
        let (sd, td) = (fs.dims(), ft.dims());
        let w = sd[3];
        if td[3] != w || td[0] != sd[0] || w < k {
            return Err(KdError::ShapeMismatch {
                what: format!("KDSVD features[{stage}]: the teacher's batch and width W must equal the student's {sd:?}, and W >= k = {k}"),
                expected: vec![sd[0], w],
                actual: vec![td[0], td[3]],
            });
        }
        let device = fs.device();
        let t = top_vectors(ft.detach(), k, "teacher", stage)?;
        let ks = (k + 3).min(w);
        let s = top_vectors(fs, ks, "student", stage)?;
        // align_rsv: each teacher vector takes the student vectors of largest |cos| (all of
        // them on an exact tie, as the reference's mask), with the cosine's sign.
        let mut mask = Vec::with_capacity(batch * ks * k);
        for (sv, tv) in s.host.iter().zip(&t.host) {
            let cos: Vec<f64> =
                (0..ks).flat_map(|a| (0..k).map(move |j| (0..w).map(|r| sv[r * ks + a] * tv[r * k + j]).sum::<f64>())).collect();
            let cos_of = |a: usize, j: usize| cos[a * k + j];
            for a in 0..ks {
                for j in 0..k {
                    let best = (0..ks).map(|x| cos_of(x, j).abs()).fold(0.0, f64::max);
                    let c = cos_of(a, j);
                    mask.push(if c.abs() == best && c != 0.0 { c.signum() } else { 0.0 });
                }
            }
        }
        let n = t.singular.len();
        let scale: Vec<f64> = t
            .singular
            .iter()
            .flat_map(|sv| {
                let norm = sv.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                sv.iter().map(move |x| x / norm).collect::<Vec<_>>()
            })
            .collect();
        let scale = Tensor::<3>::from_data(TensorData::new(scale, [n, 1, k]), &device);
        let mask = Tensor::<3>::from_data(TensorData::new(mask, [n, ks, k]), &device);
        let v_t = l2_normalize(t.vectors, 1).detach() * scale.clone();
        let v_s = l2_normalize(s.vectors, 1).matmul(mask) * scale;
        if let Some((prev_s, prev_t)) = previous.take() {
            let rbf =
                |v: Tensor<3>, prev: Tensor<3>| (v.unsqueeze_dim::<4>(2) - prev.unsqueeze_dim::<4>(1)).square().div_scalar(-8.0).exp();
            let term = (rbf(v_s.clone(), prev_s) - rbf(v_t.clone(), prev_t)).square().sum();
            total = Some(match total {
                Some(sum) => sum + term,
                None => term,
            });
        }
        previous = Some((v_s, v_t));
    }
    let total = match (total, previous) {
        (Some(total), _) => total,
        // One stage: nothing to compare (the reference's sum of no terms is 0).
        (None, Some((v_s, _))) => v_s.sum().mul_scalar(0.0),
        (None, None) => return Err(KdError::InvalidConfig("KDSVD needs at least one pair of stages".into())),
    };
    Ok(total.div_scalar(batch as f64))
}

/// KDSVD as a [`Distiller`]; reads the teacher's stage outputs.
#[derive(Debug, Clone)]
pub struct KdSvd {
    config: KdSvdConfig,
}

impl KdSvd {
    /// A KDSVD distiller; the configuration is checked.
    pub fn new(config: KdSvdConfig) -> Result<Self> {
        config.validate()?;
        Ok(KdSvd { config })
    }
}

impl Distiller for KdSvd {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::LogitsAndFeatures
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let (teacher, student) = (step.teacher(NAME, "stage features")?, step.student);
        let svd = kdsvd_loss(stage_pairs("KDSVD", student, teacher)?, self.config.k)?.mul_scalar(self.config.feat_weight);
        let ce = cross_entropy_mean(student.logits.clone(), step.batch.labels.clone()).mul_scalar(self.config.ce_weight);
        Ok(LossTerms::new().with("ce", ce).with("svd", svd))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: KdSvdConfig = method_config(NAME, KdSvdConfig::default(), user)?;
    Prepared::new(NAME, &cfg, KdSvd::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn eigen_decomposition_reconstructs_sorted_and_signed() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 1.0];
        let (l, v) = symmetric_eigen(&a, 3);
        assert!(l[0] >= l[1] && l[1] >= l[2], "{l:?}");
        for i in 0..3 {
            for j in 0..3 {
                let rebuilt: f64 = (0..3).map(|k| v[i * 3 + k] * l[k] * v[j * 3 + k]).sum();
                assert!((rebuilt - a[i * 3 + j]).abs() < 1e-12, "({i}, {j})");
                let dot: f64 = (0..3).map(|k| v[k * 3 + i] * v[k * 3 + j]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
            // The entry of largest magnitude of each vector is negative.
            let col: Vec<f64> = (0..3).map(|r| v[r * 3 + i]).collect();
            let big = col.iter().cloned().fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
            assert!(big < 0.0, "{col:?}");
        }
    }

    #[test]
    fn zero_for_the_teacher_itself_and_finite_gradients() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let maps: Vec<Tensor<4>> =
            [[2, 3, 6, 6], [2, 4, 3, 3]].iter().map(|&s| Tensor::random(s, Distribution::Uniform(0.0, 1.0), &device)).collect();
        let student: Vec<Tensor<4>> = maps.iter().map(|m| Tensor::from_data(m.to_data(), &ad).require_grad()).collect();
        let pairs = student.iter().cloned().zip(maps.iter().cloned()).collect();
        let loss = kdsvd_loss(pairs, 1).unwrap();
        assert!(loss.clone().into_scalar::<f32>().abs() < 1e-10);
        // Another student: positive, with finite gradients on both stages.
        let other: Vec<Tensor<4>> =
            maps.iter().map(|m| Tensor::<4>::random(m.dims(), Distribution::Uniform(0.0, 1.0), &ad).require_grad()).collect();
        let loss = kdsvd_loss(other.iter().cloned().zip(maps.iter().cloned()).collect(), 2).unwrap();
        assert!(loss.clone().into_scalar::<f32>() > 0.0);
        let grads = loss.backward();
        for s in &other {
            let g = s.grad(&grads).unwrap().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0));
        }
    }

    #[test]
    fn vectors_of_an_mlp_and_clear_errors() {
        let device = Device::flex();
        let map = |s: [usize; 4]| Tensor::<4>::random(s, Distribution::Uniform(0.0, 1.0), &device);
        // 1x1 maps (an MLP's): one singular vector of one entry per stage, the loss is 0.
        let loss = kdsvd_loss(vec![(map([4, 8, 1, 1]), map([4, 16, 1, 1])), (map([4, 8, 1, 1]), map([4, 16, 1, 1]))], 1).unwrap();
        assert_eq!(loss.into_scalar::<f32>(), 0.0);
        let err = kdsvd_loss(vec![(map([2, 3, 4, 4]), map([2, 3, 2, 2]))], 1).unwrap_err().to_string();
        assert!(err.contains("KDSVD features[1]"), "{err}");
        let err = kdsvd_loss(vec![(map([2, 1, 2, 4]), map([2, 3, 2, 4]))], 1).unwrap_err().to_string();
        assert!(err.contains("C * H >= W"), "{err}");
        assert!(KdSvd::new(KdSvdConfig { k: 0, ..Default::default() }).is_err());
    }
}
