//! The baselines by name, with their presets (see [`kd_core::registry`]).

use kd_core::Student;
use kd_core::registry::{MethodEntry, MethodSpec, Tasks};

const CRATE: &str = "kd-baselines";
const HINTON: &str = "Hinton, Vinyals, Dean: Distilling the Knowledge in a Neural Network (2015)";
const LSKD: &str = "Sun et al.: Logit Standardization in Knowledge Distillation (CVPR 2024)";

/// Every baseline, in the order tables list them.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![
        MethodEntry::new(
            MethodSpec::new("ce", "cross-entropy on the labels alone (no teacher)", CRATE, Tasks::Any),
            crate::ce::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                "label_smoothing",
                "Szegedy et al.: Rethinking the Inception Architecture (CVPR 2016)",
                CRATE,
                Tasks::MultiClass,
            ),
            crate::label_smoothing::prepare::<S>,
        ),
        MethodEntry::new(MethodSpec::new("kd", HINTON, CRATE, Tasks::Any).accepting_top_k(), crate::kd::prepare::<S>),
        MethodEntry::new(MethodSpec::new("kd+ls", LSKD, CRATE, Tasks::MultiClass), crate::kd::prepare_with_logit_stand::<S>),
        MethodEntry::new(
            MethodSpec::new("dkd", "Zhao et al.: Decoupled Knowledge Distillation (CVPR 2022)", CRATE, Tasks::MultiClass),
            crate::dkd::prepare::<S>,
        ),
        MethodEntry::new(MethodSpec::new("dkd+ls", LSKD, CRATE, Tasks::MultiClass), crate::dkd::prepare_with_logit_stand::<S>),
        MethodEntry::new(
            MethodSpec::new("fitnet", "Romero et al.: FitNets: Hints for Thin Deep Nets (ICLR 2015)", CRATE, Tasks::Any),
            crate::fitnet::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                "fitnet+kd",
                "FitNets' hint plus Hinton's KD (the naive combination DCKD argues against)",
                CRATE,
                Tasks::MultiClass,
            ),
            crate::fitnet::prepare_with_kd::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new("rkd", "Park et al.: Relational Knowledge Distillation (CVPR 2019)", CRATE, Tasks::Any),
            crate::rkd::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                "pskd",
                "Kim et al.: Self-Knowledge Distillation with Progressive Refinement of Targets (ICCV 2021)",
                CRATE,
                Tasks::MultiClass,
            ),
            crate::pskd::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new("dlb", "Shen et al.: Self-Distillation from the Last Mini-Batch (CVPR 2022)", CRATE, Tasks::MultiClass),
            crate::dlb::prepare::<S>,
        ),
    ]
}
