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

    /// The same optimiser at another base learning rate.
    pub fn with_lr(self, lr: f64) -> Self {
        match self {
            OptimizerConfig::Sgd { momentum, nesterov, weight_decay, .. } => OptimizerConfig::Sgd { lr, momentum, nesterov, weight_decay },
            OptimizerConfig::AdamW { weight_decay, beta1, beta2, eps, .. } => {
                OptimizerConfig::AdamW { lr, weight_decay, beta1, beta2, eps }
            }
        }
    }

    /// Checks the values: every number finite and in its range, each error naming its field
    /// (`optimizer.weight_decay`...).
    pub fn validate(&self) -> Result<()> {
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(KdError::InvalidConfig(format!("optimizer.lr: learning rate must be positive and finite, got {lr}")));
        }
        let in_unit = |field: &str, v: f64| -> Result<()> {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(KdError::InvalidConfig(format!("optimizer.{field} must be in [0, 1), got {v}")))
            }
        };
        let decay = |v: f64| -> Result<()> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(KdError::InvalidConfig(format!("optimizer.weight_decay: weight decay must be finite and >= 0, got {v}")))
            }
        };
        match self {
            OptimizerConfig::Sgd { momentum, weight_decay, nesterov, .. } => {
                in_unit("momentum", *momentum)
                    .map_err(|_| KdError::InvalidConfig(format!("optimizer.momentum: SGD momentum must be in [0, 1), got {momentum}")))?;
                if *nesterov && *momentum == 0.0 {
                    return Err(KdError::InvalidConfig("optimizer.nesterov: Nesterov momentum needs momentum > 0".into()));
                }
                decay(*weight_decay)?;
            }
            OptimizerConfig::AdamW { beta1, beta2, weight_decay, eps, .. } => {
                in_unit("beta1", *beta1)?;
                in_unit("beta2", *beta2)?;
                decay(*weight_decay)?;
                // Burn keeps epsilon in f32: a value that rounds to 0 there divides by zero.
                if !(eps.is_finite() && *eps > 0.0 && (*eps as f32) > 0.0 && *eps <= 1.0) {
                    return Err(KdError::InvalidConfig(format!(
                        "optimizer.eps: AdamW's epsilon must be finite, in (0, 1] and representable in float32, got {eps}"
                    )));
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
    /// Checks the values against the base learning rate `lr`: decay factors finite and in
    /// (0, 1], milestones strictly increasing (a repeated one would decay twice; one beyond the
    /// run is never reached, which a shortened run may want), a minimum rate finite, >= 0 and at
    /// most the base rate. Each error names its field (`schedule.gamma`...).
    pub fn validate(&self, lr: f64) -> Result<()> {
        match self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::MultiStep { milestones, gamma } => {
                if !(gamma.is_finite() && *gamma > 0.0 && *gamma <= 1.0) {
                    return Err(KdError::InvalidConfig(format!(
                        "schedule.gamma: the decay factor must be finite and in (0, 1], got {gamma}"
                    )));
                }
                if let Some(pair) = milestones.windows(2).find(|w| w[0] >= w[1]) {
                    return Err(KdError::InvalidConfig(format!(
                        "schedule.milestones must be strictly increasing, got {} then {}",
                        pair[0], pair[1]
                    )));
                }
                Ok(())
            }
            LrSchedule::Cosine { min_lr } => {
                if !(min_lr.is_finite() && *min_lr >= 0.0) {
                    return Err(KdError::InvalidConfig(format!("schedule.min_lr must be finite and >= 0, got {min_lr}")));
                }
                if *min_lr > lr {
                    return Err(KdError::InvalidConfig(format!(
                        "schedule.min_lr ({min_lr}) is above the learning rate ({lr}): a cosine schedule anneals down to it"
                    )));
                }
                Ok(())
            }
        }
    }

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

    #[test]
    fn every_optimizer_number_is_checked_and_named() {
        let sgd = |weight_decay: f64, momentum: f64| OptimizerConfig::Sgd { lr: 0.1, momentum, nesterov: false, weight_decay };
        let adamw = |eps: f64, weight_decay: f64, beta1: f64| OptimizerConfig::AdamW { lr: 0.1, weight_decay, beta1, beta2: 0.999, eps };
        assert!(sgd(5e-4, 0.9).validate().is_ok());
        assert!(adamw(1e-8, 1e-2, 0.9).validate().is_ok());
        let cases = [
            (sgd(f64::NAN, 0.9), "optimizer.weight_decay: weight decay must be finite and >= 0, got NaN"),
            (sgd(f64::INFINITY, 0.9), "optimizer.weight_decay: weight decay must be finite and >= 0, got inf"),
            (sgd(-1.0, 0.9), "optimizer.weight_decay"),
            (sgd(0.0, f64::NAN), "optimizer.momentum: SGD momentum must be in [0, 1), got NaN"),
            (adamw(f64::NAN, 0.0, 0.9), "optimizer.eps: AdamW's epsilon must be finite"),
            (adamw(0.0, 0.0, 0.9), "optimizer.eps"),
            (adamw(1e-50, 0.0, 0.9), "representable in float32, got 0.0000"),
            (adamw(f64::INFINITY, 0.0, 0.9), "optimizer.eps"),
            (adamw(1e-8, f64::NAN, 0.9), "optimizer.weight_decay"),
            (adamw(1e-8, 0.0, f64::NAN), "optimizer.beta1 must be in [0, 1), got NaN"),
            (OptimizerConfig::sgd(f64::INFINITY), "optimizer.lr: learning rate must be positive and finite, got inf"),
        ];
        for (config, want) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{config:?}: {err}");
        }
    }

    #[test]
    fn every_schedule_number_is_checked_and_named() {
        assert!(LrSchedule::MultiStep { milestones: vec![150, 180, 210], gamma: 0.1 }.validate(0.05).is_ok());
        assert!(LrSchedule::Cosine { min_lr: 0.0 }.validate(0.05).is_ok());
        let cases = [
            (
                LrSchedule::MultiStep { milestones: vec![1], gamma: 0.0 },
                "schedule.gamma: the decay factor must be finite and in (0, 1], got 0",
            ),
            (LrSchedule::MultiStep { milestones: vec![1], gamma: -0.5 }, "schedule.gamma"),
            (LrSchedule::MultiStep { milestones: vec![1], gamma: f64::NAN }, "schedule.gamma"),
            (LrSchedule::MultiStep { milestones: vec![1], gamma: 10.0 }, "schedule.gamma"),
            (LrSchedule::MultiStep { milestones: vec![5, 5], gamma: 0.1 }, "schedule.milestones must be strictly increasing, got 5 then 5"),
            (LrSchedule::Cosine { min_lr: -1e-3 }, "schedule.min_lr must be finite and >= 0, got -0.001"),
            (LrSchedule::Cosine { min_lr: f64::NAN }, "schedule.min_lr"),
            (LrSchedule::Cosine { min_lr: 0.5 }, "schedule.min_lr (0.5) is above the learning rate (0.05)"),
        ];
        for (schedule, want) in cases {
            let err = schedule.validate(0.05).unwrap_err().to_string();
            assert!(err.contains(want), "{schedule:?}: {err}");
        }
    }
}
