//! Numeric CSV tables with a label column.
//!
//! Every cell except the label must be a finite number. A header row is recognised when one of
//! its cells is not a number while the cell below it is (so `a,b,species` is a header and
//! `1.2,3.4,setosa` is data); without a header the columns are named `column 0`, `column 1`...
//! Line numbers in errors count from 1, header included; columns count from 0.

use std::path::{Path, PathBuf};

use kd_core::{KdError, Result};

/// How label cells become class indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelCoding {
    /// Labels must be integers `0..classes` (the bundled datasets' convention); anything else is
    /// an error naming the line.
    Integers {
        /// The number of classes (`None`: the largest label plus one).
        classes: Option<usize>,
    },
    /// Integer labels that cover exactly `0..K` are kept as they are; any other labels (text,
    /// `1..K`, `-1/1`, decimals) are mapped to `0..K` in sorted order of their distinct values:
    /// numeric order when every value is a number, else byte-wise string order.
    Auto,
}

/// A CSV file read into features and class indices.
#[derive(Debug, Clone)]
pub struct CsvTable {
    /// The file.
    pub path: PathBuf,
    /// The names of the feature columns, in order.
    pub feature_names: Vec<String>,
    /// The name of the label column.
    pub label_name: String,
    /// `rows x feature_names.len()` values, row-major.
    pub features: Vec<f32>,
    /// The class of each row.
    pub labels: Vec<usize>,
    /// The label value of each class (`class_names[k]` was coded as class `k`).
    pub class_names: Vec<String>,
}

impl CsvTable {
    /// Number of data rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }
}

/// Reads a CSV file. `label_column` is a column name, or a 0-based index (negative counts from
/// the end: `-1` is the last column); a name that is also a header wins over an index. `None`:
/// the last column.
pub fn read_csv(path: &Path, label_column: Option<&str>, coding: LabelCoding) -> Result<CsvTable> {
    let bytes = kd_core::files::read_regular(path)?;
    parse_csv(&bytes, path, label_column, coding)
}

/// Parses CSV bytes as [`read_csv`] reads a file; `path` names the source in errors.
pub fn parse_csv(bytes: &[u8], path: &Path, label_column: Option<&str>, coding: LabelCoding) -> Result<CsvTable> {
    let rows = parse_rows(bytes, path, label_column)?;
    let malformed = |reason: String| KdError::Malformed { path: path.into(), reason };
    let mut features = Vec::with_capacity(rows.data.len() * rows.feature_cols.len());
    for rec in &rows.data {
        for &c in &rows.feature_cols {
            let cell = &rec[c];
            let value =
                parse_cell(cell).map_err(|why| malformed(format!("line {}, column {c} (`{}`): {why}", line_of(rec), rows.names[c])))?;
            features.push(value);
        }
    }
    let (labels, class_names) = rows.labels(coding).map_err(malformed)?;
    Ok(CsvTable { path: path.into(), feature_names: rows.feature_names(), label_name: rows.label_name(), features, labels, class_names })
}

/// The columns and labels of a CSV file as [`read_csv`] codes them, without parsing its
/// feature cells (`dataset_info`): a [`CsvTable`] whose `features` is empty.
pub fn read_csv_labels(path: &Path, label_column: Option<&str>, coding: LabelCoding) -> Result<CsvTable> {
    let bytes = kd_core::files::read_regular(path)?;
    let rows = parse_rows(&bytes, path, label_column)?;
    let (labels, class_names) = rows.labels(coding).map_err(|reason| KdError::Malformed { path: path.into(), reason })?;
    Ok(CsvTable {
        path: path.into(),
        feature_names: rows.feature_names(),
        label_name: rows.label_name(),
        features: Vec::new(),
        labels,
        class_names,
    })
}

/// A CSV file split into its header and data records, with the label column found.
struct Rows {
    /// Column names (from the header, else `column N`).
    names: Vec<String>,
    data: Vec<csv::StringRecord>,
    label_idx: usize,
    feature_cols: Vec<usize>,
}

impl Rows {
    fn feature_names(&self) -> Vec<String> {
        self.feature_cols.iter().map(|&c| self.names[c].clone()).collect()
    }

    fn label_name(&self) -> String {
        self.names[self.label_idx].clone()
    }

    /// Class indices and class names of the label column.
    fn labels(&self, coding: LabelCoding) -> std::result::Result<(Vec<usize>, Vec<String>), String> {
        let raw: Vec<(&str, u64)> = self.data.iter().map(|r| (&r[self.label_idx], line_of(r))).collect();
        code_labels(&raw, coding, &self.names[self.label_idx])
    }
}

/// The line of a record, counted from 1 (header included).
fn line_of(r: &csv::StringRecord) -> u64 {
    r.position().map(|p| p.line()).unwrap_or(0)
}

