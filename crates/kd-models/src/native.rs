//! LibTorch's own convolution and batch-norm kernels, forward and backward, under Burn's autodiff.
//!
//! Burn 0.22.1's LibTorch backend runs a convolution's forward pass on libtorch's kernel but its
//! backward pass through Burn's generic composition (the weight gradient as a convolution of the
//! batch-transposed input with the batch-transposed output gradient, a shape libtorch has no fast
//! kernel for), and batch norm through about a dozen element-wise operations each way where
//! libtorch has one fused kernel each way. Measured on a 2-core CPU (`cargo xtask throughput
//! --backend tch --phases`), that backward pass cost twice PyTorch's for resnet8.
//!
//! Here the forward pass runs libtorch's operator and the Burn autodiff node's backward calls the
//! backward kernels PyTorch's own autograd calls (`convolution_backward`,
//! `native_batch_norm_backward`, through `native/torch_backward.cpp`, since tch 0.22 does not
//! expose them), with the arguments PyTorch passes: the numbers are PyTorch's. Burn's graph sees
//! one node per operation, as with its own batch norm. (Before, these gradients came from
//! libtorch's autograd engine, a graph recorded per operation and seeded through a dot product:
//! the same kernels, and an extra pass over each output.)
//!
//! This is a workaround that belongs in burn-tch (its `ModuleOps` could override
//! `conv2d_x_backward`, `conv2d_weight_backward` and `batch_norm_train`); delete this module when
//! Burn's LibTorch backend runs them natively.

#![allow(deprecated)] // `LibTorch` is deprecated in Burn 0.22 in favour of CubeCL backends.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Dispatch, DispatchDevice, LibTorch, backend_extension};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

/// Convolution and batch norm on libtorch's kernels, forward and backward.
#[backend_extension(LibTorch, Autodiff)]
pub trait TorchKernels: burn::backend::Backend {
    /// 2-D convolution, symmetric padding, no bias.
    fn torch_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> FloatTensor<Self>;

    /// 2-D convolution with a bias.
    fn torch_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> FloatTensor<Self>;

    /// Batch norm with the batch's statistics: the output, the per-channel mean and the biased
    /// variance (Burn's `batch_norm_train` contract).
    fn torch_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// ReLU.
    fn torch_relu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Batch norm with given statistics (inference).
    fn torch_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
}

/// [`Conv2d::forward`] on libtorch's kernels, with `padding` from [`crate::layers::symmetric_padding`].
pub(crate) fn conv2d(layer: &Conv2d, x: Tensor<4>, padding: [usize; 2]) -> Tensor<4> {
    let (stride, dilation, groups) = (layer.stride, layer.dilation, layer.groups);
    let weight = layer.weight.val().into_dispatch();
    let output = match &layer.bias {
        Some(bias) => <Dispatch as TorchKernels>::torch_conv2d_bias(
            x.into_dispatch(),
            weight,
            bias.val().into_dispatch(),
            stride,
            padding,
            dilation,
            groups,
        ),
        None => <Dispatch as TorchKernels>::torch_conv2d(x.into_dispatch(), weight, stride, padding, dilation, groups),
    };
    Tensor::from_dispatch(output)
}

/// ReLU on libtorch's kernels (its backward is one `threshold_backward`, where Burn's is a
/// comparison, a copy and a masked fill).
pub(crate) fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as TorchKernels>::torch_relu(x.into_dispatch()))
}

/// [`BatchNorm::forward`] on libtorch's kernels: the batch's statistics on a training device
/// (updating the running ones as Burn does), the running statistics otherwise.
pub(crate) fn batch_norm<const D: usize>(layer: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let (gamma, beta) = (layer.gamma.val().into_dispatch(), layer.beta.val().into_dispatch());
    if !(device.is_autodiff() && layer.training.is_enabled()) {
        let mean = layer.running_mean.value().to_device(&device).into_dispatch();
        let variance = layer.running_var.value().to_device(&device).into_dispatch();
        return Tensor::from_dispatch(<Dispatch as TorchKernels>::torch_batch_norm(
            x.into_dispatch(),
            gamma,
            beta,
            mean,
            variance,
            layer.epsilon,
        ));
    }
    let (output, mean, variance) = <Dispatch as TorchKernels>::torch_batch_norm_train(x.into_dispatch(), gamma, beta, layer.epsilon);
    crate::layers::update_running_statistics(layer, Tensor::from_dispatch(mean), Tensor::from_dispatch(variance));
    Tensor::from_dispatch(output)
}

