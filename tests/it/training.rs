//! The training loop end to end: loss goes down, resume is exact, bad input is an error.

use kd::baselines::{CrossEntropy, Kd, KdConfig};
use kd::prelude::*;

use crate::common::{blobs, config, device, mlp};

#[test]
fn a_few_epochs_lower_the_loss_and_kd_trains() {
    let train = blobs(240, 1, "blobs/train");
    let test = blobs(90, 2, "blobs/test");
    let trainer = Trainer::new(config(4, 7), &train, &test, device());
    let teacher = trainer.fit(mlp("mlp-32-32", 3, 7), &mut CrossEntropy, &NoTeacher).unwrap();
    let h = &teacher.history;
    assert!(h.last().unwrap().train_loss < h[0].train_loss, "loss did not decrease: {h:?}");
    assert!(teacher.last_acc() > 60.0, "teacher accuracy {}", teacher.last_acc());
    let teacher = FrozenTeacher::new(teacher.student, "mlp-32-32");
    let mut kd = Kd::new(KdConfig::default()).unwrap();
    let student = trainer.fit(mlp("mlp-8", 3, 8), &mut kd, &teacher).unwrap();
    let terms = &student.history.last().unwrap().train_terms;
    assert!(terms.contains_key("ce") && terms.contains_key("kd"), "{terms:?}");
    assert!(student.last_acc() > 50.0, "student accuracy {}", student.last_acc());
}

fn weights(model: &AnyModel) -> Vec<f32> {
    kd::core::train::parameter_values(model)
}

#[test]
fn same_seed_gives_bit_identical_training_and_another_seed_differs() {
    let train = blobs(120, 1, "blobs/train");
    let test = blobs(30, 2, "blobs/test");
    let run = |seed: u64| {
        let trainer = Trainer::new(config(2, seed), &train, &test, device());
        trainer.fit(mlp("mlp-16", 3, seed), &mut CrossEntropy, &NoTeacher).unwrap()
    };
    let (a, b, c) = (run(3), run(3), run(4));
    assert_eq!(weights(&a.student), weights(&b.student));
    assert_eq!(a.history.iter().map(|r| r.train_loss).collect::<Vec<_>>(), b.history.iter().map(|r| r.train_loss).collect::<Vec<_>>());
    assert_ne!(weights(&a.student), weights(&c.student));
}

#[test]
fn resume_after_two_epochs_equals_three_epochs_straight() {
    let train = blobs(120, 1, "blobs/train");
    let test = blobs(30, 2, "blobs/test");
    let teacher_trainer = Trainer::new(config(2, 5), &train, &test, device());
    let teacher = teacher_trainer.fit(mlp("mlp-16", 3, 5), &mut CrossEntropy, &NoTeacher).unwrap().student;
    let teacher = FrozenTeacher::new(teacher, "mlp-16");
    let mut cfg = config(3, 11);
    cfg.schedule = LrSchedule::MultiStep { milestones: vec![2], gamma: 0.1 };

    let straight = Trainer::new(cfg.clone(), &train, &test, device())
        .fit(mlp("mlp-8", 3, 11), &mut Kd::new(KdConfig::default()).unwrap(), &teacher)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let options = |stop: Option<usize>| RunOptions {
        checkpoint_dir: Some(dir.path().to_path_buf()),
        resume: true,
        log_file: Some(dir.path().join("log.jsonl")),
        stop_after_epochs: stop,
        ..Default::default()
    };
    let first = Trainer::new(cfg.clone(), &train, &test, device())
        .with_options(options(Some(2)))
        .fit(mlp("mlp-8", 3, 11), &mut Kd::new(KdConfig::default()).unwrap(), &teacher)
        .unwrap();
    assert!(!first.finished);
    assert_eq!(first.history.len(), 2);
    assert!(dir.path().join("last.ckpt").exists() && dir.path().join("best.ckpt").exists());
    // A fresh process would build a fresh (differently initialised) student: resume must
    // overwrite it entirely.
    let resumed = Trainer::new(cfg, &train, &test, device())
        .with_options(options(None))
        .fit(mlp("mlp-8", 3, 999), &mut Kd::new(KdConfig::default()).unwrap(), &teacher)
        .unwrap();
    assert!(resumed.finished);
    assert_eq!(resumed.history.len(), 3);
    assert_eq!(weights(&resumed.student), weights(&straight.student), "resumed weights differ from a straight run");
    assert_eq!(
        resumed.history,
        straight
            .history
            .iter()
            .cloned()
            .map(|mut r| {
                r.train_seconds = resumed.history[r.epoch - 1].train_seconds;
                r
            })
            .collect::<Vec<_>>()
    );
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
}

