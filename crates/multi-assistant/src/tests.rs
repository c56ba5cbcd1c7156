//! Chains trained for real, on a tiny synthetic dataset: resume, dynamic stopping, the search.

use std::path::PathBuf;

use burn::tensor::Device;
use kd_core::train::parameter_values;
use kd_core::{RunOptions, TrainConfig};
use kd_data::DatasetSplits;
use kd_testkit::{blobs, temp_dir};

use crate::*;

fn splits() -> DatasetSplits {
    DatasetSplits {
        name: "blobs".into(),
        train: blobs(96, 1, "blobs/train"),
        valid: Some(blobs(48, 2, "blobs/valid")),
        test: blobs(48, 3, "blobs/test"),
        warnings: Vec::new(),
        image_folder: None,
        files: Vec::new(),
    }
}

/// Batches of 16, SGD at 0.1, seed 3.
fn recipe(epochs: usize) -> TrainConfig {
    kd_testkit::recipe(epochs, 16, 0.1, 3)
}

fn with_dir(dir: &std::path::Path, resume: bool, budget: Option<usize>) -> RunOptions {
    RunOptions { checkpoint_dir: Some(dir.to_path_buf()), resume, stop_after_epochs: budget, ..Default::default() }
}

#[test]
fn a_chain_resumes_from_its_stage_checkpoints() {
    let device = Device::flex();
    let data = splits();
    let plan = ChainPlan::new(ModelFamily::mlp(vec![4, 8, 16], 1), 16, 4, recipe(2)).with_assistants(vec![8]).with_mode(ChainMode::Dgkd);

    let full_dir = temp_dir();
    let full = run_chain_with_models(&plan, &data, &device, &with_dir(full_dir.path(), false, None)).unwrap();
    let r = &full.report;
    assert!(r.finished, "{r:?}");
    assert_eq!(r.chain, vec!["mlp-16", "mlp-8", "mlp-4"]);
    assert_eq!((r.total_epochs, r.planned_epochs, r.epochs_this_run), (6, 6, 6));
    assert_eq!(r.stages.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(), vec!["ce", "dgkd", "dgkd"]);
    assert_eq!(r.stages[2].teachers, vec!["mlp-16", "mlp-8"]);
    assert_eq!(r.stages[2].role, StageRole::Student);
    assert!(r.student().is_some_and(|s| s.selected_acc > 0.0));

    // Interrupted after 3 epochs: the teacher finished, the assistant ran one of its two.
    let dir = temp_dir();
    let first = run_chain(&plan, &data, &device, &with_dir(dir.path(), true, Some(3))).unwrap();
    assert!(!first.finished);
    assert_eq!(first.epochs_this_run, 3);
    assert_eq!(first.stages.len(), 2);
    assert!(first.stages[0].complete && !first.stages[1].complete);
    let stage_dirs: Vec<PathBuf> = first.stages.iter().map(|s| s.dir.clone().unwrap()).collect();
    assert!(stage_dirs[0].join("model.ckpt").exists());
    assert!(stage_dirs[1].join("last.ckpt").exists() && !stage_dirs[1].join("model.ckpt").exists());
    assert!(stage_dirs[1].file_name().unwrap().to_string_lossy().starts_with("stage1-mlp-8-"));

    // Resumed: the teacher is loaded, the assistant continues from its last.ckpt, the student
    // trains; the result is the uninterrupted run's, bit for bit.
    let second = run_chain_with_models(&plan, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    let r2 = &second.report;
    assert!(r2.finished);
    assert_eq!(
        r2.stages.iter().map(|s| (s.loaded, s.epochs_this_run, s.epochs)).collect::<Vec<_>>(),
        vec![(true, 0, 2), (false, 1, 2), (false, 2, 2)]
    );
    assert_eq!(r2.epochs_this_run, 3);
    for (a, b) in r.stages.iter().zip(&r2.stages) {
        assert_eq!(
            (a.best_epoch, a.selected_acc, a.last_acc, a.selected_valid_acc),
            (b.best_epoch, b.selected_acc, b.last_acc, b.selected_valid_acc)
        );
    }
    for (a, b) in full.models.iter().zip(&second.models) {
        assert_eq!(parameter_values(a), parameter_values(b));
    }

    // Once finished, every stage is loaded; another plan with the same teacher shares its stage.
    let third = run_chain(&plan, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    assert!(third.finished && third.epochs_this_run == 0 && third.stages.iter().all(|s| s.loaded));
    let takd = plan.clone().with_mode(ChainMode::Takd).with_assistants(Vec::new());
    let direct = run_chain(&takd, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    assert_eq!(direct.stages.iter().map(|s| (s.loaded, s.method.as_str())).collect::<Vec<_>>(), vec![(true, "ce"), (false, "takd")]);
    assert_eq!(direct.stages[1].teachers, vec!["mlp-16"]);

    // The saved teacher can be given to another plan as a checkpoint.
    let given = ChainPlan { teacher_checkpoint: Some(stage_dirs[0].join("model.ckpt")), ..takd.clone() };
    let loaded = run_chain(&given, &data, &device, &RunOptions::default()).unwrap();
    assert_eq!(loaded.stages[0].method, "loaded");
    assert_eq!(loaded.stages[0].selected_acc, r.stages[0].selected_acc);
    assert_eq!(loaded.planned_epochs, 2);
}

/// A loaded teacher is evaluated once per checkpoint folder: the other chains that share it read
/// its accuracies from its stage folder, until the checkpoint under that path changes.
#[test]
fn a_loaded_teacher_is_evaluated_once_per_checkpoint() {
    let device = Device::flex();
    let data = splits();
    let family = ModelFamily::mlp(vec![4, 16], 1);
    let trained = temp_dir();
    let teacher =
        run_chain(&ChainPlan::new(family.clone(), 16, 4, recipe(1)), &data, &device, &with_dir(trained.path(), false, None)).unwrap();
    let file = teacher.stages[0].dir.clone().unwrap().join("model.ckpt");
    let given = temp_dir();
    let checkpoint = given.path().join("teacher.ckpt");
    std::fs::copy(&file, &checkpoint).unwrap();
    let plan = ChainPlan { teacher_checkpoint: Some(checkpoint.clone()), ..ChainPlan::new(family, 16, 4, recipe(1)) };

    let dir = temp_dir();
    let first = run_chain(&plan, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    assert_eq!(first.stages[0].selected_acc, teacher.stages[0].selected_acc);
    let stage0 =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("stage0-")).unwrap();
    let memo = stage0.join("loaded-teacher.json");
    // A value no evaluation gives: read back, it shows that the second chain did not evaluate.
    let text = std::fs::read_to_string(&memo).unwrap();
    let mut saved: serde_json::Value = serde_json::from_str(&text).unwrap();
    saved["test"] = serde_json::json!(12.5);
    std::fs::write(&memo, serde_json::to_vec(&saved).unwrap()).unwrap();
    let second = run_chain(&plan, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    assert_eq!(second.stages[0].selected_acc, 12.5);
    // A memo that does not read is evaluated afresh and rewritten.
    std::fs::write(&memo, "{ truncated").unwrap();
    let rewritten = run_chain(&plan, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    assert_eq!(rewritten.stages[0].selected_acc, teacher.stages[0].selected_acc);
    assert!(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&memo).unwrap()).is_ok());

    // Another teacher under the same path is evaluated afresh.
    let other = run_chain(
        &ChainPlan::new(ModelFamily::mlp(vec![4, 16], 1), 16, 4, recipe(2)),
        &data,
        &device,
        &with_dir(trained.path(), false, None),
    )
    .unwrap();
    std::fs::copy(other.stages[0].dir.clone().unwrap().join("model.ckpt"), &checkpoint).unwrap();
    let third = run_chain(&plan, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    assert_eq!(third.stages[0].selected_acc, other.stages[0].selected_acc);
}

#[test]
fn dynamic_stopping_ends_stages_early_and_stays_stopped() {
    let device = Device::flex();
    let data = splits();
    // No gain can ever count (min_delta 1000): each distillation stage stops after patience
    // (1) epoch past the first.
    let stopping = StoppingConfig { patience: 1, min_delta: 1000.0, smoothing: Smoothing::None, ..Default::default() };
    let mut plan =
        ChainPlan::new(ModelFamily::mlp(vec![4, 8, 16], 1), 16, 4, recipe(5)).with_assistants(vec![8]).with_stopping(Some(stopping));
    plan.teacher_train.epochs = 2;
    let dir = temp_dir();
    let report = run_chain(&plan, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    assert!(report.finished);
    assert_eq!(report.stages.iter().map(|s| s.epochs).collect::<Vec<_>>(), vec![2, 2, 2]);
    assert_eq!(report.stages[1].method, "takd+stop");
    let stop = report.stages[2].stopping.as_ref().unwrap();
    assert_eq!((stop.stopped_at, stop.epochs_saved, stop.planned_epochs), (Some(2), 3, 5));
    assert_eq!(stop.controls, vec!["ce", "kd"]);
    assert_eq!(stop.records.len(), 2);
    assert!(stop.records.iter().all(|r| r.controls.len() == 2 && (0.0..=100.0).contains(&r.distilled)));
    assert_eq!(report.epochs_saved(), 6);
    assert_eq!((report.total_epochs, report.planned_epochs), (6, 12));
    // The control students' losses were optimised beside the student's.
    let log = &report.stages[2];
    assert!(log.complete && log.stopping.is_some());

    // A stage whose stop was recorded in last.ckpt but not yet followed by model.ckpt (a crash
    // in between) is finished on resume: it trains no further.
    let student_dir = report.stages[2].dir.clone().unwrap();
    std::fs::remove_file(student_dir.join("model.ckpt")).unwrap();
    let again = run_chain(&plan, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    assert!(again.finished);
    let s = &again.stages[2];
    assert_eq!((s.loaded, s.epochs, s.epochs_this_run, s.complete), (false, 2, 0, true));
    assert_eq!(s.selected_acc, report.stages[2].selected_acc);
    assert!(student_dir.join("model.ckpt").exists());

    // Dynamic stopping needs a validation split.
    let no_valid = DatasetSplits { valid: None, ..splits() };
    assert!(run_chain(&plan, &no_valid, &device, &RunOptions::default()).is_err());
}

#[test]
fn the_dynamic_chain_searches_then_trains_and_resumes() {
    let device = Device::flex();
    let data = splits();
    let chain = ChainPlan::new(ModelFamily::mlp(vec![2, 4, 8, 16], 1), 16, 2, recipe(2));
    let plan =
        DynamicPlan { search: SearchConfig { k_max: 2, delta: -100.0, ..Default::default() }, probe_epochs: 1, ..DynamicPlan::new(chain) };
    let dir = temp_dir();
    let report = run_dynamic(&plan, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    let search = report.search.as_ref().unwrap();
    // delta -100 keeps every assistant: k_max of them.
    assert_eq!(search.stop, StopReason::KMax);
    assert_eq!(search.chain.len(), 4);
    assert_eq!(report.chain.scales, search.chain);
    assert!(report.chain.finished);
    assert!(report.probe_epochs > 0 && !report.search_resumed);
    // The teacher trained once (before the search), and the chain reused it.
    assert_eq!(report.chain.stages[0].epochs_this_run, 2);
    assert_eq!(report.chain.epochs_this_run, 2 + 3 * 2);
    assert!(dir.path().join("search.json").exists());

    let again = run_dynamic(&plan, &data, &device, &with_dir(dir.path(), true, None)).unwrap();
    assert!(again.search_resumed);
    assert_eq!(again.search, report.search);
    assert_eq!(again.chain.epochs_this_run, 0);
    assert!(again.chain.stages.iter().all(|s| s.loaded));
}

#[test]
fn the_control_students_train_beside_the_student_outside_its_loss() {
    use kd_baselines::{Kd, KdConfig};
    use kd_core::{BatchSource, FrozenTeacher, RunOptions, SideModels, TeacherNeed, Trainer};
    use kd_models::ModelSpec;

    let device = Device::flex();
    let data = splits();
    let ad = device.clone().autodiff();
    let teacher = build_seeded(&ModelSpec::Mlp(vec![16]), [1, 2, 2], 3, &ad, 1).unwrap();
    let teacher = FrozenTeacher::new(teacher, "mlp-16");
    let control = ControlModel { spec: ModelSpec::Mlp(vec![4]), input: [1, 2, 2], classes: 3, seed: 9 };
    let config = StoppingConfig {
        patience: 2,
        min_delta: 1000.0,
        smoothing: Smoothing::Window { size: 2 },
        controls: ControlSet { ce: false, kd: true },
        ..Default::default()
    };
    let optimizer = recipe(6).optimizer;
    let mut controls = ControlStudents::new(config, control.clone(), optimizer.clone()).unwrap();
    // Without a teacher of its own, the KD control shares the loop's.
    assert_eq!(controls.teacher_need(), TeacherNeed::Logits);
    let student = build_seeded(&control.spec, control.input, control.classes, &ad, control.seed).unwrap();
    let valid: &dyn BatchSource = data.valid.as_ref().unwrap();
    let trainer = Trainer::new(recipe(6), &data.train, &data.test, device.clone()).with_validation(valid);
    let mut kd = Kd::new(KdConfig::default()).unwrap();
    let outcome = trainer.fit_with(student.clone(), &mut kd, &teacher, &mut controls).unwrap();
    // Epoch 1 sets the best lead; epochs 2 and 3 do not beat it by 1000 points: stop at 3.
    assert_eq!(outcome.history.len(), 3);
    assert_eq!(controls.rule().stopped_at(), Some(3));
    // The student's logged loss is its own method's: no control term enters it.
    assert!(outcome.history.iter().all(|r| r.train_terms.keys().map(String::as_str).eq(["ce", "kd"])));
    // The student trains exactly as without controls.
    let alone = Trainer::new(recipe(6), &data.train, &data.test, device.clone())
        .with_validation(valid)
        .with_options(RunOptions { stop_after_epochs: Some(3), ..Default::default() })
        .fit(student.clone(), &mut Kd::new(KdConfig::default()).unwrap(), &teacher)
        .unwrap();
    assert_eq!(parameter_values(&alone.student), parameter_values(&outcome.student));
    assert_eq!(
        alone.history.iter().map(|r| r.train_loss).collect::<Vec<_>>(),
        outcome.history.iter().map(|r| r.train_loss).collect::<Vec<_>>()
    );
    let trained = controls.controls().unwrap();
    assert_eq!(trained.len(), 1);
    // Same initial weights as the student, then trained: different from where they started.
    assert_ne!(parameter_values(&trained[0]), parameter_values(&student));
    let report = controls.report(6);
    assert_eq!((report.epochs_saved, report.controls.clone()), (3, vec!["kd".to_string()]));

    // The state (rule, controls, optimiser) round-trips; another configuration refuses it.
    let bytes = controls.save_state().unwrap();
    let mut back = ControlStudents::new(config, control.clone(), optimizer.clone()).unwrap();
    back.start(3, &device).unwrap();
    back.load_state(&bytes).unwrap();
    assert_eq!(back.rule(), controls.rule());
    assert_eq!(parameter_values(&back.controls().unwrap()[0]), parameter_values(&trained[0]));
    let mut other = ControlStudents::new(StoppingConfig { patience: 3, ..config }, control.clone(), optimizer.clone()).unwrap();
    other.start(3, &device).unwrap();
    assert!(other.load_state(&bytes).is_err());
    assert!(back.load_state(b"not a state").is_err());
    assert!(back.load_state(&[]).is_err());

    // Controls built for another input shape are refused, not a panic inside Burn.
    let wrong = ControlModel { input: [1, 4, 1], ..control.clone() };
    let mut bad = ControlStudents::new(config, wrong, optimizer).unwrap();
    let result = trainer.fit_with(student, &mut Kd::new(KdConfig::default()).unwrap(), &teacher, &mut bad);
    assert!(result.is_err());
}

/// The controls train on the batch's first `control_batch_fraction` rows: a step on the whole
/// batch moves them exactly as a step on those rows alone, so a cheaper control group is what
/// runs, not only what is configured.
#[test]
fn the_controls_train_on_the_configured_share_of_the_batch() {
    use kd_core::{Batch, SideModels};
    use kd_models::ModelSpec;

    let device = Device::flex();
    let control = ControlModel { spec: ModelSpec::Mlp(vec![4]), input: [1, 2, 2], classes: 3, seed: 5 };
    let inputs: Vec<f32> = (0..32).map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.5).collect();
    let labels = vec![0, 1, 2, 0, 1, 2, 0, 1];
    let batch = Batch::from_host(inputs, [8, 1, 2, 2], labels, (0..8).collect(), vec![0; 8], &device).unwrap();
    let ctx = kd_testkit::ctx(1, 1);
    let stepped = |fraction: f64, batch: &Batch| {
        let config =
            StoppingConfig { controls: ControlSet { ce: true, kd: false }, control_batch_fraction: fraction, ..Default::default() };
        let mut controls = ControlStudents::new(config, control.clone(), recipe(1).optimizer).unwrap();
        controls.start(3, &device).unwrap();
        controls.step(&ctx, batch, None, 0.1).unwrap();
        parameter_values(&controls.controls().unwrap()[0])
    };
    let whole = stepped(1.0, &batch);
    for (fraction, rows) in [(0.25, 2), (0.3, 3), (1.0, 8)] {
        assert_eq!(stepped(fraction, &batch), stepped(1.0, &batch.first(rows)), "fraction {fraction}");
        assert_eq!(rows == 8, stepped(fraction, &batch) == whole, "fraction {fraction}");
    }
}
