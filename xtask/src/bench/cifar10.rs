//! The CIFAR-10 suite (`--suites cifar10 --datasets images:DIR`): the papers' regime on real
//! images. One teacher per dataset, trained once and cached; every method that applies on a
//! transfer subset, for every seed; the teacher-assistant chains on TAKD's plain CNNs. What it
//! trains is `configs/bench/cifar10.toml` (`--quick`: `cifar10-quick.toml`; `--preset FILE`: a
//! file of one's own in that format), read strictly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use kd::data::registry::LoadOptions;
use kd::methods::MethodInfo;
use kd::multi_assistant::StoppingConfig;
use kd::prelude::*;
use serde::Deserialize;

use super::files::{self, InputKind, Recipes};
use super::plan::{Planned, per_class_subset, valid_per_class};
use super::{Bench, BenchArgs, methods_for_seed};
use crate::chains::ChainSetup;
use crate::claims::Claim;
use crate::experiment::{hash_str, sanitize};

/// The suite's name, as `--suites` gives it.
pub const NAME: &str = "cifar10";

/// A CIFAR-10 suite file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The seeds of the students and the chains (the teacher trains once, with the first).
    pub seeds: Vec<u64>,
    /// How the folder loads (the experiment files' `[data]`).
    pub data: LoadOptions,
    /// The learning-rate decay, as fractions of every run's epochs.
    pub schedule: ScheduleShape,
    pub teacher: TeacherSize,
    pub students: StudentSize,
    /// How the runs are evaluated.
    pub evaluation: Evaluation,
    /// Method settings that differ from the methods' defaults (`METHOD = { field = value }`).
    #[serde(default)]
    pub methods: BTreeMap<String, toml::Table>,
    pub chains: Chains,
    /// The papers' claims the report tests ([`crate::claims`]).
    #[serde(default)]
    pub claims: Vec<Claim>,
}

/// A multi-step decay whose milestones are fractions of a run: `milestones[i] / of_epochs` of
/// its epochs (mdistiller's 150, 180 and 210 of 240), each decaying the rate by `gamma`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleShape {
    pub milestones: Vec<usize>,
    pub of_epochs: usize,
    pub gamma: f64,
}

impl ScheduleShape {
    /// The schedule of a run of `epochs` epochs: each milestone at the nearest epoch (a
    /// milestone that rounds to 0, or onto the one before it, is dropped).
    pub fn for_epochs(&self, epochs: usize) -> LrSchedule {
        let mut milestones: Vec<usize> = Vec::new();
        for &m in &self.milestones {
            let at = ((m * epochs) as f64 / self.of_epochs as f64).round() as usize;
            if at > 0 && milestones.last() != Some(&at) {
                milestones.push(at);
            }
        }
        LrSchedule::MultiStep { milestones, gamma: self.gamma }
    }
}

/// The teacher: its architecture, epochs and learning-rate decay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherSize {
    pub model: String,
    pub epochs: usize,
    /// How the teacher's rate decays (absent: the suite's `[schedule]`, as every other run).
    #[serde(default)]
    pub decay: TeacherDecay,
}

/// The teacher's learning-rate decay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherDecay {
    /// The suite's `[schedule]` shape.
    #[default]
    Suite,
    /// Cosine annealing to 0 over the teacher's epochs ([`LrSchedule::Cosine`]).
    Cosine,
}

impl TeacherDecay {
    /// `recipe` with this decay.
    fn apply(self, recipe: TrainConfig) -> TrainConfig {
        match self {
            TeacherDecay::Suite => recipe,
            TeacherDecay::Cosine => TrainConfig { schedule: LrSchedule::Cosine { min_lr: 0.0 }, ..recipe },
        }
    }
}

/// The methods' students.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentSize {
    pub model: String,
    pub epochs: usize,
    /// Images per class of the teacher's training split (0: all of it).
    pub per_class: usize,
    /// Augmentation draws per image the teacher cache stores (`--teacher-cache`).
    pub cache_draws: usize,
}

/// How the suite's runs are evaluated: the validation cut applies to the students and the chains'
/// models (the teacher reads the whole validation split), the test setting to every run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// The validation split cut to this many images of each class (absent: all of it).
    #[serde(default)]
    pub valid_per_class: Option<usize>,
    /// Which epochs evaluate the test split (`every_epoch`, `when_selected` or `selected_and_last`).
    pub test: TestEvaluation,
}

