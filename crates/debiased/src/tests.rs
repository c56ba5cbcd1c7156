//! Tests of the fit, the distillers and their use with the trainer, on synthetic binary data.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use kd_baselines::fitnet::RegressorKind;
use kd_baselines::{FitNet, FitNetConfig, Kd, KdConfig};
use kd_core::Step;
use kd_core::distiller::step_without_update;
use kd_core::{
    Batch, BatchSource, Distiller, FrozenTeacher, KdError, ModelOutput, Result, RunOptions, SelectBy, StepContext, Teacher, TeacherNeed,
    TrainConfig, Trainer,
};
use kd_models::Mlp;

use crate::calibration::{binary_nll, mean_probability, sigmoid};
use crate::{BinaryKd, BinaryKdConfig, DebiasOptions, DebiasedKd, DebiasedKdConfig, Debiaser, PriorFitSplit};

/// The direction the synthetic labels depend on.
const W: [f64; 2] = [1.5, -1.0];

/// Deterministic uniform numbers in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Two features per sample (`[2, 1, 1]` inputs); the label is drawn from
/// `sigmoid(W.x + offset)`, so `W.x + offset` is the calibrated logit.
struct Synthetic {
    x: Vec<[f32; 2]>,
    labels: Vec<usize>,
    classes: usize,
    name: String,
}

impl Synthetic {
    fn new(n: usize, offset: f64, seed: u64) -> Self {
        let mut rng = Lcg(seed);
        let mut x = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let a = (rng.next() * 4.0 - 2.0) as f32;
            let b = (rng.next() * 4.0 - 2.0) as f32;
            let logit = W[0] * a as f64 + W[1] * b as f64 + offset;
            labels.push((rng.next() < sigmoid(logit)) as usize);
            x.push([a, b]);
        }
        Synthetic { x, labels, classes: 2, name: format!("synthetic-{seed}") }
    }

    /// Same inputs, every label replaced.
    fn relabelled(mut self, label: impl Fn(usize) -> usize, classes: usize) -> Self {
        self.labels = (0..self.labels.len()).map(label).collect();
        self.classes = classes;
        self
    }

    fn positive_rate(&self) -> f64 {
        self.labels.iter().filter(|&&l| l == 1).count() as f64 / self.labels.len() as f64
    }
}

