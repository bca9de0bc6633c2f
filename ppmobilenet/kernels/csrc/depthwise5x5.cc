// 5x5 depthwise convolution, padding 2, stride 1 or 2, NCHW float32, on CPU: forward, input
// gradient and filter gradient (ops.cc makes them the Paddle operator ppm_depthwise5x5), for
// MobileNetV3, whose 5x5 layers Paddle runs on one thread with a fixed cost per plane.
//
// One way through every plane: depthwise3x3.cc's stacked path with two zero rows and columns
// of padding. One OpenMP task per channel and group of its samples; their padded planes lie one
// under the other in a flat buffer, so every output is the same 25-tap sum at fixed offsets
// from its own index: one long vectorised loop. Stride 2 computes the stride-1 correlation and
// keeps every second row and column (forward), and spreads the output gradient over the
// stride-1 grid with zeros between its values (backward): four times the products on those
// layers, which are V3's smallest 5x5 layers (two or three a model), for one simple path.
//
// The filter gradient is summed as in depthwise3x3.cc: in float over runs of kChunk positions,
// then in double across groups in a fixed order, so it does not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "depthwise_common.h"
#include "kernels.h"

namespace {

using ppm::out_size;
using namespace ppm::depthwise;  // kBudget, kMargin, kChunk, each_group, sum_shares

constexpr int kK = 5, kPad = 2, kTaps = kK * kK;

// Plane i's pixel (r, c) sits at row i * Hb + kPad + r, column kPad + c of a buffer with rows of
// Wp floats: each plane has kPad zero rows above it (the one above's padding below) and kPad
// zero columns either side. Output (i, p, q) of the stride-1 correlation sits at
// (i * Hb + p) * Wp + q and reads the 25 floats at + a * Wp + b.
struct Stack {
  int H, W, Wp, Hb;
  int64_t m;  // planes per group
  Stack(int64_t N, int H_, int W_) : H(H_), W(W_), Wp(W_ + 2 * kPad), Hb(H_ + kPad) {
    m = std::max<int64_t>(1, std::min<int64_t>(N, kBudget / (int64_t(Hb) * Wp)));
  }
  // the planes, the padding under the last one, and one row for the taps past a row's end
  int64_t floats() const { return (m * Hb + 2 * kPad + 1) * Wp + kMargin; }
  int64_t span(int64_t planes) const { return planes * Hb * Wp; }
  float* pixel(float* buf, int64_t i, int r) const { return buf + (i * Hb + kPad + r) * Wp + kPad; }
  void put(float* buf, int64_t i, const float* plane) const {
    for (int r = 0; r < H; ++r) std::memcpy(pixel(buf, i, r), plane + int64_t(r) * W, sizeof(float) * W);
  }
  // a stride-2 output gradient (Ho x Wo) at pixels (2p, 2q); the pixels between stay zero
  void put_spread(float* buf, int64_t i, const float* plane, int Ho, int Wo) const {
    for (int p = 0; p < Ho; ++p) {
      float* row = pixel(buf, i, 2 * p);
      for (int q = 0; q < Wo; ++q) row[2 * q] = plane[int64_t(p) * Wo + q];
    }
  }
  // a group with fewer planes than the buffer holds: clear the stale rows its loops read below
  // its last plane (only junk positions read them, but 0 * NaN would still be NaN)
  void clear_after(float* buf, int64_t planes) const {
    if (planes < m) std::memset(buf + (planes * Hb + kPad) * Wp, 0, sizeof(float) * (kPad + 1) * Wp);
  }
  // the outputs (Ho x Wo) of plane i: every row and column at stride 1, every second at stride 2
  void take(const float* ext, int64_t i, float* plane, int stride, int Ho, int Wo) const {
    for (int p = 0; p < Ho; ++p) {
      const float* src = ext + (i * Hb + int64_t(p) * stride) * Wp;
      float* dst = plane + int64_t(p) * Wo;
      if (stride == 1)
        std::memcpy(dst, src, sizeof(float) * Wo);
      else
        for (int q = 0; q < Wo; ++q) dst[q] = src[2 * q];
    }
  }
};

// the five taps of filter row a (weights v) over the row at r, from position k
#define PPM_ROW5(v, r, a) \
  (v[5 * a] * r[k] + v[5 * a + 1] * r[k + 1] + v[5 * a + 2] * r[k + 2] + v[5 * a + 3] * r[k + 3] + \
   v[5 * a + 4] * r[k + 4])

// ext[k] = sum over the taps of f[a][b] * src[k + a * row + b], k < n
void correlate(const float* __restrict src, const float* f, float* __restrict ext, int64_t n,
               int64_t row) {
  float v[kTaps];
  for (int t = 0; t < kTaps; ++t) v[t] = f[t];
  const float* __restrict r0 = src;
  const float* __restrict r1 = src + row;
  const float* __restrict r2 = src + 2 * row;
  const float* __restrict r3 = src + 3 * row;
  const float* __restrict r4 = src + 4 * row;
#pragma omp simd
  for (int64_t k = 0; k < n; ++k)
    ext[k] = PPM_ROW5(v, r0, 0) + PPM_ROW5(v, r1, 1) + PPM_ROW5(v, r2, 2) + PPM_ROW5(v, r3, 3) +
             PPM_ROW5(v, r4, 4);
}

// one group's backward: dx, the flipped filter over the (stacked or spread) output gradient Q,
// and the filter gradient's sums: dy at output k (Q[k + kPad * row + kPad], zero at the padding
// and between spread values) times each tap of the input P
void backward(const float* __restrict P, const float* __restrict Q, const float* f,
              float* __restrict dx, double* share, int64_t n, int64_t row) {
  float flipped[kTaps];
  for (int t = 0; t < kTaps; ++t) flipped[t] = f[kTaps - 1 - t];
  correlate(Q, flipped, dx, n, row);
  const float* __restrict d = Q + kPad * row + kPad;
  for (int64_t k0 = 0; k0 < n; k0 += kChunk) {
    const int64_t len = std::min(n, k0 + kChunk) - k0;
    for (int a = 0; a < kK; ++a)
      for (int b = 0; b < kK; ++b) {
        const float* __restrict x = P + k0 + a * row + b;
        const float* __restrict g = d + k0;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < len; ++k) s += g[k] * x[k];
        share[a * kK + b] += s;
      }
  }
}

}  // namespace

