//! Result records, tables and files.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use kd::core::checkpoint::write_atomic;
use kd::core::{BatchSource, BinaryMetrics, EvalMetrics, TrainConfig, TrainOutcome};
use kd::data::DatasetSplits;
use kd::data::registry::LoadOptions;
use serde::{Deserialize, Serialize};

/// The backend a run used, as records name it.
#[derive(Debug, Clone)]
pub struct BackendTag {
    /// The `--backend` name.
    pub name: String,
    /// What the device is (adapter, processor).
    pub device: String,
}

/// One run: a teacher, or a student trained with one method and seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub dataset: String,
    pub method: String,
    pub teacher: String,
    pub student: String,
    pub seed: u64,
    pub backend: String,
    /// The device the backend ran on (`kd::backend::describe`).
    #[serde(default)]
    pub device: String,
    pub epochs: usize,
    /// Highest test accuracy over the epochs (%).
    pub best_acc: f64,
    /// Test accuracy after the last epoch (%).
    pub last_acc: f64,
    /// Test accuracy at the epoch the validation split selected (= best_acc without one).
    pub selected_acc: f64,
    /// Validation accuracy at the selected epoch (%), when there is a validation split.
    #[serde(default)]
    pub valid_acc: Option<f64>,
    pub best_epoch: usize,
    pub seconds_per_epoch: f64,
    pub total_seconds: f64,
    /// Whether the outputs came from the on-disk cache (teachers).
    #[serde(default)]
    pub cached: bool,
    /// Whether the student was trained from cached teacher outputs.
    #[serde(default)]
    pub teacher_cache: bool,
    /// Test accuracy after each epoch (learning curve; an epoch that did not evaluate the test
    /// split carries the last evaluation forward).
    pub curve: Vec<f64>,
    /// Validation accuracy after each epoch, when there is a validation split: the learning
    /// curve of runs that evaluate the test split only at some epochs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_curve: Vec<f64>,
    /// How many epochs evaluated the test split, when not every one did
    /// (`TestEvaluation::WhenSelected`, `SelectedAndLast`): `best_acc` is then the best of those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_epochs: Option<usize>,
    /// Mean training loss terms of the last epoch.
    pub final_terms: BTreeMap<String, f64>,
    /// Binary metrics on the test split at the selected epoch (two-class tasks).
    #[serde(default)]
    pub binary: Option<BinaryMetrics>,
    /// Why the run failed (training diverged, bad configuration), when it did.
    #[serde(default)]
    pub error: Option<String>,
    /// What was odd about the data (a class missing from a split...), as the loader warned.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The file a pretrained teacher was loaded from (teachers not trained here).
    #[serde(default)]
    pub weights: Option<String>,
    /// How the record was produced (flattened: `recipe`, `method_config`, `data`, `command`,
    /// `commit` are fields of the record).
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// What a reader needs to trace a result back to its run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// The training recipe: optimizer, learning rate, schedule, batch, epochs (`TrainConfig`).
    #[serde(default)]
    pub recipe: serde_json::Value,
    /// The method's effective configuration: its defaults, the job's preset and the user's
    /// values, as the method ran with them.
    #[serde(default)]
    pub method_config: serde_json::Value,
    /// The data: the name it was loaded by, the load options, the split sizes, whether training
    /// batches were augmented.
    #[serde(default)]
    pub data: serde_json::Value,
    /// The command line of the job that produced the record.
    #[serde(default)]
    pub command: String,
    /// The git commit of the code that produced it (`-dirty` with uncommitted changes;
    /// `unknown` outside a git checkout).
    #[serde(default)]
    pub commit: String,
}

impl Provenance {
    /// This process's command line and commit, with `recipe` (`Null` when there is none).
    pub fn new(recipe: Option<&TrainConfig>) -> Self {
        Provenance {
            recipe: recipe.and_then(|c| serde_json::to_value(c).ok()).unwrap_or_default(),
            command: command_line(),
            commit: commit(),
            ..Default::default()
        }
    }
}

/// The job's command line, as the shell passed it.
fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// The checkout's commit, read once per process.
fn commit() -> String {
    static COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COMMIT
        .get_or_init(|| {
            let git = |args: &[&str]| {
                std::process::Command::new("git")
                    .args(args)
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            };
            match git(&["rev-parse", "HEAD"]) {
                Some(head) if !head.is_empty() => {
                    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
                    if dirty { format!("{head}-dirty") } else { head }
                }
                _ => "unknown".to_string(),
            }
        })
        .clone()
}

