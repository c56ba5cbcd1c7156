//! Golden cases of CRD (tests/golden/crd.json, from RepDistiller's `CRDLoss` and
//! `ContrastMemory`): the heads built from the case's weights, the memory from its banks and
//! constants, the loss on its fixed draws; then the loss, the gradients of the student's
//! embedding and of both heads, `Z`, and the banks after the momentum update.

use kd::core::burn::module::Param;
use kd::core::burn::nn::{Linear, LinearConfig};
use kd::core::burn::tensor::{Device, Int, Tensor, TensorData};
use kd::crd::{
    ContrastMemory, CrdHeads, CrdParams, contrast_scores_from_bank, crd_loss, crd_loss_from_scores, normalisation_constants,
    normalisation_from_scores,
};

use super::features::{Array, FeatureCase, Findings, embedding_grad, embedding_inputs};

/// A `[rows, cols]` array transposed: PyTorch's `[out, in]` weights to Burn's `[in, out]`.
fn transposed(a: &Array) -> Result<Array, String> {
    let [rows, cols]: [usize; 2] = a.shape.clone().try_into().map_err(|_| format!("a weight of shape {:?}", a.shape))?;
    let values = (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| a.values[r * cols + c]).collect();
    Ok(Array { values, shape: vec![cols, rows] })
}

/// A head with the case's `<name>.weight` and `<name>.bias`, tracked on the autodiff device.
fn head(case: &FeatureCase, name: &str, device: &Device) -> Result<Linear, String> {
    let weight = transposed(&case.learnable(&format!("{name}.weight"))?)?;
    let bias = case.learnable(&format!("{name}.bias"))?;
    let [fan_in, fan_out]: [usize; 2] = weight.shape.clone().try_into().map_err(|_| "weight rank")?;
    let mut linear = LinearConfig::new(fan_in, fan_out).init(&device.clone().autodiff());
    linear.weight = Param::from_tensor(weight.leaf::<2>(&format!("{name}.weight"), device)?);
    linear.bias = Some(Param::from_tensor(bias.leaf::<1>(&format!("{name}.bias"), device)?));
    Ok(linear)
}

/// Both ways of computing the scores: from the gathered rows (the reference's) and from the
/// whole bank (what the distiller uses when the bank is small against the rows).
pub fn check(case: &FeatureCase, device: &Device) -> Result<(), String> {
    run(case, device, false)?;
    run(case, device, true).map_err(|e| format!("scores from the whole bank: {e}"))
}

