//! One stage of a teacher-assistant chain: KD from one (TAKD) or several (DGKD) frozen teachers.
//!
//! `L = (1 - lambda) * CE(z_s, y) + lambda * sum_{kept j} T^2 * KL(p(z_j; T) || p(z_s; T)) / r`
//!
//! This is the loss of the TAKD and DGKD code (docs/methods.md, "TAKD" and "DGKD"). Their
//! `nn.KLDivLoss()` uses PyTorch's `'mean'` reduction, the mean over every element of the
//! `[batch, classes]` matrix: `r = B * C`. That is the default here ([`KlReduction::Mean`]), so
//! that a stage takes the steps the reference takes at the same learning rate; the workspace's
//! convention elsewhere, `batchmean` (`r = B`, [`KlReduction::BatchMean`]), gives KD terms `C`
//! times larger. DGKD's stochastic variant drops some teacher terms in each mini-batch;
//! [`DropPolicy`] has the code's form (exactly `count` terms) and the paper's (Bernoulli).
//!
//! Design choice: the distiller holds its teachers ([`FrozenTeacher`]s) itself and asks the
//! training loop for no teacher ([`TeacherNeed::Nothing`]; pass [`kd_core::NoTeacher`] to
//! [`kd_core::Trainer::fit`]). The loop has a single teacher slot, and an ensemble teacher
//! would have to average the teachers' outputs, while DGKD needs one KL term per teacher and
//! chooses per batch which ones to skip (a dropped teacher is not even run).

use burn::tensor::{Int, Tensor};
use kd_core::loss::{check_logits, cross_entropy_mean, kd_kl_mean};
use kd_core::rng::KeyedRng;
use kd_core::{Classifier, Distiller, FrozenTeacher, KdError, LossTerms, Result, Step, Teacher, TeacherNeed};
use kd_models::AnyModel;
use serde::{Deserialize, Serialize};

/// How several KD terms are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KdReduce {
    /// Sum over the kept teachers (the DGKD code).
    #[default]
    Sum,
    /// Mean over the kept teachers (keeps the KD scale independent of the number of teachers).
    Mean,
}

/// How one KD term averages its `[batch, classes]` KL matrix (PyTorch's `reduction` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KlReduction {
    /// Mean over all `B * C` elements: PyTorch's `'mean'`, what the TAKD and DGKD code use.
    #[default]
    Mean,
    /// Sum over classes, mean over the batch: `'batchmean'`, the true KL and the convention of
    /// every other method of the workspace (`C` times [`KlReduction::Mean`]).
    #[serde(rename = "batchmean")]
    BatchMean,
}

/// The loss of a distillation stage. Defaults: the DGKD code's `T = 5`, `lambda = 1` (pure KD)
/// and `'mean'` reduction, used for TAKD stages too so that the two chains differ only in their
/// teachers (TAKD has no default `T` or `lambda`: its authors tuned `T` in {1, 2, 5, 10, 15, 20}
/// and `lambda` in {0.05, ..., 1}).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageLoss {
    /// Softmax temperature `T`.
    pub temperature: f64,
    /// Weight `lambda` of the KD terms; the cross-entropy gets `1 - lambda`.
    pub lambda: f64,
    /// How the KD terms of several teachers are combined.
    pub reduce: KdReduce,
    /// How each KD term is averaged over its batch and classes.
    pub kl_reduction: KlReduction,
}

impl Default for StageLoss {
    fn default() -> Self {
        StageLoss { temperature: 5.0, lambda: 1.0, reduce: KdReduce::Sum, kl_reduction: KlReduction::Mean }
    }
}

impl StageLoss {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(KdError::InvalidConfig(format!("stage temperature must be > 0, got {}", self.temperature)));
        }
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err(KdError::InvalidConfig(format!("stage lambda must be in [0, 1], got {}", self.lambda)));
        }
        Ok(())
    }
}

