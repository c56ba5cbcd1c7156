//! DCKD by name: alone, in the abstract's literal reading (`dckd-beta0`), with FitNet's hint,
//! with RKD (see [`kd_core::registry`]).

use kd_core::registry::{MethodEntry, MethodSpec, Prepared, Tasks, Value, method_config};
use kd_core::{Result, Student};

use crate::{Companion, Dckd, DckdConfig};

const PAPER: &str = "Wang et al.: Decoupled Classifier Knowledge Distillation (PLOS ONE 2025)";

/// DCKD with each companion loss.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![
        MethodEntry::new(MethodSpec::new("dckd", PAPER, "kd-dckd", Tasks::MultiClass), dckd::<S>),
        MethodEntry::new(MethodSpec::new("dckd-beta0", PAPER, "kd-dckd", Tasks::MultiClass), dckd_beta0::<S>),
        MethodEntry::new(MethodSpec::new("dckd+fitnet", PAPER, "kd-dckd", Tasks::MultiClass), dckd_fitnet::<S>),
        MethodEntry::new(MethodSpec::new("dckd+rkd", PAPER, "kd-dckd", Tasks::MultiClass), dckd_rkd::<S>),
    ]
}

fn with_defaults<S: Student>(method: &str, defaults: DckdConfig, user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: DckdConfig = method_config(method, defaults, user)?;
    Prepared::new(method, &cfg, Dckd::new(cfg.clone())?)
}

fn with_companion<S: Student>(method: &str, companion: Companion, user: Option<&Value>) -> Result<Prepared<S>> {
    with_defaults(method, DckdConfig { companion, ..Default::default() }, user)
}

fn dckd<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    with_companion("dckd", Companion::None, user)
}

/// The abstract's literal reading: the non-target classes are "learned by the student", so no
/// term distils the teacher's non-target distribution (beta = 0); only TCKD* and CE remain.
fn dckd_beta0<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    with_defaults("dckd-beta0", DckdConfig { companion: Companion::None, beta: 0.0, ..Default::default() }, user)
}

fn dckd_fitnet<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    with_companion("dckd+fitnet", Companion::fitnet(), user)
}

fn dckd_rkd<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    with_companion("dckd+rkd", Companion::rkd(), user)
}
