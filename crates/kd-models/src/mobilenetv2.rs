//! MobileNetV2 for CIFAR as in RepDistiller / mdistiller (`models/mobilenetv2.py`), in the
//! configuration the KD literature calls `MobileNetV2` (`mobile_half`: expansion 6, width 0.5).
//!
//! A stride-2 3x3 stem, seven groups of inverted residual blocks, a 1x1 conv to 1280 channels,
//! global average pooling and a linear `classifier`.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, Relu};
use burn::tensor::{Device, Tensor};
use kd_core::{Classifier, KdError, ModelOutput, PreActivation, Result};

use crate::layers::{ConvInit, LinearInit, batch_norm_forward, bn, conv1x1, conv2d, conv2d_forward, global_pool, linear, relu};
use crate::summary::Tracer;

/// Expansion ratio of `mobile_half`.
pub const EXPANSION: usize = 6;
/// Width multiplier of `mobile_half`, as numerator / denominator.
const WIDTH: (usize, usize) = (1, 2);
/// Width of the last 1x1 convolution (not scaled for width multipliers up to 1).
const LAST_CHANNELS: usize = 1280;

/// `(expansion, channels, blocks, first stride)` of each group, before the width multiplier.
/// The first group always has expansion 1.
fn setting(t: usize) -> [(usize, usize, usize, usize); 7] {
    [(1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2), (t, 96, 3, 1), (t, 160, 3, 2), (t, 320, 1, 1)]
}

/// `int(c * width_mult)`.
fn scaled(c: usize) -> usize {
    c * WIDTH.0 / WIDTH.1
}

/// Groups after which a feature is taken (as `mobilenetv2.py`'s `f1`..`f4`).
const FEATURE_GROUPS: [usize; 4] = [1, 2, 4, 6];

/// Describes the network to the tracer.
pub(crate) fn trace(t: &mut Tracer, classes: usize) -> Result<()> {
    t.conv(scaled(32), 3, 2, 1, 1, false)?;
    t.bn();
    for (e, c, n, s) in setting(EXPANSION) {
        for i in 0..n {
            let hidden = t.channels() * e;
            t.conv(hidden, 1, 1, 0, 1, false)?;
            t.bn();
            t.conv(hidden, 3, if i == 0 { s } else { 1 }, 1, hidden, false)?;
            t.bn();
            t.conv(scaled(c), 1, 1, 0, 1, false)?;
            t.bn();
        }
    }
    t.conv(LAST_CHANNELS, 1, 1, 0, 1, false)?;
    t.bn();
    t.global_pool();
    t.linear(classes);
    Ok(())
}

/// The 8 layers of an inverted residual block, at the indices of `mobilenetv2.py`'s `conv`
/// Sequential: pointwise expansion (0-2), depthwise 3x3 (3-5), linear pointwise projection (6-7).
pub type InvertedResidualLayers = (Conv2d, BatchNorm, Relu, Conv2d, BatchNorm, Relu, Conv2d, BatchNorm);

/// An inverted residual block (with an identity shortcut when stride 1 keeps the width).
#[derive(Module, Debug)]
pub struct InvertedResidual {
    /// The block's layers.
    pub conv: InvertedResidualLayers,
    #[module(skip)]
    use_res_connect: bool,
}

impl InvertedResidual {
    fn new(inp: usize, oup: usize, stride: usize, expansion: usize, device: &Device) -> Self {
        let hidden = inp * expansion;
        InvertedResidual {
            conv: (
                conv1x1(inp, hidden, 1, ConvInit::FanOut, device),
                bn(hidden, device),
                Relu::new(),
                conv2d(hidden, hidden, 3, stride, 1, hidden, false, ConvInit::FanOut, device),
                bn(hidden, device),
                Relu::new(),
                conv1x1(hidden, oup, 1, ConvInit::FanOut, device),
                bn(oup, device),
            ),
            use_res_connect: stride == 1 && inp == oup,
        }
    }

    /// The block's output (linear: no activation after the projection).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let (c0, b1, _, c3, b4, _, c6, b7) = &self.conv;
        let out = relu(batch_norm_forward(b1, conv2d_forward(c0, x.clone())));
        let out = relu(batch_norm_forward(b4, conv2d_forward(c3, out)));
        let out = batch_norm_forward(b7, conv2d_forward(c6, out));
        if self.use_res_connect { x + out } else { out }
    }
}

