//! Metrics beyond top-k accuracy: the binary-classification set.

use serde::{Deserialize, Serialize};

use crate::error::{KdError, Result};

/// Binary metrics of positive-class probabilities against 0/1 labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// Accuracy at threshold 0.5, percent.
    pub accuracy: f64,
    /// F1 of the positive class at threshold 0.5.
    pub f1: f64,
    /// Area under the ROC curve (ties counted half).
    pub roc_auc: f64,
    /// Area under the precision-recall curve (average precision).
    pub pr_auc: f64,
    /// Mean squared error of the probability (Brier score).
    pub brier: f64,
    /// Expected calibration error over 15 equal-width bins.
    pub ece: f64,
}

/// The metric that selects the best epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SelectBy {
    /// Top-1 accuracy (the default).
    #[default]
    Top1,
    /// F1 of the positive class (binary tasks).
    F1,
    /// ROC-AUC (binary tasks).
    RocAuc,
    /// PR-AUC (binary tasks).
    PrAuc,
    /// Brier score, lower is better (binary tasks).
    Brier,
    /// Expected calibration error, lower is better (binary tasks).
    Ece,
}

impl SelectBy {
    /// Parses a metric name (`top1`, `f1`, `roc_auc`, `pr_auc`, `brier`, `ece`).
    pub fn parse(name: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_ascii_lowercase()))
            .map_err(|_| KdError::InvalidConfig(format!("unknown selection metric `{name}`; known: top1, f1, roc_auc, pr_auc, brier, ece")))
    }

    /// Whether this metric needs a binary task.
    pub fn is_binary(self) -> bool {
        self != SelectBy::Top1
    }

    /// The value to maximise (lower-is-better metrics are negated).
    pub fn score(self, top1: f64, binary: Option<&BinaryMetrics>) -> Option<f64> {
        let b = binary;
        match self {
            SelectBy::Top1 => Some(top1),
            SelectBy::F1 => b.map(|m| m.f1),
            SelectBy::RocAuc => b.map(|m| m.roc_auc),
            SelectBy::PrAuc => b.map(|m| m.pr_auc),
            SelectBy::Brier => b.map(|m| -m.brier),
            SelectBy::Ece => b.map(|m| -m.ece),
        }
    }
}

/// Computes [`BinaryMetrics`] from positive-class probabilities and labels (0 or 1).
pub fn binary_metrics(probs: &[f64], labels: &[usize]) -> Result<BinaryMetrics> {
    if probs.len() != labels.len() || probs.is_empty() {
        return Err(KdError::InvalidConfig(format!(
            "binary metrics need as many labels as probabilities (got {} and {})",
            labels.len(),
            probs.len()
        )));
    }
    if let Some(&l) = labels.iter().find(|&&l| l > 1) {
        return Err(KdError::InvalidConfig(format!("binary metrics need labels 0 or 1, found {l}")));
    }
    if let Some(p) = probs.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        return Err(KdError::NonFinite { what: format!("a probability of {p} in binary metrics") });
    }
    let n = probs.len() as f64;
    let (mut tp, mut fp, mut fn_, mut correct) = (0.0, 0.0, 0.0, 0.0);
    for (&p, &y) in probs.iter().zip(labels) {
        let pred = p >= 0.5;
        match (pred, y == 1) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
            (false, false) => {}
        }
        if pred == (y == 1) {
            correct += 1.0;
        }
    }
    let f1 = if tp == 0.0 { 0.0 } else { 2.0 * tp / (2.0 * tp + fp + fn_) };
    let brier = probs.iter().zip(labels).map(|(&p, &y)| (p - y as f64).powi(2)).sum::<f64>() / n;

    // Rank by descending score; groups of tied scores are handled together.
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let positives = labels.iter().filter(|&&y| y == 1).count() as f64;
    let negatives = n - positives;
    let (mut auc, mut ap) = (0.0, 0.0);
    let (mut tp_cum, mut fp_cum) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        let (mut tp_group, mut fp_group) = (0.0, 0.0);
        while j < order.len() && probs[order[j]] == probs[order[i]] {
            if labels[order[j]] == 1 {
                tp_group += 1.0
            } else {
                fp_group += 1.0
            }
            j += 1;
        }
        // ROC: each negative in the group is outranked by the positives above it (ties half).
        auc += fp_group * (tp_cum + 0.5 * tp_group);
        tp_cum += tp_group;
        fp_cum += fp_group;
        if tp_group > 0.0 {
            ap += tp_group * (tp_cum / (tp_cum + fp_cum));
        }
        i = j;
    }
    let roc_auc = if positives == 0.0 || negatives == 0.0 { f64::NAN } else { auc / (positives * negatives) };
    let pr_auc = if positives == 0.0 { f64::NAN } else { ap / positives };

    let bins = 15;
    let mut count = vec![0.0; bins];
    let mut conf = vec![0.0; bins];
    let mut hits = vec![0.0; bins];
    for (&p, &y) in probs.iter().zip(labels) {
        // Confidence of the predicted class, as ECE is usually defined.
        let (c, hit) = if p >= 0.5 { (p, y == 1) } else { (1.0 - p, y == 0) };
        let b = (((c - 0.5) * 2.0 * bins as f64) as usize).min(bins - 1);
        count[b] += 1.0;
        conf[b] += c;
        hits[b] += hit as u8 as f64;
    }
    let ece = (0..bins).filter(|&b| count[b] > 0.0).map(|b| (conf[b] - hits[b]).abs() / n).sum();
    Ok(BinaryMetrics { accuracy: 100.0 * correct / n, f1, roc_auc, pr_auc, brier, ece })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_hand_computed_values() {
        let m = binary_metrics(&[0.9, 0.8, 0.3, 0.1], &[1, 1, 0, 0]).unwrap();
        assert_eq!((m.accuracy, m.f1, m.roc_auc, m.pr_auc), (100.0, 1.0, 1.0, 1.0));
        assert!((m.brier - (0.01 + 0.04 + 0.09 + 0.01) / 4.0).abs() < 1e-12);
        // One inversion among 2x2 pairs: AUC 3/4. Ranked: 0.9(+) 0.6(-) 0.4(+) 0.2(-):
        // AP = (1/1 + 2/3) / 2.
        let m = binary_metrics(&[0.9, 0.6, 0.4, 0.2], &[1, 0, 1, 0]).unwrap();
        assert!((m.roc_auc - 0.75).abs() < 1e-12);
        assert!((m.pr_auc - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((m.f1 - 0.5).abs() < 1e-12);
        // All tied: AUC 1/2.
        let m = binary_metrics(&[0.5; 4], &[1, 0, 1, 0]).unwrap();
        assert!((m.roc_auc - 0.5).abs() < 1e-12);
        assert!(binary_metrics(&[0.5], &[2]).is_err());
    }
}
