//! `cargo xtask datasets`, `models` and `methods`: what is available, and how big it is.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use kd::data::ImageFolderReport;
use kd::data::registry::LoadOptions;
use kd::models::ModelSpec;

#[derive(Args, Debug)]
pub struct DatasetsArgs {
    /// Datasets to describe instead of the registered ones: any name `--datasets` takes
    /// (`images:DIR`, `csv:FILE`, `cifar10:DIR`, ...).
    names: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// `images:DIR`: the side every image becomes (default: the first image's size).
    #[arg(long)]
    image_size: Option<usize>,
    /// `images:DIR`: resize images of another size (shorter side, centre crop).
    #[arg(long)]
    resize: bool,
    /// `images:DIR`: the decode cache's folder, or `off`.
    #[arg(long)]
    decode_cache: Option<String>,
    /// `images:DIR`: the labels of a split folder without class folders (`file,label` CSV with a
    /// header row, or `file label` lines).
    #[arg(long)]
    label_file: Option<std::path::PathBuf>,
    /// Measure loading: the first decode (into an empty cache under `target/`), the cached
    /// reopen, the memory the decoded set holds, and augmented batch assembly (batches/s).
    #[arg(long)]
    measure: bool,
    /// Batch size of the assembly measurement.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

pub fn datasets(args: DatasetsArgs) -> Result<()> {
    if args.names.is_empty() {
        let infos = kd::data::registry::list_datasets();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&infos)?);
            return Ok(());
        }
        for info in &infos {
            println!("{}", info.summary_line());
        }
        return Ok(());
    }
    let options = LoadOptions {
        image_size: args.image_size,
        resize: args.resize,
        decode_cache: args.decode_cache.clone(),
        label_file: args.label_file.clone(),
        ..LoadOptions::default()
    };
    for name in &args.names {
        if args.measure {
            measure_loading(name, &options, args.batch_size)?;
            continue;
        }
        let data = kd::data::load_dataset(name, &options)?;
        data.print_warnings();
        let info = data.info();
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "dataset": info, "image_folder": data.image_folder.as_deref() }))?
            );
            continue;
        }
        println!("{}", info.summary_line());
        if let Some(names) = &info.class_names {
            println!("  classes: {}", names.join(", "));
        }
        if let Some(folder) = &data.image_folder {
            print_folder(folder);
        }
    }
    Ok(())
}

fn print_folder(folder: &ImageFolderReport) {
    println!("  folder: {} ({} layout)", folder.root.display(), folder.layout);
    for (split, counts) in &folder.files {
        println!("  {split}: {} files, per class {counts:?}", counts.iter().sum::<usize>());
    }
    let sizes: Vec<String> = folder.sizes_found.iter().map(|(w, h, n)| format!("{w}x{h} ({n})")).collect();
    println!("  sizes found: {}", if sizes.is_empty() { "-".into() } else { sizes.join(", ") });
    let [c, h, w] = folder.shape;
    println!("  decoded as {c}x{h}x{w}, {}", if folder.in_memory { "held in memory" } else { "read through a memory map" });
    match &folder.cache {
        Some(dir) => println!("  decode cache: {} ({}; delete the folder to decode again)", dir.display(), folder.cache_status),
        None => println!("  decode cache: off"),
    }
    println!("  read in {:.2} s", folder.seconds);
}

