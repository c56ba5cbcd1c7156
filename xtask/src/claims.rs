//! The papers' claims a suite tests: comparisons such as `rld > dkd` declared in the suite
//! file (`[[claims]]`), read on the runs as same-seed paired differences of the test accuracy
//! at the selected epoch, with a paired t-test saying whether a difference is beyond the seeds'
//! noise. The verdicts are computed, never written by hand: a report says what its runs say.

use anyhow::{Result, bail};
use serde::Deserialize;

use crate::chains::{ChainRecord, VARIANT_NAMES};
use crate::report::{Record, mean_std};

/// Prefix of a comparison's side that names a teacher-assistant chain variant.
const CHAIN_PREFIX: &str = "chain:";
/// Suffix of a chain side that asks for the variant with dynamic stopping.
const STOP_SUFFIX: &str = "+stop";

/// One paper's claim, as a suite file declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The paper (or method) that makes the claim.
    pub paper: String,
    /// The claim in words, as the paper makes it.
    pub says: String,
    /// Comparisons `"a > b"`, each read as "a's accuracy beats b's": a method's name, or
    /// `chain:VARIANT` (`chain:TAKD`, `chain:direct KD+stop`...) for a chain's student.
    pub compare: Vec<String>,
}

/// One side of a comparison: the runs it reads.
#[derive(Debug, Clone, PartialEq)]
enum Side {
    Method(String),
    Chain { variant: String, stopping: bool },
}

impl Side {
    fn parse(text: &str, methods: &[&str]) -> Result<Side> {
        let text = text.trim();
        if let Some(chain) = text.strip_prefix(CHAIN_PREFIX) {
            let (variant, stopping) = match chain.strip_suffix(STOP_SUFFIX) {
                Some(v) => (v.trim(), true),
                None => (chain.trim(), false),
            };
            if !VARIANT_NAMES.iter().any(|name| name.starts_with(variant)) || variant.is_empty() {
                bail!("`{text}`: no chain variant `{variant}` (the chains' variants: {})", VARIANT_NAMES.join(", "));
            }
            return Ok(Side::Chain { variant: variant.to_string(), stopping });
        }
        if !methods.contains(&text) {
            bail!("`{text}` is not a method (a registered method's name, or `chain:VARIANT` for a chain)");
        }
        Ok(Side::Method(text.to_string()))
    }

    /// This side's accuracy for each seed on `dataset` (failed runs left out).
    fn accuracies(&self, dataset: &str, records: &[Record], chains: &[ChainRecord]) -> Vec<(u64, f64)> {
        match self {
            Side::Method(method) => records
                .iter()
                .filter(|r| r.dataset == dataset && &r.method == method && r.error.is_none())
                .map(|r| (r.seed, r.selected_acc))
                .collect(),
            Side::Chain { variant, stopping } => chains
                .iter()
                .filter(|r| r.dataset == dataset && r.variant.starts_with(variant.as_str()) && r.dynamic_stopping == *stopping)
                .map(|r| (r.seed, r.student_acc))
                .collect(),
        }
    }
}

/// A comparison `a > b`, parsed.
#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    text: String,
    ahead: Side,
    behind: Side,
}

impl Comparison {
    fn parse(text: &str, methods: &[&str]) -> Result<Comparison> {
        let parts: Vec<&str> = text.split(" > ").collect();
        let [ahead, behind] = parts.as_slice() else {
            bail!("`{text}`: write a comparison as `a > b` (spaces around `>`)");
        };
        Ok(Comparison { text: text.trim().to_string(), ahead: Side::parse(ahead, methods)?, behind: Side::parse(behind, methods)? })
    }
}

/// Checks every claim's comparisons; the error names the claim and the comparison.
pub fn check(claims: &[Claim]) -> Result<(), (String, String)> {
    let methods = kd::methods::method_names();
    for (i, claim) in claims.iter().enumerate() {
        if claim.compare.is_empty() {
            return Err((format!("claims[{i}].compare"), "is empty: give at least one comparison `a > b`".into()));
        }
        for (j, text) in claim.compare.iter().enumerate() {
            Comparison::parse(text, &methods).map_err(|e| (format!("claims[{i}].compare[{j}]"), e.to_string()))?;
        }
    }
    Ok(())
}

