//! One experiment: data, teacher, student, method, recipe, backend, and the model-file flags
//! (`--teacher-weights`, `--save-students`). Shared by `bench` and `train --config`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use kd::core::burn::tensor::Device;
use kd::core::checkpoint::Checkpoint;
use kd::core::evaluate;
use kd::core::rng::hash_key;
use kd::core::train::{load_module, module_bytes};
use kd::data::DatasetSplits;
use kd::data::registry::LoadOptions;
use kd::experiment::{Experiment, RunConfig};
use kd::methods::Prepared;
use kd::models::import::{WeightsFile, load_weights};
use kd::prelude::*;

use crate::model_files::{ModelCard, STUDENT_WEIGHTS, save_student};
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
    #[command(flatten)]
    files: ModelFileFlags,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let mut exp = Experiment::load(&args.config)?;
    if let Some(b) = args.backend {
        exp.backend = b;
    }
    if let Some(path) = args.files.teacher_weights {
        exp.teacher_weights = Some(path);
        exp.teacher_key = args.files.teacher_key;
        exp.teacher_remap.clear();
        if exp.teacher_train.take().is_some() {
            eprintln!("--teacher-weights: the file's [teacher_train] is not used (the teacher is loaded, not trained)");
        }
        exp.validate().with_context(|| format!("{} with --teacher-weights", args.config.display()))?;
    }
    // A teacher file that does not exist fails here, before the data loads or a seed trains
    // (the experiment's own check reads only its name, so that a file can be checked before
    // its weights are downloaded).
    if let Some(weights) = exp.teacher_weights_file() {
        weights.check().context("teacher_weights")?;
    }
    // One writer per output folder: a second `train` into it fails here, naming the holder.
    let _lock = kd::core::lock::FolderLock::acquire(&args.out, "train")?;
    let (device, backend) = open_device(&exp.backend)?;
    let data = kd::data::load_dataset(&exp.dataset, &exp.data)?;
    data.print_warnings();
    let mut records = Vec::new();
    for &seed in &exp.seeds {
        // Each seed draws its own augmentations (crops and flips), not only its own init.
        let data = &data.for_run_seed(seed);
        let ctx = RunContext {
            device: device.clone(),
            backend: backend.clone(),
            cache_dir: args.out.join("teachers"),
            progress: true,
            test_evaluation: TestEvaluation::EveryEpoch,
            shipped_teachers: PathBuf::from(SHIPPED_TEACHERS),
        };
        // The method resolved once per seed: its need, the configuration the run records, the training.
        let prepared = exp.prepare::<AnyModel>()?;
        let run_dir = args.out.join(format!("{}-{}-seed{seed}", exp.method, sanitize(&exp.student)));
        let run_config = bound_to_data(exp.run_config(seed, prepared.config()), data, &run_dir, args.resume)?.to_value()?;
        let teacher = match prepared.need() {
            TeacherNeed::Nothing => None,
            _ => {
                let spec = exp.teacher.as_deref().context("this method needs `teacher = \"...\"` in the experiment file")?;
                let recipe = exp.teacher_train.clone().unwrap_or_else(|| exp.train.clone());
                let (teacher, record) = match exp.teacher_weights_file() {
                    Some(weights) => ctx.pretrained_teacher(data, spec, &weights)?,
                    None => ctx.teacher(data, spec, &recipe, seed)?,
                };
                let record = record.with_data(&exp.dataset, &exp.data, data);
                println!("{}", record.summary_line());
                // A loaded teacher is the same for every seed: one row.
                if record.weights.is_none() || !records.iter().any(|r: &Record| r.method == "teacher") {
                    records.push(record);
                }
                Some(teacher)
            }
        };
        if args.resume && !run_dir.join("last.ckpt").exists() && !run_dir.exists() {
            eprintln!("resume: {} holds no run yet; starting seed {seed}", run_dir.display());
        }
        let (record, student) = ctx.prepared_student(
            data,
            prepared,
            &exp.student,
            teacher.as_ref().map(|t| t as &dyn Teacher),
            &data.train,
            &exp.train,
            seed,
            Some(RunFolder { dir: &run_dir, resume: args.resume, run_config }),
        )?;
        let record = Record { warnings: data.warnings.clone(), ..record }.with_data(&exp.dataset, &exp.data, data);
        println!("{}", record.summary_line());
        if args.files.save_students {
            let dir = save_student_run(&args.out.join("students"), &record, &student, &exp.dataset, &exp.data, data)?;
            println!("student written to {}", dir.display());
        }
        records.push(record);
    }
    write_results(&args.out, &records)?;
    println!("results written to {}", args.out.display());
    Ok(())
}

