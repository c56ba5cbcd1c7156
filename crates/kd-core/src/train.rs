//! The training loop: epochs, schedules, evaluation, checkpoints, resume, progress.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Bytes, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
pub use crate::checkpoint::{load_checkpoint_model, load_module, module_bytes};
use crate::data::BatchSource;
use crate::distiller::{AuxModule, Distiller, Step, StepContext, StepDone};
use crate::error::{KdError, Result};
use crate::lock::FolderLock;
use crate::loss::{cross_entropy, topk_correct};
use crate::metrics::{SelectBy, binary_metrics};
use crate::model::{Classifier, ModelOutput, Student, Teacher, TeacherNeed};
use crate::optim::{LrSchedule, OptimizerConfig};
use crate::phases::{Phase, PhaseClock, StepPhases};
pub use crate::record::{EpochRecord, EvalMetrics};
use crate::rng::permutation;
pub use crate::run_files::SavedRun;
use crate::run_files::{CheckpointMeta, RunIdentity};
use crate::side_models::{NoSideModels, SideModels};

/// The most epochs a stage may have: far beyond any recipe, and small enough that every count
/// derived from it (steps, schedule positions, records) fits the arithmetic.
pub const MAX_EPOCHS: usize = 100_000;
/// The largest batch size (a batch is one allocation of `size x sample` floats).
pub const MAX_BATCH_SIZE: usize = 1 << 20;

/// The recipe of one training stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of epochs.
    pub epochs: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// The optimiser.
    pub optimizer: OptimizerConfig,
    /// Learning rate against the epoch.
    #[serde(default = "default_schedule")]
    pub schedule: LrSchedule,
    /// Epochs of linear learning-rate warm-up (0: none).
    #[serde(default)]
    pub lr_warmup_epochs: usize,
    /// Seed of the initialisation, the shuffles and the augmentation.
    #[serde(default)]
    pub seed: u64,
    /// Drop the last incomplete batch of each epoch.
    #[serde(default)]
    pub drop_last: bool,
    /// Batch size for evaluation.
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
}

fn default_schedule() -> LrSchedule {
    LrSchedule::Constant
}
fn default_eval_batch() -> usize {
    256
}

impl TrainConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(KdError::InvalidConfig("epochs must be at least 1".into()));
        }
        if self.epochs > MAX_EPOCHS {
            return Err(KdError::InvalidConfig(format!("epochs: {} is above the limit of {MAX_EPOCHS}", self.epochs)));
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(KdError::InvalidConfig("batch sizes must be at least 1".into()));
        }
        for (field, size) in [("batch_size", self.batch_size), ("eval_batch_size", self.eval_batch_size)] {
            if size > MAX_BATCH_SIZE {
                return Err(KdError::InvalidConfig(format!("{field}: {size} is above the limit of {MAX_BATCH_SIZE}")));
            }
        }
        if self.lr_warmup_epochs > self.epochs {
            return Err(KdError::InvalidConfig(format!(
                "lr_warmup_epochs: a warm-up of {} epochs is longer than the run of {} epochs",
                self.lr_warmup_epochs, self.epochs
            )));
        }
        self.optimizer.validate()?;
        self.schedule.validate(self.optimizer.lr())
    }
}

/// Where a run writes, and how it reports.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The whole effective configuration of the run as the caller sees it (data and its
    /// options, models, method configuration, backend...). With a checkpoint folder it is
    /// written to `run.json` there and, with the recipe and the method, into every checkpoint,
    /// so that resuming with any other configuration is refused and the difference named.
    pub run_config: Option<serde_json::Value>,
    /// When the run counts as diverged (checked after every epoch).
    pub divergence: DivergenceCheck,
    /// Folder for `last.ckpt` and `best.ckpt` (none: no checkpoints).
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from `last.ckpt` in `checkpoint_dir` when it exists.
    pub resume: bool,
    /// A JSON-lines log, one line per epoch.
    pub log_file: Option<PathBuf>,
    /// Show a progress bar (drawn only when stderr is a terminal).
    pub progress: bool,
    /// A label for the progress bar and log lines.
    pub label: String,
    /// Stop after this many epochs of this call (for interrupted-run tests and time budgets);
    /// the checkpoint then resumes the rest.
    pub stop_after_epochs: Option<usize>,
    /// The metric that selects the best epoch (on the validation split when there is one).
    pub select_by: SelectBy,
    /// Time each phase of every training step into [`EpochRecord::phases`], synchronising the
    /// device between phases (which slows a GPU a little; CPU backends are unaffected).
    pub time_phases: bool,
    /// Which epochs evaluate the test split (every epoch by default).
    pub test_evaluation: TestEvaluation,
}

/// Which epochs evaluate the test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestEvaluation {
    /// Every epoch: the learning curve, the best epoch's accuracy (mdistiller's), the selected
    /// and the last.
    #[default]
    EveryEpoch,
    /// Only where the result is read: the epochs whose validation score improves (one of them is
    /// the selected epoch), the first and the last epoch (of the run, of this call, or where
    /// dynamic stopping ends it). The other epochs carry the last evaluation forward
    /// ([`EpochRecord::test_evaluated`] false), so the selected and last accuracies are exact
    /// and the best is the best of the evaluated epochs. Without a validation split every epoch
    /// is evaluated. For budgets where the test split costs as much as training (CIFAR-10's
    /// 10,000 images against a few thousand training images).
    WhenSelected,
    /// Only the last epoch (of the run, of this call, or where dynamic stopping ends it) and the
    /// selected one: the selected epoch's model is kept and its test pass deferred to the end of
    /// the call, when no later epoch can replace it (one pass, not one per improvement). The
    /// selected and last accuracies are exact and the best is the better of the two; the other
    /// epochs carry the last evaluation forward (an empty one, of 0 samples, before the first),
    /// so the test curve says nothing: read the validation curve. Without a validation split
    /// every epoch is evaluated.
    SelectedAndLast,
}

