// Training-mode BatchNorm over NCHW float32 fused with the activation that follows it (none,
// ReLU, clip to [0, 6], hardswish): forward and backward (ops.cc: ppm_bn_act); and the
// inference-mode forward with the running statistics (ppm_bn_act_infer: evaluation).
//
// Paddle runs batch_norm and the activation as separate single-threaded kernels, each a pass
// over memory. Here one OpenMP task takes one channel and makes every pass over that channel's
// N planes while they are still in cache: the mean, the variance (about the mean, not E[x^2] -
// mean^2, which cancels), then the output. The backward recomputes the activation's input from x
// instead of keeping it: one pass for the two sums, one for dx. The activations' gradients
// follow Paddle's own at their kinks (ReLU: z > 0; clip: 0 <= z <= 6; hardswish: 0 for
// z + 3 <= 0, 1 for z + 3 >= 6). Sums run in float over one plane (vectorised), then in double.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

namespace {

template <int ACT>
inline float act(float z) {
  if (ACT == ppm::kReLU) return z > 0.f ? z : 0.f;
  if (ACT == ppm::kClip6) return std::min(std::max(z, 0.f), 6.f);
  if (ACT == ppm::kHardswish) return z * std::min(std::max(z + 3.f, 0.f), 6.f) / 6.f;
  return z;
}

template <int ACT>
inline float act_grad(float z) {
  if (ACT == ppm::kReLU) return z > 0.f ? 1.f : 0.f;
  if (ACT == ppm::kClip6) return (z >= 0.f && z <= 6.f) ? 1.f : 0.f;
  if (ACT == ppm::kHardswish) {
    const float t = z + 3.f;
    return t <= 0.f ? 0.f : (t >= 6.f ? 1.f : (2.f * z + 3.f) / 6.f);
  }
  return 1.f;
}

template <int ACT>
void forward_channel(const float* x, float* y, int64_t N, int64_t C, int64_t HW, float gamma,
                     float beta, float eps, double* mean_out, double* var_out,
                     float* invstd_out) {
  const int64_t stride = C * HW;
  double sum = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const float* __restrict p = x + n * stride;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < HW; ++i) s += p[i];
    sum += s;
  }
  const double M = static_cast<double>(N * HW);
  const float mean = static_cast<float>(sum / M);
  double sq = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const float* __restrict p = x + n * stride;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < HW; ++i) s += (p[i] - mean) * (p[i] - mean);
    sq += s;
  }
  const double var = sq / M;
  const float invstd = static_cast<float>(1.0 / std::sqrt(var + eps));
  const float a = invstd * gamma;
  for (int64_t n = 0; n < N; ++n) {
    const float* __restrict p = x + n * stride;
    float* __restrict o = y + n * stride;
#pragma omp simd
    for (int64_t i = 0; i < HW; ++i) o[i] = act<ACT>((p[i] - mean) * a + beta);
  }
  *mean_out = sum / M;
  *var_out = var;
  *invstd_out = invstd;
}

// The sums and dx over one run of contiguous values (a plane, or a channel gathered in `buf`)
template <int ACT>
inline void backward_sums(const float* __restrict p, const float* __restrict d, int64_t n,
                          float mean, float a, float beta, double* sg, double* sgx) {
  float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t i = 0; i < n; ++i) {
    const float xc = p[i] - mean;
    const float g = d[i] * act_grad<ACT>(xc * a + beta);
    s1 += g;
    s2 += g * xc;
  }
  *sg += s1;
  *sgx += s2;
}

template <int ACT>
inline void backward_dx(const float* __restrict p, const float* __restrict d,
                        float* __restrict o, int64_t n, float mean, float a, float beta,
                        float k_mean, float k_x) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float xc = p[i] - mean;
    const float g = d[i] * act_grad<ACT>(xc * a + beta);
    o[i] = a * (g - k_mean - xc * k_x);
  }
}

// Channels of tiny planes (up to 3x3) are first gathered into a thread's buffer (x, dy, then
// dx): one long loop instead of N loops of a few values (3x faster on 2x2 planes; from 7x7 on,
// the copies cost more than they save).
constexpr int64_t kGatherPlane = 9;    // values per plane up to which the backward gathers
constexpr int64_t kGather = 16384;     // and values per channel

template <int ACT>
void backward_channel(const float* x, const float* dy, float* dx, int64_t N, int64_t C,
                      int64_t HW, float gamma, float beta, float mean, float invstd,
                      float* dgamma, float* dbeta, float* buf) {
  const int64_t stride = C * HW, M = N * HW;
  const float a = invstd * gamma;
  double sg = 0.0, sgx = 0.0;  // sum of g and of g * (x - mean), g the gradient at BN's output
  const bool gather = HW <= kGatherPlane && M <= kGather;
  if (gather) {
    for (int64_t n = 0; n < N; ++n) {
      std::copy(x + n * stride, x + n * stride + HW, buf + n * HW);
      std::copy(dy + n * stride, dy + n * stride + HW, buf + M + n * HW);
    }
    for (int64_t i0 = 0; i0 < M; i0 += 4096)  // float runs of 4096, then double
      backward_sums<ACT>(buf + i0, buf + M + i0, std::min<int64_t>(4096, M - i0), mean, a,
                         beta, &sg, &sgx);
  } else {
    for (int64_t n = 0; n < N; ++n)
      backward_sums<ACT>(x + n * stride, dy + n * stride, HW, mean, a, beta, &sg, &sgx);
  }
  // dx = a * (g - sg / M - (x - mean) * invstd^2 * sgx / M)
  const float k_mean = static_cast<float>(sg / M);
  const float k_x = static_cast<float>(static_cast<double>(invstd) * invstd * sgx / M);
  if (gather) {
    backward_dx<ACT>(buf, buf + M, buf + 2 * M, M, mean, a, beta, k_mean, k_x);
    for (int64_t n = 0; n < N; ++n)
      std::copy(buf + 2 * M + n * HW, buf + 2 * M + (n + 1) * HW, dx + n * stride);
  } else {
    for (int64_t n = 0; n < N; ++n)
      backward_dx<ACT>(x + n * stride, dy + n * stride, dx + n * stride, HW, mean, a, beta,
                       k_mean, k_x);
  }
  *dgamma = static_cast<float>(sgx * invstd);
  *dbeta = static_cast<float>(sg);
}

