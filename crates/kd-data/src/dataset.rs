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
    /// Pixel bytes read through a memory map of a decode cache file (image folders larger than
    /// their memory budget, or reopened from the cache).
    Mapped {
        /// The mapped file: the bytes, sample after sample.
        map: Arc<memmap2::Mmap>,
        /// Divisor that brings the bytes to `[0, 1]`.
        scale: f32,
    },
    /// Floating-point features.
    F32(Arc<Vec<f32>>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::U8 { data, .. } => data.len(),
            Values::Mapped { map, .. } => map.len(),
            Values::F32(d) => d.len(),
        }
    }

    /// The bytes and their scale, for byte-valued data.
    fn as_bytes(&self) -> Option<(&[u8], f32)> {
        match self {
            Values::U8 { data, scale } => Some((data, *scale)),
            Values::Mapped { map, scale } => Some((map, *scale)),
            Values::F32(_) => None,
        }
    }
}

/// The largest crop padding [`Augment::check`] accepts, in pixels.
pub const MAX_CROP_PADDING: usize = 1024;

/// Image augmentation drawn per sample from `(seed, epoch, view, index)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Zero-pad by this many pixels, then crop back to the original size at a random offset
    /// (CIFAR's pad-4 random crop; 0: no crop).
    pub crop_padding: usize,
    /// Flip horizontally with probability 1/2.
    pub hflip: bool,
    /// torchvision's `RandomResizedCrop` (ImageNet's training transform): a crop of 8% to 100% of
    /// the area with aspect ratio in [3/4, 4/3] (log-uniform), resized back to the input size
    /// (bilinear, half-pixel centres). Drawn before the flip; exclusive with `crop_padding`.
    pub random_resized_crop: bool,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Augment::default()
    }

    /// CIFAR's standard training augmentation: pad-4 random crop and horizontal flip.
    pub fn cifar() -> Self {
        Augment { crop_padding: 4, hflip: true, random_resized_crop: false }
    }

    /// ImageNet's standard training augmentation: random-resized crop and horizontal flip.
    pub fn imagenet() -> Self {
        Augment { crop_padding: 0, hflip: true, random_resized_crop: true }
    }

    /// Whether anything is drawn.
    pub fn is_active(&self) -> bool {
        self.crop_padding > 0 || self.hflip || self.random_resized_crop
    }

    /// The transform in words, as records and tables name it (`pad4-crop+flip`,
    /// `random-resized-crop+flip`, `none`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.crop_padding > 0 {
            parts.push(format!("pad{}-crop", self.crop_padding));
        }
        if self.random_resized_crop {
            parts.push("random-resized-crop".into());
        }
        if self.hflip {
            parts.push("flip".into());
        }
        if parts.is_empty() { "none".into() } else { parts.join("+") }
    }

    /// Checks that the parts can be combined and the padding is a size (at most
    /// [`MAX_CROP_PADDING`] pixels: a padded side must fit the arithmetic and memory).
    pub fn check(&self) -> Result<()> {
        if self.crop_padding > MAX_CROP_PADDING {
            return Err(KdError::InvalidConfig(format!(
                "augment.crop_padding: {} pixels is above the limit of {MAX_CROP_PADDING}",
                self.crop_padding
            )));
        }
        if self.random_resized_crop && self.crop_padding > 0 {
            return Err(KdError::InvalidConfig(
                "augment: random_resized_crop and crop_padding are two crops; choose one (ImageNet's recipe: random_resized_crop; \
                 CIFAR's: crop_padding = 4)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A crop box `(top, left, height, width)` drawn as torchvision's `RandomResizedCrop` draws it
/// (scale 0.08..1, log-uniform ratio 3/4..4/3, ten tries, then the centre crop of the clamped
/// ratio).
fn resized_crop_box(rng: &mut KeyedRng, h: usize, w: usize) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * (0.08 + rng.unit() * 0.92);
        let ratio = (lo + rng.unit() * (hi - lo)).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            return (rng.below(h - ch + 1), rng.below(w - cw + 1), ch, cw);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < 0.75 {
        (((w as f64) / 0.75).round() as usize, w)
    } else if in_ratio > 4.0 / 3.0 {
        (h, ((h as f64) * 4.0 / 3.0).round() as usize)
    } else {
        (h, w)
    };
    let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
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
        if let Some((bytes, scale)) = self.values.as_bytes() {
            return self.byte_channel_stats(bytes, scale);
        }
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

    /// [`InMemoryDataset::channel_stats`] of byte values in exact integer arithmetic (one pass,
    /// fast on a 50,000-image folder, and still exactly 0 for a constant channel).
    fn byte_channel_stats(&self, bytes: &[u8], scale: f32) -> (Vec<f32>, Vec<f32>) {
        let [c, h, w] = self.shape;
        let plane = h * w;
        let mut sums = vec![(0u64, 0u64); c];
        for &row in self.rows.iter() {
            let sample = &bytes[row * c * plane..(row + 1) * c * plane];
            for (ch, (s, sq)) in sums.iter_mut().enumerate() {
                for &v in &sample[ch * plane..(ch + 1) * plane] {
                    *s += v as u64;
                    *sq += (v as u64) * (v as u64);
                }
            }
        }
        let n = (self.rows.len() * plane).max(1) as u128;
        let scale = scale as f64;
        let mean = sums.iter().map(|&(s, _)| (s as f64 / n as f64 / scale) as f32).collect();
        let std = sums
            .iter()
            .map(|&(s, sq)| {
                let var_n2 = n * sq as u128 - (s as u128) * (s as u128); // n² var, exact
                let sd = (var_n2 as f64).sqrt() / n as f64 / scale;
                if sd > 1e-12 { sd as f32 } else { 1.0 }
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
            Values::Mapped { map, scale } => map[row * per + offset] as f32 / scale,
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
        let mut crop = None;
        if self.augment.is_active() && epoch > 0 {
            let mut rng = KeyedRng::new(&[self.seed, epoch as u64, view, row as u64]);
            let pad = self.augment.crop_padding;
            if pad > 0 {
                dy = rng.below(2 * pad + 1) as isize - pad as isize;
                dx = rng.below(2 * pad + 1) as isize - pad as isize;
            }
            if self.augment.random_resized_crop {
                crop = Some(resized_crop_box(&mut rng, h, w));
            }
            flip = self.augment.hflip && rng.below(2) == 1;
        }
        if let Some((top, left, ch_, cw_)) = crop {
            self.write_resized_crop(row, (top, left, ch_, cw_), flip, out);
            return;
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

    /// The crop box `(top, left, height, width)` of a sample resized to the input size
    /// (bilinear, half-pixel centres, edges clamped inside the box), then flipped.
    fn write_resized_crop(&self, row: usize, (top, left, bh, bw): (usize, usize, usize, usize), flip: bool, out: &mut [f32]) {
        let [c, h, w] = self.shape;
        let axis = |i: usize, out_len: usize, box_len: usize| {
            let src = ((i as f64 + 0.5) * box_len as f64 / out_len as f64 - 0.5).clamp(0.0, (box_len - 1) as f64);
            let i0 = src.floor() as usize;
            let i1 = (i0 + 1).min(box_len - 1);
            (i0, i1, (src - i0 as f64) as f32)
        };
        let ys: Vec<_> = (0..h).map(|y| axis(y, h, bh)).collect();
        let xs: Vec<_> = (0..w).map(|x| axis(x, w, bw)).collect();
        for ch in 0..c {
            let (m, s) = (self.mean[ch], self.std[ch]);
            let at = |y: usize, x: usize| self.raw(row, ch * h * w + (top + y) * w + left + x);
            for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
                for x in 0..w {
                    let (x0, x1, fx) = xs[if flip { w - 1 - x } else { x }];
                    let v = (at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx) * (1.0 - fy) + (at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx) * fy;
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
        words.push(
            self.augment.crop_padding as u64 | ((self.augment.hflip as u64) << 32) | ((self.augment.random_resized_crop as u64) << 33),
        );
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
        let flip = images(Augment { hflip: true, ..Augment::none() }, 1);
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
        let crop = images(Augment { crop_padding: 4, ..Augment::none() }, 1);
        let shifted = (1..40).map(|e| crop.host_batch(&[0], e, 0).unwrap().inputs).find(|x| x.contains(&0.0) && *x != plain).unwrap();
        assert!(shifted.iter().all(|v| *v == 0.0 || plain.contains(v)));
    }

    #[test]
    fn random_resized_crops_stay_inside_the_image_and_vary() {
        let plain = images(Augment::none(), 1).host_batch(&[2], 0, 0).unwrap().inputs;
        let (lo, hi) = plain.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let rrc = images(Augment { random_resized_crop: true, ..Augment::none() }, 1);
        let draws: Vec<Vec<f32>> = (1..20).map(|e| rrc.host_batch(&[2], e, 0).unwrap().inputs).collect();
        // Interpolated values lie between the image's own extremes (no zero padding).
        assert!(draws.iter().flatten().all(|&v| v >= lo - 1e-6 && v <= hi + 1e-6));
        assert!(draws.iter().any(|d| *d != plain) && draws[0] != draws[1]);
        // The box is torchvision's: within the image, 8%..100% of the area (or the fallback).
        for k in 0..200u64 {
            let (top, left, h, w) = resized_crop_box(&mut KeyedRng::new(&[k]), 32, 24);
            assert!(top + h <= 32 && left + w <= 24 && h * w >= 32 * 24 * 7 / 100, "{top} {left} {h} {w}");
        }
        assert_eq!(Augment::imagenet().describe(), "random-resized-crop+flip");
        assert_eq!(Augment::cifar().describe(), "pad4-crop+flip");
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
