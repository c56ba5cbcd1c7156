//! An in-memory labelled dataset that serves batches to the training loop.

use std::sync::Arc;

use burn::tensor::Device;
use kd_core::rng::{KeyedRng, hash_key};
use kd_core::{Batch, BatchSource, KdError, Result};
use serde::{Deserialize, Serialize};

/// Raw sample values: bytes for images (scaled by 1/255 when batched), floats for tabular data.
#[derive(Debug, Clone)]
pub enum Values {
    /// Pixel bytes, `0..=255` (or the dataset's own range, scaled by `1/scale`).
    U8 { data: Arc<Vec<u8>>, scale: f32 },
    /// Floating-point features.
    F32(Arc<Vec<f32>>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::U8 { data, .. } => data.len(),
            Values::F32(d) => d.len(),
        }
    }
}

/// Image augmentation drawn per sample from `(seed, epoch, view, index)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Augment {
    /// Zero-pad by this many pixels, then crop back to the original size at a random offset
    /// (CIFAR's pad-4 random crop; 0: no crop).
    pub crop_padding: usize,
    /// Flip horizontally with probability 1/2.
    pub hflip: bool,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Augment::default()
    }

    /// Whether anything is drawn.
    pub fn is_active(&self) -> bool {
        self.crop_padding > 0 || self.hflip
    }
}

/// A labelled dataset held in memory.
#[derive(Debug, Clone)]
pub struct InMemoryDataset {
    name: String,
    values: Values,
    labels: Arc<Vec<usize>>,
    /// Sample positions in `values` (a split is a list of positions, not a copy).
    rows: Arc<Vec<usize>>,
    shape: [usize; 3],
    classes: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    augment: Augment,
    seed: u64,
}

impl InMemoryDataset {
    /// A dataset from raw values (`labels.len()` samples of `shape`), checking every size and
    /// label.
    pub fn new(name: impl Into<String>, values: Values, labels: Vec<usize>, shape: [usize; 3], classes: usize) -> Result<Self> {
        let name = name.into();
        let per = shape.iter().product::<usize>();
        if per == 0 {
            return Err(KdError::InvalidConfig(format!("{name}: sample shape {shape:?} is empty")));
        }
        if values.len() != per * labels.len() {
            return Err(KdError::ShapeMismatch {
                what: format!("{name}: values for {} samples of {shape:?}", labels.len()),
                expected: vec![per * labels.len()],
                actual: vec![values.len()],
            });
        }
        if classes == 0 {
            return Err(KdError::InvalidConfig(format!("{name}: a dataset needs at least one class")));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
            return Err(KdError::LabelOutOfRange { label: l, sample: i, num_classes: classes });
        }
        let rows = Arc::new((0..labels.len()).collect());
        Ok(InMemoryDataset {
            name,
            values,
            labels: Arc::new(labels),
            rows,
            shape,
            classes,
            mean: vec![0.0; shape[0]],
            std: vec![1.0; shape[0]],
            augment: Augment::none(),
            seed: 0,
        })
    }

    /// Per-channel normalisation `(x - mean) / std`, after scaling bytes to `[0, 1]`.
    pub fn with_normalization(mut self, mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.len() != self.shape[0] || std.len() != self.shape[0] || std.iter().any(|&s| !(s > 0.0)) {
            return Err(KdError::InvalidConfig(format!(
                "{}: normalisation needs {} means and {} positive stds",
                self.name, self.shape[0], self.shape[0]
            )));
        }
        self.mean = mean;
        self.std = std;
        Ok(self)
    }

    /// Turns augmentation on (with its seed).
    pub fn with_augment(mut self, augment: Augment, seed: u64) -> Self {
        self.augment = augment;
        self.seed = seed;
        self
    }

    /// Renames the split.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The samples at the given positions of this split, as a new split (shares the values).
    pub fn subset(&self, positions: &[usize], name: impl Into<String>) -> Result<Self> {
        let rows = positions
            .iter()
            .map(|&p| self.rows.get(p).copied().ok_or_else(|| KdError::InvalidConfig(format!("{}: sample {p} out of range", self.name))))
            .collect::<Result<Vec<_>>>()?;
        Ok(InMemoryDataset { name: name.into(), rows: Arc::new(rows), ..self.clone() })
    }

    /// The first `n` samples (or all of them).
    pub fn take(&self, n: usize) -> Result<Self> {
        let n = n.min(self.len());
        self.subset(&(0..n).collect::<Vec<_>>(), self.name.clone())
    }

