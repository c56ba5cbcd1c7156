//! Batches and the source the training loop draws them from.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{KdError, Result};

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
        let label_data: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let labels_t = Tensor::<1, Int>::from_data(TensorData::new(label_data, [n]), device);
        Ok(Batch { inputs, labels: labels_t, labels_host: labels, indices, views })
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
        }
    }

    /// Concatenates two batches (replayed samples first).
    pub fn concat(first: Batch, second: Batch) -> Batch {
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
        }
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
