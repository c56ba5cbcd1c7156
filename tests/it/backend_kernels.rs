//! LibTorch's own convolution, batch-norm and ReLU kernels under Burn's autodiff
//! (`crates/kd-models/src/native.rs`, on with the `tch` feature) compute what Burn's own layers
//! compute on the same LibTorch device: outputs, running statistics and every gradient.
#![cfg(feature = "tch")]
#![allow(deprecated)] // `Device::libtorch`: LibTorch is deprecated in Burn 0.22.

use crate::common::{close_to_burn, flat};
use kd::core::burn::module::{Module, Param};
use kd::core::burn::nn::conv::Conv2dConfig;
use kd::core::burn::nn::{BatchNormConfig, PaddingConfig2d};
use kd::core::burn::tensor::{Device, Distribution, Tensor};
use kd::models::layers::{batch_norm_forward, conv2d_forward, relu, uses_libtorch_kernels};

/// Conv (with and without bias, strided, grouped), batch norm and ReLU, on libtorch's kernels and
/// through Burn's own layers, on the same LibTorch device: outputs, running statistics and
/// every gradient agree.
#[test]
fn libtorch_kernels_agree_with_burns_layers_forward_and_backward() {
    let device = Device::libtorch().autodiff();
    for (bias, stride, groups) in [(false, 1, 1), (true, 2, 1), (false, 1, 4)] {
        let conv = Conv2dConfig::new([4, 8], [3, 3])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_groups(groups)
            .with_bias(bias)
            .init(&device);
        let input = Tensor::<4>::random([5, 4, 9, 9], Distribution::Normal(0.0, 1.0), &device);
        let side = 9 / stride + 9 % stride;
        let weights = Tensor::<4>::random([5, 8, side, side], Distribution::Normal(0.0, 1.0), &Device::libtorch());
        let run = |native: bool| {
            let x = input.clone().detach().require_grad();
            // A fresh layer each: clones of one would share their running statistics.
            let (conv, bn) = (conv.clone(), BatchNormConfig::new(8).init(&device));
            let y = match native {
                true => relu(batch_norm_forward(&bn, conv2d_forward(&conv, x.clone()))),
                false => burn::tensor::activation::relu(bn.forward(conv.forward(x.clone()))),
            };
            let grads = (y.clone() * weights.clone().to_device(&device)).sum().backward();
            let grad = |t: &Tensor<4>| flat(t.grad(&grads).unwrap());
            (
                flat(y.without_autodiff()),
                grad(&x),
                flat(conv.weight.val().grad(&grads).unwrap()),
                conv.bias.as_ref().map(|b| b.val().grad(&grads).unwrap()),
                bn.gamma.val().grad(&grads).unwrap(),
                bn.beta.val().grad(&grads).unwrap(),
                bn.running_mean.value_sync(),
                bn.running_var.value_sync(),
            )
        };
        let (ours, burn) = (run(true), run(false));
        let case = format!("bias {bias}, stride {stride}, groups {groups}");
        close_to_burn(&format!("{case}: output"), ours.0, burn.0);
        close_to_burn(&format!("{case}: input gradient"), ours.1, burn.1);
        close_to_burn(&format!("{case}: weight gradient"), ours.2, burn.2);
        if let (Some(a), Some(b)) = (ours.3, burn.3) {
            close_to_burn(&format!("{case}: bias gradient"), a, b);
        }
        close_to_burn(&format!("{case}: gamma gradient"), ours.4, burn.4);
        close_to_burn(&format!("{case}: beta gradient"), ours.5, burn.5);
        close_to_burn(&format!("{case}: running mean"), ours.6, burn.6);
        close_to_burn(&format!("{case}: running variance"), ours.7, burn.7);
    }
}

/// Batch norm in evaluation (the teachers' forward pass), with running statistics a training
/// step has moved away from 0 and 1.
#[test]
fn batch_norm_in_evaluation_agrees() {
    let device = Device::libtorch().autodiff();
    let bn = BatchNormConfig::new(6).init(&device);
    let input = Tensor::<4>::random([7, 6, 3, 3], Distribution::Normal(2.0, 3.0), &device);
    let _ = bn.forward(input.clone());
    let (plain, frozen) = (input.without_autodiff(), bn.valid());
    close_to_burn("evaluation output", flat(batch_norm_forward(&frozen, plain.clone())), flat(frozen.forward(plain)));
}

/// Batch norm with its running statistics on an autodiff device (a frozen layer that gradients
/// still pass through): the input, scale and shift gradients agree with Burn's layer.
#[test]
fn batch_norm_in_evaluation_passes_the_same_gradients() {
    let device = Device::libtorch().autodiff();
    let mut bn = BatchNormConfig::new(6).init(&device);
    let input = Tensor::<4>::random([7, 6, 3, 3], Distribution::Normal(2.0, 3.0), &device);
    let _ = bn.forward(input.clone());
    bn.training = Param::from_bool(false);
    let weights = Tensor::<4>::random([7, 6, 3, 3], Distribution::Normal(0.0, 1.0), &device);
    let run = |native: bool| {
        let (x, bn) = (input.clone().detach().require_grad(), bn.clone());
        let y = if native { batch_norm_forward(&bn, x.clone()) } else { bn.forward(x.clone()) };
        let grads = (y.clone() * weights.clone()).sum().backward();
        (
            flat(y.without_autodiff()),
            flat(x.grad(&grads).unwrap()),
            bn.gamma.val().grad(&grads).unwrap(),
            bn.beta.val().grad(&grads).unwrap(),
        )
    };
    let (ours, burn) = (run(true), run(false));
    close_to_burn("frozen batch norm: output", ours.0, burn.0);
    close_to_burn("frozen batch norm: input gradient", ours.1, burn.1);
    close_to_burn("frozen batch norm: gamma gradient", ours.2, burn.2);
    close_to_burn("frozen batch norm: beta gradient", ours.3, burn.3);
}

/// The path the agreement tests compare with Burn's is the native one (an autodiff device
/// wraps the LibTorch one).
#[test]
fn tensors_on_libtorch_take_the_native_path() {
    assert!(uses_libtorch_kernels(&Tensor::<1>::zeros([2], &Device::libtorch().autodiff())));
    assert!(uses_libtorch_kernels(&Tensor::<1>::zeros([2], &Device::libtorch())));
    assert!(!uses_libtorch_kernels(&Tensor::<1>::zeros([2], &Device::flex().autodiff())));
}

/// An input Burn does not track (the images) gets no gradient, the weights still do.
#[test]
fn an_untracked_input_leaves_only_the_weights_with_gradients() {
    let device = Device::libtorch().autodiff();
    let conv = Conv2dConfig::new([3, 2], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(&device);
    let images = Tensor::<4>::ones([2, 3, 5, 5], &device);
    let grads = conv2d_forward(&conv, images.clone()).sum().backward();
    assert!(images.grad(&grads).is_none());
    assert!(conv.weight.val().grad(&grads).is_some());
}
