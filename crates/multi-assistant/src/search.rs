//! The dynamic assistant setting (docs/methods.md, "Multi-assistant KD"): how many assistants, and of what scale.
//!
//! The abstract: the framework works "by dynamically adjusting the number and scale of
//! assistant models", since "the unreasonable choice of the scale and number of assistant models
//! can have a negative impact on the student". Our reading, a greedy search on short probe runs:
//!
//! 1. Start from the chain teacher > student and probe-train it (a short budget).
//! 2. Take the adjacent pair of the chain with the largest accuracy gap (among the pairs with a
//!    family member between them).
//! 3. Among the scales between them, pick the one whose probe accuracy is nearest the mean of
//!    the pair's accuracies (TAKD's finding: the best assistant is not the middle size but the
//!    one whose accuracy is about the mean of the teacher's and the student's).
//! 4. Insert it and probe the new chain; keep it only if the student's probe accuracy improves
//!    by at least `delta`. Stop when it does not, or at `k_max` assistants.
//!
//! The chain found is then trained fully ([`run_dynamic`]). Training is behind the
//! [`ProbeTrainer`] trait, so the search itself is testable without training.

use std::collections::HashMap;
use std::time::Instant;

use burn::tensor::Device;
use kd_core::checkpoint::write_atomic;
use kd_core::rng::hash_key;
use kd_core::{BatchSource, KdError, Result, RunOptions};
use kd_data::DatasetSplits;
use serde::{Deserialize, Serialize};

use crate::chain::{ChainPlan, ChainReport, ChainRunner, KnownStage};
use crate::family::ModelFamily;

/// Trains a chain briefly and reports the accuracy of each of its models.
pub trait ProbeTrainer {
    /// Probe-trains the chain `scales` (teacher first; one scale alone: that model trained
    /// with cross-entropy) and returns one accuracy (percent) per model, in the same order.
    fn probe(&mut self, scales: &[usize]) -> Result<Vec<f64>>;
}

impl<F: FnMut(&[usize]) -> Result<Vec<f64>>> ProbeTrainer for F {
    fn probe(&mut self, scales: &[usize]) -> Result<Vec<f64>> {
        self(scales)
    }
}

/// How a candidate assistant's accuracy is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CandidateProbe {
    /// Trained alone with cross-entropy (TAKD's criterion; one probe per scale for the whole
    /// search).
    #[default]
    Standalone,
    /// Distilled through the chain down to the pair's upper model (like the pair's own
    /// accuracies; one probe per candidate and chain).
    Distilled,
}

/// What the search does when the inserted assistant does not help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnReject {
    /// Stop the search (the procedure as written).
    #[default]
    Stop,
    /// Try the pair with the next largest gap, and stop only when no pair helps.
    TryNextPair,
}

/// Configuration of the search. The defaults are our choice (the abstract gives no numbers).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// At most this many assistants (3: TAKD's longest path plane10 > 8 > 6 > 4 > 2).
    pub k_max: usize,
    /// An assistant is kept only if the student's probe accuracy gains at least this many
    /// percentage points (0.5: short probes are noisy).
    pub delta: f64,
    /// How candidates are measured.
    pub candidate_probe: CandidateProbe,
    /// What a rejected assistant does to the search.
    pub on_reject: OnReject,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { k_max: 3, delta: 0.5, candidate_probe: CandidateProbe::Standalone, on_reject: OnReject::Stop }
    }
}

impl SearchConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !self.delta.is_finite() {
            return Err(KdError::InvalidConfig(format!("search delta must be finite, got {}", self.delta)));
        }
        Ok(())
    }
}

/// Why the search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `k_max` assistants reached.
    KMax,
    /// The inserted assistant did not improve the student by `delta`.
    NoImprovement,
    /// No pair of the chain has a family member between its models.
    NoCandidates,
}