/// The teacher-assistant chains.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chains {
    /// Every model of a chain trains on the first this many images of each class of the
    /// training split (0: all of it). Per class, not the first images of the split: a folder's
    /// training files come class by class.
    pub per_class: usize,
    /// The epochs of every stage.
    pub epochs: usize,
    /// The learning rate of the chains' models, teacher included (absent: the recipes').
    #[serde(default)]
    pub lr: Option<f64>,
    /// The chains' teacher, trained once (first seed) on the whole training split, cached and
    /// shared by every seed's chains (absent: every seed's chains train their own on their
    /// subset, with the stages' recipe).
    #[serde(default)]
    pub teacher: Option<ChainTeacher>,
    /// The family and the chains' models.
    pub models: ChainSetup,
}

/// The length and decay of the chains' shared teacher.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainTeacher {
    pub epochs: usize,
    /// As the suite's teacher's (absent: the suite's `[schedule]`).
    #[serde(default)]
    pub decay: TeacherDecay,
}

impl Suite {
    /// Reads and checks a suite file; every error names the file and the field.
    pub fn load(path: &Path, recipes: &Recipes) -> Result<Self> {
        let s: Suite = files::read(path)?;
        let bad = |field: &str, why: String| anyhow::anyhow!("bench file {}: `{field}` {why}", path.display());
        if s.seeds.is_empty() {
            return Err(bad("seeds", "is empty: give at least one".into()));
        }
        if let Some(seed) = kd::experiment::first_repeat(&s.seeds) {
            return Err(bad("seeds", format!("lists {seed} more than once")));
        }
        if s.schedule.of_epochs == 0 || s.schedule.milestones.iter().any(|&m| m == 0 || m >= s.schedule.of_epochs) {
            return Err(bad("schedule", "needs `of_epochs` of at least 1 and milestones inside (0, of_epochs)".into()));
        }
        let chain_teacher = s.chains.teacher.as_ref().map(|t| ("chains.teacher.epochs", t.epochs, s.chain_teacher_recipe(recipes, t)));
        for (field, epochs, recipe) in [
            ("teacher.epochs", s.teacher.epochs, s.teacher_recipe(recipes, s.teacher.epochs)),
            ("students.epochs", s.students.epochs, s.recipe(recipes, s.students.epochs)),
            ("chains.epochs", s.chains.epochs, s.chain_recipe(recipes, s.chains.epochs)),
        ]
        .into_iter()
        .chain(chain_teacher)
        {
            if epochs == 0 {
                return Err(bad(field, "is 0: every run trains at least one epoch".into()));
            }
            let section = if field.starts_with("chains") { "chains.lr" } else { "schedule" };
            recipe.validate().map_err(|e| bad(section, e.to_string()))?;
        }
        for (field, spec) in [("teacher.model", &s.teacher.model), ("students.model", &s.students.model)] {
            ModelSpec::parse(spec).map_err(|e| bad(field, e.to_string()))?;
        }
        if s.evaluation.valid_per_class == Some(0) {
            return Err(bad("evaluation.valid_per_class", "is 0: leave it out to validate on the whole split".into()));
        }
        if !(1..=super::MAX_CACHE_DRAWS).contains(&s.students.cache_draws) {
            return Err(bad("students.cache_draws", format!("is {}: give 1 to {}", s.students.cache_draws, super::MAX_CACHE_DRAWS)));
        }
        s.chains.models.validate(&s.chain_recipe(recipes, s.chains.epochs)).map_err(|e| bad("chains.models", e.to_string()))?;
        files::check_method_settings(&s.methods, "methods").map_err(|(field, why)| bad(&field, why))?;
        crate::claims::check(&s.claims).map_err(|(field, why)| bad(&field, why))?;
        Ok(s)
    }

    /// The recipes' training recipe for a run of `epochs`, with this suite's decay.
    pub fn recipe(&self, recipes: &Recipes, epochs: usize) -> TrainConfig {
        TrainConfig { schedule: self.schedule.for_epochs(epochs), ..recipes.train.with_epochs(epochs) }
    }

    /// The teacher's recipe for a run of `epochs`: the suite's, with the teacher's decay.
    pub fn teacher_recipe(&self, recipes: &Recipes, epochs: usize) -> TrainConfig {
        self.teacher.decay.apply(self.recipe(recipes, epochs))
    }

    /// The recipe of the chains' stages for a run of `epochs`: the suite's, at the chains' rate.
    pub fn chain_recipe(&self, recipes: &Recipes, epochs: usize) -> TrainConfig {
        let mut recipe = self.recipe(recipes, epochs);
        if let Some(lr) = self.chains.lr {
            recipe.optimizer = recipe.optimizer.with_lr(lr);
        }
        recipe
    }

