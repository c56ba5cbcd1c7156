//! The plain CNNs of TAKD (Mirzadeh et al., AAAI 2020): `plane2` ... `plane10`.
//!
//! Conv = 3x3 convolution (padding 1, with bias) + BN + ReLU, MP = 2x2 max pooling, then fully
//! connected layers with ReLU between them. Channel widths follow TAKD's CIFAR-100 book. The first
//! FC layer's input size is computed from the input shape at build time (TAKD hard-codes 32x32).

use burn::module::Module;
use burn::nn::Relu;
use burn::tensor::{Device, Tensor};
use kd_core::{Classifier, KdError, ModelOutput, PreActivation, Result};

use crate::layers::{ConvInit, FcLayer, LinearInit, SeqLayer, bn, conv2d, linear, max_pool2, relu};
use crate::summary::Tracer;

/// One entry of a TAKD layer book.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Conv-BN-ReLU with this many filters.
    C(usize),
    /// 2x2 max pooling.
    M,
}

use Op::{C, M};

/// TAKD's `plane_cifar100_book`: convolution layers and hidden FC widths (the classifier follows).
fn book(depth: usize) -> Option<(&'static [Op], &'static [usize])> {
    Some(match depth {
        2 => (&[C(32), M, C(32), M], &[]),
        4 => (&[C(32), C(32), M, C(64), C(64), M], &[]),
        // No pooling after the last pair: a quirk of the original book, kept.
        6 => (&[C(32), C(32), M, C(64), C(64), M, C(128), C(128)], &[]),
        8 => (&[C(32), C(32), M, C(64), C(64), M, C(128), C(128), M, C(256), C(256), M], &[64]),
        10 => (&[C(32), C(32), M, C(64), C(64), M, C(128), C(128), M, C(256), C(256), C(256), C(256), M], &[512]),
        _ => return None,
    })
}

/// The depths TAKD defines.
pub const PLANE_DEPTHS: [usize; 5] = [2, 4, 6, 8, 10];

fn unknown(depth: usize) -> KdError {
    KdError::InvalidConfig(format!("plane{depth}: TAKD defines plain CNNs of depth 2, 4, 6, 8 and 10 only"))
}

/// Describes `plane{depth}` to the tracer.
pub(crate) fn trace(depth: usize, t: &mut Tracer, classes: usize) -> Result<()> {
    let (ops, hidden) = book(depth).ok_or_else(|| unknown(depth))?;
    for op in ops {
        match *op {
            C(f) => {
                t.conv(f, 3, 1, 1, 1, true)?;
                t.bn();
            }
            M => t.max_pool2()?,
        }
    }
    for &width in hidden {
        t.linear(width);
    }
    t.linear(classes);
    Ok(())
}

/// A TAKD plain CNN.
///
/// Features are the activations before each max pooling, plus the last convolution's output where
/// no pooling follows it (`plane6`). The embedding is the input of the final classifier layer: the
/// flattened convolution output, or the last hidden FC activation (`plane8`, `plane10`).
#[derive(Module, Debug)]
pub struct PlaneCnn {
    /// Conv-BN-ReLU and max-pool layers, indexed like TAKD's `conv_layers` Sequential.
    pub conv_layers: Vec<SeqLayer>,
    /// Linear and ReLU layers, indexed like TAKD's `fc_layers` Sequential.
    pub fc_layers: Vec<FcLayer>,
    /// Indices into `conv_layers` whose outputs are features.
    #[module(skip)]
    taps: Vec<usize>,
    #[module(skip)]
    classes: usize,
}