/// When a run counts as diverged. Checked at the end of every epoch; a diverged run ends with
/// [`KdError::Diverged`] instead of reporting a meaningless accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DivergenceCheck {
    /// The run fails when an epoch's mean training loss is more than this multiple of the loss of
    /// the very first step (before any update). 0 turns the check off.
    pub loss_factor: f64,
    /// From this epoch on, the run fails when the model has collapsed: it predicts one class for
    /// every evaluation sample, its accuracy is at chance (within one point of the majority
    /// class's share), and its training loss is no lower than in the first epoch. 0 turns the
    /// check off.
    pub chance_after_epochs: usize,
}

impl Default for DivergenceCheck {
    fn default() -> Self {
        // A loss 100 times its start is far outside what warm-up or a schedule produce (DKD's
        // warm-up grows its term at most W-fold); 3 epochs give a real model time to move.
        DivergenceCheck { loss_factor: 100.0, chance_after_epochs: 3 }
    }
}

impl DivergenceCheck {
    /// No check (for runs expected to learn nothing, such as tests on noise).
    pub const fn off() -> Self {
        DivergenceCheck { loss_factor: 0.0, chance_after_epochs: 0 }
    }

    /// Why `record` shows a diverged run, if it does. `initial_loss` is the first step's loss,
    /// `first_epoch_loss` the first epoch's mean training loss.
    pub fn verdict(&self, record: &EpochRecord, initial_loss: f64, first_epoch_loss: f64) -> Option<String> {
        let scale = initial_loss.abs().max(1e-3);
        if self.loss_factor > 0.0 && record.train_loss > self.loss_factor * scale {
            return Some(format!(
                "the mean training loss {:.4e} is over {} times the first step's {initial_loss:.4} (lower the learning rate)",
                record.train_loss, self.loss_factor
            ));
        }
        let eval = record.valid.unwrap_or(record.test);
        if self.chance_after_epochs > 0
            && record.epoch >= self.chance_after_epochs
            && eval.chance > 0.0
            && eval.top1 <= eval.chance + 1.0
            && eval.predicted_classes == 1
            && record.train_loss >= first_epoch_loss
        {
            return Some(format!(
                "after {} epochs the model predicts a single class, its accuracy {:.2}% is at chance (the majority class is {:.2}% \
                 of the split), and the training loss {:.4} is no lower than the first epoch's {first_epoch_loss:.4}",
                record.epoch, eval.top1, eval.chance, record.train_loss
            ));
        }
        None
    }
}

/// The result of [`Trainer::fit`].
#[derive(Debug)]
pub struct TrainOutcome<S, A> {
    /// The student after the last epoch (on the autodiff device).
    pub student: S,
    /// The method's learnable parts after the last epoch.
    pub aux: A,
    /// One record per epoch (including epochs run before a resume).
    pub history: Vec<EpochRecord>,
    /// The epoch selected as best (by validation accuracy, or by test accuracy without a
    /// validation split, as mdistiller reports).
    pub best_epoch: usize,
    /// Whether training ran all its epochs (false when `stop_after_epochs` cut it short).
    pub finished: bool,
}

impl<S, A> TrainOutcome<S, A> {
    /// Highest test accuracy over the epochs (mdistiller's `best_acc`).
    pub fn best_acc(&self) -> f64 {
        self.history.iter().map(|r| r.test.top1).fold(f64::NAN, f64::max)
    }

    /// Test accuracy of the last epoch.
    pub fn last_acc(&self) -> f64 {
        self.history.last().map(|r| r.test.top1).unwrap_or(f64::NAN)
    }

    /// Test accuracy at the selected epoch.
    pub fn selected_acc(&self) -> f64 {
        self.history.iter().find(|r| r.epoch == self.best_epoch).map(|r| r.test.top1).unwrap_or(f64::NAN)
    }

    /// Mean wall time of an epoch's training steps.
    pub fn seconds_per_epoch(&self) -> f64 {
        if self.history.is_empty() {
            return f64::NAN;
        }
        self.history.iter().map(|r| r.train_seconds).sum::<f64>() / self.history.len() as f64
    }
}

/// The checkpoint section of what trained beside the student.
const SIDE_MODELS: &str = "side_models";

/// Where a stage stands between epochs: what `last.ckpt` restores besides the model.
struct Progress {
    optim: ModuleOptimizer,
    history: Vec<EpochRecord>,
    /// The best epoch so far and its selection score.
    best: Option<(usize, f64)>,
    /// The loss of the very first step (the divergence check's reference).
    initial_loss: Option<f64>,
}

/// What one epoch's steps added up.
#[derive(Default)]
struct EpochSteps {
    term_sums: BTreeMap<String, f64>,
    loss_sum: f64,
    steps: usize,
    correct: usize,
    seen: usize,
    all_zero: bool,
    /// Time spent on the side models, left out of the student's training time.
    side_seconds: f64,
    /// Where the steps' time went, when timed.
    phases: Option<StepPhases>,
}

/// Runs a training stage: a student, a distiller, a teacher, and the data.
pub struct Trainer<'a> {
    config: TrainConfig,
    options: RunOptions,
    train: &'a dyn BatchSource,
    valid: Option<&'a dyn BatchSource>,
    test: &'a dyn BatchSource,
    device: Device,
}

impl<'a> Trainer<'a> {
    /// A trainer on `device` (a plain device; the student must live on `device.autodiff()`).
    pub fn new(config: TrainConfig, train: &'a dyn BatchSource, test: &'a dyn BatchSource, device: Device) -> Self {
        Trainer { config, options: RunOptions::default(), train, valid: None, test, device }
    }

    /// Sets where the run writes and how it reports.
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a validation split: it selects the best epoch.
    pub fn with_validation(mut self, valid: &'a dyn BatchSource) -> Self {
        self.valid = Some(valid);
        self
    }

