//! `cargo xtask bench`: the main job.
//!
//! For every dataset it trains a teacher (or reuses it from the on-disk cache), then the
//! student with every method that applies to the task (multi-class methods on multi-class
//! data, binary methods on two-class data), for every seed, and writes `results.json`,
//! `results.md` and SVG plots. What it trains and how much is data: `configs/bench/recipes.toml`
//! and a preset file (`quick.toml`, `default.toml`, `full.toml`), read by [`files`]; the
//! datasets are planned by [`plan`]; each suite is one function here, and every student run
//! goes through [`Bench::student`].

mod cifar10;
mod files;
mod plan;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use kd::core::warmup::CONFIG_FIELD as WARMUP_FIELD;
use kd::core::{CacheContent, DrawPool, TeacherCache};
use kd::data::DatasetSplits;
use kd::experiment::first_repeat;
use kd::methods::{MethodInfo, Suite};
use kd::models::import::WeightsFile;
use kd::multi_assistant::StoppingConfig;
use kd::prelude::*;

use self::files::{InputKind, Preset, Recipes};
use self::plan::{Planned, fewer_positives, first_samples};
use crate::chains::ChainRecord;
use crate::claims::Claim;
use crate::experiment::{ModelFileFlags, RunContext, SHIPPED_TEACHERS, hash_str, open_device, sanitize, save_student_run};
use crate::report::{Record, markdown, write_results_with};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The whole default matrix on subsets and few epochs (a few minutes on 2 CPU cores): the
    /// preset `configs/bench/quick.toml`.
    #[arg(long)]
    quick: bool,
    /// The long run: full training splits, more epochs, 3 seeds, the chains (hours on a CPU):
    /// the preset `configs/bench/full.toml`.
    #[arg(long, conflicts_with = "quick")]
    full: bool,
    /// A preset file of one's own instead of `configs/bench/default.toml` (the format of the
    /// files there; the recipes stay `configs/bench/recipes.toml`).
    #[arg(long, conflicts_with_all = ["quick", "full"])]
    preset: Option<PathBuf>,
    /// Backend: flex (default, CPU), ndarray, wgpu, wgpu-cpu, vulkan, tch (LibTorch CPU),
    /// tch-cuda[:N]. Each but flex needs its cargo feature (`--features tch`, `wgpu`).
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Comma-separated datasets, bundled names or `csv:PATH` (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    datasets: Option<Vec<String>>,
    /// Comma-separated methods (default: every method that applies to each dataset's task).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Comma-separated seeds (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Epochs of every run (the teachers' and, without --student-epochs, the students'; default:
    /// the preset's, by input kind).
    #[arg(long)]
    epochs: Option<usize>,
    /// Epochs of the students (default: the preset's, by input kind).
    #[arg(long)]
    student_epochs: Option<usize>,
    /// On image data the students train on this many samples per class of the teacher's
    /// training split (default: the preset's; 0: the whole split).
    #[arg(long)]
    student_per_class: Option<usize>,
    /// Teacher architecture (default: `configs/bench/recipes.toml`'s, by input kind).
    #[arg(long)]
    teacher: Option<String>,
    #[command(flatten)]
    files: ModelFileFlags,
    /// Student architecture (default: `configs/bench/recipes.toml`'s, by input kind).
    #[arg(long)]
    student: Option<String>,
    /// Use at most this many training samples of each dataset.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Output folder.
    #[arg(long, default_value = "target/kd-bench")]
    out: PathBuf,
    /// Folder of cached teachers and teacher outputs.
    #[arg(long, default_value = "target/kd-cache/teachers")]
    cache: PathBuf,
    /// Distil from stored teacher outputs (computed once) instead of running the teacher at
    /// every step, for the methods that read only the teacher's logits.
    #[arg(long)]
    teacher_cache: bool,
    /// Augmentation draws stored per sample by the teacher cache (augmented data only; default
    /// 4).
    #[arg(long, requires = "teacher_cache")]
    cache_draws: Option<usize>,
    /// Parts of the bench to run: `methods` (every method on every dataset), `biased-teacher`
    /// (the binary methods distilling from a teacher trained on a quarter of the positives),
    /// `backbones` (self-distillation on an MLP, a plain CNN and a ResNet), `chains`
    /// (teacher-assistant chains). With `--methods`, only `methods` runs. Default: the preset's
    /// (every suite but chains; with `--full`, every suite).
    #[arg(long, value_delimiter = ',')]
    suites: Option<Vec<String>>,
    /// The share of each batch the dynamic-stopping control students of the chains train on
    /// (`StoppingConfig::control_batch_fraction`; 1: whole batches; default 0.25).
    #[arg(long)]
    stop_control_fraction: Option<f64>,
    /// Write every planned dataset as the methods suite trains on it (the teacher's training
    /// split, the students', validation, test: normalised float32 NCHW inputs and int64 labels,
    /// `.npy`) with the recipes and models (`plan.json`) into this folder, and stop before
    /// training. `xtask/pytorch/train_parity.py` trains the same cells in PyTorch from it.
    #[arg(long)]
    export_data: Option<PathBuf>,
    /// Store only the top-k teacher probabilities (FKD's marginal smoothing); only methods that
    /// accept approximate outputs (kd) may use it.
    #[arg(long, requires = "teacher_cache")]
    cache_top_k: Option<usize>,
}

