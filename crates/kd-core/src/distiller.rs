//! The one seam a new method needs: the `Distiller` trait.
//!
//! A method is its loss: [`Distiller::loss`] is the only required method, in the shape of
//! Burn's `TrainStep::step` and mdistiller's `forward_train`. Everything else has a default:
//! the teacher it reads (logits), no learnable parts ([`NoAux`]), no per-batch preparation, no
//! bookkeeping after a step, no state.
//!
//! ```
//! use kd_core::loss::{cross_entropy_mean, kd_kl_mean};
//! use kd_core::{Distiller, LossTerms, Result, Step};
//!
//! /// Hinton's KD at temperature 4, weights 0.1 / 0.9.
//! struct Kd;
//!
//! impl Distiller for Kd {
//!     fn name(&self) -> &str {
//!         "my-kd"
//!     }
//!
//!     fn loss(&mut self, step: &Step) -> Result<LossTerms> {
//!         let teacher = step.logit_teacher(self.name())?;
//!         let ce = cross_entropy_mean(step.student.logits.clone(), step.batch.labels.clone());
//!         let kd = kd_kl_mean(step.student.logits.clone(), teacher.logits.clone(), 4.0);
//!         Ok(LossTerms::new().with("ce", ce.mul_scalar(0.1)).with("kd", kd.mul_scalar(0.9)))
//!     }
//! }
//! ```

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::data::{Batch, BatchSource};
use crate::error::{KdError, Result};
use crate::model::{ModelOutput, TeacherNeed};

/// Where the training loop is when it asks for a loss.
#[derive(Debug, Clone, Copy)]
pub struct StepContext {
    /// Current epoch, counted from 1 (warm-up factors use `min(epoch / W, 1)`).
    pub epoch: usize,
    /// Number of epochs of the stage.
    pub total_epochs: usize,
    /// Step within the epoch, from 0.
    pub step_in_epoch: usize,
    /// Steps since the start of training, from 0.
    pub global_step: usize,
    /// The run's seed.
    pub seed: u64,
}

impl StepContext {
    /// `min(epoch / warmup_epochs, 1)`; 1 when `warmup_epochs` is 0.
    pub fn warmup_factor(&self, warmup_epochs: usize) -> f64 {
        if warmup_epochs == 0 { 1.0 } else { (self.epoch as f64 / warmup_epochs as f64).min(1.0) }
    }
}

/// One training step as a method's loss sees it: where the loop is, the batch (with any rows
/// [`Distiller::prepare_batch`] replayed at its front, [`Batch::replayed`]), the student's
/// outputs (with gradients), the teacher's (when the method asks for them) and the method's
/// learnable parts.
pub struct Step<'a, Aux = NoAux> {
    /// Where the training loop is.
    pub ctx: StepContext,
    /// The batch the student ran on.
    pub batch: &'a Batch,
    /// The student's outputs on the batch.
    pub student: &'a ModelOutput,
    /// The teacher's outputs on the batch, when [`Distiller::teacher_need`] asks for any.
    pub teacher: Option<&'a ModelOutput>,
    /// The method's learnable parts.
    pub aux: &'a Aux,
}

impl<'a> Step<'a> {
    /// A step of a method without learnable parts (add them with [`Step::with_aux`]).
    pub fn new(ctx: StepContext, batch: &'a Batch, student: &'a ModelOutput, teacher: Option<&'a ModelOutput>) -> Self {
        Step { ctx, batch, student, teacher, aux: &NoAux { _none: () } }
    }

    /// The same step with the method's learnable parts.
    pub fn with_aux<Aux>(self, aux: &'a Aux) -> Step<'a, Aux> {
        Step { ctx: self.ctx, batch: self.batch, student: self.student, teacher: self.teacher, aux }
    }
}

impl<Aux> Step<'_, Aux> {
    /// The teacher's outputs, or an error naming the method and `what` it reads.
    pub fn teacher(&self, method: &str, what: &str) -> Result<&ModelOutput> {
        require_teacher(method, self.teacher, what)
    }

