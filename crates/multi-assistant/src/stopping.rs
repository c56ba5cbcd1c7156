//! Dynamic stopping of a distillation stage against a control group (docs/methods.md, "Multi-assistant KD").
//!
//! The abstract: "sets student models with different training methods as a control group, and
//! achieves personalized design of the stopping rounds for knowledge distillation". Our reading:
//! next to the distilled model, students of the same architecture are trained on the same
//! batches with other methods (cross-entropy only, and direct KD from the chain's teacher).
//! After each epoch all of them are evaluated on the validation split; the distilled model's
//! lead over the best control is smoothed, and the stage stops once that smoothed lead has not
//! improved for `patience` epochs. The training loop keeps the best checkpoint as always.
//!
//! [`StoppingRule`] is the pure decision (numbers in, [`Decision`] out). [`ControlStudents`]
//! trains the control group beside the student through the trainer's [`SideModels`] seam (its
//! own optimiser, outside the student's loss, so the student's logged loss, divergence check and
//! step time are its own) and runs the rule after each epoch.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use kd_core::loss::cross_entropy_mean;
use kd_core::state::{StateReader, put_usize};
use kd_core::train::{load_module, module_bytes};
use kd_core::{
    Batch, BatchSource, EpochRecord, FrozenTeacher, KdError, ModelOutput, OptimizerConfig, Result, SideModels, StepContext, Teacher,
    TeacherNeed, evaluate,
};
use kd_models::{AnyModel, ModelSpec};
use serde::{Deserialize, Serialize};

use crate::family::build_seeded;
use crate::multi_teacher::{StageLoss, stage_loss_terms};

/// How the per-epoch lead is smoothed before the plateau test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Smoothing {
    /// The raw lead.
    None,
    /// Exponential moving average: `s_t = alpha * lead_t + (1 - alpha) * s_{t-1}`, `s_1 = lead_1`.
    Ema {
        /// Weight of the newest value, in `(0, 1]`.
        alpha: f64,
    },
    /// Mean of the last `size` leads (fewer at the start).
    Window {
        /// Window length, at least 1.
        size: usize,
    },
}

/// Which control students train beside the distilled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSet {
    /// A student trained with cross-entropy only.
    pub ce: bool,
    /// A student distilled directly from the chain's teacher (no assistants).
    pub kd: bool,
}

impl Default for ControlSet {
    fn default() -> Self {
        ControlSet { ce: true, kd: true }
    }
}

impl ControlSet {
    /// The controls' names, in the order of [`ControlStudents::controls`].
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.ce {
            names.push("ce".to_string());
        }
        if self.kd {
            names.push("kd".to_string());
        }
        names
    }
}

/// Configuration of dynamic stopping. The defaults are our choice (the abstract gives no
/// numbers): patience 10 epochs, EMA with alpha 0.3, any improvement counts, no minimum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoppingConfig {
    /// Epochs without improvement of the smoothed lead before the stage stops (at least 1).
    pub patience: usize,
    /// Smoothing of the lead.
    pub smoothing: Smoothing,
    /// An improvement must exceed the best smoothed lead by more than this (percentage points).
    pub min_delta: f64,
    /// Never stop before this epoch.
    pub min_epochs: usize,
    /// The control students.
    pub controls: ControlSet,
    /// Controls start from the distilled student's initial weights (a paired comparison);
    /// otherwise each draws its own.
    pub same_init: bool,
    /// The share of each batch (its first rows, at least one) the control students train on, in
    /// `(0, 1]`. The controls only have to show when distillation stops paying off, not to be
    /// good students; at 0.25 they cost a quarter of what full-batch controls cost. 1: the
    /// whole batch.
    pub control_batch_fraction: f64,
}

impl Default for StoppingConfig {
    fn default() -> Self {
        StoppingConfig {
            patience: 10,
            smoothing: Smoothing::Ema { alpha: 0.3 },
            min_delta: 0.0,
            min_epochs: 0,
            controls: ControlSet::default(),
            same_init: true,
            control_batch_fraction: 0.25,
        }
    }
}

