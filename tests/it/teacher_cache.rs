//! The teacher soft-label cache: exact replay, staleness, interrupted builds.

use kd::baselines::{CrossEntropy, Kd, KdConfig};
use kd::core::{CacheContent, DrawPool, TeacherCache};
use kd::data::Augment;
use kd::prelude::*;

use crate::common::{blobs, config, device, mlp};

fn trained_teacher(seed: u64) -> FrozenTeacher<AnyModel> {
    let train = blobs(90, 1, "blobs/train");
    let test = blobs(30, 2, "blobs/test");
    let out = Trainer::new(config(1, seed), &train, &test, device()).fit(mlp("mlp-16", 3, seed), &mut CrossEntropy, &NoTeacher).unwrap();
    FrozenTeacher::new(out.student, "mlp-16")
}

#[test]
fn training_from_the_cache_equals_training_with_the_live_teacher() {
    let train = blobs(120, 1, "blobs/train");
    let test = blobs(30, 2, "blobs/test");
    let teacher = trained_teacher(3);
    let dir = tempfile::tempdir().unwrap();
    let pool = DrawPool::new(&train, 4).unwrap();
    assert_eq!(pool.draws(), 1, "data without augmentation needs one draw");
    let cache =
        TeacherCache::open_or_build(&dir.path().join("t.cache"), &teacher, &pool, CacheContent::FullLogits, 32, &device(), false).unwrap();
    assert!(cache.exact());

    let live = Trainer::new(config(2, 9), &train, &test, device())
        .fit(mlp("mlp-8", 3, 9), &mut Kd::new(KdConfig::default()).unwrap(), &teacher)
        .unwrap();
    let cached = Trainer::new(config(2, 9), &pool, &test, device())
        .fit(mlp("mlp-8", 3, 9), &mut Kd::new(KdConfig::default()).unwrap(), &cache)
        .unwrap();
    assert_eq!(kd::core::train::parameter_values(&live.student), kd::core::train::parameter_values(&cached.student));
}

#[test]
fn with_augmentation_training_replays_the_stored_draws() {
    let train = blobs(60, 1, "blobs/train").with_augment(Augment { crop_padding: 1, hflip: true, ..Augment::none() }, 5);
    let test = blobs(30, 2, "blobs/test");
    let teacher = trained_teacher(3);
    let dir = tempfile::tempdir().unwrap();
    let pool = DrawPool::new(&train, 2).unwrap();
    let cache = TeacherCache::open_or_build(&dir.path().join("aug.cache"), &teacher, &pool, CacheContent::FullLogits, 16, &device(), false)
        .unwrap();
    // Epoch 3 replays draw 0 (the same inputs as epoch 1): the stored logits equal the live ones.
    let batch = pool.batch(&[0, 5, 7], 3, 0, &device()).unwrap();
    let stored = cache.outputs(&batch, TeacherNeed::Logits).unwrap().unwrap().logits;
    let live = teacher.outputs(&batch, TeacherNeed::Logits).unwrap().unwrap().logits;
    stored.into_data().assert_eq(&live.into_data(), true);
    // Four epochs train from the cache end to end.
    let out = Trainer::new(config(4, 1), &pool, &test, device())
        .fit(mlp("mlp-8", 3, 1), &mut Kd::new(KdConfig::default()).unwrap(), &cache)
        .unwrap();
    assert_eq!(out.history.len(), 4);
    // A fresh draw that is not in the pool is an error, not a silent miss.
    let fresh = train.batch(&[0], 3, 0, &device()).unwrap();
    assert!(cache.outputs(&fresh, TeacherNeed::Logits).unwrap_err().to_string().contains("draw pool"));
    // Features are refused.
    for need in [TeacherNeed::LogitsAndFeatures, TeacherNeed::PreActivation] {
        assert!(cache.outputs(&batch, need).unwrap_err().to_string().contains("logits only"));
    }
}

