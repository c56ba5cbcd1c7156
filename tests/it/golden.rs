//! The golden cases: KD, DKD and RLD against numbers computed in float64 by the authors'
//! reference functions (tests/golden/README.md). Every `*.json` of the folder is checked, the
//! project's copy by default or the folder named by `KD_GOLDEN_DIR`, on flex and on every other
//! backend of the build (`crate::backends::parity_backends`).

use std::path::{Path, PathBuf};

use kd::core::burn::tensor::{Int, Tensor, TensorData};
use serde::Deserialize;

use kd::core::burn::tensor::Device;

const FORMAT: &str = "kd-golden-v1";
/// Relative and absolute tolerances of the comparison, in f32 against f64 references.
const REL_TOL: f64 = 1e-4;
const ABS_TOL: f64 = 1e-5;

#[derive(Deserialize)]
struct GoldenFile {
    format: String,
    method: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    method: String,
    params: Params,
    student_logits: Vec<Vec<f64>>,
    teacher_logits: Vec<Vec<f64>>,
    labels: Vec<i64>,
    loss: f64,
    grad_student_logits: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct Params {
    temperature: f64,
    logit_stand: bool,
    alpha: Option<f64>,
    beta: Option<f64>,
    alpha_temperature: Option<f64>,
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

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= ABS_TOL + REL_TOL * expected.abs()
}

fn param(value: Option<f64>, name: &str) -> Result<f64, String> {
    value.ok_or_else(|| format!("parameter `{name}` is missing"))
}

/// Runs one case; `Err` says what did not match.
fn check_case(case: &Case, file_method: &str, device: &Device) -> Result<(), String> {
    if case.method != file_method {
        return Err(format!("method `{}` in a file of method `{file_method}`", case.method));
    }
    let device = device.clone();
    let (student, shape) = matrix(&case.student_logits, "student_logits")?;
    let (teacher, teacher_shape) = matrix(&case.teacher_logits, "teacher_logits")?;
    let (_, grad_shape) = matrix(&case.grad_student_logits, "grad_student_logits")?;
    let expected_grad: Vec<f64> = case.grad_student_logits.iter().flatten().copied().collect();
    if teacher_shape != shape || grad_shape != shape || case.labels.len() != shape[0] {
        return Err(format!(
            "shapes disagree: student {shape:?}, teacher {teacher_shape:?}, grad {grad_shape:?}, labels {}",
            case.labels.len()
        ));
    }
    if let Some(&bad) = case.labels.iter().find(|&&l| l < 0 || l as usize >= shape[1]) {
        return Err(format!("label {bad} out of range for {} classes", shape[1]));
    }

    let s = Tensor::<2>::from_data(TensorData::new(student, shape), &device.clone().autodiff()).require_grad();
    let t = Tensor::<2>::from_data(TensorData::new(teacher, shape), &device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(case.labels.clone(), [shape[0]]), &device);
    let p = &case.params;
    let stand = p.logit_stand.then(kd::baselines::LogitStandardization::default);
    let loss = match case.method.as_str() {
        "kd" => kd::baselines::kd_loss(s.clone(), t, p.temperature, stand.as_ref()),
        "dkd" => {
            let params = kd::baselines::DkdParams {
                alpha: param(p.alpha, "alpha")?,
                beta: param(p.beta, "beta")?,
                temperature: p.temperature,
                logit_stand: stand,
            };
            kd::baselines::dkd_loss(s.clone(), t, y, &params)
        }
        "rld" => {
            let params = kd::rld::RldParams {
                alpha: param(p.alpha, "alpha")?,
                beta: param(p.beta, "beta")?,
                temperature: p.temperature,
                alpha_temperature: param(p.alpha_temperature, "alpha_temperature")?,
                logit_stand: stand,
            };
            kd::rld::rld_loss(s.clone(), t, y, &params)
        }
        other => return Err(format!("unknown method `{other}`")),
    };
    let grads = loss.backward();
    let value = loss.without_autodiff().into_data().convert::<f64>().try_to_vec::<f64>().map_err(|e| format!("{e:?}"))?[0];
    let grad = s.grad(&grads).ok_or("no gradient reached the student logits")?;
    let grad = grad.into_data().convert::<f64>().try_to_vec::<f64>().map_err(|e| format!("{e:?}"))?;

    let mut problems = Vec::new();
    if !close(value, case.loss) {
        problems.push(format!("loss {value:.9e} vs {:.9e}", case.loss));
    }
    let mismatched: Vec<usize> = (0..grad.len()).filter(|&i| !close(grad[i], expected_grad[i])).collect();
    if let Some(&i) = mismatched.first() {
        let worst = mismatched.iter().map(|&i| (grad[i] - expected_grad[i]).abs()).fold(0.0, f64::max);
        problems.push(format!(
            "{} gradient entries differ (first [{}, {}]: {:.9e} vs {:.9e}; largest abs diff {worst:.3e})",
            mismatched.len(),
            i / shape[1],
            i % shape[1],
            grad[i],
            expected_grad[i],
        ));
    }
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
            for case in &file.cases {
                match check_case(case, &file.method, &device) {
                    Ok(()) => passed += 1,
                    Err(why) => failures.push(format!("{file_name} on {backend}: {}: {why}", case.name)),
                }
            }
            total += file.cases.len();
            println!("golden {file_name} (method {}) on {backend}: {passed}/{} cases pass", file.method, file.cases.len());
        }
    }
    assert!(failures.is_empty(), "{} of {total} golden cases failed in {}:\n{}", failures.len(), dir.display(), failures.join("\n"));
}
