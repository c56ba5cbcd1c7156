//! Unit tests: the medoid against brute force, the reservoir, the targets, the replay, the
//! checkpointed state and a full interrupted-and-resumed training run.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use kd_core::Step;
use kd_core::distiller::step_without_update;
use kd_core::loss::{cross_entropy, cross_entropy_mean, kd_kl_mean, soft_cross_entropy};
use kd_core::rng::KeyedRng;
use kd_core::train::parameter_values;
use kd_core::{Batch, BatchSource, Classifier, Distiller, ModelOutput, NoTeacher, RunOptions, StepContext, Trainer};
use kd_testkit::{Samples, ctx_at, logits, recipe, temp_dir};

use crate::loss::tempered_softmax_row;
use crate::*;

// ---------------------------------------------------------------- helpers

fn flex() -> Device {
    Device::flex()
}

/// Sample `i` of `n`: 3 classes (`i % 3`), 16 inputs = the label's offset plus noise that
/// depends on `(index, epoch, view)`, so that every view is a different draw.
fn toy(n: usize) -> Samples {
    Samples {
        name: "toy",
        len: n,
        shape: [16, 1, 1],
        sample: |i, epoch, view| {
            let mut rng = KeyedRng::new(&[i as u64, epoch as u64, view]);
            (0..16)
                .map(|k| {
                    let signal = if k % 3 == i % 3 { 1.0 } else { 0.0 };
                    signal + rng.unit() as f32 - 0.5
                })
                .collect()
        },
    }
}

/// A linear classifier on the 16 inputs.
#[derive(Module, Debug)]
struct TinyNet {
    fc: Linear,
}

impl TinyNet {
    fn new(device: &Device) -> Self {
        TinyNet { fc: LinearConfig::new(16, 3).init(device) }
    }
}

impl Classifier for TinyNet {
    fn forward(&self, inputs: Tensor<4>) -> ModelOutput {
        let b = inputs.dims()[0];
        let embedding: Tensor<2> = inputs.reshape([b, 16]);
        ModelOutput::new(self.fc.forward(embedding.clone()), Vec::new(), Some(embedding))
    }
    fn num_classes(&self) -> usize {
        3
    }
}

/// Step `step` of epoch `epoch` of 3, seed 11.
fn ctx(epoch: usize, step: usize) -> StepContext {
    StepContext { seed: 11, ..ctx_at(epoch, 3, step) }
}

