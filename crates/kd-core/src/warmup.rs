//! The warm-up of a method's distillation terms: the factor `min(epoch / W, 1)` (epochs from 1)
//! that scales them, with its length `W` given as a number of epochs or as a fraction of the
//! stage's schedule.
//!
//! ```
//! use kd_core::warmup::Warmup;
//!
//! // The papers' 20 epochs of 240, as a fraction: 1 epoch of a 10-epoch schedule, 20 of 240.
//! let fraction: Warmup = serde_json::from_str(r#"{ "numerator": 20, "denominator": 240 }"#).unwrap();
//! assert_eq!((fraction.epochs(10), fraction.epochs(240)), (1, 20));
//! // A number of epochs is the same on every schedule (0: no warm-up).
//! let fixed: Warmup = serde_json::from_str("20").unwrap();
//! assert_eq!((fixed.epochs(10), fixed.epochs(240)), (20, 20));
//! ```

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::distiller::StepContext;

/// The name of the field that holds the warm-up in every method configuration that has one
/// (`warmup_epochs`): [`crate::registry::MethodInfo::has_warmup`] looks for it, and a caller that
/// sets every method's warm-up (the bench) lays its value over it.
pub const CONFIG_FIELD: &str = "warmup_epochs";

/// The length `W` of a warm-up of distillation terms.
///
/// In a method's configuration (`warmup_epochs`), either a number of epochs
/// (`warmup_epochs = 20`, the papers' CIFAR setting; 0: no warm-up) or a fraction of the
/// stage's epochs (`warmup_epochs = { numerator = 20, denominator = 240 }`: the papers' 20 of
/// 240 epochs kept on any schedule), resolved at each step against
/// [`StepContext::total_epochs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Warmup {
    /// A fixed number of epochs, whatever the schedule's length (0: no warm-up).
    Epochs(usize),
    /// A fraction of the stage's epochs.
    Fraction(ScheduleFraction),
}

impl Warmup {
    /// The warm-up's epochs `W` in a stage of `total_epochs` epochs.
    pub fn epochs(&self, total_epochs: usize) -> usize {
        match self {
            Warmup::Epochs(n) => *n,
            Warmup::Fraction(f) => f.of(total_epochs),
        }
    }

    /// The factor of the distillation terms at `ctx`'s epoch: `min(epoch / W, 1)`, with `W`
    /// resolved against the stage's epochs; 1 when `W` is 0.
    pub fn factor(&self, ctx: &StepContext) -> f64 {
        ctx.warmup_factor(self.epochs(ctx.total_epochs))
    }
}

impl From<usize> for Warmup {
    fn from(epochs: usize) -> Self {
        Warmup::Epochs(epochs)
    }
}

/// A fraction `numerator / denominator` of a schedule's epochs, in `(0, 1]`: of `E` epochs it
/// is `max(ceil(E * numerator / denominator), 1)`, computed in integers (no rounding drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FractionFields")]
pub struct ScheduleFraction {
    numerator: u64,
    denominator: u64,
}

/// The fields of [`ScheduleFraction`] as written, before they are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FractionFields {
    numerator: u64,
    denominator: u64,
}

impl TryFrom<FractionFields> for ScheduleFraction {
    type Error = String;

    fn try_from(f: FractionFields) -> Result<Self, String> {
        ScheduleFraction::new(f.numerator, f.denominator)
    }
}

impl ScheduleFraction {
    /// `numerator / denominator`, both at least 1, the numerator at most the denominator (a
    /// warm-up longer than its schedule would never reach full weight).
    pub fn new(numerator: u64, denominator: u64) -> Result<Self, String> {
        if numerator == 0 || denominator == 0 || numerator > denominator {
            return Err(format!(
                "warm-up fraction {numerator}/{denominator}: numerator and denominator must be at least 1, the numerator at most the \
                 denominator (for no warm-up write `warmup_epochs = 0`)"
            ));
        }
        Ok(ScheduleFraction { numerator, denominator })
    }

