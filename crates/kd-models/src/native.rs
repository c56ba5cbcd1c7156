//! LibTorch's own convolution and batch-norm kernels, forward and backward, under Burn's autodiff.
//!
//! Burn 0.22.1's LibTorch backend runs a convolution's forward pass on libtorch's kernel but its
//! backward pass through Burn's generic composition (the weight gradient as a convolution of the
//! batch-transposed input with the batch-transposed output gradient, a shape libtorch has no fast
//! kernel for), and batch norm through about a dozen element-wise operations each way where
//! libtorch has one fused kernel each way. Measured on a 2-core CPU (`cargo xtask throughput
//! --backend tch --phases`), that backward pass cost twice PyTorch's for resnet8.
//!
//! Here the forward pass runs libtorch's operator with libtorch's autograd recording it, and the
//! Burn autodiff node's backward asks libtorch's autograd engine for the gradients: the kernels and
//! the numbers are PyTorch's own (`convolution_backward`, `native_batch_norm_backward`), which
//! tch 0.22 does not expose as functions. Burn's graph sees one node per operation, as with its
//! own batch norm.
//!
//! This is a workaround that belongs in burn-tch (its `ModuleOps` could override
//! `conv2d_x_backward`, `conv2d_weight_backward` and `batch_norm_train`); delete this module when
//! Burn's LibTorch backend runs them natively.

#![allow(deprecated)] // `LibTorch` is deprecated in Burn 0.22 in favour of CubeCL backends.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Dispatch, DispatchDevice, LibTorch, backend_extension};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
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

/// The `[height, width]` padding of `layer` when it is one libtorch's convolution takes:
/// explicit and symmetric (what every model of the zoo uses), or none. Other padding runs on
/// Burn's own path.
pub(crate) fn symmetric_padding(layer: &Conv2d) -> Option<[usize; 2]> {
    match layer.padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => Some([top, left]),
        _ => None,
    }
}

/// [`Conv2d::forward`] on libtorch's kernels, with `padding` from [`symmetric_padding`].
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
    let (mean, variance): (Tensor<1>, Tensor<1>) = (Tensor::from_dispatch(mean), Tensor::from_dispatch(variance));
    let momentum = layer.momentum;
    let blend = |running: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>| {
        let updated = running.value_sync().to_device(&device).mul_scalar(1.0 - momentum).add(batch.detach().mul_scalar(momentum));
        running.update(updated.detach());
    };
    blend(&layer.running_mean, mean);
    blend(&layer.running_var, variance);
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

/// The batch's statistics as Burn's contract has them, from one libtorch batch-norm call: the
/// running buffers start at 0 with momentum 1, so libtorch writes the batch mean and the unbiased
/// variance into them.
fn batch_norm_train(x: &tch::Tensor, gamma: &tch::Tensor, beta: &tch::Tensor, epsilon: f64) -> (tch::Tensor, tch::Tensor, tch::Tensor) {
    let channels = x.size()[1];
    let per_channel = x.numel() as i64 / channels;
    let options = (x.kind(), x.device());
    let mean = tch::Tensor::zeros([channels], options);
    let unbiased = tch::Tensor::zeros([channels], options);
    let (output, _, _) = x.native_batch_norm(Some(gamma), Some(beta), Some(&mean), Some(&unbiased), true, 1.0, epsilon);
    let biased = if per_channel > 1 { &unbiased * ((per_channel - 1) as f64 / per_channel as f64) } else { unbiased.zeros_like() };
    // A copy: libtorch's backward reads the buffers it was given, and Burn may update the
    // statistics it is handed in place.
    (output, mean.copy(), biased)
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
        let (output, mean, variance) = batch_norm_train(&x.tensor, &gamma.tensor, &beta.tensor, epsilon);
        (TchTensor::new(output), TchTensor::new(mean), TchTensor::new(variance))
    }

    fn torch_relu(x: TchTensor) -> TchTensor {
        TchTensor::new(x.tensor.relu())
    }

    fn torch_batch_norm(x: TchTensor, gamma: TchTensor, beta: TchTensor, mean: TchTensor, variance: TchTensor, epsilon: f64) -> TchTensor {
        TchTensor::new(batch_norm_given(&x.tensor, &gamma.tensor, &beta.tensor, &mean.tensor, &variance.tensor, epsilon))
    }
}

/// A libtorch autograd graph kept from the forward pass to Burn's backward pass: the operation's
/// output and its inputs, those Burn tracks marked as requiring gradients.
///
/// The inputs and the output are also held as Burn tensors, so that Burn counts them as shared
/// and never overwrites one in place while libtorch may still read it in the backward pass
/// (libtorch would refuse the modified tensor with a panic, not compute a wrong gradient).
struct TorchGraph {
    output: tch::Tensor,
    leaves: Vec<Option<tch::Tensor>>,
    held: Vec<TchTensor>,
}

impl TorchGraph {
    /// Runs `forward` on leaf aliases of `inputs` (sharing their storage), those where `tracked`
    /// says so requiring gradients, with libtorch's autograd recording.
    fn record<E>(inputs: &[&TchTensor], tracked: &[bool], forward: impl FnOnce(&[tch::Tensor]) -> (tch::Tensor, E)) -> (Self, E) {
        let aliases: Vec<tch::Tensor> = inputs.iter().zip(tracked).map(|(t, &track)| t.tensor.detach().set_requires_grad(track)).collect();
        let (output, extra) = tch::with_grad(|| forward(&aliases));
        let leaves = aliases.into_iter().zip(tracked).map(|(alias, &track)| track.then_some(alias)).collect();
        (TorchGraph { output, leaves, held: inputs.iter().map(|t| (*t).clone()).collect() }, extra)
    }

