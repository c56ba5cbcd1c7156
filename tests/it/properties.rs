//! Properties of KD, DKD, RLD and logit standardization that need no reference numbers
//! (docs/methods.md, "DKD", "RLD", "Logit standardization" and "Parity tests").

use kd::baselines::{DkdParams, LogitStandardization, dkd_loss, dkd_nckd, dkd_tckd, kd_loss};
use kd::core::Step;
use kd::core::burn::tensor::activation::softmax;
use kd::core::burn::tensor::{Int, Tensor, TensorData};
use kd::core::distiller::step_without_update;
use kd::core::loss::{StdKind, kd_kl, z_score};
use kd::core::rng::KeyedRng;
use kd::rld::{RldParams, rank_mask, rld_loss, rld_mcd};

use crate::common::device;

/// Deterministic logits in `[-scale, scale)`, `[batch, classes]`, as f32 values.
fn random_logits(batch: usize, classes: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut rng = KeyedRng::new(&[seed, 0x10915]);
    (0..batch * classes).map(|_| ((rng.unit() * 2.0 - 1.0) * scale) as f32).collect()
}

fn random_labels(batch: usize, classes: usize, seed: u64) -> Vec<i64> {
    let mut rng = KeyedRng::new(&[seed, 0x1abe1]);
    (0..batch).map(|_| rng.below(classes) as i64).collect()
}

fn matrix(values: &[f32], classes: usize) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len() / classes, classes]), &device())
}

fn with_grad(values: &[f32], classes: usize) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len() / classes, classes]), &device().autodiff()).require_grad()
}

fn labels(values: &[i64]) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), &device())
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.without_autodiff().into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

fn assert_close(actual: f64, expected: f64, rel: f64, abs: f64, what: &str) {
    assert!((actual - expected).abs() <= abs + rel * expected.abs(), "{what}: {actual} vs {expected}");
}

/// Teacher logits whose top-1 class is the label, with a margin of at least 0.5 (no ties).
fn teacher_right(values: &mut [f32], labels: &[i64], classes: usize) {
    for (row, &y) in values.chunks_mut(classes).zip(labels) {
        let max = row.iter().copied().fold(f32::MIN, f32::max);
        row[y as usize] = max + 0.5;
    }
}

#[test]
fn dkd_decomposes_kd_per_sample() {
    // KD_KL = TCKD + (1 - p^T_y) * NCKD for every sample, all three at T and times T^2.
    let (batch, classes) = (6, 10);
    for (seed, temperature) in [(1u64, 1.0), (2, 4.0), (3, 2.0)] {
        let s = random_logits(batch, classes, 5.0, seed);
        let t = random_logits(batch, classes, 5.0, seed + 100);
        let y = random_labels(batch, classes, seed);
        let kl = host(kd_kl(matrix(&s, classes), matrix(&t, classes), temperature));
        let tckd = host(dkd_tckd(matrix(&s, classes), matrix(&t, classes), labels(&y), temperature));
        let nckd = host(dkd_nckd(matrix(&s, classes), matrix(&t, classes), labels(&y), temperature));
        let p_teacher = host(softmax(matrix(&t, classes).div_scalar(temperature), 1));
        for b in 0..batch {
            let p_y = p_teacher[b * classes + y[b] as usize];
            let rebuilt = tckd[b] + (1.0 - p_y) * nckd[b];
            assert_close(rebuilt, kl[b], 1e-4, 1e-5, &format!("seed {seed}, T {temperature}, sample {b}"));
        }
    }
}