/// Which teacher terms a mini-batch skips (stochastic DGKD). At least one teacher is always
/// kept: with a single teacher nothing is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DropPolicy {
    /// Every teacher in every batch (deterministic DGKD; the DGKD code with `drop_num = 0`).
    #[default]
    KeepAll,
    /// Drop exactly `count` teachers per batch, uniformly without replacement (the DGKD code's
    /// `drop_num`, default 1); at most `n - 1` of `n`.
    Fixed {
        /// Teachers dropped per batch.
        count: usize,
    },
    /// Drop each teacher independently with probability `p` (the DGKD paper's description);
    /// when every teacher is drawn, one chosen uniformly is kept.
    Bernoulli {
        /// Drop probability.
        p: f64,
    },
}

impl DropPolicy {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if let DropPolicy::Bernoulli { p } = self
            && !(0.0..=1.0).contains(p)
        {
            return Err(KdError::InvalidConfig(format!("drop probability must be in [0, 1], got {p}")));
        }
        Ok(())
    }
}

/// The teachers (indices into `0..n`, ascending) a mini-batch keeps, drawn from a generator
/// keyed by `(seed, stream, step)`: the same step keeps the same teachers on every run and
/// after a resume, with no generator state to save.
pub fn kept_teachers(policy: &DropPolicy, n: usize, seed: u64, stream: u64, step: u64) -> Vec<usize> {
    let all: Vec<usize> = (0..n).collect();
    if n <= 1 {
        return all;
    }
    let mut rng = KeyedRng::new(&[seed, stream, step, 0xD6CD]);
    match *policy {
        DropPolicy::KeepAll => all,
        DropPolicy::Fixed { count } => {
            let drop = count.min(n - 1);
            // Partial Fisher-Yates: the first `drop` entries are a uniform sample without
            // replacement.
            let mut order = all;
            for i in 0..drop {
                let j = i + rng.below(n - i);
                order.swap(i, j);
            }
            let mut kept = order[drop..].to_vec();
            kept.sort_unstable();
            kept
        }
        DropPolicy::Bernoulli { p } => {
            let kept: Vec<usize> = all.into_iter().filter(|_| rng.unit() >= p).collect();
            if kept.is_empty() { vec![rng.below(n)] } else { kept }
        }
    }
}

/// KD from several frozen teachers: TAKD with one teacher, DGKD with all the previous models
/// of a chain.
#[derive(Debug, Clone)]
pub struct MultiTeacherKd<M: Classifier = AnyModel> {
    teachers: Vec<FrozenTeacher<M>>,
    loss: StageLoss,
    drop: DropPolicy,
    stream: u64,
    name: String,
    checked: bool,
}

impl<M: Classifier> MultiTeacherKd<M> {
    /// A distiller over `teachers` (at least one, all with the same number of classes). Named
    /// `takd` with one teacher, `dgkd` with more; no teacher is dropped until
    /// [`MultiTeacherKd::with_drop`].
    pub fn new(teachers: Vec<FrozenTeacher<M>>, loss: StageLoss) -> Result<Self> {
        loss.validate()?;
        let first = teachers.first().ok_or_else(|| KdError::InvalidConfig("a multi-teacher stage needs at least one teacher".into()))?;
        let classes = first.model().num_classes();
        if let Some(t) = teachers.iter().find(|t| t.model().num_classes() != classes) {
            return Err(KdError::InvalidConfig(format!(
                "teachers disagree on the number of classes: {} has {}, {} has {classes}",
                t.describe(),
                t.model().num_classes(),
                first.describe()
            )));
        }
        let name = if teachers.len() == 1 { "takd" } else { "dgkd" }.to_string();
        Ok(MultiTeacherKd { teachers, loss, drop: DropPolicy::KeepAll, stream: 0, name, checked: false })
    }

    /// Sets the stochastic dropping of teacher terms.
    pub fn with_drop(mut self, drop: DropPolicy) -> Result<Self> {
        drop.validate()?;
        self.drop = drop;
        Ok(self)
    }

    /// Sets the stream of the drop generator (a chain passes the stage index, so that stages
    /// do not drop in lockstep).
    pub fn with_stream(mut self, stream: u64) -> Self {
        self.stream = stream;
        self
    }

