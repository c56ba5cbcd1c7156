//! Golden cases of the stage-feature methods: AT, NST and KDSVD (mdistiller's `feats[1:]`,
//! summed over the stages), SP (the last stage; the case holds that stage only).
//!
//! These losses are scale-free, so their gradients are small (about 1e-3, and 1e-6 for the
//! `large` cases), where the absolute tolerance alone would pass almost anything. The gradients
//! are therefore compared after scaling the loss and the expected gradients by the inverse of
//! the case's largest expected gradient entry ([`unit_scale`]); the loss itself is compared as is.

use kd::baselines::{at, kdsvd, nst, sp};
use kd::core::burn::tensor::{Device, Tensor};

use super::features::{FeatureCase, Findings, expected_stage_grads, stage_grads, stage_inputs, unit_scale};

fn paired(student: &[Tensor<4>], teacher: &[Tensor<4>]) -> Result<Vec<(Tensor<4>, Tensor<4>)>, String> {
    if student.len() != teacher.len() {
        return Err(format!("{} student stages, {} teacher stages", student.len(), teacher.len()));
    }
    Ok(student.iter().cloned().zip(teacher.iter().cloned()).collect())
}

pub fn check(case: &FeatureCase, device: &Device) -> Result<(), String> {
    let (student, teacher) = stage_inputs(case, device)?;
    let pairs = paired(&student, &teacher)?;
    let loss = match case.method.as_str() {
        "at" => at::at_loss(pairs, case.param("p")?),
        "nst" => nst::nst_loss(pairs),
        "kdsvd" => kdsvd::kdsvd_loss(pairs, case.param_as::<usize>("k")?),
        "sp" => {
            let [(s, t)]: [(Tensor<4>, Tensor<4>); 1] = pairs.try_into().map_err(|_| "an SP case holds one stage".to_string())?;
            sp::similarity_loss(s, t)
        }
        other => return Err(format!("not a feature-map method: {other}")),
    }
    .map_err(|e| e.to_string())?;
    let mut findings = Findings::default();
    findings.loss(&loss, case.loss)?;
    let expected = expected_stage_grads(case, student.len())?;
    let c = unit_scale(&expected);
    let grads = loss.mul_scalar(c).backward();
    stage_grads(&mut findings, &student, &grads, &expected, c)?;
    findings.finish()
}