template <int ACT>
void forward_all(const float* x, const float* gamma, const float* beta, float* running_mean,
                 float* running_var, float* y, float* saved_mean, float* saved_invstd, int64_t N,
                 int64_t C, int64_t HW, float momentum, float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    double mean, var;
    forward_channel<ACT>(x + c * HW, y + c * HW, N, C, HW, gamma[c], beta[c], eps, &mean, &var,
                         saved_invstd + c);
    saved_mean[c] = static_cast<float>(mean);
    // Paddle's convention: running = running * momentum + batch * (1 - momentum), with the
    // biased batch variance
    running_mean[c] = running_mean[c] * momentum + static_cast<float>(mean) * (1.f - momentum);
    running_var[c] = running_var[c] * momentum + static_cast<float>(var) * (1.f - momentum);
  }
}

template <int ACT>
void backward_all(const float* x, const float* gamma, const float* beta, const float* saved_mean,
                  const float* saved_invstd, const float* dy, float* dx, float* dgamma,
                  float* dbeta, int64_t N, int64_t C, int64_t HW) {
#pragma omp parallel
  {
    std::vector<float> buf(HW <= kGatherPlane && N * HW <= kGather ? 3 * N * HW : 0);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c)
      backward_channel<ACT>(x + c * HW, dy + c * HW, dx + c * HW, N, C, HW, gamma[c], beta[c],
                            saved_mean[c], saved_invstd[c], dgamma + c, dbeta + c, buf.data());
  }
}

template <int ACT>
void inference_all(const float* x, const float* gamma, const float* beta, const float* mean,
                   const float* var, float* y, int64_t N, int64_t C, int64_t HW, float eps) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const float a = gamma[c] / std::sqrt(var[c] + eps);
      const float b = beta[c] - mean[c] * a;
      const float* __restrict p = x + (n * C + c) * HW;
      float* __restrict o = y + (n * C + c) * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) o[i] = act<ACT>(p[i] * a + b);
    }
}

}  // namespace

namespace ppm {

void bn_act_forward(const float* x, const float* gamma, const float* beta, float* running_mean,
                    float* running_var, float* y, float* saved_mean, float* saved_invstd,
                    int64_t N, int64_t C, int64_t HW, float momentum, float eps, int activation) {
  switch (activation) {
    case kReLU:
      return forward_all<kReLU>(x, gamma, beta, running_mean, running_var, y, saved_mean,
                                saved_invstd, N, C, HW, momentum, eps);
    case kClip6:
      return forward_all<kClip6>(x, gamma, beta, running_mean, running_var, y, saved_mean,
                                 saved_invstd, N, C, HW, momentum, eps);
    case kHardswish:
      return forward_all<kHardswish>(x, gamma, beta, running_mean, running_var, y, saved_mean,
                                     saved_invstd, N, C, HW, momentum, eps);
    default:
      return forward_all<kIdentity>(x, gamma, beta, running_mean, running_var, y, saved_mean,
                                    saved_invstd, N, C, HW, momentum, eps);
  }
}

void bn_act_backward(const float* x, const float* gamma, const float* beta,
                     const float* saved_mean, const float* saved_invstd, const float* dy,
                     float* dx, float* dgamma, float* dbeta, int64_t N, int64_t C, int64_t HW,
                     int activation) {
  switch (activation) {
    case kReLU:
      return backward_all<kReLU>(x, gamma, beta, saved_mean, saved_invstd, dy, dx, dgamma, dbeta,
                                 N, C, HW);
    case kClip6:
      return backward_all<kClip6>(x, gamma, beta, saved_mean, saved_invstd, dy, dx, dgamma,
                                  dbeta, N, C, HW);
    case kHardswish:
      return backward_all<kHardswish>(x, gamma, beta, saved_mean, saved_invstd, dy, dx, dgamma,
                                      dbeta, N, C, HW);
    default:
      return backward_all<kIdentity>(x, gamma, beta, saved_mean, saved_invstd, dy, dx, dgamma,
                                     dbeta, N, C, HW);
  }
}

void bn_act_inference(const float* x, const float* gamma, const float* beta, const float* mean,
                      const float* var, float* y, int64_t N, int64_t C, int64_t HW, float eps,
                      int activation) {
  switch (activation) {
    case kReLU:
      return inference_all<kReLU>(x, gamma, beta, mean, var, y, N, C, HW, eps);
    case kClip6:
      return inference_all<kClip6>(x, gamma, beta, mean, var, y, N, C, HW, eps);
    case kHardswish:
      return inference_all<kHardswish>(x, gamma, beta, mean, var, y, N, C, HW, eps);
    default:
      return inference_all<kIdentity>(x, gamma, beta, mean, var, y, N, C, HW, eps);
  }
}

}  // namespace ppm
