//! Run safety at the library level: experiment files, divergence, run folders.

use kd::baselines::CrossEntropy;
use kd::core::train::{DivergenceCheck, EpochRecord, EvalMetrics};
use kd::experiment::Experiment;
use kd::prelude::*;

use crate::common::{blobs, config, device, mlp};

#[test]
fn every_experiment_file_in_configs_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let exp = Experiment::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // The effective configuration is what a run records beside its checkpoints.
            let prepared = exp.prepare::<AnyModel>().unwrap();
            let run = exp.run_config(exp.seeds[0], prepared.config());
            assert_eq!(run.method, exp.method);
            assert!(run.method_config.is_object(), "{}", path.display());
            // Written and read back through the same type.
            assert_eq!(serde_json::from_value::<kd::experiment::RunConfig>(run.to_value().unwrap()).unwrap(), run);
            seen += 1;
        }
    }
    assert!(seen >= 2, "only {seen} experiment files in {}", dir.display());
}

/// A method's warm-up in an experiment file: a number of epochs (the old form, as the files in
/// `configs/` give it) or a fraction of the schedule, resolved against the run's epochs.
#[test]
fn a_warm_up_is_a_number_of_epochs_or_a_fraction_of_the_schedule() {
    for (warmup, of_30_epochs) in [("20", 20), ("{ numerator = 20, denominator = 240 }", 3)] {
        let text = format!(
            "method = \"dkd\"\ndataset = \"mnist\"\nteacher = \"mlp-64\"\nstudent = \"mlp-16\"\n[train]\nepochs = 30\n\
             batch_size = 64\noptimizer = {{ kind = \"sgd\", lr = 0.05 }}\n[method_config]\nwarmup_epochs = {warmup}\n"
        );
        let exp = Experiment::from_toml(&text).unwrap();
        exp.validate().unwrap();
        let prepared = exp.prepare::<AnyModel>().unwrap();
        let recorded = &exp.run_config(0, prepared.config()).method_config["warmup_epochs"];
        let read: kd::core::Warmup = serde_json::from_value(recorded.clone()).unwrap();
        assert_eq!(read.epochs(30), of_30_epochs, "{warmup}");
    }
}

#[test]
fn effective_configs_fill_in_defaults_and_refuse_unknown_fields() {
    let cfg = kd::methods::effective_config("kd", Some(&serde_json::json!({"temperature": 2.0}))).unwrap();
    assert_eq!(cfg["temperature"], 2.0);
    assert_eq!(cfg["kd_weight"], 0.9, "{cfg}");
    for method in kd::methods::method_names() {
        let err = kd::methods::effective_config(method, Some(&serde_json::json!({"no_such_field": 1})));
        assert!(err.is_err(), "method `{method}` accepted an unknown field");
    }
}

fn record(epoch: usize, train_loss: f64, top1: f64, chance: f64, predicted_classes: usize) -> EpochRecord {
    let eval = EvalMetrics { top1, top5: 100.0, ce_loss: 1.0, samples: 100, binary: None, chance, predicted_classes };
    EpochRecord {
        epoch,
        lr: 0.1,
        train_terms: Default::default(),
        train_loss,
        train_acc: top1,
        valid: None,
        test: eval,
        test_evaluated: true,
        train_seconds: 0.0,
        phases: None,
    }
}