/// The run's configuration with the data files it reads. On `--resume` the files the run
/// recorded must hold the same content (a replaced or edited file is refused, naming it); the
/// recorded fingerprints are then kept, so that a file only touched resumes.
fn bound_to_data(mut config: RunConfig, data: &DatasetSplits, run_dir: &Path, resume: bool) -> Result<RunConfig> {
    config.data_files = data.files.clone();
    if !resume {
        return Ok(config);
    }
    let recorded = kd::core::run_files::RunIdentity::read(run_dir)
        .ok()
        .and_then(|identity| serde_json::from_value::<RunConfig>(identity.experiment).ok());
    // Another dataset or other options are a difference of the configuration, which the
    // trainer names; the files are compared for the same dataset.
    if let Some(recorded) = recorded.filter(|r| r.dataset == config.dataset && r.data == config.data) {
        if let Some(change) = kd::core::files::changed_file(&recorded.data_files, &config.data_files) {
            bail!(
                "cannot resume {}: the data changed since the run started: {change}; restore it, or start a new run in another folder",
                run_dir.display()
            );
        }
        if !recorded.data_files.is_empty() {
            config.data_files = recorded.data_files;
        }
    }
    Ok(config)
}

/// Writes a trained student to `root/<dataset>-<method>-<student>-seed<N>/` (weights and card;
/// the dataset as the record names it) and returns that folder. `dataset` and `options` are what
/// `load_dataset` was given, so that `eval` prepares the test split as training did.
pub fn save_student_run(
    root: &Path,
    record: &Record,
    student: &AnyModel,
    dataset: &str,
    options: &LoadOptions,
    data: &DatasetSplits,
) -> Result<PathBuf> {
    let dir =
        root.join(format!("{}-{}-{}-seed{}", sanitize(&record.dataset), sanitize(&record.method), sanitize(&record.student), record.seed));
    let card = ModelCard {
        model: record.student.clone(),
        classes: data.train.num_classes(),
        input_shape: data.train.input_shape(),
        weights: STUDENT_WEIGHTS.into(),
        dataset: Some(dataset.to_string()),
        data: Some(options.clone()),
        method: Some(record.method.clone()),
        seed: Some(record.seed),
        epoch: Some(record.curve.len()),
        test_top1: Some(record.last_acc),
        normalization: Some((data.train.normalization().0.to_vec(), data.train.normalization().1.to_vec())),
        class_names: data.train.class_names().map(<[String]>::to_vec),
        data_files: data.files.clone(),
    };
    // A folder of another dataset's student under the same name is never overwritten.
    if let Ok(text) = std::fs::read_to_string(dir.join(crate::model_files::STUDENT_CARD))
        && let Ok(old) = serde_json::from_str::<ModelCard>(&text)
        && old.dataset.as_deref().is_some_and(|d| d != dataset)
    {
        bail!(
            "{} holds a student of dataset `{}`; this one is of `{dataset}`: write it into another --out",
            dir.display(),
            old.dataset.unwrap_or_default()
        );
    }
    save_student(&dir, student, &card)?;
    Ok(dir)
}

/// The flags `train` and `bench` share: a teacher from a file, and the students written out.
#[derive(Args, Debug, Clone, Default)]
pub struct ModelFileFlags {
    /// Load the teacher from this file instead of training it: `.pth`/`.pt` (PyTorch),
    /// `.safetensors`, a checkpoint of this project or a `train` run folder (`train`: overrides
    /// the file's `teacher_weights`; `bench`: the architecture is `--teacher`, one dataset only).
    #[arg(long)]
    pub teacher_weights: Option<PathBuf>,
    /// The key of a PyTorch checkpoint's dict that holds the teacher's state dict (default:
    /// `model`, then `state_dict`, whichever the file has).
    #[arg(long, requires = "teacher_weights")]
    pub teacher_key: Option<String>,
    /// Also write each trained student (its last epoch) as safetensors with a `student.json`,
    /// under `OUT/students/`, for `predict`, `eval` and `export`.
    #[arg(long)]
    pub save_students: bool,
}

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
    /// Which epochs of every run (teachers, students, a chain's models) evaluate the test split.
    pub test_evaluation: TestEvaluation,
    /// A read-only folder of teachers trained once and committed ([`SHIPPED_TEACHERS`]), looked
    /// up under the same key after the cache: a teacher of hours is not retrained on every machine.
    pub shipped_teachers: PathBuf,
}

