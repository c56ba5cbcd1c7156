//! TOAST by name (see [`kd_core::registry`]).

use kd_core::registry::{MethodEntry, MethodSpec, Prepared, Tasks, Value, method_config};
use kd_core::{Result, Student};

use crate::distiller::NAME;
use crate::{Toast, ToastConfig};

/// TOAST.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![MethodEntry::new(
        MethodSpec::new(
            NAME,
            "Yin et al.: Two-Stage Approach for Targeted Knowledge Transfer in Self-Knowledge Distillation (IEEE/CAA JAS 2024)",
            "kd-toast",
            Tasks::MultiClass,
        ),
        toast::<S>,
    )]
}

fn toast<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: ToastConfig = method_config(NAME, ToastConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Toast::new(cfg.clone())?)
}
