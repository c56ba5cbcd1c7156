//! `cargo xtask bench`: the main job.
//!
//! For every dataset it trains a teacher (or reuses it from the on-disk cache), then the
//! student with every method that applies to the task (multi-class methods on multi-class
//! data, binary methods on two-class data), for every seed, and writes `results.json`,
//! `results.md` and SVG plots.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use kd::core::{CacheContent, DrawPool, TeacherCache};
use kd::data::DatasetSplits;
use kd::data::registry::LoadOptions;
use kd::methods::MethodInfo;
use kd::prelude::*;

use kd::experiment::first_repeat;

use kd::models::import::WeightsFile;
use kd::multi_assistant::StoppingConfig;

use crate::experiment::{ModelFileFlags, RunContext, hash_str, open_device, sanitize, save_student_run};
use crate::npy::write_npy;
use crate::report::{Record, markdown, write_results, write_results_with};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The whole default matrix on subsets and few epochs (under 3 minutes on 2 CPU cores).
    #[arg(long)]
    quick: bool,
    /// The long run: full training splits, 30 epochs, 3 seeds (hours on a CPU).
    #[arg(long, conflicts_with = "quick")]
    full: bool,
    /// Backend: flex (default, CPU), ndarray, wgpu, wgpu-cpu, vulkan, tch (LibTorch CPU),
    /// tch-cuda[:N]. Each but flex needs its cargo feature (`--features tch`, `wgpu`).
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Comma-separated datasets, bundled names or `csv:PATH` (default: fashion-mnist, the 8x8
    /// digits and the four bundled binary sets; --full adds mnist).
    #[arg(long, value_delimiter = ',')]
    datasets: Option<Vec<String>>,
    /// Comma-separated methods (default: every method that applies to each dataset's task).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Comma-separated seeds.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Epochs of every run (the teachers' and, without --student-epochs, the students'; default:
    /// by preset and task).
    #[arg(long)]
    epochs: Option<usize>,
    /// Epochs of the students (default: 30 on image data, 10 with --quick, 60 with --full; as
    /// the teachers on tabular data).
    #[arg(long)]
    student_epochs: Option<usize>,
    /// On image data the students train on this many samples per class of the teacher's
    /// training split (default 100; 50 with --quick, 500 with --full; 0: the whole split).
    #[arg(long)]
    student_per_class: Option<usize>,
    /// Teacher architecture (default: an MLP sized for the input).
    #[arg(long)]
    teacher: Option<String>,
    #[command(flatten)]
    files: ModelFileFlags,
    /// Student architecture (default: a small MLP with three hidden layers, so that FitNet's
    /// hint layer 2 exists).
    #[arg(long)]
    student: Option<String>,
    /// Use at most this many training samples of each image dataset.
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
    /// Augmentation draws stored per sample by the teacher cache (augmented data only).
    #[arg(long, default_value_t = 4)]
    cache_draws: usize,
    /// Parts of the bench to run: `methods` (every method on every dataset), `biased-teacher`
    /// (the binary methods distilling from a teacher trained on a quarter of the positives),
    /// `backbones` (self-distillation on an MLP, a plain CNN and a ResNet), `chains`
    /// (teacher-assistant chains; not in the default run, for time: `--suites chains`, or
    /// `--full`). With `--methods`, only `methods` runs. Default: every suite but chains
    /// (with `--full`: every suite).
    #[arg(long, value_delimiter = ',')]
    suites: Option<Vec<String>>,
    /// The share of each batch the dynamic-stopping control students of the chains train on
    /// (`StoppingConfig::control_batch_fraction`; 1: whole batches).
    #[arg(long, default_value_t = StoppingConfig::default().control_batch_fraction)]
    stop_control_fraction: f64,
    /// Write every planned dataset as the methods suite trains on it (the teacher's training
    /// split, the students', validation, test: normalised float32 NCHW inputs and int64 labels,
    /// `.npy`) with the recipes and models (`plan.json`) into this folder, and stop before
    /// training. `xtask/pytorch/train_parity.py` trains the same cells in PyTorch from it.
    #[arg(long)]
    export_data: Option<PathBuf>,
    /// Store only the top-k teacher probabilities (FKD's marginal smoothing); only methods that
    /// accept approximate outputs (kd) may use it.
    #[arg(long)]
    cache_top_k: Option<usize>,
}