impl StoppingConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.patience == 0 {
            return Err(KdError::InvalidConfig("stopping patience must be at least 1".into()));
        }
        if !(self.min_delta.is_finite() && self.min_delta >= 0.0) {
            return Err(KdError::InvalidConfig(format!("stopping min_delta must be >= 0, got {}", self.min_delta)));
        }
        match self.smoothing {
            Smoothing::Ema { alpha } if !(alpha > 0.0 && alpha <= 1.0) => {
                return Err(KdError::InvalidConfig(format!("EMA alpha must be in (0, 1], got {alpha}")));
            }
            Smoothing::Window { size: 0 } => return Err(KdError::InvalidConfig("smoothing window must be at least 1".into())),
            _ => {}
        }
        let f = self.control_batch_fraction;
        if !(f.is_finite() && f > 0.0 && f <= 1.0) {
            return Err(KdError::InvalidConfig(format!("stopping control_batch_fraction must be in (0, 1], got {f}")));
        }
        if !self.controls.ce && !self.controls.kd {
            return Err(KdError::InvalidConfig("dynamic stopping needs at least one control student".into()));
        }
        Ok(())
    }
}

/// What [`StoppingRule::update`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Train another epoch.
    Continue,
    /// End the stage now.
    Stop,
}

/// One epoch seen by the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopRecord {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Validation accuracy of the distilled model (percent).
    pub distilled: f64,
    /// Validation accuracy of each control (percent).
    pub controls: Vec<f64>,
    /// `distilled - max(controls)`.
    pub lead: f64,
    /// The smoothed lead.
    pub smoothed: f64,
}

/// The stopping decision, free of any training: feed it accuracies, one call per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoppingRule {
    config: StoppingConfig,
    records: Vec<StopRecord>,
    best: Option<(usize, f64)>,
    since_best: usize,
    stopped_at: Option<usize>,
}

impl StoppingRule {
    /// A rule that has seen nothing yet.
    pub fn new(config: StoppingConfig) -> Result<Self> {
        config.validate()?;
        Ok(StoppingRule { config, records: Vec::new(), best: None, since_best: 0, stopped_at: None })
    }

    /// Takes one epoch's validation accuracies (percent) of the distilled model and of each
    /// control, and decides. Once it has said [`Decision::Stop`] it keeps saying it.
    pub fn update(&mut self, distilled_acc: f64, control_accs: &[f64]) -> Result<Decision> {
        if control_accs.is_empty() {
            return Err(KdError::InvalidConfig("the stopping rule needs at least one control accuracy".into()));
        }
        if !distilled_acc.is_finite() || control_accs.iter().any(|a| !a.is_finite()) {
            return Err(KdError::NonFinite { what: "accuracies given to the stopping rule".into() });
        }
        let epoch = self.records.len() + 1;
        let best_control = control_accs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lead = distilled_acc - best_control;
        let smoothed = match self.config.smoothing {
            Smoothing::None => lead,
            Smoothing::Ema { alpha } => match self.records.last() {
                Some(prev) => alpha * lead + (1.0 - alpha) * prev.smoothed,
                None => lead,
            },
            Smoothing::Window { size } => {
                let earlier: Vec<f64> = self.records.iter().rev().take(size - 1).map(|r| r.lead).collect();
                (lead + earlier.iter().sum::<f64>()) / (earlier.len() + 1) as f64
            }
        };
        self.records.push(StopRecord { epoch, distilled: distilled_acc, controls: control_accs.to_vec(), lead, smoothed });
        match self.best {
            Some((_, best)) if smoothed <= best + self.config.min_delta => self.since_best += 1,
            _ => {
                self.best = Some((epoch, smoothed));
                self.since_best = 0;
            }
        }
        if self.stopped_at.is_none() && self.since_best >= self.config.patience && epoch >= self.config.min_epochs {
            self.stopped_at = Some(epoch);
        }
        Ok(if self.stopped_at.is_some() { Decision::Stop } else { Decision::Continue })
    }

    /// The epoch at which the rule said stop, if it did.
    pub fn stopped_at(&self) -> Option<usize> {
        self.stopped_at
    }

    /// Epochs since the smoothed lead last improved.
    pub fn epochs_since_best(&self) -> usize {
        self.since_best
    }