#[test]
fn z_score_centres_and_scales() {
    let classes = 10;
    let z = random_logits(4, classes, 7.0, 5);
    let k = classes as f64;
    for (kind, expected_population_std) in [(StdKind::Population, 1.0), (StdKind::Unbiased, ((k - 1.0) / k).sqrt())] {
        let out = host(z_score(matrix(&z, classes), kind, 1e-7));
        for row in out.chunks(classes) {
            let mean = row.iter().sum::<f64>() / k;
            let population_var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / k;
            assert!(mean.abs() < 1e-5, "{kind:?}: mean {mean}");
            assert_close(population_var.sqrt(), expected_population_std, 1e-5, 1e-6, &format!("{kind:?} population std"));
            // The unbiased variant has unbiased std 1 (the population one sqrt(K/(K-1))).
            let unbiased_std = (population_var * k / (k - 1.0)).sqrt();
            let expected_unbiased = if kind == StdKind::Unbiased { 1.0 } else { (k / (k - 1.0)).sqrt() };
            assert_close(unbiased_std, expected_unbiased, 1e-5, 1e-6, &format!("{kind:?} unbiased std"));
        }
    }
}

#[test]
fn rld_equals_dkd_when_the_teacher_is_right() {
    let (batch, classes) = (8, 10);
    for (seed, temperature, stand) in [(7u64, 4.0, None), (8, 1.0, None), (9, 2.0, Some(LogitStandardization::default()))] {
        let s = random_logits(batch, classes, 4.0, seed);
        let mut t = random_logits(batch, classes, 4.0, seed + 100);
        let y = random_labels(batch, classes, seed);
        teacher_right(&mut t, &y, classes);

        let s_rld = with_grad(&s, classes);
        let rld = rld_loss(
            s_rld.clone(),
            matrix(&t, classes),
            labels(&y),
            &RldParams { alpha: 1.5, beta: 8.0, temperature, alpha_temperature: temperature, logit_stand: stand },
        );
        let g_rld = host(s_rld.grad(&rld.backward()).unwrap());
        let s_dkd = with_grad(&s, classes);
        let dkd =
            dkd_loss(s_dkd.clone(), matrix(&t, classes), labels(&y), &DkdParams { alpha: 1.5, beta: 8.0, temperature, logit_stand: stand });
        let g_dkd = host(s_dkd.grad(&dkd.backward()).unwrap());

        assert_close(host(rld)[0], host(dkd)[0], 1e-5, 1e-6, &format!("loss, seed {seed}"));
        for (i, (a, b)) in g_rld.iter().zip(&g_dkd).enumerate() {
            assert_close(*a, *b, 1e-4, 1e-6, &format!("gradient {i}, seed {seed}"));
        }
    }
}

#[test]
fn mcd_is_zero_when_the_teacher_ranks_the_label_last() {
    let (batch, classes) = (5, 10);
    let s = random_logits(batch, classes, 4.0, 11);
    let mut t = random_logits(batch, classes, 4.0, 12);
    let y = random_labels(batch, classes, 13);
    for (row, &label) in t.chunks_mut(classes).zip(&y) {
        let min = row.iter().copied().fold(f32::MAX, f32::min);
        row[label as usize] = min - 0.5;
    }
    let student = with_grad(&s, classes);
    let mcd = rld_mcd(student.clone(), matrix(&t, classes), labels(&y), 4.0);
    let mean = mcd.clone().mean();
    for v in host(mcd) {
        assert!(v.abs() < 1e-6, "MCD {v}");
    }
    let g = host(student.grad(&mean.backward()).unwrap());
    assert!(g.iter().all(|v| *v == 0.0), "{g:?}");
}

#[test]
fn masked_student_entries_get_no_mcd_gradient() {
    let (batch, classes) = (8, 10);
    let s = random_logits(batch, classes, 4.0, 21);
    let t = random_logits(batch, classes, 4.0, 22);
    let y = random_labels(batch, classes, 23);
    let mask: Vec<bool> = rank_mask(matrix(&t, classes), labels(&y)).into_data().try_to_vec::<bool>().unwrap();
    let student = with_grad(&s, classes);
    let g = host(student.grad(&rld_mcd(student.clone(), matrix(&t, classes), labels(&y), 4.0).mean().backward()).unwrap());
    let mut masked = 0;
    let mut unmasked_nonzero = 0;
    for (i, (&m, &v)) in mask.iter().zip(&g).enumerate() {
        if m {
            masked += 1;
            assert_eq!(v, 0.0, "masked entry [{}, {}] has gradient {v}", i / classes, i % classes);
        } else if v != 0.0 {
            unmasked_nonzero += 1;
        }
    }
    // The check means something only if both kinds of entries occur.
    assert!(masked > batch && unmasked_nonzero > 0, "masked {masked}, unmasked with gradient {unmasked_nonzero}");
}

