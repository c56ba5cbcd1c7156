//! Multi-layer perceptron with configurable widths.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use kd_core::{Classifier, KdError, ModelOutput, PreActivation, Result};

use crate::layers::{batch_norm_forward, relu};

/// An MLP: `Linear -> ReLU` (or `Linear -> BatchNorm -> ReLU`) for each hidden width, then a
/// linear classifier.
///
/// Inputs of any shape `[batch, c, h, w]` are flattened. Every hidden activation is a feature
/// (`[batch, width, 1, 1]`); the last one is the embedding.
#[derive(Module, Debug)]
pub struct Mlp {
    hidden: Vec<Linear>,
    /// One BatchNorm per hidden layer, or none.
    norms: Vec<BatchNorm>,
    fc: Linear,
    #[module(skip)]
    classes: usize,
}

impl Mlp {
    /// An MLP from `inputs` features through `widths` to `classes` logits.
    pub fn new(inputs: usize, widths: &[usize], classes: usize, device: &Device) -> Result<Self> {
        Self::build(inputs, widths, classes, false, device)
    }

    /// The same MLP with BatchNorm after every hidden linear layer.
    pub fn with_batch_norm(inputs: usize, widths: &[usize], classes: usize, device: &Device) -> Result<Self> {
        Self::build(inputs, widths, classes, true, device)
    }

    fn build(inputs: usize, widths: &[usize], classes: usize, batch_norm: bool, device: &Device) -> Result<Self> {
        if inputs == 0 || classes == 0 || widths.contains(&0) {
            return Err(KdError::InvalidConfig(format!(
                "MLP sizes must be positive: inputs {inputs}, widths {widths:?}, classes {classes}"
            )));
        }
        let mut hidden = Vec::with_capacity(widths.len());
        let mut fan_in = inputs;
        for &w in widths {
            hidden.push(LinearConfig::new(fan_in, w).init(device));
            fan_in = w;
        }
        let norms = if batch_norm { widths.iter().map(|&w| BatchNormConfig::new(w).init(device)).collect() } else { Vec::new() };
        Ok(Mlp { hidden, norms, fc: LinearConfig::new(fan_in, classes).init(device), classes })
    }
}

impl Mlp {
    /// The forward pass; with `preact`, also each hidden layer's BatchNorm output before its
    /// ReLU, `[batch, width, 1, 1]`, with that BatchNorm.
    fn run(&self, inputs: Tensor<4>, preact: bool) -> ModelOutput {
        let [b, c, h, w] = inputs.dims();
        let mut x: Tensor<2> = inputs.reshape([b, c * h * w]);
        let mut features = Vec::with_capacity(self.hidden.len());
        let (mut pre, mut bns) = (Vec::new(), Vec::new());
        for (i, layer) in self.hidden.iter().enumerate() {
            let z = layer.forward(x);
            let z = match self.norms.get(i) {
                Some(bn) => {
                    let z = batch_norm_forward(bn, z);
                    if preact {
                        pre.push(z.clone().reshape([b, z.dims()[1], 1, 1]));
                        bns.push((bn.gamma.val(), bn.beta.val()));
                    }
                    z
                }
                None => z,
            };
            x = relu(z);
            let width = x.dims()[1];
            features.push(x.clone().reshape([b, width, 1, 1]));
        }
        let logits = self.fc.forward(x.clone());
        let out = ModelOutput::new(logits, features, Some(x));
        if preact { out.with_preact(PreActivation { features: pre, bn_before_relu: bns }) } else { out }
    }
}

impl Classifier for Mlp {
    fn forward(&self, inputs: Tensor<4>) -> ModelOutput {
        self.run(inputs, false)
    }

    fn forward_preact(&self, inputs: Tensor<4>) -> Result<ModelOutput> {
        if self.norms.is_empty() {
            return Err(KdError::InvalidConfig(
                "an MLP without BatchNorm has no BatchNorm before its ReLUs, so no pre-activation statistics (use an `mlpbn-` model)"
                    .into(),
            ));
        }
        Ok(self.run(inputs, true))
    }

    fn num_classes(&self) -> usize {
        self.classes
    }
}
