//! Zoo-wide tests: parameter counts against the PyTorch originals, multiply-adds, output shapes.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use kd_core::Classifier;

use crate::{ModelSpec, model_summary, trainable_params};

/// `(name, trainable parameters at 3x32x32 with 100 classes, multiply-adds at 3x32x32,
/// multiply-adds at 1x28x28)`.
///
/// The parameter counts were computed by hand from the PyTorch definitions (TAKD
/// `plain_cnn_cifar.py`, RepDistiller `resnet.py`, `wrn.py`, `vgg.py` with `batch_norm=True`,
/// `mobilenetv2.py` `mobile_half`, `ShuffleNetv2.py` net size 1) as
/// `sum(p.numel() for p in model.parameters())`; they agree with the published figures
/// (resnet8x4 1.23M, resnet32x4 7.43M, resnet20 0.28M, wrn-40-2 2.26M, vgg13 9.46M,
/// MobileNetV2 0.81M, ShuffleV2 1.36M). Multiply-adds count convolutions and linear layers.
const EXPECTED: [(&str, usize, u64, u64); 23] = [
    ("plane2", 215_172, 3_448_832, 2_188_928),
    ("plane4", 475_652, 24_887_296, 18_602_752),
    ("plane6", 1_107_204, 39_452_672, 29_754_368),
    ("plane8", 1_246_276, 52_861_184, 37_112_576),
    ("plane10", 2_931_460, 72_239_104, 47_888_896),
    ("resnet8", 83_892, 12_507_392, 9_351_680),
    ("resnet14", 181_108, 26_663_168, 20_189_696),
    ("resnet20", 278_324, 40_818_944, 31_027_712),
    ("resnet32", 472_756, 69_130_496, 52_703_744),
    ("resnet44", 667_188, 97_442_048, 74_379_776),
    ("resnet56", 861_620, 125_753_600, 96_055_808),
    ("resnet110", 1_736_564, 253_155_584, 193_597_952),
    ("resnet8x4", 1_233_540, 177_071_104, 135_124_480),
    ("resnet32x4", 7_433_860, 1_083_040_768, 828_757_504),
    ("wrn-16-1", 180_916, 26_663_168, 20_189_696),
    ("wrn-16-2", 703_284, 101_118_464, 77_196_032),
    ("wrn-40-1", 569_780, 83_286_272, 63_541_760),
    ("wrn-40-2", 2_255_156, 327_610_880, 250_604_288),
    ("vgg8", 3_965_028, 96_192_512, 61_254_656),
    ("vgg11", 9_277_284, 209_438_720, 132_623_360),
    ("vgg13", 9_462_180, 284_936_192, 190_426_112),
    ("mobilenetv2", 812_836, 6_523_648, 5_963_560),
    ("shufflenetv2", 1_355_528, 44_504_448, 37_495_716),
];

/// The table row of a model.
fn expected(name: &str) -> (usize, u64, u64) {
    let (_, p, m32, m28) = EXPECTED.iter().find(|(n, ..)| *n == name).unwrap_or_else(|| panic!("no expected values for {name}"));
    (*p, *m32, *m28)
}

#[test]
fn the_table_covers_the_zoo() {
    let zoo: Vec<String> = ModelSpec::zoo().iter().map(ModelSpec::name).collect();
    let table: Vec<&str> = EXPECTED.iter().map(|(n, ..)| *n).collect();
    assert_eq!(zoo, table);
}

#[test]
fn parameter_counts_equal_the_pytorch_originals() {
    let device = Device::flex();
    for spec in ModelSpec::zoo() {
        let name = spec.name();
        let (params, ..) = expected(&name);
        // Parameters are initialised lazily: building is cheap and nothing is allocated here.
        let model = spec.build([3, 32, 32], 100, &device).unwrap();
        assert_eq!(trainable_params(&model), params, "{name}: built model");
        assert_eq!(model_summary(&spec, [3, 32, 32], 100).unwrap().params, params, "{name}: summary");
    }
}

#[test]
fn num_params_also_counts_batchnorm_running_statistics() {
    let device = Device::flex();
    // resnet20 has 21 BN layers over 784 channels: 2 running statistics each.
    let model = ModelSpec::parse("resnet20").unwrap().build([3, 32, 32], 100, &device).unwrap();
    assert_eq!(model.num_params(), 278_324 + 2 * 784);
    assert_eq!(trainable_params(&model), 278_324);
}

#[test]
fn multiply_adds() {
    for spec in ModelSpec::zoo() {
        let name = spec.name();
        let (_, m32, m28) = expected(&name);
        assert_eq!(model_summary(&spec, [3, 32, 32], 100).unwrap().mult_adds, m32, "{name} at 3x32x32");
        assert_eq!(model_summary(&spec, [1, 28, 28], 100).unwrap().mult_adds, m28, "{name} at 1x28x28");
    }
}

