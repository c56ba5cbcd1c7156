//! Experiment files (TOML): parsing, then every check made before training.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(exp) = kd::experiment::Experiment::from_toml(text) {
        let _ = exp.validate();
    }
});
