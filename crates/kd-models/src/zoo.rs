//! Models by name: what configs and the bench use to build a network at run time.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use kd_core::{Classifier, KdError, ModelOutput, Result};
use serde::{Deserialize, Serialize};

use crate::mlp::Mlp;
use crate::mobilenetv2::{self, MobileNetV2};
use crate::plane::{self, PLANE_DEPTHS, PlaneCnn};
use crate::resnet::{self, FILTERS, FILTERS_X4, ResNet};
use crate::shufflenetv2::{self, ShuffleNetV2};
use crate::summary::{Tracer, model_summary};
use crate::vgg::{self, Vgg};
use crate::wrn::{self, WideResNet};

/// A network description, parsed from names such as `mlp-512-512`, `resnet8x4` or `wrn-40-2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ModelSpec {
    /// `mlp-W1-W2-...`: an MLP with these hidden widths (`mlp` alone: one layer of 256).
    Mlp(Vec<usize>),
    /// `mlpbn-W1-W2-...`: the same MLP with BatchNorm after each hidden linear layer
    /// (`Linear -> BN -> ReLU`), which keeps feature-matching losses (FitNet, RKD) and strong
    /// distillation weights stable the way the CNNs' BatchNorm does.
    MlpBn(Vec<usize>),
    /// `planeN` (N = 2, 4, 6, 8, 10): TAKD's plain CNNs.
    Plane(usize),
    /// `resnetD` (filters 16-16-32-64) or `resnetDx4` (32-64-128-256), D = 6n+2.
    ResNet {
        /// Depth, 6n+2.
        depth: usize,
        /// The 4x wider variant.
        x4: bool,
    },
    /// `wrn-D-W`: Wide ResNet of depth D = 6n+4 and widen factor W.
    Wrn {
        /// Depth, 6n+4.
        depth: usize,
        /// Widen factor.
        width: usize,
    },
    /// `vgg8`, `vgg11`, `vgg13` (with BatchNorm).
    Vgg(usize),
    /// `mobilenetv2`: MobileNetV2 with expansion 6 and width 0.5 (`mobile_half`).
    MobileNetV2,
    /// `shufflenetv2`: ShuffleNetV2, net size 1.
    ShuffleNetV2,
}

impl ModelSpec {
    /// Parses a model name (case-insensitive; `_` counts as `-`, so `wrn_40_2` works).
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase().replace('_', "-");
        let bad = || KdError::InvalidConfig(format!("unknown model `{name}`; known: {}", Self::known().join(", ")));
        let number = |s: &str| s.parse::<usize>().ok();

        if let Some(rest) = lower.strip_prefix("mlpbn") {
            let widths: std::result::Result<Vec<usize>, _> = rest.trim_start_matches('-').split('-').map(str::parse).collect();
            return widths.ok().filter(|w| !w.is_empty() && !w.contains(&0)).map(ModelSpec::MlpBn).ok_or_else(bad);
        }
        if let Some(rest) = lower.strip_prefix("mlp") {
            if rest.is_empty() {
                return Ok(ModelSpec::Mlp(vec![256]));
            }
            let widths: std::result::Result<Vec<usize>, _> = rest.trim_start_matches('-').split('-').map(str::parse).collect();
            return widths.ok().filter(|w| !w.is_empty() && !w.contains(&0)).map(ModelSpec::Mlp).ok_or_else(bad);
        }
        let spec = if let Some(rest) = lower.strip_prefix("plane") {
            ModelSpec::Plane(number(rest).ok_or_else(bad)?)
        } else if let Some(rest) = lower.strip_prefix("resnet") {
            match rest.strip_suffix("x4") {
                Some(depth) => ModelSpec::ResNet { depth: number(depth).ok_or_else(bad)?, x4: true },
                None => ModelSpec::ResNet { depth: number(rest).ok_or_else(bad)?, x4: false },
            }
        } else if let Some(rest) = lower.strip_prefix("wrn-") {
            let (depth, width) = rest.split_once('-').ok_or_else(bad)?;
            ModelSpec::Wrn { depth: number(depth).ok_or_else(bad)?, width: number(width).ok_or_else(bad)? }
        } else if let Some(rest) = lower.strip_prefix("vgg") {
            ModelSpec::Vgg(number(rest.strip_suffix("-bn").unwrap_or(rest)).ok_or_else(bad)?)
        } else {
            match lower.as_str() {
                "mobilenetv2" | "mobile-half" | "mobilenetv2-half" => ModelSpec::MobileNetV2,
                "shufflenetv2" | "shufflev2" => ModelSpec::ShuffleNetV2,
                _ => return Err(bad()),
            }
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Refuses depths and widths the families do not define.
    fn validate(&self) -> Result<()> {
        // The traces hold the rules; a minimal input exercises them.
        let mut t = Tracer::new(&self.name(), [1, 1024, 1024])?;
        self.trace(&mut t, 1)
    }

    /// The names [`ModelSpec::parse`] understands.
    pub fn known() -> Vec<&'static str> {
        vec![
            "mlp-W1-W2-...",
            "mlpbn-W1-W2-... (with BatchNorm)",
            "plane2",
            "plane4",
            "plane6",
            "plane8",
            "plane10",
            "resnetD (D = 6n+2: resnet8, 14, 20, 32, 44, 56, 110)",
            "resnetDx4 (resnet8x4, resnet32x4)",
            "wrn-D-W (D = 6n+4: wrn-16-2, wrn-40-2, ...)",
            "vgg8",
            "vgg11",
            "vgg13",
            "mobilenetv2",
            "shufflenetv2",
        ]
    }