    /// The recipe.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The training split.
    pub fn train_split(&self) -> &'a dyn BatchSource {
        self.train
    }

    /// The validation split, when there is one.
    pub fn valid_split(&self) -> Option<&'a dyn BatchSource> {
        self.valid
    }

    /// The (plain) device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn check_setup<S: Student, A: AuxModule, D: Distiller<A>>(
        &self,
        student: &S,
        teacher: &dyn Teacher,
        need: TeacherNeed,
        distiller: &D,
    ) -> Result<()> {
        self.config.validate()?;
        if need != TeacherNeed::Nothing
            && !distiller.accepts_top_k()
            && let Some(k) = teacher.top_k()
        {
            return Err(KdError::InvalidConfig(format!(
                "method `{}` needs the teacher's exact logits, but the teacher `{}` gives approximate outputs recovered from \
                 its top-{k} probabilities (use a cache of full logits, or the teacher itself)",
                distiller.name(),
                teacher.describe()
            )));
        }
        if self.train.is_empty() {
            return Err(KdError::InvalidConfig(format!("training split {} is empty", self.train.name())));
        }
        let classes = student.num_classes();
        if self.options.select_by.is_binary() && classes != 2 {
            return Err(KdError::InvalidConfig(format!(
                "selection by {:?} needs a binary task (2 classes), the student has {classes}",
                self.options.select_by
            )));
        }
        for split in [Some(self.train), self.valid, Some(self.test)].into_iter().flatten() {
            if split.num_classes() != classes {
                return Err(KdError::InvalidConfig(format!(
                    "{} has {} classes but the student has {classes}",
                    split.name(),
                    split.num_classes()
                )));
            }
        }
        if need != TeacherNeed::Nothing
            && let Some(t) = teacher.num_classes()
            && t != classes
        {
            return Err(KdError::ClassCountMismatch { teacher: t, student: classes });
        }
        Ok(())
    }

    /// Steps in every epoch: the same count [`Trainer::epoch_batches`] gives, without drawing
    /// an order.
    fn steps_per_epoch(&self) -> usize {
        let (n, b) = (self.train.len(), self.config.batch_size);
        if self.config.drop_last { n / b } else { n.div_ceil(b) }
    }

    fn epoch_batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let order = permutation(self.train.len(), self.config.seed, epoch as u64);
        order
            .chunks(self.config.batch_size)
            .filter(|c| !self.config.drop_last || c.len() == self.config.batch_size)
            .map(|c| c.to_vec())
            .collect()
    }

    /// Trains `student` with `distiller` and `teacher`. The student must have been built on
    /// `device.autodiff()`.
    pub fn fit<S: Student, A: AuxModule, D: Distiller<A>>(
        &self,
        student: S,
        distiller: &mut D,
        teacher: &dyn Teacher,
    ) -> Result<TrainOutcome<S, A>> {
        self.fit_with(student, distiller, teacher, &mut NoSideModels)
    }

    /// [`Trainer::fit`] with a [`SideModels`] trained beside the student on the same batches
    /// (dynamic stopping's control students), outside the student's loss.
    pub fn fit_with<S: Student, A: AuxModule, D: Distiller<A>>(
        &self,
        student: S,
        distiller: &mut D,
        teacher: &dyn Teacher,
        side: &mut dyn SideModels,
    ) -> Result<TrainOutcome<S, A>> {
        let need = distiller.teacher_need().union(side.teacher_need());
        self.check_setup(&student, teacher, need, distiller)?;
        let cfg = &self.config;
        let aux = self.init_aux(&student, distiller, teacher, need)?;
        side.start(student.num_classes(), &self.device)?;
        let mut model = (student, aux);
        let mut progress = Progress { optim: cfg.optimizer.build(), history: Vec::new(), best: None, initial_loss: None };
        let run = RunIdentity {
            method: distiller.name().to_string(),
            recipe: cfg.clone(),
            experiment: self.options.run_config.clone().unwrap_or(serde_json::Value::Null),
        };
        // One writer per checkpoint folder, for the whole run (released on return or exit).
        let _lock = self.options.checkpoint_dir.as_deref().map(|dir| FolderLock::acquire(dir, "training")).transpose()?;
        model = self.resume(&run, model, &mut progress, distiller, side)?;
        let start_epoch = progress.history.len() + 1;

        let steps_per_epoch = self.steps_per_epoch();
        let bar = self.progress_bar(steps_per_epoch, start_epoch);
        let mut finished = true;
        // `SelectedAndLast`: the selected epoch's model while its test pass waits.
        let mut unevaluated_best = None;
        for (epochs_this_call, epoch) in (start_epoch..=cfg.epochs).enumerate() {
            if self.options.stop_after_epochs.is_some_and(|n| epochs_this_call >= n) {
                finished = false;
                break;
            }
            let lr = cfg.schedule.lr_at(cfg.optimizer.lr(), epoch, cfg.epochs, cfg.lr_warmup_epochs);
            let started = Instant::now();
            let steps;
            (model, steps) =
                self.train_epoch(epoch, lr, epoch == start_epoch, model, &mut progress, distiller, teacher, need, side, &bar)?;
            if epoch == 1 && steps.steps > 0 && steps.all_zero {
                return Err(KdError::InvalidConfig(format!(
                    "the training loss of `{}` was exactly 0 at every step of epoch 1, so the student never moves (are all its loss \
                     weights 0?)",
                    distiller.name()
                )));
            }
            distiller.end_epoch(epoch)?;
            let train_seconds = started.elapsed().as_secs_f64() - steps.side_seconds;
            let last_of_call = epoch == cfg.epochs || self.options.stop_after_epochs.is_some_and(|n| epochs_this_call + 1 >= n);
            let record = self.evaluate_epoch(epoch, lr, steps, train_seconds, &model.0, &progress, last_of_call)?;
            let shown = match (record.test_evaluated, record.valid) {
                (false, Some(valid)) => format!("valid {:.2}%", valid.top1),
                _ => format!("test {:.2}%", record.test.top1),
            };
            bar.set_message(format!("epoch {epoch}: loss {:.4} {shown}", record.train_loss));
            let stop = self.end_epoch(record, &run, &model, &mut progress, distiller, side)?;
            if progress.history.last().is_some_and(|r| !r.test_evaluated && progress.best.is_some_and(|(e, _)| e == r.epoch)) {
                unevaluated_best = Some(model.0.valid());
            }
            if stop {
                break;
            }
        }
        bar.finish_and_clear();
        self.evaluate_selected(&mut progress, unevaluated_best, &model.0)?;
        let best_epoch = progress.best.map(|(e, _)| e).unwrap_or(0);
        let (student, aux) = model;
        Ok(TrainOutcome { student, aux, history: progress.history, best_epoch, finished })
    }

    /// The method's learnable parts, built for the outputs of a first (probe) batch.
    fn init_aux<S: Student, A: AuxModule, D: Distiller<A>>(
        &self,
        student: &S,
        distiller: &D,
        teacher: &dyn Teacher,
        need: TeacherNeed,
    ) -> Result<A> {
        let probe_idx: Vec<usize> = (0..self.train.len().min(self.config.batch_size.min(8))).collect();
        let probe = self.train.batch(&probe_idx, 1, 0, &self.device)?;
        let probe_teacher = teacher.outputs(&probe, need)?;
        let probe_student = student_forward(&student.valid(), probe.inputs.clone(), distiller.teacher_need())?;
        check_outputs(&probe_student, probe_teacher.as_ref())?;
        // Drawn on the host from the run's seed, so the method's learnable parts start the same
        // on every backend.
        let aux_seed = crate::rng::hash_key(&[self.config.seed, 0xA0C5]);
        let ad_device = self.device.clone().autodiff();
        crate::init::seeded_on_host(&ad_device, aux_seed, |host| distiller.init_aux(&probe_student, probe_teacher.as_ref(), host))
    }

    /// Binds the checkpoint folder to `run`: restores the model, `progress`, the method's state
    /// and the side models' from its `last.ckpt` when resuming, or writes `run.json` for a
    /// fresh run.
    fn resume<M: Module, D: Distiller<A>, A: AuxModule>(
        &self,
        run: &RunIdentity,
        model: M,
        progress: &mut Progress,
        distiller: &mut D,
        side: &mut dyn SideModels,
    ) -> Result<M> {
        let Some(dir) = &self.options.checkpoint_dir else { return Ok(model) };
        let Some((ckpt, meta)) = self.prepare_run_folder(dir, run)? else {
            run.write(dir)?;
            return Ok(model);
        };
        restore_best(dir, &ckpt, &meta)?;
        let model = load_module(model, ckpt.section("model")?)?;
        // The optimiser is still fresh here: its saved state replaces it.
        progress.optim = self
            .config
            .optimizer
            .build()
            .from_bytes(Bytes::from_bytes_vec(ckpt.section("optimizer")?.to_vec()))
            .map_err(|e| KdError::Record(format!("optimiser state: {e:?}")))?;
        distiller.load_state(ckpt.section("distiller")?)?;
        // Checkpoints written before side models existed have no section: nothing trained beside.
        side.load_state(ckpt.optional_section(SIDE_MODELS).unwrap_or_default())?;
        (progress.history, progress.best, progress.initial_loss) = (meta.history, meta.best, meta.initial_loss);
        self.trim_log(progress.history.len())?;
        Ok(model)
    }

    fn progress_bar(&self, steps_per_epoch: usize, start_epoch: usize) -> ProgressBar {
        let total_steps = (steps_per_epoch * self.config.epochs) as u64;
        let bar = if self.options.progress { ProgressBar::new(total_steps) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{elapsed_precise}<{eta_precise}] {wide_bar} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(self.options.label.clone());
        bar.set_position(((start_epoch - 1) * steps_per_epoch) as u64);
        bar
    }

    /// One epoch of steps: each batch prepared by the method, the teacher and the student run,
    /// the loss optimised, the method's and the side models' bookkeeping after the update.
    #[allow(clippy::too_many_arguments)]
    fn train_epoch<S: Student, A: AuxModule, D: Distiller<A>>(
        &self,
        epoch: usize,
        lr: f64,
        first_of_call: bool,
        mut model: (S, A),
        progress: &mut Progress,
        distiller: &mut D,
        teacher: &dyn Teacher,
        need: TeacherNeed,
        side: &mut dyn SideModels,
        bar: &ProgressBar,
    ) -> Result<((S, A), EpochSteps)> {
        let cfg = &self.config;
        let steps_per_epoch = self.steps_per_epoch();
        let mut sums = EpochSteps { all_zero: true, ..Default::default() };
        // The next batch is assembled (read, augmented, normalised) on a worker while this one
        // trains: batches are pure functions of (indices, epoch, view), so the order of work
        // changes nothing in the numbers. The worker builds it on the host device and this
        // thread moves it to the training device: libtorch's kernels called from a second
        // thread would start a second OpenMP team, and with more OpenMP threads than cores
        // libgomp stops spinning between parallel regions, so every kernel of the step waits
        // for its threads to wake (measured on 2 cores: about 330 context switches a step
        // instead of 6, resnet8's step 10% slower).
        let batches = self.epoch_batches(epoch);
        let (train, device) = (self.train, &self.device);
        let mut clock = PhaseClock::new(device, self.options.time_phases);
        let model = std::thread::scope(|scope| -> Result<(S, A)> {
            let (ready, next) = std::sync::mpsc::sync_channel::<Result<crate::Batch>>(1);
            scope.spawn(move || {
                let host = Device::flex();
                for indices in &batches {
                    if ready.send(train.batch(indices, epoch, 0, &host)).is_err() {
                        break; // the step loop stopped on an error
                    }
                }
            });
            for (step_in_epoch, batch) in next.into_iter().enumerate() {
                let batch = batch?.to_device(device);
                let ctx = StepContext {
                    epoch,
                    total_epochs: cfg.epochs,
                    step_in_epoch,
                    global_step: (epoch - 1) * steps_per_epoch + step_in_epoch,
                    seed: cfg.seed,
                };
                let batch = distiller.prepare_batch(&ctx, batch, self.train, &self.device)?;
                batch.check_labels(model.0.num_classes())?;
                clock.lap(Phase::Assemble)?;
                let teacher_out = teacher.outputs(&batch, need)?;
                clock.lap(Phase::Teacher)?;
                let student_out = student_forward(&model.0, batch.inputs.clone(), distiller.teacher_need())?;
                if sums.steps == 0 && first_of_call {
                    check_outputs(&student_out, teacher_out.as_ref())?;
                }
                clock.lap(Phase::Forward)?;
                let step = Step { ctx, batch: &batch, student: &student_out, teacher: teacher_out.as_ref(), aux: &model.1 };
                let terms = distiller.loss(&step)?;
                let total = terms.total()?;
                let names: Vec<&str> = terms.terms().iter().map(|(n, _)| n.as_str()).collect();
                // The loss terms and the count of correct predictions come to the host in one
                // transfer: one synchronisation per step, not two.
                let hits = student_out.logits.clone().without_autodiff().argmax(1).squeeze_dim::<1>(1).equal(batch.labels.clone());
                let mut values: Vec<Tensor<1>> = terms.terms().iter().map(|(_, t)| t.clone()).collect();
                values.push(hits.float().sum());
                clock.lap(Phase::Loss)?;
                let mut values = scalars(values)?;
                let top1 = values.pop().unwrap_or_default() as usize;
                if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
                    return Err(diagnose_non_finite(names[pos], epoch, step_in_epoch, &student_out, teacher_out.as_ref()));
                }
                for (name, value) in names.iter().zip(&values) {
                    *sums.term_sums.entry(name.to_string()).or_default() += value;
                }
                let step_loss = values.iter().sum::<f64>();
                progress.initial_loss.get_or_insert(step_loss);
                sums.all_zero &= step_loss == 0.0;
                sums.loss_sum += step_loss;
                sums.correct += top1;
                sums.seen += batch.len();
                sums.steps += 1;
                clock.lap(Phase::ReadBack)?;

                // The outputs as the loss saw them, for the method's bookkeeping after the update.
                let detached = student_out.detached();
                let grads = GradientsParams::from_grads(total.backward(), &model);
                clock.lap(Phase::Backward)?;
                model = progress.optim.step(lr, model, grads);
                clock.lap(Phase::Optimizer)?;
                let done = StepDone { ctx, batch: &batch, student: &detached, teacher: teacher_out.as_ref(), kept: terms.kept() };
                distiller.after_step(&done)?;
                let side_started = Instant::now();
                side.step(&ctx, &batch, teacher_out.as_ref(), lr)?;
                sums.side_seconds += side_started.elapsed().as_secs_f64();
                bar.inc(1);
                clock.lap(Phase::AfterStep)?;
            }
            Ok(model)
        })?;
        sums.phases = clock.finish();
        Ok((model, sums))
    }

    /// The epoch's record: its training sums and the evaluation of the student after it (the
    /// test split as [`RunOptions::test_evaluation`] says, given the run's `progress` and whether
    /// this is the `last` epoch this call trains).
    #[allow(clippy::too_many_arguments)]
    fn evaluate_epoch<S: Student>(
        &self,
        epoch: usize,
        lr: f64,
        steps: EpochSteps,
        train_seconds: f64,
        student: &S,
        progress: &Progress,
        last: bool,
    ) -> Result<EpochRecord> {
        let cfg = &self.config;
        let frozen = student.valid();
        // Finite training losses but non-finite outputs afterwards: the last updates blew the
        // weights up.
        let diverged = |e: KdError| match e {
            KdError::NonFinite { what } => KdError::Diverged {
                epoch,
                reason: format!("{what} are NaN or infinite after the epoch's updates (lower the learning rate)"),
            },
            other => other,
        };
        let valid = self.valid.map(|v| evaluate(&frozen, v, cfg.eval_batch_size, &self.device)).transpose().map_err(diverged)?;
        let carried = match (self.options.test_evaluation, valid, progress.history.last()) {
            (TestEvaluation::WhenSelected, Some(v), Some(previous)) if !last && !self.improves(&v, progress) => Some(previous.test),
            // Nothing evaluated before the first epoch: it holds an empty evaluation (0 samples).
            (TestEvaluation::SelectedAndLast, Some(_), previous) if !last => Some(previous.map(|p| p.test).unwrap_or_default()),
            _ => None,
        };
        let test_evaluated = carried.is_none();
        let test = match carried {
            Some(test) => test,
            None => evaluate(&frozen, self.test, cfg.eval_batch_size, &self.device).map_err(diverged)?,
        };
        let steps_f = steps.steps.max(1) as f64;
        Ok(EpochRecord {
            epoch,
            lr,
            train_terms: steps.term_sums.into_iter().map(|(k, v)| (k, v / steps_f)).collect(),
            train_loss: steps.loss_sum / steps_f,
            train_acc: 100.0 * steps.correct as f64 / steps.seen.max(1) as f64,
            valid,
            test,
            test_evaluated,
            train_seconds,
            phases: steps.phases,
        })
    }

    /// [`TestEvaluation::SelectedAndLast`]'s deferred pass: the selected epoch's test split, on
    /// the `kept` model (or, after a resume, the `student` of `best.ckpt`), written into its
    /// record, the records that carried an older evaluation after it, and the checkpoints.
    fn evaluate_selected<S: Student>(&self, progress: &mut Progress, kept: Option<S>, student: &S) -> Result<()> {
        let Some((best, _)) = progress.best else { return Ok(()) };
        let Some(at) = progress.history.iter().position(|r| r.epoch == best && !r.test_evaluated) else { return Ok(()) };
        let best_ckpt = self.options.checkpoint_dir.as_ref().map(|dir| dir.join("best.ckpt"));
        let model = match (kept, &best_ckpt) {
            (Some(model), _) => model,
            (None, Some(path)) => load_module(student.valid(), Checkpoint::load(path)?.section("student")?)?,
            (None, None) => return Err(KdError::Record(format!("epoch {best} was selected but neither kept nor saved"))),
        };
        let test = evaluate(&model, self.test, self.config.eval_batch_size, &self.device)?;
        for record in progress.history[at..].iter_mut().take_while(|r| r.epoch == best || !r.test_evaluated) {
            record.test = test;
        }
        progress.history[at].test_evaluated = true;
        let Some(dir) = &self.options.checkpoint_dir else { return Ok(()) };
        // A reopened run reads its history from the checkpoints: they get the evaluation too.
        for (file, epochs) in [("last.ckpt", progress.history.len()), ("best.ckpt", at + 1)] {
            let path = dir.join(file);
            let mut ckpt = Checkpoint::load(&path)?;
            let mut meta = CheckpointMeta::of(&ckpt, &path)?;
            meta.history = progress.history[..epochs].to_vec();
            ckpt.meta = meta.to_value()?;
            ckpt.save(&path)?;
        }
        Ok(())
    }

    /// The selection score of an epoch evaluated as `chosen` (validation, or test without one).
    fn selection_score(&self, chosen: &EvalMetrics) -> f64 {
        // f64::MIN, not -inf: the score is stored in the checkpoint's JSON, which has no infinities.
        self.options.select_by.score(chosen.top1, chosen.binary.as_ref()).unwrap_or(f64::MIN)
    }

    /// Whether an epoch evaluated as `chosen` becomes the best so far.
    fn improves(&self, chosen: &EvalMetrics, progress: &Progress) -> bool {
        let selection = self.selection_score(chosen);
        progress.best.is_none_or(|(_, best)| selection > best)
    }

    /// After an epoch: the best epoch, the divergence check, the log, the side models' verdict
    /// and the checkpoints. Returns whether the stage ends here (dynamic stopping).
    fn end_epoch<S: Student, A: AuxModule, D: Distiller<A>>(
        &self,
        mut record: EpochRecord,
        run: &RunIdentity,
        model: &(S, A),
        progress: &mut Progress,
        distiller: &D,
        side: &mut dyn SideModels,
    ) -> Result<bool> {
        let epoch = record.epoch;
        let chosen = record.valid.unwrap_or(record.test);
        let improved = self.improves(&chosen, progress);
        if improved {
            progress.best = Some((epoch, self.selection_score(&chosen)));
        }
        let first_epoch_loss = progress.history.first().map_or(record.train_loss, |r| r.train_loss);
        let initial_loss = progress.initial_loss.unwrap_or(record.train_loss);
        if let Some(reason) = self.options.divergence.verdict(&record, initial_loss, first_epoch_loss) {
            return Err(KdError::Diverged { epoch, reason });
        }
        let stop = side.end_epoch(&record, self.valid, &self.device)?;
        if stop && !record.test_evaluated {
            // Dynamic stopping made this the last epoch: its test accuracy is the run's last.
            record.test = evaluate(&model.0.valid(), self.test, self.config.eval_batch_size, &self.device)?;
            record.test_evaluated = true;
        }
        self.log_epoch(&record, distiller.name())?;
        progress.history.push(record);
        let Some(dir) = &self.options.checkpoint_dir else { return Ok(stop) };

        let meta = CheckpointMeta {
            method: run.method.clone(),
            config: self.config.clone(),
            run: Some(run.clone()),
            history: progress.history.clone(),
            best: progress.best,
            initial_loss: progress.initial_loss,
            epoch,
        }
        .to_value()?;
        // The student alone beside the whole model (student and the method's learnable parts),
        // so that the student can be loaded without knowing the method.
        let student = ("student".to_string(), module_bytes(&model.0)?);
        let model = ("model".to_string(), module_bytes(model)?);
        // The selected model's copy only for an epoch that improved.
        let best_sections = improved.then(|| vec![model.clone(), student.clone()]);
        let optimizer = progress.optim.into_bytes().map_err(|e| KdError::Record(format!("{e:?}")))?.to_vec();
        let sections = vec![
            model,
            student,
            ("optimizer".into(), optimizer),
            ("distiller".into(), distiller.save_state()?),
            (SIDE_MODELS.into(), side.save_state()?),
        ];
        Checkpoint { meta: meta.clone(), sections }.save(&dir.join("last.ckpt"))?;
        // best.ckpt after last.ckpt: a process killed between the two leaves the selected model
        // in last.ckpt, from which the resume restores best.ckpt (`restore_best`).
        if let Some(sections) = best_sections {
            Checkpoint { meta, sections }.save(&dir.join("best.ckpt"))?;
        }
        Ok(stop)
    }

    /// Binds the checkpoint folder to this run. A fresh run needs a folder without a run in it;
    /// with `resume` the folder's `last.ckpt` must have been written by the same run (method,
    /// recipe and the caller's configuration), and is returned with its metadata. A resumed
    /// folder that holds no run at all (nothing written yet) starts one.
    fn prepare_run_folder(&self, dir: &Path, run: &RunIdentity) -> Result<Option<(Checkpoint, CheckpointMeta)>> {
        let folder_error = |reason: String| KdError::RunFolder { path: dir.to_path_buf(), reason };
        let mut present: Vec<String> =
            ["last.ckpt", "best.ckpt", RunIdentity::FILE].into_iter().filter(|f| dir.join(f).exists()).map(String::from).collect();
        if let Some(log) = self.options.log_file.as_ref().filter(|l| l.parent() == Some(dir) && l.exists()) {
            present.push(log.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        }
        let last = dir.join("last.ckpt");
        if !self.options.resume {
            if present.is_empty() {
                return Ok(None);
            }
            return Err(folder_error(format!(
                "it already holds a run ({}): resume it (`--resume`) or choose another output folder",
                present.join(", ")
            )));
        }
        if !last.exists() {
            if present.is_empty() {
                // Nothing to resume yet (a chain's later stage, a seed not reached): start it.
                return Ok(None);
            }
            return Err(folder_error(format!(
                "cannot resume: last.ckpt is missing (the folder holds {}); the run's state is lost, remove the folder to start again",
                present.join(", ")
            )));
        }
        let ckpt = Checkpoint::load(&last)?;
        let meta = CheckpointMeta::of(&ckpt, &last)?;
        let as_json = |r: &RunIdentity| serde_json::to_value(r).map_err(|e| KdError::Record(format!("run identity: {e}")));
        let mut differences = Vec::new();
        json_differences("", &as_json(&meta.run_identity())?, &as_json(run)?, &mut differences);
        if !differences.is_empty() {
            let shown: Vec<&str> = differences.iter().take(8).map(String::as_str).collect();
            let more =
                if differences.len() > shown.len() { format!(" (and {} more)", differences.len() - shown.len()) } else { String::new() };
            return Err(folder_error(format!("cannot resume: last.ckpt was written by another run: {}{more}", shown.join("; "))));
        }
        Ok(Some((ckpt, meta)))
    }

    /// Drops the log lines of this run's epochs after `epochs` (written after the checkpoint
    /// the run resumes from), so that the log holds each epoch once; a line that is not a JSON
    /// record (the last one, torn by a crash during its write) is dropped with a warning.
    fn trim_log(&self, epochs: usize) -> Result<()> {
        let Some(path) = self.options.log_file.as_ref().filter(|p| p.exists()) else { return Ok(()) };
        let text = crate::files::read_regular_text(path)?;
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, line)| {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    eprintln!(
                        "warning: {} line {}: not a whole JSON record ({} bytes; a write cut short by a crash), dropped",
                        path.display(),
                        i + 1,
                        line.len()
                    );
                    return false;
                };
                let ours = v["label"].as_str() == Some(self.options.label.as_str());
                !(ours && v["record"]["epoch"].as_u64().is_some_and(|e| e as usize > epochs))
            })
            .map(|(_, line)| line)
            .collect();
        if kept.len() != text.lines().count() || (!text.is_empty() && !text.ends_with('\n')) {
            let mut out = kept.join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            crate::atomic::write_atomic(path, out.as_bytes())?;
        }
        Ok(())
    }

    fn log_epoch(&self, record: &EpochRecord, method: &str) -> Result<()> {
        let Some(path) = &self.options.log_file else { return Ok(()) };
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| KdError::io("creating folder", dir, e))?;
        }
        // The whole line in one write to a file opened for appending: writers of one log never
        // interleave inside a record.
        let line = format!("{}\n", serde_json::json!({"label": self.options.label, "method": method, "record": record}));
        let mut file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| KdError::io("opening log", path, e))?;
        file.write_all(line.as_bytes()).map_err(|e| KdError::io("writing log", path, e))
    }
}

