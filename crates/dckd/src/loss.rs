//! DCKD's logit terms as pure functions of tensors.
//!
//! With `p^X = softmax(z^X / T)`, `y` the label and `b^X = [p^X_y, 1 - p^X_y]`:
//! - TCKD* = `T^2 * KL(b* || b^S)`, where `b*` is chosen by [`TargetMode`] from `b^T` and the
//!   student's own `b^S` under a stop-gradient;
//! - NCKD: DKD's ([`kd_baselines::dkd_nckd`]), unchanged.
//!
//! Every binary distribution is kept in the log domain ([`binary_log_split`]), as DKD's TCKD in
//! this workspace is, so a saturated student or teacher gives no `log(0)` in f32.
//!
//! The functions expect consistent shapes (student and teacher logits `[batch, classes]`, labels
//! `[batch]` within range); [`crate::Dckd`] checks them before calling.

use burn::tensor::{Int, Tensor};
use kd_baselines::{dkd_nckd, dkd_tckd};
use kd_core::loss::{binary_log_split, kl_from_log_probs, label_mask};

use crate::config::TargetMode;

/// `log(exp(a) + exp(b))` elementwise, without overflow or underflow.
fn log_add_exp(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    // The shift cancels out of the result, so it is a constant for autodiff.
    let m = a.clone().max_pair(b.clone()).detach();
    ((a - m.clone()).exp() + (b - m.clone()).exp()).log() + m
}

/// `log b* = [log b*_y, log(1 - b*_y)]` per sample, `[batch, 2]`: the target of TCKD*.
///
/// - [`TargetMode::Teacher`]: `log b^T`.
/// - [`TargetMode::Max`]: whichever of `b^T` and `sg(b^S)` has the larger true-class
///   probability (the teacher's on ties). Both are proper binaries and the max of `p_y` picks
///   one of them whole, so `1 - b*_y` is that one's non-target mass.
/// - [`TargetMode::Mix`]: `g b^T + (1 - g) sg(b^S)`, mixed in the log domain.
///
/// The student's side is always detached: gradients reach the student only through `b^S` in
/// the KL, never through its target. The teacher's side is left as given (a teacher run
/// without autodiff is already constant).
pub fn dckd_target_log_binary(
    student_logits: Tensor<2>,
    teacher_logits: Tensor<2>,
    labels: Tensor<1, Int>,
    temperature: f64,
    mode: TargetMode,
) -> Tensor<2> {
    let target = label_mask(labels, student_logits.dims()[1]);
    let log_b_teacher = binary_log_split(teacher_logits, target.clone(), temperature);
    if mode == TargetMode::Teacher {
        return log_b_teacher;
    }
    target_from(log_b_teacher, binary_log_split(student_logits, target, temperature), mode)
}

/// `log b*` from the two log-binaries; the student's is detached here.
fn target_from(log_b_teacher: Tensor<2>, log_b_student: Tensor<2>, mode: TargetMode) -> Tensor<2> {
    let log_b_student = log_b_student.detach();
    match mode {
        TargetMode::Teacher => log_b_teacher,
        TargetMode::Max => {
            let [batch, _] = log_b_teacher.dims();
            // log is monotonic: compare the true-class log-probabilities directly.
            let student_wins = log_b_student.clone().narrow(1, 0, 1).greater(log_b_teacher.clone().narrow(1, 0, 1)).expand([batch, 2]);
            log_b_teacher.mask_where(student_wins, log_b_student)
        }
        TargetMode::Mix { g } => {
            // The ends are exact rather than log(0) = -inf mixed in.
            if g >= 1.0 {
                log_b_teacher
            } else if g <= 0.0 {
                log_b_student
            } else {
                log_add_exp(log_b_teacher.add_scalar(g.ln()), log_b_student.add_scalar((1.0 - g).ln()))
            }
        }
    }
}

/// Per-sample TCKD* times `T^2`, `[batch]`: `T^2 * KL(b* || b^S)` with `b*` from
/// [`dckd_target_log_binary`]. With [`TargetMode::Teacher`] this is DKD's TCKD
/// ([`kd_baselines::dkd_tckd`], called as is).
pub fn dckd_target_term(
    student_logits: Tensor<2>,
    teacher_logits: Tensor<2>,
    labels: Tensor<1, Int>,
    temperature: f64,
    mode: TargetMode,
) -> Tensor<1> {
    if mode == TargetMode::Teacher {
        return dkd_tckd(student_logits, teacher_logits, labels, temperature);
    }
    let target = label_mask(labels, student_logits.dims()[1]);
    let log_b_teacher = binary_log_split(teacher_logits, target.clone(), temperature);
    // One split of the student serves both sides: tracked in the KL, detached in b*.
    let log_b_student = binary_log_split(student_logits, target, temperature);
    let log_b_star = target_from(log_b_teacher, log_b_student.clone(), mode);
    kl_from_log_probs(log_b_star, log_b_student).mul_scalar(temperature * temperature)
}

/// The hyper-parameters of DCKD's logit terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DckdLogitParams {
    /// Weight of TCKD*.
    pub alpha: f64,
    /// Weight of NCKD (0: not computed).
    pub beta: f64,
    /// Softmax temperature of both terms.
    pub temperature: f64,
    /// How the binary target of TCKD* is chosen.
    pub mode: TargetMode,
}

/// The two weighted batch-mean logit terms `(alpha * TCKD*, beta * NCKD)`, each `[1]`; NCKD is
/// `None` (and not computed) when `beta` is 0.
pub fn dckd_logit_terms(
    student_logits: Tensor<2>,
    teacher_logits: Tensor<2>,
    labels: Tensor<1, Int>,
    p: &DckdLogitParams,
) -> (Tensor<1>, Option<Tensor<1>>) {
    let nckd = (p.beta != 0.0)
        .then(|| dkd_nckd(student_logits.clone(), teacher_logits.clone(), labels.clone(), p.temperature).mean().mul_scalar(p.beta));
    let tckd = dckd_target_term(student_logits, teacher_logits, labels, p.temperature, p.mode).mean().mul_scalar(p.alpha);
    (tckd, nckd)
}

/// The logit part of DCKD's distillation term, `[1]`: `alpha * TCKD* + beta * NCKD` (no CE, no
/// warm-up, no companion). With [`TargetMode::Teacher`] it equals [`kd_baselines::dkd_loss`]
/// without logit standardization.
pub fn dckd_logit_loss(student_logits: Tensor<2>, teacher_logits: Tensor<2>, labels: Tensor<1, Int>, p: &DckdLogitParams) -> Tensor<1> {
    match dckd_logit_terms(student_logits, teacher_logits, labels, p) {
        (tckd, Some(nckd)) => tckd + nckd,
        (tckd, None) => tckd,
    }
}
