//! ShuffleNetV2 for CIFAR as in RepDistiller (`models/ShuffleNetv2.py`, `ShuffleV2` = net size 1).
//!
//! A 1x1 stem to 24 channels (no stride, no pooling: the CIFAR adaptation), three stages of one
//! down-sampling unit and 3, 7, 3 basic units (116, 232, 464 channels), a 1x1 conv to 1024,
//! global average pooling and `linear`.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::{Device, Tensor};
use kd_core::{Classifier, KdError, ModelOutput, Result};

use crate::layers::{ConvInit, LinearInit, batch_norm_forward, bn, conv1x1, conv2d, conv2d_forward, global_pool, linear, relu};
use crate::summary::Tracer;

/// Stage widths and the last conv's width of net size 1.
const OUT_CHANNELS: [usize; 4] = [116, 232, 464, 1024];
/// Basic units per stage (after the down-sampling unit).
const NUM_BLOCKS: [usize; 3] = [3, 7, 3];
/// Stem width.
const STEM: usize = 24;

/// Describes the network to the tracer.
pub(crate) fn trace(t: &mut Tracer, classes: usize) -> Result<()> {
    t.conv(STEM, 1, 1, 0, 1, false)?;
    t.bn();
    for (&out, &n) in OUT_CHANNELS.iter().zip(NUM_BLOCKS.iter()) {
        let input = t.shape;
        let cin = input[0];
        let mid = out / 2;
        // Left branch: depthwise stride 2, then pointwise.
        t.conv(cin, 3, 2, 1, cin, false)?;
        t.bn();
        t.conv(mid, 1, 1, 0, 1, false)?;
        t.bn();
        // Right branch: pointwise, depthwise stride 2, pointwise.
        t.shape = input;
        t.conv(mid, 1, 1, 0, 1, false)?;
        t.bn();
        t.conv(mid, 3, 2, 1, mid, false)?;
        t.bn();
        t.conv(mid, 1, 1, 0, 1, false)?;
        t.bn();
        t.shape[0] = out;
        for _ in 0..n {
            // Only the second half of the channels goes through the branch.
            let half = out / 2;
            t.shape[0] = half;
            t.conv(half, 1, 1, 0, 1, false)?;
            t.bn();
            t.conv(half, 3, 1, 1, half, false)?;
            t.bn();
            t.conv(half, 1, 1, 0, 1, false)?;
            t.bn();
            t.shape[0] = out;
        }
    }
    t.conv(OUT_CHANNELS[3], 1, 1, 0, 1, false)?;
    t.bn();
    t.global_pool();
    t.linear(classes);
    Ok(())
}

/// `[N, C, H, W] -> [N, g, C/g, H, W] -> swap -> [N, C, H, W]` with g = 2.
fn channel_shuffle(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let grouped: Tensor<5> = x.reshape([n, 2, c / 2, h, w]);
    grouped.swap_dims(1, 2).reshape([n, c, h, w])
}

/// The basic unit: split the channels in two, transform the second half
/// (1x1, depthwise 3x3, 1x1), concatenate and shuffle.
#[derive(Module, Debug)]
pub struct ShuffleBlock {
    /// Pointwise.
    pub conv1: Conv2d,
    /// BN after `conv1`.
    pub bn1: BatchNorm,
    /// Depthwise 3x3.
    pub conv2: Conv2d,
    /// BN after `conv2`.
    pub bn2: BatchNorm,
    /// Pointwise.
    pub conv3: Conv2d,
    /// BN after `conv3`.
    pub bn3: BatchNorm,
}