/// Whether `tensor` lives on LibTorch, where [`TorchKernels`] runs, and the kernels are not
/// turned off with `KD_LIBTORCH_KERNELS=0` (Burn's own composition then runs, for comparison).
pub fn on_libtorch<const D: usize>(tensor: &Tensor<D>) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("KD_LIBTORCH_KERNELS").map_or(true, |v| v != "0"));
    // An autodiff device wraps the device it runs on.
    on && matches!(tensor.device().without_autodiff().as_dispatch(), DispatchDevice::LibTorch(_))
}

fn conv(x: &tch::Tensor, weight: &tch::Tensor, bias: Option<&tch::Tensor>, geometry: &ConvGeometry) -> tch::Tensor {
    let i64s = |v: [usize; 2]| [v[0] as i64, v[1] as i64];
    x.conv2d(weight, bias, i64s(geometry.stride), i64s(geometry.padding), i64s(geometry.dilation), geometry.groups as i64)
}

/// One libtorch batch-norm call on a training batch.
struct TrainingBatchNorm {
    output: tch::Tensor,
    /// The batch's mean and biased variance, as Burn's `batch_norm_train` contract has them.
    mean: tch::Tensor,
    variance: tch::Tensor,
    /// What the backward kernel reads: the mean and `1 / sqrt(biased variance + epsilon)`.
    save_mean: tch::Tensor,
    save_invstd: tch::Tensor,
}

/// Batch norm with the batch's statistics: the running buffers start at 0 with momentum 1, so
/// libtorch writes the batch mean and the unbiased variance into them.
fn batch_norm_train(x: &tch::Tensor, gamma: &tch::Tensor, beta: &tch::Tensor, epsilon: f64) -> TrainingBatchNorm {
    let channels = x.size()[1];
    let per_channel = x.numel() as i64 / channels;
    let options = (x.kind(), x.device());
    let mean = tch::Tensor::zeros([channels], options);
    let unbiased = tch::Tensor::zeros([channels], options);
    let (output, save_mean, save_invstd) = x.native_batch_norm(Some(gamma), Some(beta), Some(&mean), Some(&unbiased), true, 1.0, epsilon);
    let variance = if per_channel > 1 { &unbiased * ((per_channel - 1) as f64 / per_channel as f64) } else { unbiased.zeros_like() };
    TrainingBatchNorm { output, mean, variance, save_mean, save_invstd }
}

fn batch_norm_given(
    x: &tch::Tensor,
    gamma: &tch::Tensor,
    beta: &tch::Tensor,
    mean: &tch::Tensor,
    variance: &tch::Tensor,
    epsilon: f64,
) -> tch::Tensor {
    x.batch_norm(Some(gamma), Some(beta), Some(mean), Some(variance), false, 0.0, epsilon, false)
}

#[derive(Debug, Clone, Copy)]
struct ConvGeometry {
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
}

