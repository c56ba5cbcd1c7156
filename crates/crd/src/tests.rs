//! Unit tests of the sampler, the loss, the memory's state and the distiller's protocol.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use kd_core::distiller::step_without_update;
use kd_core::{BatchSource, Distiller, KdError, ModelOutput, Step};
use kd_testkit::{ctx_at, noisy};

use crate::loss::{CrdHeads, contrast_loss};
use crate::memory::{ContrastMemory, NegativeSampler};
use crate::{Crd, CrdConfig};

fn small() -> CrdConfig {
    CrdConfig { feat_dim: 3, nce_k: 5, ..Default::default() }
}

#[test]
fn negatives_are_of_other_classes_distinct_and_keyed() {
    let labels = [0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 2, 1];
    let sampler = NegativeSampler::new(&labels);
    assert_eq!(sampler.available(0), 8);
    assert_eq!(sampler.fewest_available(), 8);
    for index in 0..labels.len() {
        let class = labels[index];
        for k in [1, 5, 8] {
            let drawn = sampler.draw(index, class, k, &[7, index as u64]).unwrap();
            assert_eq!(drawn[0], index);
            assert_eq!(drawn.len(), k + 1);
            let negatives = &drawn[1..];
            assert!(negatives.iter().all(|&j| j < labels.len() && labels[j] != class), "{negatives:?}");
            let mut sorted = negatives.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), k, "distinct when k <= available: {negatives:?}");
            if k == 8 {
                // Every negative of the class, once.
                assert_eq!(sorted, (0..labels.len()).filter(|&j| labels[j] != class).collect::<Vec<_>>());
            }
            // The same key draws the same; another key (epoch, seed) another draw.
            assert_eq!(drawn, sampler.draw(index, class, k, &[7, index as u64]).unwrap());
        }
        let a = sampler.draw(index, class, 5, &[7, 1]).unwrap();
        let b = sampler.draw(index, class, 5, &[7, 2]).unwrap();
        assert_ne!(a, b);
    }
    // More than a class has: with replacement, still of other classes.
    let drawn = sampler.draw(0, 0, 40, &[1]).unwrap();
    assert_eq!(drawn.len(), 41);
    assert!(drawn[1..].iter().all(|&j| labels[j] != 0));
    // A batch draw is row after row of single draws.
    let batch = sampler.draw_batch(&[3, 5], &[0, 1], &[0, 0], 4, 9, 2).unwrap();
    assert_eq!(batch.len(), 10);
    assert_eq!((batch[0], batch[5]), (3, 5));
    assert!(sampler.draw_batch(&[12], &[0], &[0], 4, 9, 2).unwrap_err().to_string().contains("outside the training set"));
    // One class only: no negative at all.
    let err = NegativeSampler::new(&[1, 1, 1]).draw(0, 1, 2, &[0]).unwrap_err().to_string();
    assert!(err.contains("no negative"), "{err}");
}

#[test]
fn contrast_loss_matches_its_formula() {
    let device = Device::flex();
    let h = [[2.0f64, 0.5, 0.1], [0.3, 1.5, 0.02]];
    let n_data = 10;
    let flat: Vec<f32> = h.iter().flatten().map(|&v| v as f32).collect();
    let loss = contrast_loss(Tensor::<2>::from_data(TensorData::new(flat, [2, 3]), &device), n_data).into_scalar::<f32>();
    let c = 2.0 / n_data as f64 + crate::loss::EPS;
    let noise = 2.0 / n_data as f64;
    let expected =
        -h.iter().map(|r| (r[0] / (r[0] + c)).ln() + r[1..].iter().map(|&x| (noise / (x + c)).ln()).sum::<f64>()).sum::<f64>() / 2.0;
    assert!((f64::from(loss) - expected).abs() < 1e-5 * expected.abs(), "{loss} vs {expected}");
}

