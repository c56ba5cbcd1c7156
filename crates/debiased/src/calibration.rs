//! Label de-biasing as pure functions: the temperature fit (a), the prior shift (b), the side
//! correction (c), and the numbers they are judged by.
//!
//! Everything here works on the teacher's *binary logit* `d = z_1 - z_0` (class 1 is the
//! positive class), so that `p_T = softmax(z)[1] = sigmoid(d)`. The fits run on the host in
//! `f64`: they are one-dimensional and run once, before training.

use burn::tensor::Tensor;
use kd_core::{KdError, Result};

/// `sigmoid(x)`, without overflow for any finite `x`.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(x))`, without overflow for any finite `x`.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Mean binary negative log-likelihood of labels under `p = sigmoid(d / T + b)`.
///
/// Written in the logit domain (`softplus(s) - y s`), so a saturated logit gives a large finite
/// loss instead of `log(0)`. An empty input gives `NaN`.
pub fn binary_nll(logits: &[f64], positives: &[bool], temperature: f64, shift: f64) -> f64 {
    let n = logits.len().min(positives.len());
    let sum: f64 = logits
        .iter()
        .zip(positives)
        .map(|(&d, &y)| {
            let s = d / temperature + shift;
            softplus(s) - if y { s } else { 0.0 }
        })
        .sum();
    sum / n as f64
}

/// Fraction of positive labels; an error when the labels hold only one class (no prior to
/// match, no likelihood to calibrate against) or none at all.
pub fn positive_rate(positives: &[bool], what: &str) -> Result<f64> {
    if positives.is_empty() {
        return Err(KdError::InvalidConfig(format!("{what} is empty: de-biasing needs labelled samples")));
    }
    let count = positives.iter().filter(|&&y| y).count();
    if count == 0 || count == positives.len() {
        let class = if count == 0 { 0 } else { 1 };
        return Err(KdError::InvalidConfig(format!(
            "{what} holds only class {class} ({} samples): de-biasing needs both classes",
            positives.len()
        )));
    }
    Ok(count as f64 / positives.len() as f64)
}

/// Step (a): the temperature `T` that minimises [`binary_nll`] of `sigmoid(d / T)` on a
/// calibration split, searched within `bounds = [T_min, T_max]`.
///
/// Golden-section search on `log T`: the NLL is convex in `1/T` (a logistic loss of a linear
/// function of it), and `1/T` is monotone in `log T`, so the objective is unimodal there. When
/// the calibration data are separable by `d` the NLL keeps falling as `T -> 0` and the answer
/// is `T_min`; when `d` carries no signal it is `T_max`.
pub fn fit_temperature(logits: &[f64], positives: &[bool], bounds: [f64; 2]) -> Result<f64> {
    check_same_len(logits, positives, "temperature fit")?;
    positive_rate(positives, "the calibration split")?;
    check_finite(logits, "teacher logits on the calibration split")?;
    check_bounds(bounds)?;
    let nll = |u: f64| binary_nll(logits, positives, u.exp(), 0.0);
    let (mut lo, mut hi) = (bounds[0].ln(), bounds[1].ln());
    // 1/phi: each step keeps this fraction of the bracket and reuses one evaluation.
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut a = hi - ratio * (hi - lo);
    let mut b = lo + ratio * (hi - lo);
    let (mut fa, mut fb) = (nll(a), nll(b));
    // 1e-9 in log T is far below anything that changes the loss; 200 steps is a hard cap.
    for _ in 0..200 {
        if hi - lo < 1e-9 {
            break;
        }
        if fa <= fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - ratio * (hi - lo);
            fa = nll(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + ratio * (hi - lo);
            fb = nll(b);
        }
    }
    // The ends are candidates too: the optimum may sit on a bound (separable or useless
    // teacher), where the interior points only approach it.
    let mid = 0.5 * (lo + hi);
    let best = [bounds[0].ln(), mid, bounds[1].ln()]
        .into_iter()
        .map(|u| (u, nll(u)))
        .fold((mid, f64::INFINITY), |acc, (u, f)| if f < acc.1 { (u, f) } else { acc });
    Ok(best.0.exp())
}

