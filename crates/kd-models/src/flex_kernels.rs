//! Batch norm on Flex in three passes over the activations each way, under Burn's autodiff.
//!
//! Burn 0.22.1's Flex backend runs batch norm through Burn's generic composition: in training,
//! two channel-major copies of the input and about eight element-wise passes forward, about a
//! dozen passes and two more copies backward (`ModuleOps::batch_norm_train` and its backward).
//! Here the forward pass reads the input three times (the per-channel mean, the spread around it,
//! the normalisation) and writes the output once; the backward pass reads the gradient and the
//! input for two per-channel sums and once more to write the input's gradient, with the
//! arithmetic of PyTorch's CPU kernel:
//!
//! ```text
//! y = (x - mean) * invstd * gamma + beta,         invstd = 1 / sqrt(var + eps)
//! dbeta = sum(dy),  dgamma = sum(dy * (x - mean)) * invstd
//! dx = gamma * invstd * (dy - dbeta / M - (x - mean) * invstd^2 * sum(dy * (x - mean)) / M)
//! ```
//!
//! with sums over the batch and the spatial positions of a channel (M values), accumulated in
//! f64 across blocks of 512. Float32 only; other element types take Burn's path. A workaround that belongs in
//! burn-flex (its `ModuleOps` could override `batch_norm_train` and its backward): delete this
//! module when Flex runs batch norm natively. `KD_FLEX_KERNELS=0` turns it off, for comparison.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// Batch norm with the batch's statistics on Flex's float32 tensors.
#[backend_extension(Flex, Autodiff)]
pub trait FlexKernels: burn::backend::Backend {
    /// The output, the per-channel mean and the biased variance (Burn's `batch_norm_train`
    /// contract).
    fn flex_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// 2-D convolution without a bias, one group, no dilation: Flex's forward kernel and input
    /// gradient, the weight gradient as an im2col and one batched matrix product.
    fn flex_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: [usize; 2], padding: [usize; 2]) -> FloatTensor<Self>;
}

/// Whether `tensor` takes this module's batch norm: float32 on Flex, the kernels not turned off
/// with `KD_FLEX_KERNELS=0`.
pub fn on_flex<const D: usize>(tensor: &Tensor<D>) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("KD_FLEX_KERNELS").map_or(true, |v| v != "0"));
    on && tensor.dtype() == DType::F32 && matches!(tensor.device().without_autodiff().as_dispatch(), DispatchDevice::Flex(_))
}

/// [`BatchNorm::forward`] in training (a training layer on an autodiff device, where Burn's
/// layer uses the batch's statistics) on this module's kernels, updating the running
/// statistics as Burn's layer does.
pub(crate) fn batch_norm_train<const D: usize>(layer: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    let (gamma, beta) = (layer.gamma.val().into_dispatch(), layer.beta.val().into_dispatch());
    let (output, mean, variance) = <Dispatch as FlexKernels>::flex_batch_norm_train(x.into_dispatch(), gamma, beta, layer.epsilon);
    crate::layers::update_running_statistics(layer, Tensor::from_dispatch(mean), Tensor::from_dispatch(variance));
    Tensor::from_dispatch(output)
}

/// Whether [`conv2d`] covers `layer`: no bias, one group, no dilation (every convolution of
/// the zoo's ResNets and plain CNNs).
pub(crate) fn covers(layer: &Conv2d) -> bool {
    layer.bias.is_none() && layer.groups == 1 && layer.dilation == [1, 1]
}

/// [`Conv2d::forward`] with this module's weight gradient, for a layer it [`covers`], with
/// symmetric `padding`.
pub(crate) fn conv2d(layer: &Conv2d, x: Tensor<4>, padding: [usize; 2]) -> Tensor<4> {
    let weight = layer.weight.val().into_dispatch();
    Tensor::from_dispatch(<Dispatch as FlexKernels>::flex_conv2d(x.into_dispatch(), weight, layer.stride, padding))
}

/// A batch of `[batch, channels, positions...]` seen as `batch` x `channels` runs of `positions`
/// contiguous values.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    channels: usize,
    positions: usize,
}

impl Geometry {
    fn of(x: &FlexTensor) -> Self {
        let shape = x.layout().shape();
        let (batch, channels) = (shape[0], shape[1]);
        let positions = shape.num_elements() / (batch * channels).max(1);
        Geometry { batch, channels, positions }
    }

