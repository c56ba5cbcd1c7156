//! The review fusion: attention-based fusion (ABF) modules that turn the student's stages into
//! maps of the teacher's shapes, each fused with what the deeper stages passed down (mdistiller
//! `distillers/ReviewKD.py`, `ABF` and `ReviewKD.forward_train`).
//!
//! For stage `i` (deep to shallow), with `x_i` the student's map and `r_{i+1}` the residual the
//! deeper ABF returned:
//!
//! ```text
//! u_i   = BN(conv1x1(x_i))                                      (C_mid channels)
//! a     = sigmoid(conv1x1([u_i, up(r_{i+1})]))                  (2 channels; not for the deepest)
//! r_i   = resize(a_0 * u_i + a_1 * up(r_{i+1}), teacher's H x W)
//! out_i = BN(conv3x3(r_i))                                      (the teacher's C_t channels)
//! ```
//!
//! `up` and `resize` are nearest-neighbour (PyTorch's `mode="nearest"`, [`resize_nearest`]);
//! `up` brings the residual to the student map's size. The BatchNorms use batch statistics in
//! training, as the reference's do.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};
use kd_core::model::feature_shape;
use kd_core::{AuxModule, KdError, Result};

use crate::loss::resize_nearest;

/// `nn.init.kaiming_uniform_(w, a=1)`: bound `sqrt(3 / fan_in)`, which is Burn's Kaiming uniform
/// with gain 1.
const KAIMING_A1: Initializer = Initializer::KaimingUniform { gain: 1.0, fan_out_only: false };

/// One attention-based fusion module.
#[derive(Module, Debug)]
pub struct Abf {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    /// The attention convolution (with bias), for every stage but the deepest.
    att_conv: Option<Conv2d>,
}