impl BatchSource for Synthetic {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn len(&self) -> usize {
        self.x.len()
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn input_shape(&self) -> [usize; 3] {
        [2, 1, 1]
    }
    fn label(&self, index: usize) -> usize {
        self.labels[index]
    }
    fn augmented(&self) -> bool {
        false
    }
    fn batch(&self, indices: &[usize], _epoch: usize, view: u64, device: &Device) -> Result<Batch> {
        let inputs = indices.iter().flat_map(|&i| self.x[i]).collect();
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Batch::from_host(inputs, [indices.len(), 2, 1, 1], labels, indices.to_vec(), vec![view; indices.len()], device)
    }
    fn fingerprint(&self) -> u64 {
        self.x.len() as u64
    }
}

/// A teacher that knows the true direction but distorts it: logits `[0, scale * W.x + bias]`
/// (with `classes` logits in all, the extra ones 0). `scale > 1` is over-confident, `bias`
/// leans towards a class.
struct DistortedTeacher {
    scale: f64,
    bias: f64,
    classes: usize,
}

impl Teacher for DistortedTeacher {
    fn describe(&self) -> String {
        format!("distorted(scale {}, bias {})", self.scale, self.bias)
    }
    fn num_classes(&self) -> Option<usize> {
        Some(self.classes)
    }
    fn outputs(&self, batch: &Batch, need: TeacherNeed) -> Result<Option<ModelOutput>> {
        if need == TeacherNeed::Nothing {
            return Ok(None);
        }
        let device = batch.inputs.device();
        let n = batch.len();
        let x: Tensor<2> = batch.inputs.clone().without_autodiff().reshape([n, 2]);
        let w = Tensor::<2>::from_data(TensorData::new(vec![W[0] as f32, W[1] as f32], [2, 1]), &device);
        let d = x.clone().matmul(w).mul_scalar(self.scale).add_scalar(self.bias);
        let mut columns = vec![Tensor::zeros([n, 1], &device), d];
        columns.extend((2..self.classes).map(|_| Tensor::zeros([n, 1], &device)));
        Ok(Some(ModelOutput::logits_only(Tensor::cat(columns, 1))))
    }
}

fn teacher_d(teacher: &DistortedTeacher, data: &Synthetic) -> Vec<f64> {
    data.x.iter().map(|[a, b]| teacher.scale * (W[0] * *a as f64 + W[1] * *b as f64) + teacher.bias).collect()
}

fn positives(data: &Synthetic) -> Vec<bool> {
    data.labels.iter().map(|&l| l == 1).collect()
}

/// Batches of 32, SGD at 0.1, seed 5, evaluation in batches of 128.
fn recipe(epochs: usize) -> TrainConfig {
    TrainConfig { eval_batch_size: 128, ..kd_testkit::recipe(epochs, 32, 0.1, 5) }
}

/// The first step of a one-epoch run.
fn ctx() -> StepContext {
    kd_testkit::ctx(1, 1)
}

fn to_vec(t: Tensor<1>) -> Vec<f64> {
    t.without_autodiff().into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

fn scalar(t: Tensor<1>) -> f64 {
    to_vec(t)[0]
}

#[test]
fn calibration_lowers_the_nll_of_an_over_confident_teacher() {
    let device = Device::flex();
    let (calibration, train) = (Synthetic::new(1500, 0.0, 11), Synthetic::new(600, 0.0, 12));
    let teacher = DistortedTeacher { scale: 4.0, bias: 0.0, classes: 2 };
    let debiaser = Debiaser::fit(&teacher, &calibration, &train, DebiasOptions::default(), &device).unwrap();
    let report = debiaser.report().unwrap();
    assert_eq!((report.calibration_samples, report.train_samples), (1500, 600));
    // The labels follow the unscaled logit, so T should land near the scale.
    assert!((debiaser.temperature() / 4.0 - 1.0).abs() < 0.25, "T = {}", debiaser.temperature());
    assert!(report.calibration_nll_after < report.calibration_nll_before - 0.1, "{report:?}");
    // The report's numbers are the NLL of the teacher's logits, recomputed here independently.
    let d = teacher_d(&teacher, &calibration);
    let y = positives(&calibration);
    assert!((binary_nll(&d, &y, 1.0, 0.0) - report.calibration_nll_before).abs() < 1e-5);
    assert!((binary_nll(&d, &y, debiaser.temperature(), 0.0) - report.calibration_nll_after).abs() < 1e-5);

    // Switched off: T stays 1.
    let off = DebiasOptions { calibrate_temperature: false, ..Default::default() };
    assert_eq!(Debiaser::fit(&teacher, &calibration, &train, off, &device).unwrap().temperature(), 1.0);
}

#[test]
fn prior_correction_matches_the_positive_rate() {
    let device = Device::flex();
    // Imbalanced data (offset -1.5: about a quarter positive) and a teacher leaning positive.
    let (calibration, train) = (Synthetic::new(500, -1.5, 21), Synthetic::new(700, -1.5, 22));
    let teacher = DistortedTeacher { scale: 1.0, bias: 1.0, classes: 2 };
    let rate = train.positive_rate();
    assert!(rate > 0.1 && rate < 0.45, "{rate}");
    for options in [
        DebiasOptions { prior_fit: PriorFitSplit::Train, ..Default::default() },
        DebiasOptions { prior_fit: PriorFitSplit::Train, calibrate_temperature: false, ..Default::default() },
    ] {
        let debiaser = Debiaser::fit(&teacher, &calibration, &train, options, &device).unwrap();
        let report = debiaser.report().unwrap();
        assert!((report.train_positive_rate - rate).abs() < 1e-12);
        assert!(report.train_mean_probability_before > rate + 0.1, "{report:?}");
        assert!((report.train_mean_probability_after - rate).abs() < 1e-9, "{report:?}");
        assert!(debiaser.shift() < 0.0);
        // The same holds for the tensor transform used in training (f32 precision).
        let d = Tensor::<1>::from_data(TensorData::new(teacher_d(&teacher, &train), [train.len()]), &device);
        let mean = scalar(debiaser.probabilities(d).mean());
        assert!((mean - rate).abs() < 1e-5, "{mean} vs {rate}");
    }
    let off = DebiasOptions { prior_correction: false, ..Default::default() };
    assert_eq!(Debiaser::fit(&teacher, &calibration, &train, off, &device).unwrap().shift(), 0.0);
}

/// The default fits the shift on the calibration split: the corrected teacher's mean there is
/// the training split's positive rate, and a teacher that is unbiased on its own training data
/// but biased on new data still gets a correction.
#[test]
fn the_prior_shift_is_fitted_on_the_calibration_split_by_default() {
    let device = Device::flex();
    let (calibration, train) = (Synthetic::new(500, -1.5, 31), Synthetic::new(700, -1.5, 32));
    let teacher = DistortedTeacher { scale: 1.0, bias: 1.0, classes: 2 };
    let rate = train.positive_rate();
    let debiaser = Debiaser::fit(&teacher, &calibration, &train, DebiasOptions::default(), &device).unwrap();
    let report = debiaser.report().unwrap();
    assert_eq!(report.prior_fit, PriorFitSplit::Calibration);
    assert!(report.calibration_mean_probability_before > rate + 0.1, "{report:?}");
    assert!((report.calibration_mean_probability_after - rate).abs() < 1e-9, "{report:?}");
    let cal_d: Vec<f64> = teacher_d(&teacher, &calibration).iter().map(|&d| d / debiaser.temperature()).collect();
    assert!((mean_probability(&cal_d, debiaser.shift()) - rate).abs() < 1e-9);
    // The train-split fit gives another shift on these data (the splits differ).
    let on_train =
        Debiaser::fit(&teacher, &calibration, &train, DebiasOptions { prior_fit: PriorFitSplit::Train, ..Default::default() }, &device)
            .unwrap();
    assert!((on_train.shift() - debiaser.shift()).abs() > 1e-6);
    let cfg: DebiasOptions = serde_json::from_str(r#"{"prior_fit": "train"}"#).unwrap();
    assert_eq!(cfg.prior_fit, PriorFitSplit::Train);
    assert!(serde_json::from_str::<DebiasOptions>(r#"{"prior_fit": "test"}"#).is_err());
}

#[test]
fn targets_apply_side_correction_then_infusion() {
    let device = Device::flex();
    let options = DebiasOptions { side_correction: true, side_margin: 0.1, infusion: 0.25, ..Default::default() };
    let debiaser = Debiaser::new(2.0, -0.5, options).unwrap();
    let d = [3.0, -3.0, 0.2, -4.0, 6.0];
    let y = [true, true, false, false, false];
    let dt = Tensor::<1>::from_data(TensorData::new(d.to_vec(), [5]), &device);
    let yt = Tensor::<1>::from_data(TensorData::new(y.iter().map(|&p| p as u8 as f32).collect::<Vec<_>>(), [5]), &device);
    let q = to_vec(debiaser.targets(dt, yt));
    for i in 0..5 {
        let p = sigmoid(d[i] / 2.0 - 0.5);
        let side = match (y[i], p) {
            (true, p) if p <= 0.5 => 0.6,
            (false, p) if p >= 0.5 => 0.4,
            (_, p) => p,
        };
        let expected = 0.75 * side + 0.25 * y[i] as u8 as f64;
        assert!((q[i] - expected).abs() < 1e-6, "sample {i}: {} vs {expected}", q[i]);
        assert!((debiaser.target(d[i], y[i]) - expected).abs() < 1e-12);
    }
    assert!(Debiaser::new(0.0, 0.0, DebiasOptions::default()).is_err());
    assert!(Debiaser::new(1.0, 0.0, DebiasOptions { side_margin: 0.5, ..Default::default() }).is_err());
    assert!(Debiaser::new(1.0, 0.0, DebiasOptions { infusion: 1.5, ..Default::default() }).is_err());
}

/// Random student logits (autodiff, tracked), teacher logits and a batch of 0/1 labels.
fn random_case(n: usize, device: &Device) -> (Tensor<2>, Tensor<2>, Batch) {
    let ad = device.clone().autodiff();
    let student = Tensor::<2>::random([n, 2], Distribution::Normal(0.0, 2.0), &ad).require_grad();
    let teacher = Tensor::<2>::random([n, 2], Distribution::Normal(0.0, 3.0), device);
    let labels: Vec<usize> = (0..n).map(|i| (i * 7 + 3) % 5 % 2).collect();
    let batch = Batch::from_host(vec![0.0; n * 2], [n, 2, 1, 1], labels, (0..n).collect(), vec![0; n], device).unwrap();
    (student, teacher, batch)
}

#[test]
fn with_every_step_off_the_loss_is_plain_binary_kd() {
    let device = Device::flex();
    let (calibration, train) = (Synthetic::new(200, 0.0, 31), Synthetic::new(200, 0.0, 32));
    let teacher = DistortedTeacher { scale: 3.0, bias: 0.7, classes: 2 };
    let debiaser = Debiaser::fit(&teacher, &calibration, &train, DebiasOptions::all_off(), &device).unwrap();
    assert_eq!((debiaser.temperature(), debiaser.shift()), (1.0, 0.0));

    let (s, t, batch) = random_case(16, &device);
    for lambda in [0.0, 0.3, 0.5, 1.0] {
        let debiased = DebiasedKd::new(debiaser.clone(), DebiasedKdConfig { lambda }).unwrap();
        let plain = BinaryKd::new(BinaryKdConfig { temperature: 1.0, lambda }).unwrap();
        let a = debiased.terms(&batch, s.clone(), t.clone()).unwrap().total().unwrap();
        let b = plain.terms(&batch, s.clone(), t.clone()).unwrap().total().unwrap();
        assert!((scalar(a.clone()) - scalar(b.clone())).abs() < 1e-6, "lambda {lambda}");
        let (ga, gb) = (s.grad(&a.backward()).unwrap(), s.grad(&b.backward()).unwrap());
        let diff = (ga - gb).abs().max().into_scalar::<f64>();
        assert!(diff < 1e-6, "lambda {lambda}: gradients differ by {diff}");
    }
    // Any one step switched on changes the targets, so the loss too.
    let infused = Debiaser::new(1.0, 0.0, DebiasOptions { infusion: 0.2, ..DebiasOptions::all_off() }).unwrap();
    let a = DebiasedKd::new(infused, DebiasedKdConfig::default()).unwrap().terms(&batch, s.clone(), t.clone()).unwrap();
    let b = BinaryKd::new(BinaryKdConfig::default()).unwrap().terms(&batch, s, t).unwrap();
    assert!((scalar(a.total().unwrap()) - scalar(b.total().unwrap())).abs() > 1e-4);
}

#[test]
fn binary_kd_has_the_gradient_of_two_logit_kd() {
    let device = Device::flex();
    let (s, t, batch) = random_case(12, &device);
    let (temperature, lambda) = (2.0, 0.3);
    let binary = BinaryKd::new(BinaryKdConfig { temperature, lambda }).unwrap();
    let mut kd = Kd::new(KdConfig { temperature, ce_weight: 1.0 - lambda, kd_weight: lambda, logit_stand: None }).unwrap();
    let out = |logits: Tensor<2>| ModelOutput::logits_only(logits);
    let a = binary.terms(&batch, s.clone(), t.clone()).unwrap().total().unwrap();
    let b = step_without_update(&mut kd, &Step::new(ctx(), &batch, &out(s.clone()), Some(&out(t)))).unwrap().total().unwrap();
    // The losses differ by lambda * T^2 * (teacher entropy), a constant; the gradients agree.
    assert!(scalar(a.clone()) > scalar(b.clone()));
    let diff = (s.grad(&a.backward()).unwrap() - s.grad(&b.backward()).unwrap()).abs().max().into_scalar::<f64>();
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn clear_errors_for_non_binary_or_single_class_data() {
    let device = Device::flex();
    let good = || Synthetic::new(100, 0.0, 41);
    let teacher = DistortedTeacher { scale: 1.0, bias: 0.0, classes: 2 };
    let fit = |teacher: &DistortedTeacher, cal: &Synthetic, train: &Synthetic| {
        Debiaser::fit(teacher, cal, train, DebiasOptions::default(), &device).unwrap_err().to_string()
    };

    let err = fit(&DistortedTeacher { classes: 3, ..teacher }, &good(), &good());
    assert!(err.contains("binary teacher") && err.contains("3 classes"), "{err}");
    let three = good().relabelled(|i| i % 3, 3);
    let err = fit(&teacher, &three, &good());
    assert!(err.contains("calibration split") && err.contains("3 classes"), "{err}");
    let err = fit(&teacher, &good(), &good().relabelled(|_| 1, 2));
    assert!(err.contains("training split") && err.contains("only class 1"), "{err}");
    let err = fit(&teacher, &good().relabelled(|_| 0, 2), &good());
    assert!(err.contains("calibration split") && err.contains("only class 0"), "{err}");
    // A label outside {0, 1} in a split that claims two classes.
    let err = fit(&teacher, &good(), &good().relabelled(|i| if i == 5 { 2 } else { i % 2 }, 2));
    assert!(err.contains("label 2"), "{err}");
    let empty = Synthetic::new(0, 0.0, 1);
    assert!(fit(&teacher, &empty, &good()).contains("empty"));

    // The distiller refuses a 3-logit student before training, and a batch without a teacher.
    let debiaser = Debiaser::new(1.0, 0.0, DebiasOptions::default()).unwrap();
    let mut d = DebiasedKd::new(debiaser, DebiasedKdConfig::default()).unwrap();
    let three_logits = ModelOutput::logits_only(Tensor::zeros([4, 3], &device));
    let err = d.init_aux(&three_logits, None, &device).unwrap_err().to_string();
    assert!(err.contains("student has 3 logits"), "{err}");
    let (s, _, batch) = random_case(4, &device);
    let student = ModelOutput::logits_only(s);
    assert!(matches!(step_without_update(&mut d, &Step::new(ctx(), &batch, &student, None)), Err(KdError::Missing { .. })));
    assert!(DebiasedKd::new(Debiaser::new(1.0, 0.0, DebiasOptions::default()).unwrap(), DebiasedKdConfig { lambda: -0.1 }).is_err());
    assert!(BinaryKd::new(BinaryKdConfig { temperature: 0.0, lambda: 0.5 }).is_err());
}

#[test]
fn state_round_trips_and_refuses_another_recipe() {
    let device = Device::flex();
    let (calibration, train) = (Synthetic::new(300, 0.5, 51), Synthetic::new(300, 0.5, 52));
    let teacher = DistortedTeacher { scale: 2.5, bias: -0.5, classes: 2 };
    let fitted = Debiaser::fit(&teacher, &calibration, &train, DebiasOptions::default(), &device).unwrap();
    let bytes = DebiasedKd::new(fitted.clone(), DebiasedKdConfig::default()).unwrap().save_state().unwrap();

    let mut other = DebiasedKd::new(Debiaser::new(1.0, 0.0, DebiasOptions::default()).unwrap(), DebiasedKdConfig::default()).unwrap();
    other.load_state(&bytes).unwrap();
    assert_eq!(other.debiaser(), &fitted);

    let mut changed = DebiasedKd::new(fitted.clone(), DebiasedKdConfig { lambda: 0.7 }).unwrap();
    assert!(changed.load_state(&bytes).is_err());
    let side = Debiaser::new(1.0, 0.0, DebiasOptions { side_correction: true, ..Default::default() }).unwrap();
    assert!(DebiasedKd::new(side, DebiasedKdConfig::default()).unwrap().load_state(&bytes).is_err());
    assert!(other.load_state(b"not json").is_err());
}

#[test]
fn debiased_kd_trains_an_mlp_with_the_trainer_and_resumes() {
    let device = Device::flex();
    let (train, valid, test) = (Synthetic::new(384, -0.5, 61), Synthetic::new(160, -0.5, 62), Synthetic::new(160, -0.5, 63));
    let teacher = DistortedTeacher { scale: 3.0, bias: 0.8, classes: 2 };
    let debiaser = Debiaser::fit(&teacher, &valid, &train, DebiasOptions { side_correction: true, ..Default::default() }, &device).unwrap();

    let student = Mlp::new(2, &[8], 2, &device.clone().autodiff()).unwrap();
    let dir = kd_testkit::temp_dir();
    let options = RunOptions {
        select_by: SelectBy::RocAuc,
        checkpoint_dir: Some(dir.path().to_path_buf()),
        resume: true,
        stop_after_epochs: Some(2),
        ..Default::default()
    };
    let run = |student: Mlp| {
        let mut method = DebiasedKd::new(debiaser.clone(), DebiasedKdConfig::default()).unwrap();
        Trainer::new(recipe(3), &train, &test, device.clone()).with_validation(&valid).with_options(options.clone()).fit(
            student,
            &mut method,
            &teacher,
        )
    };
    let first = run(student.clone()).unwrap();
    assert!(!first.finished && first.history.len() == 2);
    let done = run(student).unwrap();
    assert!(done.finished && done.history.len() == 3);
    assert!((1..=3).contains(&done.best_epoch));
    for record in &done.history {
        assert!(record.train_terms["bce"].is_finite() && record.train_terms["debiased_kd"] > 0.0, "{record:?}");
        let valid = record.valid.unwrap().binary.expect("binary metrics on the validation split");
        assert!(valid.roc_auc.is_finite());
    }
    // The data are learnable from the two features: the selected epoch ranks well above chance.
    let selected = done.history[done.best_epoch - 1].valid.unwrap().binary.unwrap();
    assert!(selected.roc_auc > 0.75, "{selected:?}");
    let best_auc = done.history.iter().map(|r| r.valid.unwrap().binary.unwrap().roc_auc).fold(f64::MIN, f64::max);
    assert_eq!(selected.roc_auc, best_auc);
}

#[test]
fn fitnet_works_on_mlp_hidden_layers() {
    let device = Device::flex();
    let (train, test) = (Synthetic::new(128, 0.0, 71), Synthetic::new(64, 0.0, 72));
    // Hidden features are [batch, width, 1, 1]: the regressor is a 1x1 convolution.
    assert_eq!(RegressorKind::for_shapes([8, 1, 1], [16, 1, 1]).unwrap(), RegressorKind::Valid { kernel: [1, 1] });
    let teacher = FrozenTeacher::new(Mlp::new(2, &[16, 12], 2, &device).unwrap(), "mlp-16-12");
    for hint_layer in [0, 1] {
        let student = Mlp::new(2, &[8, 8], 2, &device.clone().autodiff()).unwrap();
        let mut method = FitNet::new(FitNetConfig { hint_layer, ..Default::default() }).unwrap();
        let options = RunOptions { select_by: SelectBy::RocAuc, ..Default::default() };
        let outcome =
            Trainer::new(recipe(2), &train, &test, device.clone()).with_options(options).fit(student, &mut method, &teacher).unwrap();
        assert!(outcome.history.iter().all(|r| r.train_terms["hint"].is_finite() && r.test.binary.is_some()));
        let teacher_width = [16, 12][hint_layer];
        let mapped = outcome.aux.forward(Tensor::random([4, 8, 1, 1], Distribution::Default, &device.clone().autodiff()));
        assert_eq!(mapped.dims(), [4, teacher_width, 1, 1]);
    }
}
