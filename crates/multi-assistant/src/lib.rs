#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod chain;
pub mod family;
pub mod multi_teacher;
pub mod search;
pub mod stopping;

#[cfg(test)]
mod tests;

pub use chain::{
    ChainMode, ChainPlan, ChainReport, ChainRun, DropConfig, StageReport, StageRole, TeacherWeights, run_chain, run_chain_with_models,
};
pub use family::{FamilyMember, ModelFamily, PLANE_SIZES, RESNET_DEPTHS, build_seeded};
pub use multi_teacher::{DropPolicy, KdReduce, KlReduction, MultiTeacherKd, StageLoss, kept_teachers, multi_teacher_kd, stage_loss_terms};
pub use search::{
    CandidateProbe, DynamicPlan, DynamicReport, OnReject, ProbeTrainer, SearchConfig, SearchReport, SearchStep, StopReason, TrainingProbe,
    run_dynamic, search_assistants,
};
pub use stopping::{
    ControlModel, ControlSet, ControlStudents, Decision, Smoothing, StopRecord, StoppingConfig, StoppingReport, StoppingRule,
};
