//! Loss primitives shared by every method. Pure functions of tensors.
//!
//! Conventions (docs/methods.md, "Conventions"): KL is KL(target || student), summed over classes and
//! averaged over the batch (`batchmean`); a target probability of exactly 0 contributes 0,
//! never NaN. Per-sample versions return `[batch]`; the `*_mean` versions return `[1]`.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Bool, Int, Tensor};

use crate::error::{KdError, Result};

/// Per-sample `sum_c p_c (log p_c - log q_c)` from log-probabilities, `[batch]`.
///
/// Entries where the target probability is exactly 0 (masked classes, `exp(-1e9)`) count 0.
pub fn kl_from_log_probs(target_log_probs: Tensor<2>, student_log_probs: Tensor<2>) -> Tensor<1> {
    let target_probs = target_log_probs.clone().exp();
    let zero = target_probs.clone().equal_elem(0.0);
    let terms = target_probs * (target_log_probs - student_log_probs);
    terms.mask_fill(zero, 0.0).sum_dim(1).squeeze_dim(1)
}

/// Per-sample KL between two probability tables given as probabilities (the binary
/// "cat_mask" terms of DKD and RLD take the log of summed probabilities, as the reference does).
pub fn kl_from_probs(target_probs: Tensor<2>, student_probs: Tensor<2>) -> Tensor<1> {
    let zero = target_probs.clone().equal_elem(0.0);
    // Where the target is 0 the log is replaced by 0 before multiplying, so 0*log(0) never
    // produces NaN in the forward or the backward pass.
    let safe_target = target_probs.clone().mask_fill(zero.clone(), 1.0);
    let terms = target_probs * (safe_target.log() - student_probs.log());
    terms.mask_fill(zero, 0.0).sum_dim(1).squeeze_dim(1)
}

/// `T^2 * KL(softmax(teacher/T) || softmax(student/T))` per sample, `[batch]` (Hinton KD).
pub fn kd_kl(student_logits: Tensor<2>, teacher_logits: Tensor<2>, temperature: f64) -> Tensor<1> {
    let log_q = log_softmax(student_logits.div_scalar(temperature), 1);
    let log_p = log_softmax(teacher_logits.div_scalar(temperature), 1);
    kl_from_log_probs(log_p, log_q).mul_scalar(temperature * temperature)
}

/// Batch mean of [`kd_kl`], `[1]`: mdistiller's `kd_loss`.
pub fn kd_kl_mean(student_logits: Tensor<2>, teacher_logits: Tensor<2>, temperature: f64) -> Tensor<1> {
    kd_kl(student_logits, teacher_logits, temperature).mean()
}

/// Per-sample cross-entropy with hard labels, `[batch]`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let log_probs = log_softmax(logits, 1);
    let picked = log_probs.gather(1, labels.unsqueeze_dim(1));
    picked.squeeze_dim::<1>(1).neg()
}

/// Batch-mean cross-entropy with hard labels, `[1]`.
pub fn cross_entropy_mean(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    cross_entropy(logits, labels).mean()
}

/// Per-sample cross-entropy against a soft target distribution, `[batch]`:
/// `-sum_c t_c log softmax(z)_c`.
pub fn soft_cross_entropy(logits: Tensor<2>, target_probs: Tensor<2>) -> Tensor<1> {
    (target_probs * log_softmax(logits, 1)).sum_dim(1).squeeze_dim::<1>(1).neg()
}

/// Per-sample binary cross-entropy with logits, `[batch]`; targets may be soft, in `[0, 1]`.
///
/// Written as `max(z,0) - z*y + log(1 + exp(-|z|))`, stable for any logit.
pub fn bce_with_logits(logits: Tensor<1>, targets: Tensor<1>) -> Tensor<1> {
    let softplus_neg_abs = logits.clone().abs().neg().exp().add_scalar(1.0).log();
    logits.clone().clamp_min(0.0) - logits * targets + softplus_neg_abs
}