namespace ppm {

void depthwise5x5_forward(const float* x, const float* w, float* y, int64_t N, int64_t C, int H,
                          int W, int stride) {
  const int Ho = out_size(H, stride), Wo = out_size(W, stride);
  const int64_t in_plane = int64_t(H) * W, out_plane = int64_t(Ho) * Wo;
  const Stack st(N, H, W);
#pragma omp parallel
  {
    std::vector<float> P(st.floats(), 0.f), E(st.floats(), 0.f);
    each_group(N, C, st.m, [&](int64_t, int64_t c, int64_t n0, int64_t mm) {
      for (int64_t i = 0; i < mm; ++i) st.put(P.data(), i, x + ((n0 + i) * C + c) * in_plane);
      st.clear_after(P.data(), mm);
      correlate(P.data(), w + c * kTaps, E.data(), st.span(mm), st.Wp);
      for (int64_t i = 0; i < mm; ++i)
        st.take(E.data(), i, y + ((n0 + i) * C + c) * out_plane, stride, Ho, Wo);
    });
  }
}

void depthwise5x5_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                           int64_t N, int64_t C, int H, int W, int stride) {
  const int Ho = out_size(H, stride), Wo = out_size(W, stride);
  const int64_t in_plane = int64_t(H) * W, out_plane = int64_t(Ho) * Wo;
  const Stack st(N, H, W);
  const int64_t groups = group_count(N, st.m);
  std::vector<double> shares(static_cast<size_t>(C * groups * kTaps), 0.0);
#pragma omp parallel
  {
    std::vector<float> buf(3 * st.floats(), 0.f);
    float *P = buf.data(), *Q = P + st.floats(), *G = Q + st.floats();
    each_group(N, C, st.m, [&](int64_t task, int64_t c, int64_t n0, int64_t mm) {
      for (int64_t i = 0; i < mm; ++i) {
        const int64_t nc = (n0 + i) * C + c;
        st.put(P, i, x + nc * in_plane);
        if (stride == 1)
          st.put(Q, i, dy + nc * out_plane);
        else
          st.put_spread(Q, i, dy + nc * out_plane, Ho, Wo);
      }
      st.clear_after(P, mm);
      st.clear_after(Q, mm);
      backward(P, Q, w + c * kTaps, G, shares.data() + task * kTaps, st.span(mm), st.Wp);
      for (int64_t i = 0; i < mm; ++i) st.take(G, i, dx + ((n0 + i) * C + c) * in_plane, 1, H, W);
    });
  }
  sum_shares(shares, C, groups, kTaps, dw);
}

}  // namespace ppm
