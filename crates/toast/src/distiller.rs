//! TOAST as a [`Distiller`]: the replay in [`Distiller::prepare_batch`], both stages' loss in
//! [`Distiller::loss`], the bank and the next replay in [`Distiller::after_step`], the medoids in
//! [`Distiller::end_epoch`].

use burn::tensor::{Device, Tensor, TensorData};
use kd_core::loss::one_hot;
use kd_core::{Batch, BatchSource, Distiller, KdError, LossTerms, Result, Step, StepContext, StepDone, TeacherNeed};

use crate::config::{BatchMode, Hardness, ReplayCandidates, ToastConfig};
use crate::loss::{argmax_row, hard_cross_entropy_row, medoid_targets, toast_loss_rows};
use crate::medoid::{BankEntry, MedoidBank, sample_key};
use kd_core::replay::{ReplayBuffer, ReplayEntry, ReplayView, select_hardest};
use kd_core::state::{StateReader as Reader, put_usize};

const STATE_MAGIC: &[u8; 8] = b"KDTOAST1";

/// The method's name.
pub const NAME: &str = "toast";
/// TOAST without its selection: every fresh row of a step is replayed in the next
/// (`replay_fraction = 1` with `append` and `fresh` candidates), the ablation of the
/// "under-trained data" choice at DLB's replay budget.
pub const NAME_REPLAY_ALL: &str = "toast-replay-all";
/// What the loss keeps for `after_step`: the per-row stage-1 cross-entropy and stage-2 KL.
const CE_ROWS: &str = "ce_rows";
const KL_ROWS: &str = "kl_rows";

/// Two-stage self-distillation (our design of TOAST; see the crate docs). No teacher.
#[derive(Debug, Clone)]
pub struct Toast {
    /// The name runs record: [`NAME`], or [`NAME_REPLAY_ALL`] for the ablation.
    name: &'static str,
    config: ToastConfig,
    bank: MedoidBank,
    replay: Option<ReplayBuffer>,
    /// The plain device the trainer works on (medoids are computed there at epoch end).
    device: Option<Device>,
    /// `Q` ([`MedoidBank::class_distributions`]) on the device it was last used on.
    class_distributions: Option<Tensor<2>>,
}

impl Toast {
    /// A TOAST trainer; the configuration is checked.
    pub fn new(config: ToastConfig) -> Result<Self> {
        config.validate()?;
        let bank = MedoidBank::new(config.bank_size, config.prefer_correct);
        Ok(Toast { name: NAME, config, bank, replay: None, device: None, class_distributions: None })
    }

    /// TOAST without the selection ([`NAME_REPLAY_ALL`]): `replay_fraction = 1`, `append`,
    /// `fresh` candidates, or an error naming what differs.
    pub fn replay_all(config: ToastConfig) -> Result<Self> {
        if config.replay_fraction != 1.0 || config.batch_mode != BatchMode::Append || config.candidates != ReplayCandidates::Fresh {
            return Err(KdError::InvalidConfig(format!(
                "`{NAME_REPLAY_ALL}` replays every fresh row (replay_fraction 1, batch_mode \"append\", candidates \"fresh\"; got {}, {:?}, {:?})",
                config.replay_fraction, config.batch_mode, config.candidates
            )));
        }
        Ok(Toast { name: NAME_REPLAY_ALL, ..Self::new(config)? })
    }

    /// The configuration.
    pub fn config(&self) -> &ToastConfig {
        &self.config
    }

    /// Stage 1's state: this epoch's reservoirs and the current medoids.
    pub fn bank(&self) -> &MedoidBank {
        &self.bank
    }

    /// Stage 2's state: the samples the next step replays, if any.
    pub fn replay_buffer(&self) -> Option<&ReplayBuffer> {
        self.replay.as_ref()
    }

    /// `Q` on `device`, rebuilt only when the medoids or the device changed.
    fn class_distributions_on(&mut self, device: &Device) -> Tensor<2> {
        if let Some(q) = &self.class_distributions {
            let d = q.device();
            if &d == device && d.is_autodiff() == device.is_autodiff() {
                return q.clone();
            }
        }
        let c = self.bank.classes();
        let q = Tensor::<2>::from_data(TensorData::new(self.bank.class_distributions(self.config.tau), [c, c]), device);
        self.class_distributions = Some(q.clone());
        q
    }