/// The parts of the bench, in the order they run.
const SUITES: [&str; 4] = ["methods", "biased-teacher", "backbones", "chains"];

/// The methods of the convolutional pair (resnet14 -> resnet8 on the 8x8 digits): the logit
/// methods and the hint methods.
const CONV_PAIR_METHODS: [&str; 8] = ["ce", "kd", "dkd", "rld", "fitnet", "fitnet+kd", "dckd", "dckd+fitnet"];

/// The binary methods the biased-teacher scenario compares (those registered in this build).
const BIASED_TEACHER_METHODS: [&str; 4] = ["ce", "kd", "binary_kd", "debiased"];

/// Of every `keep`-th positive (class 1) sample of the training split, one is kept, and every
/// negative: a teacher trained on it believes positives are `keep` times rarer than they are.
fn fewer_positives(data: &DatasetSplits, keep: usize) -> Result<DatasetSplits> {
    let train = &data.train;
    let mut positives = 0usize;
    let positions: Vec<usize> = (0..train.len())
        .filter(|&i| {
            if train.label(i) != 1 {
                return true;
            }
            positives += 1;
            (positives - 1).is_multiple_of(keep)
        })
        .collect();
    let train = train.subset(&positions, format!("{} (1/{keep} of the positives)", train.name()))?;
    Ok(DatasetSplits { train, ..data.clone() })
}