#[test]
fn input_channels_and_classes_only_change_stem_and_classifier() {
    let device = Device::flex();
    // resnet20 on 1x28x28 with 10 classes: the stem loses 2·16·9 weights, fc loses 90·64 + 90.
    let spec = ModelSpec::parse("resnet20").unwrap();
    let model = spec.build([1, 28, 28], 10, &device).unwrap();
    let want = 278_324 - 2 * 16 * 9 - (90 * 64 + 90);
    assert_eq!(trainable_params(&model), want);
    assert_eq!(model_summary(&spec, [1, 28, 28], 10).unwrap().params, want);
    // plane2's first FC sees 32·7·7 inputs at 28x28.
    let spec = ModelSpec::parse("plane2").unwrap();
    let model = spec.build([1, 28, 28], 10, &device).unwrap();
    let want = (32 * 9 + 32) + 64 + (32 * 32 * 9 + 32) + 64 + (32 * 7 * 7 * 10 + 10);
    assert_eq!(trainable_params(&model), want);
    assert_eq!(model_summary(&spec, [1, 28, 28], 10).unwrap().params, want);
    // The MLP flattens its input.
    let spec = ModelSpec::parse("mlp-64-32").unwrap();
    let model = spec.build([1, 28, 28], 10, &device).unwrap();
    let want = (784 * 64 + 64) + (64 * 32 + 32) + (32 * 10 + 10);
    assert_eq!(trainable_params(&model), want);
    let summary = model_summary(&spec, [1, 28, 28], 10).unwrap();
    assert_eq!((summary.params, summary.mult_adds), (want, (784 * 64 + 64 * 32 + 32 * 10) as u64));
}

/// Runs a forward pass and checks every output's shape.
fn check_forward(spec: &ModelSpec, input: [usize; 3], classes: usize, device: &Device) {
    let name = spec.name();
    let model = spec.build(input, classes, device).unwrap();
    assert_eq!(model.num_classes(), classes, "{name}");
    let [c, h, w] = input;
    let out = model.forward(Tensor::ones([2, c, h, w], device));
    assert_eq!(out.logits.dims(), [2, classes], "{name} {input:?}: logits");
    assert_eq!(out.embedding("test").unwrap().dims()[0], 2, "{name} {input:?}: embedding");
    assert!(!out.features.is_empty(), "{name} {input:?}: no features");
    let mut previous = (h, w);
    for (i, f) in out.features.iter().enumerate() {
        let [b, fc, fh, fw] = f.dims();
        assert!(b == 2 && fc > 0, "{name} {input:?}: feature {i} is {:?}", f.dims());
        // Shallow to deep: the resolution never grows.
        assert!(fh <= previous.0 && fw <= previous.1, "{name} {input:?}: feature {i} grows");
        previous = (fh, fw);
    }
    // What the bench reads to skip the spatial-map methods: a CNN's first stage is a map
    // wherever the input is one.
    if h * w > 1 {
        let [.., fh, fw] = out.features[0].dims();
        assert_eq!(spec.spatial_features(), fh * fw > 1, "{name} {input:?}: spatial_features() disagrees with its stem");
    }
    let logits: Vec<f32> = out.logits.into_data().try_to_vec::<f32>().unwrap();
    assert!(logits.iter().all(|v| v.is_finite()), "{name} {input:?}: non-finite logits");
}

#[test]
fn output_shapes_small_models_both_inputs() {
    let device = Device::flex();
    for spec in ModelSpec::zoo() {
        let (_, m32, _) = expected(&spec.name());
        if m32 <= 130_000_000 {
            check_forward(&spec, [3, 32, 32], 100, &device);
            check_forward(&spec, [1, 28, 28], 10, &device);
        }
    }
}

#[test]
fn output_shapes_large_models_one_input() {
    let device = Device::flex();
    for spec in ModelSpec::zoo() {
        let (_, m32, _) = expected(&spec.name());
        if m32 > 130_000_000 {
            check_forward(&spec, [1, 28, 28], 10, &device);
        }
    }
}

#[test]
fn embedding_widths() {
    let device = Device::flex();
    for (name, dim) in
        [("resnet8x4", 256), ("wrn-16-2", 128), ("vgg8", 512), ("mobilenetv2", 1280), ("shufflenetv2", 1024), ("plane10", 512)]
    {
        let model = ModelSpec::parse(name).unwrap().build([3, 32, 32], 100, &device).unwrap();
        let out = model.forward(Tensor::zeros([1, 3, 32, 32], &device));
        assert_eq!(out.embedding("test").unwrap().dims(), [1, dim], "{name}");
    }
}

