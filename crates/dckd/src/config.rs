//! DCKD's configuration: weights, the target-class mode and the companion loss.

use std::fmt;
use std::str::FromStr;

use kd_baselines::{FitNetConfig, RkdConfig};
use kd_core::Warmup;
use kd_core::check;
use kd_core::registry::Value;
use kd_core::{KdError, Result};
use serde::{Deserialize, Serialize};

/// `g` of [`TargetMode::Mix`] when a configuration names the mix without a value.
pub const DEFAULT_MIX_G: f64 = 0.5;

/// How the target-class binary `b* = [b*_y, 1 - b*_y]` of TCKD* is built from the teacher's
/// `p^T_y` and the student's `p^S_y` (both at temperature T; the student's side always under a
/// stop-gradient).
///
/// In a configuration: `{"kind": "teacher"}`, `{"kind": "max"}`, `{"kind": "mix", "g": 0.5}`,
/// or the strings `"teacher"`, `"max"`, `"mix"` (g = 0.5), `"mix(0.3)"`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "TargetModeTagged")]
pub enum TargetMode {
    /// `b*_y = p^T_y`: DKD's TCKD.
    Teacher,
    /// `b*_y = max(p^T_y, sg(p^S_y))` (the default): a student already more confident on the
    /// true class than the teacher is not pulled back.
    #[default]
    Max,
    /// `b*_y = g p^T_y + (1 - g) sg(p^S_y)`, `g` in `[0, 1]`.
    Mix {
        /// Share of the teacher.
        g: f64,
    },
}

impl TargetMode {
    /// Checks `g` of the mix.
    pub fn validate(&self) -> Result<()> {
        if let TargetMode::Mix { g } = *self
            && !(g.is_finite() && (0.0..=1.0).contains(&g))
        {
            return Err(KdError::InvalidConfig(format!("DCKD target_mode mix needs g in [0, 1], got {g}")));
        }
        Ok(())
    }
}

impl fmt::Display for TargetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetMode::Teacher => f.write_str("teacher"),
            TargetMode::Max => f.write_str("max"),
            TargetMode::Mix { g } => write!(f, "mix({g})"),
        }
    }
}

impl FromStr for TargetMode {
    type Err = KdError;

    /// `teacher`, `max`, `mix` (g = 0.5) or `mix(G)`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        match s {
            "teacher" => return Ok(TargetMode::Teacher),
            "max" => return Ok(TargetMode::Max),
            "mix" => return Ok(TargetMode::Mix { g: DEFAULT_MIX_G }),
            _ => {}
        }
        let g = s
            .strip_prefix("mix(")
            .and_then(|rest| rest.strip_suffix(')'))
            .map(|g| g.trim().parse::<f64>())
            .ok_or_else(|| KdError::InvalidConfig(format!("unknown DCKD target_mode `{s}`; known: teacher, max, mix, mix(G)")))?
            .map_err(|e| KdError::InvalidConfig(format!("DCKD target_mode `{s}`: g is not a number ({e})")))?;
        let mode = TargetMode::Mix { g };
        mode.validate()?;
        Ok(mode)
    }
}

/// The tagged form, shared by serialisation and the map form of deserialisation.
// Empty struct variants rather than unit ones: serde ignores extra keys next to the tag of a
// unit variant even with `deny_unknown_fields`, and a stray `g` on `max` should be an error.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum TargetModeTagged {
    Teacher {},
    Max {},
    Mix {
        #[serde(default = "default_mix_g")]
        g: f64,
    },
}

fn default_mix_g() -> f64 {
    DEFAULT_MIX_G
}

impl From<TargetModeTagged> for TargetMode {
    fn from(t: TargetModeTagged) -> Self {
        match t {
            TargetModeTagged::Teacher {} => TargetMode::Teacher,
            TargetModeTagged::Max {} => TargetMode::Max,
            TargetModeTagged::Mix { g } => TargetMode::Mix { g },
        }
    }
}

impl From<TargetMode> for TargetModeTagged {
    fn from(mode: TargetMode) -> Self {
        match mode {
            TargetMode::Teacher => TargetModeTagged::Teacher {},
            TargetMode::Max => TargetModeTagged::Max {},
            TargetMode::Mix { g } => TargetModeTagged::Mix { g },
        }
    }
}

/// A string (`"mix(0.3)"`) or the tagged map; the map's own errors (an unknown kind, a stray
/// field) come from serde as they are.
impl TryFrom<Value> for TargetMode {
    type Error = String;
    fn try_from(value: Value) -> std::result::Result<Self, String> {
        let mode = match value {
            Value::String(s) => s.parse().map_err(|e: KdError| e.to_string())?,
            other => serde_json::from_value::<TargetModeTagged>(other).map_err(|e| format!("DCKD target_mode: {e}"))?.into(),
        };
        Ok(mode)
    }
}

