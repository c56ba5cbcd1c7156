//! The multi-assistant part of the bench: teacher-assistant chains on the image data.
//!
//! Direct KD (teacher to student), TAKD with its assistants, DGKD with its own, and the dynamic
//! chain (assistants chosen by the search), each with and without dynamic stopping, in one
//! model family ([`ChainSetup`]: the MLPs of `recipes.toml` on the larger images, TAKD's plain
//! CNNs in the CIFAR-10 suite). Stages are checkpointed, so the shared teacher trains once per
//! dataset and seed.

use std::path::Path;

use anyhow::Result;
use kd::core::checkpoint::write_atomic;
use kd::data::DatasetSplits;
use kd::multi_assistant::{ChainMode, ChainPlan, ChainReport, DynamicPlan, ModelFamily, StageLoss, StoppingConfig, run_chain, run_dynamic};
use kd::prelude::*;
use serde::{Deserialize, Serialize};

use crate::experiment::{RunContext, RunFolder};
use crate::report::Provenance;

/// The chain variants' names, as records and tables give them, in the order they run (TAKD's and
/// DGKD's followed by their assistants' count in parentheses).
pub const VARIANT_NAMES: [&str; 5] = [STUDENT_ALONE, DIRECT_KD, TAKD, DGKD, DYNAMIC];
const STUDENT_ALONE: &str = "CE (student alone)";
const DIRECT_KD: &str = "direct KD";
const TAKD: &str = "TAKD";
const DGKD: &str = "DGKD";
const DYNAMIC: &str = "dynamic chain";

/// One chain run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainRecord {
    pub dataset: String,
    pub variant: String,
    pub dynamic_stopping: bool,
    pub seed: u64,
    pub chain: Vec<String>,
    /// Test accuracy of the student at its selected epoch (%).
    pub student_acc: f64,
    pub student_best_acc: f64,
    /// Epochs trained over all stages (the teacher's included), and the fixed schedule's.
    pub total_epochs: usize,
    pub planned_epochs: usize,
    pub epochs_saved: usize,
    /// Wall time of the whole chain; stages loaded from an earlier variant's checkpoints
    /// (the shared teacher) cost nothing here.
    pub wall_seconds: f64,
    /// Probe epochs of the assistant search (dynamic chains).
    pub probe_epochs: usize,
    /// Every stage's recipe; the chain's configuration (the model family, the dynamic-stopping
    /// rule when on, the stage loss) as `method_config`; the data (flattened, as in `results.json`).
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// What every chain record of one `run` shares.
struct Trace {
    recipe: TrainConfig,
    family: serde_json::Value,
    loss: StageLoss,
    data: serde_json::Value,
}

#[allow(clippy::too_many_arguments)]
fn record(
    dataset: &str,
    variant: &str,
    stopping: Option<StoppingConfig>,
    seed: u64,
    report: &ChainReport,
    probe_epochs: usize,
    extra_seconds: f64,
    trace: &Trace,
) -> ChainRecord {
    let student = report.student();
    ChainRecord {
        dataset: dataset.into(),
        variant: variant.into(),
        dynamic_stopping: stopping.is_some(),
        seed,
        chain: report.chain.clone(),
        student_acc: student.map_or(f64::NAN, |s| s.selected_acc),
        student_best_acc: student.map_or(f64::NAN, |s| s.best_acc),
        total_epochs: report.total_epochs,
        planned_epochs: report.planned_epochs,
        epochs_saved: report.epochs_saved(),
        wall_seconds: report.wall_seconds + extra_seconds,
        probe_epochs,
        provenance: Provenance {
            method_config: serde_json::json!({ "family": trace.family, "loss": trace.loss, "stopping": stopping }),
            data: trace.data.clone(),
            ..Provenance::new(Some(&trace.recipe))
        },
    }
}

/// The models of the chains: a family, its teacher and student, and the assistants of TAKD and
/// DGKD (scales of the family, largest first). Read from the bench's files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSetup {
    /// The family every model of a chain comes from.
    pub family: ModelFamily,
    /// The teacher's and the student's scales.
    pub teacher: usize,
    pub student: usize,
    /// TAKD's assistants and DGKD's, largest first.
    pub takd_assistants: Vec<usize>,
    pub dgkd_assistants: Vec<usize>,
    /// The loss of every distillation stage (absent: the DGKD code's, [`StageLoss::default`]).
    #[serde(default)]
    pub loss: StageLoss,
}