    /// The recipe of the chains' shared teacher.
    pub fn chain_teacher_recipe(&self, recipes: &Recipes, teacher: &ChainTeacher) -> TrainConfig {
        teacher.decay.apply(self.chain_recipe(recipes, teacher.epochs))
    }
}

/// The suite file the arguments choose: `--preset FILE`, `--quick`'s, or the default.
pub fn suite_file(args: &BenchArgs) -> Result<PathBuf> {
    if args.full {
        bail!("--full has no CIFAR-10 variant: the suite's default is its full size (`--quick` for minutes)");
    }
    Ok(match (&args.preset, args.quick) {
        (Some(path), _) => path.clone(),
        (None, true) => files::dir().join("cifar10-quick.toml"),
        (None, false) => files::dir().join("cifar10.toml"),
    })
}

/// An option of the command line this suite has no use for is an error naming it.
fn check_options(args: &BenchArgs) -> Result<()> {
    if args.cache_top_k.is_some() {
        bail!("--cache-top-k is not used by the {NAME} suite: it compares methods on the teacher's full outputs");
    }
    Ok(())
}

/// Loads every dataset of the selection as the suite says, with what runs on it.
pub fn plan(
    args: &BenchArgs,
    recipes: &Recipes,
    suite: &Suite,
    datasets: &[String],
    chosen: Option<&[MethodInfo]>,
) -> Result<Vec<Planned>> {
    check_options(args)?;
    let all = kd::methods::methods()?;
    let mut plan = Vec::new();
    for name in datasets {
        let [_, h, w] = kd::data::registry::dataset_info(name, &LoadOptions::default())?.input_shape;
        if h * w <= 1 {
            bail!("the {NAME} suite trains CNNs on images; {name} is a table (one value per feature)");
        }
        let mut options = suite.data.clone();
        if args.train_limit.is_some() {
            options.train_limit = args.train_limit;
        }
        let data = kd::data::load_dataset(name, &options)?;
        data.print_warnings();
        let classes = data.train.num_classes();
        let methods: Vec<MethodInfo> = match chosen {
            Some(chosen) => chosen.to_vec(),
            None => all.clone(),
        };
        let methods: Vec<MethodInfo> = methods.into_iter().filter(|m| m.applies_to(classes)).collect();
        if methods.is_empty() {
            bail!("no chosen method applies to {name} ({classes} classes)");
        }
        let per_class = args.student_per_class.unwrap_or(suite.students.per_class);
        let student_data = per_class_subset(&data, per_class)?;
        let student_data = valid_per_class(student_data, suite.evaluation.valid_per_class)?;
        let teacher_epochs = args.epochs.unwrap_or(suite.teacher.epochs);
        let student_epochs = args.student_epochs.or(args.epochs).unwrap_or(suite.students.epochs);
        plan.push(Planned {
            data,
            student_data,
            kind: InputKind::Images,
            methods,
            teacher_spec: args.teacher.clone().unwrap_or_else(|| suite.teacher.model.clone()),
            student_spec: args.student.clone().unwrap_or_else(|| suite.students.model.clone()),
            config: suite.teacher_recipe(recipes, teacher_epochs),
            student_config: suite.recipe(recipes, student_epochs),
            options,
            source: name.clone(),
            method_settings: suite.methods.clone(),
            cache_draws: args.cache_draws.unwrap_or(suite.students.cache_draws),
        });
    }
    Ok(plan)
}

/// The suite's teacher of `p`: trained once, with the first seed, on the whole training split
/// (or reopened from the cache), and recorded; with the tag its cached outputs are filed under
/// (a retrained teacher has another key, so never reads a stale cache).
/// With `--teacher-weights` the teacher is loaded from that file instead (one trained on another
/// backend, or `--export-data`'s `teacher.safetensors`).
fn teacher(bench: &mut Bench<'_>, p: &Planned, seeds: &[u64]) -> Result<(FrozenTeacher<AnyModel>, String)> {
    if let Some(weights) = super::teacher_file(bench.args, 1)? {
        let (teacher, r) = bench.ctx.pretrained_teacher(&p.data, &p.teacher_spec, &weights)?;
        println!("{}", r.summary_line());
        bench.records.push(r.with_data(&p.source, &p.options, &p.data));
        return Ok((teacher, super::weights_tag(&weights)?));
    }
    let teacher_seed = seeds[0];
    let teacher_data = p.data.for_run_seed(teacher_seed);
    let key = bench.ctx.teacher_key(&teacher_data, &p.teacher_spec, &p.config, teacher_seed)?;
    let (teacher, r) = bench.ctx.teacher(&teacher_data, &p.teacher_spec, &p.config, teacher_seed)?;
    println!("{}", r.summary_line());
    bench.records.push(r.with_data(&p.source, &p.options, &teacher_data));
    Ok((teacher, format!("teacher{key:016x}")))
}