#[test]
fn config_is_checked_with_the_field_named() {
    for (cfg, field) in [
        (CrdConfig { nce_mom: 1.0, ..Default::default() }, "nce_mom"),
        (CrdConfig { nce_t: 0.0, ..Default::default() }, "nce_t"),
        (CrdConfig { feat_dim: 0, ..Default::default() }, "feat_dim"),
        (CrdConfig { nce_k: 0, ..Default::default() }, "nce_k"),
        (CrdConfig { feat_weight: -1.0, ..Default::default() }, "feat_weight"),
    ] {
        let err = Crd::new(cfg).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    let defaults = CrdConfig::default();
    assert_eq!((defaults.feat_dim, defaults.nce_k, defaults.nce_t, defaults.nce_mom), (128, 16384, 0.07, 0.5));
    assert_eq!((defaults.ce_weight, defaults.feat_weight), (1.0, 0.8));
}

/// Student (autodiff, 4 wide) and teacher (6 wide) outputs of the samples `indices`.
fn outputs(indices: &[usize], salt: u64, device: &Device) -> (ModelOutput, ModelOutput) {
    let b = indices.len();
    let values = |width: usize, k: u64| -> Vec<f32> {
        indices
            .iter()
            .flat_map(|&i| (0..width).map(move |j| ((i as u64 * 31 + j as u64 * 7 + k * 13 + salt) % 17) as f32 / 8.0 - 1.0))
            .collect()
    };
    let ad = device.clone().autodiff();
    let student = ModelOutput::new(
        Tensor::from_data(TensorData::new(values(3, 1), [b, 3]), &ad),
        Vec::new(),
        Some(Tensor::from_data(TensorData::new(values(4, 2), [b, 4]), &ad)),
    );
    let teacher = ModelOutput::new(
        Tensor::from_data(TensorData::new(values(3, 3), [b, 3]), device),
        Vec::new(),
        Some(Tensor::from_data(TensorData::new(values(6, 4), [b, 6]), device)),
    );
    (student, teacher)
}

/// One step by hand, as the trainer makes it: prepare, loss, after_step. The CRD term's value.
fn step(crd: &mut Crd, heads: &CrdHeads, data: &dyn BatchSource, indices: &[usize], global: usize, device: &Device) -> f32 {
    let ctx = ctx_at(1 + global / 2, 4, global);
    let batch = data.batch(indices, ctx.epoch, 0, device).unwrap();
    let batch = crd.prepare_batch(&ctx, batch, data, device).unwrap();
    let (s, t) = outputs(indices, global as u64, device);
    let terms = step_without_update(crd, &Step::new(ctx, &batch, &s, Some(&t)).with_aux(heads)).unwrap();
    let names: Vec<&str> = terms.terms().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ce", "crd"]);
    terms.terms()[1].1.clone().into_scalar::<f32>()
}

#[test]
fn saved_state_resumes_bit_exactly() {
    let device = Device::flex();
    let data = noisy(12);
    let mut crd = Crd::new(small()).unwrap();
    assert!(crd.save_state().unwrap().is_empty(), "no state before the first step");
    let (s, t) = outputs(&[0, 1], 0, &device);
    let heads = crd.init_aux(&s.detached(), Some(&t), &device.clone().autodiff()).unwrap();

    let first = step(&mut crd, &heads, &data, &[0, 4, 7], 0, &device);
    assert!(first.is_finite() && first > 0.0);
    let saved = crd.save_state().unwrap();
    let z = crd.memory().unwrap().z().unwrap();
    let second = step(&mut crd, &heads, &data, &[2, 5, 9, 11], 1, &device);
    let after = crd.memory().unwrap().to_host().unwrap();
    // The memory moved: the batch's rows, and only them.
    let before = ContrastMemory::from_bytes(&saved).unwrap().to_host().unwrap();
    let moved: Vec<usize> = (0..12).filter(|&i| before.0[i * 3..i * 3 + 3] != after.0[i * 3..i * 3 + 3]).collect();
    assert_eq!(moved, [2, 5, 9, 11]);

    // A fresh distiller restored from the bytes makes the same step: same draws, same loss,
    // same memory after it, bit for bit; Z is the first batch's.
    let mut resumed = Crd::new(small()).unwrap();
    resumed.load_state(&saved).unwrap();
    assert_eq!(resumed.memory().unwrap().z(), Some(z));
    let again = step(&mut resumed, &heads, &data, &[2, 5, 9, 11], 1, &device);
    assert_eq!(second.to_bits(), again.to_bits());
    assert_eq!(resumed.memory().unwrap().to_host().unwrap(), after);
    assert_eq!(resumed.save_state().unwrap(), crd.save_state().unwrap());

    // Another seed: other initial memory, other draws.
    let mut other = Crd::new(small()).unwrap();
    let ctx = kd_core::StepContext { seed: 5, ..ctx_at(1, 4, 0) };
    let batch = data.batch(&[0, 4, 7], 1, 0, &device).unwrap();
    other.prepare_batch(&ctx, batch, &data, &device).unwrap();
    assert_ne!(other.memory().unwrap().to_host().unwrap(), before);
}

#[test]
fn bad_state_bytes_are_clear_errors() {
    let device = Device::flex();
    let data = noisy(12);
    let mut crd = Crd::new(small()).unwrap();
    let (s, t) = outputs(&[0, 1], 0, &device);
    let heads = crd.init_aux(&s.detached(), Some(&t), &device.clone().autodiff()).unwrap();
    step(&mut crd, &heads, &data, &[0, 4, 7], 0, &device);
    let good = crd.save_state().unwrap();

    let err = |bytes: &[u8]| Crd::new(small()).unwrap().load_state(bytes).unwrap_err().to_string();
    assert!(err(b"not a memory at all").contains("bad magic"), "{}", err(b"not a memory at all"));
    let truncated = err(&good[..good.len() - 3]);
    assert!(truncated.contains("crd memory") && truncated.contains("floats do not fit"), "{truncated}");
    let mut longer = good.clone();
    longer.push(0);
    assert!(err(&longer).contains("trailing"), "{}", err(&longer));
    // Rows of another width than the configuration's.
    let wide = Crd::new(CrdConfig { feat_dim: 4, ..small() }).unwrap().load_state(&good).unwrap_err().to_string();
    assert!(wide.contains("feat_dim is 4"), "{wide}");
    // A memory of another training set.
    let mut other = Crd::new(small()).unwrap();
    other.load_state(&good).unwrap();
    let batch = noisy(9).batch(&[0], 1, 0, &device).unwrap();
    let size = other.prepare_batch(&ctx_at(2, 4, 0), batch, &noisy(9), &device).unwrap_err().to_string();
    assert!(size.contains("12 x 3") && size.contains("9 samples"), "{size}");
    // Empty bytes: a fresh start.
    other.load_state(&[]).unwrap();
    assert!(other.memory().is_none());
}

#[test]
fn protocol_and_shape_errors_name_crd() {
    let device = Device::flex();
    let data = noisy(12);
    let mut crd = Crd::new(small()).unwrap();
    let (s, t) = outputs(&[0, 1], 0, &device);
    let heads = crd.init_aux(&s.detached(), Some(&t), &device.clone().autodiff()).unwrap();
    let ctx = ctx_at(1, 4, 0);
    let batch = data.batch(&[0, 1], 1, 0, &device).unwrap();
    // No negatives drawn: prepare_batch did not run.
    let err = crd.loss(&Step::new(ctx, &batch, &s, Some(&t)).with_aux(&heads)).unwrap_err();
    assert!(matches!(err, KdError::Protocol { .. }) && err.to_string().contains("crd"), "{err}");
    // A teacher embedding of another width than the head's.
    let batch = crd.prepare_batch(&ctx, batch, &data, &device).unwrap();
    let narrow = ModelOutput { embedding: Some(Tensor::random([2, 5], Distribution::Default, &device)), ..t.clone() };
    let err = crd.loss(&Step::new(ctx, &batch, &s, Some(&narrow)).with_aux(&heads)).unwrap_err().to_string();
    assert!(err.contains("CRD embeddings") && err.contains('5'), "{err}");
    // No teacher, or a teacher without embedding (a logits cache).
    let err = crd.loss(&Step::new(ctx, &batch, &s, None).with_aux(&heads)).unwrap_err().to_string();
    assert!(err.contains("crd"), "{err}");
    let cached = ModelOutput::logits_only(t.logits.clone());
    let err = crd.loss(&Step::new(ctx, &batch, &s, Some(&cached)).with_aux(&heads)).unwrap_err().to_string();
    assert!(err.contains("penultimate embedding"), "{err}");
    // A training set of one class has no negatives.
    let one = noisy(1);
    let batch = one.batch(&[0], 1, 0, &device).unwrap();
    let err = Crd::new(small()).unwrap().prepare_batch(&ctx, batch, &one, &device).unwrap_err().to_string();
    assert!(err.contains("at least two classes"), "{err}");
}

#[test]
fn trains_through_the_trainer_and_resumes_exactly() {
    use kd_core::train::parameter_values;
    use kd_core::{FrozenTeacher, RunOptions, Trainer};
    use kd_testkit::{TinyConv, recipe, temp_dir};
    let device = Device::flex();
    let (train, test) = (noisy(12), noisy(6));
    let teacher = FrozenTeacher::new(TinyConv::new(3, 1, &device), "tiny");
    let student = TinyConv::new(2, 1, &device.clone().autodiff());
    // Scores from the gathered rows (12 * 8 > 7 * 4) and from the whole bank (12 * 8 <= 7 * 16).
    for feat_dim in [4, 16] {
        let config = || CrdConfig { feat_dim, nce_k: 6, ..Default::default() };
        let straight = Trainer::new(recipe(2, 4, 0.05, 3), &train, &test, device.clone())
            .fit(student.clone(), &mut Crd::new(config()).unwrap(), &teacher)
            .unwrap();
        assert!(straight.history.iter().all(|r| r.train_terms["crd"].is_finite() && r.train_terms["crd"] > 0.0));

        let dir = temp_dir();
        let options =
            RunOptions { checkpoint_dir: Some(dir.path().to_path_buf()), resume: true, stop_after_epochs: Some(1), ..Default::default() };
        let run = |student: TinyConv| {
            Trainer::new(recipe(2, 4, 0.05, 3), &train, &test, device.clone())
                .with_options(options.clone())
                .fit(student, &mut Crd::new(config()).unwrap(), &teacher)
                .unwrap()
        };
        let first = run(student.clone());
        assert!(!first.finished);
        let resumed = run(student.clone());
        assert!(resumed.finished);
        // Heads, student and losses as if the run had not stopped: the memory, Z and the draws
        // were restored or drawn again exactly.
        assert_eq!(parameter_values(&resumed.aux), parameter_values(&straight.aux));
        assert_eq!(parameter_values(&resumed.student), parameter_values(&straight.student));
        assert_eq!(resumed.history.last().unwrap().train_terms, straight.history.last().unwrap().train_terms);
    }
}

#[test]
fn a_large_batch_draws_the_same_on_threads_as_row_by_row() {
    // CIFAR-100's shape: 50 000 samples of 100 classes, the default nce_k (shared out on threads).
    let labels: Vec<usize> = (0..50_000).map(|i| (i * 7) % 100).collect();
    let sampler = NegativeSampler::new(&labels);
    let indices: Vec<usize> = (0..8).map(|i| i * 6007).collect();
    let classes: Vec<usize> = indices.iter().map(|&i| labels[i]).collect();
    let views = [3u64; 8];
    let batch = sampler.draw_batch(&indices, &classes, &views, 16384, 11, 4).unwrap();
    for (r, chunk) in batch.chunks(16385).enumerate() {
        let key = [11, super::memory::DRAW_STREAM, 4, indices[r] as u64, 3];
        assert_eq!(chunk, sampler.draw(indices[r], classes[r], 16384, &key).unwrap().as_slice(), "row {r}");
    }
    assert!(sampler.draw_batch(&indices, &classes[..2], &views, 4, 0, 1).is_err());
}

#[test]
fn scores_from_the_bank_equal_scores_from_the_rows() {
    use crate::loss::{contrast_scores, contrast_scores_from_bank};
    let device = Device::flex();
    let labels: Vec<usize> = (0..10).map(|i| i % 2).collect();
    let sampler = NegativeSampler::new(&labels);
    // N * 8 = 80 <= (K+1) * dim = 10 * 8: `scores` takes the bank path.
    let mut memory = ContrastMemory::init(10, 8, 3).unwrap();
    memory.to_device(&device);
    let contrast = sampler.draw_batch(&[1, 4, 6], &[1, 0, 0], &[0; 3], 9, 0, 1).unwrap();
    let contrast = crate::memory::index_tensor(&contrast, &device);
    let f = |seed: u64| {
        crate::loss::l2_normalize(Tensor::<2>::from_data(
            TensorData::new((0..24).map(|i| ((i as u64 * 37 + seed) % 11) as f32 - 5.0).collect::<Vec<_>>(), [3, 8]),
            &device,
        ))
    };
    let (s_bank, t_bank) = memory.scores(f(1), f(2), &contrast, 0.07).unwrap();
    let (rows_s, rows_t) = memory.rows(&contrast, 3).unwrap();
    let (s_rows, t_rows) = (contrast_scores(f(1), rows_t, 0.07).unwrap(), contrast_scores(f(2), rows_s, 0.07).unwrap());
    for (a, b) in [(s_bank, s_rows), (t_bank, t_rows)] {
        let (a, b) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
        assert_eq!(a.len(), 30);
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5 * y.abs().max(1.0)), "{a:?} vs {b:?}");
    }
    // Shapes that cannot pair are errors naming CRD.
    let bad = contrast_scores_from_bank(f(1), Tensor::zeros([10, 5], &device), contrast.reshape([3, 10]), 0.07).unwrap_err().to_string();
    assert!(bad.contains("CRD memory"), "{bad}");
}