    /// Values per channel.
    fn per_channel(&self) -> usize {
        self.batch * self.positions
    }

    /// Per channel, the sum of `term(channel, a[i], b[i])` over that channel's values (`a` and
    /// `b` laid out like the batch): in parallel over channels over feature maps, row by row
    /// over plain features (`positions` 1, where a channel's values are a column).
    fn channel_sums(&self, a: &[f32], b: &[f32], term: impl Fn(usize, f32, f32) -> f32 + Sync) -> Vec<f64> {
        let (channels, positions) = (self.channels, self.positions);
        if positions == 1 {
            let mut sums = vec![0f64; channels];
            for (row_a, row_b) in a.chunks(channels).zip(b.chunks(channels)) {
                for (c, (sum, (&x, &y))) in sums.iter_mut().zip(row_a.iter().zip(row_b)).enumerate() {
                    *sum += term(c, x, y) as f64;
                }
            }
            return sums;
        }
        (0..channels)
            .into_par_iter()
            .map(|c| {
                (0..self.batch)
                    .map(|n| {
                        let start = (n * channels + c) * positions;
                        let run = start..start + positions;
                        sum_pairs(&a[run.clone()], &b[run], |x, y| term(c, x, y))
                    })
                    .sum()
            })
            .collect()
    }

    /// Calls `write(channel, range, out[range])` for every run of one channel, in parallel
    /// (grouped so each task has a few thousand values).
    fn fill(&self, out: &mut [f32], write: impl Fn(usize, std::ops::Range<usize>, &mut [f32]) + Sync) {
        let (channels, positions) = (self.channels, self.positions.max(1));
        out.par_chunks_mut(positions).with_min_len(4096usize.div_ceil(positions)).enumerate().for_each(|(run, chunk)| {
            let start = run * positions;
            write(run % channels, start..start + chunk.len(), chunk);
        });
    }
}

/// Float32 contents of `tensor` in row-major order (a copy only if it is strided).
fn values(tensor: &FlexTensor) -> FlexTensor {
    if tensor.as_slice::<f32>().is_some() { tensor.clone() } else { tensor.to_contiguous() }
}

fn slice(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("a contiguous float32 tensor")
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The sum of `term(a[i], b[i])`: eight float32 lanes (which the compiler vectorises) over
/// blocks of 512 values, the blocks added in f64.
fn sum_pairs(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f64 {
    let mut total = 0f64;
    for (a, b) in a.chunks(512).zip(b.chunks(512)) {
        let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(&x, &y)| term(x, y)).sum();
        let mut lanes = [0f32; 8];
        for (x, y) in a8.zip(b8) {
            for lane in 0..8 {
                lanes[lane] += term(x[lane], y[lane]);
            }
        }
        total += lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64;
    }
    total
}

struct TrainForward {
    output: FlexTensor,
    mean: Vec<f32>,
    variance: Vec<f32>,
}

fn train_forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, epsilon: f64) -> TrainForward {
    let geometry = Geometry::of(x);
    let (x, gamma, beta) = (values(x), values(gamma), values(beta));
    let (xs, gammas, betas) = (slice(&x), slice(&gamma), slice(&beta));
    let count = geometry.per_channel() as f64;
    let mean: Vec<f32> = geometry.channel_sums(xs, xs, |_, x, _| x).into_iter().map(|sum| (sum / count) as f32).collect();
    let spread = geometry.channel_sums(xs, xs, |c, x, _| (x - mean[c]) * (x - mean[c]));
    let variance: Vec<f32> = spread.into_iter().map(|sum| (sum / count) as f32).collect();
    let scale: Vec<f32> = (0..geometry.channels).map(|c| gammas[c] / (variance[c] as f64 + epsilon).sqrt() as f32).collect();
    let shift: Vec<f32> = (0..geometry.channels).map(|c| betas[c] - mean[c] * scale[c]).collect();
    let mut output = vec![0f32; xs.len()];
    geometry.fill(&mut output, |c, range, out| {
        for (y, &x) in out.iter_mut().zip(&xs[range]) {
            *y = x * scale[c] + shift[c];
        }
    });
    TrainForward { output: tensor(output, x.layout().shape().to_vec()), mean, variance }
}

