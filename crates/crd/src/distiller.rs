//! CRD as a [`Distiller`]: configuration, the heads as learnable parts, the memory and the
//! negatives as checkpointed state.
//!
//! ```text
//! L = w_ce * CE(z_s, y) + w_crd * (L(h_s) + L(h_t))        (see crate::loss)
//! ```
//!
//! on the penultimate embeddings ([`ModelOutput::embedding`], mdistiller's `pooled_feat`).
//!
//! Memory: the two banks hold `N * feat_dim * 2` floats for the run (CIFAR-100, `N = 50000`,
//! `feat_dim = 128`: 12.8 M floats, 51 MB). Per step, the reference gathers the rows of every
//! sample's positive and negatives, `B * (nce_k + 1) * feat_dim` floats per bank (batch 64,
//! `nce_k = 16384`: 134 M floats, 537 MB per bank, twice that for both sides). Here that is the
//! cost when `N * 8 > (nce_k + 1) * feat_dim`; on smaller training sets (CIFAR-100 with the
//! defaults among them) the scores come from the whole bank instead, `B * N` dot products per
//! bank (3.2 M floats, 13 MB), the same numbers ([`ContrastMemory::scores`]). On the host,
//! `B * nce_k` draws per step.

use burn::tensor::{Device, Tensor};
use kd_core::loss::cross_entropy_mean;
use kd_core::registry::{Prepared, Value, method_config};
use kd_core::{
    Batch, BatchSource, Distiller, KdError, LossTerms, ModelOutput, Result, Step, StepContext, StepDone, Student, TeacherNeed, check,
};
use serde::{Deserialize, Serialize};

use crate::loss::{CrdHeads, CrdParams, crd_loss_from_scores, normalisation_from_scores};
use crate::memory::{ContrastMemory, NegativeSampler, index_tensor};

/// The method's name.
pub const NAME: &str = "crd";

/// Configuration of [`Crd`]. Defaults: mdistiller's CRD config (`engine/cfg.py`: `FEAT.DIM`
/// 128, `NCE.K` 16384, `NCE.TEMPERATURE` 0.07, `NCE.MOMENTUM` 0.5, `LOSS.CE_WEIGHT` 1.0,
/// `LOSS.FEAT_WEIGHT` 0.8; `MODE` 'exact'), which are RepDistiller's (`--nce_k 16384 --nce_t
/// 0.07 --nce_m 0.5 --feat_dim 128`; its CIFAR-100 runs weight CE 1 and CRD 0.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrdConfig {
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of the contrastive term (`feat_weight`).
    pub feat_weight: f64,
    /// Width of the embedding heads' output and of the memory rows (`feat_dim`).
    pub feat_dim: usize,
    /// Negatives per sample (`nce_k`). When a class has fewer negatives in the training set,
    /// they are drawn with replacement, as the reference's sampler does (with a warning).
    pub nce_k: usize,
    /// Temperature of the scores (`nce_t`).
    pub nce_t: f64,
    /// Momentum of the memory update (`nce_m`), in `[0, 1)`.
    pub nce_mom: f64,
}

impl Default for CrdConfig {
    fn default() -> Self {
        CrdConfig { ce_weight: 1.0, feat_weight: 0.8, feat_dim: 128, nce_k: 16384, nce_t: 0.07, nce_mom: 0.5 }
    }
}

impl CrdConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("CRD", &[("ce_weight", self.ce_weight), ("feat_weight", self.feat_weight)])?;
        check::positive("CRD", &[("nce_t", self.nce_t)])?;
        if self.feat_dim == 0 || self.nce_k == 0 {
            return Err(KdError::InvalidConfig(format!("CRD: feat_dim ({}) and nce_k ({}) must be at least 1", self.feat_dim, self.nce_k)));
        }
        if !(0.0..1.0).contains(&self.nce_mom) {
            return Err(KdError::InvalidConfig(format!("CRD: nce_mom must be in [0, 1), got {}", self.nce_mom)));
        }
        Ok(())
    }
}

/// The contrast indices drawn for one batch (by [`Distiller::prepare_batch`]).
#[derive(Debug, Clone)]
struct Draws {
    indices: Vec<usize>,
    contrast: Tensor<1, burn::tensor::Int>,
}

