//! Batch norm and convolutions on Flex, under Burn's autodiff: fewer passes over the activations
//! than Burn 0.22.1's generic paths.
//!
//! **Batch norm** in three passes each way. Burn 0.22.1's Flex backend runs batch norm through
//! Burn's generic composition: in training, two channel-major copies of the input and about
//! eight element-wise passes forward, about a dozen passes and two more copies backward
//! (`ModuleOps::batch_norm_train` and its backward). Here the forward pass reads the input three
//! times (the per-channel mean, the spread around it, the normalisation) and writes the output
//! once; the backward pass reads the gradient and the input for two per-channel sums and once
//! more to write the input's gradient, with the arithmetic of PyTorch's CPU kernel:
//!
//! ```text
//! y = (x - mean) * invstd * gamma + beta,         invstd = 1 / sqrt(var + eps)
//! dbeta = sum(dy),  dgamma = sum(dy * (x - mean)) * invstd
//! dx = gamma * invstd * (dy - dbeta / M - (x - mean) * invstd^2 * sum(dy * (x - mean)) / M)
//! ```
//!
//! with sums over the batch and the spatial positions of a channel (M values), accumulated in
//! f64 across blocks of 512.
//!
//! **Convolutions** (no bias, one group, no dilation: every convolution of the zoo's ResNets
//! and plain CNNs) as per-image matrix products. With `P` an image's patch matrix
//! `[channels * kh * kw, positions]` (im2col), `W` the weight `[out, channels * kh * kw]` and
//! `dy` the image's output gradient `[out, positions]`:
//!
//! ```text
//! y = W P,        dW = sum over images of dy P^T,        dx = col2im(W^T dy)
//! ```
//!
//! one image per task, so a patch matrix stays in cache and the output is written in place in
//! NCHW. Flex's own forward converts the whole batch to channels-last and back around tiled
//! products; its input gradient is a transposed convolution, and Burn computes the weight
//! gradient as a convolution of the batch-transposed input with the batch-transposed gradient.
//! The weight gradient sums fixed groups of images in order, so it does not depend on the
//! number of threads.
//!
//! Float32 only; other element types take Burn's path. Workarounds that belong in burn-flex (its
//! `ModuleOps` could override `batch_norm_train`, `conv2d` and their backward passes): delete
//! this module when Flex runs them natively. `KD_FLEX_KERNELS=0` turns it off, for comparison.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// Batch norm with the batch's statistics and convolutions on Flex's float32 tensors.
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

    /// 2-D convolution without a bias, one group, no dilation, as per-image matrix products
    /// forward and backward.
    fn flex_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: [usize; 2], padding: [usize; 2]) -> FloatTensor<Self>;
}

/// Whether `tensor` takes this module's kernels: float32 on Flex, the kernels not turned off
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

/// [`Conv2d::forward`] on this module's kernels, forward and backward, for a layer it
/// [`covers`], with symmetric `padding`.
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

/// The shapes of one convolution (no bias, one group, no dilation) of `[batch, channels, height,
/// width]` by `[out, channels, kh, kw]`.
#[derive(Debug, Clone, Copy)]
struct ConvShape {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    out: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    out_height: usize,
    out_width: usize,
}

impl ConvShape {
    fn of(x_shape: [usize; 4], weight_shape: [usize; 4], stride: [usize; 2], padding: [usize; 2]) -> Self {
        let [batch, channels, height, width] = x_shape;
        let [out, _, kh, kw] = weight_shape;
        let out_size = |size: usize, k: usize, s: usize, p: usize| {
            // A model's shapes, not data: a layer that cannot apply is a bug in the model.
            assert!(size + 2 * p >= k, "conv2d: an input of {height}x{width} padded by {padding:?} is smaller than the {kh}x{kw} kernel");
            (size + 2 * p - k) / s + 1
        };
        ConvShape {
            batch,
            channels,
            height,
            width,
            out,
            kernel: [kh, kw],
            stride,
            padding,
            out_height: out_size(height, kh, stride[0], padding[0]),
            out_width: out_size(width, kw, stride[1], padding[1]),
        }
    }