/// `--export-data DIR`: per dataset, the students' data, validation and test as the suite
/// trains on them (`plan.json` with the recipes and the load options: augmentation and
/// normalisation) and the suite's teacher in PyTorch's layout (`teacher.safetensors`, trained
/// first when the cache does not hold it), for `xtask/pytorch/train_parity.py`.
pub fn export(bench: &mut Bench<'_>, plan: &[Planned], seeds: &[u64], dir: &Path) -> Result<()> {
    for p in plan {
        let (teacher, _) = teacher(bench, p, seeds)?;
        let out = dir.join(sanitize(&p.data.name));
        super::plan::export_plan(&out, p, false)?;
        let weights = out.join("teacher.safetensors");
        kd::models::import::save_safetensors(teacher.model(), &weights)?;
        eprintln!("bench: {} and its teacher written to {}", p.data.name, out.display());
    }
    Ok(())
}

/// Runs the suite: per dataset the teachers (the suite's and the chains', each trained with the
/// first seed, or from the cache: the long trainings come first), then every method for every
/// seed, then the chains (not with `--methods`).
pub fn run(bench: &mut Bench<'_>, plan: &[Planned], suite: &Suite, seeds: &[u64]) -> Result<()> {
    // `--methods` picks methods; the chains are not among them.
    let with_chains = bench.args.methods.is_none();
    let mut chain_teachers = Vec::with_capacity(plan.len());
    for p in plan {
        let loaded = teacher(bench, p, seeds)?;
        let chain_teacher = match &suite.chains.teacher {
            Some(t) if with_chains => Some(chain_teacher(bench, p, suite, t, seeds[0])?),
            _ => None,
        };
        chain_teachers.push(chain_teacher);
        for &seed in seeds {
            methods_for_seed(bench, p, seed, Some(&loaded))?;
        }
    }
    if !with_chains {
        eprintln!("bench {NAME}: --methods given, so the chains do not run");
        return Ok(());
    }
    let chains = &suite.chains;
    let config = suite.chain_recipe(bench.recipes, bench.args.epochs.unwrap_or(chains.epochs));
    let control = bench.args.stop_control_fraction.unwrap_or(StoppingConfig::default().control_batch_fraction);
    for (p, teacher) in plan.iter().zip(chain_teachers) {
        let data = &valid_per_class(per_class_subset(&p.data, chains.per_class)?, suite.evaluation.valid_per_class)?;
        for &seed in seeds {
            // Keyed by the recipe, the models and the teacher too: another suite file starts its own stages.
            let key = hash_str(&format!("{}|{:?}|{teacher:?}", serde_json::to_string(&config)?, chains.models));
            let dir = bench.args.cache.join("chains").join(format!("{}-{NAME}-seed{seed}-{key:08x}", sanitize(&data.name)));
            let run = crate::chains::SeedRun { seed, control_batch_fraction: control, teacher: teacher.as_deref(), dir: &dir };
            let records = crate::chains::run(data, &chains.models, &config, run, &bench.ctx)?;
            bench.record_chains(records)?;
        }
    }
    Ok(())
}

