//! Plain cross-entropy training: the student alone, the baseline every method must beat.

use burn::tensor::Device;
use kd_core::Student;
use kd_core::loss::cross_entropy_mean;
use kd_core::registry::{Prepared, Value, no_config};
use kd_core::{Batch, Distiller, LossTerms, ModelOutput, NoAux, Result, StepContext, TeacherNeed};

/// Cross-entropy with the hard labels; no teacher.
#[derive(Debug, Clone, Default)]
pub struct CrossEntropy;

impl Distiller for CrossEntropy {
    type Aux = NoAux;

    fn name(&self) -> String {
        "ce".into()
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::Nothing
    }

    fn init_aux(&self, _: &ModelOutput, _: Option<&ModelOutput>, _: &Device) -> Result<NoAux> {
        Ok(NoAux::new())
    }

    fn loss(&mut self, _: &StepContext, batch: &Batch, student: &ModelOutput, _: Option<&ModelOutput>, _: &NoAux) -> Result<LossTerms> {
        Ok(LossTerms::new().with("ce", cross_entropy_mean(student.logits.clone(), batch.labels.clone())))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    Prepared::new("ce", &no_config("ce", user)?, CrossEntropy)
}
