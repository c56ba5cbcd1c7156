//! Binary KD and de-biased KD by name (see [`kd_core::registry`]).

use kd_core::registry::{MethodEntry, MethodSpec, Prepared, Suite, Tasks, Value, fit_method, method_config};
use kd_core::{Distiller, KdError, Result, Student};
use serde::{Deserialize, Serialize};

use crate::distiller::{NAME_BINARY_KD, NAME_DEBIASED};
use crate::{BinaryKd, BinaryKdConfig, DebiasOptions, DebiasedKd, DebiasedKdConfig, Debiaser};

const CRATE: &str = "kd-debiased";
const BIASED: &[Suite] = &[Suite::BiasedTeacher];

/// The binary methods.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![
        MethodEntry::new(
            MethodSpec::new(
                NAME_BINARY_KD,
                "Hinton et al.'s KD on the positive-class probability (binary cross-entropy)",
                CRATE,
                Tasks::Binary,
            )
            .in_suites(BIASED),
            binary_kd::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                NAME_DEBIASED,
                "Li et al.: De-biased knowledge distillation framework based on knowledge infusion and label de-biasing techniques (JEST 2024)",
                CRATE,
                Tasks::Binary,
            )
            .in_suites(BIASED),
            debiased::<S>,
        ),
    ]
}

/// The de-biased method's configuration: the de-biasing fitted before training, and the loss.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebiasedMethodConfig {
    /// How the teacher's labels are de-biased (calibration, prior shift, side correction).
    pub debias: DebiasOptions,
    /// The de-biased distillation loss.
    pub loss: DebiasedKdConfig,
}

fn binary_kd<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: BinaryKdConfig = method_config(NAME_BINARY_KD, BinaryKdConfig::default(), user)?;
    Prepared::new(NAME_BINARY_KD, &cfg, BinaryKd::new(cfg.clone())?)
}

/// The de-biasing is fitted once, before training: the temperature on the validation split (held
/// out from training), the prior shift on the training split.
fn debiased<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: DebiasedMethodConfig = method_config(NAME_DEBIASED, DebiasedMethodConfig::default(), user)?;
    // An identity de-biaser checks the loss configuration and tells what the distiller needs.
    let need = DebiasedKd::new(Debiaser::new(1.0, 0.0, cfg.debias.clone())?, cfg.loss.clone())?.teacher_need();
    let saved = cfg.clone();
    Prepared::with_runner(NAME_DEBIASED, &saved, need, move |trainer, student, teacher| {
        let calibration = trainer.valid_split().ok_or_else(|| KdError::Missing {
            method: NAME_DEBIASED.into(),
            what: "a validation split to calibrate the teacher on (held out from training)".into(),
        })?;
        let debiaser = Debiaser::fit(teacher, calibration, trainer.train_split(), cfg.debias, trainer.device())?;
        fit_method(trainer, student, &mut DebiasedKd::new(debiaser, cfg.loss)?, teacher)
    })
}
