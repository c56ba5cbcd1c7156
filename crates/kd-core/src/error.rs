//! The one error type of the library crates.

use std::path::PathBuf;

/// Everything that can go wrong in a distillation run, each variant naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum KdError {
    /// The teacher and the student disagree on the number of classes.
    #[error("class-count mismatch: the teacher has {teacher} classes but the student has {student}")]
    ClassCountMismatch {
        /// The teacher's class count.
        teacher: usize,
        /// The student's class count.
        student: usize,
    },
    /// A label is not a valid class index.
    #[error("label {label} at sample {sample} is out of range: the model has {num_classes} classes")]
    LabelOutOfRange {
        /// The label.
        label: usize,
        /// The sample's position in the batch or split.
        sample: usize,
        /// The model's class count.
        num_classes: usize,
    },
    /// A tensor holds NaN or infinite values where finite ones are required.
    #[error("non-finite values (NaN or infinity) in {what}")]
    NonFinite {
        /// Where the values were found.
        what: String,
    },
    /// Two tensors that must agree in shape do not.
    #[error("shape mismatch in {what}: expected {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// Which tensors.
        what: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape given.
        actual: Vec<usize>,
    },
    /// A configuration value that cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A method needs something the run does not provide (a teacher, features, indices...).
    #[error("{method} needs {what}")]
    Missing {
        /// The method (or component) that needs it.
        method: String,
        /// What is missing.
        what: String,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `creating folder`...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not what it should be.
    #[error("malformed file {path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        reason: String,
    },
    /// Burn failed to (de)serialise a record.
    #[error("model or optimiser record: {0}")]
    Record(String),
    /// Training ran away: the loss exploded, or the model stayed at chance.
    #[error("training diverged at epoch {epoch}: {reason}")]
    Diverged {
        /// The epoch (from 1) at whose end the run was judged.
        epoch: usize,
        /// Which signal showed it.
        reason: String,
    },
    /// A folder or file another process is writing (its lock is held).
    #[error("{path} is in use by another writer: {holder} holds its lock {lock}; wait for it to finish, or choose another output")]
    Locked {
        /// The folder or file guarded.
        path: PathBuf,
        /// The holder as its lock file names it (`process PID (command)`).
        holder: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// A checkpoint folder that holds another run, or no run to resume.
    #[error("run folder {path}: {reason}")]
    RunFolder {
        /// The checkpoint folder.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A method broke the training protocol (a hook's contract: replayed rows that are not the
    /// batch's, learnable parts it never builds, a value its loss did not keep).
    #[error("method `{method}` broke the training protocol: {reason}")]
    Protocol {
        /// The method.
        method: String,
        /// What went wrong.
        reason: String,
    },
    /// A backend was asked for that is not compiled in or finds no device.
    #[error("backend `{name}` is not available: {reason}")]
    Backend {
        /// The backend name asked for.
        name: String,
        /// Why it is not available.
        reason: String,
    },
}

/// Result with [`KdError`].
pub type Result<T, E = KdError> = std::result::Result<T, E>;

impl KdError {
    /// An I/O error with the path and what was being done.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KdError::Io { action, path: path.into(), source }
    }
}
