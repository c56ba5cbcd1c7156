// LibTorch's convolution and batch-norm backward kernels as C functions, for `src/native.rs`.
//
// tch 0.22 does not expose `convolution_backward` or `native_batch_norm_backward`, the kernels
// PyTorch's own autograd nodes call; without them the gradients had to come from libtorch's
// autograd engine (a recorded graph per operation, seeded through a dot product). These wrappers
// call the two operators directly, through ATen's dispatcher, with the same arguments PyTorch's
// autograd passes them, so the numbers are the same.
//
// Tensors cross as `at::Tensor*`, tch's `C_tensor` handles. Results are heap-allocated tensors the
// caller owns (tch's `Tensor::from_ptr`), null where the output mask left a gradient out. An error
// comes back as a malloc'ed message (`kd_torch_free_error` frees it), never as an exception
// crossing into Rust.

#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/native_batch_norm_backward.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <tuple>

namespace {

char* copy_message(const char* message) {
  size_t length = std::strlen(message);
  char* copy = static_cast<char*>(std::malloc(length + 1));
  if (copy != nullptr) std::memcpy(copy, message, length + 1);
  return copy;
}

at::Tensor* boxed(const at::Tensor& tensor) {
  return tensor.defined() ? new at::Tensor(tensor) : nullptr;
}

std::optional<at::Tensor> maybe(const at::Tensor* tensor) {
  return tensor == nullptr ? std::nullopt : std::optional<at::Tensor>(*tensor);
}

void unbox(const std::tuple<at::Tensor, at::Tensor, at::Tensor>& grads, at::Tensor** out) {
  out[0] = boxed(std::get<0>(grads));
  out[1] = boxed(std::get<1>(grads));
  out[2] = boxed(std::get<2>(grads));
}

}  // namespace

extern "C" {

void kd_torch_free_error(char* message) { std::free(message); }

// The gradients of a 2-D convolution (not transposed) with respect to its input, weight and
// bias, as `mask` asks (0 or 1 each); `bias_channels` < 0 means the convolution had no bias.
// `out` receives three tensors (or nulls). Returns null, or the error's message.
char* kd_torch_conv2d_backward(const at::Tensor* grad_output, const at::Tensor* input,
                               const at::Tensor* weight, int64_t bias_channels,
                               const int64_t* stride, const int64_t* padding,
                               const int64_t* dilation, int64_t groups, const int32_t* mask,
                               at::Tensor** out) {
  try {
    std::array<int64_t, 1> bias_sizes{bias_channels};
    at::OptionalIntArrayRef bias = bias_channels < 0 ? at::OptionalIntArrayRef()
                                                     : at::OptionalIntArrayRef(bias_sizes);
    std::array<int64_t, 2> no_output_padding{0, 0};
    unbox(at::convolution_backward(*grad_output, *input, *weight, bias,
                                   at::IntArrayRef(stride, 2), at::IntArrayRef(padding, 2),
                                   at::IntArrayRef(dilation, 2), /*transposed=*/false,
                                   no_output_padding, groups,
                                   {mask[0] != 0, mask[1] != 0, mask[2] != 0}),
          out);
    return nullptr;
  } catch (const std::exception& error) {
    return copy_message(error.what());
  }
}

// The gradients of batch norm with respect to its input, scale and shift, as `mask` asks.
// Training (`train` 1): the batch's statistics as the forward pass saved them (`save_mean`,
// `save_invstd`; the running ones null). Inference (0): the running statistics the forward pass
// normalised with (`running_mean`, `running_var`; the saved ones null).
char* kd_torch_batch_norm_backward(const at::Tensor* grad_output, const at::Tensor* input,
                                   const at::Tensor* weight, const at::Tensor* running_mean,
                                   const at::Tensor* running_var, const at::Tensor* save_mean,
                                   const at::Tensor* save_invstd, int32_t train, double epsilon,
                                   const int32_t* mask, at::Tensor** out) {
  try {
    unbox(at::native_batch_norm_backward(*grad_output, *input, maybe(weight), maybe(running_mean),
                                         maybe(running_var), maybe(save_mean), maybe(save_invstd),
                                         train != 0, epsilon,
                                         {mask[0] != 0, mask[1] != 0, mask[2] != 0}),
          out);
    return nullptr;
  } catch (const std::exception& error) {
    return copy_message(error.what());
  }
}

}  // extern "C"