/// What a record says about the data it ran on.
pub fn data_description(source: &str, options: &LoadOptions, data: &DatasetSplits) -> serde_json::Value {
    serde_json::json!({
        "source": source,
        "options": options,
        "train": data.train.len(),
        "valid": data.valid.as_ref().map(|v| v.len()),
        "test": data.test.len(),
        "classes": data.train.num_classes(),
        "input_shape": data.train.input_shape(),
        "augmented": data.train.augmented(),
        "augment": data.train.augment().describe(),
        "normalization": { "mean": data.train.normalization().0, "std": data.train.normalization().1 },
        "class_names": data.train.class_names(),
        "image_folder": data.image_folder.as_deref().map(|f| serde_json::json!({
            "root": f.root,
            "layout": f.layout,
            "files": f.files,
            "sizes_found": f.sizes_found,
            "decode_cache": f.cache,
        })),
    })
}

impl Record {
    #[allow(clippy::too_many_arguments)]
    pub fn new<S, A>(
        dataset: &str,
        method: &str,
        teacher: &str,
        student: &str,
        seed: u64,
        backend: &BackendTag,
        config: &TrainConfig,
        out: &TrainOutcome<S, A>,
        total_seconds: f64,
    ) -> Self {
        Record {
            dataset: dataset.into(),
            method: method.into(),
            teacher: teacher.into(),
            student: student.into(),
            seed,
            backend: backend.name.clone(),
            device: backend.device.clone(),
            epochs: config.epochs,
            best_acc: out.best_acc(),
            last_acc: out.last_acc(),
            selected_acc: out.selected_acc(),
            valid_acc: out.history.iter().find(|r| r.epoch == out.best_epoch).and_then(|r| r.valid.map(|v| v.top1)),
            best_epoch: out.best_epoch,
            seconds_per_epoch: out.seconds_per_epoch(),
            total_seconds,
            cached: false,
            teacher_cache: false,
            curve: out.history.iter().map(|r| r.test.top1).collect(),
            valid_curve: out.history.iter().filter_map(|r| r.valid.map(|v| v.top1)).collect(),
            test_epochs: Some(out.history.iter().filter(|r| r.test_evaluated).count()).filter(|&n| n < out.history.len()),
            final_terms: out.history.last().map(|r| r.train_terms.clone()).unwrap_or_default(),
            binary: out.history.iter().find(|r| r.epoch == out.best_epoch).and_then(|r| r.test.binary),
            error: None,
            warnings: Vec::new(),
            weights: None,
            provenance: Provenance::new(Some(config)),
        }
    }

    /// The record with its data described ([`data_description`]).
    pub fn with_data(mut self, source: &str, options: &LoadOptions, data: &DatasetSplits) -> Self {
        self.provenance.data = data_description(source, options, data);
        self
    }

    /// The record with the method's effective configuration (as `Prepared::config` gives it).
    pub fn with_effective_config(mut self, config: serde_json::Value) -> Self {
        self.provenance.method_config = config;
        self
    }

    /// The same record with the method's effective configuration resolved from the user's
    /// (or, when it does not resolve, what was given and why it failed).
    pub fn with_method_config(mut self, method: &str, method_config: Option<&serde_json::Value>) -> Self {
        self.provenance.method_config = kd::methods::effective_config(method, method_config)
            .unwrap_or_else(|e| serde_json::json!({ "invalid": format!("{e}"), "given": method_config }));
        self
    }

    /// A teacher loaded from `weights` rather than trained: its evaluation, no epochs.
    pub fn pretrained(
        dataset: &str,
        spec: &str,
        weights: &Path,
        backend: &BackendTag,
        test: &EvalMetrics,
        valid: Option<&EvalMetrics>,
    ) -> Self {
        Record {
            dataset: dataset.into(),
            method: "teacher".into(),
            teacher: spec.into(),
            student: spec.into(),
            seed: 0,
            backend: backend.name.clone(),
            device: backend.device.clone(),
            epochs: 0,
            best_acc: test.top1,
            last_acc: test.top1,
            selected_acc: test.top1,
            valid_acc: valid.map(|v| v.top1),
            best_epoch: 0,
            seconds_per_epoch: 0.0,
            total_seconds: 0.0,
            cached: false,
            teacher_cache: false,
            curve: Vec::new(),
            valid_curve: Vec::new(),
            test_epochs: None,
            final_terms: BTreeMap::new(),
            binary: test.binary,
            error: None,
            warnings: Vec::new(),
            weights: Some(weights.display().to_string()),
            provenance: Provenance::new(None),
        }
    }

