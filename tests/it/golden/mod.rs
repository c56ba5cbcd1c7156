//! The golden cases: KD, DKD, RLD, DIST, PS-KD, DLB and DGKD against numbers computed in float64 by
//! the authors' reference code (tests/golden/README.md). Every `*.json` of the folder is
//! checked, the project's copy by default or the folder named by `KD_GOLDEN_DIR`, on flex and on
//! every other backend of the build (`crate::backends::parity_backends`). Methods that read
//! features, embeddings or learnable parts are checked by [`features`].

mod contrastive;
mod embeddings;
mod feature_maps;
mod features;
mod learned_features;
mod review;

use kd::core::distiller::step_without_update;
use std::path::{Path, PathBuf};

use kd::core::burn::tensor::{Int, Tensor, TensorData};
use serde::Deserialize;

use kd::core::burn::tensor::Device;
use kd::core::replay::{ReplayBuffer, ReplayEntry};
use kd::core::{Batch, BatchSource, Distiller, ModelOutput, Step};

const FORMAT: &str = "kd-golden-v1";
/// Relative and absolute tolerances of the comparison, in f32 against f64 references.
const REL_TOL: f64 = 1e-4;
pub(crate) const ABS_TOL: f64 = 1e-5;

#[derive(Deserialize)]
struct GoldenFile {
    format: String,
    method: String,
    /// Read as JSON first: logit cases become [`Case`], the others [`features::FeatureCase`].
    cases: Vec<serde_json::Value>,
}

/// One case. The fields after `grad_student_logits` belong to some methods only.
#[derive(Deserialize)]
struct Case {
    method: String,
    params: Params,
    student_logits: Vec<Vec<f64>>,
    labels: Vec<i64>,
    loss: f64,
    grad_student_logits: Vec<Vec<f64>>,
    /// kd, dkd, rld, dist.
    teacher_logits: Option<Vec<Vec<f64>>>,
    /// pskd: the dataset index of each row, the table rows before the step, the expected
    /// `alpha_t`, soft targets and table rows after the step.
    indices: Option<Vec<usize>>,
    previous_predictions: Option<Vec<Vec<f64>>>,
    alpha_t: Option<f64>,
    soft_targets: Option<Vec<Vec<f64>>>,
    next_predictions: Option<Vec<Vec<f64>>>,
    /// dlb: how many leading rows are the replayed last batch, and the logits stored for them.
    replayed: Option<usize>,
    previous_logits: Option<Vec<Vec<f64>>>,
    /// dgkd: the teacher's then each assistant's logits, and the ones the step keeps.
    teachers_logits: Option<Vec<Vec<Vec<f64>>>>,
    kept: Option<Vec<usize>>,
}

#[derive(Deserialize)]
struct Params {
    temperature: Option<f64>,
    #[serde(default)]
    logit_stand: bool,
    alpha: Option<f64>,
    beta: Option<f64>,
    /// dist: the intra-class weight.
    gamma: Option<f64>,
    alpha_temperature: Option<f64>,
    #[serde(rename = "alpha_T")]
    alpha_final: Option<f64>,
    epoch: Option<usize>,
    end_epoch: Option<usize>,
    lambda: Option<f64>,
    drop_num: Option<usize>,
}

fn golden_dir() -> PathBuf {
    match std::env::var_os("KD_GOLDEN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden"),
    }
}

/// A `[rows, cols]` f32 tensor from the case's f64 rows; an error for ragged or empty rows.
fn matrix(rows: &[Vec<f64>], what: &str) -> Result<(Vec<f32>, [usize; 2]), String> {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    if rows.is_empty() || cols == 0 || rows.iter().any(|r| r.len() != cols) {
        return Err(format!("{what} is empty or ragged"));
    }
    Ok((rows.iter().flatten().map(|&x| x as f32).collect(), [rows.len(), cols]))
}

/// The values of a field that must be there and have the shape `shape`, row-major, in f64.
fn field_values(rows: &Option<Vec<Vec<f64>>>, what: &str, shape: [usize; 2]) -> Result<Vec<f64>, String> {
    let rows = rows.as_deref().ok_or_else(|| format!("field `{what}` is missing"))?;
    let (_, got) = matrix(rows, what)?;
    if got != shape {
        return Err(format!("{what} is {got:?}, expected {shape:?}"));
    }
    Ok(rows.iter().flatten().copied().collect())
}

/// [`field_values`] in f32, as the project's inputs.
fn field_matrix(rows: &Option<Vec<Vec<f64>>>, what: &str, shape: [usize; 2]) -> Result<Vec<f32>, String> {
    Ok(field_values(rows, what, shape)?.into_iter().map(|v| v as f32).collect())
}

pub(crate) fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= ABS_TOL + REL_TOL * expected.abs()
}

