//! PS-KD: progressive self-knowledge distillation (Kim et al., ICCV 2021).
//!
//! Each sample's target mixes its label with the model's own prediction for it from the
//! previous epoch: `y~ = (1 - a_t) onehot(y) + a_t P[idx]`, `a_t = a_T (t + 1) / E` with `t`
//! the 0-based epoch, and `L = mean_b -sum_c y~_c log softmax(z)_c` (no temperature). After the
//! step, `P[idx] <- softmax(z)` of this step's forward pass, detached. In epoch 0 the targets
//! are one-hot (lgcnsai/PS-KD-Pytorch `main.py` and `loss/pskd_loss.py`; docs/methods.md,
//! "PS-KD"). No teacher.

use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use kd_core::Student;
use kd_core::loss::soft_cross_entropy;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::state::{StateReader, put_u64};
use kd_core::{Batch, Distiller, KdError, LossTerms, Result, Step, StepContext, StepDone, TeacherNeed};
use serde::{Deserialize, Serialize};

/// The method's name.
pub const NAME: &str = "pskd";

/// Configuration of [`PsKd`]. Default: `alpha_T` = 0.8, the default of the authors' code
/// (lgcnsai/PS-KD-Pytorch; docs/methods.md, "PS-KD"). The number of epochs `E` is the run's
/// ([`StepContext::total_epochs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PsKdConfig {
    /// `alpha_T`, the weight of the past prediction at the last epoch, in `[0, 1]`.
    pub alpha_final: f64,
    /// Size of the training set, to size the table up front and reject indices beyond it.
    /// `None`: the table grows to the largest index seen.
    pub num_samples: Option<usize>,
}

impl Default for PsKdConfig {
    fn default() -> Self {
        PsKdConfig { alpha_final: 0.8, num_samples: None }
    }
}

impl PsKdConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha_final.is_finite() && (0.0..=1.0).contains(&self.alpha_final)) {
            return Err(KdError::InvalidConfig(format!("PS-KD alpha_final must be in [0, 1], got {}", self.alpha_final)));
        }
        if self.num_samples == Some(0) {
            return Err(KdError::InvalidConfig("PS-KD num_samples must be at least 1".into()));
        }
        Ok(())
    }
}

/// `alpha_t = alpha_T (t + 1) / E` with `t = epoch - 1` (`epoch` counted from 1, as
/// [`StepContext::epoch`]), clamped to `[0, alpha_T]`.
pub fn pskd_alpha(alpha_final: f64, epoch: usize, total_epochs: usize) -> f64 {
    let t_plus_one = epoch.max(1) as f64;
    (alpha_final * t_plus_one / total_epochs.max(1) as f64).clamp(0.0, alpha_final)
}

/// Writes the PS-KD target of one sample into `out` (`classes` long): one-hot when there is no
/// past prediction, else `(1 - alpha) onehot(label) + alpha * past`.
pub fn pskd_target(label: usize, past: Option<&[f32]>, alpha: f64, out: &mut [f32]) {
    match past {
        Some(p) => {
            for (o, &v) in out.iter_mut().zip(p) {
                *o = (alpha * v as f64) as f32;
            }
            out[label] += (1.0 - alpha) as f32;
        }
        None => {
            out.fill(0.0);
            out[label] = 1.0;
        }
    }
}

/// One row of `classes` floats per dataset index; rows are filled as samples are seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PredictionTable {
    classes: usize,
    values: Vec<f32>,
    filled: Vec<bool>,
}

impl PredictionTable {
    /// An empty table of rows `classes` wide.
    pub fn new(classes: usize) -> Self {
        PredictionTable { classes, values: Vec::new(), filled: Vec::new() }
    }

    /// Row width (0 before the first batch fixed it).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of rows allocated (the largest index seen plus one, or the configured size).
    pub fn capacity(&self) -> usize {
        self.filled.len()
    }

    /// Number of rows filled.
    pub fn filled(&self) -> usize {
        self.filled.iter().filter(|f| **f).count()
    }

    /// Grows the table to at least `rows` rows.
    pub fn reserve_rows(&mut self, rows: usize) {
        if rows > self.filled.len() {
            self.filled.resize(rows, false);
            self.values.resize(rows * self.classes, 0.0);
        }
    }

    /// The stored row of `index`, if it was written.
    pub fn get(&self, index: usize) -> Option<&[f32]> {
        self.filled.get(index).filter(|f| **f).map(|_| &self.values[index * self.classes..(index + 1) * self.classes])
    }

    /// Writes the row of `index` (growing the table); `row` must be `classes` long.
    pub fn set(&mut self, index: usize, row: &[f32]) -> Result<()> {
        if row.len() != self.classes {
            return Err(KdError::ShapeMismatch { what: "PS-KD table row".into(), expected: vec![self.classes], actual: vec![row.len()] });
        }
        self.reserve_rows(index + 1);
        self.values[index * self.classes..(index + 1) * self.classes].copy_from_slice(row);
        self.filled[index] = true;
        Ok(())
    }

