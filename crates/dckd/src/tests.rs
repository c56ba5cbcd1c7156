//! Unit tests: parity with DKD, the `max` and `mix` targets, the companions, the configuration.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Gradients, Int, Tensor, TensorData};
use kd_baselines::fitnet::hint_loss;
use kd_baselines::{Dkd, DkdConfig, dkd_loss, dkd_tckd};
use kd_core::Step;
use kd_core::distiller::step_without_update;
use kd_core::loss::{binary_log_split, kl_from_log_probs, label_mask};
use kd_core::{Batch, Distiller, ModelOutput, StepContext, TeacherNeed};

use crate::{Companion, Dckd, DckdConfig, DckdLogitParams, TargetMode, dckd_logit_loss, dckd_target_log_binary, dckd_target_term};

fn flex() -> Device {
    Device::flex()
}

fn matrix(rows: &[Vec<f32>], device: &Device) -> Tensor<2> {
    let cols = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), cols]), device)
}

fn labels(values: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = values.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(v, [values.len()]), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

fn scalar(t: Tensor<1>) -> f64 {
    values(t)[0]
}

/// The first step of `epoch` of mdistiller's 240.
fn ctx(epoch: usize) -> StepContext {
    kd_testkit::ctx(epoch, 240)
}

/// Samples `0..n` with the labels `label_values`.
fn batch(label_values: &[usize], device: &Device) -> Batch {
    kd_testkit::label_batch(label_values.to_vec(), (0..label_values.len()).collect(), device)
}

fn output(logits: Tensor<2>, features: Vec<Tensor<4>>, embedding: Tensor<2>) -> ModelOutput {
    ModelOutput::new(logits, features, Some(embedding))
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * a.abs().max(b.abs())
}

/// The DKD golden cases: the project's copy, else the shared one.
fn dkd_golden() -> serde_json::Value {
    let own = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/golden/dkd.json");
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/golden/dkd.json");
    let path = if std::path::Path::new(own).exists() { own } else { shared };
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn json_matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect()
}

#[test]
fn teacher_mode_without_companion_is_dkd_on_the_golden_cases() {
    let golden = dkd_golden();
    let device = flex();
    let ad = device.clone().autodiff();
    let mut checked = 0;
    for case in golden["cases"].as_array().unwrap() {
        let params = &case["params"];
        if params["logit_stand"].as_bool().unwrap() {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let (alpha, beta, t) =
            (params["alpha"].as_f64().unwrap(), params["beta"].as_f64().unwrap(), params["temperature"].as_f64().unwrap());
        let s_rows = json_matrix(&case["student_logits"]);
        let t_rows = json_matrix(&case["teacher_logits"]);
        let y: Vec<usize> = case["labels"].as_array().unwrap().iter().map(|l| l.as_u64().unwrap() as usize).collect();
        let teacher = matrix(&t_rows, &device);

        // The pure functions: loss and gradient with respect to the student logits.
        let s_dckd = matrix(&s_rows, &ad).require_grad();
        let l_dckd = dckd_logit_loss(
            s_dckd.clone(),
            teacher.clone(),
            labels(&y, &device),
            &DckdLogitParams { alpha, beta, temperature: t, mode: TargetMode::Teacher },
        );
        let g_dckd = values(s_dckd.grad(&l_dckd.backward()).unwrap());
        let l_dckd = scalar(l_dckd);
        let s_dkd = matrix(&s_rows, &ad).require_grad();
        let l_dkd = dkd_loss(
            s_dkd.clone(),
            teacher.clone(),
            labels(&y, &device),
            &kd_baselines::DkdParams { alpha, beta, temperature: t, logit_stand: None },
        );
        let g_dkd = values(s_dkd.grad(&l_dkd.backward()).unwrap());
        let l_dkd = scalar(l_dkd);
        assert!(close(l_dckd, l_dkd, 1e-6, 1e-7), "{name}: DCKD {l_dckd} vs DKD {l_dkd}");
        for (a, b) in g_dckd.iter().zip(&g_dkd) {
            assert!(close(*a, *b, 1e-6, 1e-7), "{name}: gradient {a} vs {b}");
        }
        // And both still match the reference number (the golden contract's tolerance).
        let reference = case["loss"].as_f64().unwrap();
        assert!(close(l_dckd, reference, 1e-4, 1e-5), "{name}: {l_dckd} vs reference {reference}");

        // The distillers: past the warm-up, DCKD's logit terms are DKD's.
        let config =
            DckdConfig { alpha, beta, temperature: t, target_mode: TargetMode::Teacher, companion: Companion::None, ..Default::default() };
        let mut dckd = Dckd::new(config).unwrap();
        let mut dkd = Dkd::new(DkdConfig { alpha, beta, temperature: t, ..Default::default() }).unwrap();
        let b = batch(&y, &device);
        let embedding = Tensor::zeros([y.len(), 1], &device);
        let s_out = output(matrix(&s_rows, &device), vec![], embedding.clone());
        let t_out = output(teacher, vec![], embedding);
        let sum_kd =
            |terms: kd_core::LossTerms| -> f64 { terms.terms().iter().filter(|(n, _)| n != "ce").map(|(_, v)| scalar(v.clone())).sum() };
        let a = sum_kd(
            step_without_update(&mut dckd, &Step::new(ctx(20), &b, &s_out, Some(&t_out)).with_aux(&crate::DckdAux::empty())).unwrap(),
        );
        let d = sum_kd(step_without_update(&mut dkd, &Step::new(ctx(20), &b, &s_out, Some(&t_out))).unwrap());
        assert!(close(a, d, 1e-6, 1e-7), "{name}: distiller DCKD {a} vs DKD {d}");
        checked += 1;
    }
    assert!(checked > 10, "only {checked} golden cases without logit standardization");
}

#[test]
fn max_mode_leaves_a_more_confident_student_alone() {
    let device = flex();
    let ad = device.clone().autodiff();
    let t = 4.0;
    // Sample 0: the student is far more confident on its label (class 1) than the teacher.
    // Sample 1: the teacher is the more confident one (label 2).
    let s_rows = vec![vec![0.0f32, 9.0, -1.0, 0.5], vec![0.3, -0.2, 0.1, 0.0]];
    let t_rows = vec![vec![0.5f32, 1.0, 0.2, 0.0], vec![-1.0, 0.0, 6.0, 0.5]];
    let teacher = matrix(&t_rows, &device);
    let y = [1, 2];

    let student = matrix(&s_rows, &ad).require_grad();
    let per_sample = dckd_target_term(student.clone(), teacher.clone(), labels(&y, &device), t, TargetMode::Max);
    let grads = per_sample.clone().narrow(0, 0, 1).sum().backward();
    let v = values(per_sample);
    assert!(v[0].abs() < 1e-6, "sample 0 should be left alone, got {}", v[0]);
    let dkd = values(dkd_tckd(matrix(&s_rows, &device), teacher.clone(), labels(&y, &device), t));
    assert!(v[1] > 1e-3 && close(v[1], dkd[1], 1e-6, 1e-7), "sample 1: {} vs DKD's TCKD {}", v[1], dkd[1]);
    // No pull on sample 0 at all: its term has a zero gradient.
    let g = values(student.grad(&grads).unwrap());
    assert!(g.iter().all(|x| x.abs() < 1e-6), "{g:?}");

    // The target itself carries no gradient to the student, in `max` and in `mix`; a teacher
    // that is tracked (not the usual frozen one) keeps its gradient.
    for mode in [TargetMode::Max, TargetMode::Mix { g: 0.3 }] {
        let student = matrix(&s_rows, &ad).require_grad();
        let tracked_teacher = matrix(&t_rows, &ad).require_grad();
        let target = dckd_target_log_binary(student.clone(), tracked_teacher.clone(), labels(&y, &device), t, mode);
        let grads = target.sum().backward();
        let g = student.grad(&grads).map(values).unwrap_or_default();
        assert!(g.iter().all(|x| *x == 0.0), "{mode}: gradient through b*: {g:?}");
        let g_teacher = values(tracked_teacher.grad(&grads).unwrap());
        assert!(g_teacher.iter().any(|x| *x != 0.0), "{mode}: {g_teacher:?}");
        // With the usual constant teacher, b* is not tracked at all.
        let target = dckd_target_log_binary(matrix(&s_rows, &ad).require_grad(), teacher.clone(), labels(&y, &device), t, mode);
        assert!(!target.is_require_grad(), "{mode}");
    }
}

#[test]
fn the_student_moves_only_through_its_own_binary() {
    // The gradient of TCKD* equals that of KL(b* || b^S) with b* a constant built from numbers:
    // what a stop-gradient on the student's side of b* means.
    let device = flex();
    let ad = device.clone().autodiff();
    let t = 2.0;
    let s_rows = vec![vec![1.0f32, 2.0, -1.0], vec![0.0, 0.5, 3.0], vec![2.0, -2.0, 0.0]];
    let t_rows = vec![vec![0.0f32, 3.0, 0.0], vec![1.0, 0.0, 1.5], vec![0.5, 0.4, 0.3]];
    let y = [1, 2, 0];
    let teacher = matrix(&t_rows, &device);
    for mode in [TargetMode::Max, TargetMode::Mix { g: 0.6 }] {
        let student = matrix(&s_rows, &ad).require_grad();
        let loss = dckd_target_term(student.clone(), teacher.clone(), labels(&y, &device), t, mode).mean();
        let g = values(student.grad(&loss.backward()).unwrap());

        let star = values(dckd_target_log_binary(matrix(&s_rows, &device), teacher.clone(), labels(&y, &device), t, mode));
        let star = Tensor::<2>::from_data(TensorData::new(star.iter().map(|&x| x as f32).collect(), [3, 2]), &device);
        let student = matrix(&s_rows, &ad).require_grad();
        let log_b_s = binary_log_split(student.clone(), label_mask(labels(&y, &device), 3), t);
        let reference = kl_from_log_probs(star, log_b_s).mul_scalar(t * t).mean();
        let g_ref = values(student.grad(&reference.backward()).unwrap());
        for (a, b) in g.iter().zip(&g_ref) {
            assert!(close(*a, *b, 1e-5, 1e-7), "{mode}: {a} vs {b}");
        }
    }
}

#[test]
fn mix_interpolates_between_the_teacher_and_the_student() {
    let device = flex();
    let t = 4.0;
    let s = matrix(&[vec![0.0f32, 2.0, -1.0, 0.5], vec![0.3, -0.2, 0.1, 0.0]], &device);
    let te = matrix(&[vec![0.5f32, 1.0, 0.2, 0.0], vec![-1.0, 0.0, 6.0, 0.5]], &device);
    let y = labels(&[1, 2], &device);
    let term = |mode| values(dckd_target_term(s.clone(), te.clone(), y.clone(), t, mode));
    let teacher = term(TargetMode::Teacher);
    for (a, b) in term(TargetMode::Mix { g: 1.0 }).iter().zip(&teacher) {
        assert!(close(*a, *b, 1e-6, 1e-7));
    }
    assert!(term(TargetMode::Mix { g: 0.0 }).iter().all(|x| x.abs() < 1e-6));
    // The mixed target's true-class probability lies at g between the two.
    let p_y = |mode| values(dckd_target_log_binary(s.clone(), te.clone(), y.clone(), t, mode).narrow(1, 0, 1).exp());
    let (pt, ps, pm) = (p_y(TargetMode::Teacher), p_y(TargetMode::Mix { g: 0.0 }), p_y(TargetMode::Mix { g: 0.25 }));
    for i in 0..2 {
        assert!(close(pm[i], 0.25 * pt[i] + 0.75 * ps[i], 1e-5, 1e-7), "{} vs {}", pm[i], 0.25 * pt[i] + 0.75 * ps[i]);
    }
    // Saturated logits stay finite in every mode.
    let big = matrix(&[vec![0.0f32, 400.0, -400.0]], &device);
    for mode in [TargetMode::Teacher, TargetMode::Max, TargetMode::Mix { g: 0.5 }] {
        let v = values(dckd_target_term(big.clone(), big.clone().neg(), labels(&[1], &device), 1.0, mode));
        assert!(v[0].is_finite(), "{mode}: {v:?}");
    }
}

struct GradCount<'a> {
    grads: &'a Gradients,
    params: usize,
    non_zero: usize,
}

impl ModuleVisitor for GradCount<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.params += 1;
        if let Some(g) = param.val().grad(self.grads) {
            let g = values(g);
            assert!(g.iter().all(|v| v.is_finite()));
            if g.iter().any(|v| *v != 0.0) {
                self.non_zero += 1;
            }
        }
    }
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