/// A name for a loaded teacher's cached outputs: changes when the file does (path, size, time).
fn weights_tag(weights: &WeightsFile) -> Result<String> {
    let path = weights.resolved();
    let meta = std::fs::metadata(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok(format!("weights{:016x}", hash_str(&format!("{}|{}|{modified}|{:?}", path.display(), meta.len(), weights.key))))
}

/// The first `per_class` samples of each class of `data`'s training split (in the split's
/// order), the whole validation and test splits: the students' data when they see fewer
/// labelled samples than the teacher (KD's transfer-set setting).
fn per_class_subset(data: &DatasetSplits, per_class: usize) -> Result<DatasetSplits> {
    let train = &data.train;
    let mut taken = vec![0usize; train.num_classes()];
    let positions: Vec<usize> = (0..train.len())
        .filter(|&i| {
            let c = train.label(i);
            taken[c] += 1;
            taken[c] <= per_class
        })
        .collect();
    if let Some(c) = taken.iter().position(|&n| n < per_class) {
        bail!("{}: class {c} has {} training samples, fewer than the {per_class} per class asked for the students", data.name, taken[c]);
    }
    let train = train.subset(&positions, format!("{} ({per_class} per class)", train.name()))?;
    Ok(DatasetSplits { train, ..data.clone() })
}

/// One dataset of the bench, loaded, with what runs on it.
struct Planned {
    /// The teacher's data.
    data: DatasetSplits,
    /// The students' data: the teacher's, or fewer labelled samples of it.
    student_data: DatasetSplits,
    methods: Vec<MethodInfo>,
    /// The teacher's recipe.
    config: TrainConfig,
    /// The students' recipe.
    student_config: TrainConfig,
    /// How it was loaded: the name given and the options (what a saved student records).
    options: LoadOptions,
    source: String,
}

/// Writes one split's inputs (un-augmented, normalised) and labels as `NAME_x.npy`, `NAME_y.npy`.
fn export_split(dir: &std::path::Path, name: &str, split: &kd::data::InMemoryDataset) -> Result<usize> {
    let all: Vec<usize> = (0..split.len()).collect();
    let batch = split.host_batch(&all, 0, 0)?;
    write_npy(&dir.join(format!("{name}_x.npy")), &batch.shape, &batch.inputs)?;
    let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
    write_npy(&dir.join(format!("{name}_y.npy")), &[labels.len()], &labels)?;
    Ok(split.len())
}

/// The data and recipes of one planned dataset, for a reference implementation to train on.
fn export_plan(dir: &std::path::Path, p: &Planned, teacher: &str, student: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let valid = p.data.valid.as_ref().ok_or_else(|| anyhow::anyhow!("{} has no validation split to export", p.data.name))?;
    let sizes = serde_json::json!({
        "teacher_train": export_split(dir, "teacher_train", &p.data.train)?,
        "student_train": export_split(dir, "student_train", &p.student_data.train)?,
        "valid": export_split(dir, "valid", valid)?,
        "test": export_split(dir, "test", &p.data.test)?,
    });
    let plan = serde_json::json!({
        "dataset": p.data.name,
        "classes": p.data.train.num_classes(),
        "input_shape": p.data.train.input_shape(),
        "teacher": teacher,
        "student": student,
        "teacher_recipe": p.config,
        "student_recipe": p.student_config,
        "kd": kd::methods::effective_config("kd", None)?,
        "sizes": sizes,
        "commit": crate::report::Provenance::new(None).commit,
    });
    kd::core::checkpoint::write_atomic(&dir.join("plan.json"), serde_json::to_string_pretty(&plan)?.as_bytes())?;
    Ok(())
}

/// The defaults of one preset.
struct Preset {
    datasets: Vec<&'static str>,
    /// Training samples of each image dataset (the teacher's split).
    image_train_limit: Option<usize>,
    test_limit: Option<usize>,
    /// The students of image datasets train on this many samples per class of the teacher's
    /// split (`None`: all of it).
    student_per_class: Option<usize>,
    /// Teacher epochs on image data.
    epochs: usize,
    /// Student epochs on image data (small student sets: more passes).
    student_epochs: usize,
    /// Epochs on tabular data (small sets: more passes for the same number of steps).
    tabular_epochs: usize,
    /// Teacher epochs on small images (the convolutional pair; students: `student_epochs`), and
    /// the students' samples per class there.
    conv_teacher_epochs: usize,
    conv_student_per_class: usize,
    /// The chains' training samples (the first of the teacher's split; `None`: all) and epochs
    /// per stage.
    chain_train_limit: Option<usize>,
    chain_epochs: usize,
    seeds: Vec<u64>,
}

impl Preset {
    fn new(args: &BenchArgs) -> Self {
        // MNIST tells what Fashion-MNIST tells at twice the time: in --full only.
        let mut datasets = vec!["fashion-mnist", "digits-8x8", "spambase", "breast-cancer-wisconsin", "german-credit", "isl-default"];
        if args.full {
            datasets.insert(0, "mnist");
        }
        if args.quick {
            Preset {
                datasets,
                image_train_limit: Some(5000),
                test_limit: Some(2000),
                student_per_class: Some(50),
                epochs: 3,
                student_epochs: 10,
                tabular_epochs: 10,
                conv_teacher_epochs: 5,
                conv_student_per_class: 10,
                chain_train_limit: Some(5000),
                chain_epochs: 3,
                seeds: vec![0],
            }
        } else if args.full {
            Preset {
                datasets,
                image_train_limit: None,
                test_limit: None,
                student_per_class: Some(500),
                epochs: 30,
                student_epochs: 60,
                tabular_epochs: 100,
                conv_teacher_epochs: 30,
                conv_student_per_class: 30,
                chain_train_limit: None,
                chain_epochs: 30,
                seeds: vec![0, 1, 2],
            }
        } else {
            Preset {
                datasets,
                image_train_limit: Some(20000),
                test_limit: Some(3000),
                student_per_class: Some(100),
                epochs: 8,
                student_epochs: 30,
                tabular_epochs: 20,
                conv_teacher_epochs: 15,
                conv_student_per_class: 10,
                chain_train_limit: Some(10000),
                chain_epochs: 6,
                seeds: vec![0, 1, 2],
            }
        }
    }
}

/// The recipe of every bench run: SGD with momentum, cosine schedule, batch 64.
fn recipe(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 64,
        optimizer: OptimizerConfig::Sgd { lr: 0.05, momentum: 0.9, nesterov: false, weight_decay: 5e-4 },
        schedule: LrSchedule::Cosine { min_lr: 0.0 },
        lr_warmup_epochs: 0,
        seed: 0,
        drop_last: false,
        eval_batch_size: 500,
    }
}