/// Step (b): the logit shift `b` such that the mean of `sigmoid(s_i + b)` equals
/// `positive_rate`, where `s` are the (temperature-scaled) teacher logits on the training set.
///
/// The mean is strictly increasing in `b` and tends to 0 and 1 at the ends, so for a rate in
/// `(0, 1)` there is exactly one root; bisection finds it inside `[-(M + 40), M + 40]` with
/// `M = max |s_i|`, where every sigmoid is within `e^-40` of 0 or 1 at the ends.
pub fn fit_prior_shift(scaled_logits: &[f64], positive_rate: f64) -> Result<f64> {
    if scaled_logits.is_empty() {
        return Err(KdError::InvalidConfig("prior correction needs at least one training sample".into()));
    }
    if !(positive_rate > 0.0 && positive_rate < 1.0) {
        return Err(KdError::InvalidConfig(format!(
            "prior correction needs a positive rate strictly between 0 and 1, got {positive_rate}"
        )));
    }
    check_finite(scaled_logits, "teacher logits on the training split")?;
    let reach = scaled_logits.iter().fold(0.0f64, |m, s| m.max(s.abs())) + 40.0;
    let excess = |b: f64| mean_probability(scaled_logits, b) - positive_rate;
    let (mut lo, mut hi) = (-reach, reach);
    for _ in 0..300 {
        let mid = 0.5 * (lo + hi);
        // Stop at the resolution of f64: the midpoint no longer moves.
        if mid <= lo || mid >= hi {
            break;
        }
        if excess(mid) < 0.0 { lo = mid } else { hi = mid }
    }
    Ok(0.5 * (lo + hi))
}

/// Mean of `sigmoid(s_i + shift)`.
pub fn mean_probability(scaled_logits: &[f64], shift: f64) -> f64 {
    scaled_logits.iter().map(|&s| sigmoid(s + shift)).sum::<f64>() / scaled_logits.len() as f64
}

/// Step (c) for one sample: a probability on the wrong side of 0.5 for its label moves to
/// `0.5 + margin` (positive label) or `0.5 - margin` (negative label); others are unchanged.
///
/// Exactly 0.5 counts as the wrong side for both labels: it says nothing about the class.
pub fn side_correct(probability: f64, positive: bool, margin: f64) -> f64 {
    match positive {
        true if probability <= 0.5 => 0.5 + margin,
        false if probability >= 0.5 => 0.5 - margin,
        _ => probability,
    }
}

/// Step (c) on a batch: [`side_correct`] element-wise, with `labels` as 0.0 / 1.0 floats.
pub fn side_correct_tensor(probabilities: Tensor<1>, labels: Tensor<1>, margin: f64) -> Tensor<1> {
    let positive = labels.clone().greater_elem(0.5);
    let negative = labels.lower_equal_elem(0.5);
    let wrong_for_positive = probabilities.clone().lower_equal_elem(0.5).bool_and(positive);
    let wrong_for_negative = probabilities.clone().greater_equal_elem(0.5).bool_and(negative);
    probabilities.mask_fill(wrong_for_positive, 0.5 + margin).mask_fill(wrong_for_negative, 0.5 - margin)
}

fn check_same_len(logits: &[f64], positives: &[bool], what: &str) -> Result<()> {
    if logits.len() != positives.len() {
        return Err(KdError::ShapeMismatch {
            what: format!("{what}: labels"),
            expected: vec![logits.len()],
            actual: vec![positives.len()],
        });
    }
    Ok(())
}

fn check_finite(values: &[f64], what: &str) -> Result<()> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err(KdError::NonFinite { what: what.into() });
    }
    Ok(())
}