#[test]
fn fitnet_companion_trains_the_regressor() {
    let device = flex();
    let ad = device.clone().autodiff();
    let y = [0, 3, 1, 4];
    let config = DckdConfig { companion: Companion::FitNet { hint_layer: 1 }, ..Default::default() };
    let mut dckd = Dckd::new(config).unwrap();
    assert_eq!(dckd.name(), "dckd+fitnet");
    assert_eq!(dckd.teacher_need(), TeacherNeed::LogitsAndFeatures);

    // Student hint [3, 8, 8], teacher hint [6, 4, 4]: the stride-2 regressor. Feature 0 is a decoy.
    let s_feat = random([4, 3, 8, 8], &ad).require_grad();
    let s_logits = random([4, 5], &ad).require_grad();
    let student = output(s_logits.clone(), vec![random([4, 1, 2, 2], &ad), s_feat.clone()], random([4, 7], &ad));
    let teacher =
        output(random([4, 5], &device), vec![random([4, 1, 2, 2], &device), random([4, 6, 4, 4], &device)], random([4, 9], &device));
    let aux = dckd.init_aux(&student.without_autodiff(), Some(&teacher), &ad).unwrap();
    let regressor = aux.regressor.as_ref().expect("the FitNet companion builds a regressor");

    let terms = step_without_update(&mut dckd, &Step::new(ctx(20), &batch(&y, &device), &student, Some(&teacher)).with_aux(&aux)).unwrap();
    let names: Vec<&str> = terms.terms().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ce", "tckd", "nckd", "hint"]);
    // gamma defaults to FitNet's hint weight.
    let hint = scalar(terms.terms()[3].1.clone());
    let plain = scalar(hint_loss(regressor, s_feat.clone(), teacher.features[1].clone()).unwrap());
    assert!(close(hint, 100.0 * plain, 1e-5, 1e-6), "{hint} vs 100 * {plain}");

    let grads = terms.total().unwrap().backward();
    let mut count = GradCount { grads: &grads, params: 0, non_zero: 0 };
    aux.visit(&mut count);
    // Conv weight and bias, BN gamma and beta are trained; the BN running statistics are
    // visited but get no gradient.
    assert_eq!((count.params, count.non_zero), (6, 4));
    assert!(s_feat.grad(&grads).is_some() && s_logits.grad(&grads).is_some());
    assert_eq!(aux.num_params(), regressor.num_params());
}