impl ShuffleBlock {
    fn new(channels: usize, device: &Device) -> Self {
        let c = channels / 2;
        ShuffleBlock {
            conv1: conv1x1(c, c, 1, ConvInit::Default, device),
            bn1: bn(c, device),
            conv2: conv2d(c, c, 3, 1, 1, c, false, ConvInit::Default, device),
            bn2: bn(c, device),
            conv3: conv1x1(c, c, 1, ConvInit::Default, device),
            bn3: bn(c, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let c = x.dims()[1];
        let keep = c / 2;
        let x1 = x.clone().narrow(1, 0, keep);
        let x2 = x.narrow(1, keep, c - keep);
        let out = relu(batch_norm_forward(&self.bn1, conv2d_forward(&self.conv1, x2)));
        let out = batch_norm_forward(&self.bn2, conv2d_forward(&self.conv2, out));
        let out = relu(batch_norm_forward(&self.bn3, conv2d_forward(&self.conv3, out)));
        channel_shuffle(Tensor::cat(vec![x1, out], 1))
    }
}

/// The down-sampling unit: two stride-2 branches on the whole input, concatenated and shuffled.
#[derive(Module, Debug)]
pub struct DownBlock {
    /// Left: depthwise 3x3, stride 2.
    pub conv1: Conv2d,
    /// BN after `conv1`.
    pub bn1: BatchNorm,
    /// Left: pointwise.
    pub conv2: Conv2d,
    /// BN after `conv2`.
    pub bn2: BatchNorm,
    /// Right: pointwise.
    pub conv3: Conv2d,
    /// BN after `conv3`.
    pub bn3: BatchNorm,
    /// Right: depthwise 3x3, stride 2.
    pub conv4: Conv2d,
    /// BN after `conv4`.
    pub bn4: BatchNorm,
    /// Right: pointwise.
    pub conv5: Conv2d,
    /// BN after `conv5`.
    pub bn5: BatchNorm,
}

impl DownBlock {
    fn new(cin: usize, cout: usize, device: &Device) -> Self {
        let mid = cout / 2;
        DownBlock {
            conv1: conv2d(cin, cin, 3, 2, 1, cin, false, ConvInit::Default, device),
            bn1: bn(cin, device),
            conv2: conv1x1(cin, mid, 1, ConvInit::Default, device),
            bn2: bn(mid, device),
            conv3: conv1x1(cin, mid, 1, ConvInit::Default, device),
            bn3: bn(mid, device),
            conv4: conv2d(mid, mid, 3, 2, 1, mid, false, ConvInit::Default, device),
            bn4: bn(mid, device),
            conv5: conv1x1(mid, mid, 1, ConvInit::Default, device),
            bn5: bn(mid, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let left = batch_norm_forward(&self.bn1, conv2d_forward(&self.conv1, x.clone()));
        let left = relu(batch_norm_forward(&self.bn2, conv2d_forward(&self.conv2, left)));
        let right = relu(batch_norm_forward(&self.bn3, conv2d_forward(&self.conv3, x)));
        let right = batch_norm_forward(&self.bn4, conv2d_forward(&self.conv4, right));
        let right = relu(batch_norm_forward(&self.bn5, conv2d_forward(&self.conv5, right)));
        channel_shuffle(Tensor::cat(vec![left, right], 1))
    }
}

/// One unit of a stage: element 0 of each stage is a [`DownBlock`], the rest are
/// [`ShuffleBlock`]s (one enum so that the stage is a single list indexed like the Sequential).
// Only 3 of a network's 16 units are the larger variant; boxing is not worth it for module state.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ShuffleUnit {
    /// The down-sampling unit.
    Down(DownBlock),
    /// A basic unit.
    Basic(ShuffleBlock),
}

impl ShuffleUnit {
    /// Applies the unit.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            ShuffleUnit::Down(b) => b.forward(x),
            ShuffleUnit::Basic(b) => b.forward(x),
        }
    }
}

/// ShuffleNetV2 (net size 1).
///
/// Features, as RepDistiller's `feat` list: the stem output and each stage's output (after ReLU
/// and shuffle). The embedding is the globally pooled output of the last 1x1 conv (1024).
#[derive(Module, Debug)]
pub struct ShuffleNetV2 {
    /// Stem 1x1 convolution.
    pub conv1: Conv2d,
    /// Stem BN.
    pub bn1: BatchNorm,
    /// Stage 1.
    pub layer1: Vec<ShuffleUnit>,
    /// Stage 2.
    pub layer2: Vec<ShuffleUnit>,
    /// Stage 3.
    pub layer3: Vec<ShuffleUnit>,
    /// Last 1x1 convolution.
    pub conv2: Conv2d,
    /// BN after `conv2`.
    pub bn2: BatchNorm,
    /// Classifier.
    pub linear: Linear,
    #[module(skip)]
    classes: usize,
}

impl ShuffleNetV2 {
    /// ShuffleNetV2 for `in_channels` input channels and `classes` outputs.
    pub fn new(in_channels: usize, classes: usize, device: &Device) -> Result<Self> {
        if in_channels == 0 || classes == 0 {
            return Err(KdError::InvalidConfig(format!(
                "shufflenetv2: sizes must be positive: input channels {in_channels}, classes {classes}"
            )));
        }
        let mut cin = STEM;
        let mut stage = |cout: usize, n: usize| {
            let mut units = vec![ShuffleUnit::Down(DownBlock::new(cin, cout, device))];
            units.extend((0..n).map(|_| ShuffleUnit::Basic(ShuffleBlock::new(cout, device))));
            cin = cout;
            units
        };
        let layer1 = stage(OUT_CHANNELS[0], NUM_BLOCKS[0]);
        let layer2 = stage(OUT_CHANNELS[1], NUM_BLOCKS[1]);
        let layer3 = stage(OUT_CHANNELS[2], NUM_BLOCKS[2]);
        Ok(ShuffleNetV2 {
            conv1: conv1x1(in_channels, STEM, 1, ConvInit::Default, device),
            bn1: bn(STEM, device),
            layer1,
            layer2,
            layer3,
            conv2: conv1x1(OUT_CHANNELS[2], OUT_CHANNELS[3], 1, ConvInit::Default, device),
            bn2: bn(OUT_CHANNELS[3], device),
            linear: linear(OUT_CHANNELS[3], classes, LinearInit::Default, device),
            classes,
        })
    }
}

impl Classifier for ShuffleNetV2 {
    fn forward(&self, inputs: Tensor<4>) -> ModelOutput {
        let mut x = relu(batch_norm_forward(&self.bn1, conv2d_forward(&self.conv1, inputs)));
        let mut features = vec![x.clone()];
        for stage in [&self.layer1, &self.layer2, &self.layer3] {
            for unit in stage {
                x = unit.forward(x);
            }
            features.push(x.clone());
        }
        let x = relu(batch_norm_forward(&self.bn2, conv2d_forward(&self.conv2, x)));
        let embedding = global_pool(x);
        ModelOutput::new(self.linear.forward(embedding.clone()), features, Some(embedding))
    }

    fn num_classes(&self) -> usize {
        self.classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn shuffle_interleaves_the_two_halves() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new((0..6).map(|v| v as f32).collect::<Vec<_>>(), [1, 6, 1, 1]), &device);
        let y: Vec<f32> = channel_shuffle(x).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(y, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn feature_shapes() {
        let device = Device::flex();
        let net = ShuffleNetV2::new(1, 10, &device).unwrap();
        let out = net.forward(Tensor::zeros([2, 1, 28, 28], &device));
        let shapes: Vec<_> = out.features.iter().map(|f| f.dims()).collect();
        assert_eq!(shapes, vec![[2, 24, 28, 28], [2, 116, 14, 14], [2, 232, 7, 7], [2, 464, 4, 4]]);
        assert_eq!(out.embedding("test").unwrap().dims(), [2, 1024]);
    }
}