/// Augmentation draws per sample of the teacher cache without `--cache-draws`.
const DEFAULT_CACHE_DRAWS: usize = 4;
/// The most augmentation draws per sample `--cache-draws` accepts (the pool holds them all).
const MAX_CACHE_DRAWS: usize = 1024;

impl BenchArgs {
    /// The preset file the arguments choose.
    fn preset_file(&self) -> PathBuf {
        match (&self.preset, self.quick, self.full) {
            (Some(path), _, _) => path.clone(),
            (None, true, _) => files::dir().join("quick.toml"),
            (None, _, true) => files::dir().join("full.toml"),
            (None, false, false) => files::dir().join("default.toml"),
        }
    }
}

/// The parts of the bench a preset runs, in the order they run. The CIFAR-10 suite
/// ([`cifar10::NAME`]) runs alone, from its own file.
pub const SUITES: [&str; 4] = ["methods", "biased-teacher", "backbones", "chains"];

/// What the command line and the preset select.
pub struct Selection {
    /// The datasets, in the order they run.
    pub datasets: Vec<String>,
    /// The methods `--methods` names (`None`: every method that applies).
    pub chosen: Option<Vec<MethodInfo>>,
    /// The seeds of every suite.
    pub seeds: Vec<u64>,
    /// The suites that run.
    suites: Vec<String>,
}

impl Selection {
    /// The command line's choices over the preset's; repeats and unknown suites are errors.
    fn new(args: &BenchArgs, preset: &Preset) -> Result<Self> {
        Self::over(args, &preset.datasets, &preset.seeds, &preset.suites, &SUITES)
    }

    /// The command line's choices over these defaults; `known` are the suites it may name.
    fn over(args: &BenchArgs, datasets: &[String], seeds: &[u64], suites: &[String], known: &[&str]) -> Result<Self> {
        let datasets = args.datasets.clone().unwrap_or_else(|| datasets.to_vec());
        let chosen = match &args.methods {
            Some(names) => Some(names.iter().map(|m| kd::methods::method_info(m)).collect::<kd::core::Result<Vec<_>>>()?),
            None => None,
        };
        let seeds = args.seeds.clone().unwrap_or_else(|| seeds.to_vec());
        // Repeats would be averaged as if they were independent runs.
        if let Some(s) = first_repeat(&seeds) {
            bail!("--seeds lists {s} more than once: a repeated seed is the same run again, not another sample");
        }
        if let Some(d) = first_repeat(&datasets) {
            bail!("--datasets lists `{d}` more than once");
        }
        if let Some(m) = args.methods.as_deref().and_then(first_repeat) {
            bail!("--methods lists `{m}` more than once");
        }
        let suites = args.suites.clone().unwrap_or_else(|| suites.to_vec());
        if let Some(s) = suites.iter().find(|s| !known.contains(&s.as_str())) {
            bail!("unknown suite `{s}`; known: {}, {}", SUITES.join(", "), cifar10::NAME);
        }
        // With --methods, only the methods suite runs (the CIFAR-10 suite's methods are chosen).
        let suites = suites.into_iter().filter(|s| s == "methods" || s == cifar10::NAME || args.methods.is_none()).collect();
        if seeds.is_empty() || datasets.is_empty() || chosen.as_ref().is_some_and(|c| c.is_empty()) {
            bail!("--seeds, --datasets and --methods need at least one value each");
        }
        Ok(Selection { datasets, chosen, seeds, suites })
    }