    /// Records the rows `first..` of a step in the bank (detached logits, host side).
    fn record(&mut self, ctx: &StepContext, batch: &Batch, logits: &[f32], classes: usize, first: usize) -> Result<()> {
        for row in first..batch.len() {
            let values = &logits[row * classes..(row + 1) * classes];
            let label = batch.labels_host[row];
            let (index, view) = (batch.indices[row], batch.views[row]);
            let entry = BankEntry {
                correct: argmax_row(values) == label,
                key: sample_key(ctx.seed, ctx.epoch, index, view),
                index,
                view,
                logits: values.to_vec(),
            };
            self.bank.record(label, entry)?;
        }
        Ok(())
    }
}

impl Distiller for Toast {
    fn name(&self) -> &str {
        self.name
    }

    fn teacher_need(&self) -> TeacherNeed {
        TeacherNeed::Nothing
    }

    fn prepare_batch(&mut self, ctx: &StepContext, batch: Batch, data: &dyn BatchSource, device: &Device) -> Result<Batch> {
        self.device = Some(device.clone());
        let n = batch.len();
        let active = ctx.epoch >= self.config.replay_from_epoch;
        let count = match &self.replay {
            Some(buffer) if active => self.config.replay_capacity(n).min(buffer.len()),
            _ => 0,
        };
        let Some(buffer) = self.replay.as_ref().filter(|_| count > 0) else { return Ok(batch) };
        let replayed = buffer.draw("TOAST", count, ReplayView::Next, data, device)?;
        let fresh = match self.config.batch_mode {
            // The replayed rows take the places of the loader batch's last rows.
            BatchMode::Displace => batch.first(n - count),
            BatchMode::Append => batch,
        };
        Ok(Batch::concat(replayed, fresh))
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let (batch, logits) = (step.batch, &step.student.logits);
        let [n, classes] = logits.dims();
        if n == 0 {
            return Err(KdError::InvalidConfig("TOAST: an empty batch has no loss".into()));
        }
        if n != batch.len() || batch.indices.len() != n || batch.views.len() != n {
            return Err(KdError::ShapeMismatch { what: "TOAST logits vs batch".into(), expected: vec![batch.len()], actual: vec![n] });
        }
        if let Some((pos, &label)) = batch.labels_host.iter().enumerate().find(|(_, l)| **l >= classes) {
            return Err(KdError::LabelOutOfRange { label, sample: batch.indices[pos], num_classes: classes });
        }
        let device = logits.device();
        if self.device.is_none() {
            self.device = Some(device.clone().without_autodiff());
        }

        // Stage 1 over every row: the targets live on the labels' (plain) device, constants
        // for autodiff.
        let eps = self.config.epsilon;
        let targets = if eps == 0.0 || self.bank.medoid_count() == 0 {
            one_hot(batch.labels.clone(), classes)
        } else {
            let q = self.class_distributions_on(&batch.labels.device());
            medoid_targets(batch.labels.clone(), q, eps)
        };
        // Stage 2 over the replayed rows (the first r).
        let previous = batch.replayed_logits(NAME, classes, &device)?;
        let (ce_rows, kl_rows) = toast_loss_rows(logits.clone(), targets, previous, self.config.temperature);
        let stage1 = ce_rows.clone().mean();
        let stage2 = match &kl_rows {
            Some(kl) => kl.clone().mean().mul_scalar(self.config.lambda),
            None => Tensor::zeros([1], &device),
        };
        // The per-row losses rank the rows for the next replay (after_step).
        let mut terms = LossTerms::new().with("medoid_ce", stage1).with("replay_kl", stage2).keep(CE_ROWS, ce_rows);
        if let Some(kl) = kl_rows {
            terms = terms.keep(KL_ROWS, kl);
        }
        Ok(terms)
    }

