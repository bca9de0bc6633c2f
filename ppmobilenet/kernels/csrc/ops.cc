// The Paddle custom operators over kernels.h: shape checks, output allocation, registration.
// The only file that includes Paddle's (slow to compile) headers.
#include <vector>

#include "kernels.h"
#include "paddle/extension.h"

namespace {

using DepthwiseForward = void (*)(const float*, const float*, float*, int64_t, int64_t, int, int,
                                  int);
using DepthwiseBackward = void (*)(const float*, const float*, const float*, float*, float*,
                                   int64_t, int64_t, int, int, int);

void check_depthwise(const char* op, int k, const paddle::Tensor& x, const paddle::Tensor& w,
                     int stride) {
  PD_CHECK(x.is_cpu() && w.is_cpu(), op, " runs on CPU tensors only");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && w.dtype() == paddle::DataType::FLOAT32,
           op, " takes float32");
  PD_CHECK(x.shape().size() == 4, op, ": x must be NCHW");
  PD_CHECK(w.shape().size() == 4 && w.shape()[0] == x.shape()[1] && w.shape()[1] == 1 &&
               w.shape()[2] == k && w.shape()[3] == k,
           op, ": the filter must be [C, 1, ", k, ", ", k, "] for C input channels");
  PD_CHECK(stride == 1 || stride == 2, op, ": stride must be 1 or 2");
}

paddle::Tensor dense(const paddle::Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }

std::vector<paddle::Tensor> depthwise_forward(const char* op, int k, DepthwiseForward kernel,
                                              const paddle::Tensor& x_in,
                                              const paddle::Tensor& w_in, int stride) {
  check_depthwise(op, k, x_in, w_in, stride);
  const paddle::Tensor x = dense(x_in), w = dense(w_in);
  const auto& s = x.shape();
  const int H = static_cast<int>(s[2]), W = static_cast<int>(s[3]);
  auto y = paddle::empty({s[0], s[1], ppm::out_size(H, stride), ppm::out_size(W, stride)},
                         paddle::DataType::FLOAT32, paddle::CPUPlace());
  kernel(x.data<float>(), w.data<float>(), y.data<float>(), s[0], s[1], H, W, stride);
  return {y};
}

std::vector<paddle::Tensor> depthwise_backward(const char* op, int k, DepthwiseBackward kernel,
                                               const paddle::Tensor& x_in,
                                               const paddle::Tensor& w_in,
                                               const paddle::Tensor& dy_in, int stride) {
  check_depthwise(op, k, x_in, w_in, stride);
  const paddle::Tensor x = dense(x_in), w = dense(w_in), dy = dense(dy_in);
  const auto& s = x.shape();
  const int H = static_cast<int>(s[2]), W = static_cast<int>(s[3]);
  PD_CHECK(dy.shape() == std::vector<int64_t>(
                             {s[0], s[1], ppm::out_size(H, stride), ppm::out_size(W, stride)}),
           op, "_grad: the output gradient has the wrong shape");
  auto dx = paddle::empty(s, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto dw = paddle::empty(w.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  kernel(x.data<float>(), w.data<float>(), dy.data<float>(), dx.data<float>(), dw.data<float>(),
         s[0], s[1], H, W, stride);
  return {dx, dw};
}

}  // namespace

std::vector<paddle::Tensor> Depthwise3x3Forward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                int stride) {
  return depthwise_forward("ppm_depthwise3x3", 3, ppm::depthwise3x3_forward, x, w, stride);
}

std::vector<paddle::Tensor> Depthwise3x3Backward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                 const paddle::Tensor& dy, int stride) {
  return depthwise_backward("ppm_depthwise3x3", 3, ppm::depthwise3x3_backward, x, w, dy, stride);
}

std::vector<paddle::Tensor> Depthwise5x5Forward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                int stride) {
  return depthwise_forward("ppm_depthwise5x5", 5, ppm::depthwise5x5_forward, x, w, stride);
}

std::vector<paddle::Tensor> Depthwise5x5Backward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                 const paddle::Tensor& dy, int stride) {
  return depthwise_backward("ppm_depthwise5x5", 5, ppm::depthwise5x5_backward, x, w, dy, stride);
}

// both filter sizes pad to keep the plane: the output size is (n - 1) / stride + 1
std::vector<std::vector<int64_t>> DepthwiseInferShape(const std::vector<int64_t>& x,
                                                      const std::vector<int64_t>& w, int stride) {
  return {{x[0], x[1], (x[2] - 1) / stride + 1, (x[3] - 1) / stride + 1}};
}

std::vector<paddle::DataType> DepthwiseInferDtype(const paddle::DataType& x,
                                                  const paddle::DataType& w) {
  return {x};
}

PD_BUILD_OP(ppm_depthwise3x3)
    .Inputs({"X", "Filter"})
    .Outputs({"Out"})
    .Attrs({"stride: int"})
    .SetKernelFn(PD_KERNEL(Depthwise3x3Forward))
    .SetInferShapeFn(PD_INFER_SHAPE(DepthwiseInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DepthwiseInferDtype));