    /// Every named network of the KD literature the zoo provides (the MLP excluded), in a fixed
    /// order: what `cargo xtask models` lists.
    pub fn zoo() -> Vec<ModelSpec> {
        let mut all: Vec<ModelSpec> = PLANE_DEPTHS.iter().map(|&d| ModelSpec::Plane(d)).collect();
        all.extend([8, 14, 20, 32, 44, 56, 110].map(|depth| ModelSpec::ResNet { depth, x4: false }));
        all.extend([8, 32].map(|depth| ModelSpec::ResNet { depth, x4: true }));
        all.extend([(16, 1), (16, 2), (40, 1), (40, 2)].map(|(depth, width)| ModelSpec::Wrn { depth, width }));
        all.extend([8, 11, 13].map(ModelSpec::Vgg));
        all.extend([ModelSpec::MobileNetV2, ModelSpec::ShuffleNetV2]);
        all
    }

    /// Whether its stage features are spatial maps (every CNN); an MLP's are `[batch, width, 1, 1]`,
    /// on which the methods that compare spatial attention or kernels compare nothing.
    pub fn spatial_features(&self) -> bool {
        !matches!(self, ModelSpec::Mlp(_) | ModelSpec::MlpBn(_))
    }

    /// The canonical name.
    pub fn name(&self) -> String {
        match self {
            ModelSpec::Mlp(w) => format!("mlp-{}", w.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("-")),
            ModelSpec::MlpBn(w) => format!("mlpbn-{}", w.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("-")),
            ModelSpec::Plane(d) => format!("plane{d}"),
            ModelSpec::ResNet { depth, x4: false } => format!("resnet{depth}"),
            ModelSpec::ResNet { depth, x4: true } => format!("resnet{depth}x4"),
            ModelSpec::Wrn { depth, width } => format!("wrn-{depth}-{width}"),
            ModelSpec::Vgg(d) => format!("vgg{d}"),
            ModelSpec::MobileNetV2 => "mobilenetv2".into(),
            ModelSpec::ShuffleNetV2 => "shufflenetv2".into(),
        }
    }

    /// Describes the network to a tracer (for [`model_summary`] and input validation).
    pub(crate) fn trace(&self, t: &mut Tracer, classes: usize) -> Result<()> {
        match self {
            ModelSpec::Mlp(widths) | ModelSpec::MlpBn(widths) => {
                t.flatten();
                for &w in widths {
                    t.linear(w);
                    if matches!(self, ModelSpec::MlpBn(_)) {
                        t.bn();
                    }
                }
                t.linear(classes);
                Ok(())
            }
            ModelSpec::Plane(d) => plane::trace(*d, t, classes),
            ModelSpec::ResNet { depth, x4 } => resnet::trace(*depth, if *x4 { FILTERS_X4 } else { FILTERS }, t, classes),
            ModelSpec::Wrn { depth, width } => wrn::trace(*depth, *width, t, classes),
            ModelSpec::Vgg(d) => vgg::trace(*d, t, classes),
            ModelSpec::MobileNetV2 => mobilenetv2::trace(t, classes),
            ModelSpec::ShuffleNetV2 => shufflenetv2::trace(t, classes),
        }
    }

