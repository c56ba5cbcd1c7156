//! TOAST's configuration: every choice of our reading of the abstract is a field here.

use kd_core::{KdError, Result};
use serde::{Deserialize, Serialize};

/// How the replayed rows share the forward pass with the loader's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchMode {
    /// The `r` replayed samples take the places of the loader batch's last `r` samples, which
    /// are dropped for this epoch: every forward pass has the loader's batch size `B`. A step
    /// costs what a plain CE step costs; an epoch trains on `B - r` fresh samples per step, plus
    /// the replays. The fresh rows must outnumber the replay slots (`replay_fraction` < 0.5
    /// with `candidates = fresh`), or the selection would keep every fresh row.
    Displace,
    /// The replayed samples are added to the loader's whole batch: the forward pass has `B + r`
    /// rows and every epoch covers the whole training set. With `replay_fraction` 0.5 the
    /// hardest half of each batch is replayed in the next step: `B` fresh + `B/2` replayed rows,
    /// 1.5 times the rows of a CE step. The default.
    #[default]
    Append,
}

/// Which rows of a step may be chosen for replay in the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayCandidates {
    /// Every row of the forward pass, replayed ones included: a sample that stays hard is
    /// refined again ("iteratively distill"), each time with a new augmentation view. In the
    /// sweep a few hard samples then circulated step after step and accuracy fell far below CE.
    All,
    /// Only the step's fresh rows: each sample is replayed at most once in a row. The default;
    /// with `append` the pool (`B` fresh rows) is twice the replay slots (`B/2`), so the
    /// selection keeps the hardest half and drops the rest.
    #[default]
    Fresh,
}

/// The per-sample score that ranks samples as "under-trained" (highest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hardness {
    /// The sample's own part of the optimised loss: `softCE(t1, z)` plus, for a replayed row,
    /// `lambda * T^2 * KL(p_prev || softmax(z / T))`. The default.
    #[default]
    Loss,
    /// Plain cross-entropy with the hard label, `-log softmax(z)_y` (ignores the soft targets).
    CrossEntropy,
}

/// Configuration of [`crate::Toast`]. Every field is optional in a configuration file (missing
/// fields take the defaults); unknown fields are an error.
///
/// docs/methods.md, "TOAST", starts from epsilon 0.5, tau 4, T 3, lambda 1, K 256, half the
/// batch (the paper's values are unknown); the defaults (epsilon 0.1, `append`, `fresh`) are
/// what the validation sweep in the crate's README chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToastConfig {
    /// Stage 1: weight `eps` of the medoid distribution in
    /// `t1 = (1 - eps) onehot(y) + eps softmax(m_y / tau)`, in `[0, 1]` (0: plain CE targets).
    pub epsilon: f64,
    /// Stage 1: temperature `tau` of the medoid's softmax, > 0.
    pub tau: f64,
    /// Stage 1: at most this many recorded logit vectors per class and epoch (`K`), >= 1.
    pub bank_size: usize,
    /// Stage 1: fill each class's bank with correctly classified samples first and use the
    /// misclassified ones only for the places left (`false`: one uniform sample of all).
    pub prefer_correct: bool,
    /// Stage 1: record the replayed rows in the bank too (`false`: only fresh rows, so each
    /// sample is recorded at most once per epoch and hard samples are not over-represented).
    pub record_replayed: bool,
    /// Stage 1: the exact pairwise-distance computation runs in chunks of at most this many
    /// elements (`rows x K x classes`), to bound device memory; >= 1. It changes nothing else.
    pub medoid_chunk_elements: usize,
    /// Stage 2: temperature `T` of the replay term, > 0.
    pub temperature: f64,
    /// Stage 2: weight `lambda` of `L2 = T^2 KL(p_prev || softmax(z / T))`, >= 0.
    pub lambda: f64,
    /// Stage 2: the number of samples each step keeps for replay in the next, as a share of the
    /// loader's batch: the hardest `floor(f * B)` of the candidates. 0.5 is the abstract's "half
    /// the batch size". In `(0, 1]` with `append` (1 with `fresh` candidates replays every
    /// sample: DLB's scheme with medoid targets, no selection), `(0, 1)` with `displace`. See
    /// [`BatchMode`] for where the replayed rows go.
    pub replay_fraction: f64,
    /// Stage 2: how replayed rows share the forward pass with the loader's batch.
    pub batch_mode: BatchMode,
    /// Stage 2: which rows of a step may be replayed in the next.
    pub candidates: ReplayCandidates,
    /// Stage 2: the score that ranks rows as under-trained.
    pub hardness: Hardness,
    /// Stage 2: the first epoch (counted from 1) whose steps replay; earlier steps train on
    /// fresh batches only, with stage 1 alone. >= 1.
    pub replay_from_epoch: usize,
}