impl TorchKernels for LibTorch {
    fn torch_conv2d(
        x: TchTensor,
        weight: TchTensor,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> TchTensor {
        TchTensor::new(conv(&x.tensor, &weight.tensor, None, &ConvGeometry { stride, padding, dilation, groups }))
    }

    fn torch_conv2d_bias(
        x: TchTensor,
        weight: TchTensor,
        bias: TchTensor,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> TchTensor {
        TchTensor::new(conv(&x.tensor, &weight.tensor, Some(&bias.tensor), &ConvGeometry { stride, padding, dilation, groups }))
    }

    fn torch_batch_norm_train(x: TchTensor, gamma: TchTensor, beta: TchTensor, epsilon: f64) -> (TchTensor, TchTensor, TchTensor) {
        let normalised = batch_norm_train(&x.tensor, &gamma.tensor, &beta.tensor, epsilon);
        (TchTensor::new(normalised.output), TchTensor::new(normalised.mean), TchTensor::new(normalised.variance))
    }

    fn torch_relu(x: TchTensor) -> TchTensor {
        TchTensor::new(x.tensor.relu())
    }

    fn torch_batch_norm(x: TchTensor, gamma: TchTensor, beta: TchTensor, mean: TchTensor, variance: TchTensor, epsilon: f64) -> TchTensor {
        TchTensor::new(batch_norm_given(&x.tensor, &gamma.tensor, &beta.tensor, &mean.tensor, &variance.tensor, epsilon))
    }
}

/// LibTorch's backward kernels (`native/torch_backward.cpp`, compiled by build.rs).
mod ffi {
    use std::ffi::{CStr, c_char};
    use torch_sys::C_tensor;

    unsafe extern "C" {
        fn kd_torch_free_error(message: *mut c_char);
        fn kd_torch_conv2d_backward(
            grad_output: *const C_tensor,
            input: *const C_tensor,
            weight: *const C_tensor,
            bias_channels: i64,
            stride: *const i64,
            padding: *const i64,
            dilation: *const i64,
            groups: i64,
            mask: *const i32,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
        fn kd_torch_batch_norm_backward(
            grad_output: *const C_tensor,
            input: *const C_tensor,
            weight: *const C_tensor,
            running_mean: *const C_tensor,
            running_var: *const C_tensor,
            save_mean: *const C_tensor,
            save_invstd: *const C_tensor,
            train: i32,
            epsilon: f64,
            mask: *const i32,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
    }

    /// Takes ownership of the three results, or panics with libtorch's message (as tch's own
    /// operations do: a backward node has no way to return an error).
    fn finish(operation: &str, error: *mut c_char, out: [*mut C_tensor; 3]) -> [Option<tch::Tensor>; 3] {
        if !error.is_null() {
            // SAFETY: a NUL-terminated message the C++ side allocated; freed once, here.
            let message = unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned();
            unsafe { kd_torch_free_error(error) };
            panic!("libtorch's {operation} failed: {message}");
        }
        // SAFETY: each non-null pointer is a tensor the C++ side allocated for the caller.
        out.map(|ptr| (!ptr.is_null()).then(|| unsafe { tch::Tensor::from_ptr(ptr) }))
    }

    fn mask(wanted: [bool; 3]) -> [i32; 3] {
        wanted.map(i32::from)
    }

    /// `at::convolution_backward` of a 2-D, non-transposed convolution: the gradients of the
    /// input, weight and bias (`bias_channels` when it had one) that `wanted` asks for.
    pub(super) fn conv2d_backward(
        grad_output: &tch::Tensor,
        input: &tch::Tensor,
        weight: &tch::Tensor,
        bias_channels: Option<i64>,
        geometry: &super::ConvGeometry,
        wanted: [bool; 3],
    ) -> [Option<tch::Tensor>; 3] {
        let i64s = |v: [usize; 2]| [v[0] as i64, v[1] as i64];
        let (stride, padding, dilation) = (i64s(geometry.stride), i64s(geometry.padding), i64s(geometry.dilation));
        let mut out = [std::ptr::null_mut(); 3];
        // SAFETY: live tensors and arrays of the lengths the C++ side reads (2 and 3).
        let error = unsafe {
            kd_torch_conv2d_backward(
                grad_output.as_ptr(),
                input.as_ptr(),
                weight.as_ptr(),
                bias_channels.unwrap_or(-1),
                stride.as_ptr(),
                padding.as_ptr(),
                dilation.as_ptr(),
                geometry.groups as i64,
                mask(wanted).as_ptr(),
                out.as_mut_ptr(),
            )
        };
        finish("convolution_backward", error, out)
    }

    /// The statistics a batch norm normalised with, as `at::native_batch_norm_backward` takes them.
    pub(super) enum Statistics<'a> {
        /// Training: the batch's mean and inverse standard deviation, saved by the forward pass.
        Saved { mean: &'a tch::Tensor, invstd: &'a tch::Tensor },
        /// Inference: the running mean and variance.
        Running { mean: &'a tch::Tensor, variance: &'a tch::Tensor },
    }

    /// `at::native_batch_norm_backward`: the gradients of the input, scale and shift that
    /// `wanted` asks for.
    pub(super) fn batch_norm_backward(
        grad_output: &tch::Tensor,
        input: &tch::Tensor,
        gamma: &tch::Tensor,
        statistics: Statistics<'_>,
        epsilon: f64,
        wanted: [bool; 3],
    ) -> [Option<tch::Tensor>; 3] {
        let none = std::ptr::null();
        let (train, running_mean, running_var, save_mean, save_invstd) = match statistics {
            Statistics::Saved { mean, invstd } => (1, none, none, mean.as_ptr(), invstd.as_ptr()),
            Statistics::Running { mean, variance } => (0, mean.as_ptr(), variance.as_ptr(), none, none),
        };
        let mut out = [std::ptr::null_mut(); 3];
        // SAFETY: live tensors or nulls where the operator takes an optional one, and a mask of 3.
        let error = unsafe {
            kd_torch_batch_norm_backward(
                grad_output.as_ptr(),
                input.as_ptr(),
                gamma.as_ptr(),
                running_mean,
                running_var,
                save_mean,
                save_invstd,
                train,
                epsilon,
                mask(wanted).as_ptr(),
                out.as_mut_ptr(),
            )
        };
        finish("native_batch_norm_backward", error, out)
    }
}

/// The nodes of an operation's inputs Burn tracks (the others need no gradient).
fn tracked_parents<S, const N: usize>(ops: &Ops<S, N>) -> [Option<NodeId>; N] {
    std::array::from_fn(|i| ops.parents[i].as_ref().map(|node| node.id))
}

/// The output mask of a backward kernel: which of its (up to three) gradients to compute.
fn wanted<const N: usize>(parents: &[Option<NodeId>; N]) -> [bool; 3] {
    std::array::from_fn(|i| parents.get(i).is_some_and(Option::is_some))
}

/// Hands each computed gradient to its parent.
fn register<const N: usize>(grads: &mut Gradients, parents: [Option<NodeId>; N], computed: [Option<tch::Tensor>; 3]) {
    for (parent, grad) in parents.into_iter().zip(computed) {
        if let (Some(id), Some(grad)) = (parent, grad) {
            grads.register::<LibTorch>(id, TchTensor::new(grad));
        }
    }
}

/// A convolution's node (`N` = 2 without a bias, 3 with one). The state holds the input and
/// the weight as Burn tensors, so Burn counts them as shared and never overwrites them in place
/// before the backward pass reads them.
#[derive(Debug)]
struct ConvBackward<const N: usize>;

#[derive(Debug, Clone)]
struct ConvState {
    x: TchTensor,
    weight: TchTensor,
    geometry: ConvGeometry,
}

impl<const N: usize> Backward<LibTorch, N> for ConvBackward<N> {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let output_grad = grads.consume::<LibTorch>(&ops.node);
        let state = &ops.state;
        let bias_channels = (N == 3).then(|| state.weight.tensor.size()[0]);
        let parents = tracked_parents(&ops);
        let computed = ffi::conv2d_backward(
            &output_grad.tensor,
            &state.x.tensor,
            &state.weight.tensor,
            bias_channels,
            &state.geometry,
            wanted(&parents),
        );
        register(grads, parents, computed);
    }
}

/// A batch norm's node (parents: input, scale, shift); the statistics are constants to it.
#[derive(Debug)]
struct BatchNormBackward;

#[derive(Debug, Clone)]
struct BatchNormState {
    x: TchTensor,
    gamma: TchTensor,
    /// Training: the saved mean and inverse standard deviation; inference: the running mean and
    /// variance.
    statistics: (TchTensor, TchTensor),
    train: bool,
    epsilon: f64,
}

impl Backward<LibTorch, 3> for BatchNormBackward {
    type State = BatchNormState;

    fn backward(self, ops: Ops<BatchNormState, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let output_grad = grads.consume::<LibTorch>(&ops.node);
        let state = &ops.state;
        let (first, second) = (&state.statistics.0.tensor, &state.statistics.1.tensor);
        let statistics = if state.train {
            ffi::Statistics::Saved { mean: first, invstd: second }
        } else {
            ffi::Statistics::Running { mean: first, variance: second }
        };
        let parents = tracked_parents(&ops);
        let computed = ffi::batch_norm_backward(
            &output_grad.tensor,
            &state.x.tensor,
            &state.gamma.tensor,
            statistics,
            state.epsilon,
            wanted(&parents),
        );
        register(grads, parents, computed);
    }
}

/// ReLU's node: tch exposes its backward kernel (`threshold_backward`).
#[derive(Debug)]
struct ReluBackward;

impl Backward<LibTorch, 1> for ReluBackward {
    type State = TchTensor;

    fn backward(self, ops: Ops<TchTensor, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let output_grad = grads.consume::<LibTorch>(&ops.node);
        if let [Some(node)] = ops.parents {
            let grad = ops.state.tensor.threshold_backward(&output_grad.tensor, 0.0);
            grads.register::<LibTorch>(node.id, TchTensor::new(grad));
        }
    }
}

/// A convolution on autodiff: libtorch's forward kernel, and [`ConvBackward`] where Burn tracks
/// an input.
fn tracked_conv<const N: usize, C: CheckpointStrategy>(
    inputs: [&FloatTensor<Autodiff<LibTorch, C>>; N],
    geometry: ConvGeometry,
) -> FloatTensor<Autodiff<LibTorch, C>> {
    let (x, weight) = (inputs[0].primitive(), inputs[1].primitive());
    let bias = (N == 3).then(|| &inputs[2].primitive().tensor);
    let output = TchTensor::new(conv(&x.tensor, &weight.tensor, bias, &geometry));
    match ConvBackward::<N>.prepare::<C>(inputs.map(|t| t.node())).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(ConvState { x: x.clone(), weight: weight.clone(), geometry }, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

impl<C: CheckpointStrategy> TorchKernels for Autodiff<LibTorch, C> {
    fn torch_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> FloatTensor<Self> {
        tracked_conv::<2, C>([&x, &weight], ConvGeometry { stride, padding, dilation, groups })
    }

    fn torch_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> FloatTensor<Self> {
        tracked_conv::<3, C>([&x, &weight, &bias], ConvGeometry { stride, padding, dilation, groups })
    }

    fn torch_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (x_primitive, gamma_primitive) = (x.primitive(), gamma.primitive());
        let normalised = batch_norm_train(&x_primitive.tensor, &gamma_primitive.tensor, &beta.primitive().tensor, epsilon);
        let output = TchTensor::new(normalised.output);
        let untracked = |t: tch::Tensor| FloatTensor::<Self>::new(TchTensor::new(t));
        let statistics = (untracked(normalised.mean), untracked(normalised.variance));
        let output = match BatchNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let state = BatchNormState {
                    x: x_primitive.clone(),
                    gamma: gamma_primitive.clone(),
                    statistics: (TchTensor::new(normalised.save_mean), TchTensor::new(normalised.save_invstd)),
                    train: true,
                    epsilon,
                };
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        (output, statistics.0, statistics.1)
    }

    fn torch_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let output = TchTensor::new(x.primitive().tensor.relu());
        match ReluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            // The output is the state (held, so Burn never overwrites it in place).
            OpsKind::Tracked(prep) => prep.finish(output.clone(), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    /// The statistics are constants here (they are running buffers, never parameters): the
    /// gradient flows to the input, scale and shift.
    fn torch_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let (x_primitive, gamma_primitive) = (x.primitive(), gamma.primitive());
        let (mean, variance) = (mean.primitive(), variance.primitive());
        let output = TchTensor::new(batch_norm_given(
            &x_primitive.tensor,
            &gamma_primitive.tensor,
            &beta.primitive().tensor,
            &mean.tensor,
            &variance.tensor,
            epsilon,
        ));
        match BatchNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let state = BatchNormState {
                    x: x_primitive.clone(),
                    gamma: gamma_primitive.clone(),
                    statistics: (mean.clone(), variance.clone()),
                    train: false,
                    epsilon,
                };
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}
