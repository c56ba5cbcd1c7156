//! CRD's learnable heads and its loss as pure functions of tensors.
//!
//! With `f_s = normalize(W_s e_s + b_s)` and `f_t = normalize(W_t e_t + b_t)` the two embeddings
//! of a sample (unit length, `feat_dim` wide), `m_s`, `m_t` the student-side and teacher-side
//! memory rows of the sample itself (position 0) and of its `K` negatives, `T` the temperature,
//! `N` the number of training samples and `Z_s`, `Z_t` the normalisation constants:
//!
//! ```text
//! h_s(j) = exp(m_t[j] . f_s / T) / Z_s        (student anchor, teacher-side memory)
//! h_t(j) = exp(m_s[j] . f_t / T) / Z_t        (teacher anchor, student-side memory)
//! L(h)   = -(1/B) sum_i [ log(h(0) / (h(0) + K/N + eps)) + sum_{j>=1} log((K/N) / (h(j) + K/N + eps)) ]
//! L_crd  = L(h_s) + L(h_t)
//! ```
//!
//! with `eps = 1e-7`: RepDistiller's `ContrastLoss` (the NCE loss of the paper's Eq. 18) on the
//! outputs of `ContrastMemory.forward`, both directions, as `CRDLoss` sums them. The constants
//! `Z = N * mean(exp(m[j] . f / T))` are fixed on the first batch ([`normalisation_constants`]).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use kd_core::{AuxModule, KdError, Result};

/// The `eps` of the reference's `ContrastLoss`.
pub const EPS: f64 = 1e-7;

/// CRD's learnable parts: one linear embedding head per side (`Embed` of the reference), each
/// followed by an L2 normalisation. Trained jointly with the student.
#[derive(Module, Debug)]
pub struct CrdHeads {
    /// Student head: the student's embedding width to `feat_dim`.
    pub embed_s: Linear,
    /// Teacher head: the teacher's embedding width to `feat_dim`.
    pub embed_t: Linear,
}

impl AuxModule for CrdHeads {}

impl CrdHeads {
    /// Heads from `s_dim` and `t_dim` to `feat_dim` (Burn's default initialisation of a linear
    /// layer, uniform in `+-1/sqrt(fan_in)` like PyTorch's `nn.Linear`).
    pub fn new(s_dim: usize, t_dim: usize, feat_dim: usize, device: &Device) -> Result<Self> {
        if s_dim == 0 || t_dim == 0 || feat_dim == 0 {
            return Err(KdError::InvalidConfig(format!(
                "CRD heads need non-empty widths: student embedding {s_dim}, teacher embedding {t_dim}, feat_dim {feat_dim}"
            )));
        }
        Ok(CrdHeads { embed_s: LinearConfig::new(s_dim, feat_dim).init(device), embed_t: LinearConfig::new(t_dim, feat_dim).init(device) })
    }

    /// The student's embedding `[B, s_dim]` projected and normalised: `[B, feat_dim]`.
    pub fn student(&self, embedding: Tensor<2>) -> Tensor<2> {
        l2_normalize(self.embed_s.forward(embedding))
    }

    /// The teacher's embedding `[B, t_dim]` projected and normalised: `[B, feat_dim]`.
    pub fn teacher(&self, embedding: Tensor<2>) -> Tensor<2> {
        l2_normalize(self.embed_t.forward(embedding))
    }
}

/// Each row divided by its Euclidean norm (the reference's `Normalize(2)`, without an epsilon).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt();
    x / norm
}

/// `x` on the autodiff graph when `like` is, so that constants (memory rows) meet a tracked
/// anchor on the same kind of device.
fn alongside<const D: usize>(x: Tensor<D>, like: &Tensor<2>) -> Tensor<D> {
    if like.is_autodiff() { x.autodiff() } else { x }
}

/// `exp(rows[i, j] . anchor[i] / T)`: `[B, K+1]`, unnormalised, for anchors `[B, D]` and memory
/// rows `[B, K+1, D]` (the positive first).
pub fn contrast_scores(anchor: Tensor<2>, rows: Tensor<3>, temperature: f64) -> Result<Tensor<2>> {
    let [b, d] = anchor.dims();
    let [rb, k1, rd] = rows.dims();
    if rb != b || rd != d || k1 < 2 {
        return Err(KdError::ShapeMismatch {
            what: "CRD memory rows [batch, nce_k + 1, feat_dim] vs embedding [batch, feat_dim]".into(),
            expected: vec![b, k1.max(2), d],
            actual: vec![rb, k1, rd],
        });
    }
    let rows = alongside(rows, &anchor);
    let dots = rows.matmul(anchor.unsqueeze_dim::<3>(2)).reshape([b, k1]);
    Ok(dots.div_scalar(temperature).exp())
}