#[test]
fn rkd_and_no_companion() {
    let device = flex();
    let ad = device.clone().autodiff();
    let y = [0, 3, 1, 4];
    let b = batch(&y, &device);
    let s_emb = random([4, 7], &ad).require_grad();
    let student = output(random([4, 5], &ad), vec![], s_emb.clone());
    let teacher = output(random([4, 5], &device), vec![], random([4, 9], &device));

    let mut rkd = Dckd::new(DckdConfig { companion: Companion::rkd(), ..Default::default() }).unwrap();
    assert_eq!((rkd.name(), rkd.teacher_need()), ("dckd+rkd", TeacherNeed::LogitsAndFeatures));
    let aux = rkd.init_aux(&student.without_autodiff(), Some(&teacher), &ad).unwrap();
    assert!(aux.regressor.is_none());
    let terms = step_without_update(&mut rkd, &Step::new(ctx(20), &b, &student, Some(&teacher)).with_aux(&aux)).unwrap();
    let names: Vec<&str> = terms.terms().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ce", "tckd", "nckd", "rkd_distance", "rkd_angle"]);
    // gamma 1 by default: RKD's own 25 and 50 are the scale.
    let (d, a) =
        kd_baselines::rkd::rkd_loss(s_emb.clone(), teacher.embedding("test").unwrap().clone(), &kd_baselines::RkdConfig::default());
    assert!(close(scalar(terms.terms()[3].1.clone()), scalar(d), 1e-6, 1e-7));
    assert!(close(scalar(terms.terms()[4].1.clone()), scalar(a), 1e-6, 1e-7));
    assert!(s_emb.grad(&terms.total().unwrap().backward()).is_some());

    // No companion, beta 0: only CE and TCKD*, and a logits-only teacher is enough.
    let mut plain = Dckd::new(DckdConfig { companion: Companion::None, beta: 0.0, ..Default::default() }).unwrap();
    assert_eq!((plain.name(), plain.teacher_need()), ("dckd", TeacherNeed::Logits));
    let aux = plain.init_aux(&student.without_autodiff(), None, &ad).unwrap();
    let terms = step_without_update(&mut plain, &Step::new(ctx(20), &b, &student, Some(&teacher)).with_aux(&aux)).unwrap();
    let names: Vec<&str> = terms.terms().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ce", "tckd"]);
}