    /// The per-channel mean and std of this split's values (before normalisation), for
    /// normalising with training statistics.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let [c, h, w] = self.shape;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for &row in self.rows.iter() {
            for ch in 0..c {
                for p in 0..h * w {
                    let v = self.raw(row, ch * h * w + p) as f64;
                    sum[ch] += v;
                    sq[ch] += v * v;
                }
            }
        }
        let n = (self.rows.len() * h * w).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std: Vec<f32> = sq
            .iter()
            .zip(&sum)
            .map(|(q, s)| {
                let m = s / n;
                ((q / n - m * m).max(0.0).sqrt() as f32).max(1e-6)
            })
            .collect();
        (mean, std)
    }

    /// The class of every sample of the split.
    pub fn labels(&self) -> Vec<usize> {
        self.rows.iter().map(|&r| self.labels[r]).collect()
    }

    fn raw(&self, row: usize, offset: usize) -> f32 {
        let per: usize = self.shape.iter().product();
        match &self.values {
            Values::U8 { data, scale } => data[row * per + offset] as f32 / scale,
            Values::F32(d) => d[row * per + offset],
        }
    }

    /// Writes one (augmented, normalised) sample into `out`.
    fn write_sample(&self, position: usize, epoch: usize, view: u64, out: &mut [f32]) {
        let row = self.rows[position];
        let [c, h, w] = self.shape;
        let (mut dy, mut dx, mut flip) = (0isize, 0isize, false);
        if self.augment.is_active() && epoch > 0 {
            let mut rng = KeyedRng::new(&[self.seed, epoch as u64, view, row as u64]);
            let pad = self.augment.crop_padding;
            if pad > 0 {
                dy = rng.below(2 * pad + 1) as isize - pad as isize;
                dx = rng.below(2 * pad + 1) as isize - pad as isize;
            }
            flip = self.augment.hflip && rng.below(2) == 1;
        }
        for ch in 0..c {
            let (m, s) = (self.mean[ch], self.std[ch]);
            for y in 0..h {
                for x in 0..w {
                    let sy = y as isize + dy;
                    let sx0 = if flip { (w - 1 - x) as isize } else { x as isize };
                    let sx = sx0 + dx;
                    let v = if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                        0.0 // zero padding, as torchvision pads the raw image
                    } else {
                        self.raw(row, ch * h * w + sy as usize * w + sx as usize)
                    };
                    out[ch * h * w + y * w + x] = (v - m) / s;
                }
            }
        }
    }
}

impl BatchSource for InMemoryDataset {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn input_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn label(&self, index: usize) -> usize {
        self.labels[self.rows[index]]
    }

    fn augmented(&self) -> bool {
        self.augment.is_active()
    }

    /// `epoch` 0 means evaluation: never augmented.
    fn batch(&self, indices: &[usize], epoch: usize, view: u64, device: &Device) -> Result<Batch> {
        let per: usize = self.shape.iter().product();
        let mut inputs = vec![0f32; per * indices.len()];
        let mut labels = Vec::with_capacity(indices.len());
        for (k, &i) in indices.iter().enumerate() {
            if i >= self.rows.len() {
                return Err(KdError::InvalidConfig(format!("{}: sample {i} out of range ({} samples)", self.name, self.rows.len())));
            }
            self.write_sample(i, epoch, view, &mut inputs[k * per..(k + 1) * per]);
            labels.push(self.labels[self.rows[i]]);
        }
        let views = vec![if self.augment.is_active() && epoch > 0 { hash_key(&[epoch as u64, view]) } else { 0 }; indices.len()];
        let [c, h, w] = self.shape;
        Batch::from_host(inputs, [indices.len(), c, h, w], labels, indices.to_vec(), views, device)
    }

    fn fingerprint(&self) -> u64 {
        let mut words = vec![self.rows.len() as u64, self.classes as u64, self.seed];
        words.extend(self.shape.iter().map(|&s| s as u64));
        words.extend(self.mean.iter().chain(&self.std).map(|v| v.to_bits() as u64));
        words.push(self.augment.crop_padding as u64 | ((self.augment.hflip as u64) << 32));
        // A sample of rows and values: cheap, and changes when the data does.
        let step = (self.rows.len() / 64).max(1);
        for p in (0..self.rows.len()).step_by(step) {
            let row = self.rows[p];
            words.push(row as u64 ^ ((self.labels[row] as u64) << 40));
            words.push(self.raw(row, 0).to_bits() as u64);
        }
        hash_key(&words)
    }
}
