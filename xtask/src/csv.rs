//! CSV output of `predict` and `eval`.

/// A CSV field, quoted as RFC 4180 quotes (file and class names may hold commas or quotes).
pub fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v.to_string() }
}
