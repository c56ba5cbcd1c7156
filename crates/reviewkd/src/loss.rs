//! The hierarchical context loss (HCL) and the nearest-neighbour resize the fusion uses, as pure
//! functions of tensors.
//!
//! For one pair of maps `F_s`, `F_t` of the same shape `[B, C, H, W]`:
//!
//! ```text
//! hcl(F_s, F_t) = ( MSE(F_s, F_t) + sum_{k, l_k < H} 2^-k MSE(P_{l_k}(F_s), P_{l_k}(F_t)) )
//!                 / ( 1 + sum_{k, l_k < H} 2^-k )
//! ```
//!
//! with the levels `l = 4, 2, 1` in that order, `k` counting only the levels used (1, 2, 3),
//! `P_l` adaptive average pooling to `l x l` and MSE the mean over every element. A level is
//! used only when `l < H` (the reference compares with the height alone), so a 1x1 map (an
//! MLP's stage, the pooled embedding) has the plain MSE term; the ReviewKD loss is the sum over
//! the stages (mdistiller `distillers/ReviewKD.py`, `hcl_loss`).

use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Int, Tensor, TensorData};
use kd_core::loss::mse_mean;
use kd_core::{KdError, Result};

/// The pooling levels of the hierarchy, in the reference's order (each halves the weight).
pub const POOL_LEVELS: [usize; 3] = [4, 2, 1];

/// The HCL term of one stage; the two maps must have the same shape (see [`hcl_loss`]).
pub fn hcl_stage(student: Tensor<4>, teacher: Tensor<4>) -> Tensor<1> {
    let [_, _, h, _] = student.dims();
    let mut loss = mse_mean(student.clone(), teacher.clone());
    let (mut weight, mut total) = (1.0, 1.0);
    for level in POOL_LEVELS.into_iter().filter(|&l| l < h) {
        let pooled_s = adaptive_avg_pool2d(student.clone(), [level, level]);
        let pooled_t = adaptive_avg_pool2d(teacher.clone(), [level, level]);
        weight /= 2.0;
        loss = loss + mse_mean(pooled_s, pooled_t).mul_scalar(weight);
        total += weight;
    }
    loss.div_scalar(total)
}

/// The ReviewKD loss: [`hcl_stage`] summed over paired stages (the fused student features
/// against the teacher's, in the same order). An error names the stage whose shapes differ,
/// or the counts when they differ.
pub fn hcl_loss(student: &[Tensor<4>], teacher: &[Tensor<4>]) -> Result<Tensor<1>> {
    if student.len() != teacher.len() || student.is_empty() {
        return Err(KdError::InvalidConfig(format!(
            "ReviewKD: hcl_loss needs as many student maps as teacher maps, and at least one (got {} and {})",
            student.len(),
            teacher.len()
        )));
    }
    let mut total: Option<Tensor<1>> = None;
    for (i, (s, t)) in student.iter().zip(teacher).enumerate() {
        if s.dims() != t.dims() {
            return Err(KdError::ShapeMismatch {
                what: format!("ReviewKD: fused student stage {i} vs teacher stage {i}"),
                expected: t.dims().to_vec(),
                actual: s.dims().to_vec(),
            });
        }
        let term = hcl_stage(s.clone(), t.clone());
        total = Some(match total {
            Some(acc) => acc + term,
            None => term,
        });
    }
    // Not empty: checked above.
    total.ok_or_else(|| KdError::InvalidConfig("ReviewKD: no stage".into()))
}

/// The source index of each output row of PyTorch's `interpolate(mode="nearest")` from `input`
/// to `output` rows: `min(floor(i * (input / output)), input - 1)`, the scale in f32 as
/// PyTorch computes it.
fn nearest_indices(input: usize, output: usize) -> Vec<i64> {
    let scale = input as f32 / output as f32;
    (0..output).map(|i| ((i as f32 * scale).floor() as usize).min(input - 1) as i64).collect()
}

