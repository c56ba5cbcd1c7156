//! One experiment: data, teacher, student, method, recipe, backend. Shared by `bench` and
//! `train --config`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use kd::core::burn::tensor::Device;
use kd::core::checkpoint::Checkpoint;
use kd::core::rng::hash_key;
use kd::core::train::{load_module, module_bytes};
use kd::data::DatasetSplits;
use kd::experiment::Experiment;
use kd::prelude::*;

use crate::report::{BackendTag, Record, write_results};

#[derive(Args)]
pub struct TrainArgs {
    /// The experiment file.
    #[arg(long)]
    config: PathBuf,
    /// Output folder for results and checkpoints.
    #[arg(long, default_value = "target/kd-train")]
    out: PathBuf,
    /// Override the backend of the file.
    #[arg(long)]
    backend: Option<String>,
    /// Resume from the checkpoints in the output folder.
    #[arg(long)]
    resume: bool,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let mut exp = Experiment::load(&args.config)?;
    if let Some(b) = args.backend {
        exp.backend = b;
    }
    let (device, backend) = open_device(&exp.backend)?;
    let data = kd::data::load_dataset(&exp.dataset, &exp.data)?;
    data.print_warnings();
    let method_config = exp.method_config_json()?;
    let mut records = Vec::new();
    for &seed in &exp.seeds {
        let ctx = RunContext { device: device.clone(), backend: backend.clone(), cache_dir: args.out.join("teachers"), progress: true };
        let teacher = match kd::methods::teacher_need(&exp.method)? {
            TeacherNeed::Nothing => None,
            _ => {
                let spec = exp.teacher.as_deref().context("this method needs `teacher = \"...\"` in the experiment file")?;
                let recipe = exp.teacher_train.clone().unwrap_or_else(|| exp.train.clone());
                let (teacher, record) = match &exp.teacher_checkpoint {
                    Some(path) => (load_teacher(spec, &data, path, &device)?, None),
                    None => {
                        let (t, r) = ctx.teacher(&data, spec, &recipe, seed)?;
                        (t, Some(r))
                    }
                };
                if let Some(r) = record {
                    records.push(r);
                }
                Some(teacher)
            }
        };
        let run_dir = args.out.join(format!("{}-{}-seed{seed}", exp.method, sanitize(&exp.student)));
        if args.resume && !run_dir.join("last.ckpt").exists() && !run_dir.exists() {
            eprintln!("resume: {} holds no run yet; starting seed {seed}", run_dir.display());
        }
        let record = ctx.student(
            &data,
            &exp.method,
            method_config.as_ref(),
            &exp.student,
            teacher.as_ref().map(|t| t as &dyn Teacher),
            &data.train,
            &exp.train,
            seed,
            Some(RunFolder { dir: &run_dir, resume: args.resume, run_config: exp.run_config(seed)? }),
        )?;
        let record = Record { warnings: data.warnings.clone(), ..record };
        println!("{}", record.summary_line());
        records.push(record);
    }
    write_results(&args.out, &records)?;
    println!("results written to {}", args.out.display());
    Ok(())
}

/// Opens and probes the device for a backend name.
/// The device of a `--backend` name, checked by a tiny computation, and its tag for records.
/// Says on stderr which device (GPU adapter, processor) was picked.
pub fn open_device(backend: &str) -> Result<(Device, BackendTag)> {
    let device = kd::backend::device(backend)?;
    kd::backend::probe(backend, &device)?;
    let tag = BackendTag { name: backend.to_string(), device: kd::backend::describe(backend, &device) };
    eprintln!("backend {}: {}", tag.name, tag.device);
    Ok((device, tag))
}

pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '+' { c } else { '_' }).collect()
}

fn load_teacher(spec: &str, data: &DatasetSplits, path: &Path, device: &Device) -> Result<FrozenTeacher<AnyModel>> {
    let model = build_model(spec, data, device, 0)?;
    let model = kd::core::train::load_checkpoint_model(model, path).with_context(|| format!("loading teacher {}", path.display()))?;
    Ok(FrozenTeacher::new(model, spec))
}

/// Builds a model on the autodiff device, seeded.
pub fn build_model(spec: &str, data: &DatasetSplits, device: &Device, seed: u64) -> Result<AnyModel> {
    Ok(ModelSpec::parse(spec)?.build_seeded(data.train.input_shape(), data.train.num_classes(), &device.clone().autodiff(), seed)?)
}

/// Where a run keeps its checkpoints, and the configuration they are bound to.
pub struct RunFolder<'a> {
    pub dir: &'a Path,
    pub resume: bool,
    pub run_config: serde_json::Value,
}