/// `None` when every entry is close, else what differs (`cols` wide rows).
pub(crate) fn compare(what: &str, actual: &[f64], expected: &[f64], cols: usize) -> Option<String> {
    if actual.len() != expected.len() {
        return Some(format!("{what}: {} values, expected {}", actual.len(), expected.len()));
    }
    let mismatched: Vec<usize> = (0..actual.len()).filter(|&i| !close(actual[i], expected[i])).collect();
    let &i = mismatched.first()?;
    let worst = mismatched.iter().map(|&i| (actual[i] - expected[i]).abs()).fold(0.0, f64::max);
    Some(format!(
        "{} {what} entries differ (first [{}, {}]: {:.9e} vs {:.9e}; largest abs diff {worst:.3e})",
        mismatched.len(),
        i / cols,
        i % cols,
        actual[i],
        expected[i],
    ))
}

fn param<T>(value: Option<T>, name: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("parameter `{name}` is missing"))
}

fn kd_result<T>(r: kd::core::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn host(t: Tensor<2>) -> Result<Vec<f64>, String> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().map_err(|e| format!("{e:?}"))
}

fn usize_labels(labels: &[i64]) -> Vec<usize> {
    labels.iter().map(|&l| l as usize).collect()
}

/// A batch of the samples `indices` with the labels `labels` and a 1x1x1 zero input each (the
/// loss functions under test only read the logits).
fn label_batch(labels: Vec<usize>, indices: Vec<usize>, view: u64, device: &Device) -> Result<Batch, String> {
    kd_result(kd_testkit::label_batch_in_view(labels, indices, view, device))
}

/// Sample `i` has the label `labels[i]`: what DLB re-draws its last batch from.
struct LabelSource {
    labels: Vec<usize>,
    classes: usize,
}