#[test]
fn a_cache_for_another_teacher_or_other_data_is_rebuilt_and_a_truncated_one_is_not_read() {
    let train = blobs(60, 1, "blobs/train");
    let other_data = blobs(60, 77, "blobs/other");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.cache");
    let (a, b) = (trained_teacher(3), trained_teacher(4));
    let pool = DrawPool::new(&train, 1).unwrap();
    let batch = pool.batch(&[1, 2], 1, 0, &device()).unwrap();
    let logits = |c: &TeacherCache| c.outputs(&batch, TeacherNeed::Logits).unwrap().unwrap().logits.into_data();
    TeacherCache::open_or_build(&path, &a, &pool, CacheContent::FullLogits, 16, &device(), false).unwrap();
    let for_b = TeacherCache::open_or_build(&path, &b, &pool, CacheContent::FullLogits, 16, &device(), false).unwrap();
    logits(&for_b).assert_eq(&b.outputs(&batch, TeacherNeed::Logits).unwrap().unwrap().logits.into_data(), true);
    // Other data: rebuilt for it.
    let other_pool = DrawPool::new(&other_data, 1).unwrap();
    let other = TeacherCache::open_or_build(&path, &b, &other_pool, CacheContent::FullLogits, 16, &device(), false).unwrap();
    let other_batch = other_pool.batch(&[1, 2], 1, 0, &device()).unwrap();
    assert_replays(&other, &b, &other_batch);
    // A half-written file (an interrupted build) is never read: it is rebuilt.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let rebuilt = TeacherCache::open_or_build(&path, &b, &pool, CacheContent::FullLogits, 16, &device(), false).unwrap();
    logits(&rebuilt).assert_eq(&b.outputs(&batch, TeacherNeed::Logits).unwrap().unwrap().logits.into_data(), true);
}

/// The same weights under new parameter ids, as a teacher read from a file without ids
/// (safetensors) has in every process.
fn with_fresh_parameter_ids(teacher: &FrozenTeacher<AnyModel>) -> FrozenTeacher<AnyModel> {
    use burn::module::{Module, ModuleMapper, Param, ParamId};
    struct FreshIds;
    impl ModuleMapper for FreshIds {
        fn map_float<const D: usize>(&mut self, param: Param<burn::tensor::Tensor<D>>) -> Param<burn::tensor::Tensor<D>> {
            Param::initialized(ParamId::new(), param.val())
        }
    }
    FrozenTeacher::new(teacher.model().clone().map(&mut FreshIds), "mlp-16")
}

#[cfg(unix)]
#[test]
fn the_same_weights_under_other_parameter_ids_reuse_the_cache() {
    use std::os::unix::fs::MetadataExt;
    let train = blobs(60, 1, "blobs/train");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.cache");
    let teacher = trained_teacher(3);
    let pool = DrawPool::new(&train, 1).unwrap();
    TeacherCache::open_or_build(&path, &teacher, &pool, CacheContent::FullLogits, 16, &device(), false).unwrap();
    let built = std::fs::metadata(&path).unwrap().ino();
    let reloaded = with_fresh_parameter_ids(&teacher);
    let cache = TeacherCache::open_or_build(&path, &reloaded, &pool, CacheContent::FullLogits, 16, &device(), false).unwrap();
    // A rebuild writes a new file into place (a new inode): the cache must be read as it is.
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), built, "the cache was rebuilt for the same weights");
    assert_replays(&cache, &teacher, &pool.batch(&[1, 2], 1, 0, &device()).unwrap());
}

/// The cache's logits for `batch` are exactly `teacher`'s.
fn assert_replays(cache: &TeacherCache, teacher: &FrozenTeacher<AnyModel>, batch: &kd::core::Batch) {
    let stored = cache.outputs(batch, TeacherNeed::Logits).unwrap().unwrap().logits;
    stored.into_data().assert_eq(&teacher.outputs(batch, TeacherNeed::Logits).unwrap().unwrap().logits.into_data(), true);
}

/// A cache of the teacher's top-2 probabilities on `pool`, in `dir`.
fn top_2_cache(dir: &std::path::Path, teacher: &FrozenTeacher<AnyModel>, pool: &DrawPool) -> TeacherCache {
    TeacherCache::open_or_build(&dir.join("k.cache"), teacher, pool, CacheContent::TopK { k: 2 }, 16, &device(), false).unwrap()
}

