//! The loss primitives of kd-core against hand-computed values, and their properties.

use kd::core::burn::tensor::{Int, Tensor, TensorData};
use kd::core::loss::*;

use crate::common::device;

fn t2(rows: &[&[f32]]) -> Tensor<2> {
    let c = rows[0].len();
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), c]), &device())
}

fn t2_grad(rows: &[&[f32]]) -> Tensor<2> {
    t2(rows).autodiff().require_grad()
}

fn labels(l: &[i64]) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(l.to_vec(), [l.len()]), &device())
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.without_autodiff().into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn close(a: f32, b: f64, tol: f64) -> bool {
    ((a as f64) - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn kd_kl_matches_hand_computed_values() {
    // Teacher [ln 3, 0] gives p = [3/4, 1/4]; a uniform student gives q = [1/2, 1/2].
    // KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120.
    let kl = values(kd_kl(t2(&[&[0.0, 0.0]]), t2(&[&[3f32.ln(), 0.0]]), 1.0));
    assert!(close(kl[0], 0.130_812_0, 1e-5), "{kl:?}");
    // At T = 2: p = [sqrt3, 1] / (sqrt3 + 1); KL = 0.0363408, times T^2 = 0.1453631.
    let kl = values(kd_kl(t2(&[&[0.0, 0.0]]), t2(&[&[3f32.ln(), 0.0]]), 2.0));
    assert!(close(kl[0], 0.145_363_1, 1e-5), "{kl:?}");
    // Identical logits: 0.
    let kl = values(kd_kl_mean(t2(&[&[1.0, -2.0, 3.0]]), t2(&[&[1.0, -2.0, 3.0]]), 4.0));
    assert!(kl[0].abs() < 1e-6);
}

#[test]
fn kd_kl_gradient_is_t_times_q_minus_p_over_batch() {
    let s = t2_grad(&[&[0.0, 0.0], &[1.0, 0.0]]);
    let t = t2(&[&[3f32.ln(), 0.0], &[1.0, 0.0]]);
    let loss = kd_kl_mean(s.clone(), t, 2.0);
    let grads = loss.backward();
    let g = values(s.grad(&grads).unwrap());
    // Row 0: q = [1/2, 1/2], p = [0.6339746, 0.3660254]; d/ds = T (q - p) / B = (q - p).
    assert!(close(g[0], 0.5 - 0.633_974_6, 1e-5) && close(g[1], 0.5 - 0.366_025_4, 1e-5), "{g:?}");
    // Row 1: identical logits, zero gradient.
    assert!(g[2].abs() < 1e-7 && g[3].abs() < 1e-7, "{g:?}");
}

#[test]
fn zero_target_probabilities_count_zero_and_never_nan() {
    // Target [1, 0] against [1/2, 1/2]: KL = ln 2.
    let kl = values(kl_from_probs(t2(&[&[1.0, 0.0]]), t2(&[&[0.5, 0.5]])));
    assert!(close(kl[0], std::f64::consts::LN_2, 1e-6), "{kl:?}");
    // A masked teacher class (-1e9) and huge logits: finite loss and finite gradients.
    let s = t2_grad(&[&[1000.0, -1000.0, 0.0], &[-100.0, 100.0, 50.0]]);
    let t = t2(&[&[-1e9, 1000.0, 3.0], &[100.0, -100.0, -1e9]]);
    let loss = kd_kl_mean(s.clone(), t, 1.0);
    let v = values(loss.clone());
    assert!(v[0].is_finite(), "{v:?}");
    let g = values(s.grad(&loss.backward()).unwrap());
    assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
}

#[test]
fn cross_entropies_match_hand_computed_values() {
    // Logits [0, ln 3], label 1: -ln(3/4) = 0.2876821.
    let ce = values(cross_entropy(t2(&[&[0.0, 3f32.ln()]]), labels(&[1])));
    assert!(close(ce[0], 0.287_682_1, 1e-6), "{ce:?}");
    // The soft version with a one-hot target equals the hard one.
    let logits = t2(&[&[0.3, -1.2, 2.0], &[1.0, 1.0, -3.0]]);
    let hard = values(cross_entropy(logits.clone(), labels(&[2, 0])));
    let soft = values(soft_cross_entropy(logits, one_hot(labels(&[2, 0]), 3)));
    for (h, s) in hard.iter().zip(&soft) {
        assert!((h - s).abs() < 1e-6);
    }
}

#[test]
fn bce_with_logits_is_stable_and_exact() {
    let z = Tensor::<1>::from_data(TensorData::new(vec![0.0f32, 100.0, -100.0, 2.0], [4]), &device());
    let y = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 0.25], [4]), &device());
    let v = values(bce_with_logits(z, y));
    assert!(close(v[0], std::f64::consts::LN_2, 1e-6));
    assert!(close(v[1], 100.0, 1e-6));
    assert!(v[2].abs() < 1e-6);
    // z = 2, y = 1/4: softplus(2) - 2/4 = 2.1269280 - 0.5 = 1.6269280.
    assert!(close(v[3], 1.626_928_0, 1e-6), "{v:?}");
}

#[test]
fn binary_split_sums_inside_and_outside_the_mask() {
    let probs = t2(&[&[0.2, 0.5, 0.3]]);
    let mask = label_mask(labels(&[1]), 3);
    let b = values(binary_split(probs, mask));
    assert!((b[0] - 0.5).abs() < 1e-7 && (b[1] - 0.5).abs() < 1e-7, "{b:?}");
}
