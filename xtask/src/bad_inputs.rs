//! The bad-input corpus (`tests/bad-inputs/cases.toml`): each case drives the real command
//! line (`train`, `bench`, `throughput`) with a broken configuration, data file, run folder or
//! checkpoint, and asserts the exact error, or for degenerate data that training still makes
//! sense of, the warning recorded in `results.json`.
//!
//! A case is a list of steps run in a fresh folder (`{tmp}`); `{files}` is the corpus's folder
//! of data and experiment files, and each experiment file `{files}/NAME.toml` is there as
//! `{tmp}/configs/NAME.toml` with `{tmp}` and `{files}` replaced in it. Every step but the last
//! must succeed. Steps starting with `@` prepare the folder:
//!
//! | step | what it does |
//! |---|---|
//! | `@template SRC DST` | copies SRC to DST with `{tmp}` and `{files}` replaced |
//! | `@mkfifo PATH` | creates a named pipe |
//! | `@remove PATH` | deletes a file |
//! | `@edit PATH FROM TO` | replaces the first occurrence of the bytes FROM by TO |
//! | `@truncate PATH N` | keeps the first N bytes |
//! | `@idx DIR PREFIX N ROWS COLS CLASSES` | writes an MNIST-format pair of N images |
//! | `@cifar10 DIR N` | writes the six CIFAR-10 batch files with N records each |
//! | `@images DIR CLASSES N SIDE EXT` | writes N RGB images of SIDE pixels in each of CLASSES class folders `DIR/c0/000.EXT`... |
//! | `@image PATH KIND SIDE` | writes one image file: KIND `rgb`, `grey16` (16-bit PNG), `cmyk` (a CMYK JPEG frame header) |
//! | `@write PATH TEXT` | writes TEXT (`\n` for line breaks) to PATH, creating its folder |
//! | `@mkdir PATH` | creates a folder |
//! | `@symlink TARGET LINK` | creates a symbolic link |
//! | `@retype SRC DST DTYPE [KEY]` | copies a safetensors file with its float32 tensors (or only KEY) stored as DTYPE (`F16`, `BF16`, `F64`, `I64`) |
//! | `@dup-key SRC DST KEY NEW` | copies a safetensors file with tensor KEY stored a second time under the name NEW |
//! | `@copy SRC DST` | copies a file byte for byte |
//! | `@append PATH TEXT` | appends TEXT (no line break added) |
//! | `@lock DIR` | takes DIR's writer lock for the rest of the corpus (another writer holding it) |
//! | `@absent PATH` | fails if PATH exists |
//! | `@lacks PATH TEXT` | fails if the file PATH contains TEXT |
//! | `@contains PATH TEXT` | fails unless the file PATH contains TEXT |
//! | `@count DIR N` | fails unless the folder DIR holds N entries |
//!
//! A case whose command must succeed (the fault is a panic or a crash it must not have) says
//! `succeed = true` instead of an expected error or warning.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Deserialize;

use crate::{Cli, dispatch};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// The class of bad input (for the count per class).
    class: String,
    steps: Vec<Vec<String>>,
    /// A substring of the last step's error (its whole chain).
    #[serde(default)]
    expect_error: Option<String>,
    /// A substring of a warning in the `results.json` named by `results`.
    #[serde(default)]
    expect_warning: Option<String>,
    #[serde(default)]
    results: Option<String>,
    /// The last step must succeed (no error, no panic).
    #[serde(default)]
    succeed: bool,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bad-inputs")
}

fn expand(arg: &str, tmp: &Path, files: &Path) -> String {
    arg.replace("{tmp}", &tmp.display().to_string()).replace("{files}", &files.display().to_string())
}

fn idx_file(kind: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, kind];
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn number(args: &[String], i: usize) -> Result<usize> {
    args.get(i).with_context(|| format!("step {args:?} needs argument {i}"))?.parse().with_context(|| format!("step {args:?}"))
}

