//! Methods by name: how a method crate declares its methods, so that the facade, the command
//! line's `--methods`, the bench's lists and each method's teacher need all come from one place.
//!
//! A method crate exposes `pub fn methods<S: Student>() -> Vec<MethodEntry<S>>`, one
//! [`MethodEntry`] per method: its [`MethodSpec`] (name, paper, the tasks it applies to) and a
//! function that turns a user's partial configuration into a [`Prepared`] method (the
//! configuration with the method's defaults laid under it, checked by building the distiller).
//! What the method needs from a teacher is asked of the distiller itself, never declared twice.
//!
//! ```
//! use kd_core::registry::{MethodEntry, MethodSpec, Prepared, Tasks, method_config};
//! use kd_core::{Distiller, LossTerms, Result, Step, Student, TeacherNeed};
//!
//! /// The method's one name: the registry, the distiller and every record use it.
//! pub const NAME: &str = "plain";
//!
//! #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct PlainConfig { weight: f64 }
//!
//! /// Cross-entropy times a weight.
//! struct Plain(PlainConfig);
//!
//! impl Distiller for Plain {
//!     fn name(&self) -> &str { NAME }
//!     fn teacher_need(&self) -> TeacherNeed { TeacherNeed::Nothing }
//!     fn loss(&mut self, step: &Step) -> Result<LossTerms> {
//!         let ce = kd_core::loss::cross_entropy_mean(step.student.logits.clone(), step.batch.labels.clone());
//!         Ok(LossTerms::new().with("ce", ce * self.0.weight))
//!     }
//! }
//!
//! fn plain<S: Student>(user: Option<&serde_json::Value>) -> Result<Prepared<S>> {
//!     let config = method_config(NAME, PlainConfig { weight: 1.0 }, user)?;
//!     Prepared::new(NAME, &config, Plain(config.clone()))
//! }
//!
//! /// The crate's registry: one line per method.
//! pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
//!     vec![MethodEntry::new(MethodSpec::new(NAME, "(no paper)", "my-crate", Tasks::Any), plain::<S>)]
//! }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
/// A configuration as the user gives it (JSON; TOML files convert to it).
pub use serde_json::Value;

use crate::distiller::{AuxModule, Distiller};
use crate::error::{KdError, Result};
use crate::model::{Student, Teacher, TeacherNeed};
use crate::train::{TrainOutcome, Trainer};

/// The result of training with a method by name, without the method's learnable parts.
pub type MethodOutcome<S> = TrainOutcome<S, ()>;

/// Which tasks a method applies to (what the bench runs it on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tasks {
    /// Multi-class and two-class tasks.
    Any,
    /// Tasks of three classes or more (the self-distillation and multi-class logit methods).
    MultiClass,
    /// Two-class tasks only.
    Binary,
}

/// The bench suites a method joins besides the methods suite (which runs every method on
/// every task it applies to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// The CNN teacher-student pair on images (every multi-class logit method belongs here).
    ConvPair,
    /// The two-class task with a biased teacher (the de-biasing methods and their baselines).
    BiasedTeacher,
}

/// What a method is, as its crate declares it.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// The name configs, `--methods`, records and tables use: the method's `NAME` constant,
    /// which its distiller reports too.
    pub name: &'static str,
    /// The paper (authors, venue, year) the method follows.
    pub paper: &'static str,
    /// The crate that implements it.
    pub crate_name: &'static str,
    /// The tasks it applies to.
    pub tasks: Tasks,
    /// The bench suites it joins besides the methods suite.
    pub suites: &'static [Suite],
    /// The reference code it is checked against (repository, commit, file), or empty where the
    /// paper has no public code.
    pub reference: &'static str,
    /// Whether it compares spatial feature maps (attention maps, kernels over positions), so
    /// that with students whose features are `[batch, width, 1, 1]` (MLPs) its term is constant.
    pub spatial_maps: bool,
}

impl MethodSpec {
    /// A method in no suite but the methods suite, with no reference code.
    pub const fn new(name: &'static str, paper: &'static str, crate_name: &'static str, tasks: Tasks) -> Self {
        MethodSpec { name, paper, crate_name, tasks, suites: &[], reference: "", spatial_maps: false }
    }

    /// The same method, checked against the reference code `reference` (repository, commit, file).
    pub const fn with_reference(self, reference: &'static str) -> Self {
        MethodSpec { reference, ..self }
    }

    /// The same method, marked as comparing spatial feature maps.
    pub const fn reads_spatial_maps(self) -> Self {
        MethodSpec { spatial_maps: true, ..self }
    }

    /// The same method, joining `suites`.
    pub const fn in_suites(self, suites: &'static [Suite]) -> Self {
        MethodSpec { suites, ..self }
    }
}