    /// The epoch and value of the best smoothed lead.
    pub fn best(&self) -> Option<(usize, f64)> {
        self.best
    }

    /// Every epoch seen.
    pub fn records(&self) -> &[StopRecord] {
        &self.records
    }

    /// The configuration.
    pub fn config(&self) -> &StoppingConfig {
        &self.config
    }
}

/// What dynamic stopping did in one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoppingReport {
    /// The controls, in the order of [`StopRecord::controls`].
    pub controls: Vec<String>,
    /// The epoch the stage stopped at (none: it ran its whole schedule).
    pub stopped_at: Option<usize>,
    /// Epochs of the fixed schedule.
    pub planned_epochs: usize,
    /// Epochs not trained thanks to the early stop (0 when it ran to the end).
    pub epochs_saved: usize,
    /// The epoch of the best smoothed lead.
    pub best_lead_epoch: Option<usize>,
    /// The distilled model's lead over the best control at the last epoch seen (percentage
    /// points of validation accuracy).
    pub final_lead: Option<f64>,
    /// Every epoch seen.
    pub records: Vec<StopRecord>,
}

impl StoppingReport {
    /// The report of `rule` for a stage of `planned_epochs`.
    pub fn from_rule(rule: &StoppingRule, controls: Vec<String>, planned_epochs: usize) -> Self {
        StoppingReport {
            controls,
            stopped_at: rule.stopped_at(),
            planned_epochs,
            epochs_saved: rule.stopped_at().map_or(0, |e| planned_epochs.saturating_sub(e)),
            best_lead_epoch: rule.best().map(|(e, _)| e),
            final_lead: rule.records().last().map(|r| r.lead),
            records: rule.records().to_vec(),
        }
    }
}

/// How to build the control students: the distilled student's architecture and initial seed.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlModel {
    /// The student's network.
    pub spec: ModelSpec,
    /// Input shape `[channels, height, width]`.
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// The seed the student was initialised with (see [`build_seeded`]).
    pub seed: u64,
}

const STATE_MAGIC: &[u8; 8] = b"KDCTRL01";

/// The control group of dynamic stopping, trained beside the distilled student
/// ([`SideModels`]): each control on the first rows of the student's batch, with its own
/// optimiser (the stage's, at the stage's learning rate), outside the student's loss. After
/// every epoch the controls are evaluated on the validation split and the [`StoppingRule`]
/// decides. The KD control learns from `kd_teacher` when one is given
/// ([`ControlStudents::with_kd_teacher`], what a chain does), otherwise from the training loop's
/// teacher, which it then asks for. A run without a validation split is an error.
pub struct ControlStudents {
    config: StoppingConfig,
    model: ControlModel,
    optimizer: OptimizerConfig,
    kd_teacher: Option<FrozenTeacher<AnyModel>>,
    kd_loss: StageLoss,
    eval_batch_size: usize,
    rule: StoppingRule,
    /// The controls (on the autodiff device) and their optimiser, once started.
    trained: Option<(Vec<AnyModel>, ModuleOptimizer)>,
}

impl ControlStudents {
    /// Controls built as `model` describes, trained with `optimizer`. The KD control uses the
    /// default [`StageLoss`] until [`ControlStudents::with_kd_teacher`].
    pub fn new(config: StoppingConfig, model: ControlModel, optimizer: OptimizerConfig) -> Result<Self> {
        let rule = StoppingRule::new(config)?;
        optimizer.validate()?;
        Ok(ControlStudents {
            config,
            model,
            optimizer,
            kd_teacher: None,
            kd_loss: StageLoss::default(),
            eval_batch_size: 256,
            rule,
            trained: None,
        })
    }

    /// The teacher the KD control learns from, and its loss.
    pub fn with_kd_teacher(mut self, teacher: Option<FrozenTeacher<AnyModel>>, loss: StageLoss) -> Result<Self> {
        loss.validate()?;
        self.kd_teacher = teacher;
        self.kd_loss = loss;
        Ok(self)
    }