    /// `max(ceil(total_epochs * numerator / denominator), 1)`.
    pub fn of(&self, total_epochs: usize) -> usize {
        let scaled = (total_epochs as u128 * u128::from(self.numerator)).div_ceil(u128::from(self.denominator));
        // At most `total_epochs` (the fraction is at most 1), so it fits.
        usize::try_from(scaled).unwrap_or(total_epochs).max(1)
    }
}

impl<'de> Deserialize<'de> for Warmup {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WarmupVisitor)
    }
}

/// Reads a [`Warmup`]: an integer, or a table of `numerator` and `denominator`.
struct WarmupVisitor;

impl<'de> Visitor<'de> for WarmupVisitor {
    type Value = Warmup;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number of epochs (such as 20; 0: no warm-up) or a fraction of the schedule ({ numerator = 20, denominator = 240 })")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Warmup, E> {
        usize::try_from(v).map(Warmup::Epochs).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Warmup, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self)).and_then(|v| self.visit_u64(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Warmup, A::Error> {
        ScheduleFraction::deserialize(de::value::MapAccessDeserializer::new(map)).map(Warmup::Fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(epoch: usize, total_epochs: usize) -> StepContext {
        StepContext { epoch, total_epochs, step_in_epoch: 0, global_step: 0, seed: 0 }
    }

    /// 20/240 of the schedule is the bench's former `max(ceil(epochs * 20 / 240), 1)` on every
    /// schedule length, and so is the factor at every epoch.
    #[test]
    fn the_fraction_matches_the_scaled_epochs_on_every_schedule() {
        let warmup = Warmup::Fraction(ScheduleFraction::new(20, 240).unwrap());
        for total in 1..=400usize {
            let scaled = (total * 20).div_ceil(240).max(1);
            assert_eq!(warmup.epochs(total), scaled, "{total} epochs");
            for epoch in 1..=total {
                assert_eq!(warmup.factor(&ctx(epoch, total)), ctx(epoch, total).warmup_factor(scaled), "epoch {epoch} of {total}");
            }
        }
        assert_eq!(warmup.epochs(240), 20);
    }

    #[test]
    fn a_number_of_epochs_ignores_the_schedule() {
        for total in [1, 10, 240] {
            assert_eq!(Warmup::Epochs(20).epochs(total), 20);
            assert_eq!(Warmup::Epochs(0).factor(&ctx(1, total)), 1.0);
        }
        assert_eq!(Warmup::Epochs(4).factor(&ctx(1, 10)), 0.25);
    }

    #[test]
    fn reads_and_writes_both_forms() {
        let fixed: Warmup = serde_json::from_value(serde_json::json!(20)).unwrap();
        assert_eq!(fixed, Warmup::Epochs(20));
        assert_eq!(serde_json::to_value(fixed).unwrap(), serde_json::json!(20));
        let fraction = serde_json::json!({ "numerator": 1, "denominator": 12 });
        let read: Warmup = serde_json::from_value(fraction.clone()).unwrap();
        assert_eq!(read, Warmup::Fraction(ScheduleFraction::new(1, 12).unwrap()));
        assert_eq!(serde_json::to_value(read).unwrap(), fraction);
    }

    #[test]
    fn refuses_what_is_no_warm_up() {
        let err = |v: serde_json::Value| serde_json::from_value::<Warmup>(v).unwrap_err().to_string();
        assert!(err(serde_json::json!(-1)).contains("a number of epochs"));
        assert!(err(serde_json::json!("soon")).contains("a fraction of the schedule"));
        assert!(err(serde_json::json!(0.5)).contains("a number of epochs"));
        assert!(err(serde_json::json!({ "numerator": 1, "denominator": 0 })).contains("must be at least 1"));
        assert!(err(serde_json::json!({ "numerator": 3, "denominator": 2 })).contains("at most the denominator"));
        assert!(err(serde_json::json!({ "numerator": 1, "denominatr": 2 })).contains("unknown field `denominatr`"));
    }
}