fn run(case: &FeatureCase, device: &Device, from_bank: bool) -> Result<(), String> {
    let k = case.param_as::<usize>("nce_k")?;
    let (temperature, momentum) = (case.param("nce_t")?, case.param("nce_m")?);
    let (n, dim) = (case.param_as::<usize>("n_data")?, case.param_as::<usize>("feat_dim")?);
    let (student, teacher) = embedding_inputs(case, device)?;
    let b = student.dims()[0];
    let heads = CrdHeads { embed_s: head(case, "embed_s", device)?, embed_t: head(case, "embed_t", device)? };

    // The draws: each row is the sample itself, then k samples of other classes ('exact').
    let (idx, contrast) = (case.draw("idx")?, case.draw("contrast_idx")?);
    let labels = case.state("labels")?;
    if idx.shape != [b] || contrast.shape != [b, k + 1] || labels.shape != [n] {
        return Err(format!(
            "draws idx {:?}, contrast_idx {:?}, labels {:?} for B = {b}, K = {k}, N = {n}",
            idx.shape, contrast.shape, labels.shape
        ));
    }
    let as_index = |v: f64| v as usize;
    let idx: Vec<usize> = idx.values.iter().copied().map(as_index).collect();
    let contrast: Vec<usize> = contrast.values.iter().copied().map(as_index).collect();
    for (row, &i) in idx.iter().enumerate() {
        let drawn = &contrast[row * (k + 1)..(row + 1) * (k + 1)];
        if drawn[0] != i || drawn[1..].iter().any(|&j| labels.values[j] == labels.values[i]) {
            return Err(format!("row {row} of contrast_idx is not an 'exact' draw for sample {i}: {drawn:?}"));
        }
    }

    let bank = |name: &str| -> Result<Vec<f32>, String> {
        let a = case.state(name)?;
        if a.shape != [n, dim] {
            return Err(format!("state.{name} is {:?}, expected [{n}, {dim}]", a.shape));
        }
        Ok(a.values.iter().map(|&v| v as f32).collect())
    };
    let z_before = match case.state.contains_key("z_before") {
        true => {
            let z = case.state("z_before")?.values;
            Some([z[0], z[1]])
        }
        false => None,
    };
    let mut memory = ContrastMemory::from_host(n, dim, bank("memory_v1")?, bank("memory_v2")?, z_before).map_err(|e| e.to_string())?;
    memory.to_device(device);
    let contrast_values: Vec<i64> = contrast.iter().map(|&i| i as i64).collect();
    let contrast = Tensor::<1, Int>::from_data(TensorData::new(contrast_values, [b * (k + 1)]), device);

    let f_s = heads.student(student.clone());
    let f_t = heads.teacher(teacher.autodiff());
    let mut findings = Findings::default();
    let kd_err = |e: kd::core::KdError| e.to_string();
    let loss = if from_bank {
        let banks =
            (case.state("memory_v1")?.tensor::<2>("memory_v1", device)?, case.state("memory_v2")?.tensor::<2>("memory_v2", device)?);
        let contrast = contrast.clone().reshape([b, k + 1]);
        let s_scores = contrast_scores_from_bank(f_s.clone(), banks.1, contrast.clone(), temperature).map_err(kd_err)?;
        let t_scores = contrast_scores_from_bank(f_t.clone(), banks.0, contrast, temperature).map_err(kd_err)?;
        let z = memory.z().unwrap_or_else(|| normalisation_from_scores(s_scores.clone(), t_scores.clone(), n));
        findings.values("Z", &z, &case.state("z_after")?);
        crd_loss_from_scores(s_scores, t_scores, &CrdParams { z, temperature, n_data: n })
    } else {
        let (rows_s, rows_t) = memory.rows(&contrast, b).map_err(kd_err)?;
        let z = match memory.z() {
            Some(z) => z,
            None => normalisation_constants(f_s.clone(), f_t.clone(), rows_s.clone(), rows_t.clone(), temperature, n).map_err(kd_err)?,
        };
        findings.values("Z", &z, &case.state("z_after")?);
        crd_loss(f_s.clone(), f_t.clone(), rows_s, rows_t, &CrdParams { z, temperature, n_data: n }).map_err(kd_err)?
    };
    findings.loss(&loss, case.loss)?;
    let grads = loss.backward();
    embedding_grad(&mut findings, case, &student, &grads)?;
    let expected = case.grad_learnable.as_ref().ok_or("field `grad_learnable` is missing")?;
    for (name, linear) in [("embed_s", &heads.embed_s), ("embed_t", &heads.embed_t)] {
        let weight = expected.get(&format!("{name}.weight")).ok_or_else(|| format!("grad_learnable.{name}.weight is missing"))?;
        let bias = expected.get(&format!("{name}.bias")).ok_or_else(|| format!("grad_learnable.{name}.bias is missing"))?;
        findings.grad(&format!("gradient of {name}.weight"), &linear.weight.val(), &grads, &transposed(&weight.array(name)?)?)?;
        let b_leaf = linear.bias.as_ref().ok_or("a head without bias")?.val();
        findings.grad(&format!("gradient of {name}.bias"), &b_leaf, &grads, &bias.array(name)?)?;
    }

    // The momentum update of the batch's rows, every other row untouched.
    memory.update(&idx, f_s.without_autodiff(), f_t.without_autodiff(), momentum).map_err(|e| e.to_string())?;
    let (v1, v2) = memory.to_host().map_err(|e| e.to_string())?;
    let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
    findings.values("memory_v1 after the update", &widen(v1), &case.state("memory_v1_after")?);
    findings.values("memory_v2 after the update", &widen(v2), &case.state("memory_v2_after")?);
    findings.finish()
}