fn random_values(n: usize, key: u64, scale: f32) -> Vec<f32> {
    let mut rng = KeyedRng::new(&[key, 0xBEEF]);
    (0..n).map(|_| (rng.unit() as f32 - 0.5) * 2.0 * scale).collect()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

fn scalar(t: Tensor<1>) -> f32 {
    t.into_scalar::<f32>()
}

fn term(terms: &kd_core::LossTerms, name: &str) -> f32 {
    scalar(terms.terms().iter().find(|(n, _)| n == name).unwrap().1.clone())
}

/// Brute-force medoid in f64: the point with the least sum of distances (first on ties).
fn brute_force_medoid(points: &[Vec<f32>]) -> usize {
    let dist = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let sums: Vec<f64> = points.iter().map(|p| points.iter().map(|q| dist(p, q)).sum()).collect();
    (0..sums.len()).fold(0, |best, i| if sums[i] < sums[best] { i } else { best })
}

fn entry(correct: bool, key: u64, index: usize, logits: Vec<f32>) -> BankEntry {
    BankEntry { correct, key, index, view: 0, logits }
}

// ---------------------------------------------------------------- stage 1

#[test]
fn medoid_equals_brute_force() {
    let device = flex();
    for (case, &(n, d)) in [(1, 3), (2, 1), (3, 4), (7, 5), (20, 3), (33, 10)].iter().enumerate() {
        let flat = random_values(n * d, case as u64, 5.0);
        let points: Vec<Vec<f32>> = flat.chunks(d).map(|c| c.to_vec()).collect();
        let want = brute_force_medoid(&points);
        // Chunks of one row, of a few rows, and all rows at once give the same answer.
        for chunk in [1, 2 * n * d + 1, 1 << 24] {
            let t = Tensor::<2>::from_data(TensorData::new(flat.clone(), [n, d]), &device);
            assert_eq!(medoid_index(t, chunk).unwrap(), want, "n={n} d={d} chunk={chunk}");
        }
        let t = Tensor::<2>::from_data(TensorData::new(flat.clone(), [n, d]), &device);
        let sums = host(distance_sums(t, 7));
        for (i, p) in points.iter().enumerate() {
            let brute: f64 = points.iter().map(|q| p.iter().zip(q).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt()).sum();
            assert!((sums[i] as f64 - brute).abs() <= 1e-4 * brute.max(1.0), "{} vs {brute}", sums[i]);
        }
    }
    let empty = Tensor::<2>::zeros([0, 3], &device);
    assert!(medoid_index(empty, 10).is_err());
}

#[test]
fn bank_prefers_correct_samples_and_ignores_arrival_order() {
    let mk = |prefer: bool, order: &[usize]| {
        let mut bank = MedoidBank::new(3, prefer);
        bank.set_classes(2).unwrap();
        // Keys 10..60; samples 1 and 4 are correct.
        let all: Vec<BankEntry> = (0..6).map(|i| entry(i == 1 || i == 4, 10 * (i as u64 + 1), i, vec![i as f32, 0.0])).collect();
        for &i in order {
            bank.record(0, all[i].clone()).unwrap();
        }
        let mut kept: Vec<usize> = bank.entries(0).iter().map(|e| e.index).collect();
        kept.sort();
        kept
    };
    // Both correct ones, then the misclassified one of highest key (index 5).
    assert_eq!(mk(true, &[0, 1, 2, 3, 4, 5]), vec![1, 4, 5]);
    assert_eq!(mk(true, &[5, 4, 3, 2, 1, 0]), vec![1, 4, 5]);
    assert_eq!(mk(true, &[2, 0, 5, 3, 1, 4]), vec![1, 4, 5]);
    // Without the preference: the three highest keys.
    assert_eq!(mk(false, &[0, 1, 2, 3, 4, 5]), vec![3, 4, 5]);
    assert_eq!(mk(false, &[4, 1, 0, 5, 3, 2]), vec![3, 4, 5]);

    // More correct samples than places: misclassified ones never get in.
    let mut bank = MedoidBank::new(2, true);
    bank.set_classes(2).unwrap();
    for i in 0..5 {
        bank.record(1, entry(i % 2 == 0, 100 - i as u64, i, vec![0.0, 1.0])).unwrap();
    }
    assert!(bank.entries(1).iter().all(|e| e.correct));
    assert_eq!(bank.entries(1).len(), 2);
    // Bad input is an error, not a panic.
    assert!(bank.record(2, entry(true, 1, 0, vec![0.0, 1.0])).is_err());
    assert!(bank.record(0, entry(true, 1, 0, vec![0.0])).is_err());
    assert!(bank.set_classes(3).is_err());
}

#[test]
fn bank_medoids_per_class_and_kept_when_a_class_is_missing() {
    let device = flex();
    let mut bank = MedoidBank::new(64, true);
    bank.set_classes(3).unwrap();
    let mut points: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 3];
    for i in 0..40usize {
        let class = i % 2; // class 2 never appears
        let p = random_values(3, 100 + i as u64, 4.0);
        points[class].push(p.clone());
        bank.record(class, entry(i % 5 != 0, kd_core::rng::mix64(i as u64), i, p)).unwrap();
    }
    assert_eq!(bank.finish_epoch(&device, 50).unwrap(), 2);
    assert!(bank.is_empty());
    for class in 0..2 {
        // The bank sorts its entries, so compare the medoid vector, not its position.
        let want = &points[class][brute_force_medoid(&points[class])];
        assert_eq!(bank.medoid(class).unwrap(), &want[..]);
    }
    assert!(bank.medoid(2).is_none());
    // Q: softmax(m / tau) where a medoid exists, one-hot elsewhere.
    let q = bank.class_distributions(4.0);
    assert_eq!(&q[6..9], &[0.0, 0.0, 1.0]);
    assert_eq!(&q[0..3], &tempered_softmax_row(bank.medoid(0).unwrap(), 4.0)[..]);

    // Next epoch records class 0 only: class 1 keeps its medoid.
    let m1 = bank.medoid(1).unwrap().to_vec();
    bank.record(0, entry(true, 1, 0, vec![9.0, 9.0, 9.0])).unwrap();
    assert_eq!(bank.finish_epoch(&device, 50).unwrap(), 1);
    assert_eq!(bank.medoid(0).unwrap(), &[9.0, 9.0, 9.0]);
    assert_eq!(bank.medoid(1).unwrap(), &m1[..]);
}

