//! Experiment files: one run of a method described in TOML (see `configs/`).
//!
//! Parsing is strict: an unknown key anywhere (top level, `[train]`, `[teacher_train]`,
//! `[data]`, the optimiser, the schedule, `[method_config]`) is an error that names it and the
//! known keys, and [`Experiment::validate`] checks what can be checked before any training:
//! seeds (at least one, no repeats), the method's configuration against its defaults, the
//! recipes, and that a method needing a teacher names one.
//!
//! ```
//! let exp = kd::experiment::Experiment::from_toml(r#"
//! method = "kd"
//! dataset = "mnist"
//! teacher = "mlp-64"
//! student = "mlp-16"
//! [train]
//! epochs = 2
//! batch_size = 64
//! optimizer = { kind = "sgd", lr = 0.05 }
//! [method_config]
//! temprature = 1.0
//! "#).unwrap();
//! let err = exp.validate().unwrap_err().to_string();
//! assert!(err.contains("unknown field `temprature`"), "{err}");
//! ```

use std::path::{Path, PathBuf};

use kd_core::registry::Prepared;
use kd_core::{KdError, Result, Student, TeacherNeed, TrainConfig};
use kd_data::registry::LoadOptions;
use serde::{Deserialize, Serialize};

/// An experiment file (TOML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Method name (`ce`, `kd`, ...).
    pub method: String,
    /// Dataset name (`mnist`, `fashion-mnist`, `csv:PATH`, `cifar100:DIR`...).
    pub dataset: String,
    /// Teacher architecture (required by methods that need a teacher, refused by the others).
    #[serde(default)]
    pub teacher: Option<String>,
    /// Student architecture.
    pub student: String,
    /// Backend name.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Seeds to run (at least one, each once).
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// The student's recipe.
    pub train: TrainConfig,
    /// The teacher's recipe when it must be trained (default: the student's).
    #[serde(default)]
    pub teacher_train: Option<TrainConfig>,
    /// A trained teacher to load instead of training one: a PyTorch checkpoint (`.pth`), a
    /// safetensors file, or a checkpoint of this project (a teacher-cache file, a `train` run's
    /// `best.ckpt` or its folder). Relative paths are read from the working directory.
    #[serde(default)]
    pub teacher_weights: Option<PathBuf>,
    /// The key of a PyTorch checkpoint's dict that holds the state dict (default: `model`, then
    /// `state_dict`, whichever the file has, else the top level).
    #[serde(default)]
    pub teacher_key: Option<String>,
    /// Renames of the teacher file's keys, `[regex, replacement]` pairs applied in order.
    #[serde(default)]
    pub teacher_remap: Vec<[String; 2]>,
    /// The method's configuration (its fields; absent: the papers' defaults).
    #[serde(default)]
    pub method_config: Option<toml::Value>,
    /// Data loading options.
    #[serde(default)]
    pub data: LoadOptions,
}

fn default_backend() -> String {
    "flex".into()
}
fn default_seeds() -> Vec<u64> {
    vec![0]
}

