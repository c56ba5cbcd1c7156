//! `cargo xtask bench`: the main job.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use kd::data::registry::LoadOptions;
use kd::prelude::*;

use kd::core::{CacheContent, DrawPool, TeacherCache};

use crate::experiment::{RunContext, open_device, sanitize};
use crate::report::{Record, markdown, write_results};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The whole default matrix on subsets and few epochs (a few minutes on 2 CPU cores).
    #[arg(long)]
    quick: bool,
    /// Backend: flex (default, CPU), ndarray, wgpu, wgpu-cpu, vulkan.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Comma-separated datasets (default: mnist,fashion-mnist).
    #[arg(long, value_delimiter = ',')]
    datasets: Option<Vec<String>>,
    /// Comma-separated methods (default: every image method compiled in).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Comma-separated seeds (default: 0; --quick: 0).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Epochs of each student run (the teacher trains for the same number).
    #[arg(long)]
    epochs: Option<usize>,
    /// Teacher architecture.
    #[arg(long)]
    teacher: Option<String>,
    /// Student architecture.
    #[arg(long)]
    student: Option<String>,
    /// Use at most this many training samples per dataset.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Output folder.
    #[arg(long, default_value = "target/kd-bench")]
    out: PathBuf,
    /// Teacher cache folder (trained teachers and their stored outputs).
    #[arg(long, default_value = "target/kd-cache/teachers")]
    cache: PathBuf,
    /// Distil from stored teacher outputs (computed once) instead of running the teacher at
    /// every step, for the methods that read only the teacher's logits.
    #[arg(long)]
    teacher_cache: bool,
    /// Augmentation draws stored per sample by the teacher cache (augmented data only).
    #[arg(long, default_value_t = 4)]
    cache_draws: usize,
    /// Store only the top-k teacher probabilities (FKD's marginal smoothing); only methods that
    /// accept approximate outputs (kd) may use it.
    #[arg(long)]
    cache_top_k: Option<usize>,
}

/// The defaults of one preset (no flags, or `--quick`).
struct Preset {
    datasets: Vec<String>,
    train_limit: Option<usize>,
    test_limit: Option<usize>,
    epochs: usize,
    teacher: String,
    student: String,
}

impl Preset {
    fn new(quick: bool) -> Self {
        if quick {
            Preset {
                datasets: vec!["mnist".into(), "fashion-mnist".into()],
                train_limit: Some(4000),
                test_limit: Some(2000),
                epochs: 3,
                teacher: "mlp-512-512".into(),
                student: "mlp-16".into(),
            }
        } else {
            Preset {
                datasets: vec!["mnist".into(), "fashion-mnist".into()],
                train_limit: Some(20000),
                test_limit: None,
                epochs: 10,
                teacher: "mlp-512-512".into(),
                student: "mlp-16".into(),
            }
        }
    }
}

/// The recipe of every bench run: SGD with momentum, cosine schedule.
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

pub fn run(args: BenchArgs) -> Result<()> {
    let started = Instant::now();
    let preset = Preset::new(args.quick);
    let datasets = args.datasets.clone().unwrap_or(preset.datasets);
    let methods: Vec<String> = args.methods.clone().unwrap_or_else(|| kd::methods::method_names().iter().map(|s| s.to_string()).collect());
    for m in &methods {
        kd::methods::teacher_need(m)?;
    }
    let seeds = args.seeds.clone().unwrap_or_else(|| vec![0]);
    if seeds.is_empty() || datasets.is_empty() || methods.is_empty() {
        bail!("--seeds, --datasets and --methods need at least one value each");
    }
    let epochs = args.epochs.unwrap_or(preset.epochs);
    let teacher_spec = args.teacher.clone().unwrap_or(preset.teacher);
    let student_spec = args.student.clone().unwrap_or(preset.student);
    let device = open_device(&args.backend)?;
    let ctx = RunContext { device, backend: args.backend.clone(), cache_dir: args.cache.clone(), progress: true };
    let config = recipe(epochs);

    let total_runs = datasets.len() * seeds.len() * methods.len();
    eprintln!(
        "bench: {} dataset(s) x {} seed(s) x {} method(s) = {total_runs} student runs, {epochs} epochs each, backend {}",
        datasets.len(),
        seeds.len(),
        methods.len(),
        args.backend
    );
    let mut records: Vec<Record> = Vec::new();
    let mut done = 0usize;
    for dataset in &datasets {
        let options = LoadOptions {
            train_limit: args.train_limit.or(preset.train_limit),
            test_limit: preset.test_limit,
            ..Default::default()
        };
        let data = kd::data::load_dataset(dataset, &options)?;
        for &seed in &seeds {
            let needs_teacher = methods.iter().any(|m| kd::methods::teacher_need(m).map(|n| n != TeacherNeed::Nothing).unwrap_or(false));
            let teacher = if needs_teacher {
                let (t, r) = ctx.teacher(&data, &teacher_spec, &config, seed)?;
                println!("{}", r.summary_line());
                records.push(r);
                Some(t)
            } else {
                None
            };
            let pool = DrawPool::new(&data.train, args.cache_draws)?;
            let cache = match (&teacher, args.teacher_cache) {
                (Some(t), true) => {
                    let content = match args.cache_top_k {
                        Some(k) => CacheContent::TopK { k },
                        None => CacheContent::FullLogits,
                    };
                    let path = args.cache.join(format!("{}-{}-seed{seed}.outputs", sanitize(dataset), sanitize(&teacher_spec)));
                    let built = Instant::now();
                    let cache = TeacherCache::open_or_build(&path, t, &pool, content, 500, &ctx.device, true)?;
                    eprintln!(
                        "teacher cache {}: {:.1} MB, ready in {:.1} s",
                        path.display(),
                        cache.stored_bytes() as f64 / 1e6,
                        built.elapsed().as_secs_f64()
                    );
                    Some(cache)
                }
                _ => None,
            };
            for method in &methods {
                let info = kd::methods::method_info(method)?;
                let use_cache = cache.as_ref().filter(|c| info.need == TeacherNeed::Logits && (c.exact() || info.accepts_top_k));
                if cache.as_ref().is_some_and(|c| !c.exact()) && info.need == TeacherNeed::Logits && !info.accepts_top_k {
                    bail!("method `{method}` needs the teacher's full logits; a top-k teacher cache cannot serve it (drop --cache-top-k)");
                }
                let (t, train): (Option<&dyn Teacher>, &dyn BatchSource) = match (info.need, use_cache) {
                    (TeacherNeed::Nothing, _) => (None, &data.train),
                    (_, Some(c)) => (Some(c), &pool),
                    _ => (teacher.as_ref().map(|t| t as &dyn Teacher), &data.train),
                };
                let mut r = ctx.student(&data, method, None, &student_spec, t, train, &config, seed, None)?;
                r.teacher_cache = use_cache.is_some();
                done += 1;
                let elapsed = started.elapsed().as_secs_f64();
                println!("{}   [{done}/{total_runs}, {:.0} s elapsed, ~{:.0} s left]", r.summary_line(), elapsed, elapsed / done as f64 * (total_runs - done) as f64);
                records.push(r);
                write_results(&args.out, &records)?;
            }
        }
    }
    write_results(&args.out, &records)?;
    println!();
    println!("{}", markdown(&records));
    println!("wall time {:.1} s; results in {}", started.elapsed().as_secs_f64(), args.out.display());
    Ok(())
}