    /// Whether `suite` runs.
    fn runs(&self, suite: &str) -> bool {
        self.suites.iter().any(|s| s == suite)
    }
}

/// Runs the bench: reads its files, plans every dataset, runs the selected suites, and writes
/// and prints the results (an error at the end when a run failed).
pub fn run(args: BenchArgs) -> Result<()> {
    let started = Instant::now();
    let recipes = Recipes::load(&files::dir().join("recipes.toml"))?;
    if args.suites.as_ref().is_some_and(|s| s.iter().any(|s| s == cifar10::NAME)) {
        return run_cifar10(&args, &recipes, started);
    }
    let preset = Preset::load(&args.preset_file(), &SUITES)?;
    let selection = Selection::new(&args, &preset)?;
    let (device, backend) = open_device(&args.backend)?;
    // Load everything first: bad names fail before any training, and the plan is known.
    check_numbers(&args, &recipes)?;
    let plan = plan::plan(&args, &recipes, &preset, &selection)?;
    if plan.is_empty() {
        bail!("nothing to run: no chosen method applies to any of the datasets ({})", selection.datasets.join(", "));
    }
    check_used(&args, &selection, &plan)?;
    let pretrained = teacher_file(&args, plan.len())?;
    if let Some(dir) = &args.export_data {
        return plan::export(dir, &plan);
    }
    // One writer per output folder: a second bench into it fails here, naming the holder.
    let _lock = kd::core::lock::FolderLock::acquire(&args.out, "bench")?;
    let seeds = &selection.seeds;
    let total_runs = if selection.runs("methods") { plan.iter().map(|p| p.methods.len() * seeds.len()).sum() } else { 0 };
    eprintln!("bench: {} dataset(s), {} seed(s), {total_runs} student runs, backend {}", plan.len(), seeds.len(), args.backend);
    let ctx = RunContext {
        device,
        backend,
        cache_dir: args.cache.clone(),
        progress: true,
        test_evaluation: Default::default(),
        shipped_teachers: SHIPPED_TEACHERS.into(),
    };
    let mut bench = Bench::new(&args, ctx, &recipes, started, total_runs);
    if selection.runs("methods") {
        suite_methods(&mut bench, &plan, seeds, pretrained.as_ref())?;
    }
    if selection.runs("biased-teacher") {
        suite_biased_teacher(&mut bench, &plan, seeds)?;
    }
    if selection.runs("backbones") {
        suite_backbones(&mut bench, &plan, seeds, &preset)?;
    }
    if selection.runs("chains") {
        suite_chains(&mut bench, &plan, seeds, &preset)?;
    }
    bench.finish()
}

/// The CIFAR-10 suite, which runs alone: its file, the datasets the command line names (image
/// folders), every chosen method for every seed, the chains.
fn run_cifar10(args: &BenchArgs, recipes: &Recipes, started: Instant) -> Result<()> {
    if args.suites.as_ref().is_some_and(|s| s.len() > 1) {
        bail!("--suites {}: the {} suite runs alone (it plans image folders the other suites do not)", cifar10::NAME, cifar10::NAME);
    }
    if args.datasets.is_none() {
        bail!("--suites {} needs --datasets images:DIR, a folder of CIFAR-10 class folders (configs/bench/cifar10.toml)", cifar10::NAME);
    }
    let file = cifar10::suite_file(args)?;
    let suite = cifar10::Suite::load(&file, recipes)?;
    let suites = [cifar10::NAME.to_string()];
    let selection = Selection::over(args, &[], &suite.seeds, &suites, &[cifar10::NAME])?;
    check_numbers(args, recipes)?;
    let (device, backend) = open_device(&args.backend)?;
    let plan = cifar10::plan(args, recipes, &suite, &selection.datasets, selection.chosen.as_deref())?;
    teacher_file(args, plan.len())?;
    let seeds = &selection.seeds;
    let total_runs = plan.iter().map(|p| p.methods.len() * seeds.len()).sum();
    let test_evaluation = suite.evaluation.test;
    let ctx = RunContext {
        device,
        backend,
        cache_dir: args.cache.clone(),
        progress: true,
        test_evaluation,
        shipped_teachers: SHIPPED_TEACHERS.into(),
    };
    if let Some(dir) = &args.export_data {
        return cifar10::export(&mut Bench::new(args, ctx, recipes, started, total_runs), &plan, seeds, dir);
    }
    let _lock = kd::core::lock::FolderLock::acquire(&args.out, "bench")?;
    eprintln!(
        "bench {}: {} dataset(s), {} seed(s), {total_runs} student runs, backend {}",
        cifar10::NAME,
        plan.len(),
        seeds.len(),
        args.backend
    );
    let mut bench = Bench { claims: suite.claims.clone(), ..Bench::new(args, ctx, recipes, started, total_runs) };
    cifar10::run(&mut bench, &plan, &suite, seeds)?;
    bench.finish()
}

