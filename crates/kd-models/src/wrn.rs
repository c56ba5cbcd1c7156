//! Wide ResNets `wrn-D-W` of RepDistiller (`models/wrn.py`, Zagoruyko & Komodakis 2016).
//!
//! A 3x3 stem, three `NetworkBlock`s of `(D - 4) / 6` pre-activation blocks with widths
//! 16W, 32W, 64W (strides 1, 2, 2), a final BN + ReLU, global average pooling and `fc`.
//! Dropout is 0 in every KD configuration, so it is left out.

// `convShortcut` keeps `wrn.py`'s field name so checkpoint keys match; the Module derive also
// binds locals of that name, hence a module-wide allowance rather than one on the field.
#![allow(non_snake_case)]

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::{Device, Tensor};
use kd_core::{Classifier, KdError, ModelOutput, PreActivation, Result};

use crate::layers::{ConvInit, LinearInit, batch_norm_forward, bn, conv1x1, conv2d_forward, conv3x3, global_pool, linear, relu};
use crate::summary::Tracer;

/// Blocks per group of a WRN of this depth, after checking the width.
fn blocks_per_group(depth: usize, width: usize) -> Result<usize> {
    if depth < 10 || !(depth - 4).is_multiple_of(6) || width == 0 {
        return Err(KdError::InvalidConfig(format!(
            "wrn-{depth}-{width}: the depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...) and the width positive"
        )));
    }
    Ok((depth - 4) / 6)
}

fn widths(width: usize) -> [usize; 4] {
    [16, 16 * width, 32 * width, 64 * width]
}

/// Describes the WRN to the tracer.
pub(crate) fn trace(depth: usize, width: usize, t: &mut Tracer, classes: usize) -> Result<()> {
    let n = blocks_per_group(depth, width)?;
    let ch = widths(width);
    t.conv(ch[0], 3, 1, 1, 1, false)?;
    for group in 0..3 {
        for i in 0..n {
            let stride = if group > 0 && i == 0 { 2 } else { 1 };
            let input = t.shape;
            let out = ch[group + 1];
            t.bn();
            t.conv(out, 3, stride, 1, 1, false)?;
            t.bn();
            t.conv(out, 3, 1, 1, 1, false)?;
            if input[0] != out {
                let after = t.shape;
                t.shape = input;
                t.conv(out, 1, stride, 0, 1, false)?;
                t.shape = after;
            }
        }
    }
    t.bn();
    t.global_pool();
    t.linear(classes);
    Ok(())
}

/// A pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut.
///
/// The field names are those of `wrn.py`, `convShortcut` included, so checkpoints load without
/// renaming.
#[derive(Module, Debug)]
pub struct WrnBlock {
    /// BN before `conv1`.
    pub bn1: BatchNorm,
    /// First 3x3 convolution (carries the stride).
    pub conv1: Conv2d,
    /// BN before `conv2`.
    pub bn2: BatchNorm,
    /// Second 3x3 convolution.
    pub conv2: Conv2d,
    /// 1x1 projection of the activated input where the width changes.
    pub convShortcut: Option<Conv2d>,
}

impl WrnBlock {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        WrnBlock {
            bn1: bn(cin, device),
            conv1: conv3x3(cin, cout, stride, device),
            bn2: bn(cout, device),
            conv2: conv3x3(cout, cout, 1, device),
            convShortcut: (cin != cout).then(|| conv1x1(cin, cout, stride, ConvInit::FanOut, device)),
        }
    }

    /// The block's output and its input activation `relu(bn1(x))`.
    ///
    /// The activation is returned because it is the network's "after activation" view of the
    /// previous stage (what `wrn.py` exposes as the pre-activation feature, plus the ReLU).
    pub fn forward_with_activation(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (out, act, _) = self.forward_parts(x, false);
        (out, act)
    }

    /// [`WrnBlock::forward_with_activation`] plus, when `keep_preact`, `bn1(x)` before its ReLU
    /// (mdistiller's `f1_pre`, `f2_pre`).
    pub fn forward_parts(&self, x: Tensor<4>, keep_preact: bool) -> (Tensor<4>, Tensor<4>, Option<Tensor<4>>) {
        let pre = batch_norm_forward(&self.bn1, x.clone());
        let kept = keep_preact.then(|| pre.clone());
        let act = relu(pre);
        let out = relu(batch_norm_forward(&self.bn2, conv2d_forward(&self.conv1, act.clone())));
        let out = conv2d_forward(&self.conv2, out);
        // With equal widths the identity shortcut takes the raw input; otherwise the projection
        // reads the activated one, as in the original.
        let shortcut = match &self.convShortcut {
            Some(conv) => conv2d_forward(conv, act.clone()),
            None => x,
        };
        (out + shortcut, act, kept)
    }
}

/// A group of blocks (`NetworkBlock` in `wrn.py`; its Sequential is the field `layer`).
#[derive(Module, Debug)]
pub struct NetworkBlock {
    /// The blocks.
    pub layer: Vec<WrnBlock>,
}

