//! Methods by name: what configs, the bench and the tests use to pick a distiller at run time.

use kd_core::{Distiller, KdError, Result, Student, Teacher, TeacherNeed, TrainOutcome, Trainer};
use serde::de::DeserializeOwned;

/// The result of a run, without the method's learnable parts.
pub type MethodOutcome<S> = TrainOutcome<S, ()>;

fn config<C: DeserializeOwned + Default>(method: &str, value: Option<&serde_json::Value>) -> Result<C> {
    match value {
        None => Ok(C::default()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| KdError::InvalidConfig(format!("configuration of method `{method}`: {e}"))),
    }
}

fn run<S: Student, D: Distiller>(trainer: &Trainer, student: S, mut distiller: D, teacher: &dyn Teacher) -> Result<MethodOutcome<S>> {
    let out = trainer.fit(student, &mut distiller, teacher)?;
    Ok(TrainOutcome { student: out.student, aux: (), history: out.history, best_epoch: out.best_epoch, finished: out.finished })
}

/// The names [`train_method`] knows, in the order tables list them.
pub fn method_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    #[cfg(feature = "baselines")]
    names.extend(["ce", "kd", "kd+ls"]);
    names
}

/// Whether the method needs a teacher (so callers can skip training one).
pub fn teacher_need(method: &str) -> Result<TeacherNeed> {
    Ok(match method {
        "ce" => TeacherNeed::Nothing,
        "kd" | "kd+ls" => TeacherNeed::Logits,
        other => return Err(unknown(other)),
    })
}

fn unknown(method: &str) -> KdError {
    KdError::InvalidConfig(format!("unknown method `{method}`; known: {}", method_names().join(", ")))
}

/// Trains `student` with the named method. `method_config` is the method's configuration
/// (its serde fields; `None`: the defaults from the papers).
pub fn train_method<S: Student>(
    method: &str,
    method_config: Option<&serde_json::Value>,
    trainer: &Trainer,
    student: S,
    teacher: &dyn Teacher,
) -> Result<MethodOutcome<S>> {
    match method {
        #[cfg(feature = "baselines")]
        "ce" => run(trainer, student, kd_baselines::CrossEntropy, teacher),
        #[cfg(feature = "baselines")]
        "kd" => run(trainer, student, kd_baselines::Kd::new(config(method, method_config)?)?, teacher),
        #[cfg(feature = "baselines")]
        "kd+ls" => {
            let mut c: kd_baselines::KdConfig = config(method, method_config)?;
            if method_config.is_none() {
                // LSKD's CIFAR defaults for KD: tau 2, KD weight 9, CE weight 0.1 (METHODS.md B.5).
                c = kd_baselines::KdConfig { temperature: 2.0, ce_weight: 0.1, kd_weight: 9.0, logit_stand: Some(Default::default()) };
            }
            c.logit_stand.get_or_insert_with(Default::default);
            run(trainer, student, kd_baselines::Kd::new(c)?, teacher)
        }
        other => Err(unknown(other)),
    }
}
