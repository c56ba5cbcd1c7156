//! The bench's plan: every dataset loaded, with its recipes, architectures and methods, before
//! anything trains (bad names fail first); the data subsets the suites train on; and the plan
//! written out for a reference implementation (`--export-data`).

use std::path::Path;

use anyhow::{Result, bail};
use kd::data::registry::LoadOptions;
use kd::data::{DatasetSplits, InMemoryDataset};
use kd::methods::{MethodInfo, Suite};
use kd::prelude::*;

use super::files::{InputKind, Preset, Recipes};
use super::{BenchArgs, Selection};
use crate::experiment::sanitize;
use crate::npy::write_npy;

/// The method whose effective configuration `--export-data` writes into `plan.json`: the one
/// `xtask/pytorch/train_parity.py` trains in PyTorch.
const PARITY_METHOD: &str = kd::baselines::kd::NAME;

/// One dataset of the bench, loaded, with what runs on it.
pub struct Planned {
    /// The teacher's data.
    pub data: DatasetSplits,
    /// The students' data: the teacher's, or fewer labelled samples of it.
    pub student_data: DatasetSplits,
    /// What kind of input it is (which architectures and sizes apply).
    pub kind: InputKind,
    /// The methods of the methods suite on it.
    pub methods: Vec<MethodInfo>,
    /// The teacher's architecture.
    pub teacher_spec: String,
    /// The students' architecture.
    pub student_spec: String,
    /// The teacher's recipe.
    pub config: TrainConfig,
    /// The students' recipe.
    pub student_config: TrainConfig,
    /// How it was loaded: the name given and the options (what a saved student records).
    pub options: LoadOptions,
    /// The dataset's name as given (`--datasets` or the preset).
    pub source: String,
    /// Method settings that differ from the methods' defaults on this dataset (`recipes.toml`'s
    /// for its kind of input, or the CIFAR-10 suite's).
    pub method_settings: std::collections::BTreeMap<String, toml::Table>,
    /// Augmentation draws per sample of the teacher cache.
    pub cache_draws: usize,
}

/// Loads every selected dataset with its recipes; a dataset no chosen method applies to is
/// left out (and said so).
pub fn plan(args: &BenchArgs, recipes: &Recipes, preset: &Preset, selection: &Selection) -> Result<Vec<Planned>> {
    let all = kd::methods::methods()?;
    let mut plan = Vec::new();
    for name in &selection.datasets {
        let info = kd::data::registry::dataset_info(name, &LoadOptions::default())?;
        let kind = recipes.kind(info.input_shape);
        let sizes = preset.sizes(kind);
        let mut options = sizes.data.clone();
        if args.train_limit.is_some() {
            options.train_limit = args.train_limit;
        }
        let data = kd::data::load_dataset(name, &options)?;
        data.print_warnings();
        let candidates: Vec<MethodInfo> = match (&selection.chosen, kind) {
            (Some(chosen), _) => chosen.clone(),
            (None, InputKind::SmallImages) => all.iter().copied().filter(|m| m.in_suite(Suite::ConvPair)).collect(),
            (None, _) => all.clone(),
        };
        let classes = data.train.num_classes();
        let skipped = |m: &MethodInfo| selection.chosen.is_none() && sizes.skip_methods.iter().any(|s| s == m.name);
        let (left_out, candidates): (Vec<MethodInfo>, Vec<MethodInfo>) = candidates.into_iter().partition(skipped);
        if !left_out.is_empty() {
            let names: Vec<&str> = left_out.iter().map(|m| m.name).collect();
            eprintln!("bench: the preset leaves {} out on {name} (for time; `--methods` runs them)", names.join(", "));
        }
        let methods: Vec<MethodInfo> = candidates.into_iter().filter(|m| m.applies_to(classes)).collect();
        if methods.is_empty() {
            eprintln!("bench: no chosen method applies to {name} ({classes} classes); skipped");
            continue;
        }
        let epochs = args.epochs.unwrap_or(sizes.teacher_epochs);
        let student_epochs = args.student_epochs.or(args.epochs).unwrap_or(sizes.student_epochs);
        // `--student-per-class` is for images; tables train the students on the teacher's data.
        let per_class = match kind {
            InputKind::Tables => sizes.student_per_class,
            _ => args.student_per_class.or(sizes.student_per_class),
        };
        let student_data = per_class_subset(&data, per_class.unwrap_or(0))?;
        let (teacher, student) = recipes.models(kind);
        let student_spec = args.student.clone().unwrap_or_else(|| student.into());
        // Methods that compare spatial maps compare constants on an MLP's 1x1 features: their
        // rows would be CE's at their cost. Named methods run as asked.
        let (methods, flat): (Vec<MethodInfo>, Vec<MethodInfo>) = methods.into_iter().partition(|m| {
            !m.spatial_maps || selection.chosen.is_some() || ModelSpec::parse(&student_spec).map_or(true, |s| s.spatial_features())
        });
        if !flat.is_empty() {
            let names: Vec<&str> = flat.iter().map(|m| m.name).collect();
            eprintln!(
                "bench: {} compare spatial maps, which the {student_spec} students of {name} do not have; skipped there",
                names.join(", ")
            );
        }
        plan.push(Planned {
            data,
            student_data,
            kind,
            methods,
            teacher_spec: args.teacher.clone().unwrap_or_else(|| teacher.into()),
            student_spec,
            config: recipes.train.with_epochs(epochs),
            student_config: recipes.train.with_epochs(student_epochs),
            options,
            source: name.clone(),
            method_settings: recipes.methods.of(kind).clone(),
            cache_draws: args.cache_draws.unwrap_or(super::DEFAULT_CACHE_DRAWS),
        });
    }
    disambiguate(&mut plan)?;
    Ok(plan)
}

