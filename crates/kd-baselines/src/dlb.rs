//! DLB: self-distillation from the last mini-batch (Shen et al., CVPR 2022).
//!
//! Each step trains on the previous batch's samples (re-drawn with augmentation view 1) and
//! the fresh batch (view 0):
//! `L = CE([z'_prev; z], [y_prev; y]) + alpha T^2 KL_batchmean(softmax(sg(z_prev)/T) || softmax(z'_prev/T))`,
//! where `z_prev` are the logits the previous step computed on those samples (before its
//! update). Then this step's fresh indices and detached logits are stored. The first step
//! overall has no previous batch and is CE only; the buffer persists across epochs
//! (Meta-knowledge-Lab/DLB `dlb.py`, `train_one_epoch`; docs/methods.md, "DLB").
//! No teacher.

use burn::tensor::{Device, Tensor};
use kd_core::check;
use kd_core::loss::{cross_entropy_mean, kd_kl_mean};
use kd_core::{Batch, BatchSource, Distiller, KdError, LossTerms, Result, Step, StepContext, StepDone, TeacherNeed};
use serde::{Deserialize, Serialize};

use kd_core::replay::{ReplayBuffer, ReplayEntry, ReplayView};

use crate::pskd::host_rows;
use kd_core::Student;
use kd_core::registry::{Prepared, Value, method_config};

/// The method's name.
pub const NAME: &str = "dlb";

/// Configuration of [`Dlb`]. Defaults T = 3, alpha = 1: the paper's values as remembered,
/// **\[UNVERIFIED\]** (the DLB code has no defaults; its default experiment suffix "TP3_0.5"
/// hints at T = 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DlbConfig {
    /// Softmax temperature T of the consistency term.
    pub temperature: f64,
    /// Weight alpha of the consistency term.
    pub alpha: f64,
    /// Augmentation view the previous batch is re-drawn with (the DLB loader's second view).
    pub replay_view: u64,
}

impl Default for DlbConfig {
    fn default() -> Self {
        DlbConfig { temperature: 3.0, alpha: 1.0, replay_view: 1 }
    }
}

impl DlbConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::positive("DLB", &[("temperature", self.temperature)])?;
        check::non_negative("DLB", &[("alpha", self.alpha)])
    }
}

/// The DLB consistency term: `alpha T^2 KL_batchmean(softmax(prev/T) || softmax(replayed/T))`, `[1]`.
pub fn dlb_loss(replayed_logits: Tensor<2>, previous_logits: Tensor<2>, temperature: f64, alpha: f64) -> Tensor<1> {
    kd_kl_mean(replayed_logits, previous_logits, temperature).mul_scalar(alpha)
}

/// DLB as a [`Distiller`]: replays the previous batch in [`Distiller::prepare_batch`] and
/// stores the fresh rows in [`Distiller::after_step`].
#[derive(Debug, Clone)]
pub struct Dlb {
    config: DlbConfig,
    /// The last step's fresh samples and the logits computed on them.
    last: Option<ReplayBuffer>,
}

impl Dlb {
    /// A DLB trainer; the configuration is checked.
    pub fn new(config: DlbConfig) -> Result<Self> {
        config.validate()?;
        Ok(Dlb { config, last: None })
    }

    /// The stored last batch, if any.
    pub fn last_batch(&self) -> Option<&ReplayBuffer> {
        self.last.as_ref()
    }
}