/// The numbers of the command line, checked before anything loads: each error names its
/// option.
fn check_numbers(args: &BenchArgs, recipes: &Recipes) -> Result<()> {
    for (option, epochs) in [("--epochs", args.epochs), ("--student-epochs", args.student_epochs)] {
        if let Some(e) = epochs {
            recipes.train.with_epochs(e).validate().with_context(|| format!("{option} {e}"))?;
        }
    }
    if let Some(d) = args.cache_draws.filter(|d| !(1..=MAX_CACHE_DRAWS).contains(d)) {
        bail!("--cache-draws {d}: give 1 to {MAX_CACHE_DRAWS} draws per sample");
    }
    if args.cache_top_k == Some(0) {
        bail!("--cache-top-k 0: keep at least one class");
    }
    if let Some(f) = args.stop_control_fraction.filter(|f| !(f.is_finite() && *f > 0.0 && *f <= 1.0)) {
        bail!("--stop-control-fraction {f}: give a share of the batch in (0, 1]");
    }
    Ok(())
}

/// An option that nothing of this bench would read is an error naming it (a silent no-op would
/// let a user believe it applied).
fn check_used(args: &BenchArgs, selection: &Selection, plan: &[Planned]) -> Result<()> {
    let methods_suite = selection.runs("methods");
    let any_teacher = methods_suite && plan.iter().any(|p| p.methods.iter().any(|m| m.need != TeacherNeed::Nothing));
    let any_logits = methods_suite && plan.iter().any(|p| p.methods.iter().any(|m| m.need == TeacherNeed::Logits));
    let biased = selection.runs("biased-teacher") && plan.iter().any(|p| p.data.train.num_classes() == 2);
    let unused = |option: &str, why: &str| -> Result<()> { bail!("{option} is not used by this bench: {why}") };
    if args.files.teacher_weights.is_some() && !any_teacher {
        unused("--teacher-weights", "no method of the methods suite distils from a teacher")?;
    }
    if args.teacher.is_some() && !any_teacher && !biased {
        unused("--teacher", "no run of the selected suites has a teacher")?;
    }
    if args.student.is_some() && !methods_suite && !biased {
        unused("--student", "only the methods and biased-teacher suites train it (the backbones and chains have their own models)")?;
    }
    if args.teacher_cache && !any_logits {
        unused("--teacher-cache", "no method of the methods suite reads the teacher's logits")?;
    }
    if args.student_per_class.is_some() && !plan.iter().any(|p| p.kind != InputKind::Tables) {
        unused("--student-per-class", "it applies to image data, and every dataset of the plan is a table")?;
    }
    if args.stop_control_fraction.is_some() && !selection.runs("chains") {
        unused("--stop-control-fraction", "it applies to the chains suite, which does not run (add `--suites chains`)")?;
    }
    Ok(())
}

/// The teacher file `--teacher-weights` gives (one teacher: the plan must hold one dataset).
fn teacher_file(args: &BenchArgs, planned: usize) -> Result<Option<WeightsFile>> {
    let Some(path) = &args.files.teacher_weights else { return Ok(None) };
    if planned != 1 {
        bail!("--teacher-weights gives one teacher, for one task: choose its dataset with --datasets (the plan has {planned})");
    }
    let weights = WeightsFile { path: path.clone(), key: args.files.teacher_key.clone(), remap: Vec::new() };
    weights.check().context("--teacher-weights")?;
    Ok(Some(weights))
}