impl ChainSetup {
    /// Checks every chain it plans (scales in the family, teacher > assistants > student).
    pub fn validate(&self, train: &TrainConfig) -> Result<()> {
        let base = ChainPlan { loss: self.loss, ..ChainPlan::new(self.family.clone(), self.teacher, self.student, train.clone()) };
        base.clone().with_assistants(self.takd_assistants.clone()).validate()?;
        base.with_assistants(self.dgkd_assistants.clone()).with_mode(ChainMode::Dgkd).validate()?;
        Ok(())
    }
}

/// Where and how one seed's chains run.
pub struct SeedRun<'a> {
    pub seed: u64,
    /// The share of each batch the dynamic-stopping control students train on.
    pub control_batch_fraction: f64,
    /// A checkpoint of the family's teacher, trained beforehand (none: the seed trains its own).
    pub teacher: Option<&'a Path>,
    /// The root of the stages' checkpoint folders.
    pub dir: &'a Path,
}

/// Runs every chain variant of `setup` on `data` for one seed.
pub fn run(data: &DatasetSplits, setup: &ChainSetup, config: &TrainConfig, run: SeedRun<'_>, ctx: &RunContext) -> Result<Vec<ChainRecord>> {
    let SeedRun { seed, control_batch_fraction, teacher, dir } = run;
    let device = &ctx.device;
    let family = setup.family.clone();
    let data = &data.for_run_seed(seed);
    let mut train = config.clone();
    train.seed = seed;
    // Patience in proportion to the schedule, so that short bench runs can stop at all.
    let stopping = StoppingConfig { patience: (config.epochs / 4).max(2), control_batch_fraction, ..StoppingConfig::default() };
    stopping.validate()?;
    let options =
        RunOptions { checkpoint_dir: Some(dir.to_path_buf()), resume: true, test_evaluation: ctx.test_evaluation, ..Default::default() };
    let trace = Trace {
        recipe: train.clone(),
        family: serde_json::to_value(&family)?,
        loss: setup.loss,
        data: serde_json::json!({
            "name": data.name,
            "train": data.train.len(),
            "valid": data.valid.as_ref().map(|v| v.len()),
            "test": data.test.len(),
            "augmented": data.train.augmented(),
        }),
    };
    let mut out = vec![student_alone(setup, data, &train, ctx, dir, &trace)?];
    for with_stop in [false, true] {
        let stop = with_stop.then_some(stopping);
        let base = ChainPlan {
            teacher_checkpoint: teacher.map(Path::to_path_buf),
            loss: setup.loss,
            ..ChainPlan::new(family.clone(), setup.teacher, setup.student, train.clone()).with_stopping(stop)
        };
        let (takd, dgkd) = (&setup.takd_assistants, &setup.dgkd_assistants);
        let variants = [
            (DIRECT_KD.to_string(), base.clone()),
            (
                format!("{TAKD} ({} assistant{})", takd.len(), if takd.len() == 1 { "" } else { "s" }),
                base.clone().with_assistants(takd.clone()),
            ),
            (
                format!("{DGKD} ({} assistant{})", dgkd.len(), if dgkd.len() == 1 { "" } else { "s" }),
                base.clone().with_assistants(dgkd.clone()).with_mode(ChainMode::Dgkd),
            ),
        ];
        for (name, plan) in variants {
            let report = run_chain(&plan, data, device, &options)?;
            eprintln!("chains {} seed {seed}: {}", data.name, report.summary_line());
            out.push(record(&data.name, &name, stop, seed, &report, 0, 0.0, &trace));
        }
        let dynamic = run_dynamic(&DynamicPlan::new(base), data, device, &options)?;
        eprintln!("chains {} seed {seed}: dynamic {}", data.name, dynamic.chain.summary_line());
        out.push(record(&data.name, DYNAMIC, stop, seed, &dynamic.chain, dynamic.probe_epochs, dynamic.search_seconds, &trace));
    }
    Ok(out)
}

