//! What the stage-feature baselines (AT, NST, SP, KDSVD) share: pairing the student's and the
//! teacher's stages, mdistiller's rule for maps of different sizes, and `F.normalize`.

use burn::tensor::Tensor;
use burn::tensor::module::adaptive_avg_pool2d;
use kd_core::{KdError, ModelOutput, Result};

/// `sum_i term(student_i, teacher_i, stage)` over paired stages (`stages[i]` is stage `i + 1`, as
/// `feats[1:]`), `[1]`; an error naming `method` when there is no pair.
pub fn sum_over_stages(
    method: &str,
    stages: Vec<(Tensor<4>, Tensor<4>)>,
    mut term: impl FnMut(Tensor<4>, Tensor<4>, usize) -> Result<Tensor<1>>,
) -> Result<Tensor<1>> {
    let mut total: Option<Tensor<1>> = None;
    for (i, (s, t)) in stages.into_iter().enumerate() {
        let value = term(s, t, i + 1)?;
        total = Some(match total {
            Some(sum) => sum + value,
            None => value,
        });
    }
    total.ok_or_else(|| KdError::InvalidConfig(format!("{method} needs at least one pair of stages")))
}

/// The stages after the stem (mdistiller's `feats[1:]`) of the student and the teacher, paired
/// shallow to deep; an error naming `method` when either has no such stage, when the numbers of
/// stages differ, or when a pair's batch sizes differ.
pub fn stage_pairs(method: &str, student: &ModelOutput, teacher: &ModelOutput) -> Result<Vec<(Tensor<4>, Tensor<4>)>> {
    let (s, t) = (student.features.len(), teacher.features.len());
    if s < 2 || t < 2 || s != t {
        return Err(KdError::InvalidConfig(format!(
            "{method} pairs the stages after the stem (features[1..]) one to one: the student has {s} feature maps and the \
             teacher {t}; both need the same number, at least 2 (a logits-only teacher cache has none)"
        )));
    }
    let pairs: Vec<(Tensor<4>, Tensor<4>)> = student.features[1..].iter().cloned().zip(teacher.features[1..].iter().cloned()).collect();
    for (i, (fs, ft)) in pairs.iter().enumerate() {
        same_batch(method, i + 1, fs, ft)?;
    }
    Ok(pairs)
}

/// An error naming `method` and stage `stage` when the two maps' batch sizes differ.
pub fn same_batch(method: &str, stage: usize, student: &Tensor<4>, teacher: &Tensor<4>) -> Result<()> {
    let (s, t) = (student.dims(), teacher.dims());
    if s[0] != t[0] {
        return Err(KdError::ShapeMismatch {
            what: format!("{method} features[{stage}]: teacher batch vs student {s:?}"),
            expected: vec![s[0]],
            actual: t.to_vec(),
        });
    }
    Ok(())
}

/// mdistiller's rule for maps of different heights (AT, NST): the map with the larger height is
/// average-pooled (adaptively, as `F.adaptive_avg_pool2d`) to the square size of the smaller
/// height; then the spatial sizes must agree (an error names `method`, the stage and both shapes).
pub fn match_sizes(method: &str, stage: usize, student: Tensor<4>, teacher: Tensor<4>) -> Result<(Tensor<4>, Tensor<4>)> {
    let (sh, th) = (student.dims()[2], teacher.dims()[2]);
    let (s, t) = if sh > th {
        (adaptive_avg_pool2d(student, [th, th]), teacher)
    } else if sh < th {
        (student, adaptive_avg_pool2d(teacher, [sh, sh]))
    } else {
        (student, teacher)
    };
    let (sd, td) = (s.dims(), t.dims());
    if sd[2..] != td[2..] {
        return Err(KdError::ShapeMismatch {
            what: format!("{method} features[{stage}]: spatial size after pooling, teacher vs student {sd:?}"),
            expected: sd[2..].to_vec(),
            actual: td[2..].to_vec(),
        });
    }
    Ok((s, t))
}

/// `x / max(|x|_2, 1e-12)` along `dim` (PyTorch's `F.normalize`). The floor is taken on the
/// squared norm before the root, so a zero vector gets a zero gradient instead of 0/0.
pub fn l2_normalize<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    if x.dims()[dim] == 1 {
        // The same value and gradient without a reduction over one element, which wgpu's fused
        // reduce kernel fails to compile (cubecl 0.11.3: "Cast element count must match"; NST
        // on an MLP's 1x1 features).
        return x.clone() / x.abs().clamp_min(1e-12);
    }
    let norm = x.clone().square().sum_dim(dim).clamp_min(1e-24).sqrt();
    x / norm
}

/// `[batch, rest]`: a stage map flattened per sample.
pub fn flatten(x: Tensor<4>) -> Tensor<2> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c * h * w])
}

/// The deepest `min(n_s, n_t)` stages of each side (OFD's `_align_list`; VID's reference
/// needs equal counts, where this is all of them).
pub fn align_last<'a, T>(student: &'a [T], teacher: &'a [T]) -> (&'a [T], &'a [T]) {
    let n = student.len().min(teacher.len());
    (&student[student.len() - n..], &teacher[teacher.len() - n..])
}