/// The repository's folder of committed teachers (relative to the working folder, like the
/// cache): entries named and keyed as the cache's, with their provenance in its README.
pub const SHIPPED_TEACHERS: &str = "datasets/teachers";

impl RunContext {
    /// A trainer on `data`'s test (and validation) split; with `checkpoint_dir`, resumable.
    fn trainer<'a>(
        &self,
        data: &'a DatasetSplits,
        train: &'a dyn BatchSource,
        config: &TrainConfig,
        label: String,
        checkpoint_dir: Option<PathBuf>,
        test_evaluation: TestEvaluation,
    ) -> Trainer<'a> {
        let resume = checkpoint_dir.is_some();
        let mut trainer = Trainer::new(config.clone(), train, &data.test, self.device.clone()).with_options(RunOptions {
            progress: self.progress,
            label,
            checkpoint_dir,
            resume,
            test_evaluation,
            ..Default::default()
        });
        if let Some(v) = &data.valid {
            trainer = trainer.with_validation(v);
        }
        trainer
    }

    /// The key of the teacher [`RunContext::teacher`] trains on `data` with `spec`, `config`
    /// and `seed`: it names the cache entry, and changes with anything that changes the teacher.
    pub fn teacher_key(&self, data: &DatasetSplits, spec: &str, config: &TrainConfig, seed: u64) -> Result<u64> {
        let config = TrainConfig { seed, ..config.clone() };
        Ok(hash_key(&[
            data.train.fingerprint(),
            hash_str(spec),
            hash_str(&serde_json::to_string(&config)?),
            hash_str(&self.backend.name),
            hash_str(&data.name),
            // The data's content (a replaced file is another entry, never the stale teacher); not
            // the files' paths, so that the same data unpacked elsewhere finds the same teacher.
            hash_str(&serde_json::to_string(&data.files.iter().map(|f| (f.size, &f.hash)).collect::<Vec<_>>())?),
        ]))
    }

    /// Where [`RunContext::teacher`] keeps the teacher of these arguments: the cache's entry and
    /// the committed teachers' (`datasets/teachers/`), in the order it looks.
    fn teacher_entries(&self, data: &DatasetSplits, spec: &str, config: &TrainConfig, seed: u64) -> Result<[PathBuf; 2]> {
        let key = self.teacher_key(data, spec, config, seed)?;
        let file_name = format!("{}-{}-{key:016x}.ckpt", sanitize(&data.name), sanitize(spec));
        Ok([self.cache_dir.join(&file_name), self.shipped_teachers.join(&file_name)])
    }

    /// The checkpoint file of the teacher [`RunContext::teacher`] has trained (or found) for
    /// these arguments, for what loads it by path (a chain's `teacher_checkpoint`).
    pub fn teacher_file(&self, data: &DatasetSplits, spec: &str, config: &TrainConfig, seed: u64) -> Result<PathBuf> {
        let config = TrainConfig { seed, ..config.clone() };
        let entries = self.teacher_entries(data, spec, &config, seed)?;
        entries.iter().find(|p| p.exists()).cloned().with_context(|| format!("no trained teacher {spec} at {}", entries[0].display()))
    }

    /// A teacher trained with cross-entropy, from the cache (or the committed teachers) when an
    /// identical one was trained before (keyed by data, architecture, recipe, seed and backend;
    /// never by where the data lies, so a committed entry serves every checkout). An interrupted training
    /// resumes from its last epoch (the entry's `.run` folder, removed once the entry is written).
    pub fn teacher(&self, data: &DatasetSplits, spec: &str, config: &TrainConfig, seed: u64) -> Result<(FrozenTeacher<AnyModel>, Record)> {
        let config = TrainConfig { seed, ..config.clone() };
        let [path, shipped] = self.teacher_entries(data, spec, &config, seed)?;
        let reuse = || -> Result<Option<(FrozenTeacher<AnyModel>, Record)>> {
            let Some(path) = [&path, &shipped].into_iter().find(|p| p.exists()) else {
                return Ok(None);
            };
            match Checkpoint::load(path) {
                Ok(ckpt) => {
                    let record: Record = serde_json::from_value(ckpt.meta["record"].clone())?;
                    let model = load_module(build_model(spec, data, &self.device, seed)?, ckpt.section("model")?)?;
                    eprintln!("teacher {spec} on {}: reused from {}", data.name, path.display());
                    Ok(Some((FrozenTeacher::new(model, spec), Record { cached: true, ..record })))
                }
                Err(e) => {
                    eprintln!("ignoring unreadable teacher cache {}: {e}", path.display());
                    Ok(None)
                }
            }
        };
        if let Some(cached) = reuse()? {
            return Ok(cached);
        }
        // One process trains and writes a cache entry; another one asking for it meanwhile fails
        // at once naming the holder (and one that finds it written once it holds the lock reads it).
        let _lock = kd::core::lock::FolderLock::for_file(&path, "teacher cache")?;
        if let Some(cached) = reuse()? {
            return Ok(cached);
        }
        let model = build_model(spec, data, &self.device, seed)?;
        let started = Instant::now();
        let run_dir = path.with_extension("run");
        resume_from_shipped_run(&shipped.with_extension("run"), &run_dir)?;
        let trainer =
            self.trainer(data, &data.train, &config, format!("teacher {spec} seed {seed}"), Some(run_dir.clone()), self.test_evaluation);
        let out = kd::methods::train_method(kd::baselines::ce::NAME, None, &trainer, model, &NoTeacher)?;
        let record = Record::new(&data.name, "teacher", spec, spec, seed, &self.backend, &config, &out, started.elapsed().as_secs_f64())
            .with_method_config(kd::baselines::ce::NAME, None);
        let ckpt =
            Checkpoint { meta: serde_json::json!({ "record": record }), sections: vec![("model".into(), module_bytes(&out.student)?)] };
        ckpt.save(&path)?;
        // The entry holds the teacher now; its epochs' checkpoints are no longer needed.
        match std::fs::remove_dir_all(&run_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(|| format!("removing {}", run_dir.display())),
            _ => {}
        }
        Ok((FrozenTeacher::new(out.student, spec), record))
    }

    /// A teacher loaded from `weights` (any format `load_weights` reads), evaluated on the
    /// test (and validation) split before anything distils from it.
    pub fn pretrained_teacher(&self, data: &DatasetSplits, spec: &str, weights: &WeightsFile) -> Result<(FrozenTeacher<AnyModel>, Record)> {
        let model = ModelSpec::parse(spec)?.build(data.train.input_shape(), data.train.num_classes(), &self.device)?;
        let path = weights.resolved();
        let model = load_weights(model, weights).with_context(|| format!("loading teacher {spec} from {}", path.display()))?;
        let teacher = FrozenTeacher::new(model, spec);
        let test = evaluate(teacher.model(), &data.test, 500, &self.device)?;
        let valid = data.valid.as_ref().map(|v| evaluate(teacher.model(), v, 500, &self.device)).transpose()?;
        if test.predicted_classes <= 1 {
            eprintln!(
                "warning: the teacher from {} predicts a single class on {} ({:.2} %): check the weights and the data's preprocessing",
                path.display(),
                data.test.name(),
                test.top1
            );
        }
        Ok((teacher, Record::pretrained(&data.name, spec, &path, &self.backend, &test, valid.as_ref())))
    }

    /// A student trained with a method resolved once ([`kd::methods::prepare`]), and the
    /// trained student (its last epoch); the method's effective configuration is what the
    /// record keeps.
    #[allow(clippy::too_many_arguments)]
    pub fn prepared_student(
        &self,
        data: &DatasetSplits,
        prepared: Prepared<AnyModel>,
        spec: &str,
        teacher: Option<&dyn Teacher>,
        train: &dyn BatchSource,
        config: &TrainConfig,
        seed: u64,
        checkpoints: Option<RunFolder<'_>>,
    ) -> Result<(Record, AnyModel)> {
        let mut config = config.clone();
        config.seed = seed;
        let method = prepared.name();
        let model = build_model(spec, data, &self.device, seed)?;
        let label = format!("{method} {spec} seed {seed}");
        let mut trainer = self.trainer(data, train, &config, label.clone(), None, self.test_evaluation);
        if let Some(RunFolder { dir, resume, run_config }) = checkpoints {
            trainer = trainer.with_options(RunOptions {
                run_config: Some(run_config),
                checkpoint_dir: Some(dir.to_path_buf()),
                resume,
                log_file: Some(dir.join("log.jsonl")),
                progress: self.progress,
                label,
                test_evaluation: self.test_evaluation,
                ..Default::default()
            });
        }
        let effective = prepared.config().clone();
        let teacher_name = teacher.map(|t| t.describe()).unwrap_or_else(|| "-".into());
        let teacher: &dyn Teacher = match teacher {
            Some(t) => t,
            None if prepared.need() == TeacherNeed::Nothing => &NoTeacher,
            None => bail!("method `{method}` needs a teacher"),
        };
        let started = Instant::now();
        let out = prepared.train(&trainer, model, teacher)?;
        let record =
            Record::new(&data.name, method, &teacher_name, spec, seed, &self.backend, &config, &out, started.elapsed().as_secs_f64())
                .with_effective_config(effective);
        Ok((record, out.student))
    }
}

