//! The fitted label de-biaser: temperature `T`, prior shift `b`, and the switches.
//!
//! [`Debiaser::fit`] runs the teacher once over a calibration split and the training split and
//! fits `T` and `b` there; [`Debiaser::targets`] then turns any batch of teacher logits into the
//! de-biased labels `q`, which is cheap enough to do per training batch.

use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};
use kd_core::{Batch, BatchSource, KdError, Result, Teacher, TeacherNeed};
use serde::{Deserialize, Serialize};

use crate::calibration::{self, binary_nll, fit_prior_shift, fit_temperature, mean_probability, positive_rate, side_correct};
use crate::loss::{binary_logit, check_unit, infuse};

/// Where the prior shift (b) is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorFitSplit {
    /// The held-out calibration split: the teacher's bias shows there. The default.
    #[default]
    Calibration,
    /// The training split. A teacher trained on the same split fits its prior there almost
    /// exactly (cross-entropy training matches the mean prediction to the label rate), so the
    /// shift comes out near zero whatever the teacher's bias on new data.
    Train,
}

/// Which de-biasing steps run, and their settings. Every step can be switched off;
/// [`DebiasOptions::all_off`] turns the de-biased labels back into the teacher's soft labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebiasOptions {
    /// (a) Fit a temperature `T` on the calibration split (default on). Off: `T = 1`.
    pub calibrate_temperature: bool,
    /// Search interval `[T_min, T_max]` of the temperature fit (default `[0.05, 20]`).
    pub temperature_bounds: [f64; 2],
    /// (b) Fit a logit shift `b` so that the mean corrected probability on the `prior_fit`
    /// split equals the training split's positive rate (default on). Off: `b = 0`.
    pub prior_correction: bool,
    /// The split the prior shift is fitted on (default: the calibration split).
    pub prior_fit: PriorFitSplit,
    /// (c) Move a probability on the wrong side of 0.5 for its label to `0.5 +/- side_margin`
    /// (default off: A.4 lists it as optional).
    pub side_correction: bool,
    /// Margin of the side correction, in `[0, 0.5)` (default 0.05).
    pub side_margin: f64,
    /// Knowledge infusion `g` in `q = (1 - g) * p + g * y`, in `[0, 1]` (default 0.2: the
    /// teacher keeps most of the weight and the label nudges it; 0 turns infusion off).
    pub infusion: f64,
    /// Batch size of the teacher passes made while fitting (default 256).
    pub batch_size: usize,
}

impl Default for DebiasOptions {
    fn default() -> Self {
        DebiasOptions {
            calibrate_temperature: true,
            temperature_bounds: [0.05, 20.0],
            prior_correction: true,
            prior_fit: PriorFitSplit::Calibration,
            side_correction: false,
            side_margin: 0.05,
            infusion: 0.2,
            batch_size: 256,
        }
    }
}

impl DebiasOptions {
    /// Every step off: `q = sigmoid(d_T)`, the teacher's own soft label (the ablation that
    /// turns de-biased KD into plain binary KD).
    pub fn all_off() -> Self {
        DebiasOptions { calibrate_temperature: false, prior_correction: false, side_correction: false, infusion: 0.0, ..Default::default() }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        calibration::check_bounds(self.temperature_bounds)?;
        if !(self.side_margin.is_finite() && (0.0..0.5).contains(&self.side_margin)) {
            return Err(KdError::InvalidConfig(format!("side_margin must be in [0, 0.5), got {}", self.side_margin)));
        }
        check_unit("infusion", self.infusion)?;
        if self.batch_size == 0 {
            return Err(KdError::InvalidConfig("the de-biasing batch_size must be at least 1".into()));
        }
        Ok(())
    }
}

/// What [`Debiaser::fit`] saw: how well each step did on the data it was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Samples in the calibration split.
    pub calibration_samples: usize,
    /// Samples in the training split.
    pub train_samples: usize,
    /// Teacher NLL on the calibration split as it comes (`T = 1`, `b = 0`).
    pub calibration_nll_before: f64,
    /// Teacher NLL on the calibration split at the fitted `T` (before the prior shift).
    pub calibration_nll_after: f64,
    /// Fraction of positives in the training split.
    pub train_positive_rate: f64,
    /// Mean teacher probability `sigmoid(d)` on the training split as it comes.
    pub train_mean_probability_before: f64,
    /// Mean corrected probability `sigmoid(d / T + b)` on the training split.
    pub train_mean_probability_after: f64,
    /// The split the prior shift was fitted on.
    pub prior_fit: PriorFitSplit,
    /// Mean teacher probability `sigmoid(d)` on the calibration split as it comes.
    pub calibration_mean_probability_before: f64,
    /// Mean corrected probability `sigmoid(d / T + b)` on the calibration split.
    pub calibration_mean_probability_after: f64,
}

