use super::*;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Distribution, Gradients};
use kd_core::Classifier;
use kd_core::distiller::step_without_update;

fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Outputs with the given stage maps (the first one the stem) and a `[B, d]` embedding.
fn output(features: Vec<Tensor<4>>, d: usize, device: &Device) -> ModelOutput {
    let b = features[0].dims()[0];
    let embedding = Tensor::random([b, d], Distribution::Normal(0.0, 1.0), device);
    ModelOutput::new(Tensor::random([b, 3], Distribution::Normal(0.0, 1.0), device), features, Some(embedding))
}

/// The sum of absolute gradient values of each float tensor of a module, in visiting order
/// (`None`: no gradient, as for BatchNorm's running statistics).
struct GradSums<'a>(&'a Gradients, Vec<Option<f32>>);

impl ModuleVisitor for GradSums<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let sum = param.val().grad(self.0).map(|g| g.abs().sum().into_scalar::<f32>());
        self.1.push(sum);
    }
}

fn value(terms: &LossTerms, name: &str) -> f32 {
    terms.terms().iter().find(|(n, _)| n == name).map(|(_, v)| v.clone().into_scalar::<f32>()).unwrap()
}

#[test]
fn fusion_maps_every_stage_to_the_teacher_and_trains_every_part() {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    // Student: stem, 8x8, 4x4, 2x2 (+ embedding 6); teacher: stem, 4x4, 4x4, 1x1 (+ embedding
    // 7), other channels: outputs resized down, kept, and residuals resized up.
    let mut s =
        output(vec![random([3, 2, 8, 8], &ad), random([3, 3, 8, 8], &ad), random([3, 4, 4, 4], &ad), random([3, 5, 2, 2], &ad)], 6, &ad);
    s.features = s.features.into_iter().map(|f| f.require_grad()).collect();
    s.embedding = s.embedding.map(|e| e.require_grad());
    let t = output(
        vec![random([3, 2, 8, 8], &device), random([3, 4, 4, 4], &device), random([3, 6, 4, 4], &device), random([3, 8, 1, 1], &device)],
        7,
        &device,
    );
    let d = ReviewKd::new(ReviewKdConfig::default()).unwrap();
    let fusion = d.init_aux(&s.without_autodiff(), Some(&t), &ad).unwrap();
    assert_eq!(fusion.student_shapes(), [[3, 8, 8], [4, 4, 4], [5, 2, 2], [6, 1, 1]]);
    assert_eq!(fusion.teacher_shapes(), [[4, 4, 4], [6, 4, 4], [8, 1, 1], [7, 1, 1]]);
    let inputs = review_inputs(&s, "student").unwrap();
    let fused = fusion.forward(inputs.clone()).unwrap();
    let dims: Vec<_> = fused.iter().map(|f| f.dims()).collect();
    assert_eq!(dims, [[3, 4, 4, 4], [3, 6, 4, 4], [3, 8, 1, 1], [3, 7, 1, 1]]);

    let loss = hcl_loss(&fused, &review_inputs(&t, "teacher").unwrap()).unwrap();
    let grads = loss.backward();
    let mut sums = GradSums(&grads, Vec::new());
    fusion.visit(&mut sums);
    // Four ABFs: conv1, conv2 (no bias) and two BNs (gamma, beta, and their running statistics,
    // visited but not trained) each, and three attention convolutions (weight, bias).
    assert_eq!(sums.1.len(), 4 * (2 + 2 * 4) + 3 * 2);
    let trained: Vec<f32> = sums.1.iter().flatten().copied().collect();
    assert_eq!(trained.len(), 4 * (2 + 2 * 2) + 3 * 2);
    assert!(trained.iter().all(|g| g.is_finite() && *g > 0.0), "{trained:?}");
    // The stem is not read; every later stage and the embedding get gradients.
    assert!(s.features[0].grad(&grads).is_none());
    for f in &s.features[1..] {
        assert!(f.grad(&grads).is_some());
    }
    assert!(s.embedding.as_ref().unwrap().grad(&grads).is_some());
}

