//! CRD by name (see [`kd_core::registry`]).

use kd_core::Student;
use kd_core::registry::{MethodEntry, MethodSpec, Suite, Tasks};

use crate::distiller::{NAME, prepare};

const PAPER: &str = "Tian et al.: Contrastive Representation Distillation (ICLR 2020)";
const CRATE: &str = "kd-crd";

/// CRD.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![MethodEntry::new(
        MethodSpec::new(NAME, PAPER, CRATE, Tasks::Any)
            .with_reference("HobbitLong/RepDistiller b84f547 crd/")
            .in_suites(&[Suite::ConvPair]),
        prepare::<S>,
    )]
}