#[test]
fn resume_refuses_a_checkpoint_of_another_recipe() {
    let train = blobs(60, 1, "blobs/train");
    let test = blobs(30, 2, "blobs/test");
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions { checkpoint_dir: Some(dir.path().to_path_buf()), resume: true, ..Default::default() };
    Trainer::new(config(1, 1), &train, &test, device())
        .with_options(options.clone())
        .fit(mlp("mlp-8", 3, 1), &mut CrossEntropy, &NoTeacher)
        .unwrap();
    let err = Trainer::new(config(2, 2), &train, &test, device())
        .with_options(options)
        .fit(mlp("mlp-8", 3, 1), &mut CrossEntropy, &NoTeacher)
        .unwrap_err()
        .to_string();
    assert!(err.contains("last.ckpt was written by another run"), "{err}");
    assert!(err.contains("`recipe.epochs` is 1 in the checkpoint but 2 now"), "{err}");
}

#[test]
fn a_teacher_with_another_class_count_is_an_error() {
    let train = blobs(60, 1, "blobs/train");
    let test = blobs(30, 2, "blobs/test");
    let teacher = FrozenTeacher::new(mlp("mlp-8", 4, 1), "four-class");
    let err = Trainer::new(config(1, 1), &train, &test, device())
        .fit(mlp("mlp-8", 3, 1), &mut Kd::new(KdConfig::default()).unwrap(), &teacher)
        .unwrap_err();
    assert!(matches!(err, KdError::ClassCountMismatch { teacher: 4, student: 3 }), "{err}");
    assert!(err.to_string().contains("teacher has 4 classes but the student has 3"));
}

#[test]
fn a_label_out_of_range_is_an_error_naming_the_sample() {
    use kd::data::{InMemoryDataset, Values};
    let values = std::sync::Arc::new(vec![0.5f32; 4 * 4]);
    let err = InMemoryDataset::new("bad", Values::F32(values), vec![0, 1, 7, 2], [1, 2, 2], 3).unwrap_err();
    assert!(matches!(err, KdError::LabelOutOfRange { label: 7, sample: 2, num_classes: 3 }), "{err}");
    // A batch whose labels exceed the model's classes (data with more classes than the model).
    let train = blobs(60, 1, "blobs/train");
    let batch = train.batch(&[0, 1, 2], 1, 0, &device()).unwrap();
    let err = batch.check_labels(2).unwrap_err().to_string();
    assert!(err.contains("label 2") && err.contains("out of range"), "{err}");
}

#[test]
fn nan_logits_are_an_error_that_names_them() {
    use kd::core::burn::tensor::{Tensor, TensorData};
    use kd::core::{Batch, Classifier, ModelOutput};

    /// A teacher whose outputs are NaN.
    struct NanTeacher;
    impl Teacher for NanTeacher {
        fn describe(&self) -> String {
            "nan".into()
        }
        fn num_classes(&self) -> Option<usize> {
            Some(3)
        }
        fn outputs(&self, batch: &Batch, _: TeacherNeed) -> kd::core::Result<Option<ModelOutput>> {
            let n = batch.len();
            let logits = Tensor::<2>::from_data(TensorData::new(vec![f32::NAN; n * 3], [n, 3]), &device());
            Ok(Some(ModelOutput::logits_only(logits)))
        }
    }
    let train = blobs(60, 1, "blobs/train");
    let test = blobs(30, 2, "blobs/test");
    let student = mlp("mlp-8", 3, 1);
    assert_eq!(student.num_classes(), 3);
    let err = Trainer::new(config(1, 1), &train, &test, device())
        .fit(student, &mut Kd::new(KdConfig::default()).unwrap(), &NanTeacher)
        .unwrap_err();
    assert!(matches!(err, KdError::NonFinite { .. }), "{err}");
    assert!(err.to_string().contains("teacher logits"), "{err}");
}