#[test]
fn top_k_outputs_recover_the_teacher_probabilities_of_the_kept_classes() {
    let train = blobs(30, 1, "blobs/train");
    let dir = tempfile::tempdir().unwrap();
    let teacher = trained_teacher(3);
    let pool = DrawPool::new(&train, 1).unwrap();
    let cache = top_2_cache(dir.path(), &teacher, &pool);
    assert!(!cache.exact());
    let batch = pool.batch(&[0, 1, 2, 3], 1, 0, &device()).unwrap();
    let recovered = kd::core::burn::tensor::activation::softmax(cache.outputs(&batch, TeacherNeed::Logits).unwrap().unwrap().logits, 1);
    let sums: Vec<f32> = recovered.clone().sum_dim(1).into_data().convert::<f32>().try_to_vec().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
    let live = kd::core::burn::tensor::activation::softmax(teacher.outputs(&batch, TeacherNeed::Logits).unwrap().unwrap().logits, 1);
    let (r, l): (Vec<f32>, Vec<f32>) =
        (recovered.into_data().convert::<f32>().try_to_vec().unwrap(), live.into_data().convert::<f32>().try_to_vec().unwrap());
    // Each row's top class keeps its probability.
    for row in 0..4 {
        let lr = &l[row * 3..row * 3 + 3];
        let top = (0..3).max_by(|&a, &b| lr[a].total_cmp(&lr[b])).unwrap();
        assert!((r[row * 3 + top] - lr[top]).abs() < 1e-5);
    }
    assert!(
        TeacherCache::open_or_build(&dir.path().join("bad.cache"), &teacher, &pool, CacheContent::TopK { k: 3 }, 16, &device(), false)
            .is_err()
    );
}

/// A top-k cache answers with approximate outputs: the trainer refuses them to a method that
/// needs the teacher's exact logits (whichever way the method arrives: by name or built by
/// hand), naming both, and accepts them for KD.
#[test]
fn a_top_k_teacher_is_refused_to_a_method_that_needs_exact_logits() {
    let train = blobs(30, 1, "blobs/train");
    let test = blobs(12, 2, "blobs/test");
    let dir = tempfile::tempdir().unwrap();
    let pool = DrawPool::new(&train, 1).unwrap();
    let cache = top_2_cache(dir.path(), &trained_teacher(3), &pool);
    let trainer = Trainer::new(config(1, 0), &pool, &test, device());
    let student = || kd::models::ModelSpec::parse("mlp-8").unwrap().build_seeded([1, 2, 2], 3, &device().autodiff(), 1).unwrap();
    for method in ["dkd", "rld", "dckd", "kd+ls"] {
        let err = kd::methods::train_method(method, None, &trainer, student(), &cache).unwrap_err().to_string();
        assert!(err.contains(&format!("method `{method}` needs the teacher's exact logits")) && err.contains("top-2"), "{method}: {err}");
    }
    let mut dkd = kd::baselines::Dkd::new(Default::default()).unwrap();
    let err = trainer.fit(student(), &mut dkd, &cache).unwrap_err().to_string();
    assert!(err.contains(&cache.describe()), "{err}");
    // KD reads only the teacher's distribution, which the top-k outputs approximate.
    kd::methods::train_method("kd", None, &trainer, student(), &cache).unwrap();
}

/// Methods that read the teacher's features (VID) or pre-activation features (OFD) are refused a
/// cache, which stores logits only; and OFD names the network that cannot give them.
#[test]
fn feature_methods_are_refused_a_cache_and_ofd_a_network_without_pre_activations() {
    let train = blobs(30, 1, "blobs/train");
    let test = blobs(12, 2, "blobs/test");
    let dir = tempfile::tempdir().unwrap();
    let pool = DrawPool::new(&train, 1).unwrap();
    let teacher = trained_teacher(3);
    let cache =
        TeacherCache::open_or_build(&dir.path().join("full.cache"), &teacher, &pool, CacheContent::FullLogits, 16, &device(), false)
            .unwrap();
    let trainer = Trainer::new(config(1, 0), &pool, &test, device());
    let student = |name: &str| kd::models::ModelSpec::parse(name).unwrap().build_seeded([1, 2, 2], 3, &device().autodiff(), 1).unwrap();
    for method in ["vid", "ofd"] {
        let err = kd::methods::train_method(method, None, &trainer, student("mlpbn-8-8"), &cache).unwrap_err().to_string();
        assert!(err.contains("logits only"), "{method}: {err}");
    }
    // An MLP without BatchNorm has no statistics before its ReLUs: as teacher and as student.
    let err = kd::methods::train_method("ofd", None, &trainer, student("mlpbn-8-8"), &teacher).unwrap_err().to_string();
    assert!(err.contains("teacher `mlp-16`") && err.contains("without BatchNorm"), "{err}");
    let bn_teacher = FrozenTeacher::new(student("mlpbn-16-16"), "bn-teacher");
    let err = kd::methods::train_method("ofd", None, &trainer, student("mlp-8-8"), &bn_teacher).unwrap_err().to_string();
    assert!(err.contains("student") && err.contains("without BatchNorm"), "{err}");
    kd::methods::train_method("ofd", None, &trainer, student("mlpbn-8-8"), &bn_teacher).unwrap();
}