/// Makes the run folder's `best.ckpt` hold the epoch that `last.ckpt` selected. The trainer writes
/// `best.ckpt` after `last.ckpt`, so a process killed between the two leaves a `last.ckpt` that
/// selected its own epoch beside the `best.ckpt` of an earlier one (or none): the selected model
/// is `last.ckpt`'s, copied here. Any other disagreement (a folder written by a version that wrote
/// `best.ckpt` first, killed between the writes) has lost the selected model: an error says so.
fn restore_best(dir: &Path, last: &Checkpoint, meta: &CheckpointMeta) -> Result<()> {
    let Some((selected, _)) = meta.best else { return Ok(()) };
    let path = dir.join("best.ckpt");
    let saved = if path.exists() { Some(CheckpointMeta::of(&Checkpoint::load(&path)?, &path)?.epoch) } else { None };
    if saved == Some(selected) {
        return Ok(());
    }
    if selected != meta.epoch {
        let holds = saved.map_or("no best.ckpt".to_string(), |epoch| format!("best.ckpt holds epoch {epoch}"));
        return Err(KdError::RunFolder {
            path: dir.to_path_buf(),
            reason: format!(
                "cannot resume: last.ckpt (epoch {}) selected epoch {selected}, but {holds}: the selected model is lost (a process killed between the two files' writes); remove the folder to start again",
                meta.epoch
            ),
        });
    }
    let sections = ["model", "student"].iter().map(|name| Ok((name.to_string(), last.section(name)?.to_vec()))).collect::<Result<_>>()?;
    Checkpoint { meta: last.meta.clone(), sections }.save(&path)
}