/// A teacher's training committed unfinished (`datasets/teachers/NAME.run`, the cache's `.run`
/// folder of its last epochs) is copied into the cache to resume from, when the cache has no
/// run of its own: a teacher of more hours than one machine is lent trains across machines.
/// The copy leaves the committed folder as it was; the trainer checks that the checkpoint was
/// written by this very run (recipe, seed, data) before it resumes.
fn resume_from_shipped_run(shipped_run: &Path, run_dir: &Path) -> Result<()> {
    if run_dir.exists() || !shipped_run.is_dir() {
        return Ok(());
    }
    // Written whole (beside the run folder, renamed into place): a copy cut short (an error, a
    // killed process) never passes for a run; the next attempt starts from the committed one again.
    let copied = kd::core::atomic::write_folder_atomic(run_dir, |staging| {
        let reading = |e| kd::core::KdError::io("reading folder", shipped_run, e);
        for entry in std::fs::read_dir(shipped_run).map_err(reading)? {
            let entry = entry.map_err(reading)?;
            // A lock file that travelled with the folder is another machine's, never this run's.
            if entry.file_type().map_err(reading)?.is_file() && entry.file_name() != kd::core::lock::LOCK_FILE {
                std::fs::copy(entry.path(), staging.join(entry.file_name()))
                    .map_err(|e| kd::core::KdError::io("copying", entry.path(), e))?;
            }
        }
        Ok(())
    });
    copied.with_context(|| format!("copying the committed teacher run {} to {}", shipped_run.display(), run_dir.display()))?;
    eprintln!("teacher run resumed from the committed {}", shipped_run.display());
    Ok(())
}