    /// Batch size of the controls' evaluation (default 256).
    pub fn with_eval_batch_size(mut self, batch_size: usize) -> Self {
        self.eval_batch_size = batch_size.max(1);
        self
    }

    /// The stopping rule and what it has seen.
    pub fn rule(&self) -> &StoppingRule {
        &self.rule
    }

    /// Whether the rule has stopped the stage.
    pub fn stopped(&self) -> bool {
        self.rule.stopped_at().is_some()
    }

    /// The report for a stage of `planned_epochs`.
    pub fn report(&self, planned_epochs: usize) -> StoppingReport {
        StoppingReport::from_rule(&self.rule, self.config.controls.names(), planned_epochs)
    }

    /// The control students, once training has started.
    pub fn controls(&self) -> Option<&[AnyModel]> {
        self.trained.as_ref().map(|(c, _)| c.as_slice())
    }

    /// Restores only the stopping rule from bytes [`SideModels::save_state`] wrote (a chain
    /// reads whether a stage already stopped before resuming it).
    pub fn restore_rule(&mut self, bytes: &[u8]) -> Result<()> {
        self.rule = self.read_state(bytes)?.0;
        Ok(())
    }

    /// The parts of a saved state: the rule (checked against this configuration), the
    /// controls' parameters and their optimiser's state.
    fn read_state<'b>(&self, bytes: &'b [u8]) -> Result<(StoppingRule, &'b [u8], &'b [u8])> {
        if bytes.is_empty() {
            return Err(self.missing("the control students' state, which the checkpoint does not hold (written by an older version)"));
        }
        let mut r = StateReader::new(bytes, "control students");
        r.magic(STATE_MAGIC)?;
        let mut part = || -> Result<&'b [u8]> {
            let len = r.usize()?;
            r.take(len)
        };
        let (rule, models, optim) = (part()?, part()?, part()?);
        r.finish()?;
        let rule: StoppingRule = serde_json::from_slice(rule).map_err(|e| r.error(format!("stopping rule: {e}")))?;
        if rule.config != self.config {
            return Err(KdError::InvalidConfig("cannot resume: the checkpoint's stopping rule has another configuration".into()));
        }
        Ok((rule, models, optim))
    }

    fn missing(&self, what: &str) -> KdError {
        KdError::Missing { method: "dynamic stopping".into(), what: what.into() }
    }
}

impl SideModels for ControlStudents {
    fn teacher_need(&self) -> TeacherNeed {
        if self.config.controls.kd && self.kd_teacher.is_none() { TeacherNeed::Logits } else { TeacherNeed::Nothing }
    }

    fn start(&mut self, classes: usize, device: &Device) -> Result<()> {
        let m = &self.model;
        if classes != m.classes {
            return Err(KdError::InvalidConfig(format!("the control students have {} classes, the student {classes}", m.classes)));
        }
        let device = device.clone().autodiff();
        let controls = (0..self.config.controls.names().len())
            .map(|i| {
                let seed = if self.config.same_init { m.seed } else { kd_core::rng::hash_key(&[m.seed, i as u64 + 1, 0xC0_47_01]) };
                build_seeded(&m.spec, m.input, m.classes, &device, seed)
            })
            .collect::<Result<Vec<_>>>()?;
        self.trained = Some((controls, self.optimizer.build()));
        Ok(())
    }