impl Abf {
    /// An ABF from `in_channels` student channels through `mid_channels` to `out_channels`
    /// teacher channels; `fuse`: whether it fuses a deeper residual (every stage but the
    /// deepest). The 1x1 and 3x3 convolutions are initialised as the reference's
    /// (`kaiming_uniform_(a=1)`), the attention convolution with PyTorch's default.
    pub fn new(in_channels: usize, mid_channels: usize, out_channels: usize, fuse: bool, device: &Device) -> Self {
        let conv1 = Conv2dConfig::new([in_channels, mid_channels], [1, 1]).with_bias(false).with_initializer(KAIMING_A1).init(device);
        let conv2 = Conv2dConfig::new([mid_channels, out_channels], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .with_initializer(KAIMING_A1)
            .init(device);
        let att_conv = fuse.then(|| Conv2dConfig::new([2 * mid_channels, 2], [1, 1]).init(device));
        Abf {
            conv1,
            bn1: BatchNormConfig::new(mid_channels).init(device),
            conv2,
            bn2: BatchNormConfig::new(out_channels).init(device),
            att_conv,
        }
    }

    /// `(out, residual)` for student map `x` `[B, C_in, H, W]`, the deeper stage's `residual`
    /// (needed when the module fuses, ignored otherwise) and the teacher's `out_size`.
    pub fn forward(&self, x: Tensor<4>, residual: Option<Tensor<4>>, out_size: [usize; 2]) -> Result<(Tensor<4>, Tensor<4>)> {
        let [b, _, h, w] = x.dims();
        let mut x = self.bn1.forward(self.conv1.forward(x));
        if let Some(att_conv) = &self.att_conv {
            let residual = residual.ok_or_else(|| KdError::InvalidConfig("ReviewKD: a fusing ABF got no residual".into()))?;
            let y = resize_nearest(residual, [h, w]);
            let z = sigmoid(att_conv.forward(Tensor::cat(vec![x.clone(), y.clone()], 1)));
            let (a0, a1) = (z.clone().narrow(1, 0, 1), z.narrow(1, 1, 1));
            debug_assert_eq!(a0.dims(), [b, 1, h, w]);
            x = x * a0 + y * a1;
        }
        let x = resize_nearest(x, out_size);
        Ok((self.bn2.forward(self.conv2.forward(x.clone())), x))
    }
}

/// ReviewKD's learnable parts: one [`Abf`] per paired stage, built from the shapes of a probe
/// batch (mdistiller's `IN_CHANNELS`, `OUT_CHANNELS`, `SHAPES`, `OUT_SHAPES`, which its config
/// lists per architecture, are read from the networks' outputs here).
#[derive(Module, Debug)]
pub struct ReviewFusion {
    /// Deep to shallow, as the reference's `self.abfs` (index 0: the pooled embedding's).
    abfs: Vec<Abf>,
    /// `[C, H, W]` of the student's inputs, shallow to deep.
    #[module(skip)]
    student_shapes: Vec<[usize; 3]>,
    /// `[C, H, W]` of the teacher's maps the outputs match, shallow to deep.
    #[module(skip)]
    teacher_shapes: Vec<[usize; 3]>,
}

impl AuxModule for ReviewFusion {}

impl ReviewFusion {
    /// The fusion from student input shapes to teacher shapes (`[C, H, W]` each, shallow to
    /// deep, the same number), with `C_mid = min(max_mid_channels, C of the deepest student
    /// input)` (the reference: `min(512, in_channels[-1])`).
    pub fn new(student_shapes: &[[usize; 3]], teacher_shapes: &[[usize; 3]], max_mid_channels: usize, device: &Device) -> Result<Self> {
        if student_shapes.len() != teacher_shapes.len() || student_shapes.is_empty() {
            return Err(KdError::InvalidConfig(format!(
                "ReviewKD: the fusion needs as many student as teacher stages, at least one (got {} and {})",
                student_shapes.len(),
                teacher_shapes.len()
            )));
        }
        if let Some(bad) = student_shapes.iter().chain(teacher_shapes).find(|s| s.contains(&0)) {
            return Err(KdError::InvalidConfig(format!("ReviewKD: an empty stage shape {bad:?}")));
        }
        let mid = max_mid_channels.min(student_shapes[student_shapes.len() - 1][0]);
        let n = student_shapes.len();
        let abfs = (0..n).rev().map(|i| Abf::new(student_shapes[i][0], mid, teacher_shapes[i][0], i + 1 < n, device)).collect();
        Ok(ReviewFusion { abfs, student_shapes: student_shapes.to_vec(), teacher_shapes: teacher_shapes.to_vec() })
    }

    /// The student shapes it was built for, shallow to deep.
    pub fn student_shapes(&self) -> &[[usize; 3]] {
        &self.student_shapes
    }

    /// The teacher shapes its outputs have, shallow to deep.
    pub fn teacher_shapes(&self) -> &[[usize; 3]] {
        &self.teacher_shapes
    }

    /// The fused student maps, shallow to deep, each of its teacher stage's shape, from the
    /// student's inputs (shallow to deep, the shapes of the probe); an error names the stage
    /// whose shape differs from the probe's.
    pub fn forward(&self, student: Vec<Tensor<4>>) -> Result<Vec<Tensor<4>>> {
        if student.len() != self.student_shapes.len() {
            return Err(KdError::InvalidConfig(format!(
                "ReviewKD: the fusion was built for {} student stages, got {}",
                self.student_shapes.len(),
                student.len()
            )));
        }
        for (i, (x, want)) in student.iter().zip(&self.student_shapes).enumerate() {
            if feature_shape(x) != *want {
                return Err(KdError::ShapeMismatch {
                    what: format!("ReviewKD: student input {i} vs the probe batch's"),
                    expected: want.to_vec(),
                    actual: x.dims()[1..].to_vec(),
                });
            }
        }
        let mut results = Vec::with_capacity(student.len());
        let mut residual = None;
        for ((abf, x), t) in self.abfs.iter().zip(student.into_iter().rev()).zip(self.teacher_shapes.iter().rev()) {
            let (out, res) = abf.forward(x, residual, [t[1], t[2]])?;
            results.push(out);
            residual = Some(res);
        }
        results.reverse();
        Ok(results)
    }
}