#[test]
fn names_round_trip() {
    for spec in ModelSpec::zoo() {
        assert_eq!(ModelSpec::parse(&spec.name()).unwrap(), spec);
    }
    for (alias, name) in [
        ("ResNet8x4", "resnet8x4"),
        ("wrn_40_2", "wrn-40-2"),
        ("vgg13_bn", "vgg13"),
        ("mobile_half", "mobilenetv2"),
        ("ShuffleV2", "shufflenetv2"),
        ("resnet26", "resnet26"),
        ("wrn-28-10", "wrn-28-10"),
        ("mlp-64-32", "mlp-64-32"),
    ] {
        assert_eq!(ModelSpec::parse(alias).unwrap().name(), name, "{alias}");
    }
    // Serde goes through the name.
    assert_eq!(String::from(ModelSpec::parse("resnet32x4").unwrap()), "resnet32x4");
}

#[test]
fn unknown_or_invalid_names_are_errors() {
    for bad in ["resnet", "resnet9", "resnet4", "resnet8x2", "wrn-16", "wrn-15-2", "wrn-16-0", "vgg16", "plane3", "mobilenetv3", ""] {
        assert!(ModelSpec::parse(bad).is_err(), "{bad} should not parse");
    }
}

#[test]
fn inputs_too_small_for_the_strides_are_errors() {
    let device = Device::flex();
    for (name, input) in [("plane10", [3, 8, 8]), ("vgg8", [3, 4, 4]), ("plane2", [3, 3, 3])] {
        let spec = ModelSpec::parse(name).unwrap();
        let err = spec.build(input, 10, &device).unwrap_err().to_string();
        assert!(err.contains("too small"), "{name}: {err}");
        assert!(model_summary(&spec, input, 10).is_err());
    }
    assert!(model_summary(&ModelSpec::parse("resnet8").unwrap(), [3, 32, 32], 0).is_err());
    assert!(ModelSpec::parse("resnet8").unwrap().build([0, 32, 32], 10, &device).is_err());
    // Convolutions with padding shrink any positive size to at least 1: tiny inputs still work.
    check_forward(&ModelSpec::parse("resnet8").unwrap(), [3, 1, 1], 3, &device);
}

#[test]
fn mlp_with_batch_norm_adds_two_parameters_per_hidden_unit() {
    let device = Device::flex();
    let plain = ModelSpec::parse("mlp-32-16").unwrap();
    let bn = ModelSpec::parse("mlpbn-32-16").unwrap();
    assert_eq!(bn.name(), "mlpbn-32-16");
    let input = [1, 28, 28];
    let (p, b) = (model_summary(&plain, input, 10).unwrap(), model_summary(&bn, input, 10).unwrap());
    // 784*32+32 + 32*16+16 + 16*10+10 weights, plus gamma and beta for 32 + 16 units.
    assert_eq!(p.params, 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10);
    assert_eq!(b.params, p.params + 2 * (32 + 16));
    assert_eq!(trainable_params(&bn.build(input, 10, &device).unwrap()), b.params);
    check_forward(&bn, input, 10, &device);
}

#[test]
fn pre_activation_features_where_the_family_has_them() {
    let device = Device::flex();
    let input = Tensor::<4>::random([2, 3, 32, 32], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    for name in ["resnet8", "wrn-16-1", "mlpbn-8-6", "vgg8", "mobilenetv2", "plane4", "shufflenetv2", "mlp-8"] {
        let model = ModelSpec::parse(name).unwrap().build([3, 32, 32], 10, &device).unwrap().valid();
        let plain = model.forward(input.clone());
        assert!(plain.preact.is_none(), "{name}: the plain forward pass carries no pre-activation features");
        match model.forward_preact(input.clone()) {
            Ok(out) => {
                let pre = out.preact.as_ref().unwrap();
                // One per stage after the stem (an MLP: one per hidden layer), each with its BN.
                let stages = if name.starts_with("mlp") { plain.features.len() } else { plain.features.len() - 1 };
                assert_eq!(pre.features.len(), stages, "{name}");
                assert_eq!(pre.bn_before_relu.len(), stages, "{name}");
                let post = &plain.features[plain.features.len() - stages..];
                for ((p, (w, b)), f) in pre.features.iter().zip(&pre.bn_before_relu).zip(post) {
                    assert_eq!(p.dims(), f.dims(), "{name}");
                    assert_eq!((w.dims()[0], b.dims()[0]), (p.dims()[1], p.dims()[1]), "{name}");
                    // The stage output is the ReLU of its pre-activation (MobileNetV2's linear
                    // bottlenecks: the pre-activation itself).
                    let act = if name == "mobilenetv2" { p.clone() } else { p.clone().clamp_min(0.0) };
                    let diff = (act - f.clone()).abs().max().into_scalar::<f32>();
                    assert!(diff < 1e-5, "{name}: relu(preact) differs from the feature by {diff}");
                }
                let same = (out.logits - plain.logits).abs().max().into_scalar::<f32>();
                assert!(same < 1e-5, "{name}");
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(["shufflenetv2", "mlp-8"].contains(&name), "{name}: {msg}");
                assert!(msg.contains("pre-activation"), "{name}: {msg}");
            }
        }
    }
}