/// The label de-biaser: `p = sigmoid(d_T / T + b)`, then the optional side correction, then
/// knowledge infusion `q = (1 - g) * p + g * y`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Debiaser {
    temperature: f64,
    shift: f64,
    options: DebiasOptions,
    report: Option<FitReport>,
}

impl Debiaser {
    /// A de-biaser with the given temperature and shift (fitted elsewhere, set by hand, or
    /// `1.0` and `0.0` for none); the options' side correction and infusion apply as usual.
    pub fn new(temperature: f64, shift: f64, options: DebiasOptions) -> Result<Self> {
        options.validate()?;
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(KdError::InvalidConfig(format!("the de-biasing temperature must be > 0, got {temperature}")));
        }
        if !shift.is_finite() {
            return Err(KdError::InvalidConfig(format!("the prior shift must be finite, got {shift}")));
        }
        Ok(Debiaser { temperature, shift, options, report: None })
    }

    /// Fits the de-biaser once, before training: the temperature on `calibration` (a held-out
    /// part of the training data, such as the validation split), the prior shift on the split
    /// [`DebiasOptions::prior_fit`] names (the calibration split by default), towards the
    /// training split's positive rate (the prior the student's data has).
    ///
    /// Both splits must be binary with both classes present, and the teacher must give 2
    /// logits; otherwise an error says which. The teacher runs on un-augmented batches
    /// (epoch 0, view 0), as evaluation does.
    pub fn fit(
        teacher: &dyn Teacher,
        calibration: &dyn BatchSource,
        train: &dyn BatchSource,
        options: DebiasOptions,
        device: &Device,
    ) -> Result<Self> {
        options.validate()?;
        if let Some(k) = teacher.num_classes().filter(|&k| k != 2) {
            return Err(KdError::InvalidConfig(format!(
                "de-biased KD needs a binary teacher (2 logits, class 1 = positive); `{}` has {k} classes",
                teacher.describe()
            )));
        }
        // Labels first: they are cheap to read, and a bad split should fail before any
        // teacher pass.
        let calibration_labels = split_labels(calibration, "calibration")?;
        let train_labels = split_labels(train, "training")?;
        let train_rate = positive_rate(&train_labels, &format!("the training split {}", train.name()))?;

        let calibration_logits = teacher_logits(teacher, calibration, options.batch_size, device)?;
        let train_logits = teacher_logits(teacher, train, options.batch_size, device)?;

        let temperature = if options.calibrate_temperature {
            fit_temperature(&calibration_logits, &calibration_labels, options.temperature_bounds)?
        } else {
            1.0
        };
        let scaled: Vec<f64> = train_logits.iter().map(|d| d / temperature).collect();
        let calibration_scaled: Vec<f64> = calibration_logits.iter().map(|d| d / temperature).collect();
        let prior_fit_logits = match options.prior_fit {
            PriorFitSplit::Calibration => &calibration_scaled,
            PriorFitSplit::Train => &scaled,
        };
        let shift = if options.prior_correction { fit_prior_shift(prior_fit_logits, train_rate)? } else { 0.0 };

        let report = FitReport {
            calibration_samples: calibration_labels.len(),
            train_samples: train_labels.len(),
            calibration_nll_before: binary_nll(&calibration_logits, &calibration_labels, 1.0, 0.0),
            calibration_nll_after: binary_nll(&calibration_logits, &calibration_labels, temperature, 0.0),
            train_positive_rate: train_rate,
            train_mean_probability_before: mean_probability(&train_logits, 0.0),
            train_mean_probability_after: mean_probability(&scaled, shift),
            prior_fit: options.prior_fit,
            calibration_mean_probability_before: mean_probability(&calibration_logits, 0.0),
            calibration_mean_probability_after: mean_probability(&calibration_scaled, shift),
        };
        let mut debiaser = Debiaser::new(temperature, shift, options)?;
        debiaser.report = Some(report);
        Ok(debiaser)
    }

    /// The fitted (or given) temperature `T`.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// The fitted (or given) logit shift `b`.
    pub fn shift(&self) -> f64 {
        self.shift
    }

    /// The options.
    pub fn options(&self) -> &DebiasOptions {
        &self.options
    }

    /// What the fit saw; `None` for a de-biaser built with [`Debiaser::new`].
    pub fn report(&self) -> Option<&FitReport> {
        self.report.as_ref()
    }

    /// Corrected probabilities `sigmoid(d / T + b)` of teacher binary logits `d`, `[batch]`.
    pub fn probabilities(&self, teacher_logit: Tensor<1>) -> Tensor<1> {
        sigmoid(teacher_logit.div_scalar(self.temperature).add_scalar(self.shift))
    }

    /// The de-biased labels `q`, `[batch]`, from teacher binary logits and 0/1 float labels:
    /// corrected probability, side correction (when on), knowledge infusion.
    pub fn targets(&self, teacher_logit: Tensor<1>, labels: Tensor<1>) -> Tensor<1> {
        let mut p = self.probabilities(teacher_logit);
        if self.options.side_correction {
            p = calibration::side_correct_tensor(p, labels.clone(), self.options.side_margin);
        }
        infuse(p, labels, self.options.infusion)
    }

    /// [`Debiaser::targets`] from the teacher's 2-logit outputs `[batch, 2]` and a batch's labels.
    pub fn batch_targets(&self, teacher_logits: Tensor<2>, batch: &Batch) -> Result<Tensor<1>> {
        check_binary_labels(&batch.labels_host, &batch.indices)?;
        let d = binary_logit(teacher_logits, "teacher")?;
        Ok(self.targets(d, batch.labels.clone().float()))
    }

    /// [`Debiaser::targets`] for one sample, on the host.
    pub fn target(&self, teacher_logit: f64, positive: bool) -> f64 {
        let mut p = calibration::sigmoid(teacher_logit / self.temperature + self.shift);
        if self.options.side_correction {
            p = side_correct(p, positive, self.options.side_margin);
        }
        let y = if positive { 1.0 } else { 0.0 };
        (1.0 - self.options.infusion) * p + self.options.infusion * y
    }
}