/// Checks a temperature search interval: `0 < T_min <= T_max`, both finite.
pub fn check_bounds(bounds: [f64; 2]) -> Result<()> {
    let [lo, hi] = bounds;
    if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
        return Err(KdError::InvalidConfig(format!("temperature bounds must satisfy 0 < T_min <= T_max (finite), got [{lo}, {hi}]")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Deterministic uniform numbers in [0, 1) (a small LCG: the tests need no rand crate).
    pub(crate) struct Lcg(pub u64);
    impl Lcg {
        pub fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// `n` true logits, standard-normal-ish, and labels drawn from `sigmoid(true logit)`.
    fn well_calibrated(n: usize, seed: u64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = Lcg(seed);
        let mut logits = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            // Sum of uniforms: roughly normal, mean 0, std 2.
            let x = (0..6).map(|_| rng.next() - 0.5).sum::<f64>() * 2.0 * 2.0f64.sqrt();
            labels.push(rng.next() < sigmoid(x));
            logits.push(x);
        }
        (logits, labels)
    }

    #[test]
    fn temperature_undoes_over_confidence() {
        let (true_logits, labels) = well_calibrated(4000, 7);
        for scale in [0.5, 1.0, 3.0] {
            let teacher: Vec<f64> = true_logits.iter().map(|d| d * scale).collect();
            let t = fit_temperature(&teacher, &labels, [0.05, 20.0]).unwrap();
            // The labels come from the unscaled logits, so T should be close to the scale.
            assert!((t / scale - 1.0).abs() < 0.15, "scale {scale}: T = {t}");
            let before = binary_nll(&teacher, &labels, 1.0, 0.0);
            let after = binary_nll(&teacher, &labels, t, 0.0);
            assert!(after <= before + 1e-12, "scale {scale}: {after} > {before}");
            if scale == 3.0 {
                assert!(after < before - 0.05, "{after} vs {before}");
            }
        }
    }

    #[test]
    fn temperature_hits_the_bounds_on_degenerate_data() {
        // Separable: the NLL falls as T -> 0.
        let t = fit_temperature(&[-2.0, -1.0, 1.0, 2.0], &[false, false, true, true], [0.1, 10.0]).unwrap();
        assert!((t - 0.1).abs() < 1e-6, "{t}");
        // Anti-correlated: the best temperature within the bounds is the flattest one.
        let t = fit_temperature(&[2.0, 1.0, -1.0, -2.0], &[false, false, true, true], [0.1, 10.0]).unwrap();
        assert!((t - 10.0).abs() < 1e-5, "{t}");
        assert!(fit_temperature(&[1.0, 2.0], &[true, true], [0.1, 10.0]).is_err());
        assert!(fit_temperature(&[1.0, 2.0], &[true, false], [0.0, 10.0]).is_err());
        assert!(fit_temperature(&[1.0, f64::NAN], &[true, false], [0.1, 10.0]).is_err());
        assert!(fit_temperature(&[1.0], &[true, false], [0.1, 10.0]).is_err());
    }

    #[test]
    fn prior_shift_matches_the_positive_rate() {
        let (logits, _) = well_calibrated(1000, 3);
        // Teacher biased towards the positive class by +2.
        let biased: Vec<f64> = logits.iter().map(|d| d + 2.0).collect();
        for rate in [0.05, 0.3, 0.5, 0.9] {
            let b = fit_prior_shift(&biased, rate).unwrap();
            assert!((mean_probability(&biased, b) - rate).abs() < 1e-12, "rate {rate}");
        }
        // Saturated logits still bracket.
        let b = fit_prior_shift(&[500.0, 400.0, -300.0], 0.5).unwrap();
        assert!((mean_probability(&[500.0, 400.0, -300.0], b) - 0.5).abs() < 1e-9);
        assert!(fit_prior_shift(&biased, 0.0).is_err());
        assert!(fit_prior_shift(&biased, 1.0).is_err());
        assert!(fit_prior_shift(&[], 0.5).is_err());
    }

    #[test]
    fn side_correction_moves_only_wrong_sides() {
        assert_eq!(side_correct(0.2, true, 0.05), 0.55);
        assert_eq!(side_correct(0.5, true, 0.05), 0.55);
        assert_eq!(side_correct(0.7, true, 0.05), 0.7);
        assert_eq!(side_correct(0.8, false, 0.05), 0.45);
        assert_eq!(side_correct(0.5, false, 0.05), 0.45);
        assert_eq!(side_correct(0.1, false, 0.05), 0.1);

        let device = Device::flex();
        let p = Tensor::<1>::from_data(TensorData::from([0.2f32, 0.5, 0.7, 0.8, 0.5, 0.1]), &device);
        let y = Tensor::<1>::from_data(TensorData::from([1.0f32, 1.0, 1.0, 0.0, 0.0, 0.0]), &device);
        let out = side_correct_tensor(p, y, 0.05).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let expected = [0.55f32, 0.55, 0.7, 0.45, 0.45, 0.1];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn positive_rate_rejects_single_class() {
        assert_eq!(positive_rate(&[true, false, false, false], "x").unwrap(), 0.25);
        let err = positive_rate(&[false, false], "the training split").unwrap_err().to_string();
        assert!(err.contains("only class 0"), "{err}");
        assert!(positive_rate(&[], "x").is_err());
    }
}
