//! Static teacher-assistant chains: TAKD and DGKD (METHODS.md Part B 9.1, 9.2).
//!
//! A chain is `teacher > assistant_1 > ... > student`, all from one [`ModelFamily`]. Stage 0
//! trains the teacher with cross-entropy (or loads it); stage `k` distils model `k` from the
//! previous model (TAKD) or from all previous models (DGKD) with [`MultiTeacherKd`], optionally
//! under dynamic stopping ([`ControlGroup`]). The next stage learns from the best checkpoint of
//! the previous one, as the TAKD code does.
//!
//! With a checkpoint folder, each stage writes into its own subfolder, named after its position,
//! its network and a key of everything it depends on (data, the models before it, the recipes),
//! so that another plan never picks up a stage it did not train, and plans that share a prefix
//! (the same teacher) share those stages. A finished stage leaves `model.ckpt` (the weights the
//! next stage learns from, and its report); with `resume`, a finished stage is loaded from it,
//! and an interrupted one continues from its `last.ckpt`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use kd_baselines::CrossEntropy;
use kd_core::checkpoint::Checkpoint;
use kd_core::rng::hash_key;
use kd_core::train::{load_checkpoint_model, load_module, module_bytes};
use kd_core::{
    BatchSource, Distiller, EpochRecord, FrozenTeacher, KdError, NoAux, NoTeacher, Result, RunOptions, TrainConfig, TrainOutcome, Trainer,
    evaluate,
};
use kd_data::DatasetSplits;
use kd_models::AnyModel;
use serde::{Deserialize, Serialize};

use crate::family::{ModelFamily, build_seeded};
use crate::multi_teacher::{DropPolicy, MultiTeacherKd, StageLoss};
use crate::stopping::{ControlGroup, ControlModel, StoppingConfig, StoppingReport};

/// Which earlier models a stage distils from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChainMode {
    /// TAKD (Mirzadeh et al., AAAI 2020): the previous model only.
    #[default]
    Takd,
    /// DGKD (Son et al., ICCV 2021): every previous model, teacher included.
    Dgkd,
}

impl ChainMode {
    /// `takd` or `dgkd`.
    pub fn name(self) -> &'static str {
        match self {
            ChainMode::Takd => "takd",
            ChainMode::Dgkd => "dgkd",
        }
    }
}

/// Stochastic DGKD. Default: the DGKD code, `drop_num = 1` teacher term dropped per batch, in
/// the student's stage only (the code covers that stage only; the paper applies its Bernoulli
/// drops to the final student too).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DropConfig {
    /// How teacher terms are dropped ([`DropPolicy::KeepAll`]: deterministic DGKD).
    pub policy: DropPolicy,
    /// Drop only in the final student's stage; assistants keep all their teachers.
    pub student_only: bool,
}

impl Default for DropConfig {
    fn default() -> Self {
        DropConfig { policy: DropPolicy::Fixed { count: 1 }, student_only: true }
    }
}

/// Which weights of a finished stage teach the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TeacherWeights {
    /// The best epoch's (the TAKD code). Needs a checkpoint folder: without one, the last.
    #[default]
    Best,
    /// The last epoch's.
    Last,
}

/// A chain to train: its models (as scales of a family), the method and the recipes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainPlan {
    /// The pool of networks.
    pub family: ModelFamily,
    /// Scale of the teacher.
    pub teacher: usize,
    /// Scales of the assistants, largest first.
    #[serde(default)]
    pub assistants: Vec<usize>,
    /// Scale of the student.
    pub student: usize,
    /// TAKD or DGKD.
    #[serde(default)]
    pub mode: ChainMode,
    /// Loss of the distillation stages (and of the KD control).
    #[serde(default)]
    pub loss: StageLoss,
    /// Stochastic dropping of teacher terms (DGKD only).
    #[serde(default)]
    pub drop: DropConfig,
    /// Recipe of the teacher (stage 0, cross-entropy).
    pub teacher_train: TrainConfig,
    /// Recipe of every distillation stage.
    pub stage_train: TrainConfig,
    /// Dynamic stopping of the distillation stages (none: fixed schedules).
    #[serde(default)]
    pub stopping: Option<StoppingConfig>,
    /// Which weights of a stage teach the next.
    #[serde(default)]
    pub teacher_weights: TeacherWeights,
    /// A trained teacher to load instead of training stage 0: a checkpoint file whose `model`
    /// section holds the network (a trainer's `best.ckpt`, a chain's `model.ckpt`).
    #[serde(default)]
    pub teacher_checkpoint: Option<PathBuf>,
}