#[test]
fn targets_sum_to_one_and_are_one_hot_before_medoids() {
    let device = flex();
    let mut bank = MedoidBank::new(8, true);
    bank.set_classes(5).unwrap();
    for c in 0..4 {
        bank.record(c, entry(true, 1, c, random_values(5, c as u64, 10.0))).unwrap();
    }
    bank.finish_epoch(&device, 1000).unwrap();
    let q = bank.class_distributions(4.0);
    let q_t = Tensor::<2>::from_data(TensorData::new(q.clone(), [5, 5]), &device);
    let labels_host = [0usize, 3, 4, 1, 4, 2];
    let labels = Tensor::<1, Int>::from_data(TensorData::new(labels_host.iter().map(|&l| l as i64).collect::<Vec<_>>(), [6]), &device);
    for eps in [0.0, 0.3, 0.5, 1.0] {
        let t = host(medoid_targets(labels.clone(), q_t.clone(), eps));
        for (row, &y) in t.chunks(5).zip(&labels_host) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{row:?}");
            assert!(row.iter().all(|&v| v >= 0.0));
            for (c, &v) in row.iter().enumerate() {
                let want = (1.0 - eps) * f64::from(u8::from(c == y)) + eps * q[y * 5 + c] as f64;
                assert!((v as f64 - want).abs() < 1e-6);
            }
            // Class 4 has no medoid: its target stays one-hot whatever eps.
            if y == 4 {
                assert_eq!(row, &[0.0, 0.0, 0.0, 0.0, 1.0]);
            }
        }
    }

    // Before any medoid the TOAST loss is plain cross-entropy.
    let mut toast = Toast::new(sweep_start()).unwrap();
    let b = toy(6).batch(&[0, 1, 2, 3], 1, 0, &device).unwrap();
    let out = logits(random_values(12, 7, 3.0), 3, &device);
    let terms = step_without_update(&mut toast, &Step::new(ctx(1, 0), &b, &out, None)).unwrap();
    let ce = scalar(cross_entropy_mean(out.logits.clone(), b.labels.clone()));
    assert!((term(&terms, "medoid_ce") - ce).abs() < 1e-6);
    assert_eq!(term(&terms, "replay_kl"), 0.0);
}

// ---------------------------------------------------------------- stage 2