/// CRD as a [`Distiller`]: its heads are the learnable parts ([`CrdHeads`]); the memory
/// ([`ContrastMemory`]) is its checkpointed state.
#[derive(Debug, Clone)]
pub struct Crd {
    config: CrdConfig,
    sampler: Option<NegativeSampler>,
    memory: Option<ContrastMemory>,
    draws: Option<Draws>,
    warned: bool,
}

impl Crd {
    /// A CRD distiller; the configuration is checked.
    pub fn new(config: CrdConfig) -> Result<Self> {
        config.validate()?;
        Ok(Crd { config, sampler: None, memory: None, draws: None, warned: false })
    }

    /// The configuration.
    pub fn config(&self) -> &CrdConfig {
        &self.config
    }

    /// The memory, once the first batch (or a checkpoint) created it.
    pub fn memory(&self) -> Option<&ContrastMemory> {
        self.memory.as_ref()
    }

    /// The contrast indices drawn for the current batch, `[B * (nce_k + 1)]`, each sample's
    /// positive (itself) first.
    pub fn draws(&self) -> Option<&Tensor<1, burn::tensor::Int>> {
        self.draws.as_ref().map(|d| &d.contrast)
    }

    /// Sets the sampler and the memory up for the training set `data`.
    fn ensure_state(&mut self, ctx: &StepContext, data: &dyn BatchSource, device: &Device) -> Result<()> {
        let n = data.len();
        if self.sampler.as_ref().is_none_or(|s| s.len() != n) {
            let labels: Vec<usize> = (0..n).map(|i| data.label(i)).collect();
            let sampler = NegativeSampler::new(&labels);
            let fewest = sampler.fewest_available();
            if fewest == 0 {
                return Err(KdError::InvalidConfig(format!(
                    "CRD needs samples of at least two classes to draw negatives from ({} has one class)",
                    data.name()
                )));
            }
            if self.config.nce_k > fewest && !self.warned {
                self.warned = true;
                eprintln!(
                    "warning: crd: nce_k is {} but a class of {} has only {fewest} negatives: they are drawn with replacement \
                     (as RepDistiller's sampler does); set nce_k to at most {fewest} for distinct negatives",
                    self.config.nce_k,
                    data.name()
                );
            }
            self.sampler = Some(sampler);
        }
        let memory = match self.memory.take() {
            Some(memory) if memory.len() != n || memory.dim() != self.config.feat_dim => {
                return Err(KdError::InvalidConfig(format!(
                    "CRD: the restored memory is {} x {}, but the training set has {n} samples and feat_dim is {}",
                    memory.len(),
                    memory.dim(),
                    self.config.feat_dim
                )));
            }
            Some(memory) => memory,
            None => ContrastMemory::init(n, self.config.feat_dim, ctx.seed)?,
        };
        let mut memory = memory;
        memory.to_device(device);
        self.memory = Some(memory);
        Ok(())
    }
}

impl Distiller<CrdHeads> for Crd {
    fn name(&self) -> &str {
        NAME
    }

    fn teacher_need(&self) -> TeacherNeed {
        // The embedding comes with a full teacher pass; a logits-only cache has none.
        TeacherNeed::LogitsAndFeatures
    }

    fn init_aux(&self, student: &ModelOutput, teacher: Option<&ModelOutput>, device: &Device) -> Result<CrdHeads> {
        let teacher = step_teacher(teacher)?;
        let s = student.embedding(NAME)?.dims()[1];
        let t = teacher.embedding(NAME)?.dims()[1];
        CrdHeads::new(s, t, self.config.feat_dim, device)
    }

    fn prepare_batch(&mut self, ctx: &StepContext, batch: Batch, data: &dyn BatchSource, device: &Device) -> Result<Batch> {
        self.ensure_state(ctx, data, device)?;
        let sampler = self.sampler.as_ref().ok_or_else(|| KdError::Missing { method: NAME.into(), what: "its sampler".into() })?;
        let contrast = sampler.draw_batch(&batch.indices, &batch.labels_host, &batch.views, self.config.nce_k, ctx.seed, ctx.epoch)?;
        self.draws = Some(Draws { indices: batch.indices.clone(), contrast: index_tensor(&contrast, device) });
        Ok(batch)
    }

