//! Methods by name: what configs, the bench and the tests use to pick a distiller at run time.

use kd_core::{Distiller, KdError, Result, Student, Teacher, TeacherNeed, TrainOutcome, Trainer};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The result of a run, without the method's learnable parts.
pub type MethodOutcome<S> = TrainOutcome<S, ()>;

/// What a method is, for tables and for choosing where it applies.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// The name configs and `--methods` use.
    pub name: &'static str,
    /// What it needs from a teacher.
    pub need: TeacherNeed,
    /// Whether it accepts approximate (top-k) teacher outputs from a cache.
    pub accepts_top_k: bool,
    /// The crate that implements it.
    pub family: &'static str,
    /// Whether it applies to binary tasks only.
    pub binary_only: bool,
    /// Whether its configuration has `warmup_epochs` (a warm-up of the distillation terms
    /// counted in epochs: short schedules scale it down).
    pub has_warmup: bool,
}

const fn info(name: &'static str, need: TeacherNeed, family: &'static str) -> MethodInfo {
    MethodInfo { name, need, accepts_top_k: false, family, binary_only: false, has_warmup: false }
}

const fn warm(m: MethodInfo) -> MethodInfo {
    MethodInfo { has_warmup: true, ..m }
}

/// Every method compiled in, in the order tables list them.
pub fn methods() -> Vec<MethodInfo> {
    #[allow(unused_mut)]
    let mut all: Vec<MethodInfo> = Vec::new();
    #[cfg(feature = "baselines")]
    all.extend([
        info("ce", TeacherNeed::Nothing, "baselines"),
        info("label_smoothing", TeacherNeed::Nothing, "baselines"),
        MethodInfo { accepts_top_k: true, ..info("kd", TeacherNeed::Logits, "baselines") },
        info("kd+ls", TeacherNeed::Logits, "baselines"),
        warm(info("dkd", TeacherNeed::Logits, "baselines")),
        warm(info("dkd+ls", TeacherNeed::Logits, "baselines")),
        info("fitnet", TeacherNeed::LogitsAndFeatures, "baselines"),
        info("fitnet+kd", TeacherNeed::LogitsAndFeatures, "baselines"),
        info("rkd", TeacherNeed::LogitsAndFeatures, "baselines"),
        info("pskd", TeacherNeed::Nothing, "baselines"),
        info("dlb", TeacherNeed::Nothing, "baselines"),
    ]);
    #[cfg(feature = "rld")]
    all.extend([warm(info("rld", TeacherNeed::Logits, "rld")), warm(info("rld+ls", TeacherNeed::Logits, "rld"))]);
    #[cfg(feature = "dckd")]
    all.extend([
        warm(info("dckd", TeacherNeed::Logits, "dckd")),
        warm(info("dckd+fitnet", TeacherNeed::LogitsAndFeatures, "dckd")),
        warm(info("dckd+rkd", TeacherNeed::LogitsAndFeatures, "dckd")),
    ]);
    #[cfg(feature = "toast")]
    all.push(info("toast", TeacherNeed::Nothing, "toast"));
    #[cfg(feature = "debiased")]
    all.extend([
        MethodInfo { binary_only: true, ..info("binary_kd", TeacherNeed::Logits, "debiased") },
        MethodInfo { binary_only: true, ..info("debiased", TeacherNeed::Logits, "debiased") },
    ]);
    all
}

/// The names of [`methods`].
pub fn method_names() -> Vec<&'static str> {
    methods().iter().map(|m| m.name).collect()
}

/// The description of one method.
pub fn method_info(method: &str) -> Result<MethodInfo> {
    methods().into_iter().find(|m| m.name == method).ok_or_else(|| unknown(method))
}

/// Whether the method needs a teacher (so callers can skip training one).
pub fn teacher_need(method: &str) -> Result<TeacherNeed> {
    Ok(method_info(method)?.need)
}

fn unknown(method: &str) -> KdError {
    KdError::InvalidConfig(format!("unknown method `{method}`; known: {}", method_names().join(", ")))
}

fn config<C: Serialize + DeserializeOwned + Default>(method: &str, value: Option<&serde_json::Value>) -> Result<C> {
    merged(method, C::default(), value)
}

/// The method's defaults with the user's fields laid over them (a key the user gives replaces
/// the default's), so a configuration names only what it changes.
fn merged<C: Serialize + DeserializeOwned>(method: &str, defaults: C, value: Option<&serde_json::Value>) -> Result<C> {
    let bad = |e: serde_json::Error| KdError::InvalidConfig(format!("configuration of method `{method}`: {e}"));
    let Some(user) = value else { return Ok(defaults) };
    let mut base = serde_json::to_value(defaults).map_err(bad)?;
    match (base.as_object_mut(), user.as_object()) {
        (Some(b), Some(u)) => {
            for (k, v) in u {
                b.insert(k.clone(), v.clone());
            }
        }
        _ => base = user.clone(),
    }
    serde_json::from_value(base).map_err(bad)
}