/// Top-1, top-5 and cross-entropy of `model` (in inference mode) on `data`, without augmentation.
pub fn evaluate<M: Classifier>(model: &M, data: &dyn BatchSource, batch_size: usize, device: &Device) -> Result<EvalMetrics> {
    let mut top1 = 0usize;
    let mut top5 = 0usize;
    let mut ce = 0.0;
    let binary = model.num_classes() == 2;
    let mut positive_probs: Vec<f64> = Vec::new();
    let mut labels: Vec<usize> = Vec::new();
    let mut class_counts = vec![0usize; model.num_classes()];
    let mut predicted = vec![false; model.num_classes()];
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = data.batch(chunk, 0, 0, device)?;
        batch.check_labels(model.num_classes())?;
        for &l in &batch.labels_host {
            class_counts[l] += 1;
        }
        let out = model.forward(batch.inputs.clone().without_autodiff());
        if binary {
            let probs = burn::tensor::activation::softmax(out.logits.clone(), 1).narrow(1, 1, 1);
            let probs = probs.into_data().convert::<f64>().try_to_vec::<f64>().map_err(|e| KdError::Record(format!("{e:?}")))?;
            positive_probs.extend(probs);
            labels.extend(&batch.labels_host);
        }
        let (c1, c5, top) = topk_correct(out.logits.clone(), &batch.labels_host, 5);
        for c in top {
            if let Some(p) = predicted.get_mut(c) {
                *p = true;
            }
        }
        top1 += c1;
        top5 += c5;
        let ce_sum = scalars(vec![cross_entropy(out.logits, batch.labels).sum()])?[0];
        if !ce_sum.is_finite() {
            return Err(KdError::NonFinite { what: format!("the model's outputs on {}", data.name()) });
        }
        ce += ce_sum;
    }
    let n = data.len().max(1) as f64;
    let binary = if binary && !labels.is_empty() { Some(binary_metrics(&positive_probs, &labels)?) } else { None };
    let chance = 100.0 * class_counts.iter().copied().max().unwrap_or(0) as f64 / n;
    let predicted_classes = predicted.iter().filter(|&&p| p).count();
    Ok(EvalMetrics {
        top1: 100.0 * top1 as f64 / n,
        top5: 100.0 * top5 as f64 / n,
        ce_loss: ce / n,
        samples: data.len(),
        binary,
        chance,
        predicted_classes,
    })
}

