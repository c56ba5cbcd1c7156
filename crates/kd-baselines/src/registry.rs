//! The baselines by name, with their presets (see [`kd_core::registry`]).

use kd_core::Student;
use kd_core::registry::{MethodEntry, MethodSpec, Suite, Tasks};

const CRATE: &str = "kd-baselines";
const HINTON: &str = "Hinton, Vinyals, Dean: Distilling the Knowledge in a Neural Network (2015)";
const LSKD: &str = "Sun et al.: Logit Standardization in Knowledge Distillation (CVPR 2024)";
const CONV: &[Suite] = &[Suite::ConvPair];
const BOTH: &[Suite] = &[Suite::ConvPair, Suite::BiasedTeacher];

/// Every baseline, in the order tables list them.
pub fn methods<S: Student>() -> Vec<MethodEntry<S>> {
    vec![
        MethodEntry::new(
            MethodSpec::new(crate::ce::NAME, "cross-entropy on the labels alone (no teacher)", CRATE, Tasks::Any).in_suites(BOTH),
            crate::ce::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                crate::label_smoothing::NAME,
                "Szegedy et al.: Rethinking the Inception Architecture (CVPR 2016)",
                CRATE,
                Tasks::MultiClass,
            ),
            crate::label_smoothing::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(crate::kd::NAME, HINTON, CRATE, Tasks::Any)
                .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/KD.py")
                .in_suites(BOTH),
            crate::kd::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(crate::kd::NAME_LS, LSKD, CRATE, Tasks::MultiClass)
                .with_reference("sunshangquan/logit-standardization-KD f6e5aa5")
                .in_suites(CONV),
            crate::kd::prepare_with_logit_stand::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(crate::dkd::NAME, "Zhao et al.: Decoupled Knowledge Distillation (CVPR 2022)", CRATE, Tasks::MultiClass)
                .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/DKD.py")
                .in_suites(CONV),
            crate::dkd::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(crate::dkd::NAME_LS, LSKD, CRATE, Tasks::MultiClass)
                .with_reference("sunshangquan/logit-standardization-KD f6e5aa5")
                .in_suites(CONV),
            crate::dkd::prepare_with_logit_stand::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                crate::dist::NAME,
                "Huang et al.: Knowledge Distillation from A Stronger Teacher (NeurIPS 2022)",
                CRATE,
                Tasks::Any,
            )
            .with_reference("hunto/image_classification_sota 6f7a70a lib/models/losses/dist_kd.py")
            .in_suites(CONV),
            crate::dist::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(crate::fitnet::NAME, "Romero et al.: FitNets: Hints for Thin Deep Nets (ICLR 2015)", CRATE, Tasks::Any)
                .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/FitNet.py")
                .in_suites(BOTH),
            crate::fitnet::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                crate::fitnet::NAME_KD,
                "FitNets' hint plus Hinton's KD (the naive combination DCKD argues against)",
                CRATE,
                Tasks::MultiClass,
            )
            .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/FitNet.py, KD.py")
            .in_suites(CONV),
            crate::fitnet::prepare_with_kd::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(crate::rkd::NAME, "Park et al.: Relational Knowledge Distillation (CVPR 2019)", CRATE, Tasks::Any)
                .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/RKD.py"),
            crate::rkd::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(crate::at::NAME, "Zagoruyko & Komodakis: Paying More Attention to Attention (ICLR 2017)", CRATE, Tasks::Any)
                .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/AT.py")
                .in_suites(CONV)
                .reads_spatial_maps(),
            crate::at::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                crate::nst::NAME,
                "Huang & Wang: Like What You Like: Knowledge Distill via Neuron Selectivity Transfer (2017)",
                CRATE,
                Tasks::Any,
            )
            .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/NST.py")
            .in_suites(CONV)
            .reads_spatial_maps(),
            crate::nst::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(crate::sp::NAME, "Tung & Mori: Similarity-Preserving Knowledge Distillation (ICCV 2019)", CRATE, Tasks::Any)
                .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/SP.py")
                .in_suites(CONV),
            crate::sp::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                crate::pkt::NAME,
                "Passalis & Tefas: Learning Deep Representations with Probabilistic Knowledge Transfer (ECCV 2018)",
                CRATE,
                Tasks::Any,
            )
            .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/PKT.py")
            .in_suites(CONV),
            crate::pkt::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                crate::cc::NAME,
                "Peng et al.: Correlation Congruence for Knowledge Distillation (ICCV 2019)",
                CRATE,
                Tasks::Any,
            )
            .with_reference("HobbitLong/RepDistiller b84f547 distiller_zoo/CC.py")
            .in_suites(CONV),
            crate::cc::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                crate::kdsvd::NAME,
                "Lee et al.: Self-supervised Knowledge Distillation Using Singular Value Decomposition (ECCV 2018)",
                CRATE,
                Tasks::Any,
            )
            .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/KDSVD.py")
            .in_suites(CONV)
            .reads_spatial_maps(),
            crate::kdsvd::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(crate::vid::NAME, "Ahn et al.: Variational Information Distillation (CVPR 2019)", CRATE, Tasks::Any)
                .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/VID.py")
                .in_suites(CONV),
            crate::vid::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                crate::ofd::NAME,
                "Heo et al.: A Comprehensive Overhaul of Feature Distillation (ICCV 2019)",
                CRATE,
                Tasks::Any,
            )
            .with_reference("megvii-research/mdistiller a08d46f mdistiller/distillers/OFD.py")
            .in_suites(CONV),
            crate::ofd::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                crate::pskd::NAME,
                "Kim et al.: Self-Knowledge Distillation with Progressive Refinement of Targets (ICCV 2021)",
                CRATE,
                Tasks::MultiClass,
            )
            .with_reference("lgcnsai/PS-KD-Pytorch 9aa0828"),
            crate::pskd::prepare::<S>,
        ),
        MethodEntry::new(
            MethodSpec::new(
                crate::dlb::NAME,
                "Shen et al.: Self-Distillation from the Last Mini-Batch (CVPR 2022)",
                CRATE,
                Tasks::MultiClass,
            )
            .with_reference("Meta-knowledge-Lab/DLB 8949a46"),
            crate::dlb::prepare::<S>,
        ),
    ]
}
