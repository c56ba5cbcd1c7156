//! Checks of configuration values, with one wording for every method: each error names the
//! method, the field and the value.

use crate::error::{KdError, Result};

/// Each value is finite and above 0 (temperatures, epsilons).
pub fn positive(method: &str, fields: &[(&str, f64)]) -> Result<()> {
    match fields.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
        Some((name, v)) => Err(KdError::InvalidConfig(format!("{method} {name} must be finite and > 0, got {v}"))),
        None => Ok(()),
    }
}

/// Each value is finite and at least 0 (loss weights).
pub fn non_negative(method: &str, fields: &[(&str, f64)]) -> Result<()> {
    match fields.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
        Some((name, v)) => Err(KdError::InvalidConfig(format!("{method} {name} must be finite and >= 0, got {v}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_method_field_and_value() {
        assert!(positive("KD", &[("temperature", 4.0)]).is_ok());
        let e = positive("KD", &[("temperature", 4.0), ("eps", 0.0)]).unwrap_err().to_string();
        assert!(e.contains("KD eps must be finite and > 0, got 0"), "{e}");
        let e = non_negative("DKD", &[("alpha", 1.0), ("beta", f64::NAN)]).unwrap_err().to_string();
        assert!(e.contains("DKD beta must be finite and >= 0, got NaN"), "{e}");
        assert!(non_negative("DKD", &[("alpha", 0.0)]).is_ok());
    }
}
