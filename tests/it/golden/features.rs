//! Golden cases of methods that read features, embeddings or learnable parts (the second
//! section of tests/golden/README.md): the fields they share, read from the case's JSON, and the
//! comparison of a loss and of the gradients it leaves on every input that has an expected one.
//!
//! Each method family checks its cases in a file of its own beside this one and is listed in
//! [`check`]; a case whose method no family knows is a failure.

use std::collections::BTreeMap;

use kd::core::burn::tensor::{Device, Gradients, Tensor, TensorData};
use serde::Deserialize;
use serde_json::Value;

use super::{close, compare};

/// A float tensor of any rank, read from nested JSON lists (row-major).
#[derive(Debug, Clone)]
pub struct Array {
    pub values: Vec<f64>,
    pub shape: Vec<usize>,
}

impl Array {
    /// Reads nested lists of numbers; an error names `what` when they are ragged or not numbers.
    pub fn from_json(value: &Value, what: &str) -> Result<Array, String> {
        fn walk(v: &Value, depth: usize, shape: &mut Vec<usize>, out: &mut Vec<f64>, what: &str) -> Result<(), String> {
            match v {
                Value::Array(items) => {
                    if shape.len() == depth {
                        shape.push(items.len());
                    } else if shape.len() < depth || shape[depth] != items.len() {
                        return Err(format!("{what} is ragged at depth {depth}"));
                    }
                    items.iter().try_for_each(|item| walk(item, depth + 1, shape, out, what))
                }
                Value::Number(n) if shape.len() == depth => {
                    out.push(n.as_f64().ok_or_else(|| format!("{what}: {n} is not a float"))?);
                    Ok(())
                }
                other => Err(format!("{what}: unexpected {other} at depth {depth}")),
            }
        }
        let (mut shape, mut values) = (Vec::new(), Vec::new());
        walk(value, 0, &mut shape, &mut values, what)?;
        if values.is_empty() || values.len() != shape.iter().product::<usize>() {
            return Err(format!("{what} is empty or ragged (shape {shape:?}, {} values)", values.len()));
        }
        Ok(Array { values, shape })
    }

    /// The `D`-rank f32 tensor on `device`; an error when the rank differs.
    pub fn tensor<const D: usize>(&self, what: &str, device: &Device) -> Result<Tensor<D>, String> {
        let shape: [usize; D] = self.shape.clone().try_into().map_err(|_| format!("{what} has rank {}, expected {D}", self.shape.len()))?;
        let values: Vec<f32> = self.values.iter().map(|&v| v as f32).collect();
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// [`Array::tensor`] on `device`'s autodiff twin, as a leaf that collects its gradient.
    pub fn leaf<const D: usize>(&self, what: &str, device: &Device) -> Result<Tensor<D>, String> {
        Ok(self.tensor::<D>(what, &device.clone().autodiff())?.require_grad())
    }
}

/// A list of arrays (one per stage), or one array.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Json(pub Value);

impl Json {
    pub fn array(&self, what: &str) -> Result<Array, String> {
        Array::from_json(&self.0, what)
    }

    /// One array per entry of a list (the stages, shallow to deep).
    pub fn stages(&self, what: &str) -> Result<Vec<Array>, String> {
        let items = self.0.as_array().ok_or_else(|| format!("{what} is not a list of stages"))?;
        if items.is_empty() {
            return Err(format!("{what} has no stage"));
        }
        items.iter().enumerate().map(|(i, v)| Array::from_json(v, &format!("{what}[{i}]"))).collect()
    }
}

/// The fields of a feature, embedding or relation case (tests/golden/README.md, second section).
/// Every input a method does not read is absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "the format's fields are all accepted; no family yet reads the name or the logits")]
pub struct FeatureCase {
    pub name: String,
    pub method: String,
    /// The reference's arguments by the reference's names.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    pub loss: f64,
    pub student_features: Option<Json>,
    pub teacher_features: Option<Json>,
    pub grad_student_features: Option<Json>,
    pub student_embedding: Option<Json>,
    pub teacher_embedding: Option<Json>,
    pub grad_student_embedding: Option<Json>,
    pub student_logits: Option<Json>,
    pub teacher_logits: Option<Json>,
    pub labels: Option<Vec<i64>>,
    pub grad_student_logits: Option<Json>,
    /// Learnable parts by name, and d loss / d each of them.
    pub learnable: Option<BTreeMap<String, Json>>,
    pub grad_learnable: Option<BTreeMap<String, Json>>,
    /// Random draws the reference made (CRD's negatives), fixed in the case.
    pub draws: Option<BTreeMap<String, Json>>,
    /// Anything else a method's reference needs (state before the step, expected state after).
    #[serde(default)]
    pub state: BTreeMap<String, Json>,
}

fn missing(field: &str) -> String {
    format!("field `{field}` is missing")
}

impl FeatureCase {
    /// A float parameter by the reference's name.
    pub fn param(&self, name: &str) -> Result<f64, String> {
        self.params.get(name).and_then(Value::as_f64).ok_or_else(|| format!("parameter `{name}` is missing or not a number"))
    }