/// Two-sided 95 % critical values of Student's t for 1 to 30 degrees of freedom (the
/// standard table; beyond 30 the value at 30, which errs towards "within the noise"). A
/// statistics crate would bring a linear-algebra crate into the build for these 30 numbers.
const T_95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093,
    2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// What the paired differences `a - b` (one per seed) say.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    /// Seeds on which `a` is ahead.
    pub ahead: usize,
    /// The paired t statistic (`None` with one seed, or no spread and no difference).
    pub t: Option<f64>,
    /// The two-sided 95 % critical value for `n - 1` degrees of freedom.
    pub critical: Option<f64>,
}

impl Paired {
    pub fn of(differences: &[f64]) -> Paired {
        let n = differences.len();
        let (mean, std) = mean_std(differences);
        let ahead = differences.iter().filter(|&&d| d > 0.0).count();
        let (t, critical) = if n < 2 {
            (None, None)
        } else if std == 0.0 {
            // Every seed moved by the same amount: a difference with no spread at all.
            ((mean != 0.0).then_some(mean.signum() * f64::INFINITY), Some(T_95[(n - 2).min(29)]))
        } else {
            (Some(mean / (std / (n as f64).sqrt())), Some(T_95[(n - 2).min(29)]))
        };
        Paired { n, mean, std, ahead, t, critical }
    }

    /// The verdict in words.
    pub fn verdict(&self) -> &'static str {
        match (self.t, self.critical) {
            (Some(t), Some(c)) if t > c => "holds: ahead beyond the seeds' noise",
            (Some(t), Some(c)) if t < -c => "reversed: behind beyond the seeds' noise",
            _ if self.n < 2 => "one seed: no test",
            _ => "not shown: within the seeds' noise",
        }
    }
}