impl ChainPlan {
    /// A TAKD chain from `teacher` to `student` with no assistant, every stage trained with
    /// `train`, and the defaults of every other choice.
    pub fn new(family: ModelFamily, teacher: usize, student: usize, train: TrainConfig) -> Self {
        ChainPlan {
            family,
            teacher,
            assistants: Vec::new(),
            student,
            mode: ChainMode::Takd,
            loss: StageLoss::default(),
            drop: DropConfig::default(),
            teacher_train: train.clone(),
            stage_train: train,
            stopping: None,
            teacher_weights: TeacherWeights::Best,
            teacher_checkpoint: None,
        }
    }

    /// The same plan with these assistants (largest first).
    pub fn with_assistants(mut self, assistants: Vec<usize>) -> Self {
        self.assistants = assistants;
        self
    }

    /// The same plan in another mode.
    pub fn with_mode(mut self, mode: ChainMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same plan with dynamic stopping.
    pub fn with_stopping(mut self, stopping: Option<StoppingConfig>) -> Self {
        self.stopping = stopping;
        self
    }

    /// Every scale of the chain, teacher first.
    pub fn scales(&self) -> Vec<usize> {
        let mut scales = vec![self.teacher];
        scales.extend(&self.assistants);
        scales.push(self.student);
        scales
    }

    /// The networks of the chain, teacher first.
    pub fn model_names(&self) -> Result<Vec<String>> {
        self.scales().into_iter().map(|s| self.family.model_name(s)).collect()
    }

    /// Epochs of the fixed schedule over all stages trained (the teacher's unless loaded).
    pub fn planned_epochs(&self) -> usize {
        let teacher = if self.teacher_checkpoint.is_some() { 0 } else { self.teacher_train.epochs };
        teacher + self.stage_train.epochs * (self.assistants.len() + 1)
    }

    /// Checks the plan: a valid family, every scale in it, strictly decreasing from the teacher
    /// to the student, valid recipes and losses.
    pub fn validate(&self) -> Result<()> {
        self.family.validate()?;
        let scales = self.scales();
        for &s in &scales {
            self.family.spec(s)?;
        }
        if let Some(w) = scales.windows(2).find(|w| w[0] <= w[1]) {
            return Err(KdError::InvalidConfig(format!(
                "a chain goes from larger to smaller models: scale {} comes before {} in {scales:?}",
                w[0], w[1]
            )));
        }
        self.teacher_train.validate()?;
        self.stage_train.validate()?;
        self.loss.validate()?;
        self.drop.policy.validate()?;
        if let Some(s) = &self.stopping {
            s.validate()?;
        }
        Ok(())
    }
}

/// The place of a model in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageRole {
    /// Stage 0.
    Teacher,
    /// Between the teacher and the student.
    Assistant,
    /// The last stage.
    Student,
}

/// What one stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Position in the chain (0: teacher).
    pub index: usize,
    /// Teacher, assistant or student.
    pub role: StageRole,
    /// The network.
    pub model: String,
    /// Its scale in the family.
    pub scale: usize,
    /// The method that trained it (`ce`, `takd`, `dgkd`, with `+stop` under dynamic stopping;
    /// `loaded` for a teacher given as a checkpoint).
    pub method: String,
    /// The models it distilled from.
    pub teachers: Vec<String>,
    /// Its checkpoint folder.
    pub dir: Option<PathBuf>,
    /// Epochs of its fixed schedule.
    pub planned_epochs: usize,
    /// Epochs trained (across resumes).
    pub epochs: usize,
    /// Epochs trained by this call.
    pub epochs_this_run: usize,
    /// The epoch selected as best (on the validation split when there is one).
    pub best_epoch: usize,
    /// Test top-1 at the selected epoch (percent).
    pub selected_acc: f64,
    /// Highest test top-1 over the epochs.
    pub best_acc: f64,
    /// Test top-1 of the last epoch.
    pub last_acc: f64,
    /// Validation top-1 at the selected epoch.
    pub selected_valid_acc: Option<f64>,
    /// Wall time of the training steps (across resumes), seconds.
    pub train_seconds: f64,
    /// Whether it was loaded from a finished stage's checkpoint rather than trained now.
    pub loaded: bool,
    /// Whether it finished (its schedule, or a dynamic stop).
    pub complete: bool,
    /// What dynamic stopping did.
    pub stopping: Option<StoppingReport>,
}