/// MobileNetV2 (`mobile_half`).
///
/// Features, as RepDistiller's `feat` list: the stem output (after ReLU) and the outputs of
/// groups 1, 2, 4 and 6. Those group outputs are linear bottlenecks: the architecture has no
/// activation there. The embedding is the globally pooled output of the last 1x1 conv (1280).
#[derive(Module, Debug)]
pub struct MobileNetV2 {
    /// Stem: stride-2 3x3 conv, BN, ReLU (`conv1.0`, `conv1.1`).
    pub conv1: (Conv2d, BatchNorm, Relu),
    /// Seven groups of inverted residual blocks.
    pub blocks: Vec<Vec<InvertedResidual>>,
    /// Last 1x1 conv, BN, ReLU (`conv2.0`, `conv2.1`).
    pub conv2: (Conv2d, BatchNorm, Relu),
    /// Classifier (`classifier.0`).
    pub classifier: Vec<Linear>,
    #[module(skip)]
    classes: usize,
}

impl MobileNetV2 {
    /// `mobile_half` for `in_channels` input channels and `classes` outputs.
    pub fn new(in_channels: usize, classes: usize, device: &Device) -> Result<Self> {
        if in_channels == 0 || classes == 0 {
            return Err(KdError::InvalidConfig(format!(
                "mobilenetv2: sizes must be positive: input channels {in_channels}, classes {classes}"
            )));
        }
        let mut cin = scaled(32);
        let conv1 = (conv2d(in_channels, cin, 3, 2, 1, 1, false, ConvInit::FanOut, device), bn(cin, device), Relu::new());
        let mut blocks = Vec::with_capacity(7);
        for (e, c, n, s) in setting(EXPANSION) {
            let cout = scaled(c);
            let group = (0..n)
                .map(|i| {
                    let block = InvertedResidual::new(cin, cout, if i == 0 { s } else { 1 }, e, device);
                    cin = cout;
                    block
                })
                .collect();
            blocks.push(group);
        }
        let conv2 = (conv1x1(cin, LAST_CHANNELS, 1, ConvInit::FanOut, device), bn(LAST_CHANNELS, device), Relu::new());
        Ok(MobileNetV2 { conv1, blocks, conv2, classifier: vec![linear(LAST_CHANNELS, classes, LinearInit::Small, device)], classes })
    }
}

impl MobileNetV2 {
    /// The forward pass; with `preact`, also the feature groups' outputs (linear bottlenecks: they
    /// are the features themselves) and each group's last projection BN (`conv.7`, mdistiller's
    /// `get_bn_before_relu`).
    fn run(&self, inputs: Tensor<4>, preact: bool) -> ModelOutput {
        let (c, b, _) = &self.conv1;
        let mut x = relu(batch_norm_forward(b, conv2d_forward(c, inputs)));
        let mut features = vec![x.clone()];
        let mut bns = Vec::new();
        for (g, group) in self.blocks.iter().enumerate() {
            for block in group {
                x = block.forward(x);
            }
            if FEATURE_GROUPS.contains(&g) {
                features.push(x.clone());
                if let (true, Some(last)) = (preact, group.last()) {
                    bns.push((last.conv.7.gamma.val(), last.conv.7.beta.val()));
                }
            }
        }
        let (c, b, _) = &self.conv2;
        let x = relu(batch_norm_forward(b, conv2d_forward(c, x)));
        let embedding = global_pool(x);
        // `classifier` always holds exactly one layer (built in `new`).
        let logits = self.classifier.iter().fold(embedding.clone(), |z, l| l.forward(z));
        let pre = if preact { features[1..].to_vec() } else { Vec::new() };
        let out = ModelOutput::new(logits, features, Some(embedding));
        if preact { out.with_preact(PreActivation { features: pre, bn_before_relu: bns }) } else { out }
    }
}

impl Classifier for MobileNetV2 {
    fn forward(&self, inputs: Tensor<4>) -> ModelOutput {
        self.run(inputs, false)
    }

    fn forward_preact(&self, inputs: Tensor<4>) -> Result<ModelOutput> {
        Ok(self.run(inputs, true))
    }

    fn num_classes(&self) -> usize {
        self.classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_shapes() {
        let device = Device::flex();
        let net = MobileNetV2::new(3, 10, &device).unwrap();
        let out = net.forward(Tensor::zeros([2, 3, 32, 32], &device));
        let shapes: Vec<_> = out.features.iter().map(|f| f.dims()).collect();
        assert_eq!(shapes, vec![[2, 16, 16, 16], [2, 12, 16, 16], [2, 16, 8, 8], [2, 48, 4, 4], [2, 160, 2, 2]]);
        assert_eq!(out.embedding("test").unwrap().dims(), [2, 1280]);
        // The first group has expansion 1 but keeps its pointwise layer, as the original.
        assert_eq!(net.blocks[0][0].conv.0.weight.dims(), [16, 16, 1, 1]);
        assert!(net.blocks[1][1].use_res_connect && !net.blocks[1][0].use_res_connect);
    }
}
