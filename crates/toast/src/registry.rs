//! TOAST by name (see [`kd_core::registry`]).

use kd_core::registry::{MethodEntry, MethodSpec, Prepared, Tasks, Value, method_config};
use kd_core::{Result, Student};

use crate::distiller::{NAME, NAME_REPLAY_ALL};
use crate::{Toast, ToastConfig};

const PAPER: &str = "Yin et al.: Two-Stage Approach for Targeted Knowledge Transfer in Self-Knowledge Distillation (IEEE/CAA JAS 2024)";

/// TOAST, and TOAST without its selection (every fresh row replayed).
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![
        MethodEntry::new(MethodSpec::new(NAME, PAPER, "kd-toast", Tasks::MultiClass), toast::<S>),
        MethodEntry::new(MethodSpec::new(NAME_REPLAY_ALL, PAPER, "kd-toast", Tasks::MultiClass), toast_replay_all::<S>),
    ]
}

/// The selection's ablation: every fresh row of a step replayed in the next.
fn toast_replay_all<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: ToastConfig = method_config(NAME_REPLAY_ALL, ToastConfig { replay_fraction: 1.0, ..ToastConfig::default() }, user)?;
    Prepared::new(NAME_REPLAY_ALL, &cfg, Toast::replay_all(cfg.clone())?)
}

fn toast<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: ToastConfig = method_config(NAME, ToastConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Toast::new(cfg.clone())?)
}