    fn image(&self) -> usize {
        self.channels * self.height * self.width
    }

    fn positions(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Values of one patch: a row of the weight seen as `[out, patch]`.
    fn patch(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// Whether an image is its own patch matrix (a 1x1 kernel, stride 1, no padding).
    fn pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// The runs that pair one image `[channels, height, width]` with its patch matrix
    /// `[patch, positions]`: for every tap (channel, ky, kx) and output row, `each(output
    /// columns, first image index, image step, start of the patch-matrix row)`, the columns
    /// limited to those whose input lies inside the image (padding has no run).
    fn for_each_tap(&self, mut each: impl FnMut(std::ops::Range<usize>, usize, usize, usize)) {
        let ([kh, kw], [sh, sw], [ph, pw]) = (self.kernel, self.stride, self.padding);
        let (positions, out_width) = (self.positions(), self.out_width);
        // Which output rows (per ky) and columns (per kx) read inside the image: computed once,
        // not per tap, since the divisions cost more than a small image's copies.
        let rows: Vec<_> = (0..kh).map(|ky| inside(self.height, ph, ky, sh, self.out_height)).collect();
        let columns: Vec<_> = (0..kw).map(|kx| inside(self.width, pw, kx, sw, out_width)).collect();
        let mut tap = 0;
        for channel in 0..self.channels {
            for (ky, rows) in rows.iter().enumerate() {
                for (kx, columns) in columns.iter().enumerate() {
                    if !columns.is_empty() {
                        for oy in rows.clone() {
                            let row = (channel * self.height + oy * sh + ky - ph) * self.width;
                            // (output columns, first input index, its step, the row of the patch matrix)
                            each(columns.clone(), row + columns.start * sw + kx - pw, sw, tap * positions + oy * out_width);
                        }
                    }
                    tap += 1;
                }
            }
        }
    }

    /// One image's patch matrix `[patch, positions]` (im2col); padding reads as 0.
    fn im2col(&self, image: &[f32], columns: &mut [f32]) {
        columns.fill(0.0);
        self.for_each_tap(|range, source, step, row| {
            let target = &mut columns[row + range.start..row + range.end];
            // Slices instead of indices: no bounds check per value, and a plain copy at stride 1.
            if step == 1 {
                target.copy_from_slice(&image[source..source + target.len()]);
            } else {
                target.iter_mut().zip(image[source..].iter().step_by(step)).for_each(|(t, &v)| *t = v);
            }
        });
    }

    /// The adjoint of [`ConvShape::im2col`]: adds a patch matrix's values back onto the image
    /// positions they were read from (col2im).
    fn col2im(&self, columns: &[f32], image: &mut [f32]) {
        image.fill(0.0);
        self.for_each_tap(|range, source, step, row| {
            let values = &columns[row + range.start..row + range.end];
            if step == 1 {
                image[source..source + values.len()].iter_mut().zip(values).for_each(|(t, &v)| *t += v);
            } else {
                image[source..].iter_mut().step_by(step).zip(values).for_each(|(t, &v)| *t += v);
            }
        });
    }
}

/// The outputs `o` of one axis whose input `o * stride + k - pad` lies inside `0..size`, for
/// the kernel offset `k` (empty when none does).
fn inside(size: usize, pad: usize, k: usize, stride: usize, outputs: usize) -> std::ops::Range<usize> {
    let first = pad.saturating_sub(k).div_ceil(stride);
    let end = (size + pad).saturating_sub(k).div_ceil(stride).min(outputs);
    first..end.max(first)
}

/// A row-major `rows x cols` matrix of `data`, or its transpose (strides swapped).
#[derive(Clone, Copy)]
struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<'a> Matrix<'a> {
    fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "a matrix's values");
        Matrix { data, rows, cols, transposed: false }
    }

