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