/// Whether a dataset's inputs are small images (at most 16x16, such as the 8x8 digits), on
/// which the bench distils between convolutional networks (cheap enough on a CPU there).
fn small_images(input_shape: [usize; 3]) -> bool {
    let [_, h, w] = input_shape;
    h >= 8 && w >= 8 && h * w <= 256
}

/// Default architectures: by input kind. A CIFAR ResNet pair on small images (the papers'
/// setting: a CNN teacher, a smaller CNN student); MLPs with BatchNorm on larger images and on
/// tables (without BatchNorm FitNet, RKD and the logit-standardized methods diverge at the
/// bench's learning rate).
fn default_models(data: &DatasetSplits) -> (&'static str, &'static str) {
    let [_, h, w] = data.train.input_shape();
    if small_images(data.train.input_shape()) {
        ("resnet14", "resnet8")
    } else if h * w > 1 {
        ("mlpbn-512-256-128", "mlpbn-32-16-16")
    } else {
        ("mlpbn-256-128-64", "mlpbn-16-8-8")
    }
}

/// The methods that apply to a task of `classes` classes (as each method declares).
fn applicable(methods: &[MethodInfo], classes: usize) -> Vec<MethodInfo> {
    methods.iter().copied().filter(|m| m.applies_to(classes)).collect()
}