PD_BUILD_GRAD_OP(ppm_depthwise3x3)
    .Inputs({"X", "Filter", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Filter")})
    .Attrs({"stride: int"})
    .SetKernelFn(PD_KERNEL(Depthwise3x3Backward));

PD_BUILD_OP(ppm_depthwise5x5)
    .Inputs({"X", "Filter"})
    .Outputs({"Out"})
    .Attrs({"stride: int"})
    .SetKernelFn(PD_KERNEL(Depthwise5x5Forward))
    .SetInferShapeFn(PD_INFER_SHAPE(DepthwiseInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DepthwiseInferDtype));

PD_BUILD_GRAD_OP(ppm_depthwise5x5)
    .Inputs({"X", "Filter", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Filter")})
    .Attrs({"stride: int"})
    .SetKernelFn(PD_KERNEL(Depthwise5x5Backward));

// ------------------------------------------------------------------ BatchNorm + activation

namespace {

void check_bn(const paddle::Tensor& x, const std::vector<const paddle::Tensor*>& per_channel,
              int act) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32 && x.shape().size() == 4,
           "ppm_bn_act takes an NCHW float32 CPU tensor");
  for (const paddle::Tensor* t : per_channel)
    PD_CHECK(t->is_cpu() && t->dtype() == paddle::DataType::FLOAT32 && t->numel() == x.shape()[1]
                 && t->is_contiguous(),
             "ppm_bn_act: scale, bias and the statistics must be float32 vectors of C values");
  PD_CHECK(act >= ppm::kIdentity && act <= ppm::kHardswish, "ppm_bn_act: unknown activation");
}

}  // namespace

// The running statistics are updated in place through their data pointers: they are buffers
// outside autograd, and declaring them in-place outputs makes Paddle's dygraph pay ~50 us a call
// (and mark them as wanting gradients). Saved: [2, C], the batch mean and 1 / sqrt(var + eps).
std::vector<paddle::Tensor> BnActForward(const paddle::Tensor& x_in, const paddle::Tensor& scale,
                                         const paddle::Tensor& bias, const paddle::Tensor& mean,
                                         const paddle::Tensor& variance, float momentum,
                                         float epsilon, int act) {
  check_bn(x_in, {&scale, &bias, &mean, &variance}, act);
  const paddle::Tensor x = dense(x_in);
  const auto& s = x.shape();
  auto y = paddle::empty(s, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto saved = paddle::empty({2, s[1]}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  ppm::bn_act_forward(x.data<float>(), scale.data<float>(), bias.data<float>(),
                      const_cast<float*>(mean.data<float>()),
                      const_cast<float*>(variance.data<float>()), y.data<float>(),
                      saved.data<float>(), saved.data<float>() + s[1], s[0], s[1], s[2] * s[3],
                      momentum, epsilon, act);
  return {y, saved};
}

std::vector<paddle::Tensor> BnActBackward(const paddle::Tensor& x_in, const paddle::Tensor& scale,
                                          const paddle::Tensor& bias, const paddle::Tensor& saved,
                                          const paddle::Tensor& dy_in, int act) {
  check_bn(x_in, {&scale, &bias}, act);
  const paddle::Tensor x = dense(x_in), dy = dense(dy_in);
  PD_CHECK(dy.shape() == x.shape(), "ppm_bn_act_grad: the output gradient has the wrong shape");
  const auto& s = x.shape();
  PD_CHECK(saved.numel() == 2 * s[1], "ppm_bn_act_grad: the saved statistics have the wrong size");
  auto dx = paddle::empty(s, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto dscale = paddle::empty({s[1]}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto dbias = paddle::empty({s[1]}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  ppm::bn_act_backward(x.data<float>(), scale.data<float>(), bias.data<float>(),
                       saved.data<float>(), saved.data<float>() + s[1], dy.data<float>(),
                       dx.data<float>(), dscale.data<float>(), dbias.data<float>(), s[0], s[1],
                       s[2] * s[3], act);
  return {dx, dscale, dbias};
}

std::vector<std::vector<int64_t>> BnActInferShape(const std::vector<int64_t>& x,
                                                  const std::vector<int64_t>& scale,
                                                  const std::vector<int64_t>& bias,
                                                  const std::vector<int64_t>& mean,
                                                  const std::vector<int64_t>& variance) {
  return {x, {2, x[1]}};
}

std::vector<paddle::DataType> BnActInferDtype(const paddle::DataType& x,
                                              const paddle::DataType& scale,
                                              const paddle::DataType& bias,
                                              const paddle::DataType& mean,
                                              const paddle::DataType& variance) {
  return {x, x};
}

PD_BUILD_OP(ppm_bn_act)
    .Inputs({"X", "Scale", "Bias", "Mean", "Variance"})
    .Outputs({"Out", "Saved"})
    .Attrs({"momentum: float", "epsilon: float", "act: int"})
    .SetKernelFn(PD_KERNEL(BnActForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BnActInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BnActInferDtype));

PD_BUILD_GRAD_OP(ppm_bn_act)
    .Inputs({"X", "Scale", "Bias", "Saved", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Scale"), paddle::Grad("Bias")})
    .Attrs({"act: int"})
    .SetKernelFn(PD_KERNEL(BnActBackward));

// Evaluation: no gradient (the layer takes this path only under paddle.no_grad)
std::vector<paddle::Tensor> BnActInference(const paddle::Tensor& x_in, const paddle::Tensor& scale,
                                           const paddle::Tensor& bias, const paddle::Tensor& mean,
                                           const paddle::Tensor& variance, float epsilon, int act) {
  check_bn(x_in, {&scale, &bias, &mean, &variance}, act);
  const paddle::Tensor x = dense(x_in);
  const auto& s = x.shape();
  auto y = paddle::empty(s, paddle::DataType::FLOAT32, paddle::CPUPlace());
  ppm::bn_act_inference(x.data<float>(), scale.data<float>(), bias.data<float>(),
                        mean.data<float>(), variance.data<float>(), y.data<float>(), s[0], s[1],
                        s[2] * s[3], epsilon, act);
  return {y};
}

PD_BUILD_OP(ppm_bn_act_infer)
    .Inputs({"X", "Scale", "Bias", "Mean", "Variance"})
    .Outputs({"Out"})
    .Attrs({"epsilon: float", "act: int"})
    .SetKernelFn(PD_KERNEL(BnActInference));
