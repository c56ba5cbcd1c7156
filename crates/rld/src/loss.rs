//! The RLD loss as pure functions of tensors.
//!
//! With `p^X(tau) = softmax(z^X / tau)`, `y` the label and `m` the teacher's top-1 class
//! (docs/methods.md, "RLD"; `zju-SWJ/RLD`, `mdistiller/distillers/RLD.py`, `rld_loss`):
//! - SCD, sample confidence distillation, at `T_alpha`: KL between the teacher's binary
//!   `[p^T_m, 1 - p^T_m]` (its confidence in its own prediction) and the student's
//!   `[p^S_y, 1 - p^S_y]` (its confidence in the true class), times `T_alpha^2`;
//! - MCD, masked correlation distillation, at `T`: KL between the softmaxes over the classes the
//!   teacher ranks strictly below the true class. The mask `M = {c : z^T_c >= z^T_y}` (the true
//!   class, every class ranked above it, and ties) is filled with -1e9 after the division by T
//!   in both logit sets, so masked student entries get no gradient. Times `T^2`.
//!
//! Both KLs are summed over classes and averaged over the batch. The binary SCD terms are
//! computed in the log domain ([`kd_core::loss::binary_log_split`]): the reference's log of
//! summed probabilities, without its `log(0)` for a saturated student in f32.

use burn::tensor::{Bool, Int, Tensor};
use kd_core::logit_stand::{LogitStandardization, standardize_pair};
use kd_core::loss::{argmax_mask, binary_log_split, kl_from_log_probs, label_mask, masked_log_softmax};

/// What RLD writes into the masked logits (after the division by T) to drop them from the
/// MCD softmax.
pub const MCD_MASK_FILL: f64 = 1e9;

/// The MCD mask `[batch, classes]`: true where the teacher's logit is at least its logit for
/// the true class (ties included; always includes the true class).
pub fn rank_mask(teacher_logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<2, Bool> {
    let at_label = teacher_logits.clone().gather(1, labels.unsqueeze_dim(1));
    // For finite floats `a - b >= 0` exactly when `a >= b` (the difference of two distinct
    // floats is never rounded to 0), and the subtraction broadcasts the `[batch, 1]` column.
    (teacher_logits - at_label).greater_equal_elem(0.0)
}

/// Per-sample SCD times `T_alpha^2`, `[batch]`: `T_a^2 * KL([p^T_m, 1 - p^T_m] || [p^S_y, 1 - p^S_y])`
/// at temperature `T_a`, with `m` the teacher's top-1 class (lowest index on ties).
pub fn rld_scd(student_logits: Tensor<2>, teacher_logits: Tensor<2>, labels: Tensor<1, Int>, alpha_temperature: f64) -> Tensor<1> {
    let classes = student_logits.dims()[1];
    let teacher_top = argmax_mask(teacher_logits.clone());
    let log_b_teacher = binary_log_split(teacher_logits, teacher_top, alpha_temperature);
    let log_b_student = binary_log_split(student_logits, label_mask(labels, classes), alpha_temperature);
    kl_from_log_probs(log_b_teacher, log_b_student).mul_scalar(alpha_temperature * alpha_temperature)
}

/// Per-sample MCD times `T^2`, `[batch]`: `T^2 * KL(p~^T || p~^S)` over the classes outside
/// [`rank_mask`]. A sample whose every class is masked (the teacher ranks the true class last)
/// gives two uniform distributions, hence 0.
pub fn rld_mcd(student_logits: Tensor<2>, teacher_logits: Tensor<2>, labels: Tensor<1, Int>, temperature: f64) -> Tensor<1> {
    let mask = rank_mask(teacher_logits.clone(), labels);
    let log_p_student = masked_log_softmax(student_logits, mask.clone(), temperature, MCD_MASK_FILL);
    let log_p_teacher = masked_log_softmax(teacher_logits, mask, temperature, MCD_MASK_FILL);
    kl_from_log_probs(log_p_teacher, log_p_student).mul_scalar(temperature * temperature)
}

/// The hyper-parameters of RLD's distillation term.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RldParams {
    /// Weight of SCD.
    pub alpha: f64,
    /// Weight of MCD.
    pub beta: f64,
    /// Temperature of MCD.
    pub temperature: f64,
    /// Temperature of SCD.
    pub alpha_temperature: f64,
    /// Logit standardization applied to both logit sets first.
    pub logit_stand: Option<LogitStandardization>,
}

/// The two weighted batch-mean terms `(alpha * SCD, beta * MCD)`, each `[1]`, with the optional
/// logit standardization applied to both logit sets first.
pub fn rld_terms(student_logits: Tensor<2>, teacher_logits: Tensor<2>, labels: Tensor<1, Int>, p: &RldParams) -> (Tensor<1>, Tensor<1>) {
    let (student, teacher) = standardize_pair(p.logit_stand.as_ref(), student_logits, teacher_logits);
    let scd = rld_scd(student.clone(), teacher.clone(), labels.clone(), p.alpha_temperature).mean().mul_scalar(p.alpha);
    let mcd = rld_mcd(student, teacher, labels, p.temperature).mean().mul_scalar(p.beta);
    (scd, mcd)
}

/// The distillation term alone, `[1]`: `alpha * SCD(at alpha_temperature) + beta * MCD(at
/// temperature)`, with the optional logit standardization. No CE and no warm-up factor: this is
/// what the golden cases of `rld.json` check.
pub fn rld_loss(student_logits: Tensor<2>, teacher_logits: Tensor<2>, labels: Tensor<1, Int>, p: &RldParams) -> Tensor<1> {
    let (scd, mcd) = rld_terms(student_logits, teacher_logits, labels, p);
    scd + mcd
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn rows(v: &[f32], shape: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), shape), &Device::flex())
    }

    fn labels(v: &[i64]) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Device::flex())
    }

    fn bools(t: Tensor<2, Bool>) -> Vec<bool> {
        t.into_data().try_to_vec::<bool>().unwrap()
    }

    #[test]
    fn rank_mask_keeps_the_label_and_ties() {
        let t = rows(&[3.0, 1.0, 1.0, 0.5, -2.0, 0.0, 4.0, 0.0], [2, 4]);
        let m = bools(rank_mask(t, labels(&[1, 3])));
        // Row 0: z_y = 1: class 0 above, class 2 tied, class 3 below.
        // Row 1: z_y = 0: class 0 below, class 1 tied, class 2 above.
        assert_eq!(m, vec![true, true, true, false, false, true, true, true]);
    }

    #[test]
    fn everything_masked_gives_zero_mcd() {
        // The teacher ranks the true class last: every class is masked.
        let s = rows(&[2.0, -1.0, 0.5], [1, 3]);
        let t = rows(&[1.0, 3.0, -4.0], [1, 3]);
        let mcd = rld_mcd(s, t, labels(&[2]), 4.0).into_data().try_to_vec::<f32>().unwrap()[0];
        assert!(mcd.abs() < 1e-6, "{mcd}");
    }
}