#[test]
fn stages_pair_from_the_deep_end_and_errors_are_clear() {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    // A student with two stages after the stem and a teacher with one: the student's shallower
    // stage is left out.
    let s = output(vec![random([2, 2, 4, 4], &device), random([2, 3, 4, 4], &device), random([2, 4, 2, 2], &device)], 4, &device);
    let t = output(vec![random([2, 2, 4, 4], &device), random([2, 5, 2, 2], &device)], 5, &device);
    let d = ReviewKd::new(ReviewKdConfig::default()).unwrap();
    let fusion = d.init_aux(&s, Some(&t), &ad).unwrap();
    assert_eq!(fusion.student_shapes(), [[4, 2, 2], [4, 1, 1]]);
    assert_eq!(fusion.teacher_shapes(), [[5, 2, 2], [5, 1, 1]]);
    // Mid channels: min(max_mid_channels, the student's embedding width).
    let narrow = ReviewKd::new(ReviewKdConfig { max_mid_channels: 2, ..Default::default() }).unwrap();
    assert!(narrow.init_aux(&s, Some(&t), &ad).is_ok());

    let no_embedding = ModelOutput { embedding: None, ..t.clone() };
    let err = d.init_aux(&s, Some(&no_embedding), &ad).unwrap_err().to_string();
    assert!(err.contains("ReviewKD (teacher)") && err.contains("embedding"), "{err}");
    assert!(d.init_aux(&s, None, &ad).unwrap_err().to_string().contains("reviewkd"));
    // Shapes other than the probe's name the stage.
    let other = vec![random([2, 4, 3, 3], &ad), random([2, 4, 1, 1], &ad)];
    let err = fusion.forward(other).unwrap_err().to_string();
    assert!(err.contains("student input 0"), "{err}");
    assert!(ReviewFusion::new(&[[1, 1, 1]], &[], 4, &ad).is_err());
    assert!(
        ReviewKd::new(ReviewKdConfig { reviewkd_weight: -1.0, ..Default::default() }).unwrap_err().to_string().contains("reviewkd_weight")
    );
    assert!(ReviewKd::new(ReviewKdConfig { max_mid_channels: 0, ..Default::default() }).is_err());
}

#[test]
fn loss_terms_and_warm_up() {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let s = output(vec![random([2, 2, 4, 4], &ad), random([2, 3, 4, 4], &ad)], 3, &ad);
    let t = output(vec![random([2, 2, 4, 4], &device), random([2, 5, 2, 2], &device)], 5, &device);
    let batch = kd_testkit::label_batch(vec![0, 2], vec![0, 1], &device);
    let mut d = ReviewKd::new(ReviewKdConfig::default()).unwrap();
    let aux = d.init_aux(&s.without_autodiff(), Some(&t), &ad).unwrap();
    let at = |d: &mut ReviewKd, epoch: usize| {
        step_without_update(d, &Step::new(kd_testkit::ctx(epoch, 40), &batch, &s, Some(&t)).with_aux(&aux)).unwrap()
    };
    let warm = at(&mut d, 5);
    let full = at(&mut d, 20);
    let names: Vec<&str> = full.terms().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ce", "review"]);
    assert!(value(&full, "review") > 0.0);
    // Epoch 5 of a 20-epoch warm-up: a quarter of the review term, the same CE.
    assert!((value(&warm, "review") - value(&full, "review") / 4.0).abs() <= 1e-6 * value(&full, "review").max(1.0));
    assert_eq!(value(&warm, "ce"), value(&full, "ce"));
    // The review term is the weight times hcl_loss of the fused maps.
    let (si, ti) = paired(&s, &t).unwrap();
    let hcl = hcl_loss(&aux.forward(si).unwrap(), &ti).unwrap().into_scalar::<f32>();
    assert!((value(&full, "review") - 5.0 * hcl).abs() <= 1e-5 * hcl.max(1.0));
}