/// The gradients of the input, scale and shift, those `wanted` asks for.
fn train_backward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    mean: &[f32],
    variance: &[f32],
    epsilon: f64,
    output_grad: &FlexTensor,
    wanted: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let geometry = Geometry::of(x);
    let (x, gamma, dy) = (values(x), values(gamma), values(output_grad));
    let (xs, gammas, dys) = (slice(&x), slice(&gamma), slice(&dy));
    let invstd: Vec<f32> = variance.iter().map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32).collect();
    let dy_sum = geometry.channel_sums(dys, dys, |_, g, _| g);
    let dy_xmu = geometry.channel_sums(dys, xs, |c, g, x| g * (x - mean[c]));
    let count = geometry.per_channel() as f64;
    let x_grad = wanted[0].then(|| {
        // dx = dy * k + x * a + b, per channel.
        let coefficients: Vec<(f32, f32, f32)> = (0..geometry.channels)
            .map(|c| {
                let invstd = invstd[c] as f64;
                let k = gammas[c] as f64 * invstd;
                let a = -k * invstd * invstd * dy_xmu[c] / count;
                let b = -k * dy_sum[c] / count - mean[c] as f64 * a;
                (k as f32, a as f32, b as f32)
            })
            .collect();
        let mut dx = vec![0f32; xs.len()];
        geometry.fill(&mut dx, |c, range, out| {
            let (k, a, b) = coefficients[c];
            for ((d, &g), &x) in out.iter_mut().zip(&dys[range.clone()]).zip(&xs[range]) {
                *d = g * k + x * a + b;
            }
        });
        tensor(dx, x.layout().shape().to_vec())
    });
    let channels = geometry.channels;
    let gamma_grad = wanted[1].then(|| tensor((0..channels).map(|c| (dy_xmu[c] * invstd[c] as f64) as f32).collect(), vec![channels]));
    let beta_grad = wanted[2].then(|| tensor(dy_sum.iter().map(|&sum| sum as f32).collect(), vec![channels]));
    [x_grad, gamma_grad, beta_grad]
}

/// The gradient of a convolution's weight `[out, channels, kh, kw]`: per image the output's
/// gradient `[out, positions]` times the input's patches `[positions, channels * kh * kw]`
/// (im2col), summed over the batch. Burn's generic path computes it as a convolution of the
/// batch-transposed input with the batch-transposed gradient, a shape Flex's kernels are slow at.
fn conv2d_weight_grad(x: &FlexTensor, output_grad: &FlexTensor, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> FlexTensor {
    let [batch, channels, height, width]: [usize; 4] = x.layout().shape().dims();
    let [_, out, out_height, out_width]: [usize; 4] = output_grad.layout().shape().dims();
    let ([kh, kw], [sh, sw], [ph, pw]) = (kernel, stride, padding);
    let (positions, patch) = (out_height * out_width, channels * kh * kw);
    let x = values(x);
    let xs = slice(&x);
    // Patches transposed, `[batch, patch, positions]`: each row is a (channel, ky, kx) tap over
    // the output positions, read from one input row at a time; padding stays 0.
    let mut columns = vec![0f32; batch * patch * positions];
    columns.par_chunks_mut(patch * positions).enumerate().for_each(|(n, image_columns)| {
        let image = &xs[n * channels * height * width..][..channels * height * width];
        for (tap, row) in image_columns.chunks_mut(positions).enumerate() {
            let (channel, ky, kx) = (tap / (kh * kw), tap / kw % kh, tap % kw);
            // Output columns whose input column `ox * sw + kx - pw` lies inside the image.
            let first = pw.saturating_sub(kx).div_ceil(sw);
            let end = ((width + pw).saturating_sub(kx)).div_ceil(sw).min(out_width);
            for oy in 0..out_height {
                let Some(iy) = (oy * sh + ky).checked_sub(ph).filter(|&iy| iy < height) else { continue };
                let source = &image[(channel * height + iy) * width..][..width];
                let target = &mut row[oy * out_width..][..out_width];
                for ox in first..end {
                    target[ox] = source[ox * sw + kx - pw];
                }
            }
        }
    });
    let columns = tensor(columns, vec![batch, patch, positions]);
    let grad = Flex::float_reshape(values(output_grad), [batch, out, positions].into());
    // [batch, out, positions] x [batch, positions, patch]: the transpose is a strided view.
    let per_image = Flex::float_matmul(grad, Flex::float_swap_dims(columns, 1, 2));
    Flex::float_reshape(Flex::float_sum_dim(per_image, 0), [out, channels, kh, kw].into())
}

fn conv_options(stride: [usize; 2], padding: [usize; 2]) -> ConvOptions<2> {
    ConvOptions::new(stride, padding, [1, 1], 1)
}

impl FlexKernels for Flex {
    fn flex_batch_norm_train(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> (FlexTensor, FlexTensor, FlexTensor) {
        let forward = train_forward(&x, &gamma, &beta, epsilon);
        let channels = forward.mean.len();
        (forward.output, tensor(forward.mean, vec![channels]), tensor(forward.variance, vec![channels]))
    }

    fn flex_conv2d(x: FlexTensor, weight: FlexTensor, stride: [usize; 2], padding: [usize; 2]) -> FlexTensor {
        Flex::conv2d(x, weight, None, conv_options(stride, padding))
    }
}

/// The node of one convolution (parents: input, weight); the state holds both as Burn tensors,
/// so Burn never overwrites them in place before the backward pass reads them.
#[derive(Debug)]
struct ConvBackward;

#[derive(Debug, Clone)]
struct ConvState {
    x: FlexTensor,
    weight: FlexTensor,
    stride: [usize; 2],
    padding: [usize; 2],
}

impl Backward<Flex, 2> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let output_grad = grads.consume::<Flex>(&ops.node);
        let [x_node, weight_node] = ops.parents;
        let s = ops.state;
        if let Some(node) = weight_node {
            let [_, _, kh, kw]: [usize; 4] = s.weight.layout().shape().dims();
            grads.register::<Flex>(node.id, conv2d_weight_grad(&s.x, &output_grad, [kh, kw], s.stride, s.padding));
        }
        if let Some(node) = x_node {
            grads.register::<Flex>(node.id, Flex::conv2d_x_backward(s.x, s.weight, output_grad, conv_options(s.stride, s.padding)));
        }
    }
}