pub fn run(args: BenchArgs) -> Result<()> {
    let started = Instant::now();
    let preset = Preset::new(&args);
    let datasets: Vec<String> = args.datasets.clone().unwrap_or_else(|| preset.datasets.iter().map(|s| s.to_string()).collect());
    let chosen: Option<Vec<MethodInfo>> = match &args.methods {
        Some(names) => Some(names.iter().map(|m| kd::methods::method_info(m)).collect::<kd::core::Result<_>>()?),
        None => None,
    };
    let seeds = args.seeds.clone().unwrap_or(preset.seeds.clone());
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
    let suites: Vec<String> = match &args.suites {
        Some(s) => s.clone(),
        None if args.full => SUITES.iter().map(|s| s.to_string()).collect(),
        None => SUITES.iter().filter(|s| **s != "chains").map(|s| s.to_string()).collect(),
    };
    for suite in &suites {
        if !SUITES.contains(&suite.as_str()) {
            bail!("unknown suite `{suite}`; known: {}", SUITES.join(", "));
        }
    }
    let suite = |name: &str| suites.iter().any(|s| s == name) && (name == "methods" || args.methods.is_none());
    if seeds.is_empty() || datasets.is_empty() || chosen.as_ref().is_some_and(|c| c.is_empty()) {
        bail!("--seeds, --datasets and --methods need at least one value each");
    }
    let (device, backend) = open_device(&args.backend)?;
    let ctx = RunContext { device, backend, cache_dir: args.cache.clone(), progress: true };

    // Load everything first: bad names fail before any training, and the plan is known.
    let mut plan = Vec::new();
    for name in &datasets {
        let info = kd::data::registry::dataset_info(name, &LoadOptions::default())?;
        let image = info.input_shape[1] * info.input_shape[2] > 1;
        // Small images (the 8x8 digits) hold the convolutional pair: the whole (small) split.
        let small = small_images(info.input_shape);
        let options = LoadOptions {
            train_limit: if image && !small { args.train_limit.or(preset.image_train_limit) } else { args.train_limit },
            test_limit: if image && !small { preset.test_limit } else { None },
            ..Default::default()
        };
        let data = kd::data::load_dataset(name, &options)?;
        data.print_warnings();
        let all = kd::methods::methods()?;
        // The convolutional pair trains the logit and hint methods only (CNN epochs are slow on
        // a CPU); --methods chooses freely.
        let candidates: Vec<MethodInfo> = match &chosen {
            Some(c) => c.clone(),
            None if small => all.iter().copied().filter(|m| CONV_PAIR_METHODS.contains(&m.name)).collect(),
            None => all,
        };
        let methods = applicable(&candidates, data.train.num_classes());
        if methods.is_empty() {
            eprintln!("bench: no chosen method applies to {name} ({} classes); skipped", data.train.num_classes());
            continue;
        }
        let epochs = args.epochs.unwrap_or(match (image, small) {
            (true, true) => preset.conv_teacher_epochs,
            (true, false) => preset.epochs,
            _ => preset.tabular_epochs,
        });
        let student_epochs = args.student_epochs.or(args.epochs).unwrap_or(if image { preset.student_epochs } else { epochs });
        let per_class = args
            .student_per_class
            .or(if small { Some(preset.conv_student_per_class) } else { preset.student_per_class })
            .filter(|&n| image && n > 0);
        let student_data = match per_class {
            Some(n) => per_class_subset(&data, n)?,
            None => data.clone(),
        };
        plan.push(Planned {
            data,
            student_data,
            methods,
            config: recipe(epochs),
            student_config: recipe(student_epochs),
            options,
            source: name.clone(),
        });
    }
    let pretrained = args.files.teacher_weights.as_ref().map(|path| WeightsFile {
        path: path.clone(),
        key: args.files.teacher_key.clone(),
        remap: Vec::new(),
    });
    if let Some(weights) = &pretrained {
        if plan.len() != 1 {
            bail!("--teacher-weights gives one teacher, for one task: choose its dataset with --datasets (the plan has {})", plan.len());
        }
        weights.format()?;
    }
    if let Some(dir) = &args.export_data {
        for p in &plan {
            let (teacher, student) = default_models(&p.data);
            let teacher = args.teacher.clone().unwrap_or_else(|| teacher.into());
            let student = args.student.clone().unwrap_or_else(|| student.into());
            let out = dir.join(sanitize(&p.data.name));
            export_plan(&out, p, &teacher, &student)?;
            eprintln!("bench: {} written to {}", p.data.name, out.display());
        }
        return Ok(());
    }
    let total_runs: usize = if suite("methods") { plan.iter().map(|p| p.methods.len() * seeds.len()).sum() } else { 0 };
    eprintln!("bench: {} dataset(s), {} seed(s), {total_runs} student runs, backend {}", plan.len(), seeds.len(), args.backend);

    let mut records: Vec<Record> = Vec::new();
    let mut done = 0usize;
    for Planned { data, student_data, methods, config, student_config, options, source } in plan.iter().filter(|_| suite("methods")) {
        let (default_teacher, default_student) = default_models(data);
        let teacher_spec = args.teacher.clone().unwrap_or_else(|| default_teacher.into());
        let student_spec = args.student.clone().unwrap_or_else(|| default_student.into());
        let needs_teacher = methods.iter().any(|m| m.need != TeacherNeed::Nothing);
        // A loaded teacher is the same for every seed: loaded, evaluated and listed once.
        let loaded = match (&pretrained, needs_teacher) {
            (Some(weights), true) => {
                let (t, r) = ctx.pretrained_teacher(data, &teacher_spec, weights)?;
                println!("{}", r.summary_line());
                records.push(r.with_data(source, options, data));
                Some((t, weights_tag(weights)?))
            }
            _ => None,
        };
        for &seed in &seeds {
            // Every seed draws its own augmentations (and trains its own teacher from them).
            let data = &data.for_run_seed(seed);
            let student_data = &student_data.for_run_seed(seed);
            let trained;
            let (teacher, teacher_tag) = match (&loaded, needs_teacher) {
                // The same loaded teacher sees other augmentation draws under another seed.
                (Some((t, tag)), _) if data.train.augmented() => (Some(t), format!("{tag}-seed{seed}")),
                (Some((t, tag)), _) => (Some(t), tag.clone()),
                (None, true) => {
                    let (t, r) = ctx.teacher(data, &teacher_spec, config, seed)?;
                    println!("{}", r.summary_line());
                    records.push(r.with_data(source, options, data));
                    trained = t;
                    (Some(&trained), format!("seed{seed}"))
                }
                (None, false) => (None, String::new()),
            };
            let pool = DrawPool::new(&student_data.train, args.cache_draws)?;
            let cache = match (teacher, args.teacher_cache) {
                (Some(t), true) => {
                    let content = args.cache_top_k.map(|k| CacheContent::TopK { k }).unwrap_or_default();
                    let path = args.cache.join(format!("{}-{}-{teacher_tag}.outputs", sanitize(&data.name), sanitize(&teacher_spec)));
                    let built = Instant::now();
                    let cache = TeacherCache::open_or_build(&path, t, &pool, content, 500, &ctx.device, true)?;
                    eprintln!(
                        "teacher cache {}: {:.1} MB, ready in {:.2} s",
                        path.display(),
                        cache.stored_bytes() as f64 / 1e6,
                        built.elapsed().as_secs_f64()
                    );
                    Some(cache)
                }
                _ => None,
            };
            for info in methods {
                let use_cache = cache.as_ref().filter(|c| info.need == TeacherNeed::Logits && (c.exact() || info.accepts_top_k));
                if cache.as_ref().is_some_and(|c| !c.exact()) && info.need == TeacherNeed::Logits && !info.accepts_top_k {
                    bail!(
                        "method `{}` needs the teacher's full logits; a top-k teacher cache cannot serve it (drop --cache-top-k)",
                        info.name
                    );
                }
                let (t, train): (Option<&dyn Teacher>, &dyn BatchSource) = match (info.need, use_cache) {
                    (TeacherNeed::Nothing, _) => (None, &student_data.train),
                    (_, Some(c)) => (Some(c), &pool),
                    _ => (teacher.map(|t| t as &dyn Teacher), &student_data.train),
                };
                // One method failing (a diverged run) is reported, and the bench goes on.
                // The papers warm the distillation terms up over 20 of 240 epochs; a short bench
                // schedule keeps that proportion (at least one epoch).
                let method_config =
                    info.has_warmup.then(|| serde_json::json!({ "warmup_epochs": (student_config.epochs * 20).div_ceil(240).max(1) }));
                let r =
                    match ctx.student(student_data, info.name, method_config.as_ref(), &student_spec, t, train, student_config, seed, None)
                    {
                        Ok((r, student)) => {
                            if args.files.save_students {
                                let dir = save_student_run(&args.out.join("students"), &r, &student, source, options, student_data)?;
                                eprintln!("student written to {}", dir.display());
                            }
                            r
                        }
                        Err(e) => {
                            let teacher_name = t.map(|t| t.describe()).unwrap_or_else(|| "-".into());
                            Record::failed(
                                &data.name,
                                info.name,
                                &teacher_name,
                                &student_spec,
                                seed,
                                &ctx.backend,
                                student_config,
                                format!("{e:#}"),
                            )
                            .with_method_config(info.name, method_config.as_ref())
                        }
                    };
                let mut r = r.with_data(source, options, student_data);
                r.teacher_cache = use_cache.is_some();
                r.warnings = data.warnings.clone();
                done += 1;
                let elapsed = started.elapsed().as_secs_f64();
                println!(
                    "{}   [{done}/{total_runs}, {elapsed:.0} s elapsed, ~{:.0} s left]",
                    r.summary_line(),
                    elapsed / done as f64 * (total_runs - done) as f64
                );
                records.push(r);
                write_results(&args.out, &records)?;
            }
        }
    }
    // De-biased KD where it has something to correct: the teacher is trained on the training
    // split with 3 of every 4 positives left out, so its prior is shifted; the students train on
    // the whole split and calibrate on the (unshifted) validation split.
    if suite("biased-teacher") {
        let registered = kd::methods::method_names();
        let methods: Vec<&str> = BIASED_TEACHER_METHODS.into_iter().filter(|m| registered.contains(m)).collect();
        // A quarter of the positives of a set that has few (isl-default: 3.3 %) leaves too few
        // to learn from: the scenario runs where at least 10 % of the training split is positive.
        let enough_positives = |p: &&Planned| {
            let train = &p.data.train;
            let positives = (0..train.len()).filter(|&i| train.label(i) == 1).count();
            train.num_classes() == 2 && positives * 10 >= train.len()
        };
        for Planned { data, config, options, source, .. } in plan.iter().filter(enough_positives) {
            let (default_teacher, default_student) = default_models(data);
            let teacher_spec = args.teacher.clone().unwrap_or_else(|| default_teacher.into());
            let student_spec = args.student.clone().unwrap_or_else(|| default_student.into());
            let scenario_name = format!("{} (teacher on 1/4 of the positives)", data.name);
            for &seed in &seeds {
                let seeded = data.for_run_seed(seed);
                let scenario = DatasetSplits { name: scenario_name.clone(), ..seeded };
                let teacher_data = fewer_positives(&scenario, 4)?;
                let (teacher, r) = ctx.teacher(&teacher_data, &teacher_spec, config, seed)?;
                let mut r = r.with_data(source, options, &teacher_data);
                r.teacher = format!("{teacher_spec} on 1/4 of the positives");
                println!("{}", r.summary_line());
                records.push(r);
                for &method in &methods {
                    let t = (method != "ce").then_some(&teacher as &dyn Teacher);
                    let r = match ctx.student(&scenario, method, None, &student_spec, t, &scenario.train, config, seed, None) {
                        Ok((r, _)) => r,
                        Err(e) => Record::failed(
                            &scenario.name,
                            method,
                            &teacher_spec,
                            &student_spec,
                            seed,
                            &ctx.backend,
                            config,
                            format!("{e:#}"),
                        )
                        .with_method_config(method, None),
                    };
                    let r = r.with_data(source, options, &scenario);
                    println!("{}", r.summary_line());
                    records.push(r);
                    write_results(&args.out, &records)?;
                }
            }
        }
    }

    if suite("backbones") {
        // Self-distillation (no teacher) on an MLP, a plain CNN and a ResNet, on the small-image
        // dataset's students' data (10 per class: where a regulariser has room to help; the
        // whole split puts every method at 98-99 %), convolutions being cheap on 8x8 images.
        let image = plan.iter().find(|p| p.data.train.num_classes() > 2 && small_images(p.data.train.input_shape()));
        if let Some(Planned { student_data: sub, options, source, .. }) = image {
            let epochs = if args.quick {
                5
            } else if args.full {
                60
            } else {
                30
            };
            // One seed unless --full or --seeds asks for more: CNN epochs are slow on a CPU.
            let backbone_seeds: Vec<u64> = if args.full || args.seeds.is_some() { seeds.clone() } else { vec![seeds[0]] };
            let sub = DatasetSplits { name: format!("{} (backbones)", sub.name), ..sub.clone() };
            let config = recipe(args.student_epochs.or(args.epochs).unwrap_or(epochs));
            // The methods that need no teacher (CE, and the self-distillation methods).
            let self_distillers: Vec<&str> =
                kd::methods::methods()?.iter().filter(|m| m.need == TeacherNeed::Nothing && m.applies_to(10)).map(|m| m.name).collect();
            for backbone in ["mlp-64-64", "plane2", "resnet8"] {
                for &seed in &backbone_seeds {
                    let sub = &sub.for_run_seed(seed);
                    for method in &self_distillers {
                        let r = match ctx.student(sub, method, None, backbone, None, &sub.train, &config, seed, None) {
                            Ok((r, student)) => {
                                if args.files.save_students {
                                    let dir = save_student_run(&args.out.join("students"), &r, &student, source, options, sub)?;
                                    eprintln!("student written to {}", dir.display());
                                }
                                r
                            }
                            Err(e) => Record::failed(&sub.name, method, "-", backbone, seed, &ctx.backend, &config, format!("{e:#}"))
                                .with_method_config(method, None),
                        };
                        let r = r.with_data(source, options, sub);
                        println!("{}", r.summary_line());
                        records.push(r);
                        write_results(&args.out, &records)?;
                    }
                }
            }
        }
    }

    let mut chain_records = Vec::new();
    let mut chains_md = String::new();
    if suite("chains") {
        let config = recipe(args.epochs.unwrap_or(preset.chain_epochs));
        let config = &config;
        // The MLP family's chains on the larger images (not on the 8x8 digits).
        let chained =
            |p: &&Planned| p.data.train.num_classes() > 2 && p.data.train.input_shape()[1] > 1 && !small_images(p.data.train.input_shape());
        for Planned { data, .. } in plan.iter().filter(chained) {
            // The chains train every model of the family on the first samples of the split.
            let data = &match preset.chain_train_limit.filter(|&n| n < data.train.len()) {
                Some(n) => DatasetSplits {
                    train: data.train.subset(&(0..n).collect::<Vec<_>>(), format!("{} (first {n})", data.train.name()))?,
                    ..data.clone()
                },
                None => data.clone(),
            };
            for &seed in &seeds {
                let dir = args.cache.join("chains").join(format!("{}-seed{seed}-{}", sanitize(&data.name), config.epochs));
                chain_records.extend(crate::chains::run(data, config, seed, args.stop_control_fraction, &ctx.device, &dir)?);
                chains_md = crate::chains::write(&args.out, &chain_records)?;
                write_results_with(&args.out, &records, &chains_md)?;
            }
        }
    }
    write_results_with(&args.out, &records, &chains_md)?;
    crate::plots::write_plots(&args.out, &records)?;
    println!();
    println!("{}{chains_md}", markdown(&records));
    println!("wall time {:.1} s; results, tables and plots in {}", started.elapsed().as_secs_f64(), args.out.display());
    let failed: Vec<&Record> = records.iter().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        let names: Vec<String> = failed.iter().take(5).map(|r| format!("{} {} seed {}", r.dataset, r.method, r.seed)).collect();
        bail!(
            "{} of {} runs failed ({}{}); the tables list them with their errors",
            failed.len(),
            records.len(),
            names.join(", "),
            if failed.len() > names.len() { ", ..." } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        bench: BenchArgs,
    }

    /// Every registered method runs in the quick bench: on some default dataset it applies to.
    #[test]
    fn every_registered_method_is_in_the_quick_bench() {
        let args = Wrapper::parse_from(["bench", "--quick"]).bench;
        let preset = Preset::new(&args);
        let mut planned: Vec<&str> = Vec::new();
        for name in &preset.datasets {
            let classes = kd::data::registry::dataset_info(name, &LoadOptions::default()).unwrap().classes;
            planned.extend(applicable(&kd::methods::methods().unwrap(), classes).iter().map(|m| m.name));
        }
        for name in kd::methods::method_names() {
            assert!(planned.contains(&name), "method `{name}` applies to none of the quick bench's datasets {:?}", preset.datasets);
        }
    }
}