impl Default for ToastConfig {
    fn default() -> Self {
        ToastConfig {
            // Chosen by the validation sweep recorded in the README (eps 0.1, lambda 1, append,
            // fresh candidates: the best mean validation accuracy of the grid).
            epsilon: 0.1,
            tau: 4.0,
            bank_size: 256,
            prefer_correct: true,
            record_replayed: false,
            medoid_chunk_elements: 1 << 24,
            temperature: 3.0,
            lambda: 1.0,
            replay_fraction: 0.5,
            batch_mode: BatchMode::Append,
            candidates: ReplayCandidates::Fresh,
            hardness: Hardness::Loss,
            replay_from_epoch: 1,
        }
    }
}

impl ToastConfig {
    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(KdError::InvalidConfig(format!("TOAST {msg}")));
        if !(self.epsilon.is_finite() && (0.0..=1.0).contains(&self.epsilon)) {
            return bad(format!("epsilon must be in [0, 1], got {}", self.epsilon));
        }
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return bad(format!("tau must be finite and > 0, got {}", self.tau));
        }
        if self.bank_size == 0 {
            return bad("bank_size must be at least 1".into());
        }
        if self.medoid_chunk_elements == 0 {
            return bad("medoid_chunk_elements must be at least 1".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!("temperature must be finite and > 0, got {}", self.temperature));
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return bad(format!("lambda must be finite and >= 0, got {}", self.lambda));
        }
        let f = self.replay_fraction;
        match self.batch_mode {
            // Displaced rows need at least one fresh row beside them.
            BatchMode::Displace if !(f.is_finite() && f > 0.0 && f < 1.0) => {
                return bad(format!("replay_fraction must be in (0, 1) with batch_mode = \"displace\", got {f}"));
            }
            BatchMode::Append if !(f.is_finite() && f > 0.0 && f <= 1.0) => {
                return bad(format!("replay_fraction must be in (0, 1] with batch_mode = \"append\", got {f}"));
            }
            _ => {}
        }
        if self.batch_mode == BatchMode::Displace && self.candidates == ReplayCandidates::Fresh && self.replay_fraction >= 0.5 {
            // B - r fresh rows for r >= B - r slots: every fresh row would be kept, unranked.
            return bad(format!(
                "batch_mode = \"displace\" with candidates = \"fresh\" needs replay_fraction < 0.5 (got {}): the fresh rows \
                 would not outnumber the replay slots and the selection would keep all of them; use batch_mode = \"append\", \
                 candidates = \"all\" or a smaller replay_fraction",
                self.replay_fraction
            ));
        }
        if self.replay_from_epoch == 0 {
            return bad("replay_from_epoch counts epochs from 1; use 1 to replay from the start".into());
        }
        Ok(())
    }

    /// How many replayed rows a step whose loader batch has `loader_len` samples takes at most:
    /// `floor(f * n)`, and with [`BatchMode::Displace`] at most `n - 1` (one row stays fresh).
    pub fn replay_capacity(&self, loader_len: usize) -> usize {
        // A tiny allowance so that exact products (0.5 * 8 = 4) are not lost to rounding.
        let r = (self.replay_fraction * loader_len as f64 + 1e-9).floor().max(0.0) as usize;
        match self.batch_mode {
            BatchMode::Displace => r.min(loader_len.saturating_sub(1)),
            BatchMode::Append => r,
        }
    }
}