/// The chain's student trained with cross-entropy alone, as the bench trains any student: the
/// tables' reference row.
fn student_alone(
    setup: &ChainSetup,
    data: &DatasetSplits,
    train: &TrainConfig,
    ctx: &RunContext,
    dir: &Path,
    trace: &Trace,
) -> Result<ChainRecord> {
    let model_name = setup.family.model_name(setup.student)?;
    let prepared = kd::methods::prepare::<AnyModel>(kd::baselines::ce::NAME, None)?;
    let folder = RunFolder { dir: &dir.join("ce-student"), resume: true, run_config: serde_json::json!({ "chain_student": model_name }) };
    let (r, _) = ctx.prepared_student(data, prepared, &model_name, None, &data.train, train, train.seed, Some(folder))?;
    eprintln!("chains {} seed {}: CE {model_name} {:.2} %", data.name, train.seed, r.selected_acc);
    Ok(ChainRecord {
        dataset: data.name.clone(),
        variant: STUDENT_ALONE.into(),
        dynamic_stopping: false,
        seed: train.seed,
        chain: vec![model_name],
        student_acc: r.selected_acc,
        student_best_acc: r.best_acc,
        total_epochs: train.epochs,
        planned_epochs: train.epochs,
        epochs_saved: 0,
        wall_seconds: r.total_seconds,
        probe_epochs: 0,
        provenance: Provenance {
            method_config: serde_json::json!({ "family": trace.family, "method": kd::baselines::ce::NAME }),
            data: trace.data.clone(),
            ..Provenance::new(Some(train))
        },
    })
}

/// Writes `chains.json` and returns the markdown table.
pub fn write(out: &Path, records: &[ChainRecord]) -> Result<String> {
    write_atomic(&out.join("chains.json"), serde_json::to_string_pretty(records)?.as_bytes())?;
    let mut md = String::new();
    let mut datasets: Vec<&str> = records.iter().map(|r| r.dataset.as_str()).collect();
    datasets.dedup();
    for dataset in datasets {
        let first = records.iter().find(|r| r.dataset == dataset && r.chain.len() > 1);
        let models = first.map(|r| format!("{} to {}, ", r.chain[0], r.chain[r.chain.len() - 1])).unwrap_or_default();
        md.push_str(&format!("### Teacher-assistant chains on {dataset} ({models}mean over seeds)\n\n"));
        md.push_str(
            "| variant | dynamic stopping | chain (seed 0) | student acc (%) | epochs (of planned) | wall s |\n|---|---|---|---|---|---|\n",
        );
        let mut keys: Vec<(&str, bool)> = Vec::new();
        for r in records.iter().filter(|r| r.dataset == dataset) {
            if !keys.contains(&(r.variant.as_str(), r.dynamic_stopping)) {
                keys.push((r.variant.as_str(), r.dynamic_stopping));
            }
        }
        for (variant, stop) in keys {
            let rs: Vec<&ChainRecord> =
                records.iter().filter(|r| r.dataset == dataset && r.variant == variant && r.dynamic_stopping == stop).collect();
            let n = rs.len() as f64;
            let acc = rs.iter().map(|r| r.student_acc).sum::<f64>() / n;
            let sd = if rs.len() > 1 { (rs.iter().map(|r| (r.student_acc - acc).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
            let epochs = rs.iter().map(|r| r.total_epochs as f64).sum::<f64>() / n;
            let planned = rs.iter().map(|r| r.planned_epochs as f64).sum::<f64>() / n;
            let wall = rs.iter().map(|r| r.wall_seconds).sum::<f64>() / n;
            let probes = rs.iter().map(|r| r.probe_epochs as f64).sum::<f64>() / n;
            md.push_str(&format!(
                "| {variant} | {} | {} | {acc:.2} ± {sd:.2} | {epochs:.0} of {planned:.0}{} | {wall:.1} |\n",
                if stop { "yes" } else { "no" },
                rs[0].chain.join(" > "),
                if probes > 0.0 { format!(" (+{probes:.0} probe)") } else { String::new() }
            ));
        }
        md.push('\n');
    }
    Ok(md)
}