/// The NCE loss of one direction (the reference's `ContrastLoss`) on normalised scores
/// `h` `[B, K+1]` (positive first), with `N` training samples.
pub fn contrast_loss(h: Tensor<2>, n_data: usize) -> Tensor<1> {
    let [b, k1] = h.dims();
    let m = (k1 - 1) as f64;
    let noise = m / n_data as f64;
    let pos = h.clone().slice([0..b, 0..1]);
    let neg = h.slice([0..b, 1..k1]);
    let log_d1 = (pos.clone() / pos.add_scalar(noise + EPS)).log().sum();
    let log_d0 = neg.add_scalar(noise + EPS).recip().mul_scalar(noise).log().sum();
    (log_d1 + log_d0).div_scalar(b as f64).neg()
}

/// The normalisation constants `[Z_s, Z_t]` the reference fixes on its first batch:
/// `N * mean(exp(m_t[j] . f_s / T))` and `N * mean(exp(m_s[j] . f_t / T))` (no gradient).
pub fn normalisation_constants(
    f_s: Tensor<2>,
    f_t: Tensor<2>,
    rows_s: Tensor<3>,
    rows_t: Tensor<3>,
    temperature: f64,
    n_data: usize,
) -> Result<[f64; 2]> {
    let s = contrast_scores(f_s.without_autodiff(), rows_t, temperature)?;
    let t = contrast_scores(f_t.without_autodiff(), rows_s, temperature)?;
    Ok(normalisation_from_scores(s, t, n_data))
}

/// [`normalisation_constants`] from the unnormalised scores of both directions, `[B, K+1]`.
pub fn normalisation_from_scores(s_scores: Tensor<2>, t_scores: Tensor<2>, n_data: usize) -> [f64; 2] {
    let z = |scores: Tensor<2>| f64::from(scores.without_autodiff().mean().into_scalar::<f32>()) * n_data as f64;
    [z(s_scores), z(t_scores)]
}

/// The parameters of [`crd_loss`] besides the tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrdParams {
    /// `[Z_s, Z_t]`.
    pub z: [f64; 2],
    /// The temperature `T` (`nce_t`).
    pub temperature: f64,
    /// The number of training samples `N` (the size of the memory).
    pub n_data: usize,
}

/// CRD's loss, both directions: `L(h_s) + L(h_t)` (module doc), from the normalised embeddings
/// `f_s`, `f_t` `[B, feat_dim]` and the memory rows of each sample's positive and negatives,
/// `rows_s` (student-side memory) and `rows_t` (teacher-side), `[B, K+1, feat_dim]`.
pub fn crd_loss(f_s: Tensor<2>, f_t: Tensor<2>, rows_s: Tensor<3>, rows_t: Tensor<3>, params: &CrdParams) -> Result<Tensor<1>> {
    let s_scores = contrast_scores(f_s, rows_t, params.temperature)?;
    let t_scores = contrast_scores(f_t, rows_s, params.temperature)?;
    Ok(crd_loss_from_scores(s_scores, t_scores, params))
}

/// [`crd_loss`] from the unnormalised scores of both directions, `[B, K+1]` (student anchor
/// against the teacher-side memory, teacher anchor against the student-side memory).
pub fn crd_loss_from_scores(s_scores: Tensor<2>, t_scores: Tensor<2>, params: &CrdParams) -> Tensor<1> {
    contrast_loss(s_scores.div_scalar(params.z[0]), params.n_data) + contrast_loss(t_scores.div_scalar(params.z[1]), params.n_data)
}

/// [`contrast_scores`] from the whole bank `[N, D]` and the drawn indices `[B, K+1]`: the
/// anchors' dot products with every row (`[B, N]`), then the drawn ones. The same numbers as
/// gathering the rows (`[B, K+1, D]`) first, with `B * N` values in place of `B * (K+1) * D`.
pub fn contrast_scores_from_bank(anchor: Tensor<2>, bank: Tensor<2>, contrast: Tensor<2, Int>, temperature: f64) -> Result<Tensor<2>> {
    let [b, d] = anchor.dims();
    let [_, bd] = bank.dims();
    let [cb, k1] = contrast.dims();
    if bd != d || cb != b || k1 < 2 {
        return Err(KdError::ShapeMismatch {
            what: "CRD memory [N, feat_dim] and contrast indices [batch, nce_k + 1] vs embedding [batch, feat_dim]".into(),
            expected: vec![d, b, k1.max(2)],
            actual: vec![bd, cb, k1],
        });
    }
    let contrast = if anchor.is_autodiff() { contrast.autodiff() } else { contrast };
    let bank = alongside(bank, &anchor);
    let all = anchor.matmul(bank.transpose());
    Ok(all.gather(1, contrast).div_scalar(temperature).exp())
}

/// The momentum update of memory rows: `normalize(m * rows + (1 - m) * f)`, `[B, D]` each.
pub fn momentum_update(rows: Tensor<2>, f: Tensor<2>, momentum: f64) -> Tensor<2> {
    l2_normalize(rows.mul_scalar(momentum) + f.mul_scalar(1.0 - momentum))
}