    /// Compact little-endian encoding: magic, `classes`, number of filled rows, then each
    /// filled row as its index and its floats (exact bits, so it round-trips exactly).
    pub fn to_bytes(&self) -> Vec<u8> {
        let filled = self.filled();
        let mut out = Vec::with_capacity(24 + filled * (8 + 4 * self.classes));
        out.extend_from_slice(TABLE_MAGIC);
        put_u64(&mut out, self.classes as u64);
        put_u64(&mut out, filled as u64);
        for (index, _) in self.filled.iter().enumerate().filter(|(_, f)| **f) {
            put_u64(&mut out, index as u64);
            for v in &self.values[index * self.classes..(index + 1) * self.classes] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Decodes what [`PredictionTable::to_bytes`] wrote. The capacity becomes the largest
    /// stored index plus one (the distiller re-applies a configured `num_samples`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = StateReader::new(bytes, "ps-kd");
        r.magic(TABLE_MAGIC)?;
        let classes = r.usize()?;
        let filled = r.usize()?;
        // Sizes are checked against the bytes left before anything is allocated.
        let row_bytes = classes.checked_mul(4).and_then(|b| b.checked_add(8));
        if (classes == 0 && filled > 0) || row_bytes.and_then(|b| b.checked_mul(filled)) != Some(r.remaining()) {
            return Err(r.error(format!("{filled} rows of {classes} classes do not fit {} bytes", r.remaining())));
        }
        let mut table = PredictionTable::new(classes);
        let mut row = vec![0.0f32; classes];
        for _ in 0..filled {
            let index = r.usize()?;
            if index.checked_add(1).and_then(|n| n.checked_mul(classes)).is_none_or(|n| n > isize::MAX as usize / 4) {
                return Err(r.error(format!("row index {index} is too large")));
            }
            for v in row.iter_mut() {
                *v = r.f32()?;
            }
            table.set(index, &row)?;
        }
        Ok(table)
    }
}

const TABLE_MAGIC: &[u8; 8] = b"KDPSKD01";

/// Pulls a `[rows, cols]` tensor to the host as `f32`.
pub(crate) fn host_rows(t: Tensor<2>) -> Result<Vec<f32>> {
    t.without_autodiff()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| KdError::Record(format!("reading predictions: {e:?}")))
}

/// PS-KD as a [`Distiller`]: no teacher, a per-sample table of past predictions as state.
#[derive(Debug, Clone)]
pub struct PsKd {
    config: PsKdConfig,
    table: PredictionTable,
}

impl PsKd {
    /// A PS-KD trainer; the configuration is checked.
    pub fn new(config: PsKdConfig) -> Result<Self> {
        config.validate()?;
        Ok(PsKd { config, table: PredictionTable::default() })
    }

    /// The table of past predictions.
    pub fn table(&self) -> &PredictionTable {
        &self.table
    }

    /// Fixes the table's width on the first batch and checks it afterwards.
    fn ensure_table(&mut self, classes: usize) -> Result<()> {
        if self.table.classes() == 0 && self.table.capacity() == 0 {
            self.table = PredictionTable::new(classes);
            if let Some(n) = self.config.num_samples {
                self.table.reserve_rows(n);
            }
        } else if self.table.classes() != classes {
            return Err(KdError::ShapeMismatch {
                what: "PS-KD table width (classes)".into(),
                expected: vec![self.table.classes()],
                actual: vec![classes],
            });
        }
        Ok(())
    }

    /// The soft targets of the batch, `[batch, classes]` on the host, row-major.
    pub fn targets(&mut self, ctx: &StepContext, batch: &Batch, classes: usize) -> Result<Vec<f32>> {
        self.ensure_table(classes)?;
        if batch.indices.len() != batch.len() {
            return Err(KdError::Missing { method: "ps-kd".into(), what: "a dataset index for every sample".into() });
        }
        let alpha = pskd_alpha(self.config.alpha_final, ctx.epoch, ctx.total_epochs);
        let first_epoch = ctx.epoch <= 1;
        let mut out = vec![0.0f32; batch.len() * classes];
        for (row, (&label, &index)) in out.chunks_mut(classes).zip(batch.labels_host.iter().zip(&batch.indices)) {
            if label >= classes {
                return Err(KdError::LabelOutOfRange { label, sample: index, num_classes: classes });
            }
            if let Some(n) = self.config.num_samples
                && index >= n
            {
                return Err(KdError::InvalidConfig(format!("PS-KD num_samples is {n} but a batch holds sample index {index}")));
            }
            // Epoch 0 sets P[idx] to the one-hot label first, so its targets are one-hot; a
            // sample never seen before (no row yet) gets the same.
            let past = if first_epoch { None } else { self.table.get(index) };
            pskd_target(label, past, alpha, row);
        }
        Ok(out)
    }

