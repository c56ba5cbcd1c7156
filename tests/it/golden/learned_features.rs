//! VID and OFD: stage-feature losses through learnable parts (tests/golden/README.md, "VID,
//! OFD"). The parts are built with the case's `learnable` values under the reference's names,
//! the loss is the crate's pure function (`vid_loss`, `ofd_loss`), and the gradients of the
//! student's stages and of every learnable tensor are compared.

use kd::baselines::ofd::{Connector, OfdParts, ofd_loss, stage_margins};
use kd::baselines::vid::{VidParts, VidStage, vid_loss};
use kd::core::PreActivation;
use kd::core::burn::module::Param;
use kd::core::burn::tensor::{Device, Tensor};

use super::features::{FeatureCase, Findings, expected_stage_grads, stage_grads, stage_inputs};

/// A learnable tensor of the case as a parameter on `device`'s autodiff twin.
fn param<const D: usize>(case: &FeatureCase, name: &str, device: &Device) -> Result<Param<Tensor<D>>, String> {
    Ok(Param::from_tensor(case.learnable(name)?.leaf::<D>(&format!("learnable.{name}"), device)?))
}

/// Compares the gradient of a learnable tensor with the case's `grad_learnable[name]`.
fn learnable_grad<const D: usize>(
    findings: &mut Findings,
    case: &FeatureCase,
    name: &str,
    p: &Param<Tensor<D>>,
    grads: &kd::core::burn::tensor::Gradients,
) -> Result<(), String> {
    let expected = case.grad_learnable.as_ref().and_then(|g| g.get(name)).ok_or_else(|| format!("grad_learnable.{name} is missing"))?;
    findings.grad(&format!("gradient of {name}"), &p.val(), grads, &expected.array(&format!("grad_learnable.{name}"))?)
}

fn check_vid(case: &FeatureCase, device: &Device) -> Result<(), String> {
    let ad = device.clone().autodiff();
    let (student, teacher) = stage_inputs(case, device)?;
    let mut stages = Vec::new();
    for (i, (s, t)) in student.iter().zip(&teacher).enumerate() {
        let mut stage = VidStage::new(s.dims()[1], t.dims()[1], 0.0, &ad);
        stage.conv1.weight = param(case, &format!("regressors.{i}.0.weight"), device)?;
        stage.conv2.weight = param(case, &format!("regressors.{i}.2.weight"), device)?;
        stage.conv3.weight = param(case, &format!("regressors.{i}.4.weight"), device)?;
        stage.log_scale = param(case, &format!("log_scales.{i}"), device)?;
        stages.push(stage);
    }
    let parts = VidParts { stages };
    let loss = vid_loss(&parts, &student, &teacher, case.param("eps")?).map_err(|e| e.to_string())?;
    let grads = loss.backward();
    let mut findings = Findings::default();
    findings.loss(&loss, case.loss)?;
    stage_grads(&mut findings, &student, &grads, &expected_stage_grads(case, student.len())?, 1.0)?;
    for (i, stage) in parts.stages.iter().enumerate() {
        for (j, conv) in [(0, &stage.conv1), (2, &stage.conv2), (4, &stage.conv3)] {
            learnable_grad(&mut findings, case, &format!("regressors.{i}.{j}.weight"), &conv.weight, &grads)?;
        }
        learnable_grad(&mut findings, case, &format!("log_scales.{i}"), &stage.log_scale, &grads)?;
    }
    findings.finish()
}

fn check_ofd(case: &FeatureCase, device: &Device) -> Result<(), String> {
    let ad = device.clone().autodiff();
    let (student, teacher) = stage_inputs(case, device)?;
    let kernel = case.param("kernel_size")? as usize;
    let (mut connectors, mut bns) = (Vec::new(), Vec::new());
    for (i, (s, t)) in student.iter().zip(&teacher).enumerate() {
        let prefix = format!("connectors.connectors.{i}");
        let mut c = Connector::new(s.dims()[1], t.dims()[1], kernel, &ad);
        c.conv.weight = param(case, &format!("{prefix}.0.weight"), device)?;
        c.bn.gamma = param(case, &format!("{prefix}.1.weight"), device)?;
        c.bn.beta = param(case, &format!("{prefix}.1.bias"), device)?;
        connectors.push(c);
        let bn = |field: &str| -> Result<Tensor<1>, String> {
            let name = format!("bn_before_relu.{i}.{field}");
            case.state(&name)?.tensor::<1>(&format!("state.{name}"), device)
        };
        bns.push((bn("weight")?, bn("bias")?));
    }
    let parts = OfdParts { connectors };
    let preact = PreActivation { features: teacher, bn_before_relu: bns };
    let margins = stage_margins(&preact, parts.connectors.len()).map_err(|e| e.to_string())?;
    let loss = ofd_loss(&parts, &student, &preact.features, &margins).map_err(|e| e.to_string())?;
    let grads = loss.backward();
    let mut findings = Findings::default();
    findings.loss(&loss, case.loss)?;
    stage_grads(&mut findings, &student, &grads, &expected_stage_grads(case, student.len())?, 1.0)?;
    for (i, c) in parts.connectors.iter().enumerate() {
        let prefix = format!("connectors.connectors.{i}");
        learnable_grad(&mut findings, case, &format!("{prefix}.0.weight"), &c.conv.weight, &grads)?;
        learnable_grad(&mut findings, case, &format!("{prefix}.1.weight"), &c.bn.gamma, &grads)?;
        learnable_grad(&mut findings, case, &format!("{prefix}.1.bias"), &c.bn.beta, &grads)?;
    }
    findings.finish()
}

/// Checks a VID or OFD case.
pub fn check(case: &FeatureCase, device: &Device) -> Result<(), String> {
    match case.method.as_str() {
        "vid" => check_vid(case, device),
        "ofd" => check_ofd(case, device),
        other => Err(format!("learned_features does not check `{other}`")),
    }
}
