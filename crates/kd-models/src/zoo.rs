//! Models by name: what configs and the bench use to build a network at run time.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use kd_core::{Classifier, KdError, ModelOutput, Result};
use serde::{Deserialize, Serialize};

use crate::mlp::Mlp;

/// A network description, parsed from names such as `mlp-512-512`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ModelSpec {
    /// `mlp-W1-W2-...`: an MLP with these hidden widths (`mlp` alone: one layer of 256).
    Mlp(Vec<usize>),
}

impl ModelSpec {
    /// Parses a model name.
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        let bad = || KdError::InvalidConfig(format!("unknown model `{name}`; known: {}", Self::known().join(", ")));
        if let Some(rest) = lower.strip_prefix("mlp") {
            if rest.is_empty() {
                return Ok(ModelSpec::Mlp(vec![256]));
            }
            let widths: std::result::Result<Vec<usize>, _> = rest.trim_start_matches('-').split('-').map(str::parse).collect();
            return widths.ok().filter(|w| !w.is_empty() && !w.contains(&0)).map(ModelSpec::Mlp).ok_or_else(bad);
        }
        Err(bad())
    }

    /// The names [`ModelSpec::parse`] understands.
    pub fn known() -> Vec<&'static str> {
        vec!["mlp-W1-W2-..."]
    }

    /// The canonical name.
    pub fn name(&self) -> String {
        match self {
            ModelSpec::Mlp(w) => format!("mlp-{}", w.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("-")),
        }
    }

    /// Builds the network for inputs `[channels, height, width]` and `classes` outputs.
    pub fn build(&self, input: [usize; 3], classes: usize, device: &Device) -> Result<AnyModel> {
        Ok(match self {
            ModelSpec::Mlp(widths) => AnyModel::Mlp(Mlp::new(input.iter().product(), widths, classes, device)?),
        })
    }
}

impl TryFrom<String> for ModelSpec {
    type Error = KdError;
    fn try_from(s: String) -> Result<Self> {
        ModelSpec::parse(&s)
    }
}

impl From<ModelSpec> for String {
    fn from(spec: ModelSpec) -> String {
        spec.name()
    }
}

/// Any network of the zoo, chosen at run time.
#[derive(Module, Debug)]
pub enum AnyModel {
    /// A multi-layer perceptron.
    Mlp(Mlp),
}

impl Classifier for AnyModel {
    fn forward(&self, inputs: Tensor<4>) -> ModelOutput {
        match self {
            AnyModel::Mlp(m) => m.forward(inputs),
        }
    }

    fn num_classes(&self) -> usize {
        match self {
            AnyModel::Mlp(m) => m.num_classes(),
        }
    }
}
