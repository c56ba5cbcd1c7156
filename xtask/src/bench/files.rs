//! The bench's policy as data: `configs/bench/recipes.toml` (what trains: the recipe, the
//! architectures by input kind, the warm-up, the scenarios' shapes) and one preset file per
//! size (`quick.toml`, `default.toml`, `full.toml`: datasets, suites, seeds, epochs, sizes).
//!
//! Both are read strictly, as experiment files are: an unknown, missing or mistyped key is an
//! error that names the file and the key, and the values are checked before anything loads.

use std::path::{Path, PathBuf};

use anyhow::Result;
use kd::core::Warmup;
use kd::data::registry::LoadOptions;
use kd::experiment::first_repeat;
use kd::prelude::*;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The folder of the bench's files, `configs/bench/` of the workspace that built this program.
pub fn dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    root.join("configs").join("bench")
}

/// Reads and parses one bench file; an error names the file (and, from the parser, the key).
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = kd::core::files::read_regular_text(path)?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("bench file {}: {e}", path.display()))
}

/// The kinds of input the bench tells apart: each has its architectures and its sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Small images (such as the 8x8 digits): the convolutional pair.
    SmallImages,
    /// Larger images (MNIST, Fashion-MNIST): MLPs.
    Images,
    /// Tables (one value per feature): small MLPs.
    Tables,
}

/// `recipes.toml`: what trains, whatever the preset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipes {
    /// The warm-up of the distillation terms of every method whose configuration has one.
    pub warmup_epochs: Warmup,
    /// The recipe of every run, less its epochs and seed.
    pub train: Recipe,
    /// Small images: which inputs count as such, and their architectures.
    pub small_images: SmallImages,
    /// The architectures on larger images.
    pub images: Models,
    /// The architectures on tables.
    pub tables: Models,
    /// The biased-teacher scenario.
    pub biased_teacher: BiasedTeacher,
    /// The backbones suite.
    pub backbones: Backbones,
    /// The chains suite's models.
    pub chains: crate::chains::ChainSetup,
    /// Method settings that differ from the methods' defaults, by input kind.
    #[serde(default)]
    pub methods: MethodSettings,
}

/// Per input kind, the settings of some methods that differ from their defaults (the reference
/// code's CIFAR values), merged over those defaults: `method name -> { field = value }`. A field
/// the method does not have is an error when the method is prepared.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSettings {
    #[serde(default)]
    pub small_images: std::collections::BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub images: std::collections::BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub tables: std::collections::BTreeMap<String, toml::Table>,
}

impl MethodSettings {
    /// The settings of every method with some on inputs of `kind`.
    pub fn of(&self, kind: InputKind) -> &std::collections::BTreeMap<String, toml::Table> {
        match kind {
            InputKind::SmallImages => &self.small_images,
            InputKind::Images => &self.images,
            InputKind::Tables => &self.tables,
        }
    }
}

/// The experiment files' `[train]` recipe without `epochs` (each preset gives them per role)
/// and `seed` (each run has its own); the fields mean what [`TrainConfig`]'s do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: LrSchedule,
    pub lr_warmup_epochs: usize,
    pub drop_last: bool,
    pub eval_batch_size: usize,
}

impl Recipe {
    /// The recipe of a run of `epochs` epochs.
    pub fn with_epochs(&self, epochs: usize) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: self.batch_size,
            optimizer: self.optimizer.clone(),
            schedule: self.schedule.clone(),
            lr_warmup_epochs: self.lr_warmup_epochs,
            seed: 0,
            drop_last: self.drop_last,
            eval_batch_size: self.eval_batch_size,
        }
    }
}

/// A teacher and a student architecture (model specs, as `cargo xtask models` lists them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    pub teacher: String,
    pub student: String,
}

/// Which inputs are small images, and the architectures trained on them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmallImages {
    /// The fewest rows and columns of a small image.
    pub min_side: usize,
    /// The most pixels (rows times columns) of a small image.
    pub max_pixels: usize,
    /// The teacher's architecture on small images.
    pub teacher: String,
    /// The students' architecture on small images.
    pub student: String,
}

/// The biased-teacher scenario: a teacher trained on fewer positives than the students see.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BiasedTeacher {
    /// The teacher keeps one of every this many positives (and every negative).
    pub keep_one_positive_in: usize,
    /// The scenario runs where at least this percentage of the training split is positive.
    pub min_positive_percent: usize,
}

/// The backbones suite: self-distillation on each of these student architectures.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backbones {
    /// The student architectures, in the order they run.
    pub models: Vec<String>,
}