    /// Writes `softmax(logits)` (detached) into the rows of the batch's samples.
    pub fn record(&mut self, batch: &Batch, logits: Tensor<2>) -> Result<()> {
        let classes = logits.dims()[1];
        self.ensure_table(classes)?;
        let probs = host_rows(softmax(logits.without_autodiff(), 1))?;
        for (row, &index) in probs.chunks(classes).zip(&batch.indices) {
            self.table.set(index, row)?;
        }
        Ok(())
    }
}

impl Distiller for PsKd {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::Nothing
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let (batch, student) = (step.batch, &step.student.logits);
        let [b, classes] = student.dims();
        if b != batch.len() {
            return Err(KdError::ShapeMismatch { what: "PS-KD logits vs batch".into(), expected: vec![batch.len()], actual: vec![b] });
        }
        // The targets read the table before this step's predictions overwrite it (after_step).
        let targets = self.targets(&step.ctx, batch, classes)?;
        let targets = Tensor::<2>::from_data(TensorData::new(targets, [b, classes]), &student.device());
        Ok(LossTerms::new().with("pskd", soft_cross_entropy(student.clone(), targets).mean()))
    }

    fn after_step(&mut self, step: &StepDone<'_>) -> Result<()> {
        self.record(step.batch, step.student.logits.clone())
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(self.table.to_bytes())
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.table = if bytes.is_empty() { PredictionTable::default() } else { PredictionTable::from_bytes(bytes)? };
        if let Some(n) = self.config.num_samples
            && self.table.classes() > 0
        {
            self.table.reserve_rows(n);
        }
        Ok(())
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: PsKdConfig = method_config(NAME, PsKdConfig::default(), user)?;
    Prepared::new(NAME, &cfg, PsKd::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use kd_core::distiller::step_without_update;
    use kd_testkit::{ctx, label_batch, logits};

    #[test]
    fn alpha_schedule() {
        assert!((pskd_alpha(0.8, 1, 4) - 0.2).abs() < 1e-12);
        assert!((pskd_alpha(0.8, 4, 4) - 0.8).abs() < 1e-12);
        assert!((pskd_alpha(0.8, 9, 4) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn epoch_zero_is_one_hot_then_targets_mix_past_predictions() {
        let device = Device::flex();
        let mut d = PsKd::new(PsKdConfig::default()).unwrap();
        let b = label_batch(vec![2, 0], vec![5, 1], &device);
        let out = logits(vec![1.0, 2.0, 3.0, 0.5, -1.0, 0.0], 3, &device);

        let t0 = d.targets(&ctx(1, 4), &b, 3).unwrap();
        assert_eq!(t0, vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        // The epoch-0 loss is the plain cross-entropy.
        let loss = step_without_update(&mut d, &Step::new(ctx(1, 4), &b, &out, None)).unwrap().total().unwrap().into_scalar::<f32>();
        let ce = kd_core::loss::cross_entropy_mean(out.logits.clone(), b.labels.clone()).into_scalar::<f32>();
        assert!((loss - ce).abs() < 1e-6);
        assert_eq!(d.table().filled(), 2);
        assert_eq!(d.table().capacity(), 6);
        let p5 = d.table().get(5).unwrap().to_vec();
        let expected = host_rows(softmax(out.logits.clone(), 1)).unwrap();
        assert_eq!(p5, expected[..3].to_vec());

        // Epoch 2 of 4: alpha = 0.4; sample 5 mixes, sample 7 (never seen) stays one-hot.
        let b2 = label_batch(vec![2, 1], vec![5, 7], &device);
        let t1 = d.targets(&ctx(2, 4), &b2, 3).unwrap();
        for (c, v) in t1[..3].iter().enumerate() {
            let onehot = if c == 2 { 1.0 } else { 0.0 };
            assert!((v - (0.6 * onehot + 0.4 * p5[c])).abs() < 1e-6);
        }
        assert_eq!(&t1[3..], &[0.0, 1.0, 0.0]);
        for row in t1.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // The loss uses these targets and then overwrites the rows.
        let out2 = logits(vec![0.1, 0.2, 0.3, 0.3, 0.2, 0.1], 3, &device);
        let loss2 = step_without_update(&mut d, &Step::new(ctx(2, 4), &b2, &out2, None)).unwrap().total().unwrap().into_scalar::<f32>();
        let targets = Tensor::<2>::from_data(TensorData::new(t1, [2, 3]), &device);
        let want = soft_cross_entropy(out2.logits.clone(), targets).mean().into_scalar::<f32>();
        assert!((loss2 - want).abs() < 1e-6);
        assert_ne!(d.table().get(5).unwrap(), &p5[..]);
        // Class count is fixed by the first batch.
        assert!(d.targets(&ctx(2, 4), &b2, 4).is_err());
    }

    #[test]
    fn state_round_trips_exactly() {
        let device = Device::flex();
        let mut d = PsKd::new(PsKdConfig::default()).unwrap();
        let b = label_batch(vec![2, 0, 1], vec![9, 3, 0], &device);
        let out = logits(vec![1.0, 2.0, 3.0, 0.5, -1.0, 0.0, 1e-3, 7.0, -7.0], 3, &device);
        step_without_update(&mut d, &Step::new(ctx(1, 3), &b, &out, None)).unwrap();
        let bytes = d.save_state().unwrap();
        let mut back = PsKd::new(PsKdConfig::default()).unwrap();
        back.load_state(&bytes).unwrap();
        assert_eq!(back.table(), d.table());
        assert_eq!(back.save_state().unwrap(), bytes);
        for i in [9, 3, 0] {
            let (a, b) = (d.table().get(i).unwrap(), back.table().get(i).unwrap());
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        assert!(back.table().get(1).is_none());
        // Truncated or foreign bytes are errors, not panics.
        assert!(back.load_state(&bytes[..bytes.len() - 1]).is_err());
        assert!(back.load_state(b"not a table at all, no").is_err());
        back.load_state(&[]).unwrap();
        assert_eq!(back.table().filled(), 0);
    }

    #[test]
    fn configured_size_rejects_out_of_range_indices() {
        let device = Device::flex();
        let mut d = PsKd::new(PsKdConfig { num_samples: Some(4), ..Default::default() }).unwrap();
        let b = label_batch(vec![0], vec![4], &device);
        let err = d.targets(&ctx(1, 2), &b, 3).unwrap_err().to_string();
        assert!(err.contains("num_samples"), "{err}");
        assert!(PsKd::new(PsKdConfig { alpha_final: 1.5, ..Default::default() }).is_err());
    }

    #[test]
    fn trains_and_resumes_exactly_through_a_checkpoint() {
        use kd_core::train::parameter_values;
        use kd_core::{NoTeacher, RunOptions, Trainer};
        use kd_testkit::{TinyConv, noisy, recipe, temp_dir};
        let device = Device::flex();
        let (train, test) = (noisy(10), noisy(6));
        let student = TinyConv::new(4, 1, &device.clone().autodiff());
        let run = |student: TinyConv, options: RunOptions| {
            // The labels are noise: a model that learns nothing is expected, not divergence.
            let options = RunOptions { divergence: kd_core::train::DivergenceCheck::off(), ..options };
            let mut d = PsKd::new(PsKdConfig::default()).unwrap();
            let out = Trainer::new(recipe(3, 4, 0.05, 3), &train, &test, device.clone())
                .with_options(options)
                .fit(student, &mut d, &NoTeacher)
                .unwrap();
            (out, d)
        };
        let (full, d) = run(student.clone(), RunOptions::default());
        assert_eq!(d.table().filled(), 10);
        let dir = temp_dir();
        let options =
            RunOptions { checkpoint_dir: Some(dir.path().to_path_buf()), resume: true, stop_after_epochs: Some(1), ..Default::default() };
        for _ in 0..2 {
            assert!(!run(student.clone(), options.clone()).0.finished);
        }
        let (resumed, d2) = run(student, options);
        assert!(resumed.finished);
        // The table crossed the checkpoints: the resumed run is the uninterrupted one.
        assert_eq!(parameter_values(&resumed.student), parameter_values(&full.student));
        assert_eq!(d2.table(), d.table());
    }

    #[test]
    fn fresh_state_round_trips() {
        let device = Device::flex();
        let fresh = PsKd::new(PsKdConfig::default()).unwrap();
        // A distiller whose table holds two samples' predictions...
        let mut d = PsKd::new(PsKdConfig::default()).unwrap();
        let b = label_batch(vec![2, 0], vec![5, 1], &device);
        let out = logits(vec![1.0, 2.0, 3.0, 0.5, -1.0, 0.0], 3, &device);
        step_without_update(&mut d, &Step::new(ctx(1, 2), &b, &out, None)).unwrap();
        assert_eq!(d.table().filled(), 2);
        // ...loads a fresh distiller's state: its table is emptied, the fresh one.
        d.load_state(&fresh.save_state().unwrap()).unwrap();
        assert_eq!(d.table().filled(), 0);
        assert!(d.table().get(5).is_none());
        assert_eq!(d.table(), fresh.table());
        assert_eq!(d.save_state().unwrap(), fresh.save_state().unwrap());
    }
}