/// `x` `[B, C, H, W]` resized to `[B, C, size[0], size[1]]` by nearest neighbour, with PyTorch's
/// `F.interpolate(x, size, mode="nearest")` index rule (not the half-pixel "nearest-exact"),
/// as row and column selections so that every backend gives the same result and its gradient
/// (the sum over the output cells each input cell was copied to). A no-op when the size is
/// already `size`.
pub fn resize_nearest(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let device = x.device();
    let select = |x: Tensor<4>, dim: usize, input: usize, output: usize| {
        if input == output {
            return x;
        }
        let indices = Tensor::<1, Int>::from_data(TensorData::new(nearest_indices(input, output), [output]), &device);
        x.select(dim, indices)
    };
    let x = select(x, 2, h, size[0]);
    select(x, 3, w, size[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_scalar::<f32>() as f64
    }

    #[test]
    fn nearest_follows_pytorch_indices() {
        // torch.nn.functional.interpolate(..., mode="nearest") source rows.
        assert_eq!(nearest_indices(2, 4), [0, 0, 1, 1]);
        assert_eq!(nearest_indices(6, 4), [0, 1, 3, 4]);
        assert_eq!(nearest_indices(3, 5), [0, 0, 1, 1, 2]);
        assert_eq!(nearest_indices(1, 3), [0, 0, 0]);
        assert_eq!(nearest_indices(8, 2), [0, 4]);
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![0f32, 1., 2., 3.], [1, 1, 2, 2]), &device);
        assert_eq!(values(resize_nearest(x.clone(), [4, 4])), [0., 0., 1., 1., 0., 0., 1., 1., 2., 2., 3., 3., 2., 2., 3., 3.]);
        assert_eq!(values(resize_nearest(x.clone(), [2, 2])), values(x.clone()));
        assert_eq!(values(resize_nearest(x, [1, 1])), [0.]);
    }

    #[test]
    fn hcl_levels_follow_the_height() {
        let device = Device::flex();
        let s = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        // By hand: levels 4, 2, 1 with weights 1/2, 1/4, 1/8 over a total of 1.875.
        let mse = |a: Tensor<4>, b: Tensor<4>| scalar(mse_mean(a, b));
        let pool = |x: &Tensor<4>, l: usize| adaptive_avg_pool2d(x.clone(), [l, l]);
        let want = (mse(s.clone(), t.clone())
            + 0.5 * mse(pool(&s, 4), pool(&t, 4))
            + 0.25 * mse(pool(&s, 2), pool(&t, 2))
            + 0.125 * mse(pool(&s, 1), pool(&t, 1)))
            / 1.875;
        let got = scalar(hcl_stage(s.clone(), t.clone()));
        assert!((got - want).abs() < 1e-5 * want.max(1.0), "{got} vs {want}");
        // A 4x4 map skips level 4 (4 >= 4): levels 2 and 1 with weights 1/2 and 1/4.
        let (s4, t4) = (pool(&s, 4), pool(&t, 4));
        let want4 = (mse(s4.clone(), t4.clone()) + 0.5 * mse(pool(&s4, 2), pool(&t4, 2)) + 0.25 * mse(pool(&s4, 1), pool(&t4, 1))) / 1.75;
        assert!((scalar(hcl_stage(s4, t4)) - want4).abs() < 1e-5 * want4.max(1.0));
        // A 1x1 map: the plain MSE.
        let (s1, t1) = (pool(&s, 1), pool(&t, 1));
        assert!((scalar(hcl_stage(s1.clone(), t1.clone())) - mse(s1.clone(), t1.clone())).abs() < 1e-6);
        // Equal maps: 0; the sum over stages; shape errors name the stage.
        assert_eq!(scalar(hcl_stage(s.clone(), s.clone())), 0.0);
        let sum = scalar(hcl_loss(&[s.clone(), s1.clone()], &[t.clone(), t1.clone()]).unwrap());
        assert!((sum - got - mse(s1.clone(), t1.clone())).abs() < 1e-5);
        let err = hcl_loss(&[s.clone(), s1.clone()], &[t.clone(), t.clone()]).unwrap_err().to_string();
        assert!(err.contains("stage 1"), "{err}");
        assert!(hcl_loss(&[s], &[]).is_err());
    }
}