impl Recipes {
    /// Reads and checks `recipes.toml`.
    pub fn load(path: &Path) -> Result<Self> {
        let r: Recipes = read(path)?;
        let bad = |field: &str, why: &str| anyhow::anyhow!("bench file {}: `{field}` {why}", path.display());
        r.train.with_epochs(1).validate().map_err(|e| bad("train", &e.to_string()))?;
        for (field, spec) in [
            ("small_images.teacher", &r.small_images.teacher),
            ("small_images.student", &r.small_images.student),
            ("images.teacher", &r.images.teacher),
            ("images.student", &r.images.student),
            ("tables.teacher", &r.tables.teacher),
            ("tables.student", &r.tables.student),
        ]
        .into_iter()
        .chain(r.backbones.models.iter().map(|m| ("backbones.models", m)))
        {
            ModelSpec::parse(spec).map_err(|e| bad(field, &e.to_string()))?;
        }
        if r.small_images.min_side == 0 || r.small_images.max_pixels < r.small_images.min_side * r.small_images.min_side {
            return Err(bad("small_images", "admits no image: `max_pixels` must be at least `min_side` squared, `min_side` at least 1"));
        }
        if r.biased_teacher.keep_one_positive_in < 2 || r.biased_teacher.min_positive_percent > 100 {
            return Err(bad("biased_teacher", "needs `keep_one_positive_in` of at least 2 and `min_positive_percent` of at most 100"));
        }
        if r.backbones.models.is_empty() {
            return Err(bad("backbones.models", "is empty"));
        }
        r.chains.validate(&r.train.with_epochs(1)).map_err(|e| bad("chains", &e.to_string()))?;
        for (kind, table) in [("small_images", &r.methods.small_images), ("images", &r.methods.images), ("tables", &r.methods.tables)] {
            check_method_settings(table, &format!("methods.{kind}")).map_err(|(field, why)| bad(&field, &why))?;
        }
        Ok(r)
    }

    /// The kind of an input of shape `[channels, rows, columns]`.
    pub fn kind(&self, [_, h, w]: [usize; 3]) -> InputKind {
        let s = &self.small_images;
        if h >= s.min_side && w >= s.min_side && h * w <= s.max_pixels {
            InputKind::SmallImages
        } else if h * w > 1 {
            InputKind::Images
        } else {
            InputKind::Tables
        }
    }

    /// The default teacher and student architectures on inputs of `kind`.
    pub fn models(&self, kind: InputKind) -> (&str, &str) {
        match kind {
            InputKind::SmallImages => (&self.small_images.teacher, &self.small_images.student),
            InputKind::Images => (&self.images.teacher, &self.images.student),
            InputKind::Tables => (&self.tables.teacher, &self.tables.student),
        }
    }
}

/// Checks method settings (`METHOD = { field = value }`, under `prefix` in their file): each
/// names a registered method and resolves with it, so that a misspelt or out-of-range setting
/// stops the bench before anything trains. An error is the field's path and what is wrong.
pub fn check_method_settings(settings: &std::collections::BTreeMap<String, toml::Table>, prefix: &str) -> Result<(), (String, String)> {
    let known: Vec<&str> = kd::methods::method_names();
    for (name, table) in settings {
        let field = format!("{prefix}.{name}");
        if !known.contains(&name.as_str()) {
            return Err((field, format!("names no method; known: {}", known.join(", "))));
        }
        let value = serde_json::to_value(table).map_err(|e| (field.clone(), e.to_string()))?;
        kd::methods::prepare::<AnyModel>(name, Some(&value)).map_err(|e| (field.clone(), format!("is not a valid setting: {e}")))?;
    }
    Ok(())
}

/// A preset file: how much the bench trains.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// The datasets, in the order they run.
    pub datasets: Vec<String>,
    /// The suites that run without `--suites`.
    pub suites: Vec<String>,
    /// The seeds of every suite.
    pub seeds: Vec<u64>,
    /// The methods suite on small images, larger images and tables.
    pub small_images: KindSizes,
    pub images: KindSizes,
    pub tables: KindSizes,
    /// The backbones suite.
    pub backbones: BackbonesSizes,
    /// The chains suite.
    pub chains: ChainsSizes,
}

/// The data and epochs of the methods suite on one kind of input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindSizes {
    /// How the datasets load (the experiment files' `[data]`; `--train-limit` overrides).
    #[serde(default)]
    pub data: LoadOptions,
    /// The teachers' epochs.
    pub teacher_epochs: usize,
    /// The students' epochs.
    pub student_epochs: usize,
    /// The students train on this many samples per class of the teacher's training split
    /// (absent: on all of it).
    #[serde(default)]
    pub student_per_class: Option<usize>,
    /// Methods this preset leaves out on this kind of input (for time; `--methods` still runs
    /// them). Each must be a registered method.
    #[serde(default)]
    pub skip_methods: Vec<String>,
}

/// The size of the backbones suite.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackbonesSizes {
    /// The epochs of every run (`--student-epochs`, else `--epochs`, overrides).
    pub epochs: usize,
    /// Every seed of the preset (false: the first only, unless `--seeds` lists them).
    pub all_seeds: bool,
}

/// The size of the chains suite.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainsSizes {
    /// Every model of a chain trains on this many first samples of the training split
    /// (absent: all of it).
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// The epochs of every stage.
    pub epochs: usize,
}

