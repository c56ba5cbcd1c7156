//! The one seam a new method needs: the `Distiller` trait.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::data::{Batch, BatchSource};
use crate::error::{KdError, Result};
use crate::model::{ModelOutput, TeacherNeed};
use crate::record::EpochRecord;

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

/// Named loss terms of one step; the loss optimised is their sum.
#[derive(Debug, Clone, Default)]
pub struct LossTerms {
    terms: Vec<(String, Tensor<1>)>,
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

    /// The terms.
    pub fn terms(&self) -> &[(String, Tensor<1>)] {
        &self.terms
    }

    /// The loss to optimise: the sum of the terms.
    pub fn total(&self) -> Result<Tensor<1>> {
        let mut iter = self.terms.iter().map(|(_, t)| t.clone());
        let first = iter.next().ok_or_else(|| KdError::InvalidConfig("a distiller returned no loss term".into()))?;
        Ok(iter.fold(first, |acc, t| acc + t))
    }
}

/// Learnable parts of a distiller (FitNet's regressor...) for methods that have none.
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

/// A distillation method.
///
/// The training loop runs the teacher (when [`Distiller::teacher_need`] asks for it) and the
/// student on each batch, then calls [`Distiller::loss`]. A distiller may own learnable parts
/// ([`Distiller::Aux`], optimised and checkpointed with the student) and state (tables, buffers:
/// [`Distiller::save_state`]), and may change the batch before the forward pass
/// ([`Distiller::prepare_batch`], for methods that replay samples).
pub trait Distiller {
    /// Learnable parts trained jointly with the student; [`NoAux`] when there are none.
    type Aux: Module + 'static;

    /// The method's name in logs and tables.
    fn name(&self) -> String;

    /// What the method needs from the teacher.
    fn teacher_need(&self) -> TeacherNeed;

    /// Builds the learnable parts, given the outputs of a first (probe) batch.
    fn init_aux(&self, student: &ModelOutput, teacher: Option<&ModelOutput>, device: &Device) -> Result<Self::Aux>;

    /// Changes the batch before the forward pass (replay of earlier samples). Default: unchanged.
    fn prepare_batch(&mut self, _ctx: &StepContext, batch: Batch, _data: &dyn BatchSource, _device: &Device) -> Result<Batch> {
        Ok(batch)
    }

    /// The named loss terms of one step.
    fn loss(
        &mut self,
        ctx: &StepContext,
        batch: &Batch,
        student: &ModelOutput,
        teacher: Option<&ModelOutput>,
        aux: &Self::Aux,
    ) -> Result<LossTerms>;

    /// Called after each epoch's last step.
    fn end_epoch(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }

    /// Called after each epoch's evaluation: returning `true` ends the stage early (dynamic
    /// stopping). It sees the epoch's record, the learnable parts (control models trained side
    /// by side live there) and the validation split. Default: never stop.
    fn should_stop(&mut self, _record: &EpochRecord, _aux: &Self::Aux, _valid: Option<&dyn BatchSource>, _device: &Device) -> Result<bool> {
        Ok(false)
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
