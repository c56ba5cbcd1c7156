//! The multi-assistant part of the bench: teacher-assistant chains on the image data.
//!
//! Direct KD (teacher to student), TAKD with one assistant, DGKD with two, and the dynamic
//! chain (assistants chosen by the search), each with and without dynamic stopping, in an MLP
//! family (one size knob: the width of two hidden layers). Stages are checkpointed, so the
//! shared teacher trains once per dataset and seed.

use std::path::Path;

use anyhow::Result;
use kd::core::burn::tensor::Device;
use kd::core::checkpoint::write_atomic;
use kd::data::DatasetSplits;
use kd::multi_assistant::{
    ChainMode, ChainPlan, ChainReport, DynamicPlan, FamilyMember, ModelFamily, StoppingConfig, run_chain, run_dynamic,
};
use kd::prelude::*;
use serde::{Deserialize, Serialize};

use crate::report::Provenance;

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
    /// rule when on) as `method_config`; the data (flattened, as in `results.json`).
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// What every chain record of one `run` shares.
struct Trace {
    recipe: TrainConfig,
    family: serde_json::Value,
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
            method_config: serde_json::json!({ "family": trace.family, "stopping": stopping }),
            data: trace.data.clone(),
            ..Provenance::new(Some(&trace.recipe))
        },
    }
}

/// Runs every chain variant on `data` for `seed`.
pub fn run(
    data: &DatasetSplits,
    config: &TrainConfig,
    seed: u64,
    control_batch_fraction: f64,
    device: &Device,
    dir: &Path,
) -> Result<Vec<ChainRecord>> {
    // MLPs with BatchNorm: without it the pure-KD stages (lambda 1, T 5, and DGKD's sum over
    // teachers) collapse on plain MLPs at the bench's learning rate.
    let members = [8, 16, 32, 64, 128, 256, 512].into_iter().map(|w| FamilyMember { scale: w, model: format!("mlpbn-{w}-{w}") }).collect();
    let family = ModelFamily::Custom { members };
    let data = &data.for_run_seed(seed);
    let mut train = config.clone();
    train.seed = seed;
    // Patience in proportion to the schedule, so that short bench runs can stop at all.
    let stopping = StoppingConfig { patience: (config.epochs / 4).max(2), control_batch_fraction, ..StoppingConfig::default() };
    stopping.validate()?;
    let options = RunOptions { checkpoint_dir: Some(dir.to_path_buf()), resume: true, ..Default::default() };
    let trace = Trace {
        recipe: train.clone(),
        family: serde_json::to_value(&family)?,
        data: serde_json::json!({
            "name": data.name,
            "train": data.train.len(),
            "valid": data.valid.as_ref().map(|v| v.len()),
            "test": data.test.len(),
            "augmented": data.train.augmented(),
        }),
    };
    let mut out = Vec::new();
    for with_stop in [false, true] {
        let stop = with_stop.then_some(stopping);
        let base = ChainPlan::new(family.clone(), 512, 8, train.clone()).with_stopping(stop);
        let variants = [
            ("direct KD", base.clone()),
            ("TAKD (1 assistant)", base.clone().with_assistants(vec![64])),
            ("DGKD (2 assistants)", base.clone().with_assistants(vec![128, 32]).with_mode(ChainMode::Dgkd)),
        ];
        for (name, plan) in variants {
            let report = run_chain(&plan, data, device, &options)?;
            eprintln!("chains {} seed {seed}: {}", data.name, report.summary_line());
            out.push(record(&data.name, name, stop, seed, &report, 0, 0.0, &trace));
        }
        let dynamic = run_dynamic(&DynamicPlan::new(base), data, device, &options)?;
        eprintln!("chains {} seed {seed}: dynamic {}", data.name, dynamic.chain.summary_line());
        out.push(record(&data.name, "dynamic chain", stop, seed, &dynamic.chain, dynamic.probe_epochs, dynamic.search_seconds, &trace));
    }
    Ok(out)
}

/// Writes `chains.json` and returns the markdown table.
pub fn write(out: &Path, records: &[ChainRecord]) -> Result<String> {
    write_atomic(&out.join("chains.json"), serde_json::to_string_pretty(records)?.as_bytes())?;
    let mut md = String::new();
    let mut datasets: Vec<&str> = records.iter().map(|r| r.dataset.as_str()).collect();
    datasets.dedup();
    for dataset in datasets {
        md.push_str(&format!("### Teacher-assistant chains on {dataset} (MLP family, mean over seeds)\n\n"));
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