/// A Wide ResNet.
///
/// Features are the activated stage boundaries: `relu(bn1(.))` of the stem output and of the
/// first two groups' outputs (computed by the next group's first block), and `relu(bn1(.))` of the
/// last group. These are the points `wrn.py` exposes with `preact=True`, after their ReLU. The
/// embedding is the globally pooled final activation.
#[derive(Module, Debug)]
pub struct WideResNet {
    /// Stem 3x3 convolution.
    pub conv1: Conv2d,
    /// Group 1 (stride 1).
    pub block1: NetworkBlock,
    /// Group 2 (stride 2).
    pub block2: NetworkBlock,
    /// Group 3 (stride 2).
    pub block3: NetworkBlock,
    /// Final BN before the ReLU and pooling.
    pub bn1: BatchNorm,
    /// Classifier.
    pub fc: Linear,
    #[module(skip)]
    classes: usize,
}

impl WideResNet {
    /// `wrn-{depth}-{width}` for `in_channels` input channels and `classes` outputs.
    pub fn new(depth: usize, width: usize, in_channels: usize, classes: usize, device: &Device) -> Result<Self> {
        let n = blocks_per_group(depth, width)?;
        if in_channels == 0 || classes == 0 {
            return Err(KdError::InvalidConfig(format!(
                "wrn-{depth}-{width}: sizes must be positive: input channels {in_channels}, classes {classes}"
            )));
        }
        let ch = widths(width);
        let group = |cin: usize, cout: usize, stride: usize| NetworkBlock {
            layer: (0..n)
                .map(|i| if i == 0 { WrnBlock::new(cin, cout, stride, device) } else { WrnBlock::new(cout, cout, 1, device) })
                .collect(),
        };
        Ok(WideResNet {
            conv1: crate::layers::conv2d(in_channels, ch[0], 3, 1, 1, 1, false, ConvInit::FanOut, device),
            block1: group(ch[0], ch[1], 1),
            block2: group(ch[1], ch[2], 2),
            block3: group(ch[2], ch[3], 2),
            bn1: bn(ch[3], device),
            fc: linear(ch[3], classes, LinearInit::ZeroBias, device),
            classes,
        })
    }
}

impl WideResNet {
    /// The forward pass; with `preact`, also the stage outputs after their BN and before its
    /// ReLU (the second and third groups' first `bn1`, and the final `bn1`), with those BNs
    /// (mdistiller's `preact_feats[1:]` and `get_bn_before_relu`).
    fn run(&self, inputs: Tensor<4>, preact: bool) -> ModelOutput {
        let mut x = conv2d_forward(&self.conv1, inputs);
        let mut features = Vec::with_capacity(4);
        let (mut pre, mut bns) = (Vec::new(), Vec::new());
        for (g, group) in [&self.block1, &self.block2, &self.block3].into_iter().enumerate() {
            for (i, block) in group.layer.iter().enumerate() {
                let (out, act, p) = block.forward_parts(x, preact && g > 0 && i == 0);
                if i == 0 {
                    features.push(act);
                }
                if let Some(p) = p {
                    pre.push(p);
                    bns.push((block.bn1.gamma.val(), block.bn1.beta.val()));
                }
                x = out;
            }
        }
        let last = batch_norm_forward(&self.bn1, x);
        if preact {
            pre.push(last.clone());
            bns.push((self.bn1.gamma.val(), self.bn1.beta.val()));
        }
        let x = relu(last);
        features.push(x.clone());
        let embedding = global_pool(x);
        let out = ModelOutput::new(self.fc.forward(embedding.clone()), features, Some(embedding));
        if preact { out.with_preact(PreActivation { features: pre, bn_before_relu: bns }) } else { out }
    }
}

impl Classifier for WideResNet {
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
    fn feature_shapes_and_shortcuts() {
        let device = Device::flex();
        let net = WideResNet::new(16, 2, 3, 4, &device).unwrap();
        let out = net.forward(Tensor::zeros([2, 3, 32, 32], &device));
        let shapes: Vec<_> = out.features.iter().map(|f| f.dims()).collect();
        assert_eq!(shapes, vec![[2, 16, 32, 32], [2, 32, 32, 32], [2, 64, 16, 16], [2, 128, 8, 8]]);
        assert_eq!(out.embedding("test").unwrap().dims(), [2, 128]);
        assert!(net.block1.layer[0].convShortcut.is_some());
        assert!(net.block1.layer[1].convShortcut.is_none());
        // Width 1: the first group keeps 16 channels and needs no projection.
        let thin = WideResNet::new(10, 1, 3, 4, &device).unwrap();
        assert!(thin.block1.layer[0].convShortcut.is_none());
    }

    #[test]
    fn refuses_bad_depth() {
        assert!(WideResNet::new(12, 2, 3, 10, &Device::flex()).is_err());
        assert!(WideResNet::new(16, 0, 3, 10, &Device::flex()).is_err());
    }
}