#[test]
fn large_logits_give_finite_losses_and_gradients() {
    let (batch, classes) = (6, 10);
    let mut s = random_logits(batch, classes, 100.0, 31);
    let mut t = random_logits(batch, classes, 100.0, 32);
    let y = random_labels(batch, classes, 33);
    // Row 0: a saturated student sure of a wrong class, a teacher sure of the label.
    // Row 1: the reverse. Row 2: the teacher ranks the label last.
    for c in 0..classes {
        s[c] = if c == (y[0] as usize + 1) % classes { 100.0 } else { -100.0 };
        t[c] = if c == y[0] as usize { 100.0 } else { -100.0 };
        s[classes + c] = if c == y[1] as usize { 100.0 } else { -100.0 };
        t[classes + c] = if c == (y[1] as usize + 1) % classes { 100.0 } else { -100.0 };
        t[2 * classes + c] = if c == y[2] as usize { -100.0 } else { 100.0 };
    }
    for temperature in [1.0, 4.0] {
        for stand in [None, Some(LogitStandardization::default())] {
            for method in ["kd", "dkd", "rld"] {
                let student = with_grad(&s, classes);
                let (tm, ym) = (matrix(&t, classes), labels(&y));
                let loss = match method {
                    "kd" => kd_loss(student.clone(), tm, temperature, stand.as_ref()),
                    "dkd" => dkd_loss(student.clone(), tm, ym, &DkdParams { alpha: 1.0, beta: 8.0, temperature, logit_stand: stand }),
                    _ => rld_loss(
                        student.clone(),
                        tm,
                        ym,
                        &RldParams { alpha: 1.0, beta: 8.0, temperature, alpha_temperature: temperature, logit_stand: stand },
                    ),
                };
                let g = host(student.grad(&loss.backward()).unwrap());
                let v = host(loss)[0];
                let what = format!("{method} at T {temperature}, logit_stand {}", stand.is_some());
                assert!(v.is_finite(), "{what}: loss {v}");
                assert!(g.iter().all(|x| x.is_finite()), "{what}: gradient {g:?}");
            }
        }
    }
}

#[test]
fn binary_log_split_is_the_log_of_binary_split_and_never_log_zero() {
    use kd::core::loss::{binary_log_split, binary_split, label_mask, tempered_softmax};
    let classes = 10;
    let z = random_logits(4, classes, 5.0, 41);
    let y = random_labels(4, classes, 42);
    let mask = label_mask(labels(&y), classes);
    let direct = host(binary_split(tempered_softmax(matrix(&z, classes), 2.0), mask.clone()));
    let logged = host(binary_log_split(matrix(&z, classes), mask, 2.0));
    for (d, l) in direct.iter().zip(&logged) {
        assert_close(l.exp(), *d, 1e-5, 1e-7, "binary split");
    }
    // A saturated row: the sum outside is exp(-200) (0 in f32), its log is still finite.
    let mut row = vec![-100.0f32; classes];
    row[3] = 100.0;
    let logged = host(binary_log_split(matrix(&row, classes), label_mask(labels(&[3]), classes), 1.0));
    assert!(logged[0].abs() < 1e-6, "{logged:?}");
    assert_close(logged[1], -200.0 + ((classes - 1) as f64).ln(), 1e-5, 1e-4, "log of the outside sum");
}