/// One-hot float table `[batch, classes]` of the labels.
pub fn one_hot(labels: Tensor<1, Int>, num_classes: usize) -> Tensor<2> {
    labels.one_hot::<2>(num_classes).float()
}

/// Boolean mask `[batch, classes]`, true at each sample's label.
pub fn label_mask(labels: Tensor<1, Int>, num_classes: usize) -> Tensor<2, Bool> {
    one_hot(labels, num_classes).equal_elem(1.0)
}

/// `[p_k, 1 - p_k]` per row, where `p_k` is the probability at the mask's class, computed as
/// the reference does: probabilities first, then the two sums. `[batch, 2]`.
pub fn binary_split(probs: Tensor<2>, mask: Tensor<2, Bool>) -> Tensor<2> {
    let mask_f = mask.float();
    let inside = (probs.clone() * mask_f.clone()).sum_dim(1);
    let outside = (probs * mask_f.neg().add_scalar(1.0)).sum_dim(1);
    Tensor::cat(vec![inside, outside], 1)
}

/// Checks that student logits `[batch, classes]`, teacher logits and labels `[batch]` describe
/// the same batch and the same classes, so that a logit loss can run without panicking.
pub fn check_logits(method: &str, student_logits: &Tensor<2>, teacher_logits: &Tensor<2>, labels: &Tensor<1, Int>) -> Result<()> {
    let [batch, classes] = student_logits.dims();
    let [teacher_batch, teacher_classes] = teacher_logits.dims();
    if teacher_classes != classes {
        return Err(KdError::ClassCountMismatch { teacher: teacher_classes, student: classes });
    }
    if teacher_batch != batch {
        return Err(KdError::ShapeMismatch {
            what: format!("{method}: teacher logits"),
            expected: vec![batch, classes],
            actual: vec![teacher_batch, teacher_classes],
        });
    }
    let label_dims = labels.dims();
    if label_dims[0] != batch {
        return Err(KdError::ShapeMismatch { what: format!("{method}: labels"), expected: vec![batch], actual: label_dims.to_vec() });
    }
    Ok(())
}

/// `log [sum_{c in mask} p_c, sum_{c not in mask} p_c]` per row, with `p = softmax(logits / T)`,
/// `[batch, 2]`: the log of [`binary_split`], computed in the log domain.
///
/// DKD's and RLD's binary terms take the log of summed probabilities. In f32 a saturated row
/// (logit gaps above ~100 at T = 1) sums to exactly 0 and the log is `-inf`, while the
/// reference, in f64, still has a finite value; a log-sum-exp over each part gives the same
/// number and the same gradient without the underflow. An empty part gives a very large
/// negative value (about -1e30), whose probability is exactly 0.
pub fn binary_log_split(logits: Tensor<2>, mask: Tensor<2, Bool>, temperature: f64) -> Tensor<2> {
    let scaled = logits.div_scalar(temperature);
    let all = masked_logsumexp(scaled.clone(), None);
    let inside = masked_logsumexp(scaled.clone(), Some(mask.clone().bool_not()));
    let outside = masked_logsumexp(scaled, Some(mask));
    Tensor::cat(vec![inside - all.clone(), outside - all], 1)
}

/// `log sum_c exp(x_c)` per row over the entries not excluded, `[batch, 1]`.
fn masked_logsumexp(x: Tensor<2>, excluded: Option<Tensor<2, Bool>>) -> Tensor<2> {
    // A finite fill rather than -inf: an all-excluded row then gives a finite, huge negative
    // value instead of `-inf - -inf = NaN`.
    let x = match excluded {
        Some(m) => x.mask_fill(m, -1e30),
        None => x,
    };
    // The shift by the row maximum only guards exp() against overflow; the result does not
    // depend on it, so it is a constant for autodiff.
    let max = x.clone().max_dim(1).detach();
    (x - max.clone()).exp().sum_dim(1).log() + max
}

