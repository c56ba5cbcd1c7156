//! Static teacher-assistant chains: TAKD and DGKD (the crate README says which parts follow the papers).
//!
//! A chain is `teacher > assistant_1 > ... > student`, all from one [`ModelFamily`]. Stage 0
//! trains the teacher with cross-entropy (or loads it); stage `k` distils model `k` from the
//! previous model (TAKD) or from all previous models (DGKD) with [`MultiTeacherKd`], optionally
//! under dynamic stopping ([`ControlStudents`]). The next stage learns from the best checkpoint of
//! the previous one, as the TAKD code does.
//!
//! With a checkpoint folder, each stage writes into its own subfolder, named after its position,
//! its network and a key of everything it depends on (data, the models before it, the recipes),
//! so that another plan never picks up a stage it did not train, and plans that share a prefix
//! (the same teacher) share those stages. A finished stage leaves `model.ckpt` (the weights the
//! next stage learns from, and its report); with `resume`, a finished stage is loaded from it,
//! and an interrupted one continues from its `last.ckpt`.

mod plan;
mod report;
mod runner;
mod stage_folder;

use burn::tensor::Device;
use kd_core::{Result, RunOptions};
use kd_data::DatasetSplits;

pub use plan::{ChainMode, ChainPlan, DropConfig, TeacherWeights};
pub use report::{ChainReport, ChainRun, StageReport, StageRole};
pub(crate) use runner::{ChainRunner, KnownStage};

/// Trains (or resumes) a chain and reports on it.
///
/// `device` is a plain device (the networks live on `device.autodiff()`). From `options`:
/// `checkpoint_dir` is the root of the stage folders, `resume` loads finished stages and
/// continues an interrupted one, `stop_after_epochs` caps the epochs trained by this call over
/// all stages, and the log file, progress bar, label and selection metric apply to every stage.
pub fn run_chain(plan: &ChainPlan, data: &DatasetSplits, device: &Device, options: &RunOptions) -> Result<ChainReport> {
    Ok(run_chain_with_models(plan, data, device, options)?.report)
}

/// [`run_chain`], also returning the trained networks.
pub fn run_chain_with_models(plan: &ChainPlan, data: &DatasetSplits, device: &Device, options: &RunOptions) -> Result<ChainRun> {
    ChainRunner::new(plan, data, device, options)?.run(Vec::new())
}