/// Runs a preparation step (`@...`).
fn prepare(args: &[String], tmp: &Path, files: &Path) -> Result<()> {
    let path = |i: usize| -> Result<PathBuf> { Ok(PathBuf::from(args.get(i).with_context(|| format!("step {args:?}"))?)) };
    match args[0].as_str() {
        "@template" => {
            let text = std::fs::read_to_string(path(1)?)?;
            std::fs::write(path(2)?, expand(&text, tmp, files))?;
        }
        "@mkfifo" => {
            let status = std::process::Command::new("mkfifo").arg(path(1)?).status()?;
            if !status.success() {
                bail!("mkfifo failed");
            }
        }
        "@remove" => std::fs::remove_file(path(1)?)?,
        "@edit" => {
            let mut bytes = std::fs::read(path(1)?)?;
            let (from, to) = (args[2].as_bytes(), args[3].as_bytes());
            let at = bytes.windows(from.len()).position(|w| w == from).with_context(|| format!("`{}` not found", args[2]))?;
            bytes.splice(at..at + from.len(), to.iter().copied());
            std::fs::write(path(1)?, bytes)?;
        }
        "@truncate" => {
            let bytes = std::fs::read(path(1)?)?;
            std::fs::write(path(1)?, &bytes[..number(args, 2)?.min(bytes.len())])?;
        }
        "@idx" => {
            let dir = path(1)?;
            std::fs::create_dir_all(&dir)?;
            let prefix = &args[2];
            let [n, rows, cols, classes] = [number(args, 3)?, number(args, 4)?, number(args, 5)?, number(args, 6)?];
            let pixels: Vec<u8> = (0..n * rows * cols).map(|i| (i * 37 % 251) as u8).collect();
            let labels: Vec<u8> = (0..n).map(|i| (i % classes) as u8).collect();
            std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), idx_file(3, &[n as u32, rows as u32, cols as u32], &pixels))?;
            std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), idx_file(1, &[n as u32], &labels))?;
        }
        "@cifar10" => {
            let dir = path(1)?;
            std::fs::create_dir_all(&dir)?;
            let n = number(args, 2)?;
            let names =
                ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"];
            for (f, name) in names.iter().enumerate() {
                let bytes: Vec<u8> =
                    (0..n).flat_map(|i| std::iter::once((i % 10) as u8).chain((0..3072).map(move |p| ((p + i + f) % 256) as u8))).collect();
                std::fs::write(dir.join(name), bytes)?;
            }
        }
        "@images" => {
            let dir = path(1)?;
            let [classes, n, side] = [number(args, 2)?, number(args, 3)?, number(args, 4)?];
            for c in 0..classes {
                std::fs::create_dir_all(dir.join(format!("c{c}")))?;
                for i in 0..n {
                    let img = image::RgbImage::from_fn(side as u32, side as u32, |x, y| {
                        image::Rgb([(c * 50) as u8, (i * 9) as u8, (x * y) as u8])
                    });
                    img.save(dir.join(format!("c{c}/{i:03}.{}", args[5])))?;
                }
            }
        }
        "@image" => {
            let file = path(1)?;
            let side = number(args, 3)? as u32;
            std::fs::create_dir_all(file.parent().context("a file in a folder")?)?;
            match args[2].as_str() {
                "rgb" => image::RgbImage::from_pixel(side, side, image::Rgb([1, 2, 3])).save(&file)?,
                "grey16" => image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(side, side, image::Luma([4000])).save(&file)?,
                "cmyk" => {
                    // SOI, an APP0 segment, then a baseline frame header with 4 components.
                    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 20, 8, 0, side as u8, 0, side as u8, 4];
                    bytes.extend((1..=4).flat_map(|k| [k, 0x11, 0]));
                    bytes.extend([0xFF, 0xD9]);
                    std::fs::write(&file, bytes)?;
                }
                other => bail!("unknown image kind `{other}`"),
            }
        }
        "@write" => {
            let file = path(1)?;
            std::fs::create_dir_all(file.parent().context("a file in a folder")?)?;
            std::fs::write(&file, args[2].replace("\\n", "\n"))?;
        }
        "@mkdir" => std::fs::create_dir_all(path(1)?)?,
        "@symlink" => {
            #[cfg(unix)]
            std::os::unix::fs::symlink(path(1)?, path(2)?)?;
        }
        "@retype" => {
            let dtype = match args.get(3).map(String::as_str) {
                Some("F16") => burn::tensor::DType::F16,
                Some("BF16") => burn::tensor::DType::BF16,
                Some("F64") => burn::tensor::DType::F64,
                Some("I64") => burn::tensor::DType::I64,
                other => bail!("@retype: unknown dtype {other:?}"),
            };
            let only = args.get(4).map(String::as_str);
            let tensors = read_safetensors(&path(1)?)?
                .into_iter()
                .map(|(name, kind, shape, bytes)| {
                    if kind != "F32" || only.is_some_and(|k| k != name) {
                        return (name, kind, shape, bytes);
                    }
                    let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                    let data = burn::tensor::TensorData::new(values, shape.clone()).convert_dtype(dtype);
                    (name, format!("{dtype:?}"), shape, data.into_bytes().to_vec())
                })
                .collect();
            write_safetensors(&path(2)?, tensors)?;
        }
        "@dup-key" => {
            let mut tensors = read_safetensors(&path(1)?)?;
            let (key, new) = (&args[3], &args[4]);
            let copy = tensors.iter().find(|t| &t.0 == key).cloned().with_context(|| format!("@dup-key: no tensor `{key}`"))?;
            tensors.push((new.clone(), copy.1, copy.2, copy.3));
            write_safetensors(&path(2)?, tensors)?;
        }
        "@copy" => {
            std::fs::copy(path(1)?, path(2)?)?;
        }
        "@append" => {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().append(true).open(path(1)?)?;
            file.write_all(args[2].as_bytes())?;
        }
        "@lock" => {
            // Held until the process ends, as another process's lock would be.
            std::mem::forget(kd::core::lock::FolderLock::acquire(&path(1)?, "bad-input case")?);
        }
        "@absent" => {
            if path(1)?.exists() {
                bail!("{} exists", args[1]);
            }
        }
        "@lacks" => {
            let text = std::fs::read_to_string(path(1)?)?;
            if text.contains(args[2].as_str()) {
                bail!("{} contains `{}`", args[1], args[2]);
            }
        }
        "@contains" => {
            let text = std::fs::read_to_string(path(1)?)?;
            if !text.contains(args[2].as_str()) {
                bail!("{} does not contain `{}`", args[1], args[2]);
            }
        }
        "@count" => {
            let n = std::fs::read_dir(path(1)?)?.count();
            if n != number(args, 2)? {
                bail!("{} holds {n} entries, not {}", args[1], args[2]);
            }
        }
        other => bail!("unknown preparation step `{other}`"),
    }
    Ok(())
}

