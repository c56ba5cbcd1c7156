//! THE ONE PLACE XTASK NAMES METHODS: the parts of the bench whose membership is a list of
//! method names rather than something the registry says. Everything else the bench runs comes
//! from the registry (the tasks a method applies to, what it needs from a teacher, whether it
//! has a warm-up). To be replaced by suite membership declared in the registry entries
//! (`MethodSpec`); then this file goes.

use kd::methods::MethodInfo;

/// The parts of the bench that run a named list of methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedPart {
    /// The convolutional pair (resnet14 -> resnet8 on small images): the logit methods and the
    /// hint methods (CNN epochs are slow on a CPU; `--methods` chooses freely).
    ConvPair,
    /// The biased-teacher scenario: the binary methods it compares (those registered).
    BiasedTeacher,
}

/// Whether `method` runs in `part`.
pub fn runs_in(part: NamedPart, method: &MethodInfo) -> bool {
    let names: &[&str] = match part {
        NamedPart::ConvPair => &["ce", "kd", "dkd", "rld", "fitnet", "fitnet+kd", "dckd", "dckd+fitnet"],
        NamedPart::BiasedTeacher => &["ce", "kd", "binary_kd", "debiased"],
    };
    names.contains(&method.name)
}

/// The method whose effective configuration `--export-data` writes into `plan.json`: the one
/// `xtask/pytorch/train_parity.py` trains in PyTorch.
pub const PARITY_METHOD: &str = "kd";
