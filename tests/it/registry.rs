//! Every method of the registry trains end to end by name, with its defaults and with a
//! partial configuration laid over them.

use kd::prelude::*;

use crate::common::{config, device};

fn model(spec: &str, classes: usize, seed: u64) -> AnyModel {
    // Three hidden layers, so that FitNet's default hint layer 2 exists.
    ModelSpec::parse(spec).unwrap().build_seeded([1, 2, 2], classes, &device().autodiff(), seed).unwrap()
}

fn two_class(n: usize, seed: u64, name: &str) -> kd::data::InMemoryDataset {
    let base = crate::common::blobs(n, seed, name);
    let labels: Vec<usize> = (0..n).map(|i| base.label(i).min(1)).collect();
    let batch = base.batch(&(0..n).collect::<Vec<_>>(), 0, 0, &device()).unwrap();
    let values: Vec<f32> = batch.inputs.into_data().convert::<f32>().try_to_vec().unwrap();
    kd::data::InMemoryDataset::new(name, kd::data::Values::F32(std::sync::Arc::new(values)), labels, [1, 2, 2], 2).unwrap()
}

#[test]
fn every_method_trains_by_name() {
    for binary in [false, true] {
        let classes = if binary { 2 } else { 3 };
        let (train, valid, test) = if binary {
            (two_class(96, 1, "train"), two_class(48, 3, "valid"), two_class(48, 2, "test"))
        } else {
            (crate::common::blobs(96, 1, "train"), crate::common::blobs(48, 3, "valid"), crate::common::blobs(48, 2, "test"))
        };
        let trainer = Trainer::new(config(1, 4), &train, &test, device()).with_validation(&valid);
        let teacher = trainer.fit(model("mlpbn-16-16-16", classes, 1), &mut kd::baselines::CrossEntropy, &NoTeacher).unwrap();
        let teacher = FrozenTeacher::new(teacher.student, "teacher");
        for info in kd::methods::methods().unwrap().into_iter().filter(|m| m.applies_to(classes)) {
            let out = kd::methods::train_method(info.name, None, &trainer, model("mlpbn-8-8-8", classes, 2), &teacher)
                .unwrap_or_else(|e| panic!("{} on {classes} classes: {e}", info.name));
            assert_eq!(out.history.len(), 1, "{}", info.name);
            assert!(out.history[0].train_loss.is_finite(), "{}", info.name);
        }
    }
}

#[test]
fn a_partial_configuration_keeps_the_other_defaults() {
    let train = crate::common::blobs(48, 1, "train");
    let test = crate::common::blobs(24, 2, "test");
    let trainer = Trainer::new(config(1, 4), &train, &test, device());
    let teacher = FrozenTeacher::new(model("mlpbn-16-16-16", 3, 1), "teacher");
    let cfg = serde_json::json!({ "warmup_epochs": 1 });
    let out = kd::methods::train_method("dkd+ls", Some(&cfg), &trainer, model("mlpbn-8-8-8", 3, 2), &teacher).unwrap();
    assert!(out.history[0].train_terms.contains_key("tckd"));
    // The user's warm-up laid over the LSKD preset keeps the preset's other fields: T = 2,
    // alpha = 1 * 9, beta = 8 * 9, standardized logits.
    let effective = kd::methods::effective_config("dkd+ls", Some(&cfg)).unwrap();
    let preset = kd::methods::effective_config("dkd+ls", None).unwrap();
    assert_eq!(effective["temperature"], 2.0, "{effective}");
    assert_eq!(effective["alpha"], 9.0, "{effective}");
    assert_eq!(effective["beta"], 72.0, "{effective}");
    assert!(effective["logit_stand"].is_object(), "{effective}");
    for key in ["ce_weight", "temperature", "alpha", "beta", "logit_stand"] {
        assert_eq!(effective[key], preset[key], "{key}: {effective} over {preset}");
    }
    // The warm-up is the user's, not the preset's (where the configuration keeps it: a JSON
    // pointer, so that a change of representation changes this line only).
    const WARMUP: &str = "/warmup_epochs";
    assert_eq!(effective.pointer(WARMUP), Some(&serde_json::json!(1)), "{effective}");
    assert_ne!(preset.pointer(WARMUP), effective.pointer(WARMUP), "{preset}");
    let bad = serde_json::json!({ "warmup_epochs": "soon" });
    let err = kd::methods::train_method("dkd", Some(&bad), &trainer, model("mlpbn-8-8-8", 3, 2), &teacher).unwrap_err().to_string();
    assert!(err.contains("configuration of method `dkd`"), "{err}");
    let err = kd::methods::train_method("nosuch", None, &trainer, model("mlpbn-8-8-8", 3, 2), &teacher).unwrap_err().to_string();
    assert!(err.contains("unknown method"), "{err}");
}