#[test]
fn warm_up_scales_the_distillation_terms() {
    let device = flex();
    let y = [0, 3, 1, 4];
    let b = batch(&y, &device);
    let student = output(random([4, 5], &device), vec![random([4, 2, 4, 4], &device)], random([4, 3], &device));
    let teacher = output(random([4, 5], &device), vec![random([4, 2, 4, 4], &device)], random([4, 3], &device));
    // The teacher target, so that TCKD* cannot be 0 by chance on random logits (as `max` can).
    let config = |warmup_companion| DckdConfig {
        companion: Companion::FitNet { hint_layer: 0 },
        target_mode: TargetMode::Teacher,
        warmup_companion,
        ..Default::default()
    };
    // One regressor for every run, so the hint terms are comparable.
    let aux = Dckd::new(config(true)).unwrap().init_aux(&student, Some(&teacher), &device).unwrap();
    let run = |warmup_companion: bool, epoch: usize| -> Vec<f64> {
        let mut d = Dckd::new(config(warmup_companion)).unwrap();
        step_without_update(&mut d, &Step::new(ctx(epoch), &b, &student, Some(&teacher)).with_aux(&aux))
            .unwrap()
            .terms()
            .iter()
            .map(|(_, v)| scalar(v.clone()))
            .collect()
    };
    // Epoch 5 of a 20-epoch warm-up: a quarter of the weight, CE untouched.
    let (early, late) = (run(true, 5), run(true, 25));
    assert!(close(early[0], late[0], 1e-6, 1e-7), "CE is not warmed up");
    for k in 1..4 {
        assert!(late[k] > 0.0 && close(early[k] * 4.0, late[k], 1e-5, 1e-7), "term {k}: {} vs {}", early[k], late[k]);
    }
    // Without `warmup_companion` the hint is at full weight from the start.
    let unwarmed = run(false, 5);
    assert!(close(unwarmed[1], early[1], 1e-6, 1e-7) && close(unwarmed[3], late[3], 1e-6, 1e-7));
}