    /// The output for Burn: the same values, outside libtorch's graph.
    fn output(&self) -> TchTensor {
        TchTensor::new(self.output.detach())
    }

    /// The gradients of the tracked inputs for `output_grad`, by libtorch's autograd engine.
    ///
    /// The engine seeds its roots with ones, so the root is the dot product of the output with
    /// `output_grad`: its gradient with respect to the output is `output_grad` itself (one times
    /// each element), and the dot product reads both once without writing a tensor.
    fn gradients(self, output_grad: &tch::Tensor) -> Vec<Option<tch::Tensor>> {
        let tracked: Vec<&tch::Tensor> = self.leaves.iter().flatten().collect();
        if tracked.is_empty() {
            return self.leaves.iter().map(|_| None).collect();
        }
        let root = tch::with_grad(|| self.output.flatten(0, -1).dot(&output_grad.flatten(0, -1)));
        let mut grads = tch::Tensor::run_backward(&[root], &tracked, false, false).into_iter();
        self.leaves.iter().map(|leaf| leaf.as_ref().and_then(|_| grads.next())).collect()
    }
}

impl Clone for TorchGraph {
    fn clone(&self) -> Self {
        TorchGraph {
            output: self.output.shallow_clone(),
            leaves: self.leaves.iter().map(|l| l.as_ref().map(tch::Tensor::shallow_clone)).collect(),
            held: self.held.clone(),
        }
    }
}

impl std::fmt::Debug for TorchGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TorchGraph(output {:?}, {} inputs)", self.output.size(), self.leaves.len())
    }
}

/// The Burn autodiff node of one bridged operation with `N` inputs.
#[derive(Debug)]
struct Bridged<const N: usize>;

impl<const N: usize> Backward<LibTorch, N> for Bridged<N> {
    type State = TorchGraph;

    fn backward(self, ops: Ops<TorchGraph, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let output_grad = grads.consume::<LibTorch>(&ops.node);
        let input_grads = ops.state.gradients(&output_grad.tensor);
        for (parent, grad) in ops.parents.into_iter().zip(input_grads) {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<LibTorch>(node.id, TchTensor::new(grad));
            }
        }
    }
}

/// ReLU's node: tch exposes its backward kernel (`threshold_backward`), so no libtorch graph is
/// needed.
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

/// Runs `forward` on libtorch with its autograd recording where Burn tracks an input, as one
/// Burn autodiff node.
/// `forward` may return values beside the output (batch norm's statistics); they come back as
/// they are.
fn bridged<const N: usize, C: CheckpointStrategy, E>(
    inputs: [&FloatTensor<Autodiff<LibTorch, C>>; N],
    forward: impl FnOnce(&[tch::Tensor]) -> (tch::Tensor, E),
) -> (FloatTensor<Autodiff<LibTorch, C>>, E) {
    let primitives: Vec<&TchTensor> = inputs.iter().map(|t| t.primitive()).collect();
    match Bridged::<N>.prepare::<C>(inputs.map(|t| t.node())).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let tracked: Vec<bool> = inputs.iter().map(|t| t.is_tracked()).collect();
            let (mut graph, extra) = TorchGraph::record(&primitives, &tracked, forward);
            let output = graph.output();
            // Held too, so that Burn never overwrites it in place while the graph lives.
            graph.held.push(output.clone());
            (prep.finish(graph, output), extra)
        }
        OpsKind::UnTracked(prep) => {
            let plain: Vec<tch::Tensor> = primitives.iter().map(|t| t.tensor.shallow_clone()).collect();
            let (output, extra) = tch::no_grad(|| forward(&plain));
            (prep.finish(TchTensor::new(output)), extra)
        }
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
        let geometry = ConvGeometry { stride, padding, dilation, groups };
        bridged::<2, C, ()>([&x, &weight], |t| (conv(&t[0], &t[1], None, &geometry), ())).0
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
        let geometry = ConvGeometry { stride, padding, dilation, groups };
        bridged::<3, C, ()>([&x, &weight, &bias], |t| (conv(&t[0], &t[1], Some(&t[2]), &geometry), ())).0
    }

    fn torch_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (output, (mean, variance)) = bridged::<3, C, _>([&x, &gamma, &beta], |t| {
            let (output, mean, variance) = batch_norm_train(&t[0], &t[1], &t[2], epsilon);
            (output, (mean, variance))
        });
        let untracked = |t: tch::Tensor| FloatTensor::<Self>::new(TchTensor::new(t.detach()));
        (output, untracked(mean), untracked(variance))
    }

    fn torch_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let output = TchTensor::new(x.primitive().tensor.relu());
        match ReluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            // The output is the state (held, so Burn never overwrites it in place).
            OpsKind::Tracked(prep) => prep.finish(output.clone(), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn torch_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        bridged::<5, C, ()>([&x, &gamma, &beta, &mean, &variance], |t| (batch_norm_given(&t[0], &t[1], &t[2], &t[3], &t[4], epsilon), ())).0
    }
}