    /// Renames the method (the name is checked when a run resumes).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The teachers.
    pub fn teachers(&self) -> &[FrozenTeacher<M>] {
        &self.teachers
    }

    /// The loss configuration.
    pub fn loss_config(&self) -> &StageLoss {
        &self.loss
    }
}

/// The KD part of a multi-teacher loss, `[1]`: the sum (or mean, `loss.reduce`) over
/// `teacher_logits` of `T^2 * KL(p(z_j; T) || p(z_s; T))`, each averaged as `loss.kl_reduction`
/// says. `loss.lambda` is not applied.
pub fn multi_teacher_kd(student_logits: Tensor<2>, teacher_logits: &[Tensor<2>], loss: &StageLoss) -> Result<Tensor<1>> {
    let classes = student_logits.dims()[1] as f64;
    let mut terms = teacher_logits.iter().map(|t| kd_kl_mean(student_logits.clone(), t.clone(), loss.temperature));
    let first = terms.next().ok_or_else(|| KdError::InvalidConfig("no teacher logits to distil from".into()))?;
    let sum = terms.fold(first, |acc, t| acc + t);
    let per_teacher = match loss.reduce {
        KdReduce::Sum => sum,
        KdReduce::Mean => sum.div_scalar(teacher_logits.len() as f64),
    };
    Ok(match loss.kl_reduction {
        KlReduction::BatchMean => per_teacher,
        KlReduction::Mean => per_teacher.div_scalar(classes),
    })
}

/// The loss of one stage on given logits, as its two weighted terms `[1]`:
/// `((1 - lambda) * CE(z_s, y), lambda * multi_teacher_kd(z_s, teacher_logits))`, their sum the
/// stage loss. `teacher_logits` are the kept teachers' (the DGKD code's terms after its drops).
pub fn stage_loss_terms(
    student_logits: Tensor<2>,
    labels: Tensor<1, Int>,
    teacher_logits: &[Tensor<2>],
    loss: &StageLoss,
) -> Result<(Tensor<1>, Tensor<1>)> {
    let ce = cross_entropy_mean(student_logits.clone(), labels).mul_scalar(1.0 - loss.lambda);
    let kd = multi_teacher_kd(student_logits, teacher_logits, loss)?.mul_scalar(loss.lambda);
    Ok((ce, kd))
}

impl<M: Classifier> Distiller for MultiTeacherKd<M> {
    fn name(&self) -> &str {
        &self.name
    }

    fn teacher_need(&self) -> TeacherNeed {
        // It holds its teachers; the training loop's teacher slot stays empty.
        TeacherNeed::Nothing
    }