#[test]
fn clear_errors() {
    let device = flex();
    let bad = |c: DckdConfig, needle: &str| {
        let e = Dckd::new(c).unwrap_err().to_string();
        assert!(e.contains(needle), "`{e}` should mention `{needle}`");
    };
    bad(DckdConfig { temperature: 0.0, ..Default::default() }, "temperature");
    bad(DckdConfig { temperature: f64::NAN, ..Default::default() }, "temperature");
    bad(DckdConfig { alpha: f64::NAN, ..Default::default() }, "alpha");
    bad(DckdConfig { beta: -1.0, ..Default::default() }, "beta");
    bad(DckdConfig { ce_weight: -0.1, ..Default::default() }, "ce_weight");
    bad(DckdConfig { gamma: Some(-3.0), ..Default::default() }, "gamma");
    bad(DckdConfig { target_mode: TargetMode::Mix { g: 1.5 }, ..Default::default() }, "g in [0, 1]");
    bad(
        DckdConfig {
            companion: Companion::Rkd { distance_weight: 25.0, angle_weight: 50.0, squared: false, eps: 0.0 },
            ..Default::default()
        },
        "eps",
    );
    bad(
        DckdConfig {
            companion: Companion::Rkd { distance_weight: -1.0, angle_weight: 50.0, squared: false, eps: 1e-12 },
            ..Default::default()
        },
        "distance_weight",
    );
    assert!(Dckd::new(DckdConfig { beta: 0.0, gamma: Some(0.0), target_mode: TargetMode::Mix { g: 0.0 }, ..Default::default() }).is_ok());

    // Run-time errors, not panics: no teacher, no teacher features, wrong class count, no regressor.
    let mut d = Dckd::new(DckdConfig::default()).unwrap();
    let b = batch(&[0, 1], &device);
    let s = output(random([2, 3], &device), vec![random([2, 2, 4, 4], &device); 3], random([2, 3], &device));
    let logits_only = output(random([2, 3], &device), vec![], random([2, 3], &device));
    assert!(
        step_without_update(&mut d, &Step::new(ctx(1), &b, &s, None).with_aux(&crate::DckdAux::empty()))
            .unwrap_err()
            .to_string()
            .contains("teacher")
    );
    let e = d.init_aux(&s, Some(&logits_only), &device).unwrap_err().to_string();
    assert!(e.contains("hint_layer is 2") && e.contains("logits-only"), "{e}");
    assert!(d.init_aux(&s, None, &device).is_err());
    let e = step_without_update(&mut d, &Step::new(ctx(1), &b, &s, Some(&s)).with_aux(&crate::DckdAux::empty())).unwrap_err().to_string();
    assert!(e.contains("regressor"), "{e}");
    let four = output(random([2, 4], &device), vec![], random([2, 3], &device));
    let mut none = Dckd::new(DckdConfig { companion: Companion::None, ..Default::default() }).unwrap();
    assert!(
        step_without_update(&mut none, &Step::new(ctx(1), &b, &s, Some(&four)).with_aux(&crate::DckdAux::empty()))
            .unwrap_err()
            .to_string()
            .contains("class")
    );
    let mut rkd = Dckd::new(DckdConfig { companion: Companion::rkd(), ..Default::default() }).unwrap();
    let short = output(random([2, 3], &device), vec![], random([3, 3], &device));
    assert!(step_without_update(&mut rkd, &Step::new(ctx(1), &b, &s, Some(&short)).with_aux(&crate::DckdAux::empty())).is_err());
}