impl Distiller for Dlb {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::Nothing
    }

    fn prepare_batch(&mut self, _: &StepContext, batch: Batch, data: &dyn BatchSource, device: &Device) -> Result<Batch> {
        let Some(last) = &self.last else { return Ok(batch) };
        let replay = last.draw("DLB", last.len(), ReplayView::Fixed(self.config.replay_view), data, device)?;
        Ok(Batch::concat(replay, batch))
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let (batch, logits) = (step.batch, &step.student.logits);
        let [n, classes] = logits.dims();
        if n != batch.len() {
            return Err(KdError::ShapeMismatch { what: "DLB logits vs batch".into(), expected: vec![batch.len()], actual: vec![n] });
        }
        let ce = cross_entropy_mean(logits.clone(), batch.labels.clone());
        let consistency = match batch.replayed_logits(NAME, classes, &logits.device())? {
            None => Tensor::zeros([1], &logits.device()),
            Some(previous) => {
                let r = batch.replayed.len();
                dlb_loss(logits.clone().narrow(0, 0, r), previous, self.config.temperature, self.config.alpha)
            }
        };
        Ok(LossTerms::new().with("ce", ce).with("dlb", consistency))
    }

    fn after_step(&mut self, step: &StepDone<'_>) -> Result<()> {
        // Store this step's fresh rows with their logits as computed before the update.
        let (batch, replayed) = (step.batch, step.batch.replayed.len());
        let [n, classes] = step.student.logits.dims();
        self.last = if n > replayed {
            let logits = host_rows(step.student.logits.clone().narrow(0, replayed, n - replayed))?;
            let entries = (replayed..n)
                .zip(logits.chunks(classes))
                .map(|(row, l)| ReplayEntry { index: batch.indices[row], view: batch.views[row], score: 0.0, logits: l.to_vec() })
                .collect();
            Some(ReplayBuffer { epoch: step.ctx.epoch, classes, entries })
        } else {
            None
        };
        Ok(())
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        // The shared replay encoding; no bytes when nothing is stored.
        Ok(self.last.as_ref().map(ReplayBuffer::to_bytes).unwrap_or_default())
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.last = if bytes.is_empty() { None } else { Some(ReplayBuffer::from_bytes(bytes)?) };
        Ok(())
    }
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: DlbConfig = method_config(NAME, DlbConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Dlb::new(cfg.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kd_core::distiller::step_without_update;
    use kd_testkit::{Samples, ctx, logits};

    /// Sample `i` is the single value `i + 100 * view + 1000 * epoch`, label `i % 3`.
    const TOY: Samples =
        Samples { name: "toy", len: 10, shape: [1, 1, 1], sample: |i, epoch, view| vec![(i + 100 * view as usize + 1000 * epoch) as f32] };

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    fn inputs(b: &Batch) -> Vec<f32> {
        b.inputs.clone().into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn first_step_is_ce_only_then_previous_batch_is_replayed() {
        let device = Device::flex();
        let mut d = Dlb::new(DlbConfig::default()).unwrap();

        // Step 1: nothing to replay, CE only.
        let b1 = d.prepare_batch(&ctx(1, 2), TOY.batch(&[0, 1], 1, 0, &device).unwrap(), &TOY, &device).unwrap();
        assert_eq!(b1.indices, vec![0, 1]);
        let o1 = logits(vec![1.0, 0.0, -1.0, 0.5, 2.0, 0.0], 3, &device);
        let terms = step_without_update(&mut d, &Step::new(ctx(1, 2), &b1, &o1, None)).unwrap();
        assert_eq!(scalar(terms.terms()[1].1.clone()), 0.0);
        let ce = scalar(cross_entropy_mean(o1.logits.clone(), b1.labels.clone()));
        assert!((scalar(terms.total().unwrap()) - ce).abs() < 1e-6);
        assert_eq!(d.last_batch().unwrap().entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![0, 1]);

        // Step 2 (next epoch: the buffer persists): samples 0 and 1 come back first, drawn with
        // view 1 as epoch 1 drew them.
        let fresh = TOY.batch(&[4, 5], 2, 0, &device).unwrap();
        let b2 = d.prepare_batch(&ctx(2, 2), fresh, &TOY, &device).unwrap();
        assert_eq!(b2.indices, vec![0, 1, 4, 5]);
        assert_eq!(b2.views, vec![1, 1, 0, 0]);
        assert_eq!(inputs(&b2), vec![1100.0, 1101.0, 2004.0, 2005.0]);
        assert_eq!(b2.labels_host, vec![0, 1, 1, 2]);

        let o2 = logits(vec![0.3, 0.1, -0.2, 0.0, 1.0, 0.5, 2.0, 1.0, 0.0, -1.0, 0.0, 1.0], 3, &device);
        let terms = step_without_update(&mut d, &Step::new(ctx(2, 2), &b2, &o2, None)).unwrap();
        let ce_all = scalar(cross_entropy_mean(o2.logits.clone(), b2.labels.clone()));
        assert!((scalar(terms.terms()[0].1.clone()) - ce_all).abs() < 1e-6);
        let want = scalar(dlb_loss(o2.logits.clone().narrow(0, 0, 2), o1.logits.clone(), 3.0, 1.0));
        let got = scalar(terms.terms()[1].1.clone());
        assert!(want > 0.0 && (got - want).abs() < 1e-6, "{got} vs {want}");
        // The fresh rows are stored for the next step.
        let last = d.last_batch().unwrap();
        assert_eq!((last.epoch, last.entries.iter().map(|e| e.index).collect::<Vec<_>>()), (2, vec![4, 5]));
        assert_eq!(last.logits_of(&last.entries), vec![2.0, 1.0, 0.0, -1.0, 0.0, 1.0]);
    }

    #[test]
    fn state_round_trips_exactly() {
        let device = Device::flex();
        let mut d = Dlb::new(DlbConfig::default()).unwrap();
        let empty = d.save_state().unwrap();
        let b = d.prepare_batch(&ctx(1, 2), TOY.batch(&[7, 2, 9], 1, 0, &device).unwrap(), &TOY, &device).unwrap();
        step_without_update(
            &mut d,
            &Step::new(ctx(1, 2), &b, &logits(vec![0.1, -3.5, 1e-7, 4.0, 0.0, -0.0, 1.5, 2.5, 3.5], 3, &device), None),
        )
        .unwrap();
        let bytes = d.save_state().unwrap();

        let mut back = Dlb::new(DlbConfig::default()).unwrap();
        back.load_state(&bytes).unwrap();
        assert_eq!(back.last_batch(), d.last_batch());
        assert_eq!(back.save_state().unwrap(), bytes);
        let logits = |d: &Dlb| d.last_batch().map(|l| l.logits_of(&l.entries)).unwrap();
        let (a, b) = (&logits(&d), &logits(&back));
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        // The restored state replays the same samples.
        let replay = back.prepare_batch(&ctx(2, 2), TOY.batch(&[0], 2, 0, &device).unwrap(), &TOY, &device).unwrap();
        assert_eq!(replay.indices, vec![7, 2, 9, 0]);

        back.load_state(&empty).unwrap();
        assert!(back.last_batch().is_none());
        assert!(back.load_state(&bytes[..bytes.len() - 2]).is_err());
        assert!(back.load_state(b"KDREPLY1\x07").is_err());
        assert!(Dlb::new(DlbConfig { temperature: -1.0, ..Default::default() }).is_err());
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
            let mut d = Dlb::new(DlbConfig::default()).unwrap();
            Trainer::new(recipe(2, 4, 0.05, 3), &train, &test, device.clone())
                .with_options(options)
                .fit(student, &mut d, &NoTeacher)
                .unwrap()
        };
        let full = run(student.clone(), RunOptions::default());
        // Every step after the very first replays: the term is positive in both epochs.
        assert!(full.history.iter().all(|r| r.train_terms["dlb"] > 0.0), "{:?}", full.history);
        let dir = temp_dir();
        let options =
            RunOptions { checkpoint_dir: Some(dir.path().to_path_buf()), resume: true, stop_after_epochs: Some(1), ..Default::default() };
        assert!(!run(student.clone(), options.clone()).finished);
        let resumed = run(student, options);
        assert!(resumed.finished);
        // The buffer crossed the checkpoint: the resumed run is the uninterrupted one.
        assert_eq!(parameter_values(&resumed.student), parameter_values(&full.student));
    }
}