impl StageReport {
    /// The accuracy that steers decisions: validation top-1 at the selected epoch when there
    /// is a validation split, test top-1 otherwise.
    pub fn decision_acc(&self) -> f64 {
        self.selected_valid_acc.unwrap_or(self.selected_acc)
    }
}

/// What a chain run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainReport {
    /// The family's name.
    pub family: String,
    /// TAKD or DGKD.
    pub mode: ChainMode,
    /// The networks, teacher first.
    pub chain: Vec<String>,
    /// Their scales.
    pub scales: Vec<usize>,
    /// One report per stage that trained at least one epoch or was loaded.
    pub stages: Vec<StageReport>,
    /// Whether every stage finished (false when `stop_after_epochs` cut the run short).
    pub finished: bool,
    /// Epochs trained over all stages (across resumes).
    pub total_epochs: usize,
    /// Epochs of the fixed schedule over all stages.
    pub planned_epochs: usize,
    /// Epochs trained by this call.
    pub epochs_this_run: usize,
    /// Wall time of this call, seconds.
    pub wall_seconds: f64,
    /// Wall time of all training steps (across resumes), seconds.
    pub train_seconds: f64,
}

impl ChainReport {
    /// The student's stage, once it has finished.
    pub fn student(&self) -> Option<&StageReport> {
        self.stages.last().filter(|s| s.role == StageRole::Student && s.complete)
    }

    /// Epochs saved by dynamic stopping over all stages.
    pub fn epochs_saved(&self) -> usize {
        self.stages.iter().filter_map(|s| s.stopping.as_ref()).map(|s| s.epochs_saved).sum()
    }

    /// One line for logs: the chain, the student's accuracy and the epochs.
    pub fn summary_line(&self) -> String {
        let student =
            self.student().map_or("unfinished".to_string(), |s| format!("student {:.2}% (best {:.2}%)", s.selected_acc, s.best_acc));
        format!(
            "{} {}: {student}; {} of {} epochs ({} saved), {:.1}s",
            self.mode.name(),
            self.chain.join(" > "),
            self.total_epochs,
            self.planned_epochs,
            self.epochs_saved(),
            self.wall_seconds
        )
    }
}

/// A chain run with its trained networks.
#[derive(Debug)]
pub struct ChainRun {
    /// The report.
    pub report: ChainReport,
    /// The networks of the finished stages, teacher first, with the weights that taught the
    /// next stage (for the student: the same choice), on `device.autodiff()`.
    pub models: Vec<AnyModel>,
}

/// Trains (or resumes) a chain and reports on it.
///
/// `device` is a plain device (the networks live on `device.autodiff()`). From `options`:
/// `checkpoint_dir` is the root of the stage folders, `resume` loads finished stages and
/// continues an interrupted one, `stop_after_epochs` caps the epochs trained by this call over
/// all stages, and the log file, progress bar, label and selection metric apply to every stage.
pub fn run_chain(plan: &ChainPlan, data: &DatasetSplits, device: &Device, options: &RunOptions) -> Result<ChainReport> {
    Ok(run_chain_with_models(plan, data, device, options)?.report)
}

/// [`run_chain`], also returning the trained networks.
pub fn run_chain_with_models(plan: &ChainPlan, data: &DatasetSplits, device: &Device, options: &RunOptions) -> Result<ChainRun> {
    ChainRunner::new(plan, data, device, options)?.run(Vec::new())
}