#[test]
fn the_replayed_half_is_the_highest_loss_half_of_the_previous_step() {
    let device = flex();
    let data = toy(20);
    let cfg = ToastConfig { lambda: 0.7, ..sweep_start() };
    let mut toast = Toast::new(cfg.clone()).unwrap();
    assert_eq!(toast.teacher_need(), kd_core::TeacherNeed::Nothing);

    // Step 1: nothing to replay, the loader's batch goes through unchanged.
    let loader1: Vec<usize> = vec![3, 8, 1, 15, 6, 11, 0, 19];
    let b1 = toast.prepare_batch(&ctx(1, 0), data.batch(&loader1, 1, 0, &device).unwrap(), &data, &device).unwrap();
    assert_eq!(b1.indices, loader1);
    let o1 = logits(random_values(24, 1, 3.0), 3, &device);
    step_without_update(&mut toast, &Step::new(ctx(1, 0), &b1, &o1, None)).unwrap();
    // Without medoids the per-sample loss is the cross-entropy: the buffer holds the 4 rows of
    // highest CE, hardest first, with their logits.
    let ce1 = host(cross_entropy(o1.logits.clone(), b1.labels.clone()));
    let mut rows: Vec<usize> = (0..8).collect();
    rows.sort_by(|&a, &b| ce1[b].total_cmp(&ce1[a]));
    let hardest: Vec<usize> = rows[..4].iter().map(|&r| loader1[r]).collect();
    let buffer = toast.replay_buffer().unwrap().clone();
    assert_eq!(buffer.entries.iter().map(|e| e.index).collect::<Vec<_>>(), hardest);
    let logits1 = host(o1.logits.clone());
    for (e, &row) in buffer.entries.iter().zip(&rows) {
        assert_eq!(e.logits, logits1[row * 3..row * 3 + 3].to_vec());
        assert!((e.score - ce1[row] as f64).abs() < 1e-5);
    }

    // Step 2: the 4 replayed samples, re-drawn with view 1 as epoch 1 drew them, then the first
    // half of the loader's batch. The forward pass keeps the loader's size.
    let loader2: Vec<usize> = vec![2, 5, 7, 9, 10, 12, 13, 14];
    let b2 = toast.prepare_batch(&ctx(1, 1), data.batch(&loader2, 1, 0, &device).unwrap(), &data, &device).unwrap();
    assert_eq!(b2.len(), 8);
    let mut replayed = b2.indices[..4].to_vec();
    replayed.sort();
    let mut want = hardest.clone();
    want.sort();
    assert_eq!(replayed, want);
    assert_eq!(&b2.indices[4..], &loader2[..4]);
    assert_eq!(b2.views, vec![1, 1, 1, 1, 0, 0, 0, 0]);
    let redrawn = data.batch(&b2.indices[..4], 1, 1, &device).unwrap();
    assert_eq!(host(b2.inputs.clone().narrow(0, 0, 4)), host(redrawn.inputs));
    assert_ne!(host(b2.inputs.clone().narrow(0, 0, 4)), host(data.batch(&b2.indices[..4], 1, 0, &device).unwrap().inputs));
    assert_eq!(b2.labels_host, b2.indices.iter().map(|i| i % 3).collect::<Vec<_>>());

    // L2 = lambda * T^2 KL(softmax(z_prev / T) || softmax(z / T)), batchmean over the replayed half.
    let o2 = logits(random_values(24, 2, 3.0), 3, &device);
    let terms = step_without_update(&mut toast, &Step::new(ctx(1, 1), &b2, &o2, None)).unwrap();
    let prev: Vec<f32> =
        b2.indices[..4].iter().flat_map(|i| buffer.entries.iter().find(|e| e.index == *i).unwrap().logits.clone()).collect();
    let prev = Tensor::<2>::from_data(TensorData::new(prev, [4, 3]), &device);
    let want_kl = 0.7 * scalar(kd_kl_mean(o2.logits.clone().narrow(0, 0, 4), prev.clone(), 3.0));
    assert!(want_kl > 0.0 && (term(&terms, "replay_kl") - want_kl).abs() < 1e-6);
    let want_ce = scalar(cross_entropy_mean(o2.logits.clone(), b2.labels.clone()));
    assert!((term(&terms, "medoid_ce") - want_ce).abs() < 1e-6);
    // The same numbers from the pure loss function.
    let targets = kd_core::loss::one_hot(b2.labels.clone(), 3);
    let (l1, l2) = toast_loss_terms(o2.logits.clone(), targets, Some(prev), 3.0, 0.7);
    let total = scalar(l1 + l2);
    assert!((scalar(terms.total().unwrap()) - total).abs() < 1e-6);

    // Step 3's buffer: the hardest half of all 8 rows of step 2, replayed rows scored with their
    // KL too; a replayed sample kept again will be drawn with view 2.
    let ce2 = host(cross_entropy(o2.logits.clone(), b2.labels.clone()));
    let kl2 = host(kd_core::loss::kd_kl(
        o2.logits.clone().narrow(0, 0, 4),
        {
            let p: Vec<f32> =
                b2.indices[..4].iter().flat_map(|i| buffer.entries.iter().find(|e| e.index == *i).unwrap().logits.clone()).collect();
            Tensor::<2>::from_data(TensorData::new(p, [4, 3]), &device)
        },
        3.0,
    ));
    let scores: Vec<f64> = (0..8).map(|r| ce2[r] as f64 + if r < 4 { 0.7 * kl2[r] as f64 } else { 0.0 }).collect();
    let order = select_hardest(&scores, 0, 4);
    let buffer2 = toast.replay_buffer().unwrap().clone();
    assert_eq!(buffer2.entries.iter().map(|e| e.index).collect::<Vec<_>>(), order.iter().map(|&r| b2.indices[r]).collect::<Vec<_>>());
    assert_eq!(buffer2.entries.iter().map(|e| e.view).collect::<Vec<_>>(), order.iter().map(|&r| b2.views[r]).collect::<Vec<_>>());
    let b3 = toast.prepare_batch(&ctx(2, 0), data.batch(&[4, 16, 17, 18], 2, 0, &device).unwrap(), &data, &device).unwrap();
    // A loader batch of 4 takes the 2 hardest; the replay keeps the epoch that kept them.
    assert_eq!(b3.len(), 4);
    assert_eq!(&b3.indices[2..], &[4, 16]);
    let mut top2: Vec<(usize, u64)> = buffer2.entries[..2].iter().map(|e| (e.index, e.view + 1)).collect();
    top2.sort_by_key(|&(i, v)| (v, i));
    let mut got: Vec<(usize, u64)> = b3.indices[..2].iter().copied().zip(b3.views[..2].iter().copied()).collect();
    got.sort_by_key(|&(i, v)| (v, i));
    assert_eq!(got, top2);
}