    /// A run that failed: it is listed with its error instead of accuracies.
    #[allow(clippy::too_many_arguments)]
    pub fn failed(
        dataset: &str,
        method: &str,
        teacher: &str,
        student: &str,
        seed: u64,
        backend: &BackendTag,
        config: &TrainConfig,
        error: String,
    ) -> Self {
        Record {
            dataset: dataset.into(),
            method: method.into(),
            teacher: teacher.into(),
            student: student.into(),
            seed,
            backend: backend.name.clone(),
            device: backend.device.clone(),
            epochs: config.epochs,
            best_acc: f64::NAN,
            last_acc: f64::NAN,
            selected_acc: f64::NAN,
            valid_acc: None,
            best_epoch: 0,
            seconds_per_epoch: f64::NAN,
            total_seconds: 0.0,
            cached: false,
            teacher_cache: false,
            curve: Vec::new(),
            valid_curve: Vec::new(),
            test_epochs: None,
            final_terms: BTreeMap::new(),
            binary: None,
            error: Some(error),
            warnings: Vec::new(),
            weights: None,
            provenance: Provenance::new(Some(config)),
        }
    }

    pub fn summary_line(&self) -> String {
        if let Some(e) = &self.error {
            return format!("{:<14} {:<10} {:<14} seed {:<3} FAILED: {e}", self.dataset, self.method, self.student, self.seed);
        }
        if let Some(w) = &self.weights {
            return format!("{:<14} {:<10} {:<14} loaded from {w}: test {:6.2}%", self.dataset, self.method, self.student, self.last_acc);
        }
        format!(
            "{:<14} {:<10} {:<14} seed {:<3} best {:6.2}%  last {:6.2}%  {:7.2} s/epoch{}",
            self.dataset,
            self.method,
            self.student,
            self.seed,
            self.best_acc,
            self.last_acc,
            self.seconds_per_epoch,
            if self.cached { "  (cached)" } else { "" }
        )
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// One row of a summary table: a method on a dataset, over seeds.
pub struct Row {
    pub method: String,
    pub model: String,
    pub teacher: String,
    pub seeds: usize,
    /// Test accuracy at the epoch the validation split selected (= best without one).
    pub selected: (f64, f64),
    pub best: (f64, f64),
    pub last: (f64, f64),
    pub sec_per_epoch: f64,
    pub total_seconds: f64,
    /// Each seed's learning curve ([`Record::learning_curve`]) and training seconds per epoch
    /// (time to an accuracy).
    pub curves: Vec<(Vec<f64>, f64)>,
    /// Mean validation accuracy at the selected epoch, when there is a validation split.
    pub valid_selected: Option<f64>,
    /// Binary metrics (mean, std) in the order of [`BINARY_COLUMNS`].
    pub binary: Option<Vec<(f64, f64)>>,
}

/// Binary metric columns: name, and whether higher is better.
pub const BINARY_COLUMNS: [(&str, bool); 6] =
    [("accuracy", true), ("F1", true), ("ROC-AUC", true), ("PR-AUC", true), ("Brier", false), ("ECE", false)];

fn binary_values(m: &BinaryMetrics) -> [f64; 6] {
    [m.accuracy, m.f1, m.roc_auc, m.pr_auc, m.brier, m.ece]
}

/// Whether the training inputs of `dataset`'s runs were augmented, and how, as one sentence.
fn augmentation_note(records: &[Record], dataset: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    for r in records.iter().filter(|r| r.dataset == dataset) {
        let how = match (r.provenance.data.get("augmented").and_then(|a| a.as_bool()), r.provenance.data.get("augment")) {
            (Some(true), Some(serde_json::Value::String(how))) => format!("augmented ({how})"),
            (Some(true), _) => "augmented".to_string(),
            (Some(false), _) => "not augmented".to_string(),
            (None, _) => continue,
        };
        if !seen.contains(&how) {
            seen.push(how);
        }
    }
    match seen.as_slice() {
        [] => String::new(),
        [one] => format!("Training inputs: {one}."),
        many => format!("Training inputs: {} (by run).", many.join("; ")),
    }
}

/// Whether the learning curves of these records (one dataset's) are read on the validation
/// split: where some run evaluated the test split only at some epochs, its test curve holds
/// carried values, and every run of the dataset is read on validation alike.
pub fn curves_on_validation<'a>(records: impl IntoIterator<Item = &'a Record>) -> bool {
    records.into_iter().any(|r| r.test_epochs.is_some())
}

impl Record {
    /// The learning curve on the test split, or on validation ([`curves_on_validation`]).
    pub fn learning_curve(&self, on_validation: bool) -> &[f64] {
        if on_validation { &self.valid_curve } else { &self.curve }
    }
}

/// Training seconds until a learning curve first reaches `target`, mean over the curves
/// that reach it: `12.3`, `12.3 (2 of 3)` when some never do, `never` when none does.
fn time_to_accuracy(curves: &[(Vec<f64>, f64)], target: f64) -> String {
    let reached: Vec<f64> = curves
        .iter()
        .filter_map(|(curve, per_epoch)| curve.iter().position(|&a| a >= target).map(|e| (e + 1) as f64 * per_epoch))
        .collect();
    match reached.len() {
        0 => "never".to_string(),
        n if n == curves.len() => format!("{:.1}", reached.iter().sum::<f64>() / n as f64),
        n => format!("{:.1} ({n} of {})", reached.iter().sum::<f64>() / n as f64, curves.len()),
    }
}

/// Rows per dataset, in the order the records came.
pub fn summarize(records: &[Record]) -> BTreeMap<String, Vec<Row>> {
    // (dataset, method, student) -> its runs, in the order the records came.
    type Group<'a> = ((String, String, String), Vec<&'a Record>);
    let mut groups: Vec<Group> = Vec::new();
    for r in records.iter().filter(|r| r.error.is_none()) {
        let key = (r.dataset.clone(), r.method.clone(), r.student.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for ((dataset, method, model), rs) in groups {
        let on_validation = curves_on_validation(records.iter().filter(|r| r.dataset == dataset));
        let valid: Option<Vec<f64>> = rs.iter().map(|r| r.valid_acc).collect();
        let best: Vec<f64> = rs.iter().map(|r| r.best_acc).collect();
        let last: Vec<f64> = rs.iter().map(|r| r.last_acc).collect();
        let selected: Vec<f64> = rs.iter().map(|r| r.selected_acc).collect();
        out.entry(dataset).or_default().push(Row {
            method,
            model,
            teacher: rs[0].teacher.clone(),
            seeds: rs.len(),
            selected: mean_std(&selected),
            best: mean_std(&best),
            last: mean_std(&last),
            sec_per_epoch: rs.iter().map(|r| r.seconds_per_epoch).sum::<f64>() / rs.len() as f64,
            total_seconds: rs.iter().map(|r| r.total_seconds).sum::<f64>(),
            curves: rs.iter().map(|r| (r.learning_curve(on_validation).to_vec(), r.seconds_per_epoch)).collect(),
            valid_selected: valid.map(|v| mean_std(&v).0),
            binary: rs
                .iter()
                .map(|r| r.binary.map(|b| binary_values(&b)))
                .collect::<Option<Vec<_>>>()
                .map(|vals| (0..6).map(|k| mean_std(&vals.iter().map(|v| v[k]).collect::<Vec<_>>())).collect()),
        });
    }
    out
}

/// Markdown tables, one per dataset; the best student value of each column in bold.
pub fn markdown(records: &[Record]) -> String {
    let mut md = String::new();
    for (dataset, rows) in summarize(records) {
        md.push_str(&format!("### {dataset}\n\n"));
        md.push_str(
            "Test accuracy (mean ± std over seeds): *selected* at the epoch of highest validation accuracy \
             (the test split never chooses; = best where there is no validation split), *best* the highest over \
             the epochs (what mdistiller reports), *last* after the last epoch. ",
        );
        md.push_str(&augmentation_note(records, &dataset));
        let on_validation = curves_on_validation(records.iter().filter(|r| r.dataset == dataset));
        if on_validation {
            md.push_str(
                " The students evaluated the test split only at some epochs (the selected and the last among them, \
                 as the suite's `[evaluation] test` says): *selected* and *last* are exact, *best* is the best of the \
                 evaluated epochs.",
            );
        }
        md.push_str("\n\n");
        md.push_str(if on_validation {
            "*to CE's acc*: training seconds until the validation accuracy first reaches CE's (the same student \
             alone) mean validation accuracy at its selected epoch, mean over the seeds that reach it.\n\n"
        } else {
            "*to CE's acc*: training seconds until the test accuracy first reaches the mean selected accuracy of CE \
             (the same student alone), mean over the seeds that reach it.\n\n"
        });
        md.push_str(
            "| method | model | teacher | seeds | selected acc (%) | best acc (%) | last acc (%) | s/epoch | to CE's acc (s) | total s |\n",
        );
        md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        let students: Vec<&Row> = rows.iter().filter(|r| r.method != "teacher").collect();
        let top_selected = students.iter().map(|r| r.selected.0).fold(f64::NEG_INFINITY, f64::max);
        let top_best = students.iter().map(|r| r.best.0).fold(f64::NEG_INFINITY, f64::max);
        let top_last = students.iter().map(|r| r.last.0).fold(f64::NEG_INFINITY, f64::max);
        for r in &rows {
            let fmt = |(m, s): (f64, f64), top: f64| {
                let cell = if r.seeds > 1 { format!("{m:.2} ± {s:.2}") } else { format!("{m:.2}") };
                if r.method != "teacher" && (m - top).abs() < 1e-9 { format!("**{cell}**") } else { cell }
            };
            let ce = rows.iter().find(|c| c.method == kd::baselines::ce::NAME && c.model == r.model);
            let to_ce = match ce {
                Some(ce) if r.method != "teacher" => match (on_validation, ce.valid_selected) {
                    (false, _) => time_to_accuracy(&r.curves, ce.selected.0),
                    (true, Some(target)) => time_to_accuracy(&r.curves, target),
                    (true, None) => "-".to_string(),
                },
                _ => "-".to_string(),
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {to_ce} | {:.1} |\n",
                r.method,
                r.model,
                r.teacher,
                r.seeds,
                fmt(r.selected, top_selected),
                fmt(r.best, top_best),
                fmt(r.last, top_last),
                r.sec_per_epoch,
                r.total_seconds
            ));
        }
        let failures: Vec<&Record> = records.iter().filter(|r| r.dataset == dataset && r.error.is_some()).collect();
        for f in &failures {
            md.push_str(&format!("- `{}` ({}, seed {}) failed: {}\n", f.method, f.student, f.seed, f.error.as_deref().unwrap_or_default()));
        }
        md.push('\n');
        if rows.iter().any(|r| r.binary.is_some()) {
            md.push_str(&format!("Binary metrics on the test split at the selected epoch ({dataset}):\n\n"));
            md.push_str("| method | model |");
            for (name, higher) in BINARY_COLUMNS {
                md.push_str(&format!(" {name} {} |", if higher { "↑" } else { "↓" }));
            }
            md.push_str("\n|---|---|---|---|---|---|---|---|\n");
            let students: Vec<&Row> = rows.iter().filter(|r| r.method != "teacher" && r.binary.is_some()).collect();
            let tops: Vec<f64> = (0..6)
                .map(|k| {
                    let vals = students.iter().filter_map(|r| r.binary.as_ref().map(|b| b[k].0));
                    if BINARY_COLUMNS[k].1 { vals.fold(f64::NEG_INFINITY, f64::max) } else { vals.fold(f64::INFINITY, f64::min) }
                })
                .collect();
            for r in rows.iter().filter(|r| r.binary.is_some()) {
                md.push_str(&format!("| {} | {} |", r.method, r.model));
                for (k, &(m, s)) in r.binary.as_ref().expect("filtered").iter().enumerate() {
                    let digits = if k == 0 { 2 } else { 4 };
                    let cell = if r.seeds > 1 { format!("{m:.digits$} ± {s:.digits$}") } else { format!("{m:.digits$}") };
                    let bold = r.method != "teacher" && (m - tops[k]).abs() < 1e-12;
                    md.push_str(&if bold { format!(" **{cell}** |") } else { format!(" {cell} |") });
                }
                md.push('\n');
            }
            md.push('\n');
        }
    }
    md
}

/// Writes `results.json` and `results.md` into `out` (atomically).
pub fn write_results(out: &Path, records: &[Record]) -> Result<()> {
    write_results_with(out, records, "")
}

/// Like [`write_results`], with more markdown (other tables) after the method tables.
pub fn write_results_with(out: &Path, records: &[Record], extra_markdown: &str) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_atomic(&out.join("results.json"), serde_json::to_string_pretty(records)?.as_bytes())?;
    write_atomic(&out.join("results.md"), format!("{}{extra_markdown}", markdown(records)).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The time to an accuracy is the first epoch that reaches it times the epoch's seconds,
    /// averaged over the runs that reach it, and says how many do.
    #[test]
    fn time_to_accuracy_counts_epochs_until_the_target() {
        let curves = vec![(vec![50.0, 60.0, 70.0], 2.0), (vec![65.0, 71.0, 72.0], 3.0), (vec![40.0, 45.0, 50.0], 1.0)];
        assert_eq!(time_to_accuracy(&curves[..2], 60.0), "3.5"); // epoch 2 at 2 s, epoch 1 at 3 s
        assert_eq!(time_to_accuracy(&curves, 70.0), "6.0 (2 of 3)"); // epoch 3 at 2 s, epoch 2 at 3 s
        assert_eq!(time_to_accuracy(&curves, 99.0), "never");
    }

    /// A run of `method` at 2 s an epoch with these test and validation curves, its epoch
    /// selected on validation; `test_epochs` as a trainer that skipped some test passes writes it.
    fn run(method: &str, test: &[f64], valid: &[f64], test_epochs: Option<usize>) -> Record {
        let recipe: TrainConfig = serde_json::from_value(serde_json::json!({
            "epochs": test.len(), "batch_size": 8, "optimizer": { "kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": false, "weight_decay": 0.0 }
        }))
        .unwrap();
        let backend = BackendTag { name: "flex".into(), device: "cpu".into() };
        let best = (0..valid.len()).fold(0, |b, e| if valid[e] > valid[b] { e } else { b });
        Record {
            error: None,
            selected_acc: test[best],
            best_acc: test.iter().copied().fold(f64::NAN, f64::max),
            last_acc: test[test.len() - 1],
            valid_acc: Some(valid[best]),
            best_epoch: best + 1,
            seconds_per_epoch: 2.0,
            curve: test.to_vec(),
            valid_curve: valid.to_vec(),
            test_epochs,
            ..Record::failed("d", method, "-", "s", 0, &backend, &recipe, String::new())
        }
    }

    /// Where the test split was evaluated at every epoch, *to CE's acc* reads the test curve;
    /// where some runs skipped test passes (their test curve carries old values), validation.
    #[test]
    fn time_to_ce_reads_validation_where_test_passes_were_skipped() {
        let kd_row = |md: &str| md.lines().find(|l| l.starts_with("| kd |")).unwrap().to_string();
        // CE selects epoch 3 (test 55, validation 60). KD reaches test 55 at epoch 3 and
        // validation 60 at epoch 2.
        let every = markdown(&[
            run("ce", &[40.0, 50.0, 55.0], &[50.0, 55.0, 60.0], None),
            run("kd", &[45.0, 50.0, 56.0], &[55.0, 60.0, 62.0], None),
        ]);
        assert!(every.contains("until the test accuracy first reaches"), "{every}");
        assert!(kd_row(&every).contains("| 6.0 |"), "{every}");
        // The same runs with KD's test carried from epoch 1 until its last: validation decides.
        let skipped = markdown(&[
            run("ce", &[40.0, 50.0, 55.0], &[50.0, 55.0, 60.0], None),
            run("kd", &[45.0, 45.0, 56.0], &[55.0, 60.0, 62.0], Some(2)),
        ]);
        assert!(skipped.contains("until the validation accuracy first reaches"), "{skipped}");
        assert!(kd_row(&skipped).contains("| 4.0 |"), "{skipped}");
    }
}