/// Reads the records, recognises the header, checks the row lengths and column names, and
/// finds the label column.
fn parse_rows(bytes: &[u8], path: &Path, label_column: Option<&str>) -> Result<Rows> {
    let malformed = |reason: String| KdError::Malformed { path: path.into(), reason };
    if bytes.is_empty() {
        return Err(malformed("empty file".into()));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        // Ragged rows are checked below, with a clearer message than the csv crate's.
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut records = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| csv_error(path, e))?;
        // A line with one empty field is a blank line: skip it.
        if rec.len() == 1 && rec[0].is_empty() {
            continue;
        }
        records.push(rec);
    }
    let Some(first) = records.first() else {
        return Err(malformed("empty file (no rows)".into()));
    };
    let width = first.len();
    let is_num = |s: &str| s.parse::<f64>().is_ok();
    let has_header = match records.get(1) {
        Some(second) => first.iter().zip(second.iter()).any(|(a, b)| !is_num(a) && is_num(b)),
        None => first.iter().any(|a| !is_num(a)),
    };
    let names: Vec<String> =
        if has_header { first.iter().map(String::from).collect() } else { (0..width).map(|i| format!("column {i}")).collect() };
    let data = if has_header { &records[1..] } else { &records[..] };
    if data.is_empty() {
        return Err(malformed("no data rows after the header".into()));
    }
    if width < 2 {
        return Err(malformed(format!("{width} column(s): a table needs at least one feature and a label")));
    }
    for rec in data {
        if rec.len() != width {
            return Err(malformed(format!(
                "line {} has {} fields but {} has {width} (rows of different lengths)",
                line_of(rec),
                rec.len(),
                if has_header { "the header" } else { "line 1" }
            )));
        }
    }
    if has_header {
        for (j, name) in names.iter().enumerate() {
            if let Some(i) = names[..j].iter().position(|n| n == name) {
                return Err(malformed(format!("columns {i} and {j} are both named `{name}`: column names must be unique")));
            }
        }
    }
    let label_idx = resolve_label_column(&names, label_column).map_err(malformed)?;
    if !has_header && data.len() > 2 {
        // A header of numeric names (`0,1,2,label_id` written as numbers) is read as data: its
        // "label" then is a value no other row has.
        let first_label = &data[0][label_idx];
        let rest: std::collections::HashSet<&str> = data[1..].iter().map(|r| &r[label_idx]).collect();
        let rest_repeats = rest.len() < data.len() - 1;
        if rest_repeats && !rest.contains(first_label) {
            return Err(malformed(format!(
                "line 1 was read as data (every field is a number), but its label `{first_label}` occurs on no other line: if \
                 line 1 names the columns, give them names that are not numbers"
            )));
        }
    }
    let feature_cols: Vec<usize> = (0..width).filter(|&c| c != label_idx).collect();
    // The records after the header, owned.
    let data = records.split_off(usize::from(has_header));
    Ok(Rows { names, data, label_idx, feature_cols })
}

fn csv_error(path: &Path, e: csv::Error) -> KdError {
    let line = e.position().map(|p| format!("line {}: ", p.line())).unwrap_or_default();
    match e.into_kind() {
        csv::ErrorKind::Io(io) => KdError::io("reading", path, io),
        csv::ErrorKind::Utf8 { err, .. } => KdError::Malformed { path: path.into(), reason: format!("{line}not UTF-8 text ({err})") },
        other => KdError::Malformed { path: path.into(), reason: format!("{line}{other:?}") },
    }
}

fn parse_cell(cell: &str) -> std::result::Result<f32, String> {
    if cell.is_empty() {
        return Err("empty cell (missing values are not supported)".into());
    }
    let v: f64 = cell.parse().map_err(|_| format!("`{cell}` is not a number"))?;
    let v32 = v as f32;
    if !v32.is_finite() {
        return Err(format!("`{cell}` is not a finite number"));
    }
    Ok(v32)
}

fn resolve_label_column(names: &[String], spec: Option<&str>) -> std::result::Result<usize, String> {
    let width = names.len();
    let Some(spec) = spec.map(str::trim) else {
        return Ok(width - 1);
    };
    let by_name: Vec<usize> = (0..width).filter(|&i| names[i] == spec).collect();
    match by_name.len() {
        1 => return Ok(by_name[0]),
        0 => {}
        _ => return Err(format!("label column `{spec}` is ambiguous: columns {by_name:?} have that name")),
    }
    if let Ok(i) = spec.parse::<i64>() {
        let idx = if i < 0 { width as i64 + i } else { i };
        if (0..width as i64).contains(&idx) {
            return Ok(idx as usize);
        }
        return Err(format!("label column index {i} is out of range for {width} columns"));
    }
    Err(format!("no column named `{spec}` (columns: {})", names.join(", ")))
}