    /// Builds the network with weights drawn from `seed`, the same on every backend (drawn on
    /// the host and moved to `device`: [`kd_core::init::seeded_on_host`]).
    pub fn build_seeded(&self, input: [usize; 3], classes: usize, device: &Device, seed: u64) -> Result<AnyModel> {
        kd_core::init::seeded_on_host(device, seed, |host| self.build(input, classes, host))
    }

    /// Builds the network for inputs `[channels, height, width]` and `classes` outputs.
    ///
    /// Errors when the input is too small for the network's strides or a size is zero.
    pub fn build(&self, input: [usize; 3], classes: usize, device: &Device) -> Result<AnyModel> {
        // Checks the input against every stride before allocating anything.
        model_summary(self, input, classes)?;
        let channels = input[0];
        Ok(match self {
            ModelSpec::Mlp(widths) => AnyModel::Mlp(Mlp::new(input.iter().product(), widths, classes, device)?),
            ModelSpec::MlpBn(widths) => AnyModel::Mlp(Mlp::with_batch_norm(input.iter().product(), widths, classes, device)?),
            ModelSpec::Plane(d) => AnyModel::Plane(PlaneCnn::new(*d, input, classes, device)?),
            ModelSpec::ResNet { depth, x4 } => {
                let filters = if *x4 { FILTERS_X4 } else { FILTERS };
                AnyModel::ResNet(ResNet::new(*depth, filters, channels, classes, device)?)
            }
            ModelSpec::Wrn { depth, width } => AnyModel::Wrn(WideResNet::new(*depth, *width, channels, classes, device)?),
            ModelSpec::Vgg(d) => AnyModel::Vgg(Vgg::new(*d, channels, classes, device)?),
            ModelSpec::MobileNetV2 => AnyModel::MobileNetV2(MobileNetV2::new(channels, classes, device)?),
            ModelSpec::ShuffleNetV2 => AnyModel::ShuffleNetV2(ShuffleNetV2::new(channels, classes, device)?),
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
    /// A TAKD plain CNN.
    Plane(PlaneCnn),
    /// A CIFAR ResNet.
    ResNet(ResNet),
    /// A Wide ResNet.
    Wrn(WideResNet),
    /// A VGG with BatchNorm.
    Vgg(Vgg),
    /// MobileNetV2 (`mobile_half`).
    MobileNetV2(MobileNetV2),
    /// ShuffleNetV2.
    ShuffleNetV2(ShuffleNetV2),
}

impl Classifier for AnyModel {
    fn forward(&self, inputs: Tensor<4>) -> ModelOutput {
        match self {
            AnyModel::Mlp(m) => m.forward(inputs),
            AnyModel::Plane(m) => m.forward(inputs),
            AnyModel::ResNet(m) => m.forward(inputs),
            AnyModel::Wrn(m) => m.forward(inputs),
            AnyModel::Vgg(m) => m.forward(inputs),
            AnyModel::MobileNetV2(m) => m.forward(inputs),
            AnyModel::ShuffleNetV2(m) => m.forward(inputs),
        }
    }

    fn forward_preact(&self, inputs: Tensor<4>) -> Result<ModelOutput> {
        match self {
            AnyModel::Mlp(m) => m.forward_preact(inputs),
            AnyModel::Plane(m) => m.forward_preact(inputs),
            AnyModel::ResNet(m) => m.forward_preact(inputs),
            AnyModel::Wrn(m) => m.forward_preact(inputs),
            AnyModel::Vgg(m) => m.forward_preact(inputs),
            AnyModel::MobileNetV2(m) => m.forward_preact(inputs),
            AnyModel::ShuffleNetV2(m) => m.forward_preact(inputs),
        }
    }

    fn num_classes(&self) -> usize {
        match self {
            AnyModel::Mlp(m) => m.num_classes(),
            AnyModel::Plane(m) => m.num_classes(),
            AnyModel::ResNet(m) => m.num_classes(),
            AnyModel::Wrn(m) => m.num_classes(),
            AnyModel::Vgg(m) => m.num_classes(),
            AnyModel::MobileNetV2(m) => m.num_classes(),
            AnyModel::ShuffleNetV2(m) => m.num_classes(),
        }
    }
}
