//! # kd-debiased
//!
//! De-biased knowledge distillation for binary classification: **our design**, reconstructed
//! from the abstract of Li, Tian, Zhuang and Sun, *J. Electronic Science and Technology* 22(3),
//! 2024, 100278 (doi 10.1016/j.jnlest.2024.100278). The full text could not be found, so only
//! the framework's outline comes from the paper; every formula below is our reading
//! (docs/methods.md, "De-biased KD") and is **unverified** against the authors' method.
//!
//! ## From the abstract (quoted)
//! - "a de-biased knowledge distillation framework tailored for binary classification tasks";
//! - "For the pre-trained teacher model, biases in the soft labels are mitigated through
//!   knowledge infusion and label de-biasing techniques";
//! - "a de-biased distillation loss is introduced, allowing the de-biased labels to replace the
//!   soft labels as the fitting target for the student model";
//! - compared with "traditional response-based and feature-based knowledge distillation
//!   models across various evaluation metrics" on "multiple real-world datasets".
//!
//! ## Our reading (every step switchable)
//! Binary models here are 2-logit classifiers with class 1 positive; the teacher's binary logit
//! is `d_T = z_1 - z_0`, so `p_T = softmax(z_T)[1] = sigmoid(d_T)`.
//! - **Label de-biasing**, fitted once on data the student trains on ([`Debiaser::fit`]):
//!   (a) temperature scaling: `T` minimises the teacher's NLL on a held-out calibration split
//!   ([`calibration::fit_temperature`], golden-section search on `log T`); (b) prior correction:
//!   a logit shift `b` such that the mean of `sigmoid(d_T / T + b)` on the training split equals
//!   its positive rate ([`calibration::fit_prior_shift`], bisection); (c) optional side
//!   correction: a corrected probability on the wrong side of 0.5 for its label moves to
//!   `0.5 +/- margin` ([`calibration::side_correct`]).
//! - **Knowledge infusion**: `q = (1 - g) * p_debiased + g * y` ([`loss::infuse`]).
//! - **De-biased distillation loss**: `L = (1 - lambda) * BCE(y, p_S) + lambda * BCE(q, p_S)` on
//!   the student's binary logit ([`loss::debiased_kd_terms`], [`DebiasedKd`]).
//! - With every step off ([`DebiasOptions::all_off`]: `T = 1`, `b = 0`, no side correction,
//!   `g = 0`) `q = p_T` and the loss is plain binary response KD at temperature 1 ([`BinaryKd`]).
//!
//! Defaults ([`DebiasOptions`], [`DebiasedKdConfig`]): temperature fit on, bounds
//! `[0.05, 20]`; prior correction on; side correction off (margin 0.05); infusion `g = 0.2`;
//! `lambda = 0.5`. None of these numbers comes from the paper.
//!
//! ## Baselines
//! - Response-based KD: [`BinaryKd`] (BCE form of Hinton KD on the two logits; same gradients as
//!   `kd_baselines::Kd` with `ce_weight = 1 - lambda`, `kd_weight = lambda`).
//! - Feature-based KD: `kd_baselines::FitNet` with `hint_layer` pointing at an MLP hidden layer.
//!   MLP features are `[batch, width, 1, 1]`, so FitNet's regressor is a 1x1 convolution (a
//!   linear map), BatchNorm and ReLU; nothing in this crate is needed for it.
//!
//! ## Example
//! ```no_run
//! use kd_core::{BatchSource, FrozenTeacher, OptimizerConfig, RunOptions, SelectBy, TrainConfig, Trainer};
//! use kd_core::burn::tensor::Device;
//! use kd_data::{LoadOptions, load_dataset, require_binary};
//! use kd_debiased::{DebiasOptions, Debiaser, DebiasedKd, DebiasedKdConfig};
//! use kd_models::Mlp;
//!
//! # fn main() -> kd_core::Result<()> {
//! let device = Device::flex();
//! let data = load_dataset("spambase", &LoadOptions::default())?;
//! require_binary(&data)?;
//! let valid = data.valid.as_ref().expect("spambase has a validation split by default");
//! let features = data.train.input_shape()[0];
//! # let trained_teacher = Mlp::new(features, &[64, 64], 2, &device)?;
//! // A teacher trained beforehand (for instance with kd_baselines::CrossEntropy).
//! let teacher = FrozenTeacher::new(trained_teacher, "mlp-64-64");
//!
//! // Fit T on the validation split and b on the training split, once.
//! let debiaser = Debiaser::fit(&teacher, valid, &data.train, DebiasOptions::default(), &device)?;
//! println!("T = {:.3}, b = {:.3}", debiaser.temperature(), debiaser.shift());
//! let mut method = DebiasedKd::new(debiaser, DebiasedKdConfig::default())?;
//!
//! let student = Mlp::new(features, &[8], 2, &device.clone().autodiff())?;
//! let recipe = TrainConfig {
//!     epochs: 30, batch_size: 64, optimizer: OptimizerConfig::sgd(0.05),
//!     schedule: kd_core::LrSchedule::Constant, lr_warmup_epochs: 0, seed: 1,
//!     drop_last: false, eval_batch_size: 256,
//! };
//! let outcome = Trainer::new(recipe, &data.train, &data.test, device.clone())
//!     .with_validation(valid)
//!     .with_options(RunOptions { select_by: SelectBy::RocAuc, ..Default::default() })
//!     .fit(student, &mut method, &teacher)?;
//! let best = &outcome.history[outcome.best_epoch - 1];
//! println!("test ROC-AUC at the selected epoch: {:?}", best.test.binary.map(|b| b.roc_auc));
//! # Ok(()) }
//! ```
//!
//! Using the validation split for calibration means it is also seen by the de-biaser; carve a
//! separate part of the training data where the validation split must stay untouched.

#![warn(missing_docs)]

pub mod calibration;
pub mod debiaser;
pub mod distiller;
pub mod loss;
pub mod registry;

#[cfg(test)]
mod tests;

pub use debiaser::{DebiasOptions, Debiaser, FitReport, PriorFitSplit};
pub use distiller::{BinaryKd, BinaryKdConfig, DebiasedKd, DebiasedKdConfig};