impl Experiment {
    /// Parses an experiment from TOML text (syntax and field names; see [`Experiment::validate`]
    /// for the values).
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| KdError::InvalidConfig(format!("experiment file: {e}")))
    }

    /// Reads, parses and validates an experiment file (a regular file only).
    pub fn load(path: &Path) -> Result<Self> {
        let text = kd_core::files::read_regular_text(path)?;
        let exp: Experiment =
            toml::from_str(&text).map_err(|e| KdError::Malformed { path: path.into(), reason: format!("experiment file: {e}") })?;
        exp.validate().map_err(|e| KdError::Malformed { path: path.into(), reason: e.to_string() })?;
        Ok(exp)
    }

    /// The method configuration as JSON (what the method registry reads).
    ///
    /// JSON has no NaN or infinity (serde would write them as `null`, then read "invalid type:
    /// null"): such a value is an error naming its key.
    pub fn method_config_json(&self) -> Result<Option<serde_json::Value>> {
        if let Some(config) = &self.method_config {
            finite_numbers("method_config", config)?;
        }
        self.method_config.as_ref().map(serde_json::to_value).transpose().map_err(|e| KdError::InvalidConfig(format!("method_config: {e}")))
    }

    /// Checks everything that can be checked before loading data or training.
    pub fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() {
            return Err(KdError::InvalidConfig("`seeds` is empty: give at least one seed".into()));
        }
        if let Some(seed) = first_repeat(&self.seeds) {
            return Err(KdError::InvalidConfig(format!(
                "`seeds` lists {seed} more than once: repeated seeds are identical runs, not independent ones"
            )));
        }
        if self.dataset.trim().is_empty() {
            return Err(KdError::InvalidConfig("`dataset` is empty".into()));
        }
        self.train.validate().map_err(|e| KdError::InvalidConfig(format!("[train]: {e}")))?;
        if let Some(t) = &self.teacher_train {
            t.validate().map_err(|e| KdError::InvalidConfig(format!("[teacher_train]: {e}")))?;
        }
        // Resolved once: the configuration checked against the method's defaults, and its need.
        let need = self.prepare::<kd_models::AnyModel>()?.need();
        if self.teacher_weights.is_none() && (self.teacher_key.is_some() || !self.teacher_remap.is_empty()) {
            return Err(KdError::InvalidConfig("`teacher_key` and `teacher_remap` describe `teacher_weights`, which is not set".into()));
        }
        if let Some(path) = &self.teacher_weights {
            if self.teacher_train.is_some() {
                return Err(KdError::InvalidConfig(
                    "`teacher_weights` and `[teacher_train]` are both given: a loaded teacher is not trained; remove one".into(),
                ));
            }
            if need == TeacherNeed::Nothing {
                return Err(KdError::InvalidConfig(format!(
                    "method `{}` uses no teacher, but the file gives `teacher_weights = {:?}`",
                    self.method,
                    path.display().to_string()
                )));
            }
            #[cfg(feature = "import")]
            self.teacher_weights_file().map(|w| w.format()).transpose()?;
            #[cfg(not(feature = "import"))]
            return Err(KdError::InvalidConfig("`teacher_weights` needs the facade's `import` feature".into()));
        }
        match (need, &self.teacher) {
            (TeacherNeed::Nothing, Some(t)) => Err(KdError::InvalidConfig(format!(
                "method `{}` uses no teacher, but the file names teacher `{t}`: remove it (or choose a method that distils from it)",
                self.method
            ))),
            (TeacherNeed::Nothing, None) => Ok(()),
            (_, None) => Err(KdError::InvalidConfig(format!("method `{}` needs `teacher = \"...\"` in the experiment file", self.method))),
            (_, Some(_)) => Ok(()),
        }
    }

    /// Where the teacher's weights come from, when the file gives them.
    #[cfg(feature = "import")]
    pub fn teacher_weights_file(&self) -> Option<kd_models::import::WeightsFile> {
        self.teacher_weights.as_ref().map(|path| kd_models::import::WeightsFile {
            path: path.clone(),
            key: self.teacher_key.clone(),
            remap: self.teacher_remap.iter().map(|[from, to]| (from.clone(), to.clone())).collect(),
        })
    }

    /// The method of the file, resolved once: its effective configuration, its teacher need,
    /// and what trains with it.
    pub fn prepare<S: Student>(&self) -> Result<Prepared<S>> {
        crate::methods::prepare(&self.method, self.method_config_json()?.as_ref())
    }

    /// The whole effective configuration of the run with `seed`, as recorded beside its
    /// checkpoints: `method_config` is the method's effective configuration
    /// ([`Prepared::config`]).
    pub fn run_config(&self, seed: u64, method_config: &serde_json::Value) -> RunConfig {
        let method_config = method_config.clone();
        RunConfig {
            method: self.method.clone(),
            method_config,
            dataset: self.dataset.clone(),
            data: self.data.clone(),
            teacher: self.teacher.clone(),
            teacher_train: self.teacher_train.clone(),
            teacher_weights: self.teacher_weights.clone(),
            teacher_key: self.teacher_key.clone(),
            teacher_remap: self.teacher_remap.clone(),
            student: self.student.clone(),
            backend: self.backend.clone(),
            seed,
            data_files: Vec::new(),
        }
    }
}

/// Every float of `value` (at `path`) is finite, or an error naming the first key that is not.
fn finite_numbers(path: &str, value: &toml::Value) -> Result<()> {
    match value {
        toml::Value::Float(f) if !f.is_finite() => {
            Err(KdError::InvalidConfig(format!("{path} is {f}: every number of a method configuration must be finite")))
        }
        toml::Value::Table(t) => t.iter().try_for_each(|(k, v)| finite_numbers(&format!("{path}.{k}"), v)),
        toml::Value::Array(a) => a.iter().enumerate().try_for_each(|(i, v)| finite_numbers(&format!("{path}[{i}]"), v)),
        _ => Ok(()),
    }
}

/// One seed's run of an experiment file as its checkpoints record it (the `experiment` of
/// `run.json`, [`kd_core::run_files::RunIdentity`]): written and read back through this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The method's name.
    pub method: String,
    /// The method's effective configuration (defaults and preset filled in).
    pub method_config: serde_json::Value,
    /// The dataset name.
    pub dataset: String,
    /// The data options.
    pub data: LoadOptions,
    /// The teacher's network, when the method has one.
    pub teacher: Option<String>,
    /// The teacher's recipe, when it is trained here.
    pub teacher_train: Option<TrainConfig>,
    /// The teacher's weights file, when it is loaded.
    pub teacher_weights: Option<PathBuf>,
    /// The key of the teacher's weights in that file.
    pub teacher_key: Option<String>,
    /// Parameter renames for loading the teacher's weights.
    pub teacher_remap: Vec<[String; 2]>,
    /// The student's network.
    pub student: String,
    /// The backend.
    pub backend: String,
    /// The seed.
    pub seed: u64,
    /// The data files as the run read them (size, time, content hash), so that a resume on
    /// other content is refused naming the file; set by the caller that loaded the data (empty
    /// in runs written before they were recorded).
    #[serde(default)]
    pub data_files: Vec<kd_core::files::FileFingerprint>,
}

impl RunConfig {
    /// As the JSON value the trainer records.
    pub fn to_value(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| KdError::Record(format!("run configuration: {e}")))
    }
}

/// The first value that occurs twice.
pub fn first_repeat<T: PartialEq>(values: &[T]) -> Option<&T> {
    values.iter().enumerate().find(|(i, v)| values[..*i].contains(v)).map(|(_, v)| v)
}