/// A safetensors tensor: name, dtype (`F32`...), shape, bytes.
type RawTensor = (String, String, Vec<usize>, Vec<u8>);

/// The tensors of a safetensors file, in the file's order.
fn read_safetensors(path: &Path) -> Result<Vec<RawTensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let n = u64::from_le_bytes(bytes.get(..8).context("a safetensors header")?.try_into()?) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n])?;
    let data = &bytes[8 + n..];
    let mut tensors: Vec<(usize, RawTensor)> = Vec::new();
    for (name, info) in header.into_iter().filter(|(k, _)| k != "__metadata__") {
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone())?;
        let [start, end]: [usize; 2] = serde_json::from_value(info["data_offsets"].clone())?;
        let dtype = info["dtype"].as_str().context("a dtype")?.to_string();
        tensors.push((start, (name, dtype, shape, data[start..end].to_vec())));
    }
    tensors.sort_by_key(|(start, _)| *start);
    Ok(tensors.into_iter().map(|(_, t)| t).collect())
}

/// Writes `tensors` as a safetensors file.
fn write_safetensors(path: &Path, tensors: Vec<RawTensor>) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(&bytes);
        header.insert(name, serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [start, data.len()] }));
    }
    let mut text = serde_json::to_vec(&header)?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    std::fs::write(path, out)?;
    Ok(())
}