/// The resident and peak memory of this process in bytes (`VmRSS`, `VmHWM`), where `/proc` has
/// them.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `datasets NAME --measure`: decode into an empty cache, reopen, assemble augmented batches.
fn measure_loading(name: &str, options: &LoadOptions, batch_size: usize) -> Result<()> {
    use kd::core::BatchSource;
    let mb = |b: u64| b as f64 / (1u64 << 20) as f64;
    let cache = std::path::PathBuf::from(format!("target/kd-measure-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    // Always a fresh cache of its own: the first load must decode, the second reopen.
    let options = LoadOptions { decode_cache: Some(cache.display().to_string()), ..options.clone() };
    let (rss0, _) = memory();
    let started = Instant::now();
    let first = kd::data::load_dataset(name, &options)?;
    let decode_s = started.elapsed().as_secs_f64();
    let (rss1, hwm1) = memory();
    let folder = first.image_folder.clone();
    let bytes: usize = folder
        .as_ref()
        .map_or(0, |f| f.files.iter().map(|(_, c)| c.iter().sum::<usize>()).sum::<usize>() * f.shape.iter().product::<usize>());
    println!("{name}: first load {decode_s:.2} s ({})", folder.as_ref().map_or("not an image folder".into(), |f| f.cache_status.clone()));
    println!(
        "  decoded set {:.1} MiB (8-bit); resident memory grew {:.1} MiB ({:.2}x), peak over the start {:.1} MiB ({:.2}x)",
        mb(bytes as u64),
        mb(rss1.saturating_sub(rss0)),
        rss1.saturating_sub(rss0) as f64 / bytes.max(1) as f64,
        mb(hwm1.saturating_sub(rss0)),
        hwm1.saturating_sub(rss0) as f64 / bytes.max(1) as f64
    );
    drop(first);
    let started = Instant::now();
    let data = kd::data::load_dataset(name, &options)?;
    println!(
        "  reopen {:.2} s ({})",
        started.elapsed().as_secs_f64(),
        data.image_folder.as_ref().map_or("-".into(), |f| f.cache_status.clone())
    );
    let train = &data.train;
    let order = kd::core::rng::permutation(train.len(), 0, 1);
    let started = Instant::now();
    let mut images = 0usize;
    let mut batches = 0usize;
    for (k, chunk) in order.chunks(batch_size.max(1)).enumerate() {
        let b = train.host_batch(chunk, 1 + k / 1000, 0)?;
        images += b.labels.len();
        batches += 1;
        if started.elapsed().as_secs_f64() > 10.0 {
            break;
        }
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "  batch assembly ({}, normalise, f32; one thread): {:.1} batches/s of {batch_size} = {:.0} images/s",
        train.augment().describe(),
        batches as f64 / s,
        images as f64 / s
    );
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Input shape CxHxW.
    #[arg(long, default_value = "3x32x32")]
    input: String,
    /// Number of classes.
    #[arg(long, default_value_t = 100)]
    classes: usize,
    /// Models to list (default: the whole zoo).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
}

pub fn models(args: ModelsArgs) -> Result<()> {
    let [c, h, w] = crate::loaded_model::parse_shape(&args.input)?;
    let names: Vec<String> = args.models.unwrap_or_else(|| ModelSpec::zoo().iter().map(ModelSpec::name).collect());
    println!("| model | parameters | multiply-adds ({}x{}x{}, {} classes) |", c, h, w, args.classes);
    println!("|---|---|---|");
    for name in names {
        let spec = ModelSpec::parse(&name)?;
        match kd::models::model_summary(&spec, [c, h, w], args.classes) {
            Ok(s) => println!("| {} | {} | {} |", s.name, group(s.params as u64), group(s.mult_adds)),
            Err(e) => println!("| {} | - | {e} |", spec.name()),
        }
    }
    Ok(())
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `cargo xtask methods`: every registered method with its paper, the reference code it is
/// checked against, teacher need and crate.
pub fn methods() -> Result<()> {
    println!("| method | paper | reference code | teacher | tasks | crate |");
    println!("|---|---|---|---|---|---|");
    for m in kd::methods::methods()? {
        let need = match m.need {
            kd::core::TeacherNeed::Nothing => "none",
            kd::core::TeacherNeed::Logits => "logits",
            kd::core::TeacherNeed::LogitsAndFeatures => "logits and features",
            kd::core::TeacherNeed::PreActivation => "logits, features and pre-activation features",
        };
        let tasks = match m.tasks {
            kd::methods::Tasks::Any => "any",
            kd::methods::Tasks::MultiClass => "multi-class",
            kd::methods::Tasks::Binary => "binary",
        };
        let reference = if m.reference.is_empty() { "–" } else { m.reference };
        println!("| {} | {} | {reference} | {need} | {tasks} | {} |", m.name, m.paper, m.crate_name);
    }
    Ok(())
}