/// The leaves where two JSON values differ, as `path: saved vs now` lines.
fn json_differences(path: &str, saved: &serde_json::Value, now: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match (saved, now) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                json_differences(&join(k), a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), out);
            }
        }
        _ if saved == now => {}
        _ => out.push(format!("`{}` is {saved} in the checkpoint but {now} now", if path.is_empty() { "run" } else { path })),
    }
}

/// Pulls `[1]` tensors to the host in one transfer.
fn scalars(values: Vec<Tensor<1>>) -> Result<Vec<f64>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let joined = Tensor::cat(values.into_iter().map(|t| t.without_autodiff()).collect(), 0);
    joined.into_data().convert::<f64>().try_to_vec::<f64>().map_err(|e| KdError::Record(format!("reading loss values: {e:?}")))
}

fn has_non_finite(t: &Tensor<2>) -> bool {
    let t = t.clone().without_autodiff();
    t.clone().is_nan().any().into_scalar::<bool>() || t.abs().max().into_scalar::<f64>().is_infinite()
}

/// The student's outputs: with its pre-activation features when the distiller reads the
/// teacher's ([`TeacherNeed::PreActivation`], OFD), its plain forward pass otherwise.
fn student_forward<S: Student>(student: &S, inputs: Tensor<4>, need: TeacherNeed) -> Result<ModelOutput> {
    if need == TeacherNeed::PreActivation {
        return student.forward_preact(inputs).map_err(|e| KdError::InvalidConfig(format!("student: {e}")));
    }
    Ok(student.forward(inputs))
}