#[test]
fn dkd_and_rld_distillers_weight_ce_and_warm_up() {
    use kd::baselines::{Dkd, DkdConfig};
    use kd::core::burn::tensor::Tensor as T;
    use kd::prelude::*;
    use kd::rld::{Rld, RldConfig};

    let (batch, classes) = (4, 5);
    let s = random_logits(batch, classes, 3.0, 51);
    let t = random_logits(batch, classes, 3.0, 52);
    let y = random_labels(batch, classes, 53);
    let output = |v: &[f32]| ModelOutput::logits_only(matrix(v, classes));
    let data = Batch {
        inputs: T::zeros([batch, 1, 1, 1], &device()),
        labels: labels(&y),
        labels_host: y.iter().map(|&l| l as usize).collect(),
        indices: (0..batch).collect(),
        views: vec![0; batch],
        replayed: Vec::new(),
    };
    let ctx = |epoch| kd_testkit::ctx(epoch, 240);
    let ce = host(kd::core::loss::cross_entropy_mean(matrix(&s, classes), labels(&y)))[0];
    let aux = kd::core::NoAux::new();
    let terms = |d: &mut dyn FnMut(&StepContext) -> LossTerms, epoch| -> Vec<(String, f64)> {
        d(&ctx(epoch)).terms().iter().map(|(n, v)| (n.clone(), host(v.clone())[0])).collect()
    };

    let mut dkd = Dkd::new(DkdConfig::default()).unwrap();
    let mut run_dkd =
        |c: &StepContext| step_without_update(&mut dkd, &Step::new(*c, &data, &output(&s), Some(&output(&t))).with_aux(&aux)).unwrap();
    let (early, full) = (terms(&mut run_dkd, 1), terms(&mut run_dkd, 40));
    let full_distill = host(dkd_loss(
        matrix(&s, classes),
        matrix(&t, classes),
        labels(&y),
        &DkdParams { alpha: 1.0, beta: 8.0, temperature: 4.0, logit_stand: None },
    ))[0];
    assert_eq!(full.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["ce", "tckd", "nckd"]);
    assert_close(full[0].1, ce, 1e-6, 1e-7, "dkd ce");
    assert_close(full[1].1 + full[2].1, full_distill, 1e-5, 1e-6, "dkd at full weight");
    assert_close(early[1].1 + early[2].1, full_distill / 20.0, 1e-5, 1e-6, "dkd at epoch 1 of 20");

    let mut rld = Rld::new(RldConfig { ce_weight: 0.5, ..Default::default() }).unwrap();
    let mut run_rld =
        |c: &StepContext| step_without_update(&mut rld, &Step::new(*c, &data, &output(&s), Some(&output(&t))).with_aux(&aux)).unwrap();
    let (early, full) = (terms(&mut run_rld, 5), terms(&mut run_rld, 20));
    let full_distill = host(rld_loss(
        matrix(&s, classes),
        matrix(&t, classes),
        labels(&y),
        &RldParams { alpha: 1.0, beta: 8.0, temperature: 4.0, alpha_temperature: 4.0, logit_stand: None },
    ))[0];
    assert_eq!(full.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["ce", "scd", "mcd"]);
    assert_close(full[0].1, 0.5 * ce, 1e-6, 1e-7, "rld ce");
    assert_close(full[1].1 + full[2].1, full_distill, 1e-5, 1e-6, "rld at full weight");
    assert_close(early[1].1 + early[2].1, full_distill / 4.0, 1e-5, 1e-6, "rld at epoch 5 of 20");

    // Errors, not panics: no teacher, or a teacher with other classes.
    let mut rld = Rld::new(RldConfig::default()).unwrap();
    assert!(step_without_update(&mut rld, &Step::new(ctx(1), &data, &output(&s), None).with_aux(&aux)).is_err());
    let wide = random_logits(batch, classes + 1, 3.0, 54);
    let wide_out = ModelOutput::logits_only(matrix(&wide, classes + 1));
    let err = step_without_update(&mut rld, &Step::new(ctx(1), &data, &output(&s), Some(&wide_out)).with_aux(&aux))
        .expect_err("class mismatch must be an error");
    assert!(matches!(err, KdError::ClassCountMismatch { .. }), "{err}");
    let mut dkd = Dkd::new(DkdConfig::default()).unwrap();
    assert!(step_without_update(&mut dkd, &Step::new(ctx(1), &data, &output(&s), Some(&wide_out)).with_aux(&aux)).is_err());
}
