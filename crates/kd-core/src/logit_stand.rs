//! Logit standardization (Sun et al., CVPR 2024), a plug-in for KD, DKD and RLD.
//!
//! `Z(z) = (z - mean(z)) / (std(z) + eps)`, applied to both logit sets inside the distillation
//! term only; the temperature of the method then divides it (docs/methods.md, "Logit standardization").

use crate::loss::{StdKind, z_score};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The z-score settings. Defaults: the LSKD code (unbiased std, eps 1e-7 added to the std).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogitStandardization {
    /// Unbiased (`K-1`, the code) or population (`K`, the paper's Algorithm 1) std.
    pub std: StdKind,
    /// Added to the std.
    pub eps: f64,
}

impl Default for LogitStandardization {
    fn default() -> Self {
        LogitStandardization { std: StdKind::Unbiased, eps: 1e-7 }
    }
}

impl LogitStandardization {
    /// Checks the epsilon: finite and above 0 (a std of 0, constant logits, would otherwise
    /// divide by zero). The error names `method` and the field `logit_stand.eps`.
    pub fn validate(&self, method: &str) -> crate::Result<()> {
        crate::check::positive(method, &[("logit_stand.eps", self.eps)])
    }

    /// [`LogitStandardization::validate`] for an optional standardization.
    pub fn validate_optional(stand: Option<&Self>, method: &str) -> crate::Result<()> {
        stand.map_or(Ok(()), |s| s.validate(method))
    }

    /// Standardizes each row of logits.
    pub fn apply(&self, logits: Tensor<2>) -> Tensor<2> {
        z_score(logits, self.std, self.eps)
    }
}

/// Applies the optional standardization to a student and a teacher logit set alike (what KD,
/// DKD and RLD do before their terms).
pub fn standardize_pair(stand: Option<&LogitStandardization>, student: Tensor<2>, teacher: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    match stand {
        Some(s) => (s.apply(student), s.apply(teacher)),
        None => (student, teacher),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epsilon_is_checked_and_named() {
        assert!(LogitStandardization::default().validate("KD").is_ok());
        assert!(LogitStandardization::validate_optional(None, "KD").is_ok());
        for eps in [0.0, -1e-7, f64::NAN, f64::INFINITY] {
            let stand = LogitStandardization { eps, ..Default::default() };
            let err = LogitStandardization::validate_optional(Some(&stand), "DKD").unwrap_err().to_string();
            assert!(err.contains("DKD logit_stand.eps must be finite and > 0"), "{err}");
        }
    }
}
