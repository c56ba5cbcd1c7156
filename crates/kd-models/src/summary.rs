//! Analytic size and cost of a zoo network, without building it.
//!
//! Each family describes its layers to a tracer, which follows the activation shape, counts
//! trainable parameters (BatchNorm γ/β included, running statistics not) and multiply-adds of
//! convolutions and linear layers. [`ModelSpec::build`] runs the same trace first, so an input
//! too small for a network's strides is refused with an error instead of a panic in a kernel.

use kd_core::{KdError, Result};
use serde::{Deserialize, Serialize};

use crate::zoo::ModelSpec;

/// Size and cost of one network for one input shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Canonical model name.
    pub name: String,
    /// Trainable parameters (what PyTorch's `model.parameters()` counts).
    pub params: usize,
    /// Multiply-adds of one forward pass on one sample, convolutions and linear layers only
    /// (BatchNorm, activations, pooling and residual additions are not counted).
    pub mult_adds: u64,
}

/// The most parameters a network may have ([`model_summary`] refuses more, before anything is
/// allocated: an absurd width would otherwise abort the process on a failed allocation).
pub const MAX_PARAMS: usize = 1 << 30;

/// Parameter count and multiply-adds of `spec` for inputs `[channels, height, width]` and
/// `classes` outputs.
///
/// Errors when the input is empty, too small for the network's strides, or `classes` is zero.
pub fn model_summary(spec: &ModelSpec, input: [usize; 3], classes: usize) -> Result<ModelSummary> {
    let name = spec.name();
    if classes == 0 {
        return Err(KdError::InvalidConfig(format!("{name}: the number of classes must be positive")));
    }
    let mut t = Tracer::new(&name, input)?;
    spec.trace(&mut t, classes)?;
    if t.params > MAX_PARAMS {
        return Err(KdError::InvalidConfig(format!(
            "{name} for inputs {input:?} and {classes} classes has {} parameters, above the limit of {MAX_PARAMS} (2^30: 4 GiB of float32 weights)",
            if t.params == usize::MAX { "more than 2^64".to_string() } else { t.params.to_string() }
        )));
    }
    Ok(ModelSummary { name, params: t.params, mult_adds: t.mult_adds })
}

/// Follows the activation shape `[channels, height, width]` through a network description.
#[derive(Debug, Clone)]
pub(crate) struct Tracer {
    model: String,
    /// Current activation shape.
    pub shape: [usize; 3],
    /// Trainable parameters so far.
    pub params: usize,
    /// Multiply-adds so far.
    pub mult_adds: u64,
}

impl Tracer {
    /// A tracer at the network input.
    pub fn new(model: &str, input: [usize; 3]) -> Result<Self> {
        if input.contains(&0) {
            return Err(KdError::InvalidConfig(format!("{model}: input shape {input:?} has an empty dimension")));
        }
        Ok(Tracer { model: model.to_string(), shape: input, params: 0, mult_adds: 0 })
    }

    /// Number of channels of the current activation.
    pub fn channels(&self) -> usize {
        self.shape[0]
    }

    /// A square convolution to `cout` channels.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(&mut self, cout: usize, kernel: usize, stride: usize, padding: usize, groups: usize, bias: bool) -> Result<()> {
        let [cin, h, w] = self.shape;
        let out = |size: usize| (size + 2 * padding).checked_sub(kernel).map(|s| s / stride + 1);
        let (Some(ho), Some(wo)) = (out(h), out(w)) else {
            return Err(self.too_small(&format!("a {kernel}x{kernel} convolution")));
        };
        // Saturating: an absurd width is refused by its count (`MAX_PARAMS`), not an overflow.
        let weights = cout.saturating_mul(cin / groups).saturating_mul(kernel * kernel);
        self.params = self.params.saturating_add(weights).saturating_add(if bias { cout } else { 0 });
        self.mult_adds = self.mult_adds.saturating_add(weights.saturating_mul(ho).saturating_mul(wo) as u64);
        self.shape = [cout, ho, wo];
        Ok(())
    }

    /// Batch normalisation over the current channels (γ and β).
    pub fn bn(&mut self) {
        self.params = self.params.saturating_add(self.shape[0].saturating_mul(2));
    }

    /// 2x2 max pooling, stride 2.
    pub fn max_pool2(&mut self) -> Result<()> {
        let [c, h, w] = self.shape;
        if h < 2 || w < 2 {
            return Err(self.too_small("a 2x2 max pooling"));
        }
        self.shape = [c, h / 2, w / 2];
        Ok(())
    }

    /// Global average pooling to `[channels, 1, 1]`.
    pub fn global_pool(&mut self) {
        self.shape = [self.shape[0], 1, 1];
    }

    /// Flattens the activation; returns its length.
    pub fn flatten(&mut self) -> usize {
        let n = self.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d));
        self.shape = [n, 1, 1];
        n
    }

    /// A linear layer from the (flat) current activation to `outputs`.
    pub fn linear(&mut self, outputs: usize) {
        let inputs = self.flatten();
        self.params = self.params.saturating_add(inputs.saturating_mul(outputs)).saturating_add(outputs);
        self.mult_adds = self.mult_adds.saturating_add(inputs.saturating_mul(outputs) as u64);
        self.shape = [outputs, 1, 1];
    }

    fn too_small(&self, layer: &str) -> KdError {
        let [c, h, w] = self.shape;
        KdError::InvalidConfig(format!(
            "{}: the input is too small for its strides: an activation of {c}x{h}x{w} reaches {layer}",
            self.model
        ))
    }
}