#[test]
fn pairs_with_every_zoo_family_and_trains_an_mlp() {
    use kd_core::{FrozenTeacher, Trainer};
    use kd_models::ModelSpec;
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let inputs = random([2, 3, 32, 32], &device);
    let names = ["plane4", "resnet8", "resnet8x4", "wrn-16-1", "vgg8", "mobilenetv2", "shufflenetv2", "mlpbn-8-8-8"];
    let d = ReviewKd::new(ReviewKdConfig::default()).unwrap();
    let out = |name: &str| {
        let model = ModelSpec::parse(name).unwrap().build([3, 32, 32], 5, &device).unwrap();
        model.forward(inputs.clone())
    };
    let outputs: Vec<ModelOutput> = names.iter().map(|n| out(n)).collect();
    for (sn, s) in names.iter().zip(&outputs) {
        for (tn, t) in names.iter().zip(&outputs) {
            let fusion = d.init_aux(s, Some(t), &ad).unwrap_or_else(|e| panic!("{sn} -> {tn}: {e}"));
            assert_eq!(fusion.student_shapes().len(), fusion.teacher_shapes().len(), "{sn} -> {tn}");
        }
    }

    // The backend parity test's pair: 1x1 maps, trained end to end for two epochs.
    let (train, test) = (kd_testkit::blobs(24, 1, "train"), kd_testkit::blobs(12, 2, "test"));
    let spec = |n: &str| ModelSpec::parse(n).unwrap();
    let teacher = FrozenTeacher::new(spec("mlpbn-16-16-16").build([1, 2, 2], 3, &device).unwrap(), "mlpbn-16-16-16");
    let student = spec("mlpbn-8-8-8").build([1, 2, 2], 3, &ad).unwrap();
    let mut d = ReviewKd::new(ReviewKdConfig { warmup_epochs: Warmup::Epochs(1), ..Default::default() }).unwrap();
    let outcome = Trainer::new(kd_testkit::recipe(2, 8, 0.05, 3), &train, &test, device.clone()).fit(student, &mut d, &teacher).unwrap();
    assert!(outcome.history.iter().all(|e| e.train_terms["review"].is_finite() && e.train_terms["review"] > 0.0));
}

#[test]
fn the_fusion_of_resnet8x4_from_resnet32x4_has_the_readmes_parameter_count() {
    use kd_models::ModelSpec;
    use kd_models::layers::trainable_params;
    let device = Device::flex();
    let inputs = random([2, 3, 32, 32], &device);
    let build = |name: &str| ModelSpec::parse(name).unwrap().build([3, 32, 32], 100, &device).unwrap();
    let (student, teacher) = (build("resnet8x4"), build("resnet32x4"));
    let d = ReviewKd::new(ReviewKdConfig::default()).unwrap();
    let fusion = d.init_aux(&student.forward(inputs.clone()), Some(&teacher.forward(inputs)), &device).unwrap();
    // Middle width 256; per stage (in -> out): 1x1 in*256, BN 512, 3x3 256*out*9, BN 2*out,
    // attention (512 -> 2) 1026 but for the embedding's.
    assert_eq!(trainable_params(&fusion), 1_808_774);
    assert_eq!(trainable_params(&student), 1_233_540);
}

#[test]
fn the_fusion_is_checkpointed_and_resumed_with_the_student() {
    use kd_core::train::parameter_values;
    use kd_core::{FrozenTeacher, RunOptions, Trainer};
    use kd_models::ModelSpec;
    let device = Device::flex();
    let (train, test) = (kd_testkit::blobs(24, 1, "train"), kd_testkit::blobs(12, 2, "test"));
    let spec = |n: &str| ModelSpec::parse(n).unwrap();
    let teacher = FrozenTeacher::new(spec("mlpbn-16-16").build([1, 2, 2], 3, &device).unwrap(), "mlpbn-16-16");
    let student = spec("mlpbn-8-8").build([1, 2, 2], 3, &device.clone().autodiff()).unwrap();
    let dir = kd_testkit::temp_dir();
    let options =
        RunOptions { checkpoint_dir: Some(dir.path().to_path_buf()), resume: true, stop_after_epochs: Some(1), ..Default::default() };
    let run = |student| {
        let mut d = ReviewKd::new(ReviewKdConfig { warmup_epochs: Warmup::Epochs(0), ..Default::default() }).unwrap();
        Trainer::new(kd_testkit::recipe(2, 8, 0.05, 3), &train, &test, device.clone())
            .with_options(options.clone())
            .fit(student, &mut d, &teacher)
            .unwrap()
    };
    let first = run(student.clone());
    assert!(!first.finished);
    let resumed = run(student);
    assert!(resumed.finished && resumed.history.len() == 2);
    // The fusion (weights and BatchNorm statistics) was restored and trained on.
    assert_eq!(parameter_values(&first.aux).len(), parameter_values(&resumed.aux).len());
    assert_ne!(parameter_values(&first.aux), parameter_values(&resumed.aux));
}
