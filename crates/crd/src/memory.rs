//! CRD's per-sample state: the two memory banks with their normalisation constants, and the
//! draw of each sample's negatives.
//!
//! The banks are `N x feat_dim` each (student side and teacher side), initialised as the
//! reference's `ContrastMemory` does, uniform in `+-1/sqrt(feat_dim / 3)` (here from the run's
//! seed), and the rows of a step's samples move to `normalize(m * row + (1 - m) * f)` after the
//! step. They live on the training device; [`ContrastMemory::to_bytes`] writes them bit for bit
//! with `Z`, so a resumed run continues exactly.
//!
//! Negatives follow RepDistiller's `CIFAR100InstanceSample` in `'exact'` mode: the positive is
//! the sample itself and its `nce_k` negatives are samples of the other classes, distinct when
//! there are at least `nce_k` of them, drawn with replacement otherwise (the reference's
//! `replace = k > len(cls_negative[target])`). Each sample's draw is a pure function of
//! `(seed, epoch, index, view)` ([`kd_core::rng::KeyedRng`]), so a resumed run draws the same.

use burn::tensor::{Device, Int, Tensor, TensorData};
use kd_core::rng::KeyedRng;
use kd_core::state::{StateReader, put_f32s, put_u64, put_usize};
use kd_core::{KdError, Result};

use crate::loss::{contrast_scores, contrast_scores_from_bank, momentum_update};

const STATE_MAGIC: &[u8] = b"KDCRDMEM1";
/// Key words of the two random streams (the banks' initial values, the negatives).
const INIT_STREAM: u64 = 0xC2D0_0001;
pub(crate) const DRAW_STREAM: u64 = 0xC2D0_0002;

/// The banks, on a device or (restored from a checkpoint before any step) on the host.
#[derive(Debug, Clone)]
enum Banks {
    Host {
        student: Vec<f32>,
        teacher: Vec<f32>,
    },
    /// Boxed: two tensors are much larger than two vectors.
    Device(Box<[Tensor<2>; 2]>),
}

/// The two memory banks of CRD and the normalisation constants `Z`.
#[derive(Debug, Clone)]
pub struct ContrastMemory {
    n: usize,
    dim: usize,
    banks: Banks,
    z: Option<[f64; 2]>,
}

impl ContrastMemory {
    /// Fresh banks for `n` samples of width `dim`, uniform in `+-1/sqrt(dim / 3)` as the
    /// reference's, drawn from `seed`; `Z` unset.
    pub fn init(n: usize, dim: usize, seed: u64) -> Result<Self> {
        check_size(n, dim)?;
        let stdv = 1.0 / (dim as f64 / 3.0).sqrt();
        let mut rng = KeyedRng::new(&[seed, INIT_STREAM]);
        let mut draw = || (0..n * dim).map(|_| (rng.unit() * 2.0 * stdv - stdv) as f32).collect::<Vec<f32>>();
        let student = draw();
        let teacher = draw();
        Ok(ContrastMemory { n, dim, banks: Banks::Host { student, teacher }, z: None })
    }

    /// Banks with the given rows (`n * dim` values each, row-major) and constants.
    pub fn from_host(n: usize, dim: usize, student: Vec<f32>, teacher: Vec<f32>, z: Option<[f64; 2]>) -> Result<Self> {
        check_size(n, dim)?;
        if student.len() != n * dim || teacher.len() != n * dim {
            return Err(KdError::InvalidConfig(format!(
                "CRD memory of {n} x {dim} needs {} values per bank, got {} and {}",
                n * dim,
                student.len(),
                teacher.len()
            )));
        }
        Ok(ContrastMemory { n, dim, banks: Banks::Host { student, teacher }, z })
    }

    /// The number of samples `N`.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the memory has no rows (never: `N >= 1`).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The width of a row (`feat_dim`).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `[Z_s, Z_t]` once fixed.
    pub fn z(&self) -> Option<[f64; 2]> {
        self.z
    }

    /// Fixes the normalisation constants.
    pub fn set_z(&mut self, z: [f64; 2]) {
        self.z = Some(z);
    }