/// The node of one training batch norm (parents: input, scale, shift). The state holds the
/// input and the scale as Burn tensors, so Burn never overwrites them in place before the
/// backward pass reads them.
#[derive(Debug)]
struct BatchNormBackward;

#[derive(Debug, Clone)]
struct BatchNormState {
    x: FlexTensor,
    gamma: FlexTensor,
    mean: Vec<f32>,
    variance: Vec<f32>,
    epsilon: f64,
}

impl Backward<Flex, 3> for BatchNormBackward {
    type State = BatchNormState;

    fn backward(self, ops: Ops<BatchNormState, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let output_grad = grads.consume::<Flex>(&ops.node);
        let parents: [Option<NodeId>; 3] = std::array::from_fn(|i| ops.parents[i].as_ref().map(|node| node.id));
        let s = &ops.state;
        let computed = train_backward(&s.x, &s.gamma, &s.mean, &s.variance, s.epsilon, &output_grad, parents.map(|p| p.is_some()));
        for (parent, grad) in parents.into_iter().zip(computed) {
            if let (Some(id), Some(grad)) = (parent, grad) {
                grads.register::<Flex>(id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> FlexKernels for Autodiff<Flex, C> {
    fn flex_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let forward = train_forward(x.primitive(), gamma.primitive(), beta.primitive(), epsilon);
        let channels = forward.mean.len();
        let untracked = |values: Vec<f32>| FloatTensor::<Self>::new(tensor(values, vec![channels]));
        let (mean, variance) = (untracked(forward.mean.clone()), untracked(forward.variance.clone()));
        let output = match BatchNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let state = BatchNormState {
                    x: x.primitive().clone(),
                    gamma: gamma.primitive().clone(),
                    mean: forward.mean,
                    variance: forward.variance,
                    epsilon,
                };
                prep.finish(state, forward.output)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward.output),
        };
        (output, mean, variance)
    }

    fn flex_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: [usize; 2], padding: [usize; 2]) -> FloatTensor<Self> {
        let output = Flex::conv2d(x.primitive().clone(), weight.primitive().clone(), None, conv_options(stride, padding));
        match ConvBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                prep.finish(ConvState { x: x.primitive().clone(), weight: weight.primitive().clone(), stride, padding }, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}