    fn step(&mut self, _ctx: &StepContext, batch: &Batch, teacher: Option<&ModelOutput>, lr: f64) -> Result<()> {
        let dims = batch.inputs.dims();
        // The controls are built for `model.input`; another shape would fail inside Burn.
        if dims[1..] != self.model.input {
            return Err(KdError::ShapeMismatch {
                what: "inputs of the control students".into(),
                expected: self.model.input.to_vec(),
                actual: dims[1..].to_vec(),
            });
        }
        // The controls train on the batch's first rows only (see `control_batch_fraction`).
        let rows = ((batch.len() as f64 * self.config.control_batch_fraction).ceil() as usize).clamp(1, batch.len().max(1));
        let part = batch.first(rows);
        let names = self.config.controls.names();
        let kd_teacher_logits = match (&self.kd_teacher, names.iter().any(|n| n == "kd")) {
            (_, false) => None,
            (Some(t), true) => t.outputs(&part, TeacherNeed::Logits)?.map(|o| o.logits),
            (None, true) => teacher.map(|o| o.logits.clone().narrow(0, 0, rows)),
        };
        if names.iter().any(|n| n == "kd") && kd_teacher_logits.is_none() {
            return Err(self.missing("a teacher for the KD control"));
        }
        let not_started = self.missing("its control students (start was not called)");
        let (controls, optim) = self.trained.as_mut().ok_or(not_started)?;
        let mut total: Option<Tensor<1>> = None;
        for (name, control) in names.iter().zip(controls.iter()) {
            let logits = kd_core::Classifier::forward(control, part.inputs.clone()).logits;
            let value = match (name.as_str(), &kd_teacher_logits) {
                // Direct KD with the chain's stage loss.
                ("kd", Some(teacher_logits)) => {
                    let (ce, kd) = stage_loss_terms(logits, part.labels.clone(), std::slice::from_ref(teacher_logits), &self.kd_loss)?;
                    ce + kd
                }
                _ => cross_entropy_mean(logits, part.labels.clone()),
            };
            total = Some(match total {
                None => value,
                Some(t) => t + value,
            });
        }
        if let Some(total) = total {
            let grads = GradientsParams::from_grads(total.backward(), &*controls);
            // Taken, not cloned: the update may then reuse the parameters' buffers.
            *controls = optim.step(lr, std::mem::take(controls), grads);
        }
        Ok(())
    }

    fn end_epoch(&mut self, record: &EpochRecord, valid: Option<&dyn BatchSource>, device: &Device) -> Result<bool> {
        let valid = valid.ok_or_else(|| self.missing("a validation split"))?;
        let distilled = record.valid.as_ref().ok_or_else(|| self.missing("a validation split"))?.top1;
        let (controls, _) = self.trained.as_ref().ok_or_else(|| self.missing("its control students (start was not called)"))?;
        let accs = controls
            .iter()
            .map(|c| evaluate(&c.valid(), valid, self.eval_batch_size, device).map(|m| m.top1))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.rule.update(distilled, &accs)? == Decision::Stop)
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        let (controls, optim) = self.trained.as_ref().ok_or_else(|| self.missing("its control students (start was not called)"))?;
        let rule = serde_json::to_vec(&self.rule).map_err(|e| KdError::Record(format!("stopping rule: {e}")))?;
        let models = module_bytes(controls)?;
        let optim = optim.into_bytes().map_err(|e| KdError::Record(format!("control optimiser: {e:?}")))?.to_vec();
        let mut out = STATE_MAGIC.to_vec();
        for part in [&rule, &models, &optim] {
            put_usize(&mut out, part.len());
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let (rule, models, optim_bytes) = self.read_state(bytes)?;
        let not_started = self.missing("its control students (start was not called)");
        let (controls, optim) = self.trained.as_mut().ok_or(not_started)?;
        *controls = load_module(std::mem::take(controls), models)?;
        *optim = self
            .optimizer
            .build()
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(optim_bytes.to_vec()))
            .map_err(|e| KdError::Record(format!("control optimiser: {e:?}")))?;
        self.rule = rule;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(patience: usize) -> StoppingConfig {
        StoppingConfig { patience, smoothing: Smoothing::None, ..Default::default() }
    }

    #[test]
    fn stops_on_a_plateau_and_not_before() {
        let mut rule = StoppingRule::new(plain(3)).unwrap();
        // The lead grows for five epochs (1, 2, ..., 5 points over the best control)...
        for e in 1..=5 {
            let d = rule.update(60.0 + 2.0 * e as f64, &[50.0 + e as f64, 40.0]).unwrap();
            assert_eq!(d, Decision::Continue, "epoch {e}");
        }
        assert_eq!(rule.best(), Some((5, 15.0)));
        // ...then stays flat: patience 3 stops exactly at epoch 8.
        assert_eq!(rule.update(70.0, &[55.0, 41.0]).unwrap(), Decision::Continue);
        assert_eq!(rule.update(70.0, &[55.0]).unwrap(), Decision::Continue);
        assert_eq!(rule.epochs_since_best(), 2);
        assert_eq!(rule.update(69.0, &[55.0]).unwrap(), Decision::Stop);
        assert_eq!(rule.stopped_at(), Some(8));
        // It stays stopped.
        assert_eq!(rule.update(90.0, &[10.0]).unwrap(), Decision::Stop);
        assert_eq!(rule.records()[7].lead, 14.0);
        let report = StoppingReport::from_rule(&rule, vec!["ce".into(), "kd".into()], 20);
        assert_eq!((report.stopped_at, report.epochs_saved, report.best_lead_epoch), (Some(8), 12, Some(9)));
    }

