// The CPU kernels behind ppmobilenet's custom operators (ops.cc), free of Paddle's headers.
// Tensors are dense row-major float32 arrays; every function threads itself with OpenMP.
#pragma once
#include <cstdint>

namespace ppm {

// kernel 3, padding 1 and kernel 5, padding 2 alike
inline int out_size(int n, int stride) { return (n - 1) / stride + 1; }

// y[N, C, Ho, Wo] = depthwise 3x3 conv of x[N, C, H, W] with w[C, 1, 3, 3], padding 1
void depthwise3x3_forward(const float* x, const float* w, float* y, int64_t N, int64_t C, int H,
                          int W, int stride);
// dx[N, C, H, W] and dw[C, 1, 3, 3] from dy[N, C, Ho, Wo]
void depthwise3x3_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                           int64_t N, int64_t C, int H, int W, int stride);

// the same for a 5x5 filter w[C, 1, 5, 5], padding 2 (depthwise5x5.cc)
void depthwise5x5_forward(const float* x, const float* w, float* y, int64_t N, int64_t C, int H,
                          int W, int stride);
void depthwise5x5_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                           int64_t N, int64_t C, int H, int W, int stride);

// the activation fused after BatchNorm (the op's `act` attribute)
enum Activation { kIdentity = 0, kReLU = 1, kClip6 = 2, kHardswish = 3 };

// training-mode BatchNorm of x[N, C, HW] with batch statistics, then the activation; updates
// running_mean / running_var in place (running * momentum + batch * (1 - momentum))
void bn_act_forward(const float* x, const float* gamma, const float* beta, float* running_mean,
                    float* running_var, float* y, float* saved_mean, float* saved_invstd,
                    int64_t N, int64_t C, int64_t HW, float momentum, float eps, int activation);
// dx, dgamma, dbeta from dy (the gradient at the activation's output)
void bn_act_backward(const float* x, const float* gamma, const float* beta,
                     const float* saved_mean, const float* saved_invstd, const float* dy,
                     float* dx, float* dgamma, float* dbeta, int64_t N, int64_t C, int64_t HW,
                     int activation);

// inference-mode BatchNorm of x[N, C, HW] with the running statistics, then the activation:
// y = act(x * a + b), a = gamma / sqrt(var + eps), b = beta - mean * a (Paddle's own form)
void bn_act_inference(const float* x, const float* gamma, const float* beta, const float* mean,
                      const float* var, float* y, int64_t N, int64_t C, int64_t HW, float eps,
                      int activation);

}  // namespace ppm