/// The chains' shared teacher of `p`: the family's teacher trained with cross-entropy on the
/// whole training split with `seed` (or reopened from the cache, as the suite's teacher is),
/// recorded, and its checkpoint file for the chains to load.
fn chain_teacher(bench: &mut Bench<'_>, p: &Planned, suite: &Suite, teacher: &ChainTeacher, seed: u64) -> Result<PathBuf> {
    let spec = suite.chains.models.family.model_name(suite.chains.models.teacher)?;
    let recipe = suite.chain_teacher_recipe(bench.recipes, teacher);
    let data = p.data.for_run_seed(seed);
    let (_, r) = bench.ctx.teacher(&data, &spec, &recipe, seed)?;
    println!("{}", r.summary_line());
    bench.records.push(r.with_data(&p.source, &p.options, &data));
    bench.ctx.teacher_file(&data, &spec, &recipe, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decay keeps mdistiller's shape at any length: 150/180/210 of 240 epochs.
    #[test]
    fn the_schedule_keeps_its_shape_at_every_length() {
        let shape = ScheduleShape { milestones: vec![150, 180, 210], of_epochs: 240, gamma: 0.1 };
        let milestones = |epochs| match shape.for_epochs(epochs) {
            LrSchedule::MultiStep { milestones, gamma } => {
                assert_eq!(gamma, 0.1);
                milestones
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(milestones(240), [150, 180, 210]);
        assert_eq!(milestones(30), [19, 23, 26]);
        assert_eq!(milestones(15), [9, 11, 13]);
        // Milestones that round onto one another decay once.
        assert_eq!(milestones(2), [1, 2]);
        assert_eq!(milestones(1), [1]);
    }

    /// The suite's files read and check, and `--quick` runs the machinery small.
    #[test]
    fn the_suite_files_load() {
        let recipes = Recipes::load(&files::dir().join("recipes.toml")).unwrap();
        let full = Suite::load(&files::dir().join("cifar10.toml"), &recipes).unwrap();
        let quick = Suite::load(&files::dir().join("cifar10-quick.toml"), &recipes).unwrap();
        assert!(full.seeds.len() >= 3, "the suite's claims need at least three seeds");
        assert!(quick.students.epochs < full.students.epochs && quick.teacher.epochs < full.teacher.epochs);
        assert_eq!(full.chains.models.family.name(), "plane");
        // The chains distil with the students' KD (mdistiller's), not the DGKD code's default.
        let loss = full.chains.models.loss;
        assert_eq!((loss.temperature, loss.lambda, loss.kl_reduction), (4.0, 0.9, kd::multi_assistant::KlReduction::BatchMean));
    }

    /// The chains' rate applies to the chains' stages and their teacher alone; the chains'
    /// teacher takes its own epochs and decay.
    #[test]
    fn the_chains_rate_and_teacher_apply_to_the_chains_only() {
        let recipes = Recipes::load(&files::dir().join("recipes.toml")).unwrap();
        let mut suite = Suite::load(&files::dir().join("cifar10.toml"), &recipes).unwrap();
        assert_eq!(suite.chains.lr, Some(0.01), "TAKD's rate for its plain CNNs");
        let students = suite.recipe(&recipes, 6);
        let stages = suite.chain_recipe(&recipes, 6);
        assert_eq!((students.optimizer.lr(), stages.optimizer.lr()), (recipes.train.optimizer.lr(), 0.01));
        assert_eq!(TrainConfig { optimizer: students.optimizer.clone(), ..stages.clone() }, students);
        let teacher = ChainTeacher { epochs: 10, decay: TeacherDecay::Cosine };
        let recipe = suite.chain_teacher_recipe(&recipes, &teacher);
        assert_eq!((recipe.epochs, recipe.optimizer.lr(), recipe.schedule), (10, 0.01, LrSchedule::Cosine { min_lr: 0.0 }));
        suite.chains.lr = None;
        assert_eq!(suite.chain_recipe(&recipes, 6), students);

        let chains = |extra: &str| {
            let text = format!(
                "per_class = 1\nepochs = 1\n{extra}\n[models]\nfamily = {{ kind = \"plane\", sizes = [2, 4] }}\nteacher = 4\nstudent = 2\ntakd_assistants = []\ndgkd_assistants = []\n"
            );
            toml::from_str::<Chains>(&text)
        };
        assert!(chains("").unwrap().teacher.is_none());
        let err = chains("[teacher]\nepochs = 2\nwarmup = 1").unwrap_err();
        assert!(err.to_string().contains("warmup"), "{err}");
    }

    /// The teacher's decay changes the teacher's recipe alone; absent, it is the suite's.
    #[test]
    fn the_teacher_decay_applies_to_the_teacher_only() {
        let recipes = Recipes::load(&files::dir().join("recipes.toml")).unwrap();
        let mut suite = Suite::load(&files::dir().join("cifar10-quick.toml"), &recipes).unwrap();
        suite.teacher.decay = TeacherDecay::Suite;
        assert_eq!(suite.teacher_recipe(&recipes, 40).schedule, suite.recipe(&recipes, 40).schedule);
        suite.teacher.decay = TeacherDecay::Cosine;
        let teacher = suite.teacher_recipe(&recipes, 40);
        assert_eq!(teacher.schedule, LrSchedule::Cosine { min_lr: 0.0 });
        assert_eq!(TrainConfig { schedule: suite.recipe(&recipes, 40).schedule, ..teacher.clone() }, suite.recipe(&recipes, 40));
        assert!(matches!(suite.recipe(&recipes, 40).schedule, LrSchedule::MultiStep { .. }));
        let unknown = toml::from_str::<TeacherSize>("model = \"resnet20\"\nepochs = 1\ndecay = \"linear\"").unwrap_err();
        assert!(unknown.to_string().contains("linear"), "{unknown}");
    }
}
