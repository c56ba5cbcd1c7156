//! Golden cases of the stage-feature methods: AT, NST (mdistiller's `feats[1:]`, summed over
//! the stages), SP (the last stage; the case holds that stage only).

use kd::baselines::{at, nst, sp};
use kd::core::burn::tensor::{Device, Tensor};

use super::features::{FeatureCase, Findings, stage_grads, stage_inputs};

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
        "sp" => {
            let [(s, t)]: [(Tensor<4>, Tensor<4>); 1] = pairs.try_into().map_err(|_| "an SP case holds one stage".to_string())?;
            sp::similarity_loss(s, t)
        }
        other => return Err(format!("not a feature-map method: {other}")),
    }
    .map_err(|e| e.to_string())?;
    let mut findings = Findings::default();
    findings.loss(&loss, case.loss)?;
    let grads = loss.backward();
    stage_grads(&mut findings, case, &student, &grads)?;
    findings.finish()
}