/// A model already trained, given to [`ChainRunner::run`] in place of its stage.
pub(crate) type KnownStage = (AnyModel, StageReport);

/// Runs the stages of a plan.
pub(crate) struct ChainRunner<'a> {
    plan: &'a ChainPlan,
    data: &'a DatasetSplits,
    device: Device,
    options: &'a RunOptions,
    input: [usize; 3],
    classes: usize,
    scales: Vec<usize>,
    names: Vec<String>,
}

/// Hooks the chain needs from a stage's distiller beyond [`Distiller`].
trait StageMethod: Distiller {
    /// Whether dynamic stopping ended the stage.
    fn stopped(&self) -> bool {
        false
    }
    /// What dynamic stopping did.
    fn stopping_report(&self, _planned_epochs: usize) -> Option<StoppingReport> {
        None
    }
}

impl StageMethod for CrossEntropy {}
impl StageMethod for MultiTeacherKd<AnyModel> {}
impl StageMethod for ControlGroup<MultiTeacherKd<AnyModel>> {
    fn stopped(&self) -> bool {
        ControlGroup::stopped(self)
    }
    fn stopping_report(&self, planned_epochs: usize) -> Option<StoppingReport> {
        Some(self.report(planned_epochs))
    }
}

/// What the stage folder records from an earlier call.
struct PriorRun {
    epochs: usize,
    stopped: bool,
}

impl<'a> ChainRunner<'a> {
    pub(crate) fn new(plan: &'a ChainPlan, data: &'a DatasetSplits, device: &Device, options: &'a RunOptions) -> Result<Self> {
        plan.validate()?;
        Self::with_scales(plan, plan.scales(), data, device, options)
    }

    /// A runner over `scales` (teacher first, at least one) instead of the plan's own chain:
    /// probes train chain prefixes and single models.
    pub(crate) fn with_scales(
        plan: &'a ChainPlan,
        scales: Vec<usize>,
        data: &'a DatasetSplits,
        device: &Device,
        options: &'a RunOptions,
    ) -> Result<Self> {
        if scales.is_empty() {
            return Err(KdError::InvalidConfig("a chain needs at least one model".into()));
        }
        if let Some(w) = scales.windows(2).find(|w| w[0] <= w[1]) {
            return Err(KdError::InvalidConfig(format!(
                "a chain goes from larger to smaller models: {} comes before {} in {scales:?}",
                w[0], w[1]
            )));
        }
        if plan.stopping.is_some() && data.valid.is_none() {
            return Err(KdError::Missing {
                method: "dynamic stopping".into(),
                what: "a validation split (set valid_fraction when loading the data)".into(),
            });
        }
        let names = scales.iter().map(|&s| plan.family.model_name(s)).collect::<Result<Vec<_>>>()?;
        Ok(ChainRunner {
            plan,
            data,
            device: device.clone(),
            options,
            input: data.train.input_shape(),
            classes: data.train.num_classes(),
            scales,
            names,
        })
    }

    /// Runs every stage after the `known` ones (already trained models, teacher first).
    pub(crate) fn run(&self, known: Vec<KnownStage>) -> Result<ChainRun> {
        let started = Instant::now();
        let scales = self.scales.clone();
        if known.len() > scales.len() {
            return Err(KdError::InvalidConfig(format!("{} known stages for a chain of {}", known.len(), scales.len())));
        }
        let mut models = Vec::with_capacity(scales.len());
        let mut stages = Vec::with_capacity(scales.len());
        for (model, report) in known {
            models.push(model);
            stages.push(report);
        }
        if let Some(root) = &self.options.checkpoint_dir {
            // For people browsing the folder; resuming relies on the stage keys, not on this.
            let json = serde_json::to_vec_pretty(self.plan).map_err(|e| KdError::Record(e.to_string()))?;
            kd_core::checkpoint::write_atomic(&root.join("plan.json"), &json)?;
        }
        let mut budget = self.options.stop_after_epochs;
        let mut finished = true;
        for k in models.len()..scales.len() {
            let (model, report) = if k == 0 { self.teacher_stage(&mut budget)? } else { self.kd_stage(k, &models, &mut budget)? };
            if let Some(r) = report {
                stages.push(r);
            }
            match model {
                Some(m) => models.push(m),
                None => {
                    finished = false;
                    break;
                }
            }
        }
        let total_epochs = stages.iter().map(|s| s.epochs).sum();
        let epochs_this_run = stages.iter().map(|s| s.epochs_this_run).sum();
        let train_seconds = stages.iter().map(|s| s.train_seconds).sum();
        let report = ChainReport {
            family: self.plan.family.name(),
            mode: self.plan.mode,
            chain: self.names.clone(),
            scales,
            stages,
            finished,
            total_epochs,
            planned_epochs: self.planned_epochs(),
            epochs_this_run,
            wall_seconds: started.elapsed().as_secs_f64(),
            train_seconds,
        };
        Ok(ChainRun { report, models })
    }