/// One insertion tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchStep {
    /// The chain before the step.
    pub chain: Vec<usize>,
    /// Its probe accuracies.
    pub accuracies: Vec<f64>,
    /// The scales of the pair the assistant goes between.
    pub pair: (usize, usize),
    /// The pair's accuracy gap.
    pub gap: f64,
    /// The mean of the pair's accuracies.
    pub target: f64,
    /// Each candidate scale and its probe accuracy.
    pub candidates: Vec<(usize, f64)>,
    /// The candidate nearest the target.
    pub chosen: usize,
    /// The student's probe accuracy before the insertion.
    pub student_before: f64,
    /// ... and after.
    pub student_after: f64,
    /// Whether the assistant was kept.
    pub accepted: bool,
}

/// The outcome of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    /// The chain chosen, teacher first.
    pub chain: Vec<usize>,
    /// Its probe accuracies.
    pub accuracies: Vec<f64>,
    /// Every insertion tried, in order.
    pub steps: Vec<SearchStep>,
    /// Why it ended.
    pub stop: StopReason,
    /// Number of distinct chains probed.
    pub probes: usize,
}

impl SearchReport {
    /// The assistants chosen, largest first.
    pub fn assistants(&self) -> Vec<usize> {
        self.chain.get(1..self.chain.len().saturating_sub(1)).unwrap_or_default().to_vec()
    }
}

/// Memoises probes: a chain is probed once per search.
struct Memo<'p> {
    trainer: &'p mut dyn ProbeTrainer,
    seen: HashMap<Vec<usize>, Vec<f64>>,
}

impl Memo<'_> {
    fn probe(&mut self, scales: &[usize]) -> Result<Vec<f64>> {
        if let Some(accs) = self.seen.get(scales) {
            return Ok(accs.clone());
        }
        let accs = self.trainer.probe(scales)?;
        if accs.len() != scales.len() || accs.iter().any(|a| !a.is_finite()) {
            return Err(KdError::InvalidConfig(format!(
                "a probe of {scales:?} returned {accs:?}: one finite accuracy per model is needed"
            )));
        }
        self.seen.insert(scales.to_vec(), accs.clone());
        Ok(accs)
    }
}

/// Searches the assistants between `teacher` and `student` (scales of `family`).
pub fn search_assistants(
    family: &ModelFamily,
    teacher: usize,
    student: usize,
    config: &SearchConfig,
    trainer: &mut dyn ProbeTrainer,
) -> Result<SearchReport> {
    config.validate()?;
    family.between(teacher, student)?;
    if teacher <= student {
        return Err(KdError::InvalidConfig(format!("the teacher's scale ({teacher}) must be larger than the student's ({student})")));
    }
    let mut memo = Memo { trainer, seen: HashMap::new() };
    let mut chain = vec![teacher, student];
    let mut accs = memo.probe(&chain)?;
    let mut steps = Vec::new();
    let stop = loop {
        if chain.len() - 2 >= config.k_max {
            break StopReason::KMax;
        }
        let mut pairs = Vec::new();
        for i in 0..chain.len() - 1 {
            let candidates = family.between(chain[i], chain[i + 1])?;
            if !candidates.is_empty() {
                pairs.push((i, accs[i] - accs[i + 1], candidates));
            }
        }
        if pairs.is_empty() {
            break StopReason::NoCandidates;
        }
        // Largest gap first; on equal gaps the pair nearer the teacher (stable sort).
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
        if config.on_reject == OnReject::Stop {
            pairs.truncate(1);
        }
        let mut accepted = false;
        for (i, gap, candidates) in pairs {
            let target = (accs[i] + accs[i + 1]) / 2.0;
            let mut measured = Vec::with_capacity(candidates.len());
            for &c in &candidates {
                let acc = match config.candidate_probe {
                    CandidateProbe::Standalone => memo.probe(&[c])?[0],
                    CandidateProbe::Distilled => {
                        let mut prefix = chain[..=i].to_vec();
                        prefix.push(c);
                        *memo.probe(&prefix)?.last().unwrap_or(&f64::NAN)
                    }
                };
                measured.push((c, acc));
            }
            // Nearest the target; on ties the larger scale (more capacity to pass on).
            let chosen = measured
                .iter()
                .rev()
                .fold(None::<(usize, f64)>, |best, &(c, a)| match best {
                    Some((_, d)) if (a - target).abs() >= d => best,
                    _ => Some((c, (a - target).abs())),
                })
                .map(|(c, _)| c)
                .ok_or_else(|| KdError::InvalidConfig("no candidate to insert".into()))?;
            let mut next = chain.clone();
            next.insert(i + 1, chosen);
            let next_accs = memo.probe(&next)?;
            let before = *accs.last().unwrap_or(&f64::NAN);
            let after = *next_accs.last().unwrap_or(&f64::NAN);
            let keep = after - before >= config.delta;
            steps.push(SearchStep {
                chain: chain.clone(),
                accuracies: accs.clone(),
                pair: (chain[i], chain[i + 1]),
                gap,
                target,
                candidates: measured,
                chosen,
                student_before: before,
                student_after: after,
                accepted: keep,
            });
            if keep {
                chain = next;
                accs = next_accs;
                accepted = true;
                break;
            }
        }
        if !accepted {
            break StopReason::NoImprovement;
        }
    };
    Ok(SearchReport { chain, accuracies: accs, steps, stop, probes: memo.seen.len() })
}