    /// A parameter of any JSON type, deserialised.
    pub fn param_as<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, String> {
        let v = self.params.get(name).ok_or_else(|| format!("parameter `{name}` is missing"))?;
        serde_json::from_value(v.clone()).map_err(|e| format!("parameter `{name}`: {e}"))
    }

    pub fn student_stages(&self) -> Result<Vec<Array>, String> {
        self.student_features.as_ref().ok_or_else(|| missing("student_features"))?.stages("student_features")
    }
    pub fn teacher_stages(&self) -> Result<Vec<Array>, String> {
        self.teacher_features.as_ref().ok_or_else(|| missing("teacher_features"))?.stages("teacher_features")
    }
    pub fn student_embedding(&self) -> Result<Array, String> {
        self.student_embedding.as_ref().ok_or_else(|| missing("student_embedding"))?.array("student_embedding")
    }
    pub fn teacher_embedding(&self) -> Result<Array, String> {
        self.teacher_embedding.as_ref().ok_or_else(|| missing("teacher_embedding"))?.array("teacher_embedding")
    }
    pub fn learnable(&self, name: &str) -> Result<Array, String> {
        let parts = self.learnable.as_ref().ok_or_else(|| missing("learnable"))?;
        parts.get(name).ok_or_else(|| format!("learnable part `{name}` is missing"))?.array(&format!("learnable.{name}"))
    }
    pub fn draw(&self, name: &str) -> Result<Array, String> {
        let draws = self.draws.as_ref().ok_or_else(|| missing("draws"))?;
        draws.get(name).ok_or_else(|| format!("draw `{name}` is missing"))?.array(&format!("draws.{name}"))
    }
    pub fn state(&self, name: &str) -> Result<Array, String> {
        self.state.get(name).ok_or_else(|| format!("state `{name}` is missing"))?.array(&format!("state.{name}"))
    }
}

/// Collects what differs between the project's loss and gradients and the case's.
#[derive(Default)]
pub struct Findings {
    pub problems: Vec<String>,
    /// How many gradients were compared: a case that compares none is a failure.
    pub gradients: usize,
}

impl Findings {
    /// Compares the loss value (a one-element tensor).
    pub fn loss(&mut self, loss: &Tensor<1>, expected: f64) -> Result<(), String> {
        let value = loss.clone().without_autodiff().into_data().convert::<f64>().try_to_vec::<f64>().map_err(|e| format!("{e:?}"))?;
        if value.len() != 1 {
            return Err(format!("the loss has {} elements", value.len()));
        }
        if !close(value[0], expected) {
            self.problems.push(format!("loss {:.9e} vs {expected:.9e}", value[0]));
        }
        Ok(())
    }

    /// Compares the gradient `grads` holds for the leaf `leaf` with `expected`.
    pub fn grad<const D: usize>(&mut self, what: &str, leaf: &Tensor<D>, grads: &Gradients, expected: &Array) -> Result<(), String> {
        let Some(grad) = leaf.grad(grads) else {
            // A loss that does not depend on the leaf (a batch of one, whose relations are
            // constant) leaves no gradient: right where the reference's is zero.
            self.gradients += 1;
            return match expected.values.iter().all(|v| v.abs() <= super::ABS_TOL) {
                true => Ok(()),
                false => Err(format!("no gradient reached {what}, where the reference has one")),
            };
        };
        if grad.dims().to_vec() != expected.shape {
            return Err(format!("{what}: gradient shape {:?}, expected {:?}", grad.dims(), expected.shape));
        }
        let actual = grad.into_data().convert::<f64>().try_to_vec::<f64>().map_err(|e| format!("{e:?}"))?;
        let cols = *expected.shape.last().unwrap_or(&1);
        self.problems.extend(compare(what, &actual, &expected.values, cols));
        self.gradients += 1;
        Ok(())
    }

    /// Compares one value the step computed besides the loss (state after the step, for example).
    pub fn values(&mut self, what: &str, actual: &[f64], expected: &Array) {
        let cols = *expected.shape.last().unwrap_or(&1);
        self.problems.extend(compare(what, actual, &expected.values, cols));
    }