impl BatchSource for LabelSource {
    fn name(&self) -> String {
        "golden-labels".into()
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn input_shape(&self) -> [usize; 3] {
        [1, 1, 1]
    }
    fn label(&self, index: usize) -> usize {
        self.labels[index]
    }
    fn augmented(&self) -> bool {
        true
    }
    fn batch(&self, indices: &[usize], _epoch: usize, view: u64, device: &Device) -> kd::core::Result<Batch> {
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Batch::from_host(vec![0.0; indices.len()], [indices.len(), 1, 1, 1], labels, indices.to_vec(), vec![view; indices.len()], device)
    }
    fn fingerprint(&self) -> u64 {
        0
    }
}

/// PS-KD through the distiller: the table holds `previous_predictions` at `indices`, the step
/// is at the authors' 0-based `epoch` (the distiller's `epoch + 1`) of `end_epoch`. Checks
/// `alpha_t`, the soft targets and the table after the step into `problems`.
fn pskd_case(case: &Case, s: Tensor<2>, device: &Device, problems: &mut Vec<String>) -> Result<Tensor<1>, String> {
    use kd::baselines::pskd::{PredictionTable, PsKd, PsKdConfig, pskd_alpha};
    let p = &case.params;
    let [b, classes] = s.dims();
    let alpha_final = param(p.alpha_final, "alpha_T")?;
    let (epoch, end_epoch) = (param(p.epoch, "epoch")?, param(p.end_epoch, "end_epoch")?);
    let indices = case.indices.clone().ok_or("field `indices` is missing")?;
    if indices.len() != b {
        return Err(format!("{} indices for {b} rows", indices.len()));
    }
    let previous = field_matrix(&case.previous_predictions, "previous_predictions", [b, classes])?;
    let alpha = pskd_alpha(alpha_final, epoch + 1, end_epoch);
    if !close(alpha, param(case.alpha_t, "alpha_t")?) {
        problems.push(format!("alpha_t {alpha} vs {:?}", case.alpha_t));
    }
    let mut table = PredictionTable::new(classes);
    for (row, &index) in previous.chunks(classes).zip(&indices) {
        kd_result(table.set(index, row))?;
    }
    let mut d = kd_result(PsKd::new(PsKdConfig { alpha_final, num_samples: None }))?;
    kd_result(d.load_state(&table.to_bytes()))?;
    let ctx = kd_testkit::ctx(epoch + 1, end_epoch);
    let batch = label_batch(usize_labels(&case.labels), indices.clone(), 0, device)?;
    let targets: Vec<f64> = kd_result(d.targets(&ctx, &batch, classes))?.into_iter().map(f64::from).collect();
    problems.extend(compare("soft target", &targets, &field_values(&case.soft_targets, "soft_targets", [b, classes])?, classes));
    let loss = kd_result(kd_result(step_without_update(&mut d, &Step::new(ctx, &batch, &ModelOutput::logits_only(s), None)))?.total())?;
    if case.next_predictions.is_some() {
        let expected = field_values(&case.next_predictions, "next_predictions", [b, classes])?;
        let stored: Vec<f64> = indices.iter().flat_map(|&i| d.table().get(i).unwrap_or(&[]).iter().map(|&v| v as f64)).collect();
        problems.extend(compare("next prediction", &stored, &expected, classes));
    }
    Ok(loss)
}

/// One DLB step through the distiller: its last batch is the samples `0..replayed` with the
/// stored `previous_logits`; `prepare_batch` re-draws them in front of the fresh samples
/// `replayed..rows`, and the step's loss is CE on all rows plus the consistency term.
fn dlb_case(case: &Case, s: Tensor<2>, device: &Device) -> Result<Tensor<1>, String> {
    use kd::baselines::{Dlb, DlbConfig};
    let p = &case.params;
    let [n, classes] = s.dims();
    let r = param(case.replayed, "replayed")?;
    if r > n {
        return Err(format!("{r} replayed rows of {n}"));
    }
    let config = DlbConfig { temperature: param(p.temperature, "temperature")?, alpha: param(p.alpha, "alpha")?, ..DlbConfig::default() };
    let mut d = kd_result(Dlb::new(config))?;
    if r > 0 {
        let previous = field_matrix(&case.previous_logits, "previous_logits", [r, classes])?;
        let entries =
            previous.chunks(classes).enumerate().map(|(index, l)| ReplayEntry { index, view: 0, score: 0.0, logits: l.to_vec() }).collect();
        kd_result(d.load_state(&ReplayBuffer { epoch: 1, classes, entries }.to_bytes()))?;
    } else if case.previous_logits.as_ref().is_some_and(|rows| !rows.is_empty()) {
        return Err("previous_logits given for a step that replays nothing".into());
    }
    let labels = usize_labels(&case.labels);
    let source = LabelSource { labels: labels.clone(), classes };
    let ctx = kd_testkit::ctx(2, 2);
    let fresh = label_batch(labels[r..].to_vec(), (r..n).collect(), 0, device)?;
    let batch = kd_result(d.prepare_batch(&ctx, fresh, &source, device))?;
    if batch.indices != (0..n).collect::<Vec<_>>() || batch.labels_host != labels {
        return Err(format!("the step's batch holds the samples {:?}, labels {:?}", batch.indices, batch.labels_host));
    }
    kd_result(kd_result(step_without_update(&mut d, &Step::new(ctx, &batch, &ModelOutput::logits_only(s), None)))?.total())
}

/// One DGKD stage step: `(1 - lambda) CE + lambda * sum over the kept teachers of T^2 KL`, each
/// KL with the default (`'mean'`) reduction of the stage loss.
fn dgkd_case(case: &Case, s: Tensor<2>, y: Tensor<1, Int>, device: &Device) -> Result<Tensor<1>, String> {
    use kd::multi_assistant::{StageLoss, stage_loss_terms};
    let p = &case.params;
    let shape = s.dims();
    let teachers = case.teachers_logits.as_ref().ok_or("field `teachers_logits` is missing")?;
    let kept = case.kept.as_ref().ok_or("field `kept` is missing")?;
    if kept.is_empty() || kept.iter().any(|&j| j >= teachers.len()) || kept.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("kept {kept:?} is not an ascending non-empty subset of {} teachers", teachers.len()));
    }
    if let Some(drop) = p.drop_num
        && drop + kept.len() != teachers.len()
    {
        return Err(format!("drop_num {drop} and {} kept of {} teachers disagree", kept.len(), teachers.len()));
    }
    let mut logits = Vec::with_capacity(kept.len());
    for &j in kept {
        let values = field_matrix(&Some(teachers[j].clone()), &format!("teachers_logits[{j}]"), shape)?;
        logits.push(Tensor::<2>::from_data(TensorData::new(values, shape), device));
    }
    let loss = StageLoss { temperature: param(p.temperature, "temperature")?, lambda: param(p.lambda, "lambda")?, ..StageLoss::default() };
    let (ce, kd) = kd_result(stage_loss_terms(s, y, &logits, &loss))?;
    Ok(ce + kd)
}

