//! Models trained beside the student, outside its loss: the `SideModels` seam.
//!
//! Dynamic stopping trains control students on the student's batches and compares them after
//! every epoch. They are not part of the method: their losses must not enter the student's
//! logged loss, its divergence check or its step time. A [`SideModels`] is handed to
//! [`crate::Trainer::fit_with`]; the loop calls it after each student step with the same batch
//! and learning rate, after each epoch's evaluation (where it may end the stage), and saves and
//! restores its state with the checkpoints.

use burn::tensor::Device;

use crate::data::{Batch, BatchSource};
use crate::distiller::StepContext;
use crate::error::Result;
use crate::model::{ModelOutput, TeacherNeed};
use crate::record::EpochRecord;

/// Something trained beside the student on the same batches, with its own optimiser.
pub trait SideModels {
    /// What it needs from the training loop's teacher (the loop computes the union of this and
    /// the method's need). Default: nothing.
    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::Nothing
    }

    /// Builds what it trains, once, before the first step (after a resume, before
    /// [`SideModels::load_state`]).
    fn start(&mut self, classes: usize, device: &Device) -> Result<()>;

    /// One training step on the student's batch at learning rate `lr`; `teacher` holds the
    /// loop's teacher outputs when it computed any.
    fn step(&mut self, ctx: &StepContext, batch: &Batch, teacher: Option<&ModelOutput>, lr: f64) -> Result<()>;

    /// After each epoch's evaluation of the student: `true` ends the stage early.
    fn end_epoch(&mut self, record: &EpochRecord, valid: Option<&dyn BatchSource>, device: &Device) -> Result<bool>;

    /// Its state (models, optimiser, decisions) as bytes, for checkpoints.
    fn save_state(&self) -> Result<Vec<u8>>;

    /// Restores what [`SideModels::save_state`] wrote.
    fn load_state(&mut self, bytes: &[u8]) -> Result<()>;
}

/// No side models: what [`crate::Trainer::fit`] trains beside the student.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSideModels;

impl SideModels for NoSideModels {
    fn start(&mut self, _classes: usize, _device: &Device) -> Result<()> {
        Ok(())
    }

    fn step(&mut self, _ctx: &StepContext, _batch: &Batch, _teacher: Option<&ModelOutput>, _lr: f64) -> Result<()> {
        Ok(())
    }

    fn end_epoch(&mut self, _record: &EpochRecord, _valid: Option<&dyn BatchSource>, _device: &Device) -> Result<bool> {
        Ok(false)
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn load_state(&mut self, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }
}