#[test]
fn configuration_json_shapes() {
    let parse = |s: &str| serde_json::from_str::<DckdConfig>(s);
    // The defaults round-trip, and `{}` is the default.
    let default = DckdConfig::default();
    let json = serde_json::to_value(&default).unwrap();
    assert_eq!(json["target_mode"], serde_json::json!({"kind": "max"}));
    assert_eq!(json["companion"], serde_json::json!({"kind": "fitnet", "hint_layer": 2}));
    assert_eq!(json["gamma"], serde_json::Value::Null);
    assert_eq!(serde_json::from_value::<DckdConfig>(json).unwrap(), default);
    assert_eq!(parse("{}").unwrap(), default);
    assert_eq!(default.effective_gamma(), 100.0);

    // Tagged and string forms.
    let c = parse(r#"{"target_mode": {"kind": "mix", "g": 0.3}, "companion": {"kind": "rkd", "angle_weight": 10}}"#).unwrap();
    assert_eq!(c.target_mode, TargetMode::Mix { g: 0.3 });
    assert_eq!(c.companion, Companion::Rkd { distance_weight: 25.0, angle_weight: 10.0, squared: false, eps: 1e-12 });
    assert_eq!(c.effective_gamma(), 1.0);
    assert_eq!(parse(r#"{"target_mode": {"kind": "mix"}}"#).unwrap().target_mode, TargetMode::Mix { g: 0.5 });
    assert_eq!(parse(r#"{"target_mode": "teacher", "companion": "none"}"#).unwrap().companion, Companion::None);
    assert_eq!(parse(r#"{"target_mode": "mix(0.25)"}"#).unwrap().target_mode, TargetMode::Mix { g: 0.25 });
    assert_eq!(parse(r#"{"companion": "fitnet"}"#).unwrap().companion, Companion::FitNet { hint_layer: 2 });
    assert_eq!("max".parse::<TargetMode>().unwrap(), TargetMode::Max);
    assert_eq!(TargetMode::Mix { g: 0.25 }.to_string(), "mix(0.25)");

    // Errors name what is wrong.
    for (input, needle) in [
        (r#"{"target_mode": "median"}"#, "unknown DCKD target_mode"),
        (r#"{"target_mode": "mix(2)"}"#, "g in [0, 1]"),
        (r#"{"target_mode": {"kind": "mean"}}"#, "mean"),
        (r#"{"target_mode": {"kind": "max", "g": 1}}"#, "g"),
        (r#"{"companion": "crd"}"#, "unknown DCKD companion"),
        (r#"{"companion": {"kind": "fitnet", "layer": 1}}"#, "layer"),
        (r#"{"companion": {"kind": "none", "hint_layer": 1}}"#, "hint_layer"),
        (r#"{"alhpa": 2}"#, "alhpa"),
    ] {
        let e = match parse(input) {
            Ok(c) => panic!("{input} parsed as {c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(needle), "{input}: `{e}` should mention `{needle}`");
    }
}

/// DKD+FitNet differs from DCKD+FitNet in the target term alone: with the same student,
/// teacher and regressor, their `ce`, `nckd` and `hint` terms agree, and their `tckd` terms are
/// DKD's TCKD and DCKD's TCKD* (which leaves a student more confident than the teacher alone).
#[test]
fn dkd_fitnet_is_dckd_fitnet_with_dkd_s_target_term() {
    let device = flex();
    let ad = device.clone().autodiff();
    let y = [1, 2];
    // Sample 0: the student is far more confident on its label than the teacher.
    let s_rows = [vec![0.0f32, 9.0, -1.0, 0.5], vec![0.3, -0.2, 0.1, 0.0]];
    let s_logits = matrix(&s_rows, &ad);
    let t_logits = matrix(&[vec![0.5f32, 1.0, 0.2, 0.0], vec![-1.0, 0.0, 6.0, 0.5]], &device);
    let s_hint = random([2, 3, 4, 4], &ad);
    let t_hint = random([2, 3, 4, 4], &device);
    let student = output(s_logits.clone(), vec![s_hint.clone()], random([2, 3], &ad));
    let teacher = output(t_logits.clone(), vec![t_hint], random([2, 3], &device));
    let companion = Companion::FitNet { hint_layer: 0 };
    let mut dckd = Dckd::new(DckdConfig { companion, ..Default::default() }).unwrap();
    let mut dkd = Dckd::dkd_with_fitnet(DckdConfig { companion, target_mode: TargetMode::Teacher, ..Default::default() }).unwrap();
    assert_eq!(dkd.name(), "dkd+fitnet");
    let aux = dckd.init_aux(&student.without_autodiff(), Some(&teacher), &ad).unwrap();
    let b = batch(&y, &device);
    let terms = |d: &mut Dckd| {
        let t = step_without_update(d, &Step::new(ctx(20), &b, &student, Some(&teacher)).with_aux(&aux)).unwrap();
        t.terms().iter().map(|(n, v)| (n.clone(), scalar(v.clone()))).collect::<Vec<_>>()
    };
    let (ours, control) = (terms(&mut dckd), terms(&mut dkd));
    for (a, b) in ours.iter().zip(&control) {
        assert_eq!(a.0, b.0);
        if a.0 != "tckd" {
            assert!(close(a.1, b.1, 1e-6, 1e-7), "{}: {} vs {}", a.0, a.1, b.1);
        }
    }
    let tckd = values(dkd_tckd(matrix(&s_rows, &device), t_logits, labels(&y, &device), 4.0));
    let dkd_tckd_mean = (tckd[0] + tckd[1]) / 2.0;
    let (ours_tckd, control_tckd) = (ours[1].1, control[1].1);
    assert!(close(control_tckd, dkd_tckd_mean, 1e-5, 1e-7), "{control_tckd} vs DKD's {dkd_tckd_mean}");
    assert!(ours_tckd < control_tckd - 1e-4, "DCKD's TCKD* {ours_tckd} should drop sample 0's term (DKD's {control_tckd})");

    // The preset refuses anything but DKD's target with the FitNet companion.
    for config in [
        DckdConfig { companion, ..Default::default() },
        DckdConfig { companion: Companion::None, target_mode: TargetMode::Teacher, ..Default::default() },
    ] {
        let e = Dckd::dkd_with_fitnet(config).unwrap_err().to_string();
        assert!(e.contains("dkd+fitnet") && e.contains("target_mode"), "{e}");
    }
}
