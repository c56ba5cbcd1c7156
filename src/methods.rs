//! Methods by name: what configs, the bench and the tests use to pick a distiller at run time.
//!
//! Each method crate declares its methods next to their code (`registry.rs` in the crate, see
//! [`kd_core::registry`]); this module only lists the crates, one line each. The names, the
//! papers, the tasks a method applies to and what it needs from a teacher all come from there.

use kd_core::registry::{self, MethodEntry, Value};
pub use kd_core::registry::{MethodInfo, MethodOutcome, Prepared, Suite, Tasks};
use kd_core::{Result, Student, Teacher, TeacherNeed, Trainer};
use kd_models::AnyModel;

/// Every method compiled in, in the order tables list them: one line per method crate.
fn registry<S: Student>() -> Vec<MethodEntry<S>> {
    #[allow(unused_mut)]
    let mut all = Vec::new();
    #[cfg(feature = "baselines")]
    all.extend(kd_baselines::registry::methods::<S>());
    #[cfg(feature = "rld")]
    all.extend(kd_rld::registry::methods::<S>());
    #[cfg(feature = "dckd")]
    all.extend(kd_dckd::registry::methods::<S>());
    #[cfg(feature = "toast")]
    all.extend(kd_toast::registry::methods::<S>());
    #[cfg(feature = "debiased")]
    all.extend(kd_debiased::registry::methods::<S>());
    #[cfg(feature = "crd")]
    all.extend(kd_crd::registry::methods::<S>());
    #[cfg(feature = "reviewkd")]
    all.extend(kd_reviewkd::registry::methods::<S>());
    all
}

/// Every method compiled in, described.
pub fn methods() -> Result<Vec<MethodInfo>> {
    registry::<AnyModel>().iter().map(MethodEntry::info).collect()
}

/// The names of [`methods`].
pub fn method_names() -> Vec<&'static str> {
    registry::<AnyModel>().iter().map(|e| e.spec.name).collect()
}

/// The description of one method.
pub fn method_info(method: &str) -> Result<MethodInfo> {
    registry::find(&registry::<AnyModel>(), method)?.info()
}

/// What the method needs from a teacher (so callers can skip training one).
pub fn teacher_need(method: &str) -> Result<TeacherNeed> {
    Ok(method_info(method)?.need)
}

/// The method's effective configuration: its defaults (and preset) with `method_config` laid
/// over them, checked as training would check it. An unknown field, a value of the wrong type
/// or an impossible value is an error naming it; what is returned is what a run records.
pub fn effective_config(method: &str, method_config: Option<&Value>) -> Result<Value> {
    Ok(prepare::<AnyModel>(method, method_config)?.config().clone())
}

/// The named method with `method_config` over its defaults, resolved and checked once: its
/// name, effective configuration (what a run records), teacher need, and what trains with it.
pub fn prepare<S: Student>(method: &str, method_config: Option<&Value>) -> Result<Prepared<S>> {
    let entries = registry::<S>();
    (registry::find(&entries, method)?.prepare)(method_config)
}

/// Trains `student` with the named method. `method_config` is the method's configuration
/// (its serde fields; `None`: the defaults from the papers).
pub fn train_method<S: Student>(
    method: &str,
    method_config: Option<&Value>,
    trainer: &Trainer,
    student: S,
    teacher: &dyn Teacher,
) -> Result<MethodOutcome<S>> {
    prepare(method, method_config)?.train(trainer, student, teacher)
}
