//! Batches and the source the training loop draws them from.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{KdError, Result};
use crate::replay::ReplayEntry;

/// A mini-batch: inputs, labels, and the dataset index of every sample.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[batch, channels, height, width]` on a plain (non-autodiff) device.
    pub inputs: Tensor<4>,
    /// `[batch]` class indices on the same device.
    pub labels: Tensor<1, Int>,
    /// The labels on the host (for checks and per-sample bookkeeping).
    pub labels_host: Vec<usize>,
    /// The dataset index of each sample (PS-KD tables, caches, replay buffers).
    pub indices: Vec<usize>,
    /// The augmentation draw of each sample (0 when not augmented); caches key on it.
    pub views: Vec<u64>,
    /// Rows a method replayed at the front of the batch ([`crate::Distiller::prepare_batch`]),
    /// with what it stored of them, in row order: row `i < replayed.len()` is `replayed[i]`.
    /// Empty for a loader's batch.
    pub replayed: Vec<ReplayEntry>,
}

impl Batch {
    /// Builds a batch from host data, checking every size.
    pub fn from_host(
        inputs: Vec<f32>,
        shape: [usize; 4],
        labels: Vec<usize>,
        indices: Vec<usize>,
        views: Vec<u64>,
        device: &Device,
    ) -> Result<Self> {
        let n = shape[0];
        if inputs.len() != shape.iter().product::<usize>() {
            return Err(KdError::ShapeMismatch { what: "batch inputs".into(), expected: shape.to_vec(), actual: vec![inputs.len()] });
        }
        for (what, len) in [("labels", labels.len()), ("indices", indices.len()), ("views", views.len())] {
            if len != n {
                return Err(KdError::ShapeMismatch { what: format!("batch {what}"), expected: vec![n], actual: vec![len] });
            }
        }
        let inputs = Tensor::<4>::from_data(TensorData::new(inputs, shape), device);
        Ok(Batch { inputs, labels: labels_tensor(&labels, device), labels_host: labels, indices, views, replayed: Vec::new() })
    }

    /// The same batch on `device`: the inputs moved, the labels made again from the host's
    /// copy, so that they have `device`'s own integer type (flex's is 32-bit, which LibTorch's
    /// integer kernels reject), as [`Batch::from_host`] makes them.
    pub fn to_device(self, device: &Device) -> Batch {
        if self.inputs.device() == *device {
            return self;
        }
        Batch { inputs: self.inputs.to_device(device), labels: labels_tensor(&self.labels_host, device), ..self }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels_host.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels_host.is_empty()
    }

    /// The first `n` samples (all of them when the batch has fewer).
    pub fn first(&self, n: usize) -> Batch {
        let n = n.min(self.len());
        Batch {
            inputs: self.inputs.clone().narrow(0, 0, n),
            labels: self.labels.clone().narrow(0, 0, n),
            labels_host: self.labels_host[..n].to_vec(),
            indices: self.indices[..n].to_vec(),
            views: self.views[..n].to_vec(),
            replayed: self.replayed.iter().take(n).cloned().collect(),
        }
    }

    /// Concatenates two batches (replayed samples first). The result's replayed rows are
    /// `first`'s, then `second`'s when every row of `first` is replayed (rows after a fresh one
    /// are fresh).
    pub fn concat(first: Batch, second: Batch) -> Batch {
        let mut replayed = first.replayed;
        if replayed.len() == first.labels_host.len() {
            replayed.extend(second.replayed);
        }
        let mut labels_host = first.labels_host;
        labels_host.extend(second.labels_host);
        let mut indices = first.indices;
        indices.extend(second.indices);
        let mut views = first.views;
        views.extend(second.views);
        Batch {
            inputs: Tensor::cat(vec![first.inputs, second.inputs], 0),
            labels: Tensor::cat(vec![first.labels, second.labels], 0),
            labels_host,
            indices,
            views,
            replayed,
        }
    }

    /// The stored logits of the replayed rows as `[replayed, classes]` on `device` (`None`
    /// when no row is replayed), or a protocol error naming `method` when an entry's logits
    /// are not `classes` long.
    pub fn replayed_logits(&self, method: &str, classes: usize, device: &Device) -> Result<Option<Tensor<2>>> {
        if self.replayed.is_empty() {
            return Ok(None);
        }
        if let Some(e) = self.replayed.iter().find(|e| e.logits.len() != classes) {
            return Err(KdError::Protocol {
                method: method.into(),
                reason: format!("a replayed row stored {} logits, the student has {classes} classes", e.logits.len()),
            });
        }
        let flat: Vec<f32> = self.replayed.iter().flat_map(|e| e.logits.iter().copied()).collect();
        Ok(Some(Tensor::<2>::from_data(TensorData::new(flat, [self.replayed.len(), classes]), device)))
    }

    /// Checks every label against the number of classes.
    pub fn check_labels(&self, num_classes: usize) -> Result<()> {
        for (pos, &label) in self.labels_host.iter().enumerate() {
            if label >= num_classes {
                return Err(KdError::LabelOutOfRange { label, sample: self.indices[pos], num_classes });
            }
        }
        Ok(())
    }
}

/// Class indices as a `[n]` integer tensor on `device`, in the device's own integer type.
fn labels_tensor(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::<1, Int>::from_data(TensorData::new(values, [labels.len()]), device)
}

/// A dataset split the training loop can draw batches from.
///
/// Batches are pure functions of `(indices, epoch, view)`: the same call gives the same batch,
/// which is what makes runs reproducible and resumable.
pub trait BatchSource: Send + Sync {
    /// A short name for logs (`mnist/train`).
    fn name(&self) -> String;
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of classes of the task.
    fn num_classes(&self) -> usize;
    /// `[channels, height, width]` of one input.
    fn input_shape(&self) -> [usize; 3];
    /// The label of one sample.
    fn label(&self, index: usize) -> usize;
    /// Whether batches are augmented (a fresh draw per epoch and view).
    fn augmented(&self) -> bool;
    /// A batch of the given samples; augmentation (if any) is drawn from
    /// `(seed, epoch, view, index)`.
    fn batch(&self, indices: &[usize], epoch: usize, view: u64, device: &Device) -> Result<Batch>;
    /// A fingerprint of the data and its preprocessing (for caches).
    fn fingerprint(&self) -> u64;
}