    fn loss(&mut self, step: &Step) -> Result<LossTerms> {
        let (ctx, batch, student) = (&step.ctx, step.batch, step.student);
        let kept = kept_teachers(&self.drop, self.teachers.len(), ctx.seed, self.stream, ctx.global_step as u64);
        let mut logits = Vec::with_capacity(kept.len());
        for &j in &kept {
            let out = self.teachers[j].outputs(batch, TeacherNeed::Logits)?.ok_or_else(|| KdError::Missing {
                method: self.name.clone(),
                what: format!("outputs of teacher {}", self.teachers[j].describe()),
            })?;
            if !self.checked {
                // Once per run: the training loop checks only its own teacher slot.
                check_logits(&self.name, &student.logits, &out.logits, &batch.labels)?;
                let nan = out.logits.clone().is_nan().any().into_scalar::<bool>();
                if nan || out.logits.clone().abs().max().into_scalar::<f64>().is_infinite() {
                    return Err(KdError::NonFinite { what: format!("logits of teacher {}", self.teachers[j].describe()) });
                }
            }
            logits.push(out.logits);
        }
        self.checked = true;
        let (ce, kd) = stage_loss_terms(student.logits.clone(), batch.labels.clone(), &logits, &self.loss)?;
        Ok(LossTerms::new().with("ce", ce).with("kd", kd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use burn::tensor::TensorData;
    use kd_core::distiller::step_without_update;
    use kd_core::{Batch, StepContext};
    use kd_models::ModelSpec;

    #[test]
    fn fixed_drops_exactly_count_and_never_all() {
        let policy = DropPolicy::Fixed { count: 1 };
        let mut seen = [0usize; 4];
        for step in 0..400 {
            let kept = kept_teachers(&policy, 4, 7, 0, step);
            assert_eq!(kept.len(), 3);
            assert!(kept.windows(2).all(|w| w[0] < w[1]));
            for k in kept {
                seen[k] += 1;
            }
            // Deterministic in the key.
            assert_eq!(kept_teachers(&policy, 4, 7, 0, step), kept_teachers(&policy, 4, 7, 0, step));
        }
        // Each teacher is dropped about a quarter of the time.
        assert!(seen.iter().all(|&s| (260..=340).contains(&s)), "{seen:?}");
        assert_eq!(kept_teachers(&DropPolicy::Fixed { count: 5 }, 3, 1, 0, 0).len(), 1);
        assert_eq!(kept_teachers(&policy, 1, 1, 0, 0), vec![0]);
        assert_eq!(kept_teachers(&DropPolicy::KeepAll, 3, 1, 0, 0), vec![0, 1, 2]);
        assert_ne!(
            (0..20).map(|s| kept_teachers(&policy, 4, 7, 0, s)).collect::<Vec<_>>(),
            (0..20).map(|s| kept_teachers(&policy, 4, 7, 1, s)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn bernoulli_keeps_at_least_one() {
        let always = DropPolicy::Bernoulli { p: 1.0 };
        assert!((0..50).all(|s| kept_teachers(&always, 3, 0, 0, s).len() == 1));
        let never = DropPolicy::Bernoulli { p: 0.0 };
        assert!((0..50).all(|s| kept_teachers(&never, 3, 0, 0, s).len() == 3));
        let half = DropPolicy::Bernoulli { p: 0.5 };
        let total: usize = (0..1000).map(|s| kept_teachers(&half, 4, 0, 0, s).len()).sum();
        assert!((1900..2300).contains(&total), "{total}");
        assert!(DropPolicy::Bernoulli { p: 1.5 }.validate().is_err());
    }

    /// The stage loss of the TAKD code (`train.py`: `nn.KLDivLoss()` on `log_softmax(z_s / T)`
    /// and `softmax(z_t / T)`, times `T * T`), computed by PyTorch 2.9.0 on these logits:
    /// `T^2 * KL_mean = 0.3973076045513153`, and with `lambda = 0.7` and the labels [0, 2]
    /// `(1 - lambda) * CE + lambda * T^2 * KL_mean = 0.833967387676239`.
    #[test]
    fn the_default_reduction_is_the_reference_codes() {
        let device = Device::flex();
        let logits = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [2, 3]), &device);
        let student = logits(vec![0.5, -1.0, 2.0, 0.0, 1.0, -0.5]);
        let teacher = logits(vec![1.0, 0.0, -1.0, 0.2, 0.3, 2.0]);
        let reference = StageLoss { temperature: 2.0, lambda: 0.7, ..StageLoss::default() };
        assert_eq!(reference.kl_reduction, KlReduction::Mean);
        let kd = multi_teacher_kd(student.clone(), std::slice::from_ref(&teacher), &reference).unwrap().into_scalar::<f32>();
        assert!((kd - 0.397_307_6).abs() < 1e-6, "{kd}");
        let labels = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device);
        let total = cross_entropy_mean(student.clone(), labels).into_scalar::<f32>() * 0.3 + kd * 0.7;
        assert!((total - 0.833_967_4).abs() < 1e-6, "{total}");
        // `batchmean` is the same term times the number of classes.
        let batchmean = StageLoss { kl_reduction: KlReduction::BatchMean, ..reference };
        let kd_bm = multi_teacher_kd(student, &[teacher], &batchmean).unwrap().into_scalar::<f32>();
        assert!((kd_bm - 3.0 * 0.397_307_6).abs() < 3e-6, "{kd_bm}");
        let parsed: StageLoss = serde_json::from_str(r#"{"kl_reduction": "batchmean"}"#).unwrap();
        assert_eq!(parsed.kl_reduction, KlReduction::BatchMean);
    }

    #[test]
    fn loss_is_ce_plus_summed_kd_of_the_kept_teachers() {
        let device = Device::flex();
        let build = |seed: u64| crate::family::build_seeded(&ModelSpec::Mlp(vec![5]), [1, 2, 2], 3, &device, seed).unwrap();
        let teachers: Vec<FrozenTeacher<AnyModel>> = (0..3).map(|i| FrozenTeacher::new(build(i + 10), format!("t{i}"))).collect();
        let batch =
            Batch::from_host((0..8).map(|v| v as f32 * 0.3 - 1.0).collect(), [2, 1, 2, 2], vec![0, 2], vec![0, 1], vec![0, 0], &device)
                .unwrap();
        let student = kd_testkit::logits(vec![0.5, -1.0, 2.0, 0.0, 1.0, -0.5], 3, &device);
        let ctx = StepContext { epoch: 1, total_epochs: 1, step_in_epoch: 0, global_step: 3, seed: 5 };
        let loss = StageLoss { temperature: 2.0, lambda: 0.7, reduce: KdReduce::Sum, kl_reduction: KlReduction::BatchMean };
        let mut d = MultiTeacherKd::new(teachers.clone(), loss).unwrap().with_drop(DropPolicy::Fixed { count: 1 }).unwrap();
        assert_eq!(d.name(), "dgkd");
        let terms = step_without_update(&mut d, &Step::new(ctx, &batch, &student, None)).unwrap();
        let kept = kept_teachers(&DropPolicy::Fixed { count: 1 }, 3, 5, 0, 3);
        let want_kd: f32 = kept
            .iter()
            .map(|&j| {
                let t = teachers[j].outputs(&batch, TeacherNeed::Logits).unwrap().unwrap().logits;
                kd_kl_mean(student.logits.clone(), t, 2.0).into_scalar::<f32>()
            })
            .sum::<f32>()
            * 0.7;
        let want_ce = cross_entropy_mean(student.logits.clone(), batch.labels.clone()).into_scalar::<f32>() * 0.3;
        let got: Vec<f32> = terms.terms().iter().map(|(_, t)| t.clone().into_scalar::<f32>()).collect();
        assert!((got[0] - want_ce).abs() < 1e-6 && (got[1] - want_kd).abs() < 1e-5, "{got:?} vs {want_ce} {want_kd}");

        // One teacher: TAKD, never dropped.
        let mut takd = MultiTeacherKd::new(vec![teachers[0].clone()], loss).unwrap().with_drop(DropPolicy::Fixed { count: 1 }).unwrap();
        assert_eq!(takd.name(), "takd");
        let terms = step_without_update(&mut takd, &Step::new(ctx, &batch, &student, None)).unwrap();
        let t0 = teachers[0].outputs(&batch, TeacherNeed::Logits).unwrap().unwrap().logits;
        let want = kd_kl_mean(student.logits.clone(), t0, 2.0).into_scalar::<f32>() * 0.7;
        assert!((terms.terms()[1].1.clone().into_scalar::<f32>() - want).abs() < 1e-6);

        // Bad inputs are errors.
        assert!(MultiTeacherKd::<AnyModel>::new(Vec::new(), loss).is_err());
        assert!(MultiTeacherKd::new(vec![teachers[0].clone()], StageLoss { lambda: 1.5, ..loss }).is_err());
        // Seeded like every model of this crate's tests: an unseeded draw from another thread
        // would shift the global generator under a test that checks exact reproducibility.
        let other = FrozenTeacher::new(crate::family::build_seeded(&ModelSpec::Mlp(vec![5]), [1, 2, 2], 4, &device, 0).unwrap(), "t4");
        assert!(MultiTeacherKd::new(vec![teachers[0].clone(), other], loss).is_err());
    }
}
