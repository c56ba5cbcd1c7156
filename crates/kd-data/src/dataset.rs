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
    U8 {
        /// The bytes, sample after sample.
        data: Arc<Vec<u8>>,
        /// Divisor that brings the bytes to `[0, 1]` (255 for 8-bit images).
        scale: f32,
    },
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
#[serde(default, deny_unknown_fields)]
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

    /// CIFAR's standard training augmentation: pad-4 random crop and horizontal flip.
    pub fn cifar() -> Self {
        Augment { crop_padding: 4, hflip: true }
    }

    /// Whether anything is drawn.
    pub fn is_active(&self) -> bool {
        self.crop_padding > 0 || self.hflip
    }
}

/// A batch assembled on the host, before it becomes tensors (see [`InMemoryDataset::host_batch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// `[batch, channels, height, width]` values, row-major, augmented and normalised.
    pub inputs: Vec<f32>,
    /// The shape of `inputs`.
    pub shape: [usize; 4],
    /// The class of each sample.
    pub labels: Vec<usize>,
    /// The index (in the split) of each sample.
    pub indices: Vec<usize>,
    /// The augmentation draw of each sample (0 when not augmented).
    pub views: Vec<u64>,
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
    /// A name per class, where the source has them (CSV label values, CIFAR class names).
    class_names: Option<Arc<Vec<String>>>,
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
            class_names: None,
        })
    }

    /// Per-channel normalisation `(x - mean) / std`, after scaling bytes to `[0, 1]`.
    pub fn with_normalization(mut self, mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.len() != self.shape[0]
            || std.len() != self.shape[0]
            || std.iter().any(|&s| !s.is_finite() || s <= 0.0)
            || mean.iter().any(|m| !m.is_finite())
        {
            return Err(KdError::InvalidConfig(format!(
                "{}: normalisation needs {} finite means and {} positive finite stds",
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

    /// The same samples with augmentation draws that also follow `run_seed`: two runs of
    /// different seeds see different crops and flips (the draws stay a pure function of the
    /// data's seed, the run seed, the epoch, the view and the sample). Cheap: the values are
    /// shared, not copied. Without augmentation nothing changes but the fingerprint.
    pub fn for_run_seed(mut self, run_seed: u64) -> Self {
        self.seed = hash_key(&[self.seed, run_seed, 0x5EED_D4A7]);
        self
    }

    /// Names the classes (one name per class).
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self> {
        if names.len() != self.classes {
            return Err(KdError::InvalidConfig(format!("{}: {} class names for {} classes", self.name, names.len(), self.classes)));
        }
        self.class_names = Some(Arc::new(names));
        Ok(self)
    }

    /// The class names, where the source has them.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref().map(Vec::as_slice)
    }

    /// The normalisation applied to every value: per-channel `(mean, std)`.
    pub fn normalization(&self) -> (&[f32], &[f32]) {
        (&self.mean, &self.std)
    }

    /// The augmentation of this split (inactive for evaluation splits).
    pub fn augment(&self) -> Augment {
        self.augment
    }

    /// The number of samples of each class in this split.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &row in self.rows.iter() {
            counts[self.labels[row]] += 1;
        }
        counts
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
    /// normalising with training statistics. A constant channel gets std 1 (so it maps to 0
    /// instead of blowing up on other splits).
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let [c, h, w] = self.shape;
        let n = (self.rows.len() * h * w).max(1) as f64;
        // Two passes (mean, then squared deviations): exact zero for constant channels, where
        // the one-pass formula leaves round-off that would become a huge scale.
        let mut mean = vec![0f64; c];
        for &row in self.rows.iter() {
            for (ch, m) in mean.iter_mut().enumerate() {
                *m += (0..h * w).map(|p| self.raw(row, ch * h * w + p) as f64).sum::<f64>();
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; c];
        for &row in self.rows.iter() {
            for (ch, v) in var.iter_mut().enumerate() {
                *v += (0..h * w).map(|p| (self.raw(row, ch * h * w + p) as f64 - mean[ch]).powi(2)).sum::<f64>();
            }
        }
        let std = var.iter().map(|v| (v / n).sqrt()).map(|sd| if sd > 1e-12 { sd as f32 } else { 1.0 }).collect();
        (mean.iter().map(|&m| m as f32).collect(), std)
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

    /// The batch of the given samples on the host: what [`BatchSource::batch`] turns into
    /// tensors. `epoch` 0 means evaluation (never augmented); otherwise augmentation is drawn
    /// from `(seed, epoch, view, sample)`, so the same call always gives the same values.
    pub fn host_batch(&self, indices: &[usize], epoch: usize, view: u64) -> Result<HostBatch> {
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
        Ok(HostBatch { inputs, shape: [indices.len(), c, h, w], labels, indices: indices.to_vec(), views })
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
        let b = self.host_batch(indices, epoch, view)?;
        Batch::from_host(b.inputs, b.shape, b.labels, b.indices, b.views, device)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 40 samples of 3x6x6 with distinct pixel values.
    fn images(augment: Augment, seed: u64) -> InMemoryDataset {
        let per = 3 * 6 * 6;
        let data: Vec<u8> = (0..40 * per).map(|i| (i % 251) as u8).collect();
        let labels = (0..40).map(|i| i % 4).collect();
        InMemoryDataset::new("img", Values::U8 { data: Arc::new(data), scale: 255.0 }, labels, [3, 6, 6], 4)
            .unwrap()
            .with_augment(augment, seed)
    }

    #[test]
    fn run_seeds_draw_different_augmentations() {
        let idx: Vec<usize> = (0..6).collect();
        let draw = |run: u64| images(Augment::cifar(), 3).for_run_seed(run).host_batch(&idx, 2, 0).unwrap().inputs;
        assert_eq!(draw(1), draw(1), "a run seed draws the same crops and flips again");
        assert_ne!(draw(0), draw(1), "runs of seeds 0 and 1 must not share their crops and flips");
        assert_ne!(draw(1), draw(2));
        // Evaluation (epoch 0) is never augmented, whatever the run seed.
        let eval = |run: u64| images(Augment::cifar(), 3).for_run_seed(run).host_batch(&idx, 0, 0).unwrap().inputs;
        assert_eq!(eval(0), eval(1));
    }

    #[test]
    fn augmentation_is_a_pure_function_of_seed_epoch_view_and_sample() {
        let ds = images(Augment::cifar(), 7);
        let idx: Vec<usize> = (0..40).collect();
        let a = ds.host_batch(&idx, 3, 0).unwrap();
        assert_eq!(a, ds.host_batch(&idx, 3, 0).unwrap());
        // Order of the request does not matter: each sample's draw is keyed by itself.
        let rev: Vec<usize> = idx.iter().rev().copied().collect();
        let r = ds.host_batch(&rev, 3, 0).unwrap();
        assert_eq!(r.inputs[..108], a.inputs[39 * 108..]);
        assert_ne!(a.inputs, ds.host_batch(&idx, 4, 0).unwrap().inputs, "epochs must differ");
        assert_ne!(a.inputs, ds.host_batch(&idx, 3, 1).unwrap().inputs, "views must differ");
        assert_ne!(a.inputs, images(Augment::cifar(), 8).host_batch(&idx, 3, 0).unwrap().inputs, "seeds must differ");
        // Epoch 0 is evaluation: no augmentation, view 0.
        let plain = images(Augment::none(), 7).host_batch(&idx, 1, 0).unwrap();
        let eval = ds.host_batch(&idx, 0, 5).unwrap();
        assert_eq!(eval.inputs, plain.inputs);
        assert!(eval.views.iter().all(|&v| v == 0) && a.views.iter().all(|&v| v != 0));
    }

    #[test]
    fn flip_mirrors_and_crop_pads_with_zero() {
        let flip = images(Augment { crop_padding: 0, hflip: true }, 1);
        let plain = images(Augment::none(), 1).host_batch(&[0], 0, 0).unwrap().inputs;
        // Some epoch flips sample 0: its rows are then the plain rows reversed.
        let flipped = (1..40).map(|e| flip.host_batch(&[0], e, 0).unwrap().inputs).find(|x| *x != plain).unwrap();
        for y in 0..6 {
            for x in 0..6 {
                assert_eq!(flipped[y * 6 + x], plain[y * 6 + 5 - x]);
            }
        }
        // A crop with padding 4 on a 6x6 image: some epoch shifts far enough to show padding
        // (0 before normalisation), and every value is a pixel or a zero.
        let crop = images(Augment { crop_padding: 4, hflip: false }, 1);
        let shifted = (1..40).map(|e| crop.host_batch(&[0], e, 0).unwrap().inputs).find(|x| x.contains(&0.0) && *x != plain).unwrap();
        assert!(shifted.iter().all(|v| *v == 0.0 || plain.contains(v)));
    }

    #[test]
    fn batches_on_a_device_are_deterministic() {
        let device = burn::tensor::Device::flex();
        let ds = images(Augment::cifar(), 11);
        let idx = [3, 1, 4, 1, 5, 9, 2, 6];
        let a = ds.batch(&idx, 2, 0, &device).unwrap();
        let b = ds.batch(&idx, 2, 0, &device).unwrap();
        let c = ds.batch(&idx, 3, 0, &device).unwrap();
        assert_eq!(a.inputs.dims(), [8, 3, 6, 6]);
        let host = |t: burn::tensor::Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let (a, b, c) = (host(a.inputs), host(b.inputs), host(c.inputs));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, ds.host_batch(&idx, 2, 0).unwrap().inputs);
    }

    #[test]
    fn stats_counts_and_names() {
        let values = vec![1.0, 5.0, 3.0, 5.0, 2.0, 5.0];
        let ds = InMemoryDataset::new("t", Values::F32(Arc::new(values)), vec![0, 1, 1], [2, 1, 1], 2).unwrap();
        let (mean, std) = ds.channel_stats();
        assert_eq!(mean, vec![2.0, 5.0]);
        assert!((std[0] - (2.0f32 / 3.0).sqrt()).abs() < 1e-6);
        assert_eq!(std[1], 1.0, "a constant feature keeps scale 1");
        assert_eq!(ds.class_counts(), vec![1, 2]);
        assert!(ds.clone().with_class_names(vec!["a".into()]).is_err());
        assert_eq!(ds.with_class_names(vec!["a".into(), "b".into()]).unwrap().class_names().unwrap()[1], "b");
    }
}