/// Class indices and class names from label cells `(value, line)`.
fn code_labels(raw: &[(&str, u64)], coding: LabelCoding, column: &str) -> std::result::Result<(Vec<usize>, Vec<String>), String> {
    let as_int = |s: &str| s.parse::<i64>().ok();
    match coding {
        LabelCoding::Integers { classes } => {
            let mut labels = Vec::with_capacity(raw.len());
            for &(cell, line) in raw {
                let v =
                    as_int(cell).ok_or_else(|| format!("line {line}, label column `{column}`: `{cell}` is not an integer class index"))?;
                let ok = v >= 0 && classes.is_none_or(|k| (v as u64) < k as u64);
                if !ok {
                    let range = classes.map(|k| format!("0..{k}")).unwrap_or_else(|| "0..".into());
                    return Err(format!("line {line}, label column `{column}`: label {v} is out of range {range}"));
                }
                labels.push(v as usize);
            }
            let k = match classes {
                Some(k) => k,
                None => {
                    let (at, &max) = labels.iter().enumerate().max_by_key(|&(_, l)| *l).ok_or("no labels")?;
                    // Inferred from the largest label: more classes than rows means the column
                    // holds something other than class indices (and would allocate a name for
                    // every class up to it).
                    if max >= labels.len() {
                        return Err(format!(
                            "line {}, label column `{column}`: label {max} would make {} classes for {} rows; labels must be class \
                             indices 0..K",
                            raw[at].1,
                            max as u128 + 1,
                            labels.len()
                        ));
                    }
                    max + 1
                }
            };
            Ok((labels, (0..k).map(|c| c.to_string()).collect()))
        }
        LabelCoding::Auto => {
            let ints: Option<Vec<i64>> = raw.iter().map(|&(c, _)| as_int(c)).collect();
            if let Some(ints) = ints {
                let k = ints.iter().max().map_or(0, |&m| m + 1);
                let mut seen = vec![false; if ints.iter().all(|&v| v >= 0) && k as usize <= ints.len() { k as usize } else { 0 }];
                if !seen.is_empty() {
                    ints.iter().for_each(|&v| seen[v as usize] = true);
                    if seen.iter().all(|&s| s) {
                        return Ok((ints.iter().map(|&v| v as usize).collect(), (0..k).map(|c| c.to_string()).collect()));
                    }
                }
            }
            let mut distinct: Vec<&str> = raw.iter().map(|&(c, _)| c).collect();
            distinct.sort_unstable();
            distinct.dedup();
            let numeric: Option<Vec<f64>> = distinct.iter().map(|c| c.parse::<f64>().ok()).collect();
            if let Some(nums) = numeric {
                let mut pairs: Vec<(f64, &str)> = nums.into_iter().zip(distinct.iter().copied()).collect();
                pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
                distinct = pairs.into_iter().map(|p| p.1).collect();
            }
            if let Some(&(_, line)) = raw.iter().find(|&&(c, _)| c.is_empty()) {
                return Err(format!("line {line}, label column `{column}`: empty label"));
            }
            let index = |c: &str| distinct.iter().position(|&d| d == c).expect("a distinct value");
            let labels = if distinct.len() <= 64 {
                raw.iter().map(|&(c, _)| index(c)).collect()
            } else {
                let map: std::collections::HashMap<&str, usize> = distinct.iter().enumerate().map(|(i, &d)| (d, i)).collect();
                raw.iter().map(|&(c, _)| map[c]).collect()
            };
            Ok((labels, distinct.iter().map(|s| s.to_string()).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn reason(e: KdError) -> String {
        match e {
            KdError::Malformed { reason, .. } => reason,
            other => panic!("expected Malformed, got {other}"),
        }
    }

    #[test]
    fn reads_a_table_with_header_and_last_label() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.csv", "x,y,label\n1,2.5,0\n-3,4e1,1\n\n5, 6 ,2\n");
        let t = read_csv(&p, None, LabelCoding::Integers { classes: Some(3) }).unwrap();
        assert_eq!(t.feature_names, vec!["x", "y"]);
        assert_eq!(t.label_name, "label");
        assert_eq!(t.features, vec![1.0, 2.5, -3.0, 40.0, 5.0, 6.0]);
        assert_eq!(t.labels, vec![0, 1, 2]);
        assert_eq!(t.classes(), 3);
    }

    #[test]
    fn label_column_by_name_index_or_negative_index() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.csv", "species,a,b\nsetosa,1,2\nvirginica,3,4\nsetosa,5,6\n");
        for spec in ["species", "0", "-3"] {
            let t = read_csv(&p, Some(spec), LabelCoding::Auto).unwrap();
            assert_eq!(t.labels, vec![0, 1, 0], "{spec}");
            assert_eq!(t.class_names, vec!["setosa", "virginica"]);
            assert_eq!(t.feature_names, vec!["a", "b"]);
        }
        assert!(reason(read_csv(&p, Some("colour"), LabelCoding::Auto).unwrap_err()).contains("no column named `colour`"));
        assert!(reason(read_csv(&p, Some("7"), LabelCoding::Auto).unwrap_err()).contains("index 7 is out of range"));
    }

    #[test]
    fn headerless_files_and_label_mapping() {
        let dir = tempfile::tempdir().unwrap();
        // No header, text labels: mapped in sorted order.
        let p = write(dir.path(), "a.csv", "1.5,2,b\n3,4,a\n5,6,c\n");
        let t = read_csv(&p, None, LabelCoding::Auto).unwrap();
        assert_eq!(t.rows(), 3);
        assert_eq!(t.feature_names, vec!["column 0", "column 1"]);
        assert_eq!(t.labels, vec![1, 0, 2]);
        // Integer labels 1..=3 and -1/1 are mapped in numeric order (10 after 9, not after 1).
        let p = write(dir.path(), "b.csv", "f,label\n0,1\n0,3\n0,10\n0,9\n");
        let t = read_csv(&p, None, LabelCoding::Auto).unwrap();
        assert_eq!(t.labels, vec![0, 1, 3, 2]);
        assert_eq!(t.class_names, vec!["1", "3", "9", "10"]);
        let p = write(dir.path(), "c.csv", "f,label\n0,-1\n0,1\n");
        assert_eq!(read_csv(&p, None, LabelCoding::Auto).unwrap().labels, vec![0, 1]);
        // Labels 0..K-1 all present: kept.
        let p = write(dir.path(), "d.csv", "f,label\n0,2\n0,0\n0,1\n");
        assert_eq!(read_csv(&p, None, LabelCoding::Auto).unwrap().labels, vec![2, 0, 1]);
    }

    #[test]
    fn bad_tables_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let strict = LabelCoding::Integers { classes: Some(2) };
        let p = write(dir.path(), "e.csv", "");
        assert_eq!(reason(read_csv(&p, None, strict).unwrap_err()), "empty file");
        let p = write(dir.path(), "h.csv", "a,b,label\n");
        assert!(reason(read_csv(&p, None, strict).unwrap_err()).contains("no data rows"));
        let p = write(dir.path(), "n.csv", "a,b,label\n1,2,0\n3,abc,1\n");
        assert_eq!(reason(read_csv(&p, None, strict).unwrap_err()), "line 3, column 1 (`b`): `abc` is not a number");
        let p = write(dir.path(), "m.csv", "a,b,label\n1,,0\n");
        assert!(reason(read_csv(&p, None, strict).unwrap_err()).contains("line 2, column 1 (`b`): empty cell"));
        let p = write(dir.path(), "i.csv", "a,b,label\n1,inf,0\n");
        assert!(reason(read_csv(&p, None, strict).unwrap_err()).contains("not a finite number"));
        let p = write(dir.path(), "r.csv", "a,b,label\n1,2,0\n1,2\n");
        assert_eq!(reason(read_csv(&p, None, strict).unwrap_err()), "line 3 has 2 fields but the header has 3 (rows of different lengths)");
        let p = write(dir.path(), "l.csv", "a,b,label\n1,2,0\n1,2,2\n");
        assert_eq!(reason(read_csv(&p, None, strict).unwrap_err()), "line 3, label column `label`: label 2 is out of range 0..2");
        let p = write(dir.path(), "t.csv", "a,b,label\n1,2,0\n1,2,yes\n");
        assert!(reason(read_csv(&p, None, strict).unwrap_err()).contains("`yes` is not an integer class index"));
        // Found by the fuzzer: a huge label must not size the class list.
        let p = write(dir.path(), "big.csv", "a,label\n1,0\n2,6666666666666661\n");
        let err = reason(read_csv(&p, None, LabelCoding::Integers { classes: None }).unwrap_err());
        assert!(
            err.contains("line 3, label column `label`: label 6666666666666661 would make 6666666666666662 classes for 2 rows"),
            "{err}"
        );
        let p = write(dir.path(), "o.csv", "label\n1\n");
        assert!(reason(read_csv(&p, None, strict).unwrap_err()).contains("at least one feature"));
        let p = dir.path().join("u.csv");
        std::fs::write(&p, [b'a', b',', b'l', b'\n', 0xff, b',', b'0', b'\n']).unwrap();
        assert!(reason(read_csv(&p, None, strict).unwrap_err()).contains("not UTF-8"));
    }
}
