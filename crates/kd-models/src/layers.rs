//! Building blocks shared by the zoo: PyTorch-style layer constructors, a sequential layer type
//! whose indices line up with `nn.Sequential`, global pooling, and trainable-parameter counting.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};

/// How a convolution's weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConvInit {
    /// `N(0, sqrt(2 / (k·k·out)))` with zero bias: what the CIFAR ResNet, WRN, VGG and MobileNetV2
    /// sources do by hand (equal to `kaiming_normal_(mode="fan_out")`).
    FanOut,
    /// PyTorch's default `Conv2d` initialisation (Burn's default is the same formula).
    Default,
}

/// How a linear layer's weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinearInit {
    /// PyTorch's default `Linear` initialisation (Burn's default is the same formula).
    Default,
    /// Default weights, zero bias (WRN).
    ZeroBias,
    /// `N(0, 0.01)` weights, zero bias (VGG, MobileNetV2).
    Small,
}

/// A 2-D convolution with square kernel, stride and symmetric padding.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    bias: bool,
    init: ConvInit,
    device: &Device,
) -> Conv2d {
    let padding = if padding == 0 { PaddingConfig2d::Valid } else { PaddingConfig2d::Explicit(padding, padding, padding, padding) };
    let config = Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(padding)
        .with_groups(groups)
        .with_bias(bias);
    match init {
        ConvInit::Default => config.init(device),
        ConvInit::FanOut => {
            // Burn's Kaiming fan-out divides by `groups`, PyTorch's does not; giving the std
            // explicitly matches the sources for depthwise convolutions too.
            let std = (2.0 / (kernel * kernel * cout) as f64).sqrt();
            let mut conv = config.with_initializer(Initializer::Normal { mean: 0.0, std }).init(device);
            if bias {
                conv.bias = Some(Initializer::Zeros.init([cout], device));
            }
            conv
        }
    }
}

/// 3x3 convolution, padding 1, no bias: the workhorse of the residual networks.
pub(crate) fn conv3x3(cin: usize, cout: usize, stride: usize, device: &Device) -> Conv2d {
    conv2d(cin, cout, 3, stride, 1, 1, false, ConvInit::FanOut, device)
}

/// 1x1 convolution, no bias.
pub(crate) fn conv1x1(cin: usize, cout: usize, stride: usize, init: ConvInit, device: &Device) -> Conv2d {
    conv2d(cin, cout, 1, stride, 0, 1, false, init, device)
}

/// Batch normalisation with PyTorch's defaults (eps 1e-5, momentum 0.1, gamma 1, beta 0).
pub(crate) fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

/// Whether [`conv2d_forward`], [`batch_norm_forward`] and [`relu`] run libtorch's own kernels for
/// `tensor` (it lives on LibTorch and the `tch` feature is on).
pub fn uses_libtorch_kernels<const D: usize>(tensor: &Tensor<D>) -> bool {
    #[cfg(feature = "tch")]
    return crate::native::on_libtorch(tensor);
    #[cfg(not(feature = "tch"))]
    {
        let _ = tensor;
        false
    }
}

/// Whether [`batch_norm_forward`] runs this project's fused batch norm for `tensor` in training
/// (float32 on Flex, the `flex` feature on; see `flex_kernels.rs`).
pub fn uses_flex_kernels<const D: usize>(tensor: &Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    return crate::flex_kernels::on_flex(tensor);
    #[cfg(not(feature = "flex"))]
    {
        let _ = tensor;
        false
    }
}

/// The `[height, width]` padding of `layer` when it is one the native kernels take: explicit
/// and symmetric (what every model of the zoo uses), or none. Other padding runs on Burn's own
/// path.
#[cfg_attr(not(any(feature = "tch", feature = "flex")), allow(dead_code))]
pub(crate) fn symmetric_padding(layer: &Conv2d) -> Option<[usize; 2]> {
    match layer.padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => Some([top, left]),
        _ => None,
    }
}

/// A convolution's forward pass: on LibTorch (with the `tch` feature) libtorch's own kernels
/// forward and backward (see `native.rs`), on Flex (with the `flex` feature) per-image matrix
/// products forward and backward for the layers they cover (see `flex_kernels.rs`), elsewhere
/// Burn's [`Conv2d::forward`].
pub fn conv2d_forward(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "tch")]
    if crate::native::on_libtorch(&x)
        && let Some(padding) = symmetric_padding(layer)
    {
        return crate::native::conv2d(layer, x, padding);
    }
    #[cfg(feature = "flex")]
    if crate::flex_kernels::on_flex(&x)
        && crate::flex_kernels::covers(layer)
        && let Some(padding) = symmetric_padding(layer)
    {
        return crate::flex_kernels::conv2d(layer, x, padding);
    }
    layer.forward(x)
}