#[test]
fn an_impossible_recipe_is_an_error() {
    let train = blobs(60, 1, "blobs/train");
    let test = blobs(30, 2, "blobs/test");
    let mut cfg = config(1, 1);
    cfg.optimizer = OptimizerConfig::Sgd { lr: -1.0, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let err = Trainer::new(cfg, &train, &test, device()).fit(mlp("mlp-8", 3, 1), &mut CrossEntropy, &NoTeacher).unwrap_err();
    assert!(err.to_string().contains("learning rate"), "{err}");
    let mut cfg = config(0, 1);
    cfg.epochs = 0;
    let err = Trainer::new(cfg, &train, &test, device()).fit(mlp("mlp-8", 3, 1), &mut CrossEntropy, &NoTeacher).unwrap_err();
    assert!(err.to_string().contains("epochs"), "{err}");
}

/// `TestEvaluation::WhenSelected` evaluates the test split only where its result is read: the
/// selected and last accuracies equal those of the same run evaluated every epoch, the other
/// epochs carry the last evaluation forward and say so, and training is untouched.
/// `SelectedAndLast` evaluates the test split at the selected and the last epoch only, with
/// every-epoch evaluation's accuracies; also when the process died between the selected epoch
/// and its deferred pass (the resumed call evaluates `best.ckpt`).
#[test]
fn test_evaluation_selected_and_last_evaluates_two_epochs_exactly() {
    let train = blobs(120, 1, "blobs/train");
    let (valid, test) = (blobs(30, 3, "blobs/valid"), blobs(30, 2, "blobs/test"));
    let dir = tempfile::tempdir().unwrap();
    let run = |test_evaluation, stop_after_epochs, checkpoints: bool| {
        let options = RunOptions {
            test_evaluation,
            stop_after_epochs,
            resume: checkpoints,
            checkpoint_dir: checkpoints.then(|| dir.path().to_path_buf()),
            ..Default::default()
        };
        let trainer = Trainer::new(config(8, 7), &train, &test, device()).with_validation(&valid).with_options(options);
        trainer.fit(mlp("mlp-16", 3, 7), &mut CrossEntropy, &NoTeacher).unwrap()
    };
    let every = run(TestEvaluation::EveryEpoch, None, false);
    let deferred = run(TestEvaluation::SelectedAndLast, None, false);
    let best = every.best_epoch;
    assert!(best > 1 && best + 1 < 8, "the case needs a selected epoch between the first and the last but one, not {best}");
    assert_eq!(weights(&every.student), weights(&deferred.student));
    assert_eq!((deferred.best_epoch, deferred.selected_acc(), deferred.last_acc()), (best, every.selected_acc(), every.last_acc()));
    let evaluated: Vec<usize> = deferred.history.iter().filter(|r| r.test_evaluated).map(|r| r.epoch).collect();
    assert_eq!(evaluated, [best, 8]);
    for r in &deferred.history {
        // Every epoch carries the evaluation before it (the selected one's from its own epoch
        // on); the epochs before it an empty one.
        match evaluated.iter().rev().find(|&&e| e <= r.epoch) {
            Some(from) => assert_eq!(r.test, every.history[from - 1].test, "epoch {}", r.epoch),
            None => assert_eq!((r.test.samples, r.test.top1), (0, 0.0), "epoch {}", r.epoch),
        }
    }

    // Stopped just after the selected epoch, then its deferred pass undone as if the process had
    // died before it: the resumed call reads the selected model from best.ckpt.
    let first = run(TestEvaluation::SelectedAndLast, Some(best + 1), true);
    assert_eq!(first.selected_acc(), every.selected_acc());
    let last = dir.path().join("last.ckpt");
    let mut ckpt = kd::core::checkpoint::Checkpoint::load(&last).unwrap();
    let mut meta = kd::core::run_files::CheckpointMeta::of(&ckpt, &last).unwrap();
    assert!(meta.history[best - 1].test_evaluated, "the deferred pass is written into last.ckpt");
    meta.history[best - 1].test = meta.history[best - 2].test;
    meta.history[best - 1].test_evaluated = false;
    ckpt.meta = meta.to_value().unwrap();
    ckpt.save(&last).unwrap();
    let resumed = run(TestEvaluation::SelectedAndLast, None, true);
    assert_eq!(weights(&resumed.student), weights(&every.student));
    assert_eq!((resumed.best_epoch, resumed.selected_acc(), resumed.last_acc()), (best, every.selected_acc(), every.last_acc()));
}

/// A process killed between an improving epoch's two checkpoint writes (`last.ckpt` written,
/// `best.ckpt` not yet) leaves `best.ckpt` an earlier epoch's: the resume restores the selected
/// model from `last.ckpt`, so the folder ends as an uninterrupted run's. A folder whose selected
/// model is in neither file (written in the other order, killed between) is an error that says so.
#[test]
fn a_kill_between_the_last_and_best_checkpoint_loses_no_selected_model() {
    let train = blobs(120, 1, "blobs/train");
    let (valid, test) = (blobs(30, 3, "blobs/valid"), blobs(30, 2, "blobs/test"));
    let (straight_dir, killed_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = |dir: &std::path::Path, stop_after_epochs| {
        let options = RunOptions { stop_after_epochs, resume: true, checkpoint_dir: Some(dir.to_path_buf()), ..Default::default() };
        let trainer = Trainer::new(config(8, 7), &train, &test, device()).with_validation(&valid).with_options(options);
        trainer.fit(mlp("mlp-16", 3, 7), &mut CrossEntropy, &NoTeacher)
    };
    let straight = run(straight_dir.path(), None).unwrap();
    let selected = straight.best_epoch;
    assert!(selected > 1 && selected < 8, "the case needs a selected epoch after an earlier one and before the last, not {selected}");
    let load = |path: std::path::PathBuf| {
        let ckpt = kd::core::checkpoint::Checkpoint::load(&path).unwrap();
        let epoch = kd::core::run_files::CheckpointMeta::of(&ckpt, &path).unwrap().epoch;
        // The parameters' values (a module's record also carries its parameters' random ids).
        let student = kd::core::checkpoint::load_module(mlp("mlp-16", 3, 0), ckpt.section("student").unwrap()).unwrap();
        (epoch, weights(&student))
    };

    let best = killed_dir.path().join("best.ckpt");
    run(killed_dir.path(), Some(selected - 1)).unwrap();
    let earlier = std::fs::read(&best).unwrap();
    assert!(load(best.clone()).0 < selected);
    run(killed_dir.path(), Some(1)).unwrap();
    assert_eq!(load(best.clone()).0, selected);
    // The kill: last.ckpt of the selected epoch written, best.ckpt still the earlier epoch's.
    std::fs::write(&best, &earlier).unwrap();
    let resumed = run(killed_dir.path(), None).unwrap();
    assert_eq!(weights(&resumed.student), weights(&straight.student));
    assert_eq!((resumed.best_epoch, resumed.selected_acc()), (selected, straight.selected_acc()));
    assert_eq!(load(best.clone()), load(straight_dir.path().join("best.ckpt")), "best.ckpt holds the selected epoch's student");

    // The other order's kill: the selected epoch (not last.ckpt's own) in neither file.
    std::fs::write(&best, &earlier).unwrap();
    let err = run(killed_dir.path(), None).unwrap_err().to_string();
    assert!(err.contains(&format!("selected epoch {selected}")) && err.contains("the selected model is lost"), "{err}");
}

#[test]
fn test_evaluation_when_selected_keeps_the_selected_and_last_accuracies() {
    let train = blobs(120, 1, "blobs/train");
    let (valid, test) = (blobs(30, 3, "blobs/valid"), blobs(30, 2, "blobs/test"));
    let run = |test_evaluation| {
        let options = RunOptions { test_evaluation, ..Default::default() };
        let trainer = Trainer::new(config(8, 7), &train, &test, device()).with_validation(&valid).with_options(options);
        trainer.fit(mlp("mlp-16", 3, 7), &mut CrossEntropy, &NoTeacher).unwrap()
    };
    let (every, selected) = (run(TestEvaluation::EveryEpoch), run(TestEvaluation::WhenSelected));
    assert_eq!(weights(&every.student), weights(&selected.student));
    assert_eq!(every.best_epoch, selected.best_epoch);
    assert_eq!(every.selected_acc(), selected.selected_acc());
    assert_eq!(every.last_acc(), selected.last_acc());
    assert!(every.history.iter().all(|r| r.test_evaluated));
    let skipped: Vec<usize> = selected.history.iter().filter(|r| !r.test_evaluated).map(|r| r.epoch).collect();
    assert!(!skipped.is_empty(), "8 epochs of a converging run should improve on validation less than every epoch");
    let mut best = f64::MIN;
    for (i, r) in selected.history.iter().enumerate() {
        let score = r.valid.unwrap().top1;
        let (first, last, improves) = (i == 0, i + 1 == selected.history.len(), score > best);
        best = best.max(score);
        assert_eq!(r.test_evaluated, first || last || improves, "epoch {}", r.epoch);
        if r.test_evaluated {
            assert_eq!(r.test, every.history[i].test, "epoch {}", r.epoch);
        } else {
            assert_eq!(r.test, selected.history[i - 1].test, "epoch {} carries epoch {}'s", r.epoch, r.epoch - 1);
        }
    }
}