#[test]
fn selection_rules_and_modes() {
    // Highest first, lower row on ties, only from `first` on.
    assert_eq!(select_hardest(&[1.0, 3.0, 2.0, 3.0], 0, 3), vec![1, 3, 2]);
    assert_eq!(select_hardest(&[9.0, 3.0, 2.0, 3.0], 1, 2), vec![1, 3]);
    assert_eq!(select_hardest(&[1.0], 0, 5), vec![0]);

    let displace = sweep_start();
    assert_eq!([1, 2, 7, 8, 128].map(|n| displace.replay_capacity(n)), [0, 1, 3, 4, 64]);
    let append = ToastConfig { batch_mode: BatchMode::Append, ..sweep_start() };
    assert_eq!([1, 7, 64].map(|n| append.replay_capacity(n)), [0, 3, 32]);
    let quarter = ToastConfig { batch_mode: BatchMode::Append, replay_fraction: 0.25, ..sweep_start() };
    assert_eq!(quarter.replay_capacity(9), 2);
    let every = ToastConfig { batch_mode: BatchMode::Append, replay_fraction: 1.0, ..sweep_start() };
    assert_eq!(every.replay_capacity(7), 7);
    let device = flex();
    let data = toy(12);

    // replay_from_epoch: no replay before it, even with a full buffer.
    let mut late = Toast::new(ToastConfig { replay_from_epoch: 2, ..sweep_start() }).unwrap();
    let b1 = late.prepare_batch(&ctx(1, 0), data.batch(&[0, 1, 2, 3], 1, 0, &device).unwrap(), &data, &device).unwrap();
    step_without_update(&mut late, &Step::new(ctx(1, 0), &b1, &logits(random_values(12, 5, 2.0), 3, &device), None)).unwrap();
    let b2 = late.prepare_batch(&ctx(1, 1), data.batch(&[4, 5, 6, 7], 1, 0, &device).unwrap(), &data, &device).unwrap();
    assert_eq!(b2.indices, vec![4, 5, 6, 7]);
    step_without_update(&mut late, &Step::new(ctx(1, 1), &b2, &logits(random_values(12, 6, 2.0), 3, &device), None)).unwrap();
    let b3 = late.prepare_batch(&ctx(2, 0), data.batch(&[8, 9, 10, 11], 2, 0, &device).unwrap(), &data, &device).unwrap();
    assert_eq!(&b3.indices[2..], &[8, 9]);
}