    fn planned_epochs(&self) -> usize {
        let teacher = if self.plan.teacher_checkpoint.is_some() { 0 } else { self.plan.teacher_train.epochs };
        teacher + self.plan.stage_train.epochs * (self.scales.len() - 1)
    }

    fn role(&self, k: usize) -> StageRole {
        match k {
            0 => StageRole::Teacher,
            k if k + 1 == self.names.len() => StageRole::Student,
            _ => StageRole::Assistant,
        }
    }

    /// A key of everything stage `k` depends on: the folder name carries it.
    fn stage_key(&self, k: usize) -> Result<u64> {
        let p = self.plan;
        let mut key = serde_json::json!({
            "chain": &self.names[..=k],
            "data": self.data.train.fingerprint(),
            "input": self.input,
            "classes": self.classes,
            "teacher_train": p.teacher_train,
            "teacher_checkpoint": p.teacher_checkpoint,
        });
        if k > 0 {
            key["stages"] = serde_json::json!({
                "mode": p.mode,
                "loss": p.loss,
                "drop": p.drop,
                "train": p.stage_train,
                "stopping": p.stopping,
                "weights": p.teacher_weights,
                "last": k + 1 == self.names.len(),
            });
        }
        let text = serde_json::to_string(&key).map_err(|e| KdError::Record(e.to_string()))?;
        let words: Vec<u64> = text.as_bytes().chunks(8).map(|c| c.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64)).collect();
        Ok(hash_key(&words))
    }

    fn stage_dir(&self, k: usize) -> Result<Option<PathBuf>> {
        let Some(root) = &self.options.checkpoint_dir else { return Ok(None) };
        let key = self.stage_key(k)? & 0xFFFF_FFFF_FFFF;
        Ok(Some(root.join(format!("stage{k}-{}-{key:012x}", sanitize(&self.names[k])))))
    }

    fn template(&self, k: usize) -> Result<AnyModel> {
        let spec = self.plan.family.spec(self.scales[k])?;
        spec.build(self.input, self.classes, &self.device.clone().autodiff())
    }

    fn init_seed(&self, k: usize, config: &TrainConfig) -> u64 {
        hash_key(&[config.seed, k as u64, 0x57A6E])
    }

    fn teacher_stage(&self, budget: &mut Option<usize>) -> Result<(Option<AnyModel>, Option<StageReport>)> {
        if let Some(path) = &self.plan.teacher_checkpoint {
            return self.load_teacher(path).map(|(m, r)| (Some(m), Some(r)));
        }
        let mut ce = CrossEntropy;
        self.train_stage(0, &mut ce, &self.plan.teacher_train, Vec::new(), budget)
    }

    /// Loads a teacher given as a checkpoint, and evaluates it for the report.
    fn load_teacher(&self, path: &Path) -> Result<KnownStage> {
        // A bare network (teacher caches, `model.ckpt`) or a trainer's (network, NoAux) pair.
        let model = match load_checkpoint_model(self.template(0)?, path) {
            Ok(m) => m,
            Err(bare) => load_checkpoint_model((self.template(0)?, NoAux::new()), path).map(|(m, _)| m).map_err(|_| {
                KdError::Malformed { path: path.to_path_buf(), reason: format!("not a checkpoint of {}: {bare}", self.names[0]) }
            })?,
        };
        let batch = self.plan.teacher_train.eval_batch_size;
        let frozen = burn::module::Module::valid(&model);
        let test = evaluate(&frozen, &self.data.test, batch, &self.device)?.top1;
        let valid = self.data.valid.as_ref().map(|v| evaluate(&frozen, v, batch, &self.device)).transpose()?.map(|m| m.top1);
        let report = StageReport {
            index: 0,
            role: StageRole::Teacher,
            model: self.names[0].clone(),
            scale: self.scales[0],
            method: "loaded".into(),
            teachers: Vec::new(),
            dir: None,
            planned_epochs: 0,
            epochs: 0,
            epochs_this_run: 0,
            best_epoch: 0,
            selected_acc: test,
            best_acc: test,
            last_acc: test,
            selected_valid_acc: valid,
            train_seconds: 0.0,
            loaded: true,
            complete: true,
            stopping: None,
        };
        Ok((model, report))
    }

    fn kd_stage(&self, k: usize, models: &[AnyModel], budget: &mut Option<usize>) -> Result<(Option<AnyModel>, Option<StageReport>)> {
        let p = self.plan;
        let from: Vec<usize> = match p.mode {
            ChainMode::Takd => vec![k - 1],
            ChainMode::Dgkd => (0..k).collect(),
        };
        let teachers: Vec<FrozenTeacher<AnyModel>> =
            from.iter().map(|&j| FrozenTeacher::new(models[j].clone(), self.names[j].clone())).collect();
        let teacher_names: Vec<String> = from.iter().map(|&j| self.names[j].clone()).collect();
        let drop = if p.mode == ChainMode::Dgkd && (!p.drop.student_only || self.role(k) == StageRole::Student) {
            p.drop.policy
        } else {
            DropPolicy::KeepAll
        };
        let kd = MultiTeacherKd::new(teachers, p.loss)?.with_drop(drop)?.with_stream(k as u64).with_name(p.mode.name());
        match &p.stopping {
            None => {
                let mut kd = kd;
                self.train_stage(k, &mut kd, &p.stage_train, teacher_names, budget)
            }
            Some(stopping) => {
                let control = ControlModel {
                    spec: p.family.spec(self.scales[k])?,
                    input: self.input,
                    classes: self.classes,
                    seed: self.init_seed(k, &p.stage_train),
                };
                let chain_teacher = FrozenTeacher::new(models[0].clone(), self.names[0].clone());
                let mut wrapped = ControlGroup::new(kd, *stopping, control)?
                    .with_kd_teacher(Some(chain_teacher), p.loss)?
                    .with_eval_batch_size(p.stage_train.eval_batch_size);
                self.train_stage(k, &mut wrapped, &p.stage_train, teacher_names, budget)
            }
        }
    }

    /// Reads what an earlier call left in the stage folder, and restores the method's state
    /// from it (so that a stage stopped by the rule is known to be finished).
    fn prior_run<D: StageMethod>(&self, dir: &Path, distiller: &mut D) -> Result<Option<PriorRun>> {
        let last = dir.join("last.ckpt");
        if !self.options.resume || !last.exists() {
            return Ok(None);
        }
        let ckpt = Checkpoint::load(&last)?;
        if ckpt.meta["method"].as_str() != Some(distiller.name().as_str()) {
            // The trainer refuses this checkpoint with a clear message.
            return Ok(None);
        }
        let epochs = ckpt.meta["history"].as_array().map_or(0, Vec::len);
        distiller.load_state(ckpt.section("distiller")?)?;
        Ok(Some(PriorRun { epochs, stopped: distiller.stopped() }))
    }

    fn train_stage<D: StageMethod>(
        &self,
        k: usize,
        distiller: &mut D,
        config: &TrainConfig,
        teachers: Vec<String>,
        budget: &mut Option<usize>,
    ) -> Result<(Option<AnyModel>, Option<StageReport>)> {
        let dir = self.stage_dir(k)?;
        let label = format!(
            "{}stage{k} {}",
            if self.options.label.is_empty() { String::new() } else { format!("{} ", self.options.label) },
            self.names[k]
        );
        if let Some(dir) = &dir
            && self.options.resume
            && dir.join("model.ckpt").exists()
        {
            let path = dir.join("model.ckpt");
            let ckpt = Checkpoint::load(&path)?;
            let mut report: StageReport = serde_json::from_value(ckpt.meta["report"].clone())
                .map_err(|e| KdError::Malformed { path: path.clone(), reason: format!("stage report: {e}") })?;
            let model = load_module(self.template(k)?, ckpt.section("model")?)?;
            report.loaded = true;
            report.epochs_this_run = 0;
            report.dir = Some(dir.clone());
            return Ok((Some(model), Some(report)));
        }
        let prior = match &dir {
            Some(d) => self.prior_run(d, distiller)?,
            None => None,
        };
        let epochs_before = prior.as_ref().map_or(0, |p| p.epochs);
        let already_stopped = prior.as_ref().is_some_and(|p| p.stopped);
        // A stage the rule already stopped trains no further: the trainer only reloads it.
        let stop_after = if already_stopped { Some(0) } else { *budget };
        let options = RunOptions {
            checkpoint_dir: dir.clone(),
            resume: self.options.resume,
            log_file: self.options.log_file.clone(),
            progress: self.options.progress,
            label,
            stop_after_epochs: stop_after,
            select_by: self.options.select_by,
            run_config: None,
            divergence: self.options.divergence,
        };
        let mut trainer = Trainer::new(config.clone(), &self.data.train, &self.data.test, self.device.clone()).with_options(options);
        if let Some(v) = &self.data.valid {
            trainer = trainer.with_validation(v as &dyn BatchSource);
        }
        let spec = self.plan.family.spec(self.scales[k])?;
        let student = build_seeded(&spec, self.input, self.classes, &self.device.clone().autodiff(), self.init_seed(k, config))?;
        let outcome: TrainOutcome<AnyModel, D::Aux> = trainer.fit(student, distiller, &NoTeacher)?;
        let ran = outcome.history.len().saturating_sub(epochs_before);
        if let Some(b) = budget.as_mut() {
            *b = b.saturating_sub(ran);
        }
        let complete = outcome.finished || distiller.stopped();
        let report = (!outcome.history.is_empty()).then(|| StageReport {
            index: k,
            role: self.role(k),
            model: self.names[k].clone(),
            scale: self.scales[k],
            method: distiller.name(),
            teachers,
            dir: dir.clone(),
            planned_epochs: config.epochs,
            epochs: outcome.history.len(),
            epochs_this_run: ran,
            best_epoch: outcome.best_epoch,
            selected_acc: outcome.selected_acc(),
            best_acc: outcome.best_acc(),
            last_acc: outcome.last_acc(),
            selected_valid_acc: selected_valid(&outcome.history, outcome.best_epoch),
            train_seconds: outcome.history.iter().map(|r| r.train_seconds).sum(),
            loaded: false,
            complete,
            stopping: distiller.stopping_report(config.epochs),
        });
        let report = match report {
            Some(r) if complete => r,
            partial => return Ok((None, partial)),
        };
        let best = dir.as_ref().map(|d| d.join("best.ckpt")).filter(|p| p.exists());
        let model = match (self.plan.teacher_weights, best) {
            (TeacherWeights::Best, Some(path)) => load_checkpoint_model((outcome.student, outcome.aux), &path)?.0,
            _ => outcome.student,
        };
        if let Some(dir) = &dir {
            let meta = serde_json::json!({ "report": report });
            Checkpoint { meta, sections: vec![("model".into(), module_bytes(&model)?)] }.save(&dir.join("model.ckpt"))?;
        }
        Ok((Some(model), Some(report)))
    }
}

fn selected_valid(history: &[EpochRecord], best_epoch: usize) -> Option<f64> {
    history.iter().find(|r| r.epoch == best_epoch).and_then(|r| r.valid.map(|v| v.top1))
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}