/// Every label of a split as positive / negative; an error unless the split is a 2-class task.
fn split_labels(source: &dyn BatchSource, role: &str) -> Result<Vec<bool>> {
    let k = source.num_classes();
    if k != 2 {
        return Err(KdError::InvalidConfig(format!(
            "de-biased KD is for binary classification: the {role} split {} has {k} classes",
            source.name()
        )));
    }
    let labels: Vec<usize> = (0..source.len()).map(|i| source.label(i)).collect();
    let indices: Vec<usize> = (0..labels.len()).collect();
    check_binary_labels(&labels, &indices)?;
    let positives: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
    positive_rate(&positives, &format!("the {role} split {}", source.name()))?;
    Ok(positives)
}

fn check_binary_labels(labels: &[usize], indices: &[usize]) -> Result<()> {
    match labels.iter().position(|&l| l > 1) {
        Some(pos) => Err(KdError::LabelOutOfRange { label: labels[pos], sample: indices.get(pos).copied().unwrap_or(pos), num_classes: 2 }),
        None => Ok(()),
    }
}

/// The teacher's binary logits `d = z_1 - z_0` over a whole split, in sample order.
fn teacher_logits(teacher: &dyn Teacher, source: &dyn BatchSource, batch_size: usize, device: &Device) -> Result<Vec<f64>> {
    let indices: Vec<usize> = (0..source.len()).collect();
    let mut out = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(batch_size) {
        let batch = source.batch(chunk, 0, 0, device)?;
        let outputs = teacher
            .outputs(&batch, TeacherNeed::Logits)?
            .ok_or_else(|| KdError::Missing { method: "de-biased KD".into(), what: "teacher logits".into() })?;
        let d = binary_logit(outputs.logits.without_autodiff(), "teacher")?;
        let values =
            d.into_data().convert::<f64>().try_to_vec::<f64>().map_err(|e| KdError::Record(format!("reading teacher logits: {e:?}")))?;
        if values.len() != chunk.len() {
            return Err(KdError::ShapeMismatch {
                what: format!("teacher logits on {}", source.name()),
                expected: vec![chunk.len(), 2],
                actual: vec![values.len(), 2],
            });
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(KdError::NonFinite { what: format!("teacher logits on {}", source.name()) });
        }
        out.extend(values);
    }
    Ok(out)
}