/// A name for a loaded teacher's cached outputs: changes when the file does (path, size, time).
fn weights_tag(weights: &WeightsFile) -> Result<String> {
    let path = weights.resolved();
    let meta = std::fs::metadata(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok(format!("weights{:016x}", hash_str(&format!("{}|{}|{modified}|{:?}", path.display(), meta.len(), weights.key))))
}

/// The bench under way: what every suite shares, and what it has recorded.
struct Bench<'a> {
    args: &'a BenchArgs,
    ctx: RunContext,
    recipes: &'a Recipes,
    started: Instant,
    /// The methods suite's student runs, planned and done (for its progress line).
    total_runs: usize,
    done: usize,
    /// Every student run of every suite, done or failed.
    students: usize,
    records: Vec<Record>,
    chains: Vec<ChainRecord>,
    /// The chains' tables, written after the method tables.
    chains_md: String,
    /// The papers' claims the report tests (the suite file's `[[claims]]`).
    claims: Vec<Claim>,
}

/// One student run of a suite.
struct StudentRun<'a> {
    /// The planned dataset it comes from (the source and options its record names).
    planned: &'a Planned,
    /// The data it trains and is evaluated on, and its training batches.
    data: &'a DatasetSplits,
    train: &'a dyn BatchSource,
    method: &'a MethodInfo,
    /// The student's architecture.
    spec: &'a str,
    teacher: Option<&'a dyn Teacher>,
    /// The teacher a failed run's record names.
    teacher_name: &'a str,
    config: &'a TrainConfig,
    seed: u64,
    /// Whether the teacher is a cache of its outputs.
    teacher_cache: bool,
    /// Whether the methods suite's progress line counts it.
    counted: bool,
}

impl<'a> Bench<'a> {
    fn new(args: &'a BenchArgs, ctx: RunContext, recipes: &'a Recipes, started: Instant, total_runs: usize) -> Self {
        Bench {
            args,
            ctx,
            recipes,
            started,
            total_runs,
            done: 0,
            students: 0,
            records: Vec::new(),
            chains: Vec::new(),
            chains_md: String::new(),
            claims: Vec::new(),
        }
    }

    /// What the results add after the method tables: the chains' tables and the claims.
    fn extra_markdown(&self) -> String {
        format!("{}{}", self.chains_md, crate::claims::markdown(&self.claims, &self.records, &self.chains))
    }

    /// Records chain runs and writes the results so far.
    fn record_chains(&mut self, records: Vec<ChainRecord>) -> Result<()> {
        self.chains.extend(records);
        self.chains_md = crate::chains::write(&self.args.out, &self.chains)?;
        write_results_with(&self.args.out, &self.records, &self.extra_markdown())
    }

    /// Trains one student, records it (a failed run with its error: the bench goes on) and
    /// writes the results so far.
    fn student(&mut self, run: StudentRun<'_>) -> Result<()> {
        let name = run.method.name;
        self.students += 1;
        // The recipes' warm-up (a fraction of each schedule) for every method that has one, and
        // the recipes' settings of this method on this kind of input.
        let mut settings = serde_json::Map::new();
        if run.method.has_warmup {
            settings.insert(WARMUP_FIELD.into(), serde_json::json!(self.recipes.warmup_epochs));
        }
        if let Some(table) = run.planned.method_settings.get(name) {
            for (field, value) in table {
                settings.insert(field.clone(), serde_json::to_value(value)?);
            }
        }
        let method_config = (!settings.is_empty()).then_some(serde_json::Value::Object(settings));
        let (source, options) = (&run.planned.source, &run.planned.options);
        // The method resolved once: a configuration that does not resolve is a failed run too.
        let trained = kd::methods::prepare::<AnyModel>(name, method_config.as_ref()).map_err(anyhow::Error::from).and_then(|prepared| {
            self.ctx.prepared_student(run.data, prepared, run.spec, run.teacher, run.train, run.config, run.seed, None)
        });
        let r = match trained {
            Ok((r, student)) => {
                if self.args.files.save_students {
                    let dir = save_student_run(&self.args.out.join("students"), &r, &student, source, options, run.data)?;
                    eprintln!("student written to {}", dir.display());
                }
                r
            }
            Err(e) => {
                Record::failed(&run.data.name, name, run.teacher_name, run.spec, run.seed, &self.ctx.backend, run.config, format!("{e:#}"))
                    .with_method_config(name, method_config.as_ref())
            }
        };
        let mut r = r.with_data(source, options, run.data);
        r.teacher_cache = run.teacher_cache;
        r.warnings = run.data.warnings.clone();
        if run.counted {
            self.done += 1;
            let elapsed = self.started.elapsed().as_secs_f64();
            let left = elapsed / self.done as f64 * (self.total_runs - self.done) as f64;
            println!("{}   [{}/{}, {elapsed:.0} s elapsed, ~{left:.0} s left]", r.summary_line(), self.done, self.total_runs);
        } else {
            println!("{}", r.summary_line());
        }
        self.records.push(r);
        write_results_with(&self.args.out, &self.records, &self.extra_markdown())
    }

