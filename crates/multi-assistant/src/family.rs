//! Model families with a size knob: the pool that teachers, assistants and students come from.
//!
//! A family maps a *scale* (a depth or a width: larger means a bigger model) to a network of the
//! zoo ([`ModelSpec`]), and lists the scales available between two others, which is where an
//! assistant can be inserted (docs/methods.md, "Multi-assistant KD").

use burn::tensor::Device;
use kd_core::{KdError, Result};
use kd_models::{AnyModel, ModelSpec};
use serde::{Deserialize, Serialize};

/// TAKD's plain CNNs, `plane2` ... `plane10` (docs/methods.md, "TAKD").
pub const PLANE_SIZES: [usize; 5] = [2, 4, 6, 8, 10];

/// The CIFAR ResNet depths the TAKD code defines (`resnet_cifar.py`), without `resnet26`,
/// which the zoo does not list (any `6n+2` depth works: pass it explicitly).
pub const RESNET_DEPTHS: [usize; 7] = [8, 14, 20, 32, 44, 56, 110];

/// One member of a [`ModelFamily::Custom`] family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyMember {
    /// Its scale (larger: bigger model).
    pub scale: usize,
    /// A model name [`ModelSpec::parse`] understands.
    pub model: String,
}

/// A family of networks indexed by a scale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelFamily {
    /// TAKD's plain CNNs; the scale is the number of layers (`planeN`).
    Plane {
        /// The sizes in the pool (default [`PLANE_SIZES`]).
        sizes: Vec<usize>,
    },
    /// CIFAR ResNets; the scale is the depth (`resnetD`, or `resnetDx4` when `x4`).
    ResNet {
        /// The depths in the pool, each `6n+2` (default [`RESNET_DEPTHS`]).
        depths: Vec<usize>,
        /// The 4x wider variant (filters 32-64-128-256).
        #[serde(default)]
        x4: bool,
    },
    /// MLPs; the scale is the width of each of `layers` hidden layers (`mlp-W-W`).
    Mlp {
        /// The widths in the pool.
        widths: Vec<usize>,
        /// Number of hidden layers (at least 1).
        layers: usize,
    },
    /// Any networks of the zoo, each given its scale by the user.
    Custom {
        /// The members.
        members: Vec<FamilyMember>,
    },
}

impl ModelFamily {
    /// TAKD's plain CNNs 2, 4, 6, 8, 10.
    pub fn plane() -> Self {
        ModelFamily::Plane { sizes: PLANE_SIZES.to_vec() }
    }

    /// CIFAR ResNets 8 ... 110.
    pub fn resnet() -> Self {
        ModelFamily::ResNet { depths: RESNET_DEPTHS.to_vec(), x4: false }
    }

    /// MLPs of `layers` hidden layers, one member per width.
    pub fn mlp(widths: Vec<usize>, layers: usize) -> Self {
        ModelFamily::Mlp { widths, layers }
    }