impl PlaneCnn {
    /// `plane{depth}` for inputs `[channels, height, width]` and `classes` outputs.
    pub fn new(depth: usize, input: [usize; 3], classes: usize, device: &Device) -> Result<Self> {
        let (ops, hidden) = book(depth).ok_or_else(|| unknown(depth))?;
        if classes == 0 {
            return Err(KdError::InvalidConfig(format!("plane{depth}: the number of classes must be positive")));
        }
        // The trace refuses inputs too small for the poolings before any layer is built.
        trace(depth, &mut Tracer::new(&format!("plane{depth}"), input)?, classes)?;

        let [mut c, mut h, mut w] = input;
        let mut conv_layers = Vec::new();
        let mut taps = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                C(f) => {
                    conv_layers.push(SeqLayer::Conv(conv2d(c, f, 3, 1, 1, 1, true, ConvInit::Default, device)));
                    conv_layers.push(SeqLayer::Bn(bn(f, device)));
                    conv_layers.push(SeqLayer::Relu(Relu::new()));
                    c = f;
                    // A stage ends where a pooling follows, or at the last convolution.
                    if matches!(ops.get(i + 1), Some(M) | None) {
                        taps.push(conv_layers.len() - 1);
                    }
                }
                M => {
                    conv_layers.push(SeqLayer::MaxPool(max_pool2()));
                    h /= 2;
                    w /= 2;
                }
            }
        }

        let mut fc_layers = Vec::new();
        let mut fan_in = c * h * w;
        for &width in hidden {
            fc_layers.push(FcLayer::Linear(linear(fan_in, width, LinearInit::Default, device)));
            fc_layers.push(FcLayer::Relu(Relu::new()));
            fan_in = width;
        }
        fc_layers.push(FcLayer::Linear(linear(fan_in, classes, LinearInit::Default, device)));
        Ok(PlaneCnn { conv_layers, fc_layers, taps, classes })
    }
}

impl PlaneCnn {
    /// The forward pass; with `preact`, also every stage after the first before its last ReLU,
    /// with the BN feeding that ReLU (as ResNet's, counting the first stage as the stem).
    fn run(&self, inputs: Tensor<4>, preact: bool) -> ModelOutput {
        let mut x = inputs;
        let mut features = Vec::with_capacity(self.taps.len());
        let (mut pre, mut bns) = (Vec::new(), Vec::new());
        for (i, layer) in self.conv_layers.iter().enumerate() {
            x = layer.forward(x);
            if let (true, SeqLayer::Bn(bn)) = (preact && self.taps.iter().skip(1).any(|&t| t == i + 1), layer) {
                pre.push(x.clone());
                bns.push((bn.gamma.val(), bn.beta.val()));
            }
            if self.taps.contains(&i) {
                features.push(x.clone());
            }
        }
        let [b, c, h, w] = x.dims();
        let mut z: Tensor<2> = x.reshape([b, c * h * w]);
        let mut embedding = z.clone();
        for layer in &self.fc_layers {
            match layer {
                FcLayer::Linear(l) => {
                    // The input of the last linear layer is the embedding.
                    embedding = z.clone();
                    z = l.forward(z);
                }
                FcLayer::Relu(_) => z = relu(z),
            }
        }
        let out = ModelOutput::new(z, features, Some(embedding));
        if preact { out.with_preact(PreActivation { features: pre, bn_before_relu: bns }) } else { out }
    }
}

impl Classifier for PlaneCnn {
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
    fn features_and_embedding_shapes() {
        let device = Device::flex();
        let net = PlaneCnn::new(8, [3, 32, 32], 7, &device).unwrap();
        let out = net.forward(Tensor::zeros([2, 3, 32, 32], &device));
        let shapes: Vec<_> = out.features.iter().map(|f| f.dims()).collect();
        assert_eq!(shapes, vec![[2, 32, 32, 32], [2, 64, 16, 16], [2, 128, 8, 8], [2, 256, 4, 4]]);
        assert_eq!(out.embedding("test").unwrap().dims(), [2, 64]);
        assert_eq!(out.logits.dims(), [2, 7]);

        let net = PlaneCnn::new(6, [1, 28, 28], 10, &device).unwrap();
        let out = net.forward(Tensor::zeros([2, 1, 28, 28], &device));
        assert_eq!(out.features.last().unwrap().dims(), [2, 128, 7, 7]);
        assert_eq!(out.embedding("test").unwrap().dims(), [2, 128 * 7 * 7]);
    }

    #[test]
    fn refuses_unknown_depth_and_tiny_input() {
        let device = Device::flex();
        assert!(PlaneCnn::new(3, [3, 32, 32], 10, &device).is_err());
        assert!(PlaneCnn::new(10, [3, 8, 8], 10, &device).is_err());
        assert!(PlaneCnn::new(2, [3, 32, 32], 0, &device).is_err());
    }
}