/// A [`ProbeTrainer`] that really trains: each probe is a chain run of `probe_epochs` per
/// model, without checkpoints, and its accuracies are [`crate::StageReport::decision_acc`]
/// (validation accuracy when there is a validation split). Trained models are kept per chain
/// prefix, so a prefix is trained once for the whole search (in memory: every model probed
/// stays until the probe trainer is dropped).
pub struct TrainingProbe<'a> {
    plan: ChainPlan,
    data: &'a DatasetSplits,
    device: Device,
    options: RunOptions,
    cache: HashMap<Vec<usize>, KnownStage>,
    epochs: usize,
}

impl<'a> TrainingProbe<'a> {
    /// Probes with the recipes and losses of `plan`, cut to `probe_epochs` per model, with no
    /// dynamic stopping; `options` gives the progress bar and label (no checkpoints).
    pub fn new(plan: &ChainPlan, probe_epochs: usize, data: &'a DatasetSplits, device: &Device, options: &RunOptions) -> Result<Self> {
        if probe_epochs == 0 {
            return Err(KdError::InvalidConfig("probe_epochs must be at least 1".into()));
        }
        let mut plan = plan.clone();
        plan.teacher_train.epochs = probe_epochs;
        plan.stage_train.epochs = probe_epochs;
        plan.stopping = None;
        plan.teacher_checkpoint = None;
        plan.assistants.clear();
        plan.validate()?;
        let label = if options.label.is_empty() { "probe".to_string() } else { format!("{} probe", options.label) };
        let options = RunOptions { progress: options.progress, label, select_by: options.select_by, ..Default::default() };
        Ok(TrainingProbe { plan, data, device: device.clone(), options, cache: HashMap::new(), epochs: 0 })
    }

    /// Uses an already trained teacher (at the plan's teacher scale) in every probe instead of
    /// probe-training one.
    pub fn with_teacher(mut self, teacher: KnownStage) -> Self {
        self.cache.insert(vec![self.plan.teacher], teacher);
        self
    }

    /// Epochs trained by the probes so far.
    pub fn epochs_trained(&self) -> usize {
        self.epochs
    }
}

impl ProbeTrainer for TrainingProbe<'_> {
    fn probe(&mut self, scales: &[usize]) -> Result<Vec<f64>> {
        let mut known = Vec::new();
        for k in 0..scales.len() {
            match self.cache.get(&scales[..=k]) {
                Some(stage) => known.push(stage.clone()),
                None => break,
            }
        }
        if known.len() < scales.len() {
            let from = known.len();
            let runner = ChainRunner::with_scales(&self.plan, scales.to_vec(), self.data, &self.device, &self.options)?;
            let run = runner.run(known)?;
            // Only the stages trained now: a cached teacher's report counts its own epochs.
            self.epochs += run.report.stages.iter().skip(from).map(|s| s.epochs_this_run).sum::<usize>();
            if !run.report.finished {
                return Err(KdError::InvalidConfig(format!("the probe of {scales:?} did not finish")));
            }
            known = run.models.into_iter().zip(run.report.stages).collect();
            for (k, stage) in known.iter().enumerate().skip(from) {
                self.cache.insert(scales[..=k].to_vec(), stage.clone());
            }
        }
        Ok(known.iter().map(|(_, r)| r.decision_acc()).collect())
    }
}

