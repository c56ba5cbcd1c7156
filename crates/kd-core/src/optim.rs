//! Optimisers and epoch-based learning-rate schedules.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use serde::{Deserialize, Serialize};

use crate::error::{KdError, Result};

/// The optimiser of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD as PyTorch defines it (dampening 0; weight decay as L2 added to the gradient).
    Sgd {
        /// Base learning rate.
        lr: f64,
        /// Momentum factor (0 turns momentum off).
        #[serde(default = "default_momentum")]
        momentum: f64,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty.
        #[serde(default)]
        weight_decay: f64,
    },
    /// AdamW (decoupled weight decay).
    AdamW {
        /// Base learning rate.
        lr: f64,
        /// Decoupled weight decay.
        #[serde(default = "default_adamw_decay")]
        weight_decay: f64,
        /// First-moment decay.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Second-moment decay.
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Denominator epsilon.
        #[serde(default = "default_eps")]
        eps: f64,
    },
}

fn default_momentum() -> f64 {
    0.9
}
fn default_adamw_decay() -> f64 {
    1e-2
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl OptimizerConfig {
    /// mdistiller's CIFAR recipe: SGD, lr 0.05, momentum 0.9, weight decay 5e-4.
    pub fn sgd(lr: f64) -> Self {
        OptimizerConfig::Sgd { lr, momentum: 0.9, nesterov: false, weight_decay: 5e-4 }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::AdamW { lr, .. } => *lr,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(KdError::InvalidConfig(format!("learning rate must be positive and finite, got {lr}")));
        }
        match self {
            OptimizerConfig::Sgd { momentum, weight_decay, nesterov, .. } => {
                if !(0.0..1.0).contains(momentum) {
                    return Err(KdError::InvalidConfig(format!("SGD momentum must be in [0, 1), got {momentum}")));
                }
                if *nesterov && *momentum == 0.0 {
                    return Err(KdError::InvalidConfig("Nesterov momentum needs momentum > 0".into()));
                }
                if *weight_decay < 0.0 {
                    return Err(KdError::InvalidConfig(format!("weight decay must be >= 0, got {weight_decay}")));
                }
            }
            OptimizerConfig::AdamW { beta1, beta2, weight_decay, .. } => {
                if !(0.0..1.0).contains(beta1) || !(0.0..1.0).contains(beta2) {
                    return Err(KdError::InvalidConfig(format!("AdamW betas must be in [0, 1), got {beta1}, {beta2}")));
                }
                if *weight_decay < 0.0 {
                    return Err(KdError::InvalidConfig(format!("weight decay must be >= 0, got {weight_decay}")));
                }
            }
        }
        Ok(())
    }

    /// Builds Burn's optimiser.
    pub fn build(&self) -> ModuleOptimizer {
        match self {
            OptimizerConfig::Sgd { momentum, nesterov, weight_decay, .. } => {
                // Burn's MomentumConfig defaults to dampening 0.1; PyTorch (and the papers) use 0.
                let momentum_cfg = (*momentum > 0.0).then_some(MomentumConfig { momentum: *momentum, dampening: 0.0, nesterov: *nesterov });
                let decay = (*weight_decay > 0.0).then_some(WeightDecayConfig { penalty: *weight_decay as f32 });
                SgdConfig::new().with_momentum(momentum_cfg).with_weight_decay(decay).init()
            }
            OptimizerConfig::AdamW { weight_decay, beta1, beta2, eps, .. } => AdamWConfig::new()
                .with_beta_1(*beta1 as f32)
                .with_beta_2(*beta2 as f32)
                .with_epsilon(*eps as f32)
                .with_weight_decay(*weight_decay as f32)
                .init(),
        }
    }
}

/// Learning rate as a function of the epoch (counted from 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` after each milestone epoch: `lr * gamma^#{m : m < epoch}`
    /// (mdistiller's `adjust_learning_rate`).
    MultiStep {
        /// Epochs after which the rate decays.
        milestones: Vec<usize>,
        /// Decay factor.
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
    /// Cosine annealing by epoch, PyTorch's `CosineAnnealingLR` with `T_max` = the number of
    /// epochs: epoch `e` (from 1) runs at `min + (base - min) (1 + cos(pi (e-1) / E)) / 2`, so
    /// the first epoch runs at the base rate and the last one still learns.
    Cosine {
        /// Final rate.
        #[serde(default)]
        min_lr: f64,
    },
}

fn default_gamma() -> f64 {
    0.1
}

impl LrSchedule {
    /// The rate for `epoch` (from 1) of `total` epochs, after `warmup_epochs` of linear warm-up
    /// (epoch `e <= W` runs at `base * e / W`).
    pub fn lr_at(&self, base: f64, epoch: usize, total: usize, warmup_epochs: usize) -> f64 {
        let scheduled = match self {
            LrSchedule::Constant => base,
            LrSchedule::MultiStep { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| m < epoch).count() as i32;
                base * gamma.powi(passed)
            }
            LrSchedule::Cosine { min_lr } => {
                let progress = epoch.saturating_sub(1) as f64 / total.max(1) as f64;
                min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        };
        if warmup_epochs > 0 && epoch <= warmup_epochs { scheduled * epoch as f64 / warmup_epochs as f64 } else { scheduled }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistep_decays_after_milestones() {
        let s = LrSchedule::MultiStep { milestones: vec![150, 180, 210], gamma: 0.1 };
        assert_eq!(s.lr_at(0.05, 150, 240, 0), 0.05);
        assert!((s.lr_at(0.05, 151, 240, 0) - 0.005).abs() < 1e-12);
        assert!((s.lr_at(0.05, 240, 240, 0) - 0.00005).abs() < 1e-12);
    }

    #[test]
    fn cosine_anneals_without_a_wasted_last_epoch_and_warmup_ramps() {
        let s = LrSchedule::Cosine { min_lr: 0.0 };
        assert!((s.lr_at(0.1, 1, 10, 0) - 0.1).abs() < 1e-12);
        // The last of 10 epochs: (1 + cos(0.9 pi)) / 2 of the base rate.
        assert!((s.lr_at(0.1, 10, 10, 0) - 0.1 * (1.0 + (0.9 * std::f64::consts::PI).cos()) / 2.0).abs() < 1e-12);
        assert!(s.lr_at(0.1, 10, 10, 0) > 0.0);
        assert!((LrSchedule::Constant.lr_at(0.1, 1, 10, 4) - 0.025).abs() < 1e-12);
    }
}
