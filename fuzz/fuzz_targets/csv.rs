//! CSV tables with every label coding and a label column by name and by index.
#![no_main]
use std::path::Path;

use kd_data::table::{LabelCoding, parse_csv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.csv");
    for (column, coding) in [
        (None, LabelCoding::Auto),
        (Some("label"), LabelCoding::Auto),
        (Some("-1"), LabelCoding::Integers { classes: Some(3) }),
        (Some("0"), LabelCoding::Integers { classes: None }),
    ] {
        if let Ok(table) = parse_csv(data, path, column, coding) {
            assert_eq!(table.features.len(), table.rows() * table.feature_names.len());
            assert!(table.labels.iter().all(|&l| l < table.classes()));
            assert!(table.features.iter().all(|v| v.is_finite()));
        }
    }
});