    /// Writes the results, tables and plots, prints the tables, and fails if a run failed.
    fn finish(self) -> Result<()> {
        let out = &self.args.out;
        write_results_with(out, &self.records, &self.extra_markdown())?;
        crate::plots::write_plots(out, &self.records)?;
        println!();
        println!("{}{}", markdown(&self.records), self.extra_markdown());
        println!("wall time {:.1} s; results, tables and plots in {}", self.started.elapsed().as_secs_f64(), out.display());
        if self.students == 0 && self.chains.is_empty() {
            bail!("the bench ran nothing: no suite of the selection has a run on its datasets (see the lines above for what was skipped)");
        }
        let failed: Vec<&Record> = self.records.iter().filter(|r| r.error.is_some()).collect();
        if !failed.is_empty() {
            let names: Vec<String> = failed.iter().take(5).map(|r| format!("{} {} seed {}", r.dataset, r.method, r.seed)).collect();
            bail!(
                "{} of {} runs failed ({}{}); the tables list them with their errors",
                failed.len(),
                self.records.len(),
                names.join(", "),
                if failed.len() > names.len() { ", ..." } else { "" }
            );
        }
        Ok(())
    }
}

/// The methods suite: every planned method on every planned dataset, for every seed.
fn suite_methods(bench: &mut Bench<'_>, plan: &[Planned], seeds: &[u64], pretrained: Option<&WeightsFile>) -> Result<()> {
    for p in plan {
        let needs_teacher = p.methods.iter().any(|m| m.need != TeacherNeed::Nothing);
        // A loaded teacher is the same for every seed: loaded, evaluated and listed once.
        let loaded = match pretrained.filter(|_| needs_teacher) {
            Some(weights) => {
                let (t, r) = bench.ctx.pretrained_teacher(&p.data, &p.teacher_spec, weights)?;
                println!("{}", r.summary_line());
                bench.records.push(r.with_data(&p.source, &p.options, &p.data));
                Some((t, weights_tag(weights)?))
            }
            None => None,
        };
        for &seed in seeds {
            methods_for_seed(bench, p, seed, loaded.as_ref())?;
        }
    }
    Ok(())
}

