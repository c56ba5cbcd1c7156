//! Plain cross-entropy training: the student alone, the baseline every method must beat.

use kd_core::Student;
use kd_core::loss::cross_entropy_mean;
use kd_core::registry::{Prepared, Value, no_config};
use kd_core::{Distiller, LossTerms, Result, Step, TeacherNeed};

/// The method's name.
pub const NAME: &str = "ce";

/// Cross-entropy with the hard labels; no teacher.
#[derive(Debug, Clone, Default)]
pub struct CrossEntropy;

impl Distiller for CrossEntropy {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::Nothing
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        Ok(LossTerms::new().with("ce", cross_entropy_mean(step.student.logits.clone(), step.batch.labels.clone())))
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    Prepared::new(NAME, &no_config(NAME, user)?, CrossEntropy)
}