/// A method's description with what its distiller says of itself.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// The name configs and `--methods` use.
    pub name: &'static str,
    /// The paper it follows.
    pub paper: &'static str,
    /// The crate that implements it.
    pub crate_name: &'static str,
    /// The tasks it applies to.
    pub tasks: Tasks,
    /// The bench suites it joins besides the methods suite.
    pub suites: &'static [Suite],
    /// The reference code it is checked against, or empty where there is none.
    pub reference: &'static str,
    /// Whether it compares spatial feature maps ([`MethodSpec::spatial_maps`]).
    pub spatial_maps: bool,
    /// Whether it accepts approximate (top-k) teacher outputs from a cache (asked of its
    /// distiller).
    pub accepts_top_k: bool,
    /// What it needs from a teacher (asked of its distiller).
    pub need: TeacherNeed,
    /// Whether its configuration has a warm-up of its distillation terms (the field
    /// [`crate::warmup::CONFIG_FIELD`], a [`crate::Warmup`]): a caller may set it, as the bench
    /// sets a fraction of each schedule.
    pub has_warmup: bool,
}

impl MethodInfo {
    /// Whether the method joins `suite`.
    pub fn in_suite(&self, suite: Suite) -> bool {
        self.suites.contains(&suite)
    }

    /// Whether the method runs on a task with `classes` classes.
    pub fn applies_to(&self, classes: usize) -> bool {
        match self.tasks {
            Tasks::Any => true,
            Tasks::MultiClass => classes > 2,
            Tasks::Binary => classes == 2,
        }
    }
}

