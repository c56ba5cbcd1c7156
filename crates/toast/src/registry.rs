//! TOAST by name (see [`kd_core::registry`]).

use kd_core::registry::{MethodEntry, MethodSpec, Prepared, Tasks, Value, method_config};
use kd_core::{Result, Student};

use crate::{Toast, ToastConfig};

/// TOAST.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![MethodEntry::new(
        MethodSpec::new(
            "toast",
            "Yin et al.: Two-Stage Approach for Targeted Knowledge Transfer in Self-Knowledge Distillation (IEEE/CAA JAS 2024)",
            "kd-toast",
            Tasks::MultiClass,
        ),
        toast::<S>,
    )]
}

fn toast<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: ToastConfig = method_config("toast", ToastConfig::default(), user)?;
    Prepared::new("toast", &cfg, Toast::new(cfg.clone())?)
}