#[test]
fn divergence_is_an_exploding_loss_or_chance_accuracy_without_progress() {
    let check = DivergenceCheck::default();
    assert!(check.verdict(&record(1, 2.0, 40.0, 34.0, 3), 2.3, 2.0).is_none());
    let exploded = check.verdict(&record(1, 3.1e13, 33.0, 34.0, 1), 2.3, 3.1e13).unwrap();
    assert!(exploded.contains("over 100 times the first step's 2.3000"), "{exploded}");
    // Predicting the majority class of an imbalanced set while the loss falls: fine.
    assert!(check.verdict(&record(5, 0.1, 96.7, 96.7, 1), 0.69, 0.3).is_none());
    // At chance but still predicting several classes (hard or noisy data): not divergence.
    assert!(check.verdict(&record(3, 1.1, 33.4, 33.4, 3), 1.0986, 1.0986).is_none());
    // Collapsed onto one class, at chance, no progress: diverged.
    let stuck = check.verdict(&record(3, 1.0986, 33.4, 33.4, 1), 1.0986, 1.0986).unwrap();
    assert!(stuck.contains("predicts a single class"), "{stuck}");
    assert!(check.verdict(&record(2, 1.0986, 33.4, 33.4, 1), 1.0986, 1.0986).is_none(), "too early to call");
    let off = DivergenceCheck::off();
    assert!(off.verdict(&record(9, 1e20, 0.0, 50.0, 1), 1.0, 1.0).is_none());
}

#[test]
fn a_run_that_explodes_fails_with_diverged() {
    let train = blobs(96, 1, "blobs/train");
    let test = blobs(30, 2, "blobs/test");
    let cfg =
        TrainConfig { optimizer: OptimizerConfig::Sgd { lr: 1e4, momentum: 0.9, nesterov: false, weight_decay: 0.0 }, ..config(3, 1) };
    let err = Trainer::new(cfg, &train, &test, device()).fit(mlp("mlp-8", 3, 1), &mut CrossEntropy, &NoTeacher).unwrap_err();
    assert!(matches!(err, KdError::Diverged { .. } | KdError::NonFinite { .. }), "{err}");
    assert!(err.to_string().contains("diverged"), "{err}");
}

#[test]
fn a_fresh_run_refuses_a_folder_that_holds_one_and_resume_names_the_difference() {
    let train = blobs(60, 1, "blobs/train");
    let test = blobs(30, 2, "blobs/test");
    let dir = tempfile::tempdir().unwrap();
    let options = |resume: bool, temperature: f64| RunOptions {
        checkpoint_dir: Some(dir.path().to_path_buf()),
        resume,
        run_config: Some(serde_json::json!({"method_config": {"temperature": temperature}})),
        ..Default::default()
    };
    let fit = |options: RunOptions| {
        Trainer::new(config(1, 1), &train, &test, device()).with_options(options).fit(mlp("mlp-8", 3, 1), &mut CrossEntropy, &NoTeacher)
    };
    fit(options(false, 4.0)).unwrap();
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("run.json")).unwrap()).unwrap();
    assert_eq!(run["experiment"]["method_config"]["temperature"], 4.0);
    let again = fit(options(false, 4.0)).unwrap_err().to_string();
    assert!(again.contains("already holds a run (last.ckpt, best.ckpt, run.json)"), "{again}");
    let other = fit(options(true, 1.0)).unwrap_err().to_string();
    assert!(other.contains("`experiment.method_config.temperature` is 4.0 in the checkpoint but 1.0 now"), "{other}");
    // The same run resumes (here: it is finished, so it only reloads).
    assert_eq!(fit(options(true, 4.0)).unwrap().history.len(), 1);
}

#[test]
fn every_logit_method_refuses_a_teacher_batch_of_another_shape() {
    use kd::core::{Batch, Distiller, Step};
    let device = device();
    let batch = Batch::from_host(vec![0.0; 4 * 4], [4, 1, 2, 2], vec![0, 1, 2, 0], vec![0, 1, 2, 3], vec![0; 4], &device).unwrap();
    let logits = |rows: usize| kd_testkit::logits(vec![0.5; rows * 3], 3, &device);
    let ctx = kd_testkit::ctx(1, 1);
    let student = logits(4);
    let short_teacher = logits(3);
    let err =
        kd::baselines::Kd::new(Default::default()).unwrap().loss(&Step::new(ctx, &batch, &student, Some(&short_teacher))).unwrap_err();
    assert!(err.to_string().contains("kd: teacher logits"), "{err}");
    let err = kd::rld::Rld::new(Default::default()).unwrap().loss(&Step::new(ctx, &batch, &student, None)).unwrap_err();
    assert!(err.to_string().contains("rld needs the teacher's logits"), "{err}");
}