    /// The teacher's outputs for a logit method, checked against the student's (see
    /// [`logit_teacher`]).
    pub fn logit_teacher(&self, method: &str) -> Result<&ModelOutput> {
        logit_teacher(method, self.batch, self.student, self.teacher)
    }
}

/// A step after the optimiser's update, as [`Distiller::after_step`] sees it: the batch, and
/// the outputs the loss saw, detached (computed before the update), with what the loss kept
/// ([`LossTerms::keep`]).
pub struct StepDone<'a> {
    /// Where the training loop is.
    pub ctx: StepContext,
    /// The batch the student ran on.
    pub batch: &'a Batch,
    /// The student's outputs, detached.
    pub student: &'a ModelOutput,
    /// The teacher's outputs, when there were any.
    pub teacher: Option<&'a ModelOutput>,
    /// The values the loss kept for this hook, detached, by name.
    pub kept: &'a [(String, Tensor<1>)],
}

impl StepDone<'_> {
    /// The value the loss kept under `name`, or a protocol error naming `method`.
    pub fn kept(&self, method: &str, name: &str) -> Result<&Tensor<1>> {
        self.kept
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| KdError::Protocol { method: method.into(), reason: format!("its loss kept no value named `{name}`") })
    }
}

/// Named loss terms of one step; the loss optimised is their sum. A loss may also keep
/// per-step values (per-row losses, say) for [`Distiller::after_step`]; they are detached and
/// never enter the loss.
#[derive(Debug, Clone, Default)]
pub struct LossTerms {
    terms: Vec<(String, Tensor<1>)>,
    kept: Vec<(String, Tensor<1>)>,
}

impl LossTerms {
    /// No terms yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a term (a `[1]` tensor, already weighted).
    pub fn with(mut self, name: impl Into<String>, value: Tensor<1>) -> Self {
        self.terms.push((name.into(), value));
        self
    }

    /// Adds a term in place.
    pub fn push(&mut self, name: impl Into<String>, value: Tensor<1>) {
        self.terms.push((name.into(), value));
    }

    /// Keeps `value` (detached) for this step's [`Distiller::after_step`] under `name`.
    pub fn keep(mut self, name: impl Into<String>, value: Tensor<1>) -> Self {
        self.kept.push((name.into(), value.without_autodiff()));
        self
    }

    /// The terms.
    pub fn terms(&self) -> &[(String, Tensor<1>)] {
        &self.terms
    }

    /// The values kept for [`Distiller::after_step`].
    pub fn kept(&self) -> &[(String, Tensor<1>)] {
        &self.kept
    }

    /// The loss to optimise: the sum of the terms.
    pub fn total(&self) -> Result<Tensor<1>> {
        let mut iter = self.terms.iter().map(|(_, t)| t.clone());
        let first = iter.next().ok_or_else(|| KdError::InvalidConfig("a distiller returned no loss term".into()))?;
        Ok(iter.fold(first, |acc, t| acc + t))
    }
}

/// Learnable parts of a distiller (FitNet's regressor...) for methods that have none: the
/// default of [`Distiller`]'s type parameter.
#[derive(Module, Debug)]
pub struct NoAux {
    #[module(skip)]
    _none: (),
}

impl NoAux {
    /// The empty set of learnable parts.
    pub fn new() -> Self {
        NoAux { _none: () }
    }
}

impl Default for NoAux {
    fn default() -> Self {
        Self::new()
    }
}

/// Learnable parts a [`Distiller`] trains jointly with the student (optimised and checkpointed
/// with it). A type of learnable parts says whether it can exist without being built from a
/// probe batch: [`NoAux`] can, so methods without learnable parts need no `init_aux`.
pub trait AuxModule: Module + 'static {
    /// The parts when they need no probe batch; `None` (the default) when they must be built
    /// by [`Distiller::init_aux`].
    fn without_probe() -> Option<Self> {
        None
    }
}

impl AuxModule for NoAux {
    fn without_probe() -> Option<Self> {
        Some(NoAux::new())
    }
}

