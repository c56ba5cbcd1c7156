//! One identity per method: the registry's name is the name its distiller reports and the one
//! a run records, and suite membership is declared in the registry.

use kd::methods::Suite;
use kd::prelude::*;

use crate::common::{blobs, config, device};

#[test]
fn every_method_records_the_name_it_is_registered_under() {
    let (train, test) = (blobs(48, 1, "train"), blobs(24, 2, "test"));
    let valid = blobs(24, 3, "valid");
    let spec = kd::models::ModelSpec::parse("mlpbn-8-8-8").unwrap();
    let model = |seed| spec.build_seeded([1, 2, 2], 3, &device().autodiff(), seed).unwrap();
    let teacher = FrozenTeacher::new(model(1), "teacher");
    let dir = tempfile::tempdir().unwrap();
    for info in kd::methods::methods().unwrap().into_iter().filter(|m| m.applies_to(3)) {
        let prepared = kd::methods::prepare::<AnyModel>(info.name, None).unwrap();
        assert_eq!(prepared.name(), info.name);
        let run_dir = dir.path().join(info.name.replace('+', "_"));
        let options = RunOptions { checkpoint_dir: Some(run_dir.clone()), ..Default::default() };
        let trainer = Trainer::new(config(1, 0), &train, &test, device()).with_validation(&valid).with_options(options);
        prepared.train(&trainer, model(2), &teacher).unwrap_or_else(|e| panic!("{}: {e}", info.name));
        let run: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
        assert_eq!(run["method"], info.name, "{}", info.name);
    }
}

#[test]
fn a_configuration_that_makes_another_method_is_refused_with_its_name() {
    let err = kd::methods::effective_config("kd", Some(&serde_json::json!({"logit_stand": {}}))).unwrap_err().to_string();
    assert!(err.contains("method `kd` is the method `kd+ls`"), "{err}");
    let err = kd::methods::effective_config("dckd-beta0", Some(&serde_json::json!({"beta": 2.0}))).unwrap_err().to_string();
    assert!(err.contains("dckd-beta0") && err.contains("beta 2"), "{err}");
    let err = kd::methods::effective_config("dkd+fitnet", Some(&serde_json::json!({"target_mode": "max"}))).unwrap_err().to_string();
    assert!(err.contains("dkd+fitnet") && err.contains("target_mode `teacher`"), "{err}");
}

/// A new multi-class logit method cannot silently skip the CNN teacher-student pair.
#[test]
fn every_multi_class_logit_method_runs_on_the_cnn_pair() {
    let methods = kd::methods::methods().unwrap();
    for info in methods.iter().filter(|m| m.need == TeacherNeed::Logits && m.applies_to(3)) {
        assert!(info.in_suite(Suite::ConvPair), "{} needs only logits on multi-class tasks but is not in the CNN-pair suite", info.name);
    }
    let biased: Vec<&str> = methods.iter().filter(|m| m.in_suite(Suite::BiasedTeacher)).map(|m| m.name).collect();
    assert_eq!(biased, ["ce", "kd", "fitnet", "binary_kd", "debiased"]);
}