    fn after_step(&mut self, step: &StepDone<'_>) -> Result<()> {
        let (batch, ctx) = (step.batch, &step.ctx);
        let [n, classes] = step.student.logits.dims();
        let r = batch.replayed.len();
        self.bank.set_classes(classes)?;
        // Bookkeeping on the host, from one transfer: logits, per-row CE, per-row KL.
        let mut parts = vec![step.student.logits.clone().reshape([n * classes]), step.kept(NAME, CE_ROWS)?.clone()];
        if r > 0 {
            parts.push(step.kept(NAME, KL_ROWS)?.clone());
        }
        let host =
            Tensor::cat(parts, 0).try_into_vec_as::<f32>().map_err(|e| KdError::Record(format!("reading TOAST predictions: {e:?}")))?;
        let (logits, rest) = host.split_at(n * classes);
        let (ce, kl) = rest.split_at(n);

        self.record(ctx, batch, logits, classes, if self.config.record_replayed { 0 } else { r })?;

        let scores: Vec<f64> = (0..n)
            .map(|row| match self.config.hardness {
                Hardness::Loss => ce[row] as f64 + if row < r { self.config.lambda * kl[row] as f64 } else { 0.0 },
                Hardness::CrossEntropy => hard_cross_entropy_row(&logits[row * classes..(row + 1) * classes], batch.labels_host[row]),
            })
            .collect();
        let first = match self.config.candidates {
            ReplayCandidates::All => 0,
            ReplayCandidates::Fresh => r,
        };
        // As many as the next step can take if its loader batch has this step's size.
        let loader_len = match self.config.batch_mode {
            BatchMode::Displace => n,
            BatchMode::Append => n - r,
        };
        let keep = self.config.replay_capacity(loader_len);
        let entries = select_hardest(&scores, first, keep)
            .into_iter()
            .map(|row| ReplayEntry {
                index: batch.indices[row],
                view: batch.views[row],
                score: scores[row],
                logits: logits[row * classes..(row + 1) * classes].to_vec(),
            })
            .collect::<Vec<_>>();
        self.replay = (!entries.is_empty()).then_some(ReplayBuffer { epoch: ctx.epoch, classes, entries });
        Ok(())
    }

    fn end_epoch(&mut self, _epoch: usize) -> Result<()> {
        if self.bank.is_empty() {
            return Ok(());
        }
        let device = self.device.clone().ok_or_else(|| KdError::Missing { method: NAME.into(), what: "a device (no step ran)".into() })?;
        if self.bank.finish_epoch(&device, self.config.medoid_chunk_elements)? > 0 {
            self.class_distributions = None;
        }
        Ok(())
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        // Magic, the bank (length-prefixed), then a presence flag and the replay buffer.
        let mut out = STATE_MAGIC.to_vec();
        let bank = self.bank.to_bytes();
        put_usize(&mut out, bank.len());
        out.extend_from_slice(&bank);
        match &self.replay {
            None => out.push(0),
            Some(buffer) => {
                out.push(1);
                let bytes = buffer.to_bytes();
                put_usize(&mut out, bytes.len());
                out.extend_from_slice(&bytes);
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.class_distributions = None;
        if bytes.is_empty() {
            self.bank = MedoidBank::new(self.config.bank_size, self.config.prefer_correct);
            self.replay = None;
            return Ok(());
        }
        let mut r = Reader::new(bytes, "distiller");
        r.magic(STATE_MAGIC)?;
        let len = r.usize()?;
        let bank = MedoidBank::from_bytes(r.take(len)?, self.config.bank_size, self.config.prefer_correct)?;
        let replay = if r.bool()? {
            let len = r.usize()?;
            Some(ReplayBuffer::from_bytes(r.take(len)?)?)
        } else {
            None
        };
        r.finish()?;
        if let Some(buffer) = &replay
            && bank.classes() != 0
            && buffer.classes != bank.classes()
        {
            return Err(r.error(format!("replay buffer has {} classes, the bank {}", buffer.classes, bank.classes())));
        }
        self.bank = bank;
        self.replay = replay;
        Ok(())
    }
}