    fn t(self) -> Self {
        Matrix { transposed: !self.transposed, ..self }
    }

    /// (rows, cols, column stride, row stride) as seen.
    fn seen(&self) -> (usize, usize, isize, isize) {
        if self.transposed { (self.cols, self.rows, self.cols as isize, 1) } else { (self.rows, self.cols, 1, self.cols as isize) }
    }
}

/// `dst = a * b` (or `dst += a * b` with `accumulate`), `dst` row-major, on one thread: the
/// convolutions below run one image per task.
fn gemm_into(dst: &mut [f32], a: Matrix, b: Matrix, accumulate: bool) {
    let (m, k, a_cs, a_rs) = a.seen();
    let (k_b, n, b_cs, b_rs) = b.seen();
    assert!(k == k_b && dst.len() == m * n, "matrix product of {m}x{k} by {k_b}x{n} into {} values", dst.len());
    // SAFETY: the asserts above and `Matrix::new` bound every index the strides reach: `dst`
    // holds m x n values row-major, `a` and `b` their seen shapes with the strides of `seen`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Images per task of the weight gradient: each task sums its images' products in one
/// buffer, and the tasks' buffers are added in order, so the result does not depend on how
/// many threads ran them.
const IMAGES_PER_TASK: usize = 8;

fn dims(tensor: &FlexTensor) -> [usize; 4] {
    tensor.layout().shape().dims()
}

/// A convolution's output: per image the weight `[out, patch]` times the image's patch matrix
/// `[patch, positions]` (im2col), written in place as `[out, out_height, out_width]`. One task
/// per image, each with a patch matrix that stays in cache; Flex's own kernel converts the
/// whole batch to channels-last and back around its matrix products.
fn conv2d_forward(x: &FlexTensor, weight: &FlexTensor, stride: [usize; 2], padding: [usize; 2]) -> FlexTensor {
    let shape = ConvShape::of(dims(x), dims(weight), stride, padding);
    let (x, weight) = (values(x), values(weight));
    let (xs, w) = (slice(&x), Matrix::new(slice(&weight), shape.out, shape.patch()));
    let (positions, patch) = (shape.positions(), shape.patch());
    let mut output = vec![0f32; shape.batch * shape.out * positions];
    output.par_chunks_mut(shape.out * positions).zip(xs.par_chunks(shape.image())).for_each_init(
        || vec![0f32; if shape.pointwise() { 0 } else { patch * positions }],
        |columns, (out_image, image)| {
            let columns: &[f32] = if shape.pointwise() {
                image
            } else {
                shape.im2col(image, columns);
                columns
            };
            gemm_into(out_image, w, Matrix::new(columns, patch, positions), false);
        },
    );
    tensor(output, vec![shape.batch, shape.out, shape.out_height, shape.out_width])
}

/// A convolution's input and weight gradients in one pass over the batch. Per image, with
/// `dy` its output gradient `[out, positions]` and `P` its patch matrix:
/// `dW += dy * P^T` and `dx = col2im(W^T * dy)`.
fn conv2d_backward(
    x: &FlexTensor,
    weight: &FlexTensor,
    output_grad: &FlexTensor,
    stride: [usize; 2],
    padding: [usize; 2],
    wanted: [bool; 2],
) -> [Option<FlexTensor>; 2] {
    let shape = ConvShape::of(dims(x), dims(weight), stride, padding);
    let (x, weight, output_grad) = (values(x), values(weight), values(output_grad));
    let (xs, dys) = (slice(&x), slice(&output_grad));
    let w = Matrix::new(slice(&weight), shape.out, shape.patch());
    let (positions, patch, image) = (shape.positions(), shape.patch(), shape.image());
    let [want_x, want_weight] = wanted;
    let mut x_grad = vec![0f32; if want_x { shape.batch * image } else { 0 }];
    let tasks = shape.batch.div_ceil(IMAGES_PER_TASK);
    let dx_chunks: Vec<Option<&mut [f32]>> =
        if want_x { x_grad.chunks_mut(IMAGES_PER_TASK * image).map(Some).collect() } else { (0..tasks).map(|_| None).collect() };
    let partial_sums: Vec<Vec<f32>> = dx_chunks
        .into_par_iter()
        .enumerate()
        .map(|(task, mut dx_images)| {
            let mut weight_grad = vec![0f32; if want_weight { shape.out * patch } else { 0 }];
            let mut columns = vec![0f32; patch * positions];
            let first = task * IMAGES_PER_TASK;
            for n in first..(first + IMAGES_PER_TASK).min(shape.batch) {
                let dy = Matrix::new(&dys[n * shape.out * positions..][..shape.out * positions], shape.out, positions);
                let x_image = &xs[n * image..][..image];
                if want_weight {
                    let p: &[f32] = if shape.pointwise() {
                        x_image
                    } else {
                        shape.im2col(x_image, &mut columns);
                        &columns
                    };
                    gemm_into(&mut weight_grad, dy, Matrix::new(p, patch, positions).t(), n > first);
                }
                if let Some(dx_images) = dx_images.as_deref_mut() {
                    let dx = &mut dx_images[(n - first) * image..][..image];
                    if shape.pointwise() {
                        gemm_into(dx, w.t(), dy, false);
                    } else {
                        gemm_into(&mut columns, w.t(), dy, false);
                        shape.col2im(&columns, dx);
                    }
                }
            }
            weight_grad
        })
        .collect();
    let weight_grad = want_weight.then(|| {
        let mut sums = partial_sums.into_iter();
        let mut total = sums.next().unwrap_or_else(|| vec![0f32; shape.out * patch]);
        for partial in sums {
            total.iter_mut().zip(&partial).for_each(|(t, p)| *t += p);
        }
        tensor(total, dims(&weight).to_vec())
    });
    [want_x.then(|| tensor(x_grad, vec![shape.batch, shape.channels, shape.height, shape.width])), weight_grad]
}

/// Hands each tracked parent its computed gradient.
fn register<const N: usize>(grads: &mut Gradients, parents: [Option<NodeId>; N], computed: [Option<FlexTensor>; N]) {
    for (parent, grad) in parents.into_iter().zip(computed) {
        if let (Some(id), Some(grad)) = (parent, grad) {
            grads.register::<Flex>(id, grad);
        }
    }
}

impl FlexKernels for Flex {
    fn flex_batch_norm_train(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> (FlexTensor, FlexTensor, FlexTensor) {
        let forward = train_forward(&x, &gamma, &beta, epsilon);
        let channels = forward.mean.len();
        (forward.output, tensor(forward.mean, vec![channels]), tensor(forward.variance, vec![channels]))
    }

    fn flex_conv2d(x: FlexTensor, weight: FlexTensor, stride: [usize; 2], padding: [usize; 2]) -> FlexTensor {
        conv2d_forward(&x, &weight, stride, padding)
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
        let parents = ops.parents.each_ref().map(|parent| parent.as_ref().map(|node| node.id));
        let s = &ops.state;
        let computed = conv2d_backward(&s.x, &s.weight, &output_grad, s.stride, s.padding, parents.map(|p| p.is_some()));
        register(grads, parents, computed);
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
        let parents = ops.parents.each_ref().map(|parent| parent.as_ref().map(|node| node.id));
        let s = &ops.state;
        let computed = train_backward(&s.x, &s.gamma, &s.mean, &s.variance, s.epsilon, &output_grad, parents.map(|p| p.is_some()));
        register(grads, parents, computed);
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
        let output = conv2d_forward(x.primitive(), weight.primitive(), stride, padding);
        match ConvBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                prep.finish(ConvState { x: x.primitive().clone(), weight: weight.primitive().clone(), stride, padding }, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}
