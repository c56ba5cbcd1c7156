//! DCKD by name: alone, in the abstract's literal reading (`dckd-beta0`), with FitNet's hint,
//! with RKD; and DKD+FitNet, the control that differs from DCKD+FitNet in the decoupling alone
//! (see [`kd_core::registry`]).

use kd_core::registry::{MethodEntry, MethodSpec, Prepared, Suite, Tasks, Value, method_config};
use kd_core::{Result, Student};

use crate::distiller::{NAME, NAME_BETA0, NAME_DKD_FITNET, NAME_FITNET, NAME_RKD};
use crate::{Companion, Dckd, DckdConfig, TargetMode};

const PAPER: &str = "Wang et al.: Decoupled Classifier Knowledge Distillation (PLOS ONE 2025)";
const CRATE: &str = "kd-dckd";
const CONV: &[Suite] = &[Suite::ConvPair];

/// DCKD with each companion loss.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![
        MethodEntry::new(MethodSpec::new(NAME, PAPER, CRATE, Tasks::MultiClass).in_suites(CONV), dckd::<S>),
        MethodEntry::new(MethodSpec::new(NAME_BETA0, PAPER, CRATE, Tasks::MultiClass).in_suites(CONV), dckd_beta0::<S>),
        MethodEntry::new(MethodSpec::new(NAME_FITNET, PAPER, CRATE, Tasks::MultiClass).in_suites(CONV), dckd_fitnet::<S>),
        MethodEntry::new(MethodSpec::new(NAME_RKD, PAPER, CRATE, Tasks::MultiClass), dckd_rkd::<S>),
        MethodEntry::new(
            MethodSpec::new(
                NAME_DKD_FITNET,
                "DKD's decoupled logit loss plus FitNets' hint (DCKD+FitNet's control)",
                CRATE,
                Tasks::MultiClass,
            )
            .in_suites(CONV),
            dkd_fitnet::<S>,
        ),
    ]
}

fn with_companion<S: Student>(name: &'static str, companion: Companion, user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: DckdConfig = method_config(name, DckdConfig { companion, ..Default::default() }, user)?;
    Prepared::new(name, &cfg, Dckd::new(cfg.clone())?)
}

fn dckd<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    with_companion(NAME, Companion::None, user)
}

/// The abstract's literal reading: the non-target classes are "learned by the student", so no
/// term distils the teacher's non-target distribution (beta = 0); only TCKD* and CE remain.
fn dckd_beta0<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: DckdConfig = method_config(NAME_BETA0, DckdConfig { companion: Companion::None, beta: 0.0, ..Default::default() }, user)?;
    Prepared::new(NAME_BETA0, &cfg, Dckd::literal(cfg.clone())?)
}

fn dckd_fitnet<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    with_companion(NAME_FITNET, Companion::fitnet(), user)
}

fn dckd_rkd<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    with_companion(NAME_RKD, Companion::rkd(), user)
}

/// DCKD+FitNet with DKD's own target term: what DCKD+FitNet gains by its decoupling alone.
fn dkd_fitnet<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let defaults = DckdConfig { companion: Companion::fitnet(), target_mode: TargetMode::Teacher, ..Default::default() };
    let cfg: DckdConfig = method_config(NAME_DKD_FITNET, defaults, user)?;
    Prepared::new(NAME_DKD_FITNET, &cfg, Dckd::dkd_with_fitnet(cfg.clone())?)
}