/// ReLU: on LibTorch (with the `tch` feature) libtorch's own kernels forward and backward (see
/// `native.rs`), elsewhere Burn's [`burn::tensor::activation::relu`].
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "tch")]
    if crate::native::on_libtorch(&x) {
        return crate::native::relu(x);
    }
    burn::tensor::activation::relu(x)
}

/// A batch norm's forward pass: over feature maps on LibTorch (with the `tch` feature)
/// libtorch's own fused kernels forward and backward (see `native.rs`); in training on Flex
/// (with the `flex` feature) a fused kernel of three passes each way (see `flex_kernels.rs`); elsewhere Burn's
/// [`BatchNorm::forward`]. All update the running statistics the same way.
pub fn batch_norm_forward<const D: usize>(layer: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "tch")]
    if crate::native::on_libtorch(&x) {
        return crate::native::batch_norm(layer, x);
    }
    #[cfg(feature = "flex")]
    if crate::flex_kernels::on_flex(&x) && x.device().is_autodiff() && layer.training.is_enabled() {
        return crate::flex_kernels::batch_norm_train(layer, x);
    }
    layer.forward(x)
}

/// Moves `layer`'s running statistics towards a training batch's, as Burn's layer does:
/// `running = (1 - momentum) * running + momentum * batch`.
#[cfg_attr(not(any(feature = "tch", feature = "flex")), allow(dead_code))]
pub(crate) fn update_running_statistics(layer: &BatchNorm, mean: Tensor<1>, variance: Tensor<1>) {
    let momentum = layer.momentum;
    let blend = |running: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>| {
        let device = batch.device();
        let updated = running.value_sync().to_device(&device).mul_scalar(1.0 - momentum).add(batch.detach().mul_scalar(momentum));
        running.update(updated.detach());
    };
    blend(&layer.running_mean, mean);
    blend(&layer.running_var, variance);
}

/// A fully connected layer.
pub(crate) fn linear(inputs: usize, outputs: usize, init: LinearInit, device: &Device) -> Linear {
    let config = LinearConfig::new(inputs, outputs);
    match init {
        LinearInit::Default => config.init(device),
        LinearInit::ZeroBias => {
            let mut layer = config.init(device);
            layer.bias = Some(Initializer::Zeros.init([outputs], device));
            layer
        }
        LinearInit::Small => {
            let mut layer = config.with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 }).init(device);
            layer.bias = Some(Initializer::Zeros.init([outputs], device));
            layer
        }
    }
}

/// 2x2 max pooling with stride 2.
pub(crate) fn max_pool2() -> MaxPool2d {
    MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init()
}

/// Global average pooling to `[batch, channels]`: any spatial size works, where the sources use a
/// fixed `AvgPool(8)` that only fits 32x32 inputs.
pub(crate) fn global_pool(x: Tensor<4>) -> Tensor<2> {
    let [b, c, _, _] = x.dims();
    burn::tensor::module::adaptive_avg_pool2d(x, [1, 1]).reshape([b, c])
}

/// One element of an `nn.Sequential` of image layers.
///
/// Parameter-free layers (ReLU, pooling) are kept as elements so that the indices of the
/// parametrised ones, and so the checkpoint keys, are those of the PyTorch original.
#[derive(Module, Debug)]
pub enum SeqLayer {
    /// A convolution.
    Conv(Conv2d),
    /// Batch normalisation.
    Bn(BatchNorm),
    /// ReLU.
    Relu(Relu),
    /// Max pooling.
    MaxPool(MaxPool2d),
}

impl SeqLayer {
    /// Applies the layer.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            SeqLayer::Conv(m) => conv2d_forward(m, x),
            SeqLayer::Bn(m) => batch_norm_forward(m, x),
            SeqLayer::Relu(_) => relu(x),
            SeqLayer::MaxPool(m) => m.forward(x),
        }
    }
}

/// One element of an `nn.Sequential` of fully connected layers.
#[derive(Module, Debug)]
pub enum FcLayer {
    /// A linear layer.
    Linear(Linear),
    /// ReLU.
    Relu(Relu),
}

/// Applies a sequence of image layers.
pub(crate) fn run_seq(layers: &[SeqLayer], mut x: Tensor<4>) -> Tensor<4> {
    for layer in layers {
        x = layer.forward(x);
    }
    x
}

/// Number of trainable parameters: [`Module::num_params`] also counts BatchNorm running
/// statistics (they are visited as float parameters), which PyTorch's
/// `sum(p.numel() for p in model.parameters())` leaves out.
pub fn trainable_params<M: Module>(module: &M) -> usize {
    struct Count {
        path: Vec<String>,
        total: usize,
    }
    impl ModuleVisitor for Count {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            // Running statistics are `RunningState` fields with these names in every Burn norm layer.
            let buffer = matches!(self.path.last().map(String::as_str), Some("running_mean" | "running_var"));
            if !buffer {
                self.total += param.lazy_shape().num_elements();
            }
        }
    }
    let mut count = Count { path: Vec::new(), total: 0 };
    module.visit(&mut count);
    count.total
}