    /// Moves the banks to `device` (a plain device; no gradient flows into the memory).
    pub fn to_device(&mut self, device: &Device) {
        self.banks = match std::mem::replace(&mut self.banks, Banks::Host { student: Vec::new(), teacher: Vec::new() }) {
            Banks::Host { student, teacher } => {
                let upload = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [self.n, self.dim]), device);
                Banks::Device(Box::new([upload(student), upload(teacher)]))
            }
            Banks::Device(banks) => {
                let [student, teacher] = *banks;
                Banks::Device(Box::new([student.to_device(device), teacher.to_device(device)]))
            }
        };
    }

    fn device_banks(&self) -> Result<(&Tensor<2>, &Tensor<2>)> {
        match &self.banks {
            Banks::Device(banks) => Ok((&banks[0], &banks[1])),
            Banks::Host { .. } => {
                Err(KdError::Protocol { method: "crd".into(), reason: "its memory is read before it was moved to a device".into() })
            }
        }
    }

    /// The rows of both banks at `contrast` (`[B * (K+1)]` sample indices, each sample's
    /// positive first): `(student-side, teacher-side)`, `[B, K+1, dim]` each.
    pub fn rows(&self, contrast: &Tensor<1, Int>, batch: usize) -> Result<(Tensor<3>, Tensor<3>)> {
        let (student, teacher) = self.device_banks()?;
        let k1 = per_sample(contrast, batch)?;
        let gather = |bank: &Tensor<2>| bank.clone().select(0, contrast.clone()).reshape([batch, k1, self.dim]);
        Ok((gather(student), gather(teacher)))
    }

    /// The unnormalised scores of both directions, `[B, K+1]` each: the student's embeddings
    /// `f_s` against the teacher-side rows at `contrast` (`[B * (K+1)]`, as [`ContrastMemory::rows`]
    /// takes them) and the teacher's `f_t` against the student-side rows. When `N * 8 <= (K+1) *
    /// dim` (CIFAR-100 with the defaults: 400 000 against 2 097 280) from the whole bank
    /// ([`contrast_scores_from_bank`]: `B * N` dot products, no `[B, K+1, dim]` copy), else from
    /// the gathered rows ([`contrast_scores`], as the reference).
    pub fn scores(&self, f_s: Tensor<2>, f_t: Tensor<2>, contrast: &Tensor<1, Int>, temperature: f64) -> Result<(Tensor<2>, Tensor<2>)> {
        let batch = f_s.dims()[0];
        let k1 = per_sample(contrast, batch)?;
        if self.n.saturating_mul(8) <= k1.saturating_mul(self.dim) {
            let (student, teacher) = self.device_banks()?;
            let contrast = contrast.clone().reshape([batch, k1]);
            Ok((
                contrast_scores_from_bank(f_s, teacher.clone(), contrast.clone(), temperature)?,
                contrast_scores_from_bank(f_t, student.clone(), contrast, temperature)?,
            ))
        } else {
            let (rows_s, rows_t) = self.rows(contrast, batch)?;
            Ok((contrast_scores(f_s, rows_t, temperature)?, contrast_scores(f_t, rows_s, temperature)?))
        }
    }

    /// The momentum update of the rows `indices` with the step's normalised embeddings `f_s`,
    /// `f_t` `[B, dim]` (student side, teacher side): `normalize(m * row + (1 - m) * f)`.
    pub fn update(&mut self, indices: &[usize], f_s: Tensor<2>, f_t: Tensor<2>, momentum: f64) -> Result<()> {
        let (student, teacher) = self.device_banks()?;
        let b = indices.len();
        for (what, f) in [("student", &f_s), ("teacher", &f_t)] {
            if f.dims() != [b, self.dim] {
                return Err(KdError::ShapeMismatch {
                    what: format!("CRD {what} embedding for the memory update"),
                    expected: vec![b, self.dim],
                    actual: f.dims().to_vec(),
                });
            }
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.n) {
            return Err(KdError::InvalidConfig(format!("CRD: sample index {bad} is outside the memory of {} samples", self.n)));
        }
        let device = student.device();
        let idx = index_tensor(indices, &device);
        let step = |bank: &Tensor<2>, f: Tensor<2>| {
            let rows = bank.clone().select(0, idx.clone());
            let updated = momentum_update(rows, f.without_autodiff().to_device(&device), momentum);
            bank.clone().select_assign(0, idx.clone(), updated, burn::tensor::IndexingUpdateOp::Assign)
        };
        let (student, teacher) = (step(student, f_s), step(teacher, f_t));
        self.banks = Banks::Device(Box::new([student, teacher]));
        Ok(())
    }

    /// Both banks on the host, row-major: `(student side, teacher side)`.
    pub fn to_host(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        match &self.banks {
            Banks::Host { student, teacher } => Ok((student.clone(), teacher.clone())),
            Banks::Device(banks) => {
                let host = |t: &Tensor<2>| {
                    t.clone()
                        .into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .map_err(|e| KdError::Protocol { method: "crd".into(), reason: format!("its memory cannot be read back: {e:?}") })
                };
                Ok((host(&banks[0])?, host(&banks[1])?))
            }
        }
    }

    /// The state's bytes: `N`, the width, `Z` (when fixed, bit for bit) and both banks.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (student, teacher) = self.to_host()?;
        let mut out = STATE_MAGIC.to_vec();
        put_usize(&mut out, self.n);
        put_usize(&mut out, self.dim);
        match self.z {
            None => out.push(0),
            Some([zs, zt]) => {
                out.push(1);
                put_u64(&mut out, zs.to_bits());
                put_u64(&mut out, zt.to_bits());
            }
        }
        put_f32s(&mut out, &student);
        put_f32s(&mut out, &teacher);
        Ok(out)
    }

    /// Reads what [`ContrastMemory::to_bytes`] wrote; a clear error for truncated or foreign
    /// bytes. The banks stay on the host until [`ContrastMemory::to_device`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = StateReader::new(bytes, "crd memory");
        r.magic(STATE_MAGIC)?;
        let (n, dim) = (r.usize()?, r.usize()?);
        if n == 0 || dim == 0 {
            return Err(r.error(format!("an empty memory of {n} x {dim}")));
        }
        let z = if r.bool()? { Some([f64::from_bits(r.u64()?), f64::from_bits(r.u64()?)]) } else { None };
        if let Some(z) = z
            && z.iter().any(|v| !(v.is_finite() && *v > 0.0))
        {
            return Err(r.error(format!("normalisation constants {z:?} are not positive")));
        }
        let size = n.checked_mul(dim).ok_or_else(|| r.error(format!("a memory of {n} x {dim} is too large")))?;
        let student = r.f32s(size)?;
        let teacher = r.f32s(size)?;
        r.finish()?;
        ContrastMemory::from_host(n, dim, student, teacher, z)
    }
}