/// The methods suite on one dataset and seed: its teacher (loaded, or trained for the seed),
/// the teacher's stored outputs when asked, and every method.
fn methods_for_seed(bench: &mut Bench<'_>, p: &Planned, seed: u64, loaded: Option<&(FrozenTeacher<AnyModel>, String)>) -> Result<()> {
    // Every seed draws its own augmentations (and trains its own teacher from them).
    let data = &p.data.for_run_seed(seed);
    let student_data = &p.student_data.for_run_seed(seed);
    let trained;
    let (teacher, teacher_tag) = match (loaded, p.methods.iter().any(|m| m.need != TeacherNeed::Nothing)) {
        // The same loaded teacher sees other augmentation draws under another seed.
        (Some((t, tag)), _) if data.train.augmented() => (Some(t), format!("{tag}-seed{seed}")),
        (Some((t, tag)), _) => (Some(t), tag.clone()),
        (None, true) => {
            let (t, r) = bench.ctx.teacher(data, &p.teacher_spec, &p.config, seed)?;
            println!("{}", r.summary_line());
            bench.records.push(r.with_data(&p.source, &p.options, data));
            trained = t;
            (Some(&trained), format!("seed{seed}"))
        }
        (None, false) => (None, String::new()),
    };
    let pool = DrawPool::new(&student_data.train, p.cache_draws)?;
    let cache = match (teacher, bench.args.teacher_cache) {
        (Some(t), true) => Some(teacher_outputs(bench, p, data, t, &teacher_tag, &pool)?),
        _ => None,
    };
    for info in &p.methods {
        let use_cache = cache.as_ref().filter(|c| info.need == TeacherNeed::Logits && (c.exact() || info.accepts_top_k));
        if cache.as_ref().is_some_and(|c| !c.exact()) && info.need == TeacherNeed::Logits && !info.accepts_top_k {
            bail!("method `{}` needs the teacher's full logits; a top-k teacher cache cannot serve it (drop --cache-top-k)", info.name);
        }
        let (t, train): (Option<&dyn Teacher>, &dyn BatchSource) = match (info.need, use_cache) {
            (TeacherNeed::Nothing, _) => (None, &student_data.train),
            (_, Some(c)) => (Some(c), &pool),
            _ => (teacher.map(|t| t as &dyn Teacher), &student_data.train),
        };
        let teacher_name = t.map(|t| t.describe()).unwrap_or_else(|| "-".into());
        bench.student(StudentRun {
            planned: p,
            data: student_data,
            train,
            method: info,
            spec: &p.student_spec,
            teacher: t,
            teacher_name: &teacher_name,
            config: &p.student_config,
            seed,
            teacher_cache: use_cache.is_some(),
            counted: true,
        })?;
    }
    Ok(())
}

/// The teacher's stored outputs on the students' augmentation draws (built once, then reopened).
fn teacher_outputs(
    bench: &Bench<'_>,
    p: &Planned,
    data: &DatasetSplits,
    teacher: &FrozenTeacher<AnyModel>,
    tag: &str,
    pool: &DrawPool<'_>,
) -> Result<TeacherCache> {
    let content = bench.args.cache_top_k.map(|k| CacheContent::TopK { k }).unwrap_or_default();
    // Keyed by the data files' content too: a replaced file never reopens the old outputs.
    let files = hash_str(&serde_json::to_string(&data.files.iter().map(|f| (&f.path, f.size, &f.hash)).collect::<Vec<_>>())?);
    let path = bench.args.cache.join(format!("{}-{}-{tag}-{files:08x}.outputs", sanitize(&data.name), sanitize(&p.teacher_spec)));
    let built = Instant::now();
    let cache = TeacherCache::open_or_build(&path, teacher, pool, content, p.config.eval_batch_size, &bench.ctx.device, true)?;
    eprintln!(
        "teacher cache {}: {:.1} MB, ready in {:.2} s",
        path.display(),
        cache.stored_bytes() as f64 / 1e6,
        built.elapsed().as_secs_f64()
    );
    Ok(cache)
}

/// The biased-teacher suite: de-biased KD where it has something to correct. On each
/// two-class dataset with enough positives the teacher trains with most positives left out, so
/// its prior is shifted; the students train on the whole split and calibrate on the (unshifted)
/// validation split.
fn suite_biased_teacher(bench: &mut Bench<'_>, plan: &[Planned], seeds: &[u64]) -> Result<()> {
    let scenario = &bench.recipes.biased_teacher;
    let keep = scenario.keep_one_positive_in;
    let methods: Vec<MethodInfo> = kd::methods::methods()?.into_iter().filter(|m| m.in_suite(Suite::BiasedTeacher)).collect();
    let enough_positives = |p: &&Planned| {
        let train = &p.data.train;
        let positives = (0..train.len()).filter(|&i| train.label(i) == 1).count();
        train.num_classes() == 2 && positives * 100 >= train.len() * scenario.min_positive_percent
    };
    for p in plan.iter().filter(enough_positives) {
        let scenario_name = format!("{} (teacher on 1/{keep} of the positives)", p.data.name);
        for &seed in seeds {
            let scenario = DatasetSplits { name: scenario_name.clone(), ..p.data.for_run_seed(seed) };
            let teacher_data = fewer_positives(&scenario, keep)?;
            let (teacher, r) = bench.ctx.teacher(&teacher_data, &p.teacher_spec, &p.config, seed)?;
            let mut r = r.with_data(&p.source, &p.options, &teacher_data);
            r.teacher = format!("{} on 1/{keep} of the positives", p.teacher_spec);
            println!("{}", r.summary_line());
            bench.records.push(r);
            for info in &methods {
                bench.student(StudentRun {
                    planned: p,
                    data: &scenario,
                    train: &scenario.train,
                    method: info,
                    spec: &p.student_spec,
                    teacher: (info.need != TeacherNeed::Nothing).then_some(&teacher as &dyn Teacher),
                    teacher_name: &p.teacher_spec,
                    config: &p.config,
                    seed,
                    teacher_cache: false,
                    counted: false,
                })?;
            }
        }
    }
    Ok(())
}

