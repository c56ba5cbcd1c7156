//! `cargo xtask datasets`, `models` and `methods`: what is available, and how big it is.

use anyhow::Result;
use clap::Args;
use kd::models::ModelSpec;

#[derive(Args, Debug)]
pub struct DatasetsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn datasets(args: DatasetsArgs) -> Result<()> {
    let infos = kd::data::registry::list_datasets();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    for info in &infos {
        println!("{}", info.summary_line());
    }
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
    let [c, h, w] = crate::interop::parse_shape(&args.input)?;
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

/// `cargo xtask methods`: every registered method with its paper, teacher need and crate.
pub fn methods() -> Result<()> {
    println!("| method | paper | teacher | tasks | crate |");
    println!("|---|---|---|---|---|");
    for m in kd::methods::methods()? {
        let need = match m.need {
            kd::core::TeacherNeed::Nothing => "none",
            kd::core::TeacherNeed::Logits => "logits",
            kd::core::TeacherNeed::LogitsAndFeatures => "logits and features",
        };
        let tasks = match m.tasks {
            kd::methods::Tasks::Any => "any",
            kd::methods::Tasks::MultiClass => "multi-class",
            kd::methods::Tasks::Binary => "binary",
        };
        println!("| {} | {} | {need} | {tasks} | {} |", m.name, m.paper, m.crate_name);
    }
    Ok(())
}