/// What every run of a bench or an experiment shares.
pub struct RunContext {
    pub device: Device,
    pub backend: BackendTag,
    pub cache_dir: PathBuf,
    pub progress: bool,
}

impl RunContext {
    fn trainer<'a>(&self, data: &'a DatasetSplits, train: &'a dyn BatchSource, config: &TrainConfig, label: String) -> Trainer<'a> {
        let mut trainer = Trainer::new(config.clone(), train, &data.test, self.device.clone()).with_options(RunOptions {
            progress: self.progress,
            label,
            ..Default::default()
        });
        if let Some(v) = &data.valid {
            trainer = trainer.with_validation(v);
        }
        trainer
    }

    /// A teacher trained with cross-entropy, from the cache when an identical one was trained
    /// before (keyed by data, architecture, recipe, seed and backend).
    pub fn teacher(&self, data: &DatasetSplits, spec: &str, config: &TrainConfig, seed: u64) -> Result<(FrozenTeacher<AnyModel>, Record)> {
        let mut config = config.clone();
        config.seed = seed;
        let key = hash_key(&[
            data.train.fingerprint(),
            hash_str(spec),
            hash_str(&serde_json::to_string(&config)?),
            hash_str(&self.backend.name),
            hash_str(&data.name),
        ]);
        let path = self.cache_dir.join(format!("{}-{}-{key:016x}.ckpt", sanitize(&data.name), sanitize(spec)));
        let model = build_model(spec, data, &self.device, seed)?;
        if path.exists() {
            match Checkpoint::load(&path) {
                Ok(ckpt) => {
                    let record: Record = serde_json::from_value(ckpt.meta["record"].clone())?;
                    let model = load_module(model, ckpt.section("model")?)?;
                    eprintln!("teacher {spec} on {}: reused from {}", data.name, path.display());
                    return Ok((FrozenTeacher::new(model, spec), Record { cached: true, ..record }));
                }
                Err(e) => eprintln!("ignoring unreadable teacher cache {}: {e}", path.display()),
            }
        }
        let started = Instant::now();
        let trainer = self.trainer(data, &data.train, &config, format!("teacher {spec} seed {seed}"));
        let out = kd::methods::train_method("ce", None, &trainer, model, &NoTeacher)?;
        let record = Record::new(&data.name, "teacher", spec, spec, seed, &self.backend, &config, &out, started.elapsed().as_secs_f64());
        let ckpt =
            Checkpoint { meta: serde_json::json!({ "record": record }), sections: vec![("model".into(), module_bytes(&out.student)?)] };
        ckpt.save(&path)?;
        Ok((FrozenTeacher::new(out.student, spec), record))
    }

    /// A student trained with `method`.
    #[allow(clippy::too_many_arguments)]
    pub fn student(
        &self,
        data: &DatasetSplits,
        method: &str,
        method_config: Option<&serde_json::Value>,
        spec: &str,
        teacher: Option<&dyn Teacher>,
        train: &dyn BatchSource,
        config: &TrainConfig,
        seed: u64,
        checkpoints: Option<RunFolder<'_>>,
    ) -> Result<Record> {
        let mut config = config.clone();
        config.seed = seed;
        let model = build_model(spec, data, &self.device, seed)?;
        let mut trainer = self.trainer(data, train, &config, format!("{method} {spec} seed {seed}"));
        if let Some(RunFolder { dir, resume, run_config }) = checkpoints {
            trainer = trainer.with_options(RunOptions {
                run_config: Some(run_config),
                checkpoint_dir: Some(dir.to_path_buf()),
                resume,
                log_file: Some(dir.join("log.jsonl")),
                progress: self.progress,
                label: format!("{method} {spec} seed {seed}"),
                ..Default::default()
            });
        }
        let started = Instant::now();
        let out = match teacher {
            Some(t) => kd::methods::train_method(method, method_config, &trainer, model, t)?,
            None => {
                if kd::methods::teacher_need(method)? != TeacherNeed::Nothing {
                    bail!("method `{method}` needs a teacher");
                }
                kd::methods::train_method(method, method_config, &trainer, model, &NoTeacher)?
            }
        };
        let teacher_name = teacher.map(|t| t.describe()).unwrap_or_else(|| "-".into());
        Ok(Record::new(&data.name, method, &teacher_name, spec, seed, &self.backend, &config, &out, started.elapsed().as_secs_f64()))
    }
}

pub fn hash_str(s: &str) -> u64 {
    hash_key(&s.bytes().map(u64::from).collect::<Vec<_>>())
}