/// The backbones suite: the methods that need no teacher (CE and the self-distillation
/// methods) on each backbone of the recipes, on the small-image dataset's students' data (few
/// per class: where a regulariser has room to help; the whole split puts every method at
/// 98-99 %).
fn suite_backbones(bench: &mut Bench<'_>, plan: &[Planned], seeds: &[u64], preset: &Preset) -> Result<()> {
    let Some(p) = plan.iter().find(|p| p.data.train.num_classes() > 2 && p.kind == InputKind::SmallImages) else { return Ok(()) };
    let sizes = &preset.backbones;
    let seeds = if sizes.all_seeds || bench.args.seeds.is_some() { seeds } else { &seeds[..1] };
    let recipes = bench.recipes;
    let config = recipes.train.with_epochs(bench.args.student_epochs.or(bench.args.epochs).unwrap_or(sizes.epochs));
    let sub = DatasetSplits { name: format!("{} (backbones)", p.student_data.name), ..p.student_data.clone() };
    let classes = sub.train.num_classes();
    let methods: Vec<MethodInfo> =
        kd::methods::methods()?.into_iter().filter(|m| m.need == TeacherNeed::Nothing && m.applies_to(classes)).collect();
    for backbone in &recipes.backbones.models {
        for &seed in seeds {
            let sub = &sub.for_run_seed(seed);
            for info in &methods {
                bench.student(StudentRun {
                    planned: p,
                    data: sub,
                    train: &sub.train,
                    method: info,
                    spec: backbone,
                    teacher: None,
                    teacher_name: "-",
                    config: &config,
                    seed,
                    teacher_cache: false,
                    counted: false,
                })?;
            }
        }
    }
    Ok(())
}

/// The chains suite: the MLP family's teacher-assistant chains on the larger images, every
/// model on the first samples of the training split.
fn suite_chains(bench: &mut Bench<'_>, plan: &[Planned], seeds: &[u64], preset: &Preset) -> Result<()> {
    let config = bench.recipes.train.with_epochs(bench.args.epochs.unwrap_or(preset.chains.epochs));
    for p in plan.iter().filter(|p| p.data.train.num_classes() > 2 && p.kind == InputKind::Images) {
        let data = &first_samples(&p.data, preset.chains.train_limit)?;
        for &seed in seeds {
            let dir = bench.args.cache.join("chains").join(format!("{}-seed{seed}-{}", sanitize(&data.name), config.epochs));
            let control_batch_fraction = bench.args.stop_control_fraction.unwrap_or(StoppingConfig::default().control_batch_fraction);
            let run = crate::chains::SeedRun { seed, control_batch_fraction, teacher: None, dir: &dir };
            let records = crate::chains::run(data, &bench.recipes.chains, &config, run, &bench.ctx)?;
            bench.record_chains(records)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kd::data::registry::{LoadOptions, dataset_info};

    use super::*;

    /// Every registered method runs in the quick bench: on some dataset of its preset it
    /// applies to.
    #[test]
    fn every_registered_method_is_in_the_quick_bench() {
        let preset = Preset::load(&files::dir().join("quick.toml"), &SUITES).unwrap();
        let all = kd::methods::methods().unwrap();
        let mut planned: Vec<&str> = Vec::new();
        for name in &preset.datasets {
            let classes = dataset_info(name, &LoadOptions::default()).unwrap().classes;
            planned.extend(all.iter().filter(|m| m.applies_to(classes)).map(|m| m.name));
        }
        for name in kd::methods::method_names() {
            assert!(planned.contains(&name), "method `{name}` applies to none of the quick bench's datasets {:?}", preset.datasets);
        }
    }
}