fn run<S: Student, D: Distiller>(trainer: &Trainer, student: S, mut distiller: D, teacher: &dyn Teacher) -> Result<MethodOutcome<S>> {
    let out = trainer.fit(student, &mut distiller, teacher)?;
    Ok(TrainOutcome { student: out.student, aux: (), history: out.history, best_epoch: out.best_epoch, finished: out.finished })
}

/// Trains a student with a method whose configuration is already resolved.
type Runner<S> = Box<dyn FnOnce(&Trainer<'_>, S, &dyn Teacher) -> Result<MethodOutcome<S>>>;

/// A method ready to train: its effective configuration (defaults and preset filled in,
/// checked) and what trains with it.
struct Prepared<S> {
    config: serde_json::Value,
    runner: Runner<S>,
}

fn prepared<S: Student, C: Serialize>(
    method: &str,
    config: &C,
    runner: impl FnOnce(&Trainer<'_>, S, &dyn Teacher) -> Result<MethodOutcome<S>> + 'static,
) -> Result<Prepared<S>> {
    let config = serde_json::to_value(config).map_err(|e| KdError::InvalidConfig(format!("configuration of method `{method}`: {e}")))?;
    Ok(Prepared { config, runner: Box::new(runner) })
}

/// A distiller built (so its configuration is checked) and trained when the runner is called.
fn ready<S: Student, C: Serialize, D: Distiller + 'static>(method: &str, config: &C, distiller: D) -> Result<Prepared<S>> {
    prepared(method, config, move |trainer, student, teacher| run(trainer, student, distiller, teacher))
}

/// The de-biased method's configuration: the de-biasing fitted before training, and the loss.
#[cfg(feature = "debiased")]
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
#[serde(default, deny_unknown_fields)]
struct DebiasedMethodConfig {
    debias: kd_debiased::DebiasOptions,
    loss: kd_debiased::DebiasedKdConfig,
}

/// The one place that knows every method: its configuration (defaults, presets) and its
/// distiller.
fn prepare<S: Student>(method: &str, c: Option<&serde_json::Value>) -> Result<Prepared<S>> {
    match method {
        #[cfg(feature = "baselines")]
        "ce" => {
            if let Some(v) = c
                && v.as_object().is_none_or(|o| !o.is_empty())
            {
                return Err(KdError::InvalidConfig(format!("method `ce` has no configuration fields, got {v}")));
            }
            ready(method, &serde_json::json!({}), kd_baselines::CrossEntropy)
        }
        #[cfg(feature = "baselines")]
        "label_smoothing" => {
            let cfg: kd_baselines::LabelSmoothingConfig = config(method, c)?;
            ready(method, &cfg, kd_baselines::LabelSmoothing::new(cfg.clone())?)
        }
        #[cfg(feature = "baselines")]
        "kd" => {
            let cfg: kd_baselines::KdConfig = config(method, c)?;
            ready(method, &cfg, kd_baselines::Kd::new(cfg.clone())?)
        }
        #[cfg(feature = "baselines")]
        "kd+ls" => {
            // LSKD's CIFAR defaults for KD: base temperature 2, KD weight 9, CE 0.1 (docs/methods.md, LSKD).
            let defaults =
                kd_baselines::KdConfig { temperature: 2.0, ce_weight: 0.1, kd_weight: 9.0, logit_stand: Some(Default::default()) };
            let mut cfg: kd_baselines::KdConfig = merged(method, defaults, c)?;
            cfg.logit_stand.get_or_insert_with(Default::default);
            ready(method, &cfg, kd_baselines::Kd::new(cfg.clone())?)
        }
        #[cfg(feature = "baselines")]
        "dkd" => {
            let cfg: kd_baselines::DkdConfig = config(method, c)?;
            ready(method, &cfg, kd_baselines::Dkd::new(cfg.clone())?)
        }
        #[cfg(feature = "baselines")]
        "dkd+ls" => {
            // LSKD's DKD recipe: alpha and beta times 9, temperature 2, CE 1.
            let d = kd_baselines::DkdConfig::default();
            let defaults = kd_baselines::DkdConfig { alpha: d.alpha * 9.0, beta: d.beta * 9.0, temperature: 2.0, ..d };
            let mut cfg: kd_baselines::DkdConfig = merged(method, defaults, c)?;
            cfg.logit_stand.get_or_insert_with(Default::default);
            ready(method, &cfg, kd_baselines::Dkd::new(cfg.clone())?)
        }
        #[cfg(feature = "baselines")]
        "fitnet" => {
            let cfg: kd_baselines::FitNetConfig = config(method, c)?;
            ready(method, &cfg, kd_baselines::FitNet::new(cfg.clone())?)
        }
        #[cfg(feature = "baselines")]
        "fitnet+kd" => {
            // The naive combination: FitNet's hint plus mdistiller's KD weight.
            let defaults = kd_baselines::FitNetConfig { kd_weight: 0.9, ..Default::default() };
            let cfg: kd_baselines::FitNetConfig = merged(method, defaults, c)?;
            ready(method, &cfg, kd_baselines::FitNet::new(cfg.clone())?)
        }
        #[cfg(feature = "baselines")]
        "rkd" => {
            let cfg: kd_baselines::RkdConfig = config(method, c)?;
            ready(method, &cfg, kd_baselines::Rkd::new(cfg.clone())?)
        }
        #[cfg(feature = "baselines")]
        "pskd" => {
            let cfg: kd_baselines::PsKdConfig = config(method, c)?;
            ready(method, &cfg, kd_baselines::PsKd::new(cfg.clone())?)
        }
        #[cfg(feature = "baselines")]
        "dlb" => {
            let cfg: kd_baselines::DlbConfig = config(method, c)?;
            ready(method, &cfg, kd_baselines::Dlb::new(cfg.clone())?)
        }
        #[cfg(feature = "rld")]
        "rld" => {
            let cfg: kd_rld::RldConfig = config(method, c)?;
            ready(method, &cfg, kd_rld::Rld::new(cfg.clone())?)
        }
        #[cfg(feature = "rld")]
        "rld+ls" => {
            // The reference's --logit-stand recipe: alpha, beta times 9, T = T_alpha = 2.
            let mut cfg: kd_rld::RldConfig = merged(method, kd_rld::RldConfig::logit_stand_defaults(), c)?;
            cfg.logit_stand.get_or_insert_with(Default::default);
            ready(method, &cfg, kd_rld::Rld::new(cfg.clone())?)
        }
        #[cfg(feature = "dckd")]
        "dckd" | "dckd+fitnet" | "dckd+rkd" => {
            let companion = match method {
                "dckd+fitnet" => kd_dckd::Companion::fitnet(),
                "dckd+rkd" => kd_dckd::Companion::rkd(),
                _ => kd_dckd::Companion::None,
            };
            let cfg: kd_dckd::DckdConfig = merged(method, kd_dckd::DckdConfig { companion, ..Default::default() }, c)?;
            ready(method, &cfg, kd_dckd::Dckd::new(cfg.clone())?)
        }
        #[cfg(feature = "toast")]
        "toast" => {
            let cfg: kd_toast::ToastConfig = config(method, c)?;
            ready(method, &cfg, kd_toast::Toast::new(cfg.clone())?)
        }
        #[cfg(feature = "debiased")]
        "binary_kd" => {
            let cfg: kd_debiased::BinaryKdConfig = config(method, c)?;
            ready(method, &cfg, kd_debiased::BinaryKd::new(cfg.clone())?)
        }
        #[cfg(feature = "debiased")]
        "debiased" => {
            // The de-biasing is fitted once, before training: temperature on the validation
            // split (held out from training), prior shift on the training split.
            let cfg: DebiasedMethodConfig = config(method, c)?;
            let saved = cfg.clone();
            prepared(method, &saved, move |trainer, student, teacher| {
                let calibration = trainer.valid_split().ok_or_else(|| KdError::Missing {
                    method: "debiased".into(),
                    what: "a validation split to calibrate the teacher on (held out from training)".into(),
                })?;
                let debiaser = kd_debiased::Debiaser::fit(teacher, calibration, trainer.train_split(), cfg.debias, trainer.device())?;
                run(trainer, student, kd_debiased::DebiasedKd::new(debiaser, cfg.loss)?, teacher)
            })
        }
        other => Err(unknown(other)),
    }
}

/// The method's effective configuration: its defaults (and preset) with `method_config` laid
/// over them, checked as training would check it. An unknown field, a value of the wrong type
/// or an impossible value is an error naming it; what is returned is what a run records.
pub fn effective_config(method: &str, method_config: Option<&serde_json::Value>) -> Result<serde_json::Value> {
    Ok(prepare::<kd_models::AnyModel>(method, method_config)?.config)
}

/// Trains `student` with the named method. `method_config` is the method's configuration
/// (its serde fields; `None`: the defaults from the papers).
pub fn train_method<S: Student>(
    method: &str,
    method_config: Option<&serde_json::Value>,
    trainer: &Trainer,
    student: S,
    teacher: &dyn Teacher,
) -> Result<MethodOutcome<S>> {
    let prepared = prepare::<S>(method, method_config)?;
    (prepared.runner)(trainer, student, teacher)
}