/// The file or folder a dataset name points at (`csv:PATH`, `images:DIR`...), if any.
fn source_path(source: &str) -> Option<&Path> {
    source.split_once(':').map(|(_, path)| Path::new(path)).filter(|p| p.exists())
}

/// Two datasets of the plan that load under one name (datasets given by path are named by their
/// file stem or folder: `csv:a/blobs.csv` and `csv:b/blobs.csv` are both `csv:blobs`) would be
/// averaged as seeds of one dataset and their saved students would overwrite each other: each
/// gets the stem plus a short disambiguator of its path (`csv:blobs@3f2a9c`), which the tables
/// show. The same file given twice under two spellings is an error.
fn disambiguate(plan: &mut [Planned]) -> Result<()> {
    let mut by_name: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, p) in plan.iter().enumerate() {
        by_name.entry(p.data.name.clone()).or_default().push(i);
    }
    for (name, shared) in by_name.into_iter().filter(|(_, v)| v.len() > 1) {
        for (k, &i) in shared.iter().enumerate() {
            for &j in &shared[..k] {
                if let (Some(a), Some(b)) = (source_path(&plan[i].source), source_path(&plan[j].source))
                    && (kd::core::atomic::same_file(a, b) || std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok())
                {
                    bail!(
                        "--datasets names one file twice (`{}` and `{}`): it would be averaged with itself",
                        plan[j].source,
                        plan[i].source
                    );
                }
            }
        }
        let mut said = Vec::new();
        for &i in &shared {
            let source = &plan[i].source;
            let canonical = source_path(source).and_then(|p| std::fs::canonicalize(p).ok()).map(|p| p.display().to_string());
            let tag = crate::experiment::hash_str(canonical.as_deref().unwrap_or(source)) & 0xff_ffff;
            let renamed = format!("{name}@{tag:06x}");
            said.push(format!("{source} is {renamed}"));
            plan[i].data.name = renamed.clone();
            plan[i].student_data.name = renamed;
        }
        eprintln!("bench: {} datasets share the name {name}: {}", shared.len(), said.join(", "));
    }
    Ok(())
}

/// The first `per_class` samples of each class of `data`'s training split (in the split's
/// order; 0: all of it), the whole validation and test splits: the students' data when they see
/// fewer labelled samples than the teacher (KD's transfer-set setting).
pub fn per_class_subset(data: &DatasetSplits, per_class: usize) -> Result<DatasetSplits> {
    if per_class == 0 {
        return Ok(data.clone());
    }
    let train = first_of_each_class(&data.train, per_class, &data.name, "training")?;
    Ok(DatasetSplits { train, ..data.clone() })
}

/// `data` with its validation split cut to the first `per_class` samples of each class (in the
/// split's order), where `per_class` is given: validation is read every epoch to select the
/// best one, and a class-balanced thousand images select as well as five thousand at a fifth
/// of the cost. Without a validation split there is nothing to cut.
pub fn valid_per_class(data: DatasetSplits, per_class: Option<usize>) -> Result<DatasetSplits> {
    let (Some(n), Some(valid)) = (per_class, &data.valid) else { return Ok(data) };
    let valid = first_of_each_class(valid, n, &data.name, "validation")?;
    Ok(DatasetSplits { valid: Some(valid), ..data })
}

/// The first `per_class` samples of each class of `split` (in its order); an error names the
/// dataset, the split and the class that has fewer.
fn first_of_each_class(split: &InMemoryDataset, per_class: usize, data_name: &str, split_name: &str) -> Result<InMemoryDataset> {
    let mut taken = vec![0usize; split.num_classes()];
    let positions: Vec<usize> = (0..split.len())
        .filter(|&i| {
            let c = split.label(i);
            taken[c] += 1;
            taken[c] <= per_class
        })
        .collect();
    if let Some(c) = taken.iter().position(|&n| n < per_class) {
        bail!("{data_name}: class {c} has {} {split_name} samples, fewer than the {per_class} per class asked for", taken[c]);
    }
    Ok(split.subset(&positions, format!("{} ({per_class} per class)", split.name()))?)
}

