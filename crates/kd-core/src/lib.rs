//! # kd-core
//!
//! The shared core of the `kd` knowledge-distillation workspace: the [`Teacher`], [`Student`]
//! and [`Distiller`] traits, [`ModelOutput`], the loss primitives every method shares
//! ([`loss`]), and the training loop ([`Trainer`]) with schedules, evaluation, atomic
//! checkpoints and resume. It knows no method: each method crate implements [`Distiller`].
#![warn(missing_docs)]

pub mod atomic;
pub mod check;
pub mod checkpoint;
pub mod data;
pub mod distiller;
pub mod error;
pub mod files;
pub mod init;
pub mod lock;
pub mod logit_stand;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod phases;
pub mod record;
pub mod registry;
pub mod replay;
pub mod rng;
pub mod run_files;
pub mod side_models;
pub mod state;
pub mod teacher_cache;
pub mod train;
pub mod warmup;

pub use burn;
pub use data::{Batch, BatchSource};
pub use distiller::{AuxModule, Distiller, LossTerms, NoAux, Step, StepContext, StepDone, logit_teacher, require_teacher};
pub use error::{KdError, Result};
pub use metrics::{BinaryMetrics, SelectBy};
pub use model::{Classifier, FrozenTeacher, ModelOutput, NoTeacher, PreActivation, Student, Teacher, TeacherNeed};
pub use optim::{LrSchedule, OptimizerConfig};
pub use phases::StepPhases;
pub use side_models::{NoSideModels, SideModels};
pub use teacher_cache::{CacheContent, DrawPool, TeacherCache};
pub use train::{DivergenceCheck, EpochRecord, EvalMetrics, RunOptions, TestEvaluation, TrainConfig, TrainOutcome, Trainer, evaluate};
pub use warmup::Warmup;
