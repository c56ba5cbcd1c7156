//! RLD by name, with the logit-standardization preset (see [`kd_core::registry`]).

use kd_core::registry::{MethodEntry, MethodSpec, Prepared, Suite, Tasks, Value, method_config};
use kd_core::{Result, Student};

use crate::distiller::{NAME, NAME_LS};
use crate::{Rld, RldConfig};

const PAPER: &str = "Sun et al.: Knowledge Distillation with Refined Logits (2024)";
const CONV: &[Suite] = &[Suite::ConvPair];

/// RLD and RLD with logit standardization.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![
        MethodEntry::new(
            MethodSpec::new(NAME, PAPER, "kd-rld", Tasks::MultiClass).with_reference("zju-SWJ/RLD d54578f").in_suites(CONV),
            rld::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(NAME_LS, PAPER, "kd-rld", Tasks::MultiClass).with_reference("zju-SWJ/RLD d54578f").in_suites(CONV),
            rld_ls::<S>,
        ),
    ]
}

fn rld<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: RldConfig = method_config(NAME, RldConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Rld::new(cfg.clone())?)
}

/// The reference's `--logit-stand` recipe: alpha and beta times 9, T = T_alpha = 2.
fn rld_ls<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let mut cfg: RldConfig = method_config(NAME_LS, RldConfig::logit_stand_defaults(), user)?;
    cfg.logit_stand.get_or_insert_with(Default::default);
    Prepared::new(NAME_LS, &cfg, Rld::new(cfg.clone())?)
}