/// Runs a step: a preparation, or a command line of `cargo xtask`.
fn step(args: &[String], tmp: &Path, files: &Path) -> Result<()> {
    if args[0].starts_with('@') {
        return prepare(args, tmp, files);
    }
    let cli = Cli::try_parse_from(std::iter::once("cargo xtask".to_string()).chain(args.iter().cloned()))?;
    dispatch(cli)
}

fn run_case(case: &Case) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let files = corpus_dir().join("files");
    let configs = tmp.path().join("configs");
    std::fs::create_dir_all(&configs)?;
    for entry in std::fs::read_dir(&files)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path)?;
            std::fs::write(configs.join(path.file_name().context("a file name")?), expand(&text, tmp.path(), &files))?;
        }
    }
    let steps: Vec<Vec<String>> = case.steps.iter().map(|s| s.iter().map(|a| expand(a, tmp.path(), &files)).collect()).collect();
    let (last, before) = steps.split_last().context("a case needs a step")?;
    for s in before {
        step(s, tmp.path(), &files).with_context(|| format!("preparing step {s:?}"))?;
    }
    let outcome = step(last, tmp.path(), &files);
    // Expectations may name files of the case's folder.
    let expect_error = case.expect_error.as_deref().map(|e| expand(e, tmp.path(), &files));
    match (&expect_error, &case.expect_warning) {
        (None, None) if case.succeed => outcome.context("should succeed")?,
        (Some(expected), None) => match outcome {
            Ok(()) => bail!("succeeded, but should fail with `{expected}`"),
            Err(e) => {
                let message = format!("{e:#}");
                if !message.contains(expected.as_str()) {
                    bail!("failed with\n    {message}\n  which does not contain\n    {expected}");
                }
            }
        },
        (None, Some(expected)) => {
            outcome.context("should succeed with a warning")?;
            let results = expand(case.results.as_deref().context("a warning case names its `results` file")?, tmp.path(), &files);
            let text = std::fs::read_to_string(&results).with_context(|| format!("reading {results}"))?;
            let records: Vec<serde_json::Value> = serde_json::from_str(&text)?;
            let warned = records
                .iter()
                .flat_map(|r| r["warnings"].as_array().cloned().unwrap_or_default())
                .any(|w| w.as_str().is_some_and(|w| w.contains(expected.as_str())));
            if !warned {
                bail!("no record of {results} carries a warning containing `{expected}`");
            }
        }
        _ => bail!("a case expects exactly one of `expect_error`, `expect_warning` and `succeed = true`"),
    }
    Ok(())
}

#[test]
fn every_bad_input_gets_its_exact_error_or_warning() {
    let path = corpus_dir().join("cases.toml");
    let corpus: Corpus = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut failures = Vec::new();
    let mut classes: std::collections::BTreeMap<&str, usize> = Default::default();
    // `BAD_INPUTS=name,...` runs only the cases whose name contains one of the words (while
    // working on some); the whole corpus runs otherwise.
    let only: Option<Vec<String>> = std::env::var("BAD_INPUTS").ok().map(|v| v.split(',').map(str::to_string).collect());
    let chosen = |case: &Case| only.as_ref().is_none_or(|words| words.iter().any(|w| case.name.contains(w.as_str())));
    for case in corpus.case.iter().filter(|c| chosen(c)) {
        *classes.entry(case.class.as_str()).or_default() += 1;
        if let Err(e) = run_case(case) {
            failures.push(format!("{}: {e:#}", case.name));
        }
    }
    let mut names: Vec<&str> = corpus.case.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), corpus.case.len(), "case names must be unique");
    assert!(corpus.case.len() >= 40, "the corpus has {} cases", corpus.case.len());
    eprintln!("bad-input corpus: {} cases {classes:?}", corpus.case.len());
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), corpus.case.len(), failures.join("\n"));
}
