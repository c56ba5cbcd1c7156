//! `cargo xtask throughput`: training images per second of one distillation step (teacher
//! forward, student forward and backward, optimiser step) for each method.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use kd::core::rng::KeyedRng;
use kd::data::{DatasetSplits, InMemoryDataset, Values};
use kd::prelude::*;
use serde::Serialize;

use kd::core::{CacheContent, DrawPool, TeacherCache};

use crate::experiment::{build_model, open_device, sanitize};

#[derive(Args, Debug)]
pub struct ThroughputArgs {
    /// Backend: flex (default), ndarray, wgpu, wgpu-cpu, vulkan.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Setups as TEACHER:STUDENT:CxHxW:CLASSES (default: resnet32x4:resnet8x4:3x32x32:100 and
    /// mlpbn-256-128-64:mlpbn-16-8-8:57x1x1:2, a tabular binary task).
    #[arg(long, value_delimiter = ',')]
    setups: Option<Vec<String>>,
    /// Comma-separated methods (default: every method compiled in).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Comma-separated batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    batches: Vec<usize>,
    /// Timed steps per measurement (after one untimed warm-up epoch of the same length).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Also measure each logits-only method with the teacher's outputs read from a cache
    /// (built once before timing) instead of a live teacher forward.
    #[arg(long)]
    teacher_cache: bool,
    /// Output JSON file.
    #[arg(long, default_value = "target/kd-throughput.json")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Measurement {
    setup: String,
    method: String,
    batch: usize,
    backend: String,
    images_per_second: f64,
    seconds_per_step: f64,
    overhead_vs_kd: Option<f64>,
    teacher_cache: bool,
}

fn synthetic(shape: [usize; 3], classes: usize, n: usize, seed: u64) -> Result<InMemoryDataset> {
    let per: usize = shape.iter().product();
    let mut rng = KeyedRng::new(&[seed, 0x7A]);
    let values: Vec<f32> = (0..n * per).map(|_| rng.unit() as f32 * 2.0 - 1.0).collect();
    let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
    Ok(InMemoryDataset::new("synthetic", Values::F32(Arc::new(values)), labels, shape, classes)?)
}

fn parse_setup(s: &str) -> Result<(String, String, [usize; 3], usize)> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 4 {
        bail!("setup `{s}` is not TEACHER:STUDENT:CxHxW:CLASSES");
    }
    let dims: Vec<usize> = parts[2].split('x').map(str::parse).collect::<std::result::Result<_, _>>()?;
    if dims.len() != 3 {
        bail!("input shape `{}` is not CxHxW", parts[2]);
    }
    Ok((parts[0].into(), parts[1].into(), [dims[0], dims[1], dims[2]], parts[3].parse()?))
}

pub fn run(args: ThroughputArgs) -> Result<()> {
    let device = open_device(&args.backend)?;
    let setups = args
        .setups
        .clone()
        .unwrap_or_else(|| vec!["resnet32x4:resnet8x4:3x32x32:100".into(), "mlpbn-256-128-64:mlpbn-16-8-8:57x1x1:2".into()]);
    let methods: Vec<String> = args.methods.clone().unwrap_or_else(|| kd::methods::method_names().iter().map(|s| s.to_string()).collect());
    let mut rows: Vec<Measurement> = Vec::new();
    println!("| setup | method | batch | img/s | s/step | overhead vs kd |");
    println!("|---|---|---|---|---|---|");
    for setup in &setups {
        let (teacher_spec, student_spec, shape, classes) = parse_setup(setup)?;
        for &batch in &args.batches {
            let train = synthetic(shape, classes, batch * args.steps, 1)?;
            let test = synthetic(shape, classes, batch.min(64), 2)?;
            let data = DatasetSplits { name: "synthetic".into(), train, valid: None, test, warnings: Vec::new() };
            let teacher = FrozenTeacher::new(build_model(&teacher_spec, &data, &device, 1)?, teacher_spec.clone());
            let pool = DrawPool::new(&data.train, 1)?;
            let cache_dir = std::env::temp_dir().join(format!("kd-throughput-{}", std::process::id()));
            let cache = if args.teacher_cache {
                let path = cache_dir.join(format!("{}-{batch}.outputs", sanitize(setup)));
                Some(TeacherCache::open_or_build(&path, &teacher, &pool, CacheContent::FullLogits, batch, &device, false)?)
            } else {
                None
            };
            let first = rows.len();
            let mut runs: Vec<(&String, bool)> = methods.iter().map(|m| (m, false)).collect();
            if cache.is_some() {
                for m in &methods {
                    if kd::methods::teacher_need(m)? == TeacherNeed::Logits {
                        runs.push((m, true));
                    }
                }
            }
            for (method, cached) in runs {
                let config = TrainConfig {
                    epochs: 2,
                    batch_size: batch,
                    optimizer: OptimizerConfig::sgd(0.01),
                    schedule: LrSchedule::Constant,
                    lr_warmup_epochs: 0,
                    seed: 0,
                    drop_last: true,
                    eval_batch_size: batch,
                };
                let train: &dyn BatchSource = if cached { &pool } else { &data.train };
                let trainer = Trainer::new(config, train, &data.test, device.clone());
                let student = build_model(&student_spec, &data, &device, 2)?;
                let live: &dyn Teacher = &teacher;
                let source: &dyn Teacher = match (&cache, cached) {
                    (Some(c), true) => c,
                    _ => live,
                };
                // A method that cannot run on this setup (FitNet's hint layer missing, de-biased
                // KD without a validation split) is reported and skipped.
                let out = match kd::methods::train_method(method, None, &trainer, student, source) {
                    Ok(out) => out,
                    Err(e) => {
                        eprintln!("throughput: {method} skipped on {setup}: {e}");
                        continue;
                    }
                };
                // Epoch 1 warms up (kernel selection, allocation); epoch 2 is timed.
                let seconds = out.history[1].train_seconds / args.steps as f64;
                rows.push(Measurement {
                    setup: setup.clone(),
                    method: method.clone(),
                    batch,
                    backend: args.backend.clone(),
                    images_per_second: batch as f64 / seconds,
                    seconds_per_step: seconds,
                    overhead_vs_kd: None,
                    teacher_cache: cached,
                });
            }
            // Overhead of each method over plain KD on the same setup and batch.
            let kd_time = rows[first..].iter().find(|m| m.method == "kd" && !m.teacher_cache).map(|m| m.seconds_per_step);
            for m in &mut rows[first..] {
                m.overhead_vs_kd = kd_time.map(|k| m.seconds_per_step / k - 1.0);
                println!(
                    "| {} | {}{} | {} | {:.1} | {:.4} | {} |",
                    m.setup,
                    m.method,
                    if m.teacher_cache { " (teacher cache)" } else { "" },
                    m.batch,
                    m.images_per_second,
                    m.seconds_per_step,
                    m.overhead_vs_kd.map(|o| format!("{:+.1}%", 100.0 * o)).unwrap_or_else(|| "-".into())
                );
            }
            std::fs::remove_dir_all(&cache_dir).ok();
        }
    }
    if rows.is_empty() {
        bail!("throughput measured nothing: every method was skipped on every setup (the reasons are printed above)");
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    kd::core::checkpoint::write_atomic(&args.out, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    println!("written to {}", args.out.display());
    Ok(())
}