/// A chain whose assistants are chosen by the search, then trained fully.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicPlan {
    /// The chain: family, teacher, student, mode, losses, recipes, stopping. Its assistants
    /// are ignored (the search chooses them).
    pub chain: ChainPlan,
    /// The search.
    #[serde(default)]
    pub search: SearchConfig,
    /// Epochs of each probe-trained model.
    pub probe_epochs: usize,
    /// Probes use the fully trained teacher (trained first, and reused by the final chain);
    /// otherwise the teacher is probe-trained too.
    #[serde(default = "yes")]
    pub probe_with_trained_teacher: bool,
}

fn yes() -> bool {
    true
}

impl DynamicPlan {
    /// A search over `chain` with the default search, probes of a tenth of the stage epochs
    /// (at least 1), and the trained teacher in the probes.
    pub fn new(chain: ChainPlan) -> Self {
        let probe_epochs = (chain.stage_train.epochs / 10).max(1);
        DynamicPlan { chain, search: SearchConfig::default(), probe_epochs, probe_with_trained_teacher: true }
    }
}

/// What [`run_dynamic`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicReport {
    /// The search (none when the run stopped before it, for want of epochs).
    pub search: Option<SearchReport>,
    /// Whether the search was read back from an earlier run's `search.json`.
    pub search_resumed: bool,
    /// Epochs spent on probes by this call.
    pub probe_epochs: usize,
    /// Wall time of the search, seconds.
    pub search_seconds: f64,
    /// The full training of the chain chosen (with the teacher stage).
    pub chain: ChainReport,
}

/// Searches the assistants, then trains the chosen chain fully.
///
/// The teacher is trained first (stage 0 of the chain, with its checkpoints), used by the
/// probes, and reused by the final chain. With a checkpoint folder the search result is saved
/// as `search.json` and, with `resume`, read back instead of searching again. The epoch budget
/// of `options.stop_after_epochs` covers the teacher and the final chain, not the probes.
pub fn run_dynamic(plan: &DynamicPlan, data: &DatasetSplits, device: &Device, options: &RunOptions) -> Result<DynamicReport> {
    plan.search.validate()?;
    let mut base = plan.chain.clone();
    base.assistants.clear();
    base.validate()?;

    // Stage 0 alone: the same stage folder as the final chain's teacher.
    let teacher_runner = ChainRunner::with_scales(&base, vec![base.teacher], data, device, options)?;
    let teacher_run = teacher_runner.run(Vec::new())?;
    let teacher: Option<KnownStage> = teacher_run.models.first().cloned().zip(teacher_run.report.stages.first().cloned());
    let used = teacher_run.report.epochs_this_run;
    let rest = RunOptions { stop_after_epochs: options.stop_after_epochs.map(|b| b.saturating_sub(used)), ..options.clone() };
    let Some(teacher) = teacher.filter(|_| teacher_run.report.finished) else {
        // Out of epochs before the teacher finished: report the partial teacher stage.
        return Ok(DynamicReport { search: None, search_resumed: false, probe_epochs: 0, search_seconds: 0.0, chain: teacher_run.report });
    };

    let started = Instant::now();
    let key = search_key(plan, data)?;
    let saved = options.checkpoint_dir.as_ref().map(|d| d.join("search.json"));
    let resumed = match (&saved, options.resume) {
        (Some(path), true) if path.exists() => read_search(path, key)?,
        _ => None,
    };
    let search_resumed = resumed.is_some();
    let mut probe_epochs = 0;
    let search = match resumed {
        Some(report) => report,
        None => {
            let mut probe = TrainingProbe::new(&base, plan.probe_epochs, data, device, options)?;
            if plan.probe_with_trained_teacher {
                probe = probe.with_teacher(teacher.clone());
            }
            let report = search_assistants(&base.family, base.teacher, base.student, &plan.search, &mut probe)?;
            probe_epochs = probe.epochs_trained();
            if let Some(path) = &saved {
                let json = serde_json::json!({ "key": format!("{key:016x}"), "report": report });
                write_atomic(path, &serde_json::to_vec_pretty(&json).map_err(|e| KdError::Record(e.to_string()))?)?;
            }
            report
        }
    };
    let search_seconds = started.elapsed().as_secs_f64();

    let chosen = base.clone().with_assistants(search.assistants());
    // The teacher's report (and its epochs of this call) comes with it.
    let chain = ChainRunner::new(&chosen, data, device, &rest)?.run(vec![teacher])?.report;
    Ok(DynamicReport { search: Some(search), search_resumed, probe_epochs, search_seconds, chain })
}