/// The default configuration ranks: of the 8 fresh rows of a step only the hardest 4 are kept,
/// and the next step forwards its whole loader batch plus those 4. Fails if the selection keeps
/// every candidate (the defaults once made the replay slots equal to the fresh rows).
#[test]
fn the_default_selection_keeps_only_the_hardest_half_of_the_fresh_rows() {
    let device = flex();
    let data = toy(24);
    let cfg = ToastConfig::default();
    assert_eq!((cfg.batch_mode, cfg.candidates), (BatchMode::Append, ReplayCandidates::Fresh));
    let mut toast = Toast::new(cfg).unwrap();
    let mut previous: Vec<usize> = Vec::new();
    for (step, loader) in
        [[0usize, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15], [16, 17, 18, 19, 20, 21, 22, 23]].into_iter().enumerate()
    {
        let b = toast.prepare_batch(&ctx(1, step), data.batch(&loader, 1, 0, &device).unwrap(), &data, &device).unwrap();
        // The replayed rows come first, then the whole loader batch.
        let r = previous.len();
        assert_eq!(b.len(), 8 + r, "step {step}");
        let mut replayed = b.indices[..r].to_vec();
        replayed.sort();
        assert_eq!(replayed, previous, "step {step}");
        assert_eq!(&b.indices[r..], &loader);
        let o = logits(random_values(b.len() * 3, 40 + step as u64, 3.0), 3, &device);
        step_without_update(&mut toast, &Step::new(ctx(1, step), &b, &o, None)).unwrap();
        // Kept: the 4 fresh rows of highest CE (no medoids yet, so the loss is the CE), not all 8.
        let ce = host(cross_entropy(o.logits.clone(), b.labels.clone()));
        let scores: Vec<f64> = ce.iter().map(|&c| c as f64).collect();
        let want: Vec<usize> = select_hardest(&scores, r, 4).into_iter().map(|row| b.indices[row]).collect();
        let kept: Vec<usize> = toast.replay_buffer().unwrap().entries.iter().map(|e| e.index).collect();
        assert_eq!(kept.len(), 4, "step {step}: the selection kept {} of 8 fresh rows", kept.len());
        assert_eq!(kept, want, "step {step}");
        let kept_scores: Vec<f64> = kept.iter().map(|i| scores[b.indices.iter().rposition(|j| j == i).unwrap()]).collect();
        let dropped_max = (r..b.len()).filter(|row| !kept.contains(&b.indices[*row])).map(|row| scores[row]).fold(f64::MIN, f64::max);
        assert!(kept_scores.iter().all(|&s| s >= dropped_max), "step {step}: a dropped row scored higher than a kept one");
        previous = kept;
        previous.sort();
    }
}

