//! TOAST's losses as pure functions of tensors (and the two small host-side helpers the
//! distiller's bookkeeping uses).
//!
//! With `z` the student's logits on the forward batch, whose first `r` rows are the replayed
//! samples:
//!
//! ```text
//! t1   = (1 - eps) onehot(y) + eps Q[y],    Q[c] = softmax(m_c / tau)  (onehot(c) before a medoid exists)
//! L1   = mean over all rows of softCE(t1, z) = -sum_c t1_c log softmax(z)_c
//! L2   = T^2 mean over the r replayed rows of KL(softmax(z_prev / T) || softmax(z / T))
//! L    = L1 + lambda L2
//! ```
//!
//! KL follows the workspace convention (docs/methods.md, "Conventions"): target first, summed over the
//! classes, averaged over the rows it covers (`batchmean` over the replayed half), times `T^2`;
//! a target probability of exactly 0 contributes 0.

use burn::tensor::{Int, Tensor};
use kd_core::loss::{kd_kl, one_hot, soft_cross_entropy};

/// The stage-1 targets `t1 = (1 - eps) onehot(y) + eps Q[y]`, `[batch, classes]`.
///
/// `class_distributions` is `Q`, `[classes, classes]`, one probability row per class (see
/// [`crate::MedoidBank::class_distributions`]); every row of `t1` then sums to 1.
pub fn medoid_targets(labels: Tensor<1, Int>, class_distributions: Tensor<2>, epsilon: f64) -> Tensor<2> {
    let classes = class_distributions.dims()[1];
    let picked = class_distributions.select(0, labels.clone());
    one_hot(labels, classes).mul_scalar(1.0 - epsilon) + picked.mul_scalar(epsilon)
}

/// Stage 1 per sample: `softCE(t1, z)`, `[batch]`.
pub fn medoid_loss_per_sample(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    soft_cross_entropy(logits, targets)
}

/// Stage 2 per replayed sample: `T^2 KL(softmax(z_prev / T) || softmax(z / T))`, `[rows]`.
/// `previous_logits` are the stored, detached logits of the previous step.
pub fn replay_kl_per_sample(replayed_logits: Tensor<2>, previous_logits: Tensor<2>, temperature: f64) -> Tensor<1> {
    kd_kl(replayed_logits, previous_logits, temperature)
}

/// TOAST's loss per row: the stage-1 soft cross-entropy of every row (`[n]`), and the stage-2
/// `T^2 KL(softmax(z_prev / T) || softmax(z / T))` of the replayed rows (`[r]`, `None` without
/// replayed rows). `logits` holds the replayed rows first; `previous_logits` (`[r, classes]`)
/// are their stored targets' logits. The distiller ranks samples by these rows.
pub fn toast_loss_rows(
    logits: Tensor<2>,
    targets: Tensor<2>,
    previous_logits: Option<Tensor<2>>,
    temperature: f64,
) -> (Tensor<1>, Option<Tensor<1>>) {
    let ce_rows = medoid_loss_per_sample(logits.clone(), targets);
    let kl_rows = previous_logits
        .filter(|prev| prev.dims()[0] > 0)
        .map(|prev| replay_kl_per_sample(logits.narrow(0, 0, prev.dims()[0]), prev, temperature));
    (ce_rows, kl_rows)
}

/// The two weighted terms of TOAST, each `[1]`: `(L1, lambda L2)`, the means of
/// [`toast_loss_rows`]; the optimised loss is their sum. Without replayed rows the second is 0.
pub fn toast_loss_terms(
    logits: Tensor<2>,
    targets: Tensor<2>,
    previous_logits: Option<Tensor<2>>,
    temperature: f64,
    lambda: f64,
) -> (Tensor<1>, Tensor<1>) {
    let device = logits.device();
    let (ce_rows, kl_rows) = toast_loss_rows(logits, targets, previous_logits, temperature);
    let stage2 = kl_rows.map_or_else(|| Tensor::zeros([1], &device), |kl| kl.mean().mul_scalar(lambda));
    (ce_rows.mean(), stage2)
}

/// `softmax(logits / tau)` of one row on the host, computed in f64 (stable: shifted by the
/// maximum), so that it is the same on every backend and after a checkpoint round trip.
pub fn tempered_softmax_row(logits: &[f32], tau: f64) -> Vec<f32> {
    let max = logits.iter().map(|&v| v as f64 / tau).fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|&v| (v as f64 / tau - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// Hard-label cross-entropy `-log softmax(z)_y` of one row on the host, in f64.
pub fn hard_cross_entropy_row(logits: &[f32], label: usize) -> f64 {
    let max = logits.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
    let lse = logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    lse - logits.get(label).map(|&v| v as f64).unwrap_or(f64::NAN)
}

/// The argmax of a row, lowest index on ties (as the trainer's top-1 accuracy counts it).
pub fn argmax_row(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}