/// Trains a student with a method whose configuration is resolved.
type Runner<S> = Box<dyn FnOnce(&Trainer<'_>, S, &dyn Teacher) -> Result<MethodOutcome<S>>>;

/// A method ready to train: its name, its effective configuration (defaults and preset filled
/// in, checked), what it needs from a teacher, and what trains with it.
pub struct Prepared<S> {
    name: &'static str,
    config: serde_json::Value,
    need: TeacherNeed,
    accepts_top_k: bool,
    runner: Runner<S>,
}

impl<S: Student> Prepared<S> {
    /// A method named `name` that trains `distiller` (already built, so its configuration is
    /// checked). The distiller must report `name`: one identity per method.
    pub fn new<C: Serialize, A: AuxModule, D: Distiller<A> + 'static>(name: &'static str, config: &C, distiller: D) -> Result<Self> {
        if distiller.name() != name {
            return Err(KdError::InvalidConfig(format!(
                "this configuration of method `{name}` is the method `{}` (its distiller reports that name): use that name",
                distiller.name()
            )));
        }
        let (need, accepts_top_k) = (distiller.teacher_need(), distiller.accepts_top_k());
        let prepared = Self::with_runner(name, config, need, move |trainer, student, teacher| {
            let mut distiller = distiller;
            fit_method(trainer, student, &mut distiller, teacher)
        })?;
        Ok(Prepared { accepts_top_k, ..prepared })
    }

    /// A method that builds its distiller only when training starts (it fits something on the
    /// trainer's data first, as de-biased KD fits its calibration). It needs exact teacher
    /// outputs.
    pub fn with_runner<C: Serialize>(
        name: &'static str,
        config: &C,
        need: TeacherNeed,
        runner: impl FnOnce(&Trainer<'_>, S, &dyn Teacher) -> Result<MethodOutcome<S>> + 'static,
    ) -> Result<Self> {
        let config = serde_json::to_value(config).map_err(|e| KdError::InvalidConfig(format!("configuration of method `{name}`: {e}")))?;
        Ok(Prepared { name, config, need, accepts_top_k: false, runner: Box::new(runner) })
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The effective configuration, as a run records it.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// What the method needs from a teacher.
    pub fn need(&self) -> TeacherNeed {
        self.need
    }

    /// Whether the method accepts approximate (top-k) teacher outputs.
    pub fn accepts_top_k(&self) -> bool {
        self.accepts_top_k
    }

    /// Trains `student`.
    pub fn train(self, trainer: &Trainer<'_>, student: S, teacher: &dyn Teacher) -> Result<MethodOutcome<S>> {
        (self.runner)(trainer, student, teacher)
    }
}

/// Trains `student` with `distiller` and drops the method's learnable parts from the outcome.
pub fn fit_method<S: Student, A: AuxModule, D: Distiller<A>>(
    trainer: &Trainer<'_>,
    student: S,
    distiller: &mut D,
    teacher: &dyn Teacher,
) -> Result<MethodOutcome<S>> {
    let out = trainer.fit(student, distiller, teacher)?;
    Ok(TrainOutcome { student: out.student, aux: (), history: out.history, best_epoch: out.best_epoch, finished: out.finished })
}

/// One method of a crate's registry.
pub struct MethodEntry<S> {
    /// What the method is.
    pub spec: MethodSpec,
    /// Resolves a user's partial configuration (`None`: the defaults).
    pub prepare: fn(Option<&serde_json::Value>) -> Result<Prepared<S>>,
}

impl<S: Student> MethodEntry<S> {
    /// An entry.
    pub fn new(spec: MethodSpec, prepare: fn(Option<&serde_json::Value>) -> Result<Prepared<S>>) -> Self {
        MethodEntry { spec, prepare }
    }

    /// The description, with what the distiller says of itself under the defaults.
    pub fn info(&self) -> Result<MethodInfo> {
        let prepared = (self.prepare)(None)?;
        let s = self.spec;
        if prepared.name() != s.name {
            return Err(KdError::Protocol {
                method: s.name.into(),
                reason: format!("its registry entry prepares the method `{}`", prepared.name()),
            });
        }
        Ok(MethodInfo {
            name: s.name,
            paper: s.paper,
            crate_name: s.crate_name,
            tasks: s.tasks,
            suites: s.suites,
            reference: s.reference,
            spatial_maps: s.spatial_maps,
            accepts_top_k: prepared.accepts_top_k(),
            need: prepared.need(),
            has_warmup: prepared.config().get(crate::warmup::CONFIG_FIELD).is_some(),
        })
    }
}

/// A method's configuration: `defaults` with the user's fields laid over them (a key the user
/// gives replaces the default's), so a configuration names only what it changes. An unknown
/// field or a wrong type is an error naming the method.
pub fn method_config<C: Serialize + DeserializeOwned>(method: &str, defaults: C, user: Option<&serde_json::Value>) -> Result<C> {
    let bad = |e: serde_json::Error| KdError::InvalidConfig(format!("configuration of method `{method}`: {e}"));
    let Some(user) = user else { return Ok(defaults) };
    // An array would be read positionally into the fields (serde accepts a sequence for a
    // struct): `[4.0, 0.1]` silently meaning a temperature and a weight.
    let Some(u) = user.as_object() else {
        return Err(KdError::InvalidConfig(format!(
            "configuration of method `{method}` must be a table of named fields (`[method_config]` or `{{ temperature = 4.0 }}`), got {}",
            json_kind(user)
        )));
    };
    let mut base = serde_json::to_value(defaults).map_err(bad)?;
    match base.as_object_mut() {
        Some(b) => {
            for (k, v) in u {
                b.insert(k.clone(), v.clone());
            }
        }
        None => base = user.clone(),
    }
    serde_json::from_value(base).map_err(bad)
}

/// The kind of a JSON value in words, for errors.
fn json_kind(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(_) => format!("an array ({v})"),
        serde_json::Value::Object(_) => "a table".into(),
        serde_json::Value::Null => "nothing".into(),
        other => format!("the value {other}"),
    }
}

/// A method without configuration fields: `None` or `{}` only.
pub fn no_config(method: &str, user: Option<&serde_json::Value>) -> Result<serde_json::Value> {
    match user {
        Some(v) if v.as_object().is_none_or(|o| !o.is_empty()) => {
            Err(KdError::InvalidConfig(format!("method `{method}` has no configuration fields, got {v}")))
        }
        _ => Ok(serde_json::json!({})),
    }
}

/// The entry named `method` among `entries`, or an error listing the known names.
pub fn find<'a, S>(entries: &'a [MethodEntry<S>], method: &str) -> Result<&'a MethodEntry<S>> {
    entries.iter().find(|e| e.spec.name == method).ok_or_else(|| {
        let names: Vec<&str> = entries.iter().map(|e| e.spec.name).collect();
        KdError::InvalidConfig(format!("unknown method `{method}`; known: {}", names.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        temperature: f64,
        weight: f64,
    }

    #[test]
    fn a_method_configuration_must_be_a_table() {
        let defaults = || Config { temperature: 4.0, weight: 1.0 };
        let got = method_config("kd", defaults(), Some(&serde_json::json!({ "weight": 2.0 }))).unwrap();
        assert_eq!(got, Config { temperature: 4.0, weight: 2.0 });
        // An array is not read positionally; a number or a string is not a configuration.
        for user in [serde_json::json!([1.0, 2.0]), serde_json::json!(3.0), serde_json::json!("t")] {
            let err = method_config("kd", defaults(), Some(&user)).unwrap_err().to_string();
            assert!(err.contains("configuration of method `kd` must be a table of named fields"), "{err}");
        }
        let err = method_config("kd", defaults(), Some(&serde_json::json!([1.0, 2.0]))).unwrap_err().to_string();
        assert!(err.contains("got an array ([1.0,2.0])"), "{err}");
    }
}