    /// A family from a short name: `plane`, `resnet`, `resnet-x4`, or `mlp-L:W1,W2,...`
    /// (`L` hidden layers; `mlp:W1,...` means one layer).
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        let bad = || {
            KdError::InvalidConfig(format!(
                "unknown model family `{name}`; known: plane, resnet, resnet-x4, mlp-L:W1,W2,... (e.g. mlp-2:32,64,128)"
            ))
        };
        let family = match lower.as_str() {
            "plane" => Self::plane(),
            "resnet" => Self::resnet(),
            "resnet-x4" | "resnetx4" => ModelFamily::ResNet { depths: vec![8, 32], x4: true },
            other => {
                let (head, widths) = other.split_once(':').ok_or_else(bad)?;
                let layers = match head {
                    "mlp" => 1,
                    _ => head.strip_prefix("mlp-").and_then(|l| l.parse().ok()).ok_or_else(bad)?,
                };
                let widths = widths.split(',').map(|w| w.trim().parse::<usize>().map_err(|_| bad())).collect::<Result<Vec<_>>>()?;
                ModelFamily::Mlp { widths, layers }
            }
        };
        family.validate()?;
        Ok(family)
    }

    /// A short name for reports (`plane`, `resnet`, `mlp-2`, `custom`).
    pub fn name(&self) -> String {
        match self {
            ModelFamily::Plane { .. } => "plane".into(),
            ModelFamily::ResNet { x4: false, .. } => "resnet".into(),
            ModelFamily::ResNet { x4: true, .. } => "resnet-x4".into(),
            ModelFamily::Mlp { layers, .. } => format!("mlp-{layers}"),
            ModelFamily::Custom { .. } => "custom".into(),
        }
    }

    /// The scales of the pool, ascending, without duplicates.
    pub fn scales(&self) -> Vec<usize> {
        let mut scales: Vec<usize> = match self {
            ModelFamily::Plane { sizes } => sizes.clone(),
            ModelFamily::ResNet { depths, .. } => depths.clone(),
            ModelFamily::Mlp { widths, .. } => widths.clone(),
            ModelFamily::Custom { members } => members.iter().map(|m| m.scale).collect(),
        };
        scales.sort_unstable();
        scales.dedup();
        scales
    }

    /// Whether `scale` is in the pool.
    pub fn contains(&self, scale: usize) -> bool {
        self.scales().contains(&scale)
    }

    /// The network at `scale`; an error when the scale is not in the pool.
    pub fn spec(&self, scale: usize) -> Result<ModelSpec> {
        if !self.contains(scale) {
            return Err(KdError::InvalidConfig(format!(
                "scale {scale} is not in the {} family (scales: {:?})",
                self.name(),
                self.scales()
            )));
        }
        match self {
            ModelFamily::Plane { .. } => ModelSpec::parse(&format!("plane{scale}")),
            ModelFamily::ResNet { x4, .. } => ModelSpec::parse(&format!("resnet{scale}{}", if *x4 { "x4" } else { "" })),
            ModelFamily::Mlp { layers, .. } => Ok(ModelSpec::Mlp(vec![scale; *layers])),
            ModelFamily::Custom { members } => {
                // `contains` found it, so a member with this scale exists.
                let member = members
                    .iter()
                    .find(|m| m.scale == scale)
                    .ok_or_else(|| KdError::InvalidConfig(format!("no member at scale {scale}")))?;
                ModelSpec::parse(&member.model)
            }
        }
    }

    /// The name of the network at `scale`.
    pub fn model_name(&self, scale: usize) -> Result<String> {
        Ok(self.spec(scale)?.name())
    }

    /// The scales strictly between `a` and `b` (in either order), ascending: where an
    /// assistant can go between two models of the chain. Both must be in the pool.
    pub fn between(&self, a: usize, b: usize) -> Result<Vec<usize>> {
        for s in [a, b] {
            if !self.contains(s) {
                return Err(KdError::InvalidConfig(format!(
                    "scale {s} is not in the {} family (scales: {:?})",
                    self.name(),
                    self.scales()
                )));
            }
        }
        let (lo, hi) = (a.min(b), a.max(b));
        Ok(self.scales().into_iter().filter(|&s| s > lo && s < hi).collect())
    }

    /// Checks the pool: not empty, no zero scale, every member a valid network, no two members
    /// of a custom family at the same scale.
    pub fn validate(&self) -> Result<()> {
        let scales = self.scales();
        if scales.is_empty() {
            return Err(KdError::InvalidConfig(format!("the {} family has no member", self.name())));
        }
        if scales.contains(&0) {
            return Err(KdError::InvalidConfig(format!("the {} family has a member of scale 0", self.name())));
        }
        match self {
            ModelFamily::Mlp { layers: 0, .. } => {
                return Err(KdError::InvalidConfig("an MLP family needs at least one hidden layer".into()));
            }
            ModelFamily::Custom { members } if members.len() != scales.len() => {
                return Err(KdError::InvalidConfig("two members of the custom family have the same scale".into()));
            }
            _ => {}
        }
        for s in scales {
            self.spec(s)?;
        }
        Ok(())
    }
}

/// Builds `spec` with weights drawn from `seed` (see [`ModelSpec::build_seeded`]).
pub fn build_seeded(spec: &ModelSpec, input: [usize; 3], classes: usize, device: &Device, seed: u64) -> Result<AnyModel> {
    spec.build_seeded(input, classes, device, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_map_scales_to_zoo_networks() {
        let plane = ModelFamily::plane();
        assert_eq!(plane.scales(), vec![2, 4, 6, 8, 10]);
        assert_eq!(plane.model_name(6).unwrap(), "plane6");
        assert_eq!(plane.between(10, 2).unwrap(), vec![4, 6, 8]);
        assert_eq!(plane.between(4, 6).unwrap(), Vec::<usize>::new());
        assert!(plane.spec(5).is_err());
        assert!(plane.between(10, 3).is_err());

        let resnet = ModelFamily::resnet();
        assert_eq!(resnet.model_name(110).unwrap(), "resnet110");
        assert_eq!(resnet.between(8, 56).unwrap(), vec![14, 20, 32, 44]);
        assert!(ModelFamily::ResNet { depths: vec![8, 9], x4: false }.validate().is_err());

        let mlp = ModelFamily::parse("mlp-2:64,16,32").unwrap();
        assert_eq!(mlp.scales(), vec![16, 32, 64]);
        assert_eq!(mlp.spec(32).unwrap(), ModelSpec::Mlp(vec![32, 32]));
        assert_eq!(ModelFamily::parse("mlp:8").unwrap().spec(8).unwrap(), ModelSpec::Mlp(vec![8]));
        assert!(ModelFamily::parse("mlp-0:8").is_err());
        assert!(ModelFamily::parse("mlp-1:8,x").is_err());
        assert!(ModelFamily::parse("vgg").is_err());
        assert_eq!(ModelFamily::parse("resnet").unwrap(), resnet);

        let custom = ModelFamily::Custom {
            members: vec![FamilyMember { scale: 3, model: "wrn-40-2".into() }, FamilyMember { scale: 1, model: "wrn-16-2".into() }],
        };
        custom.validate().unwrap();
        assert_eq!(custom.model_name(1).unwrap(), "wrn-16-2");
        let dup = ModelFamily::Custom {
            members: vec![FamilyMember { scale: 1, model: "vgg8".into() }, FamilyMember { scale: 1, model: "vgg13".into() }],
        };
        assert!(dup.validate().is_err());
        let json = serde_json::to_string(&plane).unwrap();
        assert_eq!(serde_json::from_str::<ModelFamily>(&json).unwrap(), plane);
    }
}
