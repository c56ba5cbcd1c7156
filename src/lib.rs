//! # kd: knowledge distillation on Burn
//!
//! The facade of the workspace: it re-exports [`kd_core`] (traits, losses, training loop),
//! [`kd_models`], [`kd_data`], and each method crate behind a feature of its name. Backends are
//! features too (`flex`, the default CPU backend; `ndarray`; `wgpu`; `vulkan`); [`backend::device`]
//! turns a `--backend` name into a device, with a clear error when it is not compiled in.
//!
//! ```no_run
//! use kd::prelude::*;
//!
//! # fn main() -> anyhow::Result<()> {
//! // A training program keeps the memory its steps free (see `allocator`).
//! kd::allocator::retain_freed_memory();
//! let device = kd::backend::device("flex")?;
//! let data = kd::data::load_dataset("mnist", &kd::data::registry::LoadOptions {
//!     train_limit: Some(2000), test_limit: Some(500), ..Default::default() })?;
//! let teacher = ModelSpec::parse("mlp-256-256")?.build([1, 28, 28], 10, &device.clone().autodiff())?;
//! let student = ModelSpec::parse("mlp-32")?.build([1, 28, 28], 10, &device.clone().autodiff())?;
//! let config = TrainConfig { epochs: 2, batch_size: 64, optimizer: OptimizerConfig::sgd(0.05),
//!     schedule: LrSchedule::Constant, lr_warmup_epochs: 0, seed: 1, drop_last: false, eval_batch_size: 256 };
//! let trainer = Trainer::new(config, &data.train, &data.test, device.clone());
//! let teacher = trainer.fit(teacher, &mut kd::baselines::CrossEntropy, &NoTeacher)?.student;
//! let teacher = FrozenTeacher::new(teacher, "mlp-256-256");
//! let mut kd = kd::baselines::Kd::new(Default::default())?;
//! let outcome = trainer.fit(student, &mut kd, &teacher)?;
//! println!("student with KD: best {:.2}%", outcome.best_acc());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub use kd_core as core;
pub use kd_data as data;
pub use kd_models as models;

#[cfg(feature = "baselines")]
pub use kd_baselines as baselines;
#[cfg(feature = "crd")]
pub use kd_crd as crd;
#[cfg(feature = "dckd")]
pub use kd_dckd as dckd;
#[cfg(feature = "debiased")]
pub use kd_debiased as debiased;
#[cfg(feature = "multi-assistant")]
pub use kd_multi_assistant as multi_assistant;
#[cfg(feature = "reviewkd")]
pub use kd_reviewkd as reviewkd;
#[cfg(feature = "rld")]
pub use kd_rld as rld;
#[cfg(feature = "toast")]
pub use kd_toast as toast;

pub mod allocator;
pub mod backend;
pub mod experiment;
pub mod methods;

/// The types most programs use.
pub mod prelude {
    pub use kd_core::{
        Batch, BatchSource, Classifier, Distiller, FrozenTeacher, KdError, LossTerms, LrSchedule, ModelOutput, NoTeacher, OptimizerConfig,
        RunOptions, StepContext, Student, Teacher, TeacherNeed, TestEvaluation, TrainConfig, Trainer,
    };
    pub use kd_models::{AnyModel, ModelSpec};
}
