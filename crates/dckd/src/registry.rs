//! DCKD by name: alone, with FitNet's hint, with RKD (see [`kd_core::registry`]).

use kd_core::registry::{MethodEntry, MethodSpec, Prepared, Tasks, Value, method_config};
use kd_core::{Result, Student};

use crate::{Companion, Dckd, DckdConfig};

const PAPER: &str = "Wang et al.: Decoupled Classifier Knowledge Distillation (PLOS ONE 2025)";

/// DCKD with each companion loss.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![
        MethodEntry::new(MethodSpec::new("dckd", PAPER, "kd-dckd", Tasks::MultiClass), dckd::<S>),
        MethodEntry::new(MethodSpec::new("dckd+fitnet", PAPER, "kd-dckd", Tasks::MultiClass), dckd_fitnet::<S>),
        MethodEntry::new(MethodSpec::new("dckd+rkd", PAPER, "kd-dckd", Tasks::MultiClass), dckd_rkd::<S>),
    ]
}

fn with_companion<S: Student>(method: &str, companion: Companion, user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: DckdConfig = method_config(method, DckdConfig { companion, ..Default::default() }, user)?;
    Prepared::new(method, &cfg, Dckd::new(cfg.clone())?)
}

fn dckd<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    with_companion("dckd", Companion::None, user)
}

fn dckd_fitnet<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    with_companion("dckd+fitnet", Companion::fitnet(), user)
}

fn dckd_rkd<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    with_companion("dckd+rkd", Companion::rkd(), user)
}
