//! Training the stages of a plan in order, each learning from the ones before it.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use kd_baselines::CrossEntropy;
use kd_core::checkpoint::Checkpoint;
use kd_core::files::{FileFingerprint, fingerprint_file, read_regular_text};
use kd_core::rng::hash_key;
use kd_core::train::{load_checkpoint_model, load_module, module_bytes};
use kd_core::{
    BatchSource, Distiller, EpochRecord, FrozenTeacher, KdError, NoAux, NoTeacher, Result, RunOptions, TrainConfig, TrainOutcome, Trainer,
    evaluate,
};
use kd_data::DatasetSplits;
use kd_models::AnyModel;
use serde::{Deserialize, Serialize};

use super::plan::*;
use super::report::*;
use crate::family::build_seeded;
use crate::multi_teacher::{DropPolicy, MultiTeacherKd};
use crate::stopping::{ControlModel, ControlStudents};

/// The file in a loaded teacher's stage folder that keeps its evaluation.
const LOADED_TEACHER_EVALUATION: &str = "loaded-teacher.json";

/// A loaded teacher's accuracies, and the checkpoint they were measured on.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadedTeacherEvaluation {
    checkpoint: FileFingerprint,
    /// The splits' fingerprints ([`BatchSource::fingerprint`]).
    splits: (u64, Option<u64>),
    test: f64,
    valid: Option<f64>,
}

/// A model already trained, given to [`ChainRunner::run`] in place of its stage.
pub(crate) type KnownStage = (AnyModel, StageReport);

/// Runs the stages of a plan.
pub(crate) struct ChainRunner<'a> {
    pub(super) plan: &'a ChainPlan,
    pub(super) data: &'a DatasetSplits,
    pub(super) device: Device,
    pub(super) options: &'a RunOptions,
    pub(super) input: [usize; 3],
    pub(super) classes: usize,
    pub(super) scales: Vec<usize>,
    pub(super) names: Vec<String>,
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
        self.train_stage(0, &mut ce, None, &self.plan.teacher_train, Vec::new(), budget)
    }

    /// The test and validation accuracy of the loaded teacher `model` (from `path`). With a
    /// checkpoint folder, the first call writes them into the teacher's stage folder, next to the
    /// checkpoint's fingerprint, and later calls (the other chains of a plan that share the
    /// teacher) read them there instead of evaluating the test split again; another file under
    /// the same path is evaluated afresh.
    fn loaded_teacher_accuracy(&self, model: &AnyModel, path: &Path) -> Result<(f64, Option<f64>)> {
        let dir = self.stage_dir(0)?;
        let memo = dir.as_ref().map(|dir| dir.join(LOADED_TEACHER_EVALUATION));
        let fingerprint = fingerprint_file(path)?;
        let splits = (self.data.test.fingerprint(), self.data.valid.as_ref().map(|v| v.fingerprint()));
        if let Some(memo) = memo.as_deref().filter(|m| m.exists()) {
            // A memo that does not read (another version's) is a miss: the evaluation replaces it.
            let read = read_regular_text(memo).and_then(|text| {
                serde_json::from_str::<LoadedTeacherEvaluation>(&text)
                    .map_err(|e| KdError::Malformed { path: memo.to_path_buf(), reason: e.to_string() })
            });
            match read {
                Ok(saved)
                    if saved.checkpoint.size == fingerprint.size && saved.checkpoint.hash == fingerprint.hash && saved.splits == splits =>
                {
                    return Ok((saved.test, saved.valid));
                }
                Ok(_) => {}
                Err(e) => eprintln!("evaluating the loaded teacher again: {e}"),
            }
        }
        let batch = self.plan.teacher_train.eval_batch_size;
        let frozen = burn::module::Module::valid(model);
        let test = evaluate(&frozen, &self.data.test, batch, &self.device)?.top1;
        let valid = self.data.valid.as_ref().map(|v| evaluate(&frozen, v, batch, &self.device)).transpose()?.map(|m| m.top1);
        if let (Some(dir), Some(memo)) = (dir, memo) {
            let saved = LoadedTeacherEvaluation { checkpoint: fingerprint, splits, test, valid };
            let json = serde_json::to_vec_pretty(&saved).map_err(|e| KdError::Record(e.to_string()))?;
            std::fs::create_dir_all(&dir).map_err(|e| KdError::io("creating", &dir, e))?;
            kd_core::checkpoint::write_atomic(&memo, &json)?;
        }
        Ok((test, valid))
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
        let (test, valid) = self.loaded_teacher_accuracy(&model, path)?;
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
        let mut kd = kd;
        let mut controls = match &p.stopping {
            None => None,
            Some(stopping) => {
                let control = ControlModel {
                    spec: p.family.spec(self.scales[k])?,
                    input: self.input,
                    classes: self.classes,
                    seed: self.init_seed(k, &p.stage_train),
                };
                let chain_teacher = FrozenTeacher::new(models[0].clone(), self.names[0].clone());
                let controls = ControlStudents::new(*stopping, control, p.stage_train.optimizer.clone())?
                    .with_kd_teacher(Some(chain_teacher), p.loss)?
                    .with_eval_batch_size(p.stage_train.eval_batch_size);
                Some(controls)
            }
        };
        self.train_stage(k, &mut kd, controls.as_mut(), &p.stage_train, teacher_names, budget)
    }

    /// Trains stage `k` with `distiller`, and the dynamic-stopping `controls` beside it when
    /// there are any.
    fn train_stage<D: Distiller>(
        &self,
        k: usize,
        distiller: &mut D,
        mut controls: Option<&mut ControlStudents>,
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
            Some(d) => self.prior_run(d, distiller, controls.as_deref_mut())?,
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
            time_phases: self.options.time_phases,
            test_evaluation: self.options.test_evaluation,
        };
        let mut trainer = Trainer::new(config.clone(), &self.data.train, &self.data.test, self.device.clone()).with_options(options);
        if let Some(v) = &self.data.valid {
            trainer = trainer.with_validation(v as &dyn BatchSource);
        }
        let spec = self.plan.family.spec(self.scales[k])?;
        let student = build_seeded(&spec, self.input, self.classes, &self.device.clone().autodiff(), self.init_seed(k, config))?;
        let outcome: TrainOutcome<AnyModel, NoAux> = match controls.as_deref_mut() {
            Some(c) => trainer.fit_with(student, distiller, &NoTeacher, c)?,
            None => trainer.fit(student, distiller, &NoTeacher)?,
        };
        let ran = outcome.history.len().saturating_sub(epochs_before);
        if let Some(b) = budget.as_mut() {
            *b = b.saturating_sub(ran);
        }
        let complete = outcome.finished || controls.as_ref().is_some_and(|c| c.stopped());
        let report = (!outcome.history.is_empty()).then(|| StageReport {
            index: k,
            role: self.role(k),
            model: self.names[k].clone(),
            scale: self.scales[k],
            // Dynamic stopping shows in the method's name, as the chain tables list it.
            method: if controls.is_some() { format!("{}+stop", distiller.name()) } else { distiller.name().to_string() },
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
            stopping: controls.as_ref().map(|c| c.report(config.epochs)),
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
