//! Static and dynamic teacher-assistant chains on the bundled digits (8x8) dataset, with MLPs.
//!
//! `cargo run -p kd-multi-assistant --example multi_assistant [EPOCHS] [CHECKPOINT_DIR]`
//!
//! Trains TAKD and DGKD chains mlp-256 > mlp-64 > mlp-8, then lets the search choose the
//! assistants between mlp-256 and mlp-8 and trains that chain under dynamic stopping. With a
//! checkpoint folder, a second run resumes (finished stages are loaded, not retrained).

use kd_core::{LrSchedule, OptimizerConfig, RunOptions, TrainConfig};
use kd_data::{LoadOptions, load_dataset};
use kd_multi_assistant::{ChainMode, ChainPlan, DynamicPlan, ModelFamily, SearchConfig, StoppingConfig, run_chain, run_dynamic};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let epochs: usize = args.next().map(|e| e.parse()).transpose()?.unwrap_or(20);
    let root = args.next().map(std::path::PathBuf::from);

    let device = burn::tensor::Device::flex();
    let data = load_dataset("digits-8x8", &LoadOptions { split_seed: 1, ..Default::default() })?;
    let train = TrainConfig {
        epochs,
        batch_size: 64,
        optimizer: OptimizerConfig::Sgd { lr: 0.05, momentum: 0.9, nesterov: false, weight_decay: 5e-4 },
        schedule: LrSchedule::Constant,
        lr_warmup_epochs: 0,
        seed: 1,
        drop_last: false,
        eval_batch_size: 256,
    };
    let family = ModelFamily::mlp(vec![8, 16, 32, 64, 128, 256], 1);
    let options = |name: &str| RunOptions {
        checkpoint_dir: root.as_ref().map(|r| r.join(name)),
        resume: true,
        label: name.to_string(),
        ..Default::default()
    };

    // Static chains. Both share the teacher stage when they share a checkpoint folder.
    let takd = ChainPlan::new(family.clone(), 256, 8, train.clone()).with_assistants(vec![64]);
    println!("{}", run_chain(&takd, &data, &device, &options("static"))?.summary_line());
    let dgkd = takd.clone().with_mode(ChainMode::Dgkd);
    println!("{}", run_chain(&dgkd, &data, &device, &options("static"))?.summary_line());

    // Dynamic assistants and dynamic stopping.
    let chain = ChainPlan::new(family, 256, 8, train).with_stopping(Some(StoppingConfig { patience: 5, ..Default::default() }));
    let plan = DynamicPlan { search: SearchConfig { k_max: 2, ..Default::default() }, ..DynamicPlan::new(chain) };
    let report = run_dynamic(&plan, &data, &device, &options("dynamic"))?;
    if let Some(search) = &report.search {
        for step in &search.steps {
            println!(
                "search: between {:?} (gap {:.1}) try {} -> student {:.2}% -> {:.2}% ({})",
                step.pair,
                step.gap,
                step.chosen,
                step.student_before,
                step.student_after,
                if step.accepted { "kept" } else { "rejected" }
            );
        }
        println!("search: chain {:?}, stopped: {:?}, {} probe epochs", search.chain, search.stop, report.probe_epochs);
    }
    println!("{}", report.chain.summary_line());
    Ok(())
}
