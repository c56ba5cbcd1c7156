//! VGG with BatchNorm as in RepDistiller (`models/vgg.py`): `vgg8` (cfg "S"), `vgg11` ("A"),
//! `vgg13` ("B"). The KD literature's `vgg8/11/13` are the `_bn` variants.
//!
//! Five blocks of 3x3 conv (with bias) + BN + ReLU; 2x2 max pooling after blocks 0-2, and after
//! block 3 only for inputs at least 64 pixels high (`vgg.py` pools there for `h == 64`); then
//! global average pooling and a linear `classifier` from 512.

use burn::module::Module;
use burn::nn::pool::MaxPool2d;
use burn::nn::{Linear, Relu};
use burn::tensor::{Device, Tensor};
use kd_core::{Classifier, KdError, ModelOutput, PreActivation, Result};

use crate::layers::{ConvInit, LinearInit, SeqLayer, bn, conv2d, global_pool, linear, max_pool2, relu, run_seq};
use crate::summary::Tracer;

/// Input height from which the pooling after block 3 is applied.
const POOL3_FROM_HEIGHT: usize = 64;

/// The convolution widths of each block for `vgg{depth}`.
fn config(depth: usize) -> Result<[&'static [usize]; 5]> {
    Ok(match depth {
        8 => [&[64], &[128], &[256], &[512], &[512]],
        11 => [&[64], &[128], &[256, 256], &[512, 512], &[512, 512]],
        13 => [&[64, 64], &[128, 128], &[256, 256], &[512, 512], &[512, 512]],
        _ => return Err(KdError::InvalidConfig(format!("vgg{depth}: the zoo has vgg8, vgg11 and vgg13"))),
    })
}

/// Whether the pooling after each block applies, for an input this high.
fn pools_after(input_height: usize) -> [bool; 4] {
    [true, true, true, input_height >= POOL3_FROM_HEIGHT]
}

/// Describes the VGG to the tracer.
pub(crate) fn trace(depth: usize, t: &mut Tracer, classes: usize) -> Result<()> {
    let cfg = config(depth)?;
    let pools = pools_after(t.shape[1]);
    for (i, widths) in cfg.iter().enumerate() {
        for &w in widths.iter() {
            t.conv(w, 3, 1, 1, 1, true)?;
            t.bn();
        }
        if pools.get(i).copied().unwrap_or(false) {
            t.max_pool2()?;
        }
    }
    t.global_pool();
    t.linear(classes);
    Ok(())
}

/// A CIFAR VGG with BatchNorm.
///
/// Features are the five block outputs after ReLU (before pooling), as `vgg.py`'s `feat` list;
/// the embedding is the globally pooled last block.
#[derive(Module, Debug)]
pub struct Vgg {
    /// Block 0, indexed like `vgg.py`'s Sequential (conv, bn, relu, conv, bn; the last ReLU is
    /// applied in `forward`).
    pub block0: Vec<SeqLayer>,
    /// Block 1.
    pub block1: Vec<SeqLayer>,
    /// Block 2.
    pub block2: Vec<SeqLayer>,
    /// Block 3.
    pub block3: Vec<SeqLayer>,
    /// Block 4.
    pub block4: Vec<SeqLayer>,
    /// 2x2 max pooling shared by the pooling points (it has no parameters).
    pub pool: MaxPool2d,
    /// Classifier.
    pub classifier: Linear,
    #[module(skip)]
    classes: usize,
}

impl Vgg {
    /// `vgg{depth}` (8, 11 or 13) with BN for `in_channels` input channels and `classes` outputs.
    pub fn new(depth: usize, in_channels: usize, classes: usize, device: &Device) -> Result<Self> {
        let cfg = config(depth)?;
        if in_channels == 0 || classes == 0 {
            return Err(KdError::InvalidConfig(format!(
                "vgg{depth}: sizes must be positive: input channels {in_channels}, classes {classes}"
            )));
        }
        let mut cin = in_channels;
        let mut blocks = cfg.map(|widths| {
            let mut layers = Vec::with_capacity(3 * widths.len());
            for &w in widths {
                layers.push(SeqLayer::Conv(conv2d(cin, w, 3, 1, 1, 1, true, ConvInit::FanOut, device)));
                layers.push(SeqLayer::Bn(bn(w, device)));
                layers.push(SeqLayer::Relu(Relu::new()));
                cin = w;
            }
            // `vgg.py` drops each block's last ReLU and applies it in forward.
            layers.pop();
            layers
        });
        let take = |b: &mut Vec<SeqLayer>| std::mem::take(b);
        Ok(Vgg {
            block0: take(&mut blocks[0]),
            block1: take(&mut blocks[1]),
            block2: take(&mut blocks[2]),
            block3: take(&mut blocks[3]),
            block4: take(&mut blocks[4]),
            pool: max_pool2(),
            classifier: linear(cin, classes, LinearInit::Small, device),
            classes,
        })
    }
}

impl Vgg {
    /// The forward pass; with `preact`, also blocks 1-4 before their ReLU and each block's last
    /// BN (mdistiller's `preact_feats[1:]` and `get_bn_before_relu`).
    fn run(&self, inputs: Tensor<4>, preact: bool) -> ModelOutput {
        let pools = pools_after(inputs.dims()[2]);
        let blocks = [&self.block0, &self.block1, &self.block2, &self.block3, &self.block4];
        let mut x = inputs;
        let mut features = Vec::with_capacity(5);
        let (mut pre, mut bns) = (Vec::new(), Vec::new());
        for (i, block) in blocks.into_iter().enumerate() {
            let z = run_seq(block, x);
            // Every block ends with its BN (`new` drops the ReLU after it).
            if let (true, Some(SeqLayer::Bn(bn))) = (preact && i > 0, block.last()) {
                pre.push(z.clone());
                bns.push((bn.gamma.val(), bn.beta.val()));
            }
            x = relu(z);
            features.push(x.clone());
            if pools.get(i).copied().unwrap_or(false) {
                x = self.pool.forward(x);
            }
        }
        let embedding = global_pool(x);
        let out = ModelOutput::new(self.classifier.forward(embedding.clone()), features, Some(embedding));
        if preact { out.with_preact(PreActivation { features: pre, bn_before_relu: bns }) } else { out }
    }
}

impl Classifier for Vgg {
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
    fn pools_like_the_original() {
        let device = Device::flex();
        let net = Vgg::new(8, 3, 10, &device).unwrap();
        let out = net.forward(Tensor::zeros([2, 3, 32, 32], &device));
        let shapes: Vec<_> = out.features.iter().map(|f| f.dims()).collect();
        // No pooling between blocks 3 and 4 at 32x32.
        assert_eq!(shapes, vec![[2, 64, 32, 32], [2, 128, 16, 16], [2, 256, 8, 8], [2, 512, 4, 4], [2, 512, 4, 4]]);
        let out = net.forward(Tensor::zeros([1, 3, 64, 64], &device));
        assert_eq!(out.features[4].dims(), [1, 512, 4, 4]);
        // Block layout: conv, bn, relu, conv, bn for two convolutions.
        let vgg13 = Vgg::new(13, 3, 10, &device).unwrap();
        assert_eq!(vgg13.block0.len(), 5);
        assert!(matches!(vgg13.block0[3], SeqLayer::Conv(_)));
    }
}