/// A key of what the search depends on: the plan and the data.
fn search_key(plan: &DynamicPlan, data: &DatasetSplits) -> Result<u64> {
    let text = serde_json::to_string(plan).map_err(|e| KdError::Record(e.to_string()))?;
    let mut words: Vec<u64> = text.as_bytes().chunks(8).map(|c| c.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64)).collect();
    words.push(data.train.fingerprint());
    if let Some(v) = &data.valid {
        words.push(v.fingerprint());
    }
    Ok(hash_key(&words))
}

/// The saved search, when it was made for the same plan and data.
fn read_search(path: &std::path::Path, key: u64) -> Result<Option<SearchReport>> {
    let bytes = kd_core::files::read_regular(path)?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| KdError::Malformed { path: path.to_path_buf(), reason: e.to_string() })?;
    if json["key"].as_str() != Some(format!("{key:016x}").as_str()) {
        return Ok(None);
    }
    serde_json::from_value(json["report"].clone())
        .map(Some)
        .map_err(|e| KdError::Malformed { path: path.to_path_buf(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::FamilyMember;

    fn family(scales: &[usize]) -> ModelFamily {
        ModelFamily::Custom { members: scales.iter().map(|&s| FamilyMember { scale: s, model: format!("mlp-{s}") }).collect() }
    }

    /// A model's accuracy alone: `q(s) = s^2` (scale 10: 100, scale 1: 1).
    fn q(s: usize) -> f64 {
        (s * s) as f64
    }

    /// A synthetic world with known outcomes: distilled from a model of accuracy `a`, a model
    /// of scale `s` reaches `q(s) + max(0, 10 - (a - q(s)) / 5)`: knowledge passes across small
    /// gaps only.
    fn world(chain: &[usize]) -> Result<Vec<f64>> {
        let mut accs: Vec<f64> = vec![q(chain[0])];
        for &s in &chain[1..] {
            let prev = *accs.last().unwrap();
            accs.push(q(s) + (10.0 - (prev - q(s)) / 5.0).max(0.0));
        }
        Ok(accs)
    }

    /// Checks every step against the rule: the widest pair (among those with candidates), the
    /// candidate nearest the pair's mean, kept iff the student gains `delta`.
    fn check_rule(fam: &ModelFamily, report: &SearchReport, delta: f64, first_pair_only: bool) {
        for step in &report.steps {
            let gaps: Vec<f64> = (0..step.chain.len() - 1)
                .filter(|&i| !fam.between(step.chain[i], step.chain[i + 1]).unwrap().is_empty())
                .map(|i| step.accuracies[i] - step.accuracies[i + 1])
                .collect();
            let widest = gaps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if first_pair_only {
                assert_eq!(step.gap, widest, "{step:?}");
            }
            let i = step.chain.iter().position(|&s| s == step.pair.0).unwrap();
            assert_eq!(step.target, (step.accuracies[i] + step.accuracies[i + 1]) / 2.0);
            let dist = |a: f64| (a - step.target).abs();
            let chosen = step.candidates.iter().find(|c| c.0 == step.chosen).unwrap().1;
            assert!(step.candidates.iter().all(|c| dist(c.1) >= dist(chosen)), "{step:?}");
            assert_eq!(step.accepted, step.student_after - step.student_before >= delta);
        }
    }

    #[test]
    fn inserts_nearest_the_mean_of_the_widest_pair() {
        let fam = family(&(1..=10).collect::<Vec<_>>());
        let mut calls: Vec<Vec<usize>> = Vec::new();
        let mut probe = |c: &[usize]| {
            calls.push(c.to_vec());
            world(c)
        };
        let config = SearchConfig { k_max: 1, delta: 0.0, ..Default::default() };
        let report = search_assistants(&fam, 10, 1, &config, &mut probe).unwrap();
        // Teacher 100, student 1 (the gap is too wide to gain): target 50.5, and scale 7
        // (alone: 49) is the nearest candidate. The student gains 10 - 48/5 = 0.4.
        let step = &report.steps[0];
        assert_eq!((step.pair, step.gap, step.target, step.chosen), ((10, 1), 99.0, 50.5, 7));
        assert_eq!(step.candidates.iter().map(|c| c.0).collect::<Vec<_>>(), (2..=9).collect::<Vec<_>>());
        assert_eq!(report.chain, vec![10, 7, 1]);
        assert!((report.accuracies[2] - 1.4).abs() < 1e-12);
        assert_eq!(report.stop, StopReason::KMax);
        check_rule(&fam, &report, 0.0, true);
        // Every candidate was probed alone, once: 1 chain + 8 candidates + 1 new chain.
        assert_eq!(calls.len(), 10);
        assert_eq!(report.probes, 10);

        // With room for more: the next widest pair is 10 > 7 (gap 51 against 47.6); its mean
        // 74.5 is nearest scale 9 (81), which costs the student its gain: rejected, stop.
        let report = search_assistants(&fam, 10, 1, &SearchConfig { k_max: 3, ..config }, &mut world).unwrap();
        assert_eq!(report.steps.len(), 2);
        assert_eq!((report.steps[1].pair, report.steps[1].chosen, report.steps[1].accepted), ((10, 7), 9, false));
        assert_eq!(report.chain, vec![10, 7, 1]);
        assert_eq!(report.stop, StopReason::NoImprovement);
        check_rule(&fam, &report, 0.0, true);
    }

    #[test]
    fn the_widest_pair_can_be_below_an_assistant() {
        let fam = family(&[1, 2, 3, 8, 9, 10]);
        let config = SearchConfig { k_max: 2, delta: 0.0, ..Default::default() };
        let report = search_assistants(&fam, 10, 1, &config, &mut world).unwrap();
        // Round 1: scale 8 (64) is nearest 50.5; chain 10 > 8 > 1 with accuracies 100, 66.8, 1.
        assert_eq!(report.steps[0].chosen, 8);
        assert_eq!(report.steps[1].accuracies, vec![100.0, 66.8, 1.0]);
        // Round 2: the gap 8 > 1 (65.8) is wider than 10 > 8 (33.2): scale 3 goes below 8.
        assert_eq!(report.steps[1].pair, (8, 1));
        assert_eq!(report.chain, vec![10, 8, 3, 1]);
        assert_eq!(report.stop, StopReason::KMax);
        check_rule(&fam, &report, 0.0, true);

        // A pair without a family member between its models is skipped: from 9, the only
        // insertion left is between 5 and 2, and then nothing is.
        let fam = family(&[2, 3, 5, 9, 10]);
        let report = search_assistants(&fam, 9, 2, &SearchConfig { k_max: 3, ..config }, &mut world).unwrap();
        assert_eq!(report.chain, vec![9, 5, 3, 2]);
        assert_eq!(report.steps[1].pair, (5, 2));
        assert_eq!(report.stop, StopReason::NoCandidates);
        check_rule(&fam, &report, 0.0, true);
    }

    #[test]
    fn stops_when_nothing_helps() {
        let fam = family(&(1..=10).collect::<Vec<_>>());
        // The student's accuracy does not depend on the chain: the first assistant is rejected.
        let mut flat = |chain: &[usize]| -> Result<Vec<f64>> { Ok(chain.iter().map(|&s| q(s)).collect()) };
        let config = SearchConfig { k_max: 3, delta: 0.5, ..Default::default() };
        let report = search_assistants(&fam, 10, 1, &config, &mut flat).unwrap();
        assert_eq!(report.chain, vec![10, 1]);
        assert!(report.assistants().is_empty());
        assert_eq!(report.stop, StopReason::NoImprovement);
        assert_eq!(report.steps.len(), 1);
        assert!(!report.steps[0].accepted);
        check_rule(&fam, &report, 0.5, true);

        // A gain smaller than delta is rejected too (0.4 < 0.5).
        let report = search_assistants(&fam, 10, 1, &config, &mut world).unwrap();
        assert_eq!(report.chain, vec![10, 1]);
        assert!((report.steps[0].student_after - 1.4).abs() < 1e-12);
        check_rule(&fam, &report, 0.5, true);
    }

    #[test]
    fn try_next_pair_moves_on_after_a_rejection() {
        let fam = family(&[1, 3, 8, 9, 10]);
        // Any chain through scale 3 ruins the student.
        let calls = std::cell::Cell::new(0);
        let mut probe = |chain: &[usize]| -> Result<Vec<f64>> {
            calls.set(calls.get() + 1);
            let mut accs = world(chain)?;
            if chain.contains(&3) {
                *accs.last_mut().unwrap() = 0.0;
            }
            Ok(accs)
        };
        let stop = SearchConfig { k_max: 3, delta: 0.0, ..Default::default() };
        // Round 1 keeps 8; round 2's widest pair is 8 > 1, whose only candidate is 3: stop.
        let report = search_assistants(&fam, 10, 1, &stop, &mut probe).unwrap();
        assert_eq!(report.chain, vec![10, 8, 1]);
        assert_eq!(report.stop, StopReason::NoImprovement);

        // Moving on, 10 > 8 gets scale 9 (no loss for the student, delta 0), then 8 > 1 is
        // tried again (already probed: not trained twice) and nothing else is left.
        let next = SearchConfig { on_reject: OnReject::TryNextPair, ..stop };
        calls.set(0);
        let report = search_assistants(&fam, 10, 1, &next, &mut probe).unwrap();
        assert_eq!(report.chain, vec![10, 9, 8, 1]);
        let tried: Vec<((usize, usize), usize, bool)> = report.steps.iter().map(|s| (s.pair, s.chosen, s.accepted)).collect();
        assert_eq!(tried, vec![((10, 1), 8, true), ((8, 1), 3, false), ((10, 8), 9, true), ((8, 1), 3, false)]);
        assert_eq!(report.stop, StopReason::NoImprovement);
        check_rule(&fam, &report, 0.0, false);
        assert_eq!(calls.get(), report.probes);
    }

    #[test]
    fn bad_probes_and_inputs_are_errors() {
        let fam = family(&(1..=10).collect::<Vec<_>>());
        let mut short = |_: &[usize]| -> Result<Vec<f64>> { Ok(vec![1.0]) };
        assert!(search_assistants(&fam, 10, 1, &SearchConfig::default(), &mut short).is_err());
        let mut nan = |c: &[usize]| -> Result<Vec<f64>> { Ok(vec![f64::NAN; c.len()]) };
        assert!(search_assistants(&fam, 10, 1, &SearchConfig::default(), &mut nan).is_err());
        let mut ok = |c: &[usize]| -> Result<Vec<f64>> { Ok(vec![1.0; c.len()]) };
        assert!(search_assistants(&fam, 1, 10, &SearchConfig::default(), &mut ok).is_err());
        assert!(search_assistants(&fam, 11, 1, &SearchConfig::default(), &mut ok).is_err());
        assert!(search_assistants(&fam, 10, 1, &SearchConfig { delta: f64::NAN, ..Default::default() }, &mut ok).is_err());
        let none = search_assistants(&fam, 10, 1, &SearchConfig { k_max: 0, ..Default::default() }, &mut ok).unwrap();
        assert_eq!((none.chain, none.stop), (vec![10, 1], StopReason::KMax));
    }
}