    fn loss(&mut self, step: &Step<'_, CrdHeads>) -> Result<LossTerms> {
        let c = &self.config;
        let teacher = step.teacher(NAME, "embedding")?;
        let (s_emb, t_emb) = (step.student.embedding(NAME)?, teacher.embedding(NAME)?);
        let b = step.batch.len();
        let heads = step.aux;
        let (s_in, t_in) = (heads.embed_s.weight.dims()[0], heads.embed_t.weight.dims()[0]);
        if s_emb.dims() != [b, s_in] || t_emb.dims() != [b, t_in] {
            return Err(KdError::ShapeMismatch {
                what: "CRD embeddings (student, teacher) vs the batch and the heads' inputs".into(),
                expected: vec![b, s_in, b, t_in],
                actual: [s_emb.dims(), t_emb.dims()].concat(),
            });
        }
        let draws = self.draws.as_ref().filter(|d| d.indices == step.batch.indices).ok_or_else(|| KdError::Protocol {
            method: NAME.into(),
            reason: "no negatives were drawn for this batch (prepare_batch must run before the loss)".into(),
        })?;
        let memory = self.memory.as_mut().ok_or_else(|| KdError::Missing { method: NAME.into(), what: "its memory".into() })?;
        let f_s = heads.student(s_emb.clone());
        let t_emb = if s_emb.is_autodiff() { t_emb.clone().autodiff() } else { t_emb.clone() };
        let f_t = heads.teacher(t_emb);
        let (s_scores, t_scores) = memory.scores(f_s.clone(), f_t.clone(), &draws.contrast, c.nce_t)?;
        let n_data = memory.len();
        let z = match memory.z() {
            Some(z) => z,
            None => {
                let z = normalisation_from_scores(s_scores.clone(), t_scores.clone(), n_data);
                memory.set_z(z);
                z
            }
        };
        let contrast = crd_loss_from_scores(s_scores, t_scores, &CrdParams { z, temperature: c.nce_t, n_data });
        let ce = cross_entropy_mean(step.student.logits.clone(), step.batch.labels.clone());
        let width = c.feat_dim;
        Ok(LossTerms::new()
            .with("ce", ce.mul_scalar(c.ce_weight))
            .with("crd", contrast.mul_scalar(c.feat_weight))
            .keep("crd_f_s", f_s.reshape([b * width]))
            .keep("crd_f_t", f_t.reshape([b * width])))
    }

    fn after_step(&mut self, step: &StepDone<'_>) -> Result<()> {
        let (b, width) = (step.batch.len(), self.config.feat_dim);
        let f_s = step.kept(NAME, "crd_f_s")?.clone().reshape([b, width]);
        let f_t = step.kept(NAME, "crd_f_t")?.clone().reshape([b, width]);
        let memory = self.memory.as_mut().ok_or_else(|| KdError::Missing { method: NAME.into(), what: "its memory".into() })?;
        memory.update(&step.batch.indices, f_s, f_t, self.config.nce_mom)?;
        self.draws = None;
        Ok(())
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        self.memory.as_ref().map_or_else(|| Ok(Vec::new()), ContrastMemory::to_bytes)
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let memory = if bytes.is_empty() { None } else { Some(ContrastMemory::from_bytes(bytes)?) };
        if let Some(m) = &memory
            && m.dim() != self.config.feat_dim
        {
            return Err(KdError::InvalidConfig(format!(
                "CRD: the checkpoint's memory rows are {} wide but feat_dim is {}",
                m.dim(),
                self.config.feat_dim
            )));
        }
        self.memory = memory;
        self.draws = None;
        Ok(())
    }
}

fn step_teacher(teacher: Option<&ModelOutput>) -> Result<&ModelOutput> {
    kd_core::require_teacher(NAME, teacher, "embedding")
}

/// The method by name: its configuration over the defaults, and the distiller (the crate's
/// registry lists it).
pub fn prepare<S: Student>(user: Option<&Value>) -> Result<Prepared<S>> {
    let cfg: CrdConfig = method_config(NAME, CrdConfig::default(), user)?;
    Prepared::new(NAME, &cfg, Crd::new(cfg.clone())?)
}