#[test]
fn bad_input_is_an_error() {
    let device = flex();
    let mut toast = Toast::new(sweep_start()).unwrap();
    let b = toy(6).batch(&[0, 1, 2], 1, 0, &device).unwrap();
    // Row count differs from the batch.
    assert!(step_without_update(&mut toast, &Step::new(ctx(1, 0), &b, &logits(random_values(6, 1, 1.0), 3, &device), None)).is_err());
    // Labels beyond the logits' classes.
    assert!(step_without_update(&mut toast, &Step::new(ctx(1, 0), &b, &logits(random_values(6, 1, 1.0), 2, &device), None)).is_err());
    // The class count is fixed by the first batch.
    step_without_update(&mut toast, &Step::new(ctx(1, 0), &b, &logits(random_values(9, 1, 1.0), 3, &device), None)).unwrap();
    assert!(step_without_update(&mut toast, &Step::new(ctx(1, 0), &b, &logits(random_values(12, 1, 1.0), 4, &device), None)).is_err());
    // Configurations.
    for bad in [
        r#"{"epsilon": 1.5}"#,
        r#"{"tau": 0}"#,
        r#"{"temperature": -1}"#,
        r#"{"lambda": -0.1}"#,
        r#"{"bank_size": 0}"#,
        r#"{"replay_fraction": 1.5}"#,
        r#"{"batch_mode": "displace", "candidates": "all", "replay_fraction": 1.0}"#,
        r#"{"replay_fraction": 0.0}"#,
        r#"{"replay_from_epoch": 0}"#,
        r#"{"medoid_chunk_elements": 0}"#,
        r#"{"batch_mode": "displace", "candidates": "fresh", "replay_fraction": 0.5}"#,
    ] {
        let cfg: ToastConfig = serde_json::from_str(bad).unwrap();
        assert!(Toast::new(cfg).is_err(), "{bad}");
    }
    assert!(serde_json::from_str::<ToastConfig>(r#"{"epsilon_typo": 0.1}"#).is_err());
}

#[test]
fn configuration_json() {
    let cfg: ToastConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(cfg, ToastConfig::default());
    assert_eq!((cfg.batch_mode, cfg.candidates), (BatchMode::Append, ReplayCandidates::Fresh));
    assert_eq!((cfg.epsilon, cfg.tau, cfg.temperature, cfg.lambda, cfg.bank_size), (0.1, 4.0, 3.0, 1.0, 256));
    let cfg: ToastConfig = serde_json::from_str(r#"{"batch_mode": "displace", "candidates": "all", "hardness": "cross_entropy"}"#).unwrap();
    assert_eq!((cfg.batch_mode, cfg.candidates, cfg.hardness), (BatchMode::Displace, ReplayCandidates::All, Hardness::CrossEntropy));
    let back: ToastConfig = serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
}

// ---------------------------------------------------------------- state

/// Runs a few steps of two epochs by hand, with random logits, and returns the distiller.
fn run_steps(toast: &mut Toast, data: &Samples, device: &Device, steps_epoch2: usize) {
    let mut step = 0;
    for epoch in 1..=2 {
        let batches: Vec<Vec<usize>> = kd_core::rng::permutation(data.len(), 5, epoch as u64).chunks(6).map(|c| c.to_vec()).collect();
        let take = if epoch == 2 { steps_epoch2 } else { batches.len() };
        for (s, idx) in batches.into_iter().take(take).enumerate() {
            let c = StepContext { epoch, total_epochs: 2, step_in_epoch: s, global_step: step, seed: 5 };
            let b = toast.prepare_batch(&c, data.batch(&idx, epoch, 0, device).unwrap(), data, device).unwrap();
            step_without_update(toast, &Step::new(c, &b, &logits(random_values(b.len() * 3, 1000 + step as u64, 4.0), 3, device), None))
                .unwrap();
            step += 1;
        }
        if epoch == 1 {
            toast.end_epoch(1).unwrap();
        }
    }
}

#[test]
fn state_round_trips_exactly_and_gives_the_same_next_step() {
    let device = flex();
    let data = toy(30);
    let mut toast = Toast::new(sweep_start()).unwrap();
    let fresh_bytes = toast.save_state().unwrap();
    // Mid-epoch 2: medoids from epoch 1, a half-filled bank, a replay buffer.
    run_steps(&mut toast, &data, &device, 2);
    assert_eq!(toast.bank().medoid_count(), 3);
    assert!(!toast.bank().is_empty());
    assert!(toast.replay_buffer().is_some());
    let bytes = toast.save_state().unwrap();

    let mut back = Toast::new(sweep_start()).unwrap();
    back.load_state(&bytes).unwrap();
    assert_eq!(back.bank(), toast.bank());
    assert_eq!(back.replay_buffer(), toast.replay_buffer());
    assert_eq!(back.save_state().unwrap(), bytes);

    // The next step: same batch, same loss terms, bit for bit; then the same epoch end.
    let c = StepContext { epoch: 2, total_epochs: 2, step_in_epoch: 2, global_step: 7, seed: 5 };
    let idx = [20, 21, 22, 23, 24, 25];
    let q_epoch1 = toast.bank().class_distributions(4.0);
    let mut results = Vec::new();
    for d in [&mut toast, &mut back] {
        let b = d.prepare_batch(&c, data.batch(&idx, 2, 0, &device).unwrap(), &data, &device).unwrap();
        let terms = step_without_update(d, &Step::new(c, &b, &logits(random_values(18, 77, 4.0), 3, &device), None)).unwrap();
        let values: Vec<u32> = terms.terms().iter().map(|(_, t)| scalar(t.clone()).to_bits()).collect();
        d.end_epoch(2).unwrap();
        results.push((b.indices.clone(), host(b.inputs.clone()), values, d.save_state().unwrap()));
    }
    assert!(f32::from_bits(results[0].2[1]) > 0.0, "the step replays");
    assert_eq!(results[0], results[1]);
    // Stage 1 used the epoch-1 medoids: softCE against (1 - eps) onehot(y) + eps softmax(m_y / tau).
    let b = Batch::from_host(
        results[0].1.clone(),
        [6, 16, 1, 1],
        results[0].0.iter().map(|i| i % 3).collect(),
        results[0].0.clone(),
        vec![0; 6],
        &device,
    )
    .unwrap();
    let q = Tensor::<2>::from_data(TensorData::new(q_epoch1, [3, 3]), &device);
    let targets = medoid_targets(b.labels.clone(), q, 0.5);
    let z = logits(random_values(18, 77, 4.0), 3, &device).logits;
    let want = scalar(soft_cross_entropy(z, targets).mean());
    assert!((f32::from_bits(results[0].2[0]) - want).abs() < 1e-6);

    // Empty bytes are a fresh state; truncated or foreign bytes are errors.
    back.load_state(&fresh_bytes).unwrap();
    assert_eq!(back.save_state().unwrap(), fresh_bytes);
    back.load_state(&[]).unwrap();
    assert_eq!(back.save_state().unwrap(), fresh_bytes);
    for cut in [1, 9, bytes.len() / 2, bytes.len() - 1] {
        assert!(back.load_state(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(back.load_state(&extra).is_err());
    assert!(back.load_state(b"KDTOAST1\xff\xff\xff\xff\xff\xff\xff\x7f").is_err());
    assert!(back.load_state(b"not a toast state").is_err());
    // A bank holding more entries per class than this configuration's bank_size is refused.
    let mut small = Toast::new(ToastConfig { bank_size: 1, ..sweep_start() }).unwrap();
    assert!(small.load_state(&bytes).is_err());
}

#[test]
fn trains_and_resumes_exactly_through_checkpoints() {
    let device = flex();
    let (train, test) = (toy(18), toy(9));
    let student = TinyNet::new(&device.clone().autodiff());
    let cfg = ToastConfig { bank_size: 4, ..sweep_start() };
    let run = |student: TinyNet, options: RunOptions| {
        let mut d = Toast::new(cfg.clone()).unwrap();
        let out = Trainer::new(recipe(3, 6, 0.1, 9), &train, &test, device.clone())
            .with_options(options)
            .fit(student, &mut d, &NoTeacher)
            .unwrap();
        (out, d)
    };
    let (full, d) = run(student.clone(), RunOptions::default());
    assert!(full.finished);
    // Every epoch replays (the buffer crosses epoch boundaries), and epoch 1 built every medoid.
    assert!(full.history.iter().all(|r| r.train_terms["replay_kl"] > 0.0), "{:?}", full.history);
    assert_eq!(d.bank().medoid_count(), 3);

    let dir = temp_dir();
    let options =
        RunOptions { checkpoint_dir: Some(dir.path().to_path_buf()), resume: true, stop_after_epochs: Some(1), ..Default::default() };
    for _ in 0..2 {
        assert!(!run(student.clone(), options.clone()).0.finished);
    }
    let (resumed, d2) = run(student, options);
    assert!(resumed.finished);
    // Bank, medoids and replay buffer crossed the checkpoints: the resumed run is the
    // uninterrupted one.
    assert_eq!(parameter_values(&resumed.student), parameter_values(&full.student));
    assert_eq!(d2.save_state().unwrap(), d.save_state().unwrap());
    assert_eq!(resumed.history.len(), 3);
    for (a, b) in resumed.history.iter().zip(&full.history) {
        assert_eq!(a.train_terms, b.train_terms);
    }
}

#[test]
fn soft_cross_entropy_matches_kd_core() {
    // The stage-1 per-sample loss is kd-core's soft cross-entropy (the convention shared with
    // label smoothing and PS-KD).
    let device = flex();
    let z = Tensor::<2>::from_data(TensorData::new(random_values(12, 9, 3.0), [4, 3]), &device);
    let t = Tensor::<2>::from_data(TensorData::new(vec![0.2f32, 0.3, 0.5, 1.0, 0.0, 0.0, 0.1, 0.1, 0.8, 0.0, 0.5, 0.5], [4, 3]), &device);
    assert_eq!(host(medoid_loss_per_sample(z.clone(), t.clone())), host(soft_cross_entropy(z, t)));
}

/// The configuration these tests were written for: the starting point in docs/methods.md, "TOAST" (eps 0.5,
/// displaced half-batches, every row a replay candidate), before the sweep changed the defaults.
fn sweep_start() -> ToastConfig {
    ToastConfig { epsilon: 0.5, batch_mode: BatchMode::Displace, candidates: ReplayCandidates::All, ..Default::default() }
}

/// The selection's ablation is TOAST with every fresh row replayed, under its own name; any other
/// replay setting is refused by name.
#[test]
fn replay_all_is_toast_without_the_selection() {
    let all = Toast::replay_all(ToastConfig { replay_fraction: 1.0, ..ToastConfig::default() }).unwrap();
    assert_eq!(all.name(), "toast-replay-all");
    assert_eq!(all.config(), &ToastConfig { replay_fraction: 1.0, ..ToastConfig::default() });
    assert_eq!(Toast::new(ToastConfig::default()).unwrap().name(), "toast");
    for config in
        [ToastConfig::default(), ToastConfig { replay_fraction: 1.0, candidates: ReplayCandidates::All, ..ToastConfig::default() }]
    {
        let e = Toast::replay_all(config).unwrap_err().to_string();
        assert!(e.contains("toast-replay-all") && e.contains("replay_fraction 1"), "{e}");
    }
}