    pub fn finish(self) -> Result<(), String> {
        if self.gradients == 0 {
            return Err("the case compares no gradient".into());
        }
        if self.problems.is_empty() { Ok(()) } else { Err(self.problems.join("; ")) }
    }
}

/// `1 / max |entry|` over the expected gradients (1 when they are zero up to rounding, below
/// 1e-9: a batch of one row, whose relations are constant).
pub fn unit_scale<'a>(expected: impl IntoIterator<Item = &'a Array>) -> f64 {
    let largest = expected.into_iter().flat_map(|a| a.values.iter()).fold(0.0f64, |m, v| m.max(v.abs()));
    if largest > 1e-9 { 1.0 / largest } else { 1.0 }
}

/// `a` times `c`.
pub fn scaled(a: &Array, c: f64) -> Array {
    Array { values: a.values.iter().map(|v| v * c).collect(), shape: a.shape.clone() }
}

/// Per-stage student leaves and teacher constants, for methods that read stage features.
pub fn stage_inputs(case: &FeatureCase, device: &Device) -> Result<(Vec<Tensor<4>>, Vec<Tensor<4>>), String> {
    let (s, t) = (case.student_stages()?, case.teacher_stages()?);
    let student = s.iter().enumerate().map(|(i, a)| a.leaf::<4>(&format!("student_features[{i}]"), device)).collect::<Result<_, _>>()?;
    let teacher = t.iter().enumerate().map(|(i, a)| a.tensor::<4>(&format!("teacher_features[{i}]"), device)).collect::<Result<_, _>>()?;
    Ok((student, teacher))
}

/// The case's `grad_student_features`, one per stage of `student`.
pub fn expected_stage_grads(case: &FeatureCase, stages: usize) -> Result<Vec<Array>, String> {
    let expected = case.grad_student_features.as_ref().ok_or_else(|| missing("grad_student_features"))?.stages("grad_student_features")?;
    if expected.len() != stages {
        return Err(format!("{} stage gradients for {stages} stages", expected.len()));
    }
    Ok(expected)
}

/// Compares the gradient of every student stage with `expected` times `scale` (the factor the
/// loss was multiplied by before `backward`, see [`unit_scale`]).
pub fn stage_grads(
    findings: &mut Findings,
    student: &[Tensor<4>],
    grads: &Gradients,
    expected: &[Array],
    scale: f64,
) -> Result<(), String> {
    for (i, (leaf, e)) in student.iter().zip(expected).enumerate() {
        let what = if scale == 1.0 {
            format!("gradient of student_features[{i}]")
        } else {
            format!("gradient of student_features[{i}] (times {scale:.3e})")
        };
        findings.grad(&what, leaf, grads, &scaled(e, scale))?;
    }
    Ok(())
}

/// Student leaf and teacher constant embeddings, for methods that read the penultimate embedding.
pub fn embedding_inputs(case: &FeatureCase, device: &Device) -> Result<(Tensor<2>, Tensor<2>), String> {
    Ok((
        case.student_embedding()?.leaf::<2>("student_embedding", device)?,
        case.teacher_embedding()?.tensor::<2>("teacher_embedding", device)?,
    ))
}

/// Compares the student embedding's gradient with `grad_student_embedding`.
pub fn embedding_grad(findings: &mut Findings, case: &FeatureCase, student: &Tensor<2>, grads: &Gradients) -> Result<(), String> {
    let expected =
        case.grad_student_embedding.as_ref().ok_or_else(|| missing("grad_student_embedding"))?.array("grad_student_embedding")?;
    findings.grad("gradient of student_embedding", student, grads, &expected)
}

/// Whether a method's cases are checked here (rather than by the logit cases of `super`).
pub fn handles(method: &str) -> bool {
    FAMILIES.iter().any(|family| family.methods.contains(&method))
}

/// A method family: the methods it checks and its checker.
pub struct Family {
    pub methods: &'static [&'static str],
    pub check: fn(&FeatureCase, &Device) -> Result<(), String>,
}

/// Every family of feature cases; a new family adds its file and one line here.
const FAMILIES: &[Family] = &[
    Family { methods: &["crd"], check: super::contrastive::check },
    Family { methods: &["reviewkd"], check: super::review::check },
    Family { methods: &["at", "nst", "sp", "kdsvd"], check: super::feature_maps::check },
    Family { methods: &["pkt", "cc"], check: super::embeddings::check },
    Family { methods: &["vid", "ofd"], check: super::learned_features::check },
];

/// Runs one raw case through its family's checker; `Err` says what did not match.
pub fn check(raw: &Value, file_method: &str, device: &Device) -> Result<(), String> {
    let case: FeatureCase = serde_json::from_value(raw.clone()).map_err(|e| format!("unreadable case: {e}"))?;
    if case.method != file_method {
        return Err(format!("method `{}` in a file of method `{file_method}`", case.method));
    }
    let family =
        FAMILIES.iter().find(|f| f.methods.contains(&case.method.as_str())).ok_or_else(|| format!("unknown method `{}`", case.method))?;
    (family.check)(&case, device)
}