/// The distillation term of KD, DKD or RLD against `teacher_logits`.
fn logit_case(case: &Case, s: Tensor<2>, y: Tensor<1, Int>, device: &Device) -> Result<Tensor<1>, String> {
    let p = &case.params;
    let shape = s.dims();
    let teacher = field_matrix(&case.teacher_logits, "teacher_logits", shape)?;
    let t = Tensor::<2>::from_data(TensorData::new(teacher, shape), device);
    let stand = p.logit_stand.then(kd::baselines::LogitStandardization::default);
    let temperature = param(p.temperature, "temperature")?;
    Ok(match case.method.as_str() {
        "kd" => kd::baselines::kd_loss(s, t, temperature, stand.as_ref()),
        "dkd" => {
            let params =
                kd::baselines::DkdParams { alpha: param(p.alpha, "alpha")?, beta: param(p.beta, "beta")?, temperature, logit_stand: stand };
            kd::baselines::dkd_loss(s, t, y, &params)
        }
        "rld" => {
            let params = kd::rld::RldParams {
                alpha: param(p.alpha, "alpha")?,
                beta: param(p.beta, "beta")?,
                temperature,
                alpha_temperature: param(p.alpha_temperature, "alpha_temperature")?,
                logit_stand: stand,
            };
            kd::rld::rld_loss(s, t, y, &params)
        }
        "dist" => {
            let config =
                kd::baselines::DistConfig { temperature, beta: param(p.beta, "beta")?, gamma: param(p.gamma, "gamma")?, ce_weight: 0.0 };
            let (inter, intra) = kd::baselines::dist_terms(s, t, &config);
            inter + intra
        }
        other => return Err(format!("unknown method `{other}`")),
    })
}

/// Runs one case; `Err` says what did not match.
fn check_case(case: &Case, file_method: &str, device: &Device) -> Result<(), String> {
    if case.method != file_method {
        return Err(format!("method `{}` in a file of method `{file_method}`", case.method));
    }
    let device = device.clone();
    let (student, shape) = matrix(&case.student_logits, "student_logits")?;
    let (_, grad_shape) = matrix(&case.grad_student_logits, "grad_student_logits")?;
    let expected_grad: Vec<f64> = case.grad_student_logits.iter().flatten().copied().collect();
    if grad_shape != shape || case.labels.len() != shape[0] {
        return Err(format!("shapes disagree: student {shape:?}, grad {grad_shape:?}, labels {}", case.labels.len()));
    }
    if let Some(&bad) = case.labels.iter().find(|&&l| l < 0 || l as usize >= shape[1]) {
        return Err(format!("label {bad} out of range for {} classes", shape[1]));
    }

    let s = Tensor::<2>::from_data(TensorData::new(student, shape), &device.clone().autodiff()).require_grad();
    let y = Tensor::<1, Int>::from_data(TensorData::new(case.labels.clone(), [shape[0]]), &device);
    let mut problems = Vec::new();
    let loss = match case.method.as_str() {
        "pskd" => pskd_case(case, s.clone(), &device, &mut problems)?,
        "dlb" => dlb_case(case, s.clone(), &device)?,
        "dgkd" => dgkd_case(case, s.clone(), y, &device)?,
        _ => logit_case(case, s.clone(), y, &device)?,
    };
    let grads = loss.backward();
    let value = loss.without_autodiff().into_data().convert::<f64>().try_to_vec::<f64>().map_err(|e| format!("{e:?}"))?[0];
    let grad = host(s.grad(&grads).ok_or("no gradient reached the student logits")?)?;

    if !close(value, case.loss) {
        problems.push(format!("loss {value:.9e} vs {:.9e}", case.loss));
    }
    problems.extend(compare("gradient", &grad, &expected_grad, shape[1]));
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

#[test]
fn golden() {
    let dir = golden_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the golden folder {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden case file (*.json) in {}", dir.display());

    let mut failures = Vec::new();
    let mut total = 0;
    for path in &files {
        let file_name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let parsed: Result<GoldenFile, String> = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()));
        let file = match parsed {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{file_name}: unreadable: {e}"));
                continue;
            }
        };
        if file.format != FORMAT {
            failures.push(format!("{file_name}: format `{}`, expected `{FORMAT}`", file.format));
            continue;
        }
        if file.cases.is_empty() {
            failures.push(format!("{file_name}: no cases"));
            continue;
        }
        for (backend, device) in std::iter::once(("flex", crate::common::device())).chain(crate::backends::parity_backends()) {
            let mut passed = 0;
            for (i, raw) in file.cases.iter().enumerate() {
                let name = raw.get("name").and_then(|n| n.as_str()).map_or_else(|| format!("case {i}"), str::to_string);
                let result = if features::handles(&file.method) {
                    features::check(raw, &file.method, &device)
                } else {
                    serde_json::from_value::<Case>(raw.clone())
                        .map_err(|e| format!("unreadable case: {e}"))
                        .and_then(|case| check_case(&case, &file.method, &device))
                };
                match result {
                    Ok(()) => passed += 1,
                    Err(why) => failures.push(format!("{file_name} on {backend}: {name}: {why}")),
                }
            }
            total += file.cases.len();
            println!("golden {file_name} (method {}) on {backend}: {passed}/{} cases pass", file.method, file.cases.len());
        }
    }
    assert!(failures.is_empty(), "{} of {total} golden cases failed in {}:\n{}", failures.len(), dir.display(), failures.join("\n"));
}