/// How many contrast indices each of the `batch` samples has (`K + 1`).
fn per_sample(contrast: &Tensor<1, Int>, batch: usize) -> Result<usize> {
    let total = contrast.dims()[0];
    if batch == 0 || !total.is_multiple_of(batch) {
        return Err(KdError::ShapeMismatch { what: "CRD contrast indices vs batch".into(), expected: vec![batch], actual: vec![total] });
    }
    Ok(total / batch)
}

fn check_size(n: usize, dim: usize) -> Result<()> {
    if n == 0 || dim == 0 {
        return Err(KdError::InvalidConfig(format!("CRD memory needs at least one sample and one dimension (got {n} x {dim})")));
    }
    Ok(())
}

/// Sample indices as an index tensor on `device`.
pub fn index_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

/// The samples of each class of a training set: what `'exact'` negatives are drawn from.
#[derive(Debug, Clone)]
pub struct NegativeSampler {
    n: usize,
    /// The sample indices of each class, ascending.
    positives: Vec<Vec<usize>>,
}

impl NegativeSampler {
    /// The sampler of a training set whose sample `i` has the label `labels[i]`.
    pub fn new(labels: &[usize]) -> Self {
        let classes = labels.iter().max().map_or(0, |&c| c + 1);
        let mut positives = vec![Vec::new(); classes];
        for (i, &c) in labels.iter().enumerate() {
            positives[c].push(i);
        }
        NegativeSampler { n: labels.len(), positives }
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// How many negatives a sample of `class` has (the samples of every other class).
    pub fn available(&self, class: usize) -> usize {
        self.n - self.positives.get(class).map_or(0, Vec::len)
    }

    /// The fewest negatives any class present has.
    pub fn fewest_available(&self) -> usize {
        (0..self.positives.len()).filter(|&c| !self.positives[c].is_empty()).map(|c| self.available(c)).min().unwrap_or(0)
    }

    /// The `p`-th (from 0, ascending) sample that is not of `class`.
    fn nth_negative(&self, class: usize, p: usize) -> usize {
        let own: &[usize] = self.positives.get(class).map_or(&[], Vec::as_slice);
        // With q_i the ascending samples of the class, q_i - i counts the others below q_i; the
        // p-th other sample is p plus the number of the class's samples it passes.
        let (mut lo, mut hi) = (0, own.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if own[mid] - mid <= p { lo = mid + 1 } else { hi = mid }
        }
        p + lo
    }

    /// The contrast indices of one sample: itself, then `k` samples of other classes, distinct
    /// when there are at least `k` of them (else with replacement), drawn from `key`.
    pub fn draw(&self, index: usize, class: usize, k: usize, key: &[u64]) -> Result<Vec<usize>> {
        let m = self.available(class);
        if m == 0 {
            return Err(KdError::InvalidConfig(format!(
                "CRD: sample {index} of class {class} has no negative (every training sample is of its class)"
            )));
        }
        let mut rng = KeyedRng::new(key);
        let mut out = Vec::with_capacity(k + 1);
        out.push(index);
        if k > m {
            out.extend((0..k).map(|_| self.nth_negative(class, rng.below(m))));
        } else {
            // Floyd's algorithm: k distinct positions of 0..m with k draws.
            let mut seen = vec![false; m];
            for j in m - k..m {
                let t = rng.below(j + 1);
                let pick = if seen[t] { j } else { t };
                seen[pick] = true;
                out.push(self.nth_negative(class, pick));
            }
        }
        Ok(out)
    }

    /// The contrast indices of a batch, `[B * (k+1)]` row-major: sample `indices[r]` (label
    /// `labels[r]`, augmentation view `views[r]`) in epoch `epoch` of the run of `seed`.
    /// Rows are drawn on up to 8 threads (each row's draw is its own key's, so the result does
    /// not depend on how they are shared out).
    pub fn draw_batch(&self, indices: &[usize], labels: &[usize], views: &[u64], k: usize, seed: u64, epoch: usize) -> Result<Vec<usize>> {
        let b = indices.len();
        if labels.len() != b || views.len() != b {
            return Err(KdError::ShapeMismatch {
                what: "CRD batch labels and views vs indices".into(),
                expected: vec![b, b],
                actual: vec![labels.len(), views.len()],
            });
        }
        let rows = |range: std::ops::Range<usize>| -> Result<Vec<usize>> {
            let mut out = Vec::with_capacity(range.len() * (k + 1));
            for r in range {
                let (index, class, view) = (indices[r], labels[r], views[r]);
                if index >= self.n {
                    return Err(KdError::InvalidConfig(format!(
                        "CRD: sample index {index} is outside the training set of {} samples",
                        self.n
                    )));
                }
                out.extend(self.draw(index, class, k, &[seed, DRAW_STREAM, epoch as u64, index as u64, view])?);
            }
            Ok(out)
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(b.max(1));
        if threads == 1 || b * k < 1 << 16 {
            return rows(0..b);
        }
        let chunk = b.div_ceil(threads);
        let parts: Vec<Result<Vec<usize>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..b).step_by(chunk).map(|start| scope.spawn(move || rows(start..(start + chunk).min(b)))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(KdError::Protocol { method: "crd".into(), reason: "a thread drawing negatives panicked".into() })
                    })
                })
                .collect()
        });
        let mut out = Vec::with_capacity(b * (k + 1));
        for part in parts {
            out.extend(part?);
        }
        Ok(out)
    }
}
