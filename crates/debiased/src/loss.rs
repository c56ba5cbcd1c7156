//! The losses as pure functions of tensors: the binary logit of a 2-logit classifier,
//! knowledge infusion, the de-biased distillation loss, and plain binary response KD.
//!
//! All BCE terms go through [`kd_core::loss::bce_with_logits`] on the student's binary logit
//! `d_S = z_1 - z_0`, so they stay finite for saturated students.

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use kd_core::loss::bce_with_logits;
use kd_core::{KdError, Result};

/// The binary logit `d = z_1 - z_0` of 2-logit outputs `[batch, 2]`, `[batch]`: then
/// `softmax(z)[1] = sigmoid(d)`, so class 1 is the positive class. An error for any other
/// number of logits.
pub fn binary_logit(logits: Tensor<2>, who: &str) -> Result<Tensor<1>> {
    let [batch, classes] = logits.dims();
    if classes != 2 {
        return Err(KdError::InvalidConfig(format!(
            "de-biased KD is for binary classification: the {who} has {classes} logits, it needs 2 (class 1 = positive)"
        )));
    }
    let positive = logits.clone().narrow(1, 1, 1);
    let negative = logits.narrow(1, 0, 1);
    Ok((positive - negative).reshape([batch]))
}

/// Knowledge infusion: `q = (1 - g) * p + g * y`, the label mixed into the soft label.
pub fn infuse(probabilities: Tensor<1>, labels: Tensor<1>, infusion: f64) -> Tensor<1> {
    probabilities.mul_scalar(1.0 - infusion) + labels.mul_scalar(infusion)
}

/// The two weighted terms of the de-biased distillation loss, each `[1]`:
/// `((1 - lambda) * mean BCE(y, p_S), lambda * mean BCE(q, p_S))` with `p_S = sigmoid(d_S)`.
///
/// `q` (the de-biased labels) replaces the teacher's soft label as the fitting target; with
/// `q = sigmoid(d_T)` this is plain binary KD at temperature 1 ([`binary_kd_terms`]).
pub fn debiased_kd_terms(student_logit: Tensor<1>, labels: Tensor<1>, targets: Tensor<1>, lambda: f64) -> (Tensor<1>, Tensor<1>) {
    let hard = bce_with_logits(student_logit.clone(), labels).mean().mul_scalar(1.0 - lambda);
    let soft = bce_with_logits(student_logit, targets).mean().mul_scalar(lambda);
    (hard, soft)
}

/// The two weighted terms of plain binary response KD, each `[1]`:
/// `((1 - lambda) * mean BCE(y, sigmoid(d_S)), lambda * tau^2 * mean BCE(sigmoid(d_T / tau), sigmoid(d_S / tau)))`.
///
/// Hinton's KD on the two logits in BCE form: its gradient equals that of kd-baselines' `Kd`
/// with `ce_weight = 1 - lambda`, `kd_weight = lambda` and the same temperature, because
/// `BCE(p, q) = KL(p || q) + H(p)` and the teacher's entropy `H(p)` is a constant.
pub fn binary_kd_terms(
    student_logit: Tensor<1>,
    teacher_logit: Tensor<1>,
    labels: Tensor<1>,
    temperature: f64,
    lambda: f64,
) -> (Tensor<1>, Tensor<1>) {
    let hard = bce_with_logits(student_logit.clone(), labels).mean().mul_scalar(1.0 - lambda);
    let soft_target = sigmoid(teacher_logit.div_scalar(temperature));
    let soft = bce_with_logits(student_logit.div_scalar(temperature), soft_target).mean().mul_scalar(lambda * temperature * temperature);
    (hard, soft)
}

/// Checks a weight that must lie in `[0, 1]`.
pub(crate) fn check_unit(name: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
        return Err(KdError::InvalidConfig(format!("{name} must be in [0, 1], got {value}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t1(values: &[f32], device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
    }

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_scalar::<f64>()
    }

    #[test]
    fn binary_logit_is_the_logit_gap() {
        let device = Device::flex();
        let z = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, 2.0, 1.0, -1.0], [2, 2]), &device);
        let d = binary_logit(z, "teacher").unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(d, vec![1.5, -2.0]);
        let z3 = Tensor::<2>::zeros([2, 3], &device);
        let err = binary_logit(z3, "teacher").unwrap_err().to_string();
        assert!(err.contains("3 logits"), "{err}");
    }

    #[test]
    fn hand_computed_terms() {
        let device = Device::flex();
        // One sample: d_S = 0 (p_S = 1/2), y = 1, q = 0.8, lambda = 0.25.
        // BCE(y, 1/2) = ln 2; BCE(q, 1/2) = ln 2 as well (any q against 1/2).
        let (hard, soft) = debiased_kd_terms(t1(&[0.0], &device), t1(&[1.0], &device), t1(&[0.8], &device), 0.25);
        assert!((scalar(hard) - 0.75 * 2f64.ln()).abs() < 1e-6);
        assert!((scalar(soft) - 0.25 * 2f64.ln()).abs() < 1e-6);
        // d_S = 2, q = 0.3: BCE = softplus(2) - 0.3 * 2.
        let (_, soft) = debiased_kd_terms(t1(&[2.0], &device), t1(&[1.0], &device), t1(&[0.3], &device), 1.0);
        let expected = (1.0 + 2f64.exp()).ln() - 0.6;
        assert!((scalar(soft) - expected).abs() < 1e-5);
        let q = infuse(t1(&[0.2, 0.9], &device), t1(&[1.0, 0.0], &device), 0.5).into_data().try_to_vec::<f32>().unwrap();
        assert!((q[0] - 0.6).abs() < 1e-6 && (q[1] - 0.45).abs() < 1e-6, "{q:?}");
    }
}
