//! Golden cases of the embedding methods: PKT (mdistiller's `pkt_loss`) and CC (RepDistiller's
//! `Correlation` on two learned `LinearEmbed` heads, whose weights and gradients the case holds
//! in PyTorch's layout, `[out, in]`).

use kd::baselines::{cc, pkt};
use kd::core::burn::module::Param;
use kd::core::burn::nn::Linear;
use kd::core::burn::tensor::{Device, Tensor};

use super::features::{Array, FeatureCase, Findings, embedding_inputs, scaled, unit_scale};

/// A `[rows, cols]` array transposed (PyTorch's `[out, in]` weight to Burn's `[in, out]`).
fn transposed(a: &Array) -> Result<Array, String> {
    let [rows, cols]: [usize; 2] = a.shape.clone().try_into().map_err(|_| format!("shape {:?} is not a matrix", a.shape))?;
    let values = (0..cols).flat_map(|c| (0..rows).map(move |r| a.values[r * cols + c])).collect();
    Ok(Array { values, shape: vec![cols, rows] })
}

fn expected(case: &FeatureCase, name: &str) -> Result<Array, String> {
    let grads = case.grad_learnable.as_ref().ok_or("field `grad_learnable` is missing")?;
    grads.get(name).ok_or_else(|| format!("grad_learnable.{name} is missing"))?.array(&format!("grad_learnable.{name}"))
}

/// One head as a Linear over leaf parameters, with the leaves for their gradients.
fn head(case: &FeatureCase, prefix: &str, device: &Device) -> Result<(Linear, Tensor<2>, Tensor<1>), String> {
    let w = transposed(&case.learnable(&format!("{prefix}.linear.weight"))?)?.leaf::<2>(prefix, device)?;
    let b = case.learnable(&format!("{prefix}.linear.bias"))?.leaf::<1>(prefix, device)?;
    let linear = Linear { weight: Param::from_tensor(w.clone()), bias: Some(Param::from_tensor(b.clone())) };
    Ok((linear, w, b))
}

pub fn check(case: &FeatureCase, device: &Device) -> Result<(), String> {
    let (student, teacher) = embedding_inputs(case, device)?;
    let mut findings = Findings::default();
    let embedding =
        case.grad_student_embedding.as_ref().ok_or("field `grad_student_embedding` is missing")?.array("grad_student_embedding")?;
    match case.method.as_str() {
        "pkt" => {
            let loss = pkt::pkt_loss(student.clone(), teacher, case.param("eps")?).map_err(|e| e.to_string())?;
            findings.loss(&loss, case.loss)?;
            // Scale-free like the feature maps: see `feature_maps` for why the gradients are scaled.
            let c = unit_scale([&embedding]);
            let grads = loss.mul_scalar(c).backward();
            findings.grad(&format!("gradient of student_embedding (times {c:.3e})"), &student, &grads, &scaled(&embedding, c))?;
        }
        "cc" => {
            let (ls, ws, bs) = head(case, "embed_s", device)?;
            let (lt, wt, bt) = head(case, "embed_t", device)?;
            let heads = cc::CcHeads { student: ls, teacher: lt };
            let loss = heads.loss(student.clone(), teacher).map_err(|e| e.to_string())?;
            findings.loss(&loss, case.loss)?;
            // Compared relative to the case's largest gradient entry: in the `large` cases the
            // heads' gradients reach 800, where f32 cannot resolve an entry of 0.01 to 1e-5.
            let mut expected_grads = vec![embedding.clone()];
            for prefix in ["embed_s", "embed_t"] {
                expected_grads.push(transposed(&expected(case, &format!("{prefix}.linear.weight"))?)?);
                expected_grads.push(expected(case, &format!("{prefix}.linear.bias"))?);
            }
            let c = unit_scale(&expected_grads);
            let grads = loss.mul_scalar(c).backward();
            let e = |k: usize| scaled(&expected_grads[k], c);
            findings.grad("gradient of student_embedding", &student, &grads, &e(0))?;
            findings.grad("embed_s.linear.weight (transposed)", &ws, &grads, &e(1))?;
            findings.grad("embed_s.linear.bias", &bs, &grads, &e(2))?;
            findings.grad("embed_t.linear.weight (transposed)", &wt, &grads, &e(3))?;
            findings.grad("embed_t.linear.bias", &bt, &grads, &e(4))?;
        }
        other => return Err(format!("not an embedding method: {other}")),
    }
    findings.finish()
}