/// The feature or relational loss merged with the decoupled logit terms (`L_companion`).
///
/// In a configuration: `{"kind": "fitnet", "hint_layer": 2}`, `{"kind": "rkd",
/// "distance_weight": 25, "angle_weight": 50, "squared": false, "eps": 1e-12}`,
/// `{"kind": "none"}` (missing fields take these defaults), or the strings `"fitnet"`, `"rkd"`,
/// `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "CompanionTagged")]
pub enum Companion {
    /// FitNet's hint: `MSE(r(f_S), f_T)` at one feature layer, with a learnable regressor `r`
    /// (kept in [`crate::DckdAux`], so it is optimised and checkpointed with the student).
    FitNet {
        /// Index into `ModelOutput::features` of both networks (FitNet's default 2).
        hint_layer: usize,
    },
    /// RKD on the penultimate embeddings: `distance_weight * L_dist + angle_weight * L_angle`.
    Rkd {
        /// Weight of the distance term (RKD's 25).
        distance_weight: f64,
        /// Weight of the angle term (RKD's 50).
        angle_weight: f64,
        /// Squared distances in the distance term (RKD: false).
        squared: bool,
        /// Floor of the squared distances before the square root (RKD: 1e-12).
        eps: f64,
    },
    /// No companion: the decoupled logit terms alone.
    None,
}

impl Default for Companion {
    fn default() -> Self {
        Companion::FitNet { hint_layer: FitNetConfig::default().hint_layer }
    }
}

impl Companion {
    /// RKD with RKD's own defaults (mdistiller's `RKD` config).
    pub fn rkd() -> Self {
        let r = RkdConfig::default();
        Companion::Rkd { distance_weight: r.distance_weight, angle_weight: r.angle_weight, squared: r.squared, eps: r.eps }
    }

    /// FitNet's hint at FitNet's default layer.
    pub fn fitnet() -> Self {
        Self::default()
    }

    /// The short name used in the distiller's name: `fitnet`, `rkd` or `none`.
    pub fn kind(&self) -> &'static str {
        match self {
            Companion::FitNet { .. } => "fitnet",
            Companion::Rkd { .. } => "rkd",
            Companion::None => "none",
        }
    }

    /// Whether the companion reads the teacher's features or embedding (not only its logits).
    pub fn needs_features(&self) -> bool {
        !matches!(self, Companion::None)
    }

    /// The weight `gamma` used when the configuration leaves it unset: FitNet's hint weight
    /// (100) for `fitnet`, 1 for `rkd` (whose own distance and angle weights already give RKD's
    /// scale), 0 for `none`.
    pub fn default_gamma(&self) -> f64 {
        match self {
            Companion::FitNet { .. } => FitNetConfig::default().hint_weight,
            Companion::Rkd { .. } => 1.0,
            Companion::None => 0.0,
        }
    }

    /// RKD's configuration for [`kd_baselines::rkd::rkd_loss`] (its CE weight is unused here).
    fn rkd_config(&self) -> Option<RkdConfig> {
        match *self {
            Companion::Rkd { distance_weight, angle_weight, squared, eps } => {
                Some(RkdConfig { ce_weight: 0.0, distance_weight, angle_weight, squared, eps })
            }
            _ => None,
        }
    }

    /// Checks the companion's values.
    pub fn validate(&self) -> Result<()> {
        if let Some(r) = self.rkd_config() {
            // RKD's own checks, with a DCKD prefix so the user knows which config is meant.
            r.validate().map_err(|e| KdError::InvalidConfig(format!("DCKD companion rkd: {e}")))?;
        }
        Ok(())
    }
}

impl FromStr for Companion {
    type Err = KdError;