/// A distillation method: its loss, and defaults for the rest.
///
/// The training loop runs the teacher (when [`Distiller::teacher_need`] asks for it) and the
/// student on each batch, then calls [`Distiller::loss`], steps the optimiser, and calls
/// [`Distiller::after_step`] with the detached outputs. A method with learnable parts (FitNet's
/// regressor) implements `Distiller<Parts>` and builds them in [`Distiller::init_aux`]; they are
/// optimised and checkpointed with the student. State the method keeps between steps (tables,
/// replay buffers) is checkpointed through [`Distiller::save_state`]. A method that changes the
/// batch (replays earlier samples) does so in [`Distiller::prepare_batch`], and the replayed
/// rows travel in the batch ([`Batch::replayed`]).
pub trait Distiller<Aux: AuxModule = NoAux> {
    /// The method's loss on one step: named terms, already weighted, whose sum is optimised.
    fn loss(&mut self, step: &Step<'_, Aux>) -> Result<LossTerms>;

    /// The method's name in logs, records and tables: the registry's name for the method
    /// (default: the type's name, for methods outside the registry).
    fn name(&self) -> &str {
        let full = std::any::type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full)
    }

    /// What the method needs from the teacher. Default: its logits.
    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::Logits
    }

    /// Whether the method can learn from approximate (top-k) teacher outputs a cache recovers.
    /// Default: no, it needs the teacher's exact logits.
    fn accepts_top_k(&self) -> bool {
        false
    }

    /// Builds the learnable parts, given the outputs of a first (probe) batch. Default: the
    /// parts that need no probe ([`NoAux`]); a method whose parts need one must implement it.
    fn init_aux(&self, _student: &ModelOutput, _teacher: Option<&ModelOutput>, _device: &Device) -> Result<Aux> {
        Aux::without_probe().ok_or_else(|| KdError::Protocol {
            method: self.name().to_string(),
            reason: "it has learnable parts but does not build them (implement `Distiller::init_aux`)".into(),
        })
    }

    /// Changes the batch before the forward pass (replay of earlier samples, carried in
    /// [`Batch::replayed`]). Default: unchanged.
    fn prepare_batch(&mut self, _ctx: &StepContext, batch: Batch, _data: &dyn BatchSource, _device: &Device) -> Result<Batch> {
        Ok(batch)
    }

    /// Host bookkeeping after the optimiser's step (tables, replay buffers), on the detached
    /// outputs the loss saw. Default: nothing.
    fn after_step(&mut self, _step: &StepDone<'_>) -> Result<()> {
        Ok(())
    }

    /// Called after each epoch's last step.
    fn end_epoch(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }

    /// The method's state as bytes, for checkpoints. Default: stateless.
    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// Restores what [`Distiller::save_state`] wrote.
    fn load_state(&mut self, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// One step of the protocol without an optimiser (tests, custom loops): the loss, then
/// [`Distiller::after_step`] on the detached outputs, as the training loop calls them.
pub fn step_without_update<Aux: AuxModule, D: Distiller<Aux> + ?Sized>(distiller: &mut D, step: &Step<'_, Aux>) -> Result<LossTerms> {
    let terms = distiller.loss(step)?;
    let student = step.student.detached();
    distiller.after_step(&StepDone { ctx: step.ctx, batch: step.batch, student: &student, teacher: step.teacher, kept: terms.kept() })?;
    Ok(terms)
}

/// The teacher's outputs a distiller needs, or an error naming the method and `what` it reads.
pub fn require_teacher<'a>(method: &str, teacher: Option<&'a ModelOutput>, what: &str) -> Result<&'a ModelOutput> {
    teacher.ok_or_else(|| KdError::Missing { method: method.into(), what: format!("the teacher's {what}") })
}

/// The teacher's outputs for a logit method, checked once for every logit distiller: present,
/// with logits of the student's batch size and class count, and a label for every row. (Values
/// that are not finite are the training loop's to catch: it checks the first batch's outputs
/// and every step's loss terms, and names the teacher when its logits are the cause.)
pub fn logit_teacher<'a>(method: &str, batch: &Batch, student: &ModelOutput, teacher: Option<&'a ModelOutput>) -> Result<&'a ModelOutput> {
    let teacher = require_teacher(method, teacher, "logits")?;
    crate::loss::check_logits(method, &student.logits, &teacher.logits, &batch.labels)?;
    Ok(teacher)
}