/// Of every `keep`-th positive (class 1) sample of the training split, one is kept, and every
/// negative: a teacher trained on it believes positives are `keep` times rarer than they are.
pub fn fewer_positives(data: &DatasetSplits, keep: usize) -> Result<DatasetSplits> {
    let train = &data.train;
    let mut positives = 0usize;
    let positions: Vec<usize> = (0..train.len())
        .filter(|&i| {
            if train.label(i) != 1 {
                return true;
            }
            positives += 1;
            (positives - 1).is_multiple_of(keep)
        })
        .collect();
    let train = train.subset(&positions, format!("{} (1/{keep} of the positives)", train.name()))?;
    Ok(DatasetSplits { train, ..data.clone() })
}

/// The first `limit` samples of the training split (`None`, or no fewer samples: all of it).
/// An error where they lack a class the split has: a folder's training files come class by
/// class, and its first images are one class, not a sample of the data (`per_class_subset`
/// takes that).
pub fn first_samples(data: &DatasetSplits, limit: Option<usize>) -> Result<DatasetSplits> {
    let Some(n) = limit.filter(|&n| n < data.train.len()) else { return Ok(data.clone()) };
    let train = data.train.subset(&(0..n).collect::<Vec<_>>(), format!("{} (first {n})", data.train.name()))?;
    let present = |counts: Vec<usize>| counts.iter().filter(|&&c| c > 0).count();
    let (kept, all) = (present(train.class_counts()), present(data.train.class_counts()));
    if kept < all {
        bail!(
            "{}: the first {n} training samples hold {kept} of its {all} classes (are its files sorted by class?): \
             a limit must keep every class: leave `train_limit` out or give data in mixed order",
            data.name
        );
    }
    Ok(DatasetSplits { train, ..data.clone() })
}

/// Writes every planned dataset (and its recipes and models) into a folder of its own under `dir`.
pub fn export(dir: &Path, plan: &[Planned]) -> Result<()> {
    for p in plan {
        let out = dir.join(sanitize(&p.data.name));
        export_plan(&out, p, true)?;
        eprintln!("bench: {} written to {}", p.data.name, out.display());
    }
    Ok(())
}

/// Writes one split's inputs (un-augmented, normalised) and labels as `NAME_x.npy`, `NAME_y.npy`.
fn export_split(dir: &Path, name: &str, split: &kd::data::InMemoryDataset) -> Result<usize> {
    let all: Vec<usize> = (0..split.len()).collect();
    let batch = split.host_batch(&all, 0, 0)?;
    write_npy(&dir.join(format!("{name}_x.npy")), &batch.shape, &batch.inputs)?;
    let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
    write_npy(&dir.join(format!("{name}_y.npy")), &[labels.len()], &labels)?;
    Ok(split.len())
}

/// The data and recipes of one planned dataset, for a reference implementation to train on;
/// the teacher's training split only with `teacher_split` (without it, the reference loads the
/// teacher instead of training it). The inputs are written un-augmented and normalised; the
/// load options in `plan.json` say how to augment them.
pub fn export_plan(dir: &Path, p: &Planned, teacher_split: bool) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let valid = p.data.valid.as_ref().ok_or_else(|| anyhow::anyhow!("{} has no validation split to export", p.data.name))?;
    let sizes = serde_json::json!({
        "teacher_train": if teacher_split { Some(export_split(dir, "teacher_train", &p.data.train)?) } else { None },
        "student_train": export_split(dir, "student_train", &p.student_data.train)?,
        "valid": export_split(dir, "valid", valid)?,
        "test": export_split(dir, "test", &p.data.test)?,
    });
    let plan = serde_json::json!({
        "dataset": p.data.name,
        "classes": p.data.train.num_classes(),
        "input_shape": p.data.train.input_shape(),
        "teacher": p.teacher_spec,
        "student": p.student_spec,
        "teacher_recipe": p.config,
        "student_recipe": p.student_config,
        PARITY_METHOD: kd::methods::effective_config(PARITY_METHOD, None)?,
        // How the training inputs are augmented (pad-and-crop pads the raw image with zeros,
        // `(0 - mean) / std` in the normalised inputs written here) and normalised.
        "augment": p.data.train.augment(),
        "mean": p.data.train.normalization().0,
        "std": p.data.train.normalization().1,
        "sizes": sizes,
        "commit": crate::report::Provenance::new(None).commit,
    });
    kd::core::checkpoint::write_atomic(&dir.join("plan.json"), serde_json::to_string_pretty(&plan)?.as_bytes())?;
    Ok(())
}
