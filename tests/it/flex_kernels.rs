//! The fused batch norm and the convolution's weight gradient on Flex
//! (`crates/kd-models/src/flex_kernels.rs`, on with the `flex` feature) compute what Burn's own
//! layers compute on the same device: outputs, running statistics and every gradient.
#![cfg(feature = "flex")]

use crate::common::{close_to_burn, flat};
use kd::core::burn::module::{Module, Param};
use kd::core::burn::nn::conv::Conv2dConfig;
use kd::core::burn::nn::{BatchNormConfig, PaddingConfig2d};
use kd::core::burn::tensor::{Device, Distribution, Tensor, TensorData};
use kd::models::layers::{batch_norm_forward, conv2d_forward, uses_flex_kernels};

/// One training step's batch norm both ways, for an input of `shape`.
fn agrees<const D: usize>(shape: [usize; D]) {
    let device = Device::flex().autodiff();
    // Off-centre, wide inputs: a one-pass variance would lose digits here.
    let input = Tensor::<D>::random(shape, Distribution::Normal(3.0, 2.0), &device);
    let weights = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    assert!(uses_flex_kernels(&input));
    let run = |ours: bool| {
        let x = input.clone().detach().require_grad();
        // Scale and shift away from 1 and 0, so they matter in the input's gradient.
        let mut bn = BatchNormConfig::new(shape[1]).init(&device);
        let ramp = |scale: f32, offset: f32| {
            let values: Vec<f32> = (0..shape[1]).map(|c| c as f32 * scale + offset).collect();
            Param::from_tensor(Tensor::<1>::from_data(TensorData::new(values, [shape[1]]), &device))
        };
        (bn.gamma, bn.beta) = (ramp(0.1, 1.5), ramp(0.2, -1.0));
        let y = if ours { batch_norm_forward(&bn, x.clone()) } else { bn.forward(x.clone()) };
        let grads = (y.clone() * weights.clone()).sum().backward();
        (
            flat(y.without_autodiff()),
            flat(x.grad(&grads).unwrap()),
            bn.gamma.val().grad(&grads).unwrap(),
            bn.beta.val().grad(&grads).unwrap(),
            bn.running_mean.value_sync(),
            bn.running_var.value_sync(),
        )
    };
    let (ours, burn) = (run(true), run(false));
    let case = format!("{shape:?}");
    close_to_burn(&format!("{case}: output"), ours.0, burn.0);
    close_to_burn(&format!("{case}: input gradient"), ours.1, burn.1);
    close_to_burn(&format!("{case}: gamma gradient"), ours.2, burn.2);
    close_to_burn(&format!("{case}: beta gradient"), ours.3, burn.3);
    close_to_burn(&format!("{case}: running mean"), ours.4, burn.4);
    close_to_burn(&format!("{case}: running variance"), ours.5, burn.5);
}

#[test]
fn feature_maps_agree_with_burns_layer() {
    agrees([6, 5, 7, 9]);
}

#[test]
fn features_agree_with_burns_layer() {
    agrees([33, 12]);
}

/// A batch norm on a device without gradients (a teacher's forward pass) keeps Burn's path.
#[test]
fn inference_keeps_burns_layer() {
    let device = Device::flex();
    let bn = BatchNormConfig::new(3).init(&device);
    let x = Tensor::<4>::random([2, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device);
    close_to_burn("inference", flat(batch_norm_forward(&bn, x.clone())), flat(bn.forward(x)));
}

/// Convolutions of the zoo's shapes (3x3 and strided, 1x1 shortcuts, unpadded, a rectangular
/// input, a 5x5 kernel with stride 3) and two the kernels do not cover (a bias, groups), which
/// keep Burn's path: the output, with and without autodiff, and the input and weight gradients
/// agree with Burn's layer.
#[test]
fn convolutions_agree_with_burns_layer() {
    let device = Device::flex().autodiff();
    let cases = [
        // (in, out, kernel, stride, padding, bias, groups, input height, width)
        (4, 6, 3, 1, 1, false, 1, 9, 7),
        (4, 6, 1, 1, 0, false, 1, 5, 6),
        (2, 3, 5, 3, 2, false, 1, 11, 10),
        (4, 6, 3, 2, 1, false, 1, 9, 8),
        (4, 6, 1, 2, 0, false, 1, 8, 8),
        (3, 5, 3, 1, 0, false, 1, 6, 9),
        // The kernel as tall as the padded input (one output row), and a stride past the kernel.
        (3, 4, 5, 1, 1, false, 1, 3, 4),
        (2, 3, 2, 3, 1, false, 1, 7, 5),
        (4, 6, 3, 1, 1, true, 1, 5, 5),
        (4, 6, 3, 1, 1, false, 2, 5, 5),
    ];
    for (cin, cout, kernel, stride, padding, bias, groups, height, width) in cases {
        let conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(padding, padding, padding, padding))
            .with_bias(bias)
            .with_groups(groups)
            .init(&device);
        // 11 images: the weight gradient's tasks take 8, so one full task and a partial one.
        let input = Tensor::<4>::random([11, cin, height, width], Distribution::Normal(0.0, 1.0), &device);
        let out = |size: usize| (size + 2 * padding - kernel) / stride + 1;
        let weights = Tensor::<4>::random([11, cout, out(height), out(width)], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let x = input.clone().detach().require_grad();
            let conv = conv.clone();
            let y = if ours { conv2d_forward(&conv, x.clone()) } else { conv.forward(x.clone()) };
            let grads = (y.clone() * weights.clone()).sum().backward();
            (flat(y.without_autodiff()), flat(x.grad(&grads).unwrap()), flat(conv.weight.val().grad(&grads).unwrap()))
        };
        let (ours, burn) = (run(true), run(false));
        let case = format!("conv {cin}->{cout} k{kernel} s{stride} p{padding} bias {bias} groups {groups} on {height}x{width}");
        // Without autodiff (a teacher's forward pass) the same forward kernel runs.
        let (inference, x) = (conv.valid(), input.clone().without_autodiff());
        close_to_burn(&format!("{case}: inference"), flat(conv2d_forward(&inference, x.clone())), flat(inference.forward(x)));
        close_to_burn(&format!("{case}: output"), ours.0, burn.0);
        close_to_burn(&format!("{case}: input gradient"), ours.1, burn.1);
        close_to_burn(&format!("{case}: weight gradient"), ours.2, burn.2);
    }
}

/// A kernel larger than its padded input is the model's bug: a message naming the shapes, not
/// an overflow in the kernel's arithmetic.
#[test]
#[should_panic(expected = "an input of 2x6 padded by [1, 1] is smaller than the 5x5 kernel")]
fn a_kernel_larger_than_its_input_is_named() {
    let device = Device::flex().autodiff();
    let conv = Conv2dConfig::new([1, 1], [5, 5]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).with_bias(false).init(&device);
    conv2d_forward(&conv, Tensor::<4>::zeros([1, 1, 2, 6], &device));
}