/// Checks shapes and values of the first outputs: same class count, finite logits.
fn check_outputs(student: &ModelOutput, teacher: Option<&ModelOutput>) -> Result<()> {
    if has_non_finite(&student.logits) {
        return Err(KdError::NonFinite { what: "student logits".into() });
    }
    if let Some(t) = teacher {
        if t.num_classes() != student.num_classes() {
            return Err(KdError::ClassCountMismatch { teacher: t.num_classes(), student: student.num_classes() });
        }
        if has_non_finite(&t.logits) {
            return Err(KdError::NonFinite { what: "teacher logits".into() });
        }
    }
    Ok(())
}

fn diagnose_non_finite(term: &str, epoch: usize, step: usize, student: &ModelOutput, teacher: Option<&ModelOutput>) -> KdError {
    let source = if teacher.is_some_and(|t| has_non_finite(&t.logits)) {
        "teacher logits"
    } else if has_non_finite(&student.logits) {
        "student logits (training diverged: lower the learning rate)"
    } else {
        "the loss computation"
    };
    KdError::NonFinite { what: format!("loss term `{term}` at epoch {epoch}, step {step}; the first bad input is {source}") }
}

/// Every float parameter of a module, flattened in visiting order (for exact comparisons).
pub fn parameter_values<M: Module>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let data = param.val().into_data().convert::<f32>();
            self.0.extend(data.try_to_vec::<f32>().unwrap_or_default());
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_batches_and_warmup_are_bounded_and_named() {
        let base = TrainConfig {
            epochs: 10,
            batch_size: 64,
            optimizer: OptimizerConfig::sgd(0.05),
            schedule: LrSchedule::Cosine { min_lr: 0.0 },
            lr_warmup_epochs: 0,
            seed: 0,
            drop_last: false,
            eval_batch_size: 256,
        };
        assert!(base.validate().is_ok());
        let cases = [
            (TrainConfig { epochs: MAX_EPOCHS + 1, ..base.clone() }, "epochs: 100001 is above the limit of 100000"),
            (TrainConfig { epochs: usize::MAX, ..base.clone() }, "is above the limit"),
            (TrainConfig { batch_size: usize::MAX, ..base.clone() }, "batch_size: 18446744073709551615 is above the limit"),
            (TrainConfig { eval_batch_size: MAX_BATCH_SIZE + 1, ..base.clone() }, "eval_batch_size"),
            (
                TrainConfig { lr_warmup_epochs: 11, ..base.clone() },
                "lr_warmup_epochs: a warm-up of 11 epochs is longer than the run of 10 epochs",
            ),
            (TrainConfig { schedule: LrSchedule::Cosine { min_lr: 1.0 }, ..base.clone() }, "schedule.min_lr (1) is above"),
        ];
        for (config, want) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        assert!(TrainConfig { lr_warmup_epochs: 10, ..base }.validate().is_ok());
    }
}
