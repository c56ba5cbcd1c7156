//! ReviewKD by name (see [`kd_core::registry`]).

use kd_core::Student;
use kd_core::registry::{MethodEntry, MethodSpec, Suite, Tasks};

use crate::distiller::{NAME, prepare};

const PAPER: &str = "Chen et al.: Distilling Knowledge via Knowledge Review (CVPR 2021)";

/// ReviewKD.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![MethodEntry::new(
        MethodSpec::new(NAME, PAPER, "kd-reviewkd", Tasks::Any)
            .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/ReviewKD.py")
            .in_suites(&[Suite::ConvPair]),
        prepare::<S>,
    )]
}
