//! CIFAR ResNets of RepDistiller / mdistiller (`models/resnet.py`): `resnet8` ... `resnet110`
//! (filters 16-16-32-64) and `resnet8x4`, `resnet32x4` (filters 32-64-128-256).
//!
//! A 3x3 stem, three stages of `(depth - 2) / 6` BasicBlocks (the last two stages start with
//! stride 2), global average pooling and `fc`. A block's shortcut is a 1x1 convolution + BN
//! (`downsample`) where the stride or the width changes.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::{Device, Tensor};
use kd_core::{Classifier, KdError, ModelOutput, PreActivation, Result};

use crate::layers::{ConvInit, LinearInit, batch_norm_forward, bn, conv1x1, conv2d_forward, conv3x3, global_pool, linear, relu};
use crate::summary::Tracer;

/// Filters of `resnet8` ... `resnet110`.
pub const FILTERS: [usize; 4] = [16, 16, 32, 64];
/// Filters of `resnet8x4`, `resnet32x4`.
pub const FILTERS_X4: [usize; 4] = [32, 64, 128, 256];

/// Blocks per stage of a BasicBlock ResNet of this depth.
fn blocks_per_stage(depth: usize) -> Result<usize> {
    if depth < 8 || !(depth - 2).is_multiple_of(6) {
        return Err(KdError::InvalidConfig(format!(
            "resnet{depth}: a CIFAR ResNet's depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...)"
        )));
    }
    Ok((depth - 2) / 6)
}

/// Describes the ResNet to the tracer.
pub(crate) fn trace(depth: usize, filters: [usize; 4], t: &mut Tracer, classes: usize) -> Result<()> {
    let n = blocks_per_stage(depth)?;
    t.conv(filters[0], 3, 1, 1, 1, false)?;
    t.bn();
    for (stage, &planes) in filters[1..].iter().enumerate() {
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let input = t.shape;
            t.conv(planes, 3, stride, 1, 1, false)?;
            t.bn();
            t.conv(planes, 3, 1, 1, 1, false)?;
            t.bn();
            if stride != 1 || input[0] != planes {
                let out = t.shape;
                t.shape = input;
                t.conv(planes, 1, stride, 0, 1, false)?;
                t.bn();
                t.shape = out;
            }
        }
    }
    t.global_pool();
    t.linear(classes);
    Ok(())
}

/// The residual block: two 3x3 conv-BN, ReLU between and after the sum.
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// First 3x3 convolution (carries the stride).
    pub conv1: Conv2d,
    /// BN after `conv1`.
    pub bn1: BatchNorm,
    /// Second 3x3 convolution.
    pub conv2: Conv2d,
    /// BN after `conv2`.
    pub bn2: BatchNorm,
    /// 1x1 convolution + BN on the shortcut where the shape changes (`downsample.0`, `downsample.1`).
    pub downsample: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(inplanes: usize, planes: usize, stride: usize, device: &Device) -> Self {
        let downsample =
            (stride != 1 || inplanes != planes).then(|| (conv1x1(inplanes, planes, stride, ConvInit::FanOut, device), bn(planes, device)));
        BasicBlock {
            conv1: conv3x3(inplanes, planes, stride, device),
            bn1: bn(planes, device),
            conv2: conv3x3(planes, planes, 1, device),
            bn2: bn(planes, device),
            downsample,
        }
    }

    /// The block's output (after the final ReLU).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_parts(x, false).0
    }

    /// The block's output and, when `keep_preact`, the sum before the final ReLU (mdistiller's
    /// `preact`).
    pub fn forward_parts(&self, x: Tensor<4>, keep_preact: bool) -> (Tensor<4>, Option<Tensor<4>>) {
        let residual = match &self.downsample {
            Some((conv, norm)) => batch_norm_forward(norm, conv2d_forward(conv, x.clone())),
            None => x.clone(),
        };
        let out = relu(batch_norm_forward(&self.bn1, conv2d_forward(&self.conv1, x)));
        let out = batch_norm_forward(&self.bn2, conv2d_forward(&self.conv2, out)) + residual;
        let preact = keep_preact.then(|| out.clone());
        (relu(out), preact)
    }
}