    /// `fitnet`, `rkd` or `none`, each with its defaults.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "fitnet" => Ok(Companion::fitnet()),
            "rkd" => Ok(Companion::rkd()),
            "none" => Ok(Companion::None),
            other => Err(KdError::InvalidConfig(format!("unknown DCKD companion `{other}`; known: fitnet, rkd, none"))),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum CompanionTagged {
    Fitnet {
        #[serde(default = "default_hint_layer")]
        hint_layer: usize,
    },
    Rkd {
        #[serde(default = "default_distance_weight")]
        distance_weight: f64,
        #[serde(default = "default_angle_weight")]
        angle_weight: f64,
        #[serde(default)]
        squared: bool,
        #[serde(default = "default_rkd_eps")]
        eps: f64,
    },
    None {},
}

fn default_hint_layer() -> usize {
    FitNetConfig::default().hint_layer
}
fn default_distance_weight() -> f64 {
    RkdConfig::default().distance_weight
}
fn default_angle_weight() -> f64 {
    RkdConfig::default().angle_weight
}
fn default_rkd_eps() -> f64 {
    RkdConfig::default().eps
}

impl From<CompanionTagged> for Companion {
    fn from(t: CompanionTagged) -> Self {
        match t {
            CompanionTagged::Fitnet { hint_layer } => Companion::FitNet { hint_layer },
            CompanionTagged::Rkd { distance_weight, angle_weight, squared, eps } => {
                Companion::Rkd { distance_weight, angle_weight, squared, eps }
            }
            CompanionTagged::None {} => Companion::None,
        }
    }
}

impl From<Companion> for CompanionTagged {
    fn from(c: Companion) -> Self {
        match c {
            Companion::FitNet { hint_layer } => CompanionTagged::Fitnet { hint_layer },
            Companion::Rkd { distance_weight, angle_weight, squared, eps } => {
                CompanionTagged::Rkd { distance_weight, angle_weight, squared, eps }
            }
            Companion::None => CompanionTagged::None {},
        }
    }
}

/// A string (`"rkd"`) or the tagged map, as for [`TargetMode`].
impl TryFrom<Value> for Companion {
    type Error = String;
    fn try_from(value: Value) -> std::result::Result<Self, String> {
        let companion = match value {
            Value::String(s) => s.parse().map_err(|e: KdError| e.to_string())?,
            other => serde_json::from_value::<CompanionTagged>(other).map_err(|e| format!("DCKD companion: {e}"))?.into(),
        };
        Ok(companion)
    }
}

/// Configuration of [`crate::Dckd`]:
/// `L = ce_weight * CE + warm * (alpha * TCKD* + beta * NCKD + gamma * L_companion)`,
/// `warm = min(epoch / warmup_epochs, 1)`.
///
/// Defaults (docs/methods.md, "DCKD"): DKD's weights and schedule (CE weight 1, alpha 1, beta 8,
/// T 4, warm-up 20 epochs), target mode `max`, FitNet's hint at layer 2 as the companion with
/// gamma = FitNet's hint weight, 100. Unknown fields are rejected, so a misspelt key is an
/// error rather than a silent default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DckdConfig {
    /// Weight of the cross-entropy with the labels.
    pub ce_weight: f64,
    /// Weight of TCKD*, the target-class term.
    pub alpha: f64,
    /// Weight of NCKD, the non-target term (DKD's); 0 turns it off (and skips computing it).
    pub beta: f64,
    /// Softmax temperature T of TCKD* and NCKD.
    pub temperature: f64,
    /// Epochs W of the linear warm-up `min(epoch / W, 1)` of the distillation terms: a number
    /// of epochs or a fraction of the schedule ([`Warmup`]); 0: none.
    pub warmup_epochs: Warmup,
    /// How the target-class binary of TCKD* is built.
    pub target_mode: TargetMode,
    /// The feature or relational loss merged with the logit terms.
    pub companion: Companion,
    /// Weight of the companion; `None`: [`Companion::default_gamma`] (100 for FitNet's hint,
    /// 1 for RKD, whose own weights 25 and 50 sit inside the companion).
    pub gamma: Option<f64>,
    /// Whether the warm-up factor also scales the companion (true: the formula above; false:
    /// the companion at full weight from the first epoch, as FitNet and RKD alone train).
    pub warmup_companion: bool,
}

impl Default for DckdConfig {
    fn default() -> Self {
        DckdConfig {
            ce_weight: 1.0,
            alpha: 1.0,
            beta: 8.0,
            temperature: 4.0,
            warmup_epochs: Warmup::Epochs(20),
            target_mode: TargetMode::Max,
            companion: Companion::default(),
            gamma: None,
            warmup_companion: true,
        }
    }
}

impl DckdConfig {
    /// The companion's weight: `gamma`, or the companion's default when unset.
    pub fn effective_gamma(&self) -> f64 {
        self.gamma.unwrap_or_else(|| self.companion.default_gamma())
    }

    /// Checks the values; each error names the field.
    pub fn validate(&self) -> Result<()> {
        check::positive("DCKD", &[("temperature", self.temperature)])?;
        check::non_negative(
            "DCKD",
            &[("ce_weight", self.ce_weight), ("alpha", self.alpha), ("beta", self.beta), ("gamma", self.effective_gamma())],
        )?;
        self.target_mode.validate()?;
        self.companion.validate()
    }
}