/// The claims section of a report: for every claim and dataset, each comparison's paired
/// difference, how many seeds it won, the t statistic and the verdict. Empty without claims.
pub fn markdown(claims: &[Claim], records: &[Record], chains: &[ChainRecord]) -> String {
    if claims.is_empty() {
        return String::new();
    }
    let methods = kd::methods::method_names();
    let mut datasets: Vec<&str> = records.iter().map(|r| r.dataset.as_str()).chain(chains.iter().map(|c| c.dataset.as_str())).collect();
    datasets.sort();
    datasets.dedup();
    let mut md = String::from(
        "### The papers' claims\n\n\
         Each comparison `a > b` is read on the test accuracy at the selected epoch, paired by seed: *Δ* is the mean \
         (± std) over the seeds both ran of a's accuracy minus b's, in points; *t* the paired t statistic, against \
         the two-sided 95 % critical value for the seeds' number (3 seeds: 4.30).\n\n\
         | dataset | paper | claim | comparison | Δ (points) | a ahead | t (95 % needs) | verdict |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for dataset in datasets {
        for claim in claims {
            for text in &claim.compare {
                let Ok(comparison) = Comparison::parse(text, &methods) else { continue };
                let ahead = comparison.ahead.accuracies(dataset, records, chains);
                let behind = comparison.behind.accuracies(dataset, records, chains);
                let differences: Vec<f64> =
                    ahead.iter().filter_map(|(seed, a)| behind.iter().find(|(s, _)| s == seed).map(|(_, b)| a - b)).collect();
                let cells = if differences.is_empty() {
                    "| - | - | - | not run (no seed ran both) |".to_string()
                } else {
                    let p = Paired::of(&differences);
                    let t = match (p.t, p.critical) {
                        (Some(t), Some(c)) => format!("{t:.2} ({c:.2})"),
                        _ => "-".to_string(),
                    };
                    format!("| {:+.2} ± {:.2} | {} of {} | {t} | {} |", p.mean, p.std, p.ahead, p.n, p.verdict())
                };
                md.push_str(&format!("| {dataset} | {} | {} | `{}` {cells}\n", claim.paper, claim.says, comparison.text));
            }
        }
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::BackendTag;
    use kd::prelude::TrainConfig;

    fn run(method: &str, seed: u64, acc: f64) -> Record {
        let recipe: TrainConfig = serde_json::from_value(serde_json::json!({
            "epochs": 1, "batch_size": 8, "optimizer": { "kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": false, "weight_decay": 0.0 }
        }))
        .unwrap();
        let backend = BackendTag { name: "flex".into(), device: "cpu".into() };
        Record { error: None, selected_acc: acc, ..Record::failed("d", method, "-", "s", seed, &backend, &recipe, String::new()) }
    }

    fn claim(compare: &[&str]) -> Claim {
        Claim { paper: "P".into(), says: "says".into(), compare: compare.iter().map(|c| c.to_string()).collect() }
    }

    /// The verdict follows the paired t-test: a steady lead holds, a steady deficit is
    /// reversed, a lead that changes sign between seeds is within the noise.
    #[test]
    fn paired_differences_decide_the_verdict() {
        assert_eq!(Paired::of(&[1.0, 1.2, 0.8]).verdict(), "holds: ahead beyond the seeds' noise"); // t = 8.66
        assert_eq!(Paired::of(&[-1.0, -1.2, -0.8]).verdict(), "reversed: behind beyond the seeds' noise");
        // Ahead on average and on 2 of 3 seeds, but t = 0.5 / (1.32 / sqrt 3) = 0.65 < 4.30.
        let mixed = Paired::of(&[1.0, 1.5, -1.0]);
        assert_eq!((mixed.ahead, mixed.verdict()), (2, "not shown: within the seeds' noise"));
        assert!((mixed.t.unwrap() - 0.6547).abs() < 1e-3, "{mixed:?}");
        assert_eq!(Paired::of(&[2.0]).verdict(), "one seed: no test");
        assert_eq!(Paired::of(&[0.5, 0.5, 0.5]).verdict(), "holds: ahead beyond the seeds' noise");
        assert_eq!(Paired::of(&[0.0, 0.0]).verdict(), "not shown: within the seeds' noise");
    }

    /// Seeds pair with the same seed only; a failed run and an unrun method leave their seeds out.
    #[test]
    fn the_report_pairs_seeds_and_says_what_did_not_run() {
        let mut records = vec![run("rld", 0, 71.0), run("rld", 1, 72.0), run("rld", 2, 70.0), run("dkd", 2, 69.0), run("dkd", 1, 71.5)];
        records.push(Record { error: Some("diverged".into()), ..run("dkd", 0, 0.0) });
        let md = markdown(&[claim(&["rld > dkd", "rld > kd"])], &records, &[]);
        // Seeds 1 and 2: differences 0.5 and 1.0.
        assert!(md.contains("| `rld > dkd` | +0.75 ± 0.35 | 2 of 2 | 3.00 (12.71) | not shown: within the seeds' noise |"), "{md}");
        assert!(md.contains("| `rld > kd` | - | - | - | not run (no seed ran both) |"), "{md}");
        assert_eq!(markdown(&[], &records, &[]), "");
    }

    /// A suite file's comparisons name methods and chain variants that exist.
    #[test]
    fn comparisons_are_checked_when_the_suite_loads() {
        assert!(check(&[claim(&["rld > dkd", "chain:TAKD > chain:direct KD", "chain:dynamic chain+stop > ce"])]).is_ok());
        let why = |c: &[&str]| check(&[claim(c)]).unwrap_err();
        assert_eq!(why(&["rld > nonesuch"]).0, "claims[0].compare[0]");
        assert!(why(&["rld > nonesuch"]).1.contains("`nonesuch` is not a method"));
        assert!(why(&["ce > kd", "rld>dkd"]).1.contains("write a comparison as `a > b`"));
        assert!(why(&["chain:TADK > ce"]).1.contains("no chain variant `TADK`"));
        assert!(why(&[]).1.contains("is empty"));
    }
}