    #[test]
    fn improvement_resets_patience_and_min_epochs_holds() {
        let mut rule = StoppingRule::new(StoppingConfig { min_epochs: 6, ..plain(2) }).unwrap();
        let leads = [5.0, 4.0, 6.0, 6.0, 6.0, 6.0, 6.0];
        let decisions: Vec<Decision> = leads.iter().map(|l| rule.update(50.0 + l, &[50.0]).unwrap()).collect();
        // Epoch 2 does not improve, epoch 3 does (reset); epochs 4-5 exhaust patience, but the
        // minimum of 6 epochs holds the stop until epoch 6.
        assert_eq!(decisions[..5], [Decision::Continue; 5]);
        assert_eq!(decisions[5], Decision::Stop);
        assert_eq!(rule.stopped_at(), Some(6));
    }

    #[test]
    fn smoothing_delays_the_stop_on_a_noisy_rise() {
        let leads = [0.0, 4.0, 3.0, 5.0, 4.5, 4.8, 4.7, 4.6, 4.7, 4.6, 4.6, 4.6];
        let stop_epoch = |smoothing| {
            let mut rule = StoppingRule::new(StoppingConfig { smoothing, ..plain(2) }).unwrap();
            leads.iter().position(|l| rule.update(50.0 + l, &[50.0]).unwrap() == Decision::Stop).map(|i| i + 1)
        };
        // Raw: the dip at epoch 3 and the plateau after epoch 4 stop it at epoch 6.
        assert_eq!(stop_epoch(Smoothing::None), Some(6));
        // EMA keeps rising while the lead stays above its average: later stop.
        assert_eq!(stop_epoch(Smoothing::Ema { alpha: 0.5 }), Some(11));
        assert_eq!(stop_epoch(Smoothing::Window { size: 3 }), Some(8));
        let mut rule = StoppingRule::new(StoppingConfig { smoothing: Smoothing::Window { size: 2 }, ..plain(5) }).unwrap();
        rule.update(52.0, &[50.0]).unwrap();
        rule.update(56.0, &[50.0]).unwrap();
        assert_eq!(rule.records()[1].smoothed, 4.0);
    }

    #[test]
    fn min_delta_and_bad_input() {
        let mut rule = StoppingRule::new(StoppingConfig { min_delta: 1.0, ..plain(2) }).unwrap();
        // Gains of 0.5 points do not count as improvements.
        assert_eq!(rule.update(50.0, &[50.0]).unwrap(), Decision::Continue);
        assert_eq!(rule.update(50.5, &[50.0]).unwrap(), Decision::Continue);
        assert_eq!(rule.update(51.0, &[50.0]).unwrap(), Decision::Stop);
        assert!(rule.update(50.0, &[]).is_err());
        assert!(rule.update(f64::NAN, &[1.0]).is_err());
        assert!(StoppingRule::new(plain(0)).is_err());
        assert!(StoppingRule::new(StoppingConfig { smoothing: Smoothing::Ema { alpha: 0.0 }, ..plain(1) }).is_err());
        assert!(StoppingRule::new(StoppingConfig { controls: ControlSet { ce: false, kd: false }, ..plain(1) }).is_err());
        for f in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(StoppingRule::new(StoppingConfig { control_batch_fraction: f, ..plain(1) }).is_err(), "{f}");
        }
        let json = serde_json::to_string(&rule).unwrap();
        assert_eq!(serde_json::from_str::<StoppingRule>(&json).unwrap(), rule);
    }
}