/// Boolean mask `[batch, classes]`, true at each row's largest entry (the lowest index on
/// ties, as `argmax` in PyTorch): the teacher's top-1 class.
pub fn argmax_mask(logits: Tensor<2>) -> Tensor<2, Bool> {
    let classes = logits.dims()[1];
    label_mask(logits.argmax(1).squeeze_dim::<1>(1), classes)
}

/// Softmax at temperature `T` with the masked entries removed (filled with `-fill` after the
/// division by `T`, as DKD (-1000) and RLD (-1e9) do). Returns log-probabilities.
pub fn masked_log_softmax(logits: Tensor<2>, mask: Tensor<2, Bool>, temperature: f64, fill: f64) -> Tensor<2> {
    log_softmax(logits.div_scalar(temperature).mask_fill(mask, -fill), 1)
}

/// Softmax at temperature `T`.
pub fn tempered_softmax(logits: Tensor<2>, temperature: f64) -> Tensor<2> {
    softmax(logits.div_scalar(temperature), 1)
}

/// How the z-score of logit standardization measures the spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdKind {
    /// Divide by `K - 1` (the LSKD code; the default).
    Unbiased,
    /// Divide by `K` (the LSKD paper's Algorithm 1).
    Population,
}

/// Logit standardization (LSKD): `(z - mean(z)) / (std(z) + eps)` per row.
///
/// The temperature is applied by the loss that follows, not here.
pub fn z_score(logits: Tensor<2>, std_kind: StdKind, eps: f64) -> Tensor<2> {
    let mean = logits.clone().mean_dim(1);
    let centred = logits - mean;
    let var = match std_kind {
        StdKind::Unbiased => centred.clone().var(1),
        StdKind::Population => centred.clone().var_bias(1),
    };
    centred / var.sqrt().add_scalar(eps)
}

/// Top-k correct counts `(top1, topk)` over the batch, and each row's top-1 class (from the same
/// host transfer).
pub fn topk_correct(logits: Tensor<2>, labels: &[usize], k: usize) -> (usize, usize, Vec<usize>) {
    let k = k.min(logits.dims()[1]);
    let (_, idx) = logits.topk_with_indices(k, 1);
    let idx: Vec<i64> = idx.into_data().convert::<i64>().try_to_vec::<i64>().unwrap_or_default();
    let predicted: Vec<usize> = idx.chunks(k.max(1)).map(|r| r.first().map_or(0, |&c| c as usize)).collect();
    let mut top1 = 0;
    let mut topk = 0;
    for (row, &label) in labels.iter().enumerate() {
        let ranked = &idx[row * k..(row + 1) * k];
        if ranked.first().is_some_and(|&c| c as usize == label) {
            top1 += 1;
        }
        if ranked.iter().any(|&c| c as usize == label) {
            topk += 1;
        }
    }
    (top1, topk, predicted)
}

/// Mean squared error over every element, `[1]` (PyTorch's `mse_loss`, `reduction="mean"`).
pub fn mse_mean<const D: usize>(prediction: Tensor<D>, target: Tensor<D>) -> Tensor<1> {
    (prediction - target).square().mean()
}

/// Smooth L1 (Huber with threshold `beta`) per element: `0.5 d^2 / beta` where `|d| < beta`,
/// `|d| - 0.5 beta` elsewhere, with `d = prediction - target`. `beta` must be > 0.
pub fn smooth_l1<const D: usize>(prediction: Tensor<D>, target: Tensor<D>, beta: f64) -> Tensor<D> {
    let abs = (prediction - target).abs();
    let quadratic = abs.clone().square().mul_scalar(0.5 / beta);
    let linear = abs.clone().sub_scalar(0.5 * beta);
    quadratic.mask_where(abs.greater_equal_elem(beta), linear)
}

/// Mean of [`smooth_l1`] over every element, `[1]` (PyTorch's `smooth_l1_loss`, mean reduction).
pub fn smooth_l1_mean<const D: usize>(prediction: Tensor<D>, target: Tensor<D>, beta: f64) -> Tensor<1> {
    smooth_l1(prediction, target, beta).mean()
}