impl Preset {
    /// Reads and checks a preset file; `suites` are the suites the bench knows.
    pub fn load(path: &Path, suites: &[&str]) -> Result<Self> {
        let p: Preset = read(path)?;
        let bad = |field: &str, why: String| anyhow::anyhow!("bench file {}: `{field}` {why}", path.display());
        for (field, empty) in [("datasets", p.datasets.is_empty()), ("seeds", p.seeds.is_empty()), ("suites", p.suites.is_empty())] {
            if empty {
                return Err(bad(field, "is empty: give at least one".into()));
            }
        }
        if let Some(s) = first_repeat(&p.seeds) {
            return Err(bad("seeds", format!("lists {s} more than once")));
        }
        if let Some(d) = first_repeat(&p.datasets) {
            return Err(bad("datasets", format!("lists `{d}` more than once")));
        }
        if let Some(s) = p.suites.iter().find(|s| !suites.contains(&s.as_str())) {
            return Err(bad("suites", format!("names unknown suite `{s}`; known: {}", suites.join(", "))));
        }
        let epochs = [
            ("small_images.teacher_epochs", p.small_images.teacher_epochs),
            ("small_images.student_epochs", p.small_images.student_epochs),
            ("images.teacher_epochs", p.images.teacher_epochs),
            ("images.student_epochs", p.images.student_epochs),
            ("tables.teacher_epochs", p.tables.teacher_epochs),
            ("tables.student_epochs", p.tables.student_epochs),
            ("backbones.epochs", p.backbones.epochs),
            ("chains.epochs", p.chains.epochs),
        ];
        if let Some((field, _)) = epochs.iter().find(|(_, n)| *n == 0) {
            return Err(bad(field, "is 0: every run trains at least one epoch".into()));
        }
        let known = kd::methods::method_names();
        for (kind, sizes) in [("small_images", &p.small_images), ("images", &p.images), ("tables", &p.tables)] {
            if let Some(m) = sizes.skip_methods.iter().find(|m| !known.contains(&m.as_str())) {
                return Err(bad(&format!("{kind}.skip_methods"), format!("names no method: `{m}`; known: {}", known.join(", "))));
            }
        }
        if p.tables.student_per_class.is_some() {
            return Err(bad("tables.student_per_class", "is set: on tables the students train on the teacher's data".into()));
        }
        Ok(p)
    }

    /// The sizes of the methods suite on inputs of `kind`.
    pub fn sizes(&self, kind: InputKind) -> &KindSizes {
        match kind {
            InputKind::SmallImages => &self.small_images,
            InputKind::Images => &self.images,
            InputKind::Tables => &self.tables,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files under `configs/bench/` read and check.
    #[test]
    fn the_bench_files_load() {
        Recipes::load(&dir().join("recipes.toml")).unwrap();
        for preset in ["quick", "default", "full"] {
            Preset::load(&dir().join(format!("{preset}.toml")), &crate::bench::SUITES).unwrap();
        }
    }

    /// A misspelt key is an error naming the file and the key.
    #[test]
    fn an_unknown_key_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(super::dir().join("quick.toml")).unwrap().replace("teacher_epochs", "teacher_epoch");
        let path = dir.path().join("typo.toml");
        std::fs::write(&path, text).unwrap();
        let err = Preset::load(&path, &crate::bench::SUITES).unwrap_err().to_string();
        assert!(err.contains("typo.toml") && err.contains("unknown field `teacher_epoch`"), "{err}");
        let text = std::fs::read_to_string(super::dir().join("recipes.toml")).unwrap().replace("numerator = 20", "numerator = 300");
        std::fs::write(&path, text).unwrap();
        let err = Recipes::load(&path).unwrap_err().to_string();
        assert!(err.contains("typo.toml") && err.contains("warmup_epochs") && err.contains("300/240"), "{err}");
    }

    /// A method setting names a registered method and a field it has, with a valid value.
    #[test]
    fn method_settings_are_checked_when_the_recipes_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        let recipes = std::fs::read_to_string(super::dir().join("recipes.toml")).unwrap();
        for (from, to, expected) in [
            ("fitnet = { hint_weight = 1.0 }", "fitnett = { hint_weight = 1.0 }", "methods.tables.fitnett"),
            ("fitnet = { hint_weight = 1.0 }", "fitnet = { hint_wieght = 1.0 }", "hint_wieght"),
            ("fitnet = { hint_weight = 1.0 }", "fitnet = { hint_weight = -1.0 }", "hint_weight"),
        ] {
            assert!(recipes.contains(from), "recipes.toml no longer has `{from}`");
            std::fs::write(&path, recipes.replace(from, to)).unwrap();
            let err = format!("{:#}", Recipes::load(&path).unwrap_err());
            assert!(err.contains("settings.toml") && err.contains(expected), "{err}");
        }
        let r = Recipes::load(&super::dir().join("recipes.toml")).unwrap();
        assert_eq!(r.methods.of(InputKind::Tables).get("fitnet").and_then(|t| t.get("hint_weight")), Some(&toml::Value::Float(1.0)));
        assert!(!r.methods.of(InputKind::Images).contains_key("fitnet"));
    }
}