/// A CIFAR ResNet.
///
/// Features, as RepDistiller's `feat` list: the stem output and each stage's output, all after
/// ReLU. The embedding is the globally pooled last stage.
#[derive(Module, Debug)]
pub struct ResNet {
    /// Stem 3x3 convolution.
    pub conv1: Conv2d,
    /// Stem BN.
    pub bn1: BatchNorm,
    /// Stage 1 (stride 1).
    pub layer1: Vec<BasicBlock>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<BasicBlock>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<BasicBlock>,
    /// Classifier.
    pub fc: Linear,
    #[module(skip)]
    classes: usize,
}

impl ResNet {
    /// A ResNet of `depth` (6n+2) with stem/stage widths `filters`, for `in_channels` input
    /// channels and `classes` outputs.
    pub fn new(depth: usize, filters: [usize; 4], in_channels: usize, classes: usize, device: &Device) -> Result<Self> {
        let n = blocks_per_stage(depth)?;
        if in_channels == 0 || classes == 0 || filters.contains(&0) {
            return Err(KdError::InvalidConfig(format!(
                "resnet{depth}: sizes must be positive: input channels {in_channels}, filters {filters:?}, classes {classes}"
            )));
        }
        let mut inplanes = filters[0];
        let mut stage = |planes: usize, stride: usize| -> Vec<BasicBlock> {
            (0..n)
                .map(|i| {
                    let block = BasicBlock::new(inplanes, planes, if i == 0 { stride } else { 1 }, device);
                    inplanes = planes;
                    block
                })
                .collect()
        };
        let layer1 = stage(filters[1], 1);
        let layer2 = stage(filters[2], 2);
        let layer3 = stage(filters[3], 2);
        Ok(ResNet {
            conv1: crate::layers::conv2d(in_channels, filters[0], 3, 1, 1, 1, false, ConvInit::FanOut, device),
            bn1: bn(filters[0], device),
            layer1,
            layer2,
            layer3,
            fc: linear(filters[3], classes, LinearInit::Default, device),
            classes,
        })
    }
}

impl ResNet {
    /// The forward pass; with `preact`, also each stage's output before its last ReLU and that
    /// block's `bn2` (mdistiller's `preact_feats[1:]` and `get_bn_before_relu`).
    fn run(&self, inputs: Tensor<4>, preact: bool) -> ModelOutput {
        let mut x = relu(batch_norm_forward(&self.bn1, conv2d_forward(&self.conv1, inputs)));
        let mut features = vec![x.clone()];
        let (mut pre, mut bns) = (Vec::new(), Vec::new());
        for stage in [&self.layer1, &self.layer2, &self.layer3] {
            for (i, block) in stage.iter().enumerate() {
                let (out, p) = block.forward_parts(x, preact && i + 1 == stage.len());
                if let Some(p) = p {
                    pre.push(p);
                    bns.push((block.bn2.gamma.val(), block.bn2.beta.val()));
                }
                x = out;
            }
            features.push(x.clone());
        }
        let embedding = global_pool(x);
        let out = ModelOutput::new(self.fc.forward(embedding.clone()), features, Some(embedding));
        if preact { out.with_preact(PreActivation { features: pre, bn_before_relu: bns }) } else { out }
    }
}

impl Classifier for ResNet {
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
    fn feature_shapes_follow_the_stages() {
        let device = Device::flex();
        let net = ResNet::new(8, FILTERS_X4, 3, 5, &device).unwrap();
        let out = net.forward(Tensor::zeros([2, 3, 32, 32], &device));
        let shapes: Vec<_> = out.features.iter().map(|f| f.dims()).collect();
        assert_eq!(shapes, vec![[2, 32, 32, 32], [2, 64, 32, 32], [2, 128, 16, 16], [2, 256, 8, 8]]);
        assert_eq!(out.embedding("test").unwrap().dims(), [2, 256]);
        assert_eq!(out.logits.dims(), [2, 5]);
        // resnet8x4 widens in stage 1, so its first block has a projection shortcut.
        assert!(net.layer1[0].downsample.is_some());
        let plain = ResNet::new(8, FILTERS, 3, 5, &device).unwrap();
        assert!(plain.layer1[0].downsample.is_none());
    }

    #[test]
    fn refuses_bad_depth() {
        let device = Device::flex();
        assert!(ResNet::new(10, FILTERS, 3, 10, &device).is_err());
        assert!(ResNet::new(2, FILTERS, 3, 10, &device).is_err());
    }
}