pub fn hash_str(s: &str) -> u64 {
    hash_key(&s.bytes().map(u64::from).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A three-class table at `path`: the same bytes wherever it is written.
    fn write_table(path: &Path) {
        let rows: String = (0..90).map(|i| format!("{},{}.{},{}\n", i % 3, i % 3, i % 7, i % 5)).collect();
        std::fs::write(path, format!("label,x,y\n{rows}")).unwrap();
    }

    /// A flex context under `root`: the cache in `cache`, the committed teachers in `shipped`.
    fn flex_context(root: &Path, cache: &str, shipped: &str) -> RunContext {
        let (device, backend) = open_device("flex").unwrap();
        RunContext {
            device,
            backend,
            cache_dir: root.join(cache),
            progress: false,
            test_evaluation: TestEvaluation::EveryEpoch,
            shipped_teachers: root.join(shipped),
        }
    }

    /// A quick recipe for the table's teacher: `epochs` at a constant rate.
    fn table_recipe(epochs: usize) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: 16,
            optimizer: OptimizerConfig::sgd(0.05),
            schedule: LrSchedule::Constant,
            lr_warmup_epochs: 0,
            seed: 0,
            drop_last: false,
            eval_batch_size: 64,
        }
    }

    #[test]
    fn a_committed_teacher_is_found_by_its_key_wherever_the_data_lies() {
        let root = tempfile::tempdir().unwrap();
        let table = |folder: &str| {
            let dir = root.path().join(folder);
            std::fs::create_dir_all(&dir).unwrap();
            write_table(&dir.join("t.csv"));
            dir.join("t.csv")
        };
        let (here, there) = (table("here"), table("there"));
        let ctx = |cache: &str, shipped: &str| flex_context(root.path(), cache, shipped);
        let config = table_recipe(2);
        let trainer = ctx("trained", "nothing-shipped");
        let key = |data| trainer.teacher_key(data, "mlp-16", &config, 0).unwrap();
        assert_eq!(key(&load_csv(&here)), key(&load_csv(&there)), "the same bytes in another folder are the same data");
        let (_, trained) = trainer.teacher(&load_csv(&here), "mlp-16", &config, 0).unwrap();
        assert!(!trained.cached);

        // A fresh cache beside the first one's entries as the committed folder: read, not retrained.
        let reader = ctx("fresh", "trained");
        let (_, shipped) = reader.teacher(&load_csv(&there), "mlp-16", &config, 0).unwrap();
        assert!(shipped.cached, "the committed entry was not found");
        assert_eq!((shipped.selected_acc, shipped.curve.clone()), (trained.selected_acc, trained.curve.clone()));
        assert!(!root.path().join("fresh").exists(), "a committed teacher is read in place, never copied or retrained");

        // Other data (one value changed) is another key: trained, never the committed teacher.
        let changed = std::fs::read_to_string(&there).unwrap().replacen("0,0.0,0", "0,0.1,0", 1);
        std::fs::write(&there, changed).unwrap();
        let (_, retrained) = reader.teacher(&load_csv(&there), "mlp-16", &config, 0).unwrap();
        assert!(!retrained.cached);
    }

    #[test]
    fn a_committed_unfinished_teacher_run_resumes_where_it_stopped() {
        let root = tempfile::tempdir().unwrap();
        let csv = root.path().join("t.csv");
        write_table(&csv);
        let ctx = |cache: &str, shipped: &str| flex_context(root.path(), cache, shipped);
        let config = table_recipe(3);
        let data = load_csv(&csv);
        let (_, whole) = ctx("whole", "nothing-shipped").teacher(&data, "mlp-16", &config, 0).unwrap();

        // Another machine's training, stopped after its first epoch and committed as its `.run` folder.
        let machine = ctx("elsewhere", "nothing-shipped");
        let [entry, _] = machine.teacher_entries(&data, "mlp-16", &config, 0).unwrap();
        let committed = root.path().join("committed").join(entry.with_extension("run").file_name().unwrap());
        let trainer = machine
            .trainer(&data, &data.train, &config, "teacher".into(), Some(committed.clone()), TestEvaluation::EveryEpoch)
            .with_options(RunOptions {
                checkpoint_dir: Some(committed.clone()),
                resume: true,
                stop_after_epochs: Some(1),
                test_evaluation: TestEvaluation::EveryEpoch,
                ..Default::default()
            });
        let stopped = kd::methods::train_method(
            kd::baselines::ce::NAME,
            None,
            &trainer,
            build_model("mlp-16", &data, &machine.device, 0).unwrap(),
            &NoTeacher,
        )
        .unwrap();
        assert_eq!(stopped.history.len(), 1);
        std::fs::write(committed.join(kd::core::lock::LOCK_FILE), "4194999 (teacher cache: xtask bench)\n").unwrap();
        // The committed epoch's recorded test accuracy marked, so that a run that trained that
        // epoch again instead of resuming it shows.
        let last = committed.join("last.ckpt");
        let mut ckpt = Checkpoint::load(&last).unwrap();
        ckpt.meta["history"][0]["test"]["top1"] = serde_json::json!(12.5);
        ckpt.save(&last).unwrap();
        let committed_last = std::fs::read(&last).unwrap();

        let (_, resumed) = ctx("fresh", "committed").teacher(&data, "mlp-16", &config, 0).unwrap();
        assert!(!resumed.cached);
        assert_eq!(resumed.curve.len(), 3);
        assert_eq!(resumed.curve[0], 12.5, "the first epoch is the committed one, not trained again");
        assert_eq!(resumed.curve[1..], whole.curve[1..], "resuming from the committed epoch is the uninterrupted training");
        assert_eq!(std::fs::read(committed.join("last.ckpt")).unwrap(), committed_last, "the committed run is left as it was");
        let [fresh_entry, _] = ctx("fresh", "committed").teacher_entries(&data, "mlp-16", &config, 0).unwrap();
        assert!(fresh_entry.exists() && !fresh_entry.with_extension("run").exists(), "the entry is written and its run folder removed");
        assert!(!kd::core::atomic::temp_path(&fresh_entry.with_extension("run")).exists(), "the copy's staging folder is gone");
    }

    fn load_csv(csv: &Path) -> DatasetSplits {
        let options = LoadOptions { label_column: Some("label".into()), ..Default::default() };
        kd::data::load_dataset(&format!("csv:{}", csv.display()), &options).unwrap()
    }
}
