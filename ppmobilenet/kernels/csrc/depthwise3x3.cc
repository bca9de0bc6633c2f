// 3x3 depthwise convolution, padding 1, stride 1 or 2, NCHW float32, on CPU: forward, input
// gradient and filter gradient (ops.cc makes them the Paddle operator ppm_depthwise3x3).
//
// Paddle's own CPU kernel runs on one thread and pays a fixed cost per (sample, channel) plane.
// Here the work is split into OpenMP tasks, with two ways through a plane:
//
// - The row path (forward at stride 2, and at stride 1 on planes of 17+ columns): one task per
//   plane, one output row at a time straight from the input rows it needs (they stay in L1, so
//   a large plane needs no further blocking); the border columns are split from the interior
//   loop, which has no branches and vectorises.
// - The stacked path (everything else: the small forward planes, and both gradients): one task
//   per channel and group of its samples. Their planes are copied into a buffer one under the
//   other, with zero rows and columns between them (the padding), so the whole group is one
//   flat array: every output is the same nine-tap sum at fixed offsets from its own index, one
//   long vectorised loop instead of many short rows, and a 2x2 plane costs what four pixels
//   should. Groups are sized to stay in L1/L2 (one plane when it is large: up to 114x114
//   floats, in L2). At stride 2 the padded plane is split into its four phases (even/odd rows x
//   even/odd columns), so every tap reads a contiguous run of one phase, and the input gradient
//   is computed per phase (4, 2, 2 and 1 taps) and interleaved back.
//
// The filter gradient is summed in float over runs of kChunk positions (vectorised), then in
// double, across groups in a fixed order: the result does not depend on the thread count.
// Missing rows are skipped on the row path and zeros on the stacked one: the same products.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "depthwise_common.h"
#include "kernels.h"

namespace {

using ppm::out_size;
using namespace ppm::depthwise;  // kBudget, kMargin, kChunk, each_group, sum_shares

constexpr int kRowPathWidth = 17;  // forward at stride 1 takes the row path from this width on

// ---------------------------------------------------------------- the row path (forward)
// One output row at a time, straight from the input: r[t] are the NR input rows that exist, k[t]
// their filter rows. The border columns are split from the interior loop. On planes of 16+
// columns (and at stride 2) this beats the stacked path, which pays for its copies.

// r[t]: the NR input rows that exist, k[t]: their filter rows (3 taps each).

template <int NR>
inline void fwd_row_s1(const float* const* r, const float (*k)[3], float* __restrict o, int W) {
  if (W == 1) {
    float s = 0.f;
    for (int t = 0; t < NR; ++t) s += k[t][1] * r[t][0];
    o[0] = s;
    return;
  }
  float s = 0.f;
  for (int t = 0; t < NR; ++t) s += k[t][1] * r[t][0] + k[t][2] * r[t][1];
  o[0] = s;
  float w[NR][3];
  const float* __restrict rr[NR];
  for (int t = 0; t < NR; ++t) {
    rr[t] = r[t];
    for (int b = 0; b < 3; ++b) w[t][b] = k[t][b];
  }
  for (int j = 1; j < W - 1; ++j) {
    float v = 0.f;
    for (int t = 0; t < NR; ++t)
      v += w[t][0] * rr[t][j - 1] + w[t][1] * rr[t][j] + w[t][2] * rr[t][j + 1];
    o[j] = v;
  }
  s = 0.f;
  for (int t = 0; t < NR; ++t) s += k[t][0] * r[t][W - 2] + k[t][1] * r[t][W - 1];
  o[W - 1] = s;
}

template <int NR>
inline void fwd_row_s2(const float* const* r, const float (*k)[3], float* __restrict o, int W) {
  const int Wo = out_size(W, 2);
  // q = 0 reads columns 0 and 1
  float s = 0.f;
  for (int t = 0; t < NR; ++t) s += k[t][1] * r[t][0] + (W > 1 ? k[t][2] * r[t][1] : 0.f);
  o[0] = s;
  float w[NR][3];
  const float* __restrict rr[NR];
  for (int t = 0; t < NR; ++t) {
    rr[t] = r[t];
    for (int b = 0; b < 3; ++b) w[t][b] = k[t][b];
  }
  const int qi = W / 2;  // interior: columns 2q-1 .. 2q+1 all inside
  for (int q = 1; q < qi; ++q) {
    float v = 0.f;
    for (int t = 0; t < NR; ++t)
      v += w[t][0] * rr[t][2 * q - 1] + w[t][1] * rr[t][2 * q] + w[t][2] * rr[t][2 * q + 1];
    o[q] = v;
  }
  for (int q = std::max(1, qi); q < Wo; ++q) {  // the last column when W is odd
    float v = 0.f;
    for (int t = 0; t < NR; ++t)
      v += k[t][0] * r[t][2 * q - 1] + k[t][1] * r[t][2 * q] +
           (2 * q + 1 < W ? k[t][2] * r[t][2 * q + 1] : 0.f);
    o[q] = v;
  }
}

template <int S, int NR>
inline void fwd_row(const float* const* r, const float (*k)[3], float* o, int W) {
  if (S == 1)
    fwd_row_s1<NR>(r, k, o, W);
  else
    fwd_row_s2<NR>(r, k, o, W);
}

// y (Ho x Wo) = the plane x (H x W) correlated with the 3x3 filter f
template <int S>
void fwd_plane(const float* x, const float* f, float* y, int H, int W) {
  const int Ho = out_size(H, S), Wo = out_size(W, S);
  for (int p = 0; p < Ho; ++p) {
    const int top = p * S - 1;  // the input row under filter row 0
    const float* r[3];
    float k[3][3];
    int nr = 0;
    for (int a = 0; a < 3; ++a) {
      const int row = top + a;
      if (row < 0 || row >= H) continue;
      r[nr] = x + static_cast<int64_t>(row) * W;
      for (int b = 0; b < 3; ++b) k[nr][b] = f[3 * a + b];
      ++nr;
    }
    float* o = y + static_cast<int64_t>(p) * Wo;
    if (nr == 3)
      fwd_row<S, 3>(r, k, o, W);
    else if (nr == 2)
      fwd_row<S, 2>(r, k, o, W);
    else
      fwd_row<S, 1>(r, k, o, W);
  }
}

// ---------------------------------------------------------------- the stacked path
// Stride 1. Plane i occupies rows [i * Hb, (i + 1) * Hb) of a buffer with rows of Wp floats:
// a zero row, then its H rows, each as zero | W values | zero. One more zero row follows the
// last plane. Output (i, p, q) sits at k = (i * Hb + p) * Wp + q and reads k + a * Wp + b.
struct Stack1 {
  int H, W, Wp, Hb;
  int64_t m;  // planes per group
  Stack1(int64_t N, int H_, int W_) : H(H_), W(W_), Wp(W_ + 2), Hb(H_ + 1) {
    m = std::max<int64_t>(1, std::min<int64_t>(N, kBudget / (int64_t(Hb) * Wp)));
  }
  int64_t floats() const { return (m * Hb + 2) * Wp + kMargin; }
  int64_t span(int64_t planes) const { return planes * Hb * Wp; }
  void put(float* buf, int64_t i, const float* plane) const {
    for (int r = 0; r < H; ++r)
      std::memcpy(buf + (i * Hb + 1 + r) * Wp + 1, plane + int64_t(r) * W, sizeof(float) * W);
  }
  // a group with fewer planes than the last one in this buffer: clear the stale rows its loops
  // read past its end (only junk positions read them, but 0 * NaN would still be NaN)
  void clear_after(float* buf, int64_t planes) const {
    if (planes < m) std::memset(buf + (planes * Hb + 1) * Wp, 0, sizeof(float) * 2 * Wp);
  }
  void take(const float* ext, int64_t i, float* plane) const {
    for (int p = 0; p < H; ++p)
      std::memcpy(plane + int64_t(p) * W, ext + (i * Hb + p) * Wp, sizeof(float) * W);
  }
};

// Stride 2. The padded plane (H + 2 rows, W + 2 columns, rounded up to even) is split into its
// four phases, each a buffer laid out like Stack1 with blocks of Hh x Wh: phase[ra][cb] holds
// padded row 2r + ra, column 2m + cb at (i * Hh + r) * Wh + m. The output gradient uses the same
// layout with a zero row and column in front: dy[p][q] at (i * Hh + p + 1) * Wh + q + 1.
struct Stack2 {
  int H, W, Hh, Wh, Ho, Wo;
  int64_t m;
  Stack2(int64_t N, int H_, int W_)
      : H(H_), W(W_), Hh((H_ + 2 + H_ % 2) / 2), Wh((W_ + 2 + W_ % 2) / 2),
        Ho(out_size(H_, 2)), Wo(out_size(W_, 2)) {
    m = std::max<int64_t>(1, std::min<int64_t>(N, kBudget / (4 * int64_t(Hh) * Wh)));
  }
  int64_t floats() const { return (m * Hh + 2) * Wh + kMargin; }
  int64_t span(int64_t planes) const { return planes * Hh * Wh; }
  // x (H x W) into the phases: padded row I = R + 1, column J = j + 1
  void put_phases(float* const ph[2][2], int64_t i, const float* plane) const {
    for (int R = 0; R < H; ++R) {
      const int I = R + 1;
      const float* __restrict src = plane + int64_t(R) * W;
      const int64_t row = (i * Hh + (I >> 1)) * Wh;
      float* __restrict odd = ph[I & 1][1] + row;       // J odd: j = 2t
      float* __restrict even = ph[I & 1][0] + row + 1;  // J even: j = 2t + 1
      for (int t = 0; t < (W + 1) / 2; ++t) odd[t] = src[2 * t];
      for (int t = 0; t < W / 2; ++t) even[t] = src[2 * t + 1];
    }
  }
  void put_grad(float* buf, int64_t i, const float* plane) const {
    for (int p = 0; p < Ho; ++p)
      std::memcpy(buf + (i * Hh + p + 1) * Wh + 1, plane + int64_t(p) * Wo, sizeof(float) * Wo);
  }
  // the input gradient's phases back into dx (H x W)
  void take_phases(float* const ph[2][2], int64_t i, float* plane) const {
    for (int R = 0; R < H; ++R) {
      const int I = R + 1;
      const int64_t row = (i * Hh + (I >> 1)) * Wh;
      const float* __restrict odd = ph[I & 1][1] + row;
      const float* __restrict even = ph[I & 1][0] + row + 1;
      float* __restrict dst = plane + int64_t(R) * W;
      for (int t = 0; t < W / 2; ++t) {
        dst[2 * t] = odd[t];
        dst[2 * t + 1] = even[t];
      }
      if (W % 2) dst[W - 1] = odd[W / 2];
    }
  }
};

// ext[k] = sum over taps of f[a][b] * src[k + a * row + b], k < n
void correlate(const float* __restrict src, const float* f, float* __restrict ext, int64_t n,
               int64_t row) {
  const float w0 = f[0], w1 = f[1], w2 = f[2], w3 = f[3], w4 = f[4], w5 = f[5], w6 = f[6],
              w7 = f[7], w8 = f[8];
  const float* __restrict r0 = src;
  const float* __restrict r1 = src + row;
  const float* __restrict r2 = src + 2 * row;
  for (int64_t k = 0; k < n; ++k)
    ext[k] = w0 * r0[k] + w1 * r0[k + 1] + w2 * r0[k + 2] + w3 * r1[k] + w4 * r1[k + 1] +
             w5 * r1[k + 2] + w6 * r2[k] + w7 * r2[k + 1] + w8 * r2[k + 2];
}

// stride 1 backward of one group: dx (flipped filter over dy) and the filter gradient's sums
void backward_s1(const float* __restrict P, const float* __restrict Q, const float* f,
                 float* __restrict dx, double* share, int64_t n, int64_t row) {
  const float w0 = f[8], w1 = f[7], w2 = f[6], w3 = f[5], w4 = f[4], w5 = f[3], w6 = f[2],
              w7 = f[1], w8 = f[0];
  const float* __restrict q0 = Q;
  const float* __restrict q1 = Q + row;
  const float* __restrict q2 = Q + 2 * row;
  const float* __restrict p0 = P;
  const float* __restrict p1 = P + row;
  const float* __restrict p2 = P + 2 * row;
  for (int64_t k0 = 0; k0 < n; k0 += kChunk) {
  const int64_t k1 = std::min(n, k0 + kChunk);
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f, s4 = 0.f, s5 = 0.f, s6 = 0.f, s7 = 0.f, s8 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7, s8)
  for (int64_t k = k0; k < k1; ++k) {
    dx[k] = w0 * q0[k] + w1 * q0[k + 1] + w2 * q0[k + 2] + w3 * q1[k] + w4 * q1[k + 1] +
            w5 * q1[k + 2] + w6 * q2[k] + w7 * q2[k + 1] + w8 * q2[k + 2];
    const float d = q1[k + 1];  // dy at output position k; zero at the padding
    s0 += d * p0[k];
    s1 += d * p0[k + 1];
    s2 += d * p0[k + 2];
    s3 += d * p1[k];
    s4 += d * p1[k + 1];
    s5 += d * p1[k + 2];
    s6 += d * p2[k];
    s7 += d * p2[k + 1];
    s8 += d * p2[k + 2];
  }
  const float s[9] = {s0, s1, s2, s3, s4, s5, s6, s7, s8};
  for (int t = 0; t < 9; ++t) share[t] += s[t];
  }
}

// stride 2 backward of one group: the filter gradient's sums and the four phases of dx
void backward_s2(float* const ph[2][2], const float* __restrict D, const float* f,
                 float* const gx[2][2], double* share, int64_t n, int64_t row) {
  const float* __restrict e0 = ph[0][0];
  const float* __restrict e1 = ph[0][1];
  const float* __restrict o0 = ph[1][0];
  const float* __restrict o1 = ph[1][1];
  float* __restrict g00 = gx[0][0];
  float* __restrict g01 = gx[0][1];
  float* __restrict g10 = gx[1][0];
  float* __restrict g11 = gx[1][1];
  const float w0 = f[0], w1 = f[1], w2 = f[2], w3 = f[3], w4 = f[4], w5 = f[5], w6 = f[6],
              w7 = f[7], w8 = f[8];
  for (int64_t k0 = 0; k0 < n; k0 += kChunk) {
  const int64_t k1 = std::min(n, k0 + kChunk);
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f, s4 = 0.f, s5 = 0.f, s6 = 0.f, s7 = 0.f, s8 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7, s8)
  for (int64_t k = k0; k < k1; ++k) {
    const float d = D[k + row + 1];  // dy at output position k; zero at the padding
    s0 += d * e0[k];
    s1 += d * e1[k];
    s2 += d * e0[k + 1];
    s3 += d * o0[k];
    s4 += d * o1[k];
    s5 += d * o0[k + 1];
    s6 += d * e0[k + row];
    s7 += d * e1[k + row];
    s8 += d * e0[k + row + 1];
    // padded input (2r + ra, 2m + cb) gathers dy[r - (a - ra) / 2][m - (b - cb) / 2] f[a][b]
    g00[k] = w0 * d + w2 * D[k + row] + w6 * D[k + 1] + w8 * D[k];
    g01[k] = w1 * d + w7 * D[k + 1];
    g10[k] = w3 * d + w5 * D[k + row];
    g11[k] = w4 * d;
  }
  const float s[9] = {s0, s1, s2, s3, s4, s5, s6, s7, s8};
  for (int t = 0; t < 9; ++t) share[t] += s[t];
  }
}

}  // namespace

namespace ppm {

void depthwise3x3_forward(const float* x, const float* w, float* y, int64_t N, int64_t C, int H,
                          int W, int stride) {
  const int Ho = out_size(H, stride), Wo = out_size(W, stride);
  const int64_t in_plane = int64_t(H) * W, out_plane = int64_t(Ho) * Wo;
  if (stride == 2 || W >= kRowPathWidth) {
#pragma omp parallel for schedule(static)
    for (int64_t nc = 0; nc < N * C; ++nc) {
      const float* f = w + (nc % C) * 9;
      if (stride == 1)
        fwd_plane<1>(x + nc * in_plane, f, y + nc * out_plane, H, W);
      else
        fwd_plane<2>(x + nc * in_plane, f, y + nc * out_plane, H, W);
    }
    return;
  }
  const Stack1 st(N, H, W);  // narrow planes at stride 1: stacked
#pragma omp parallel
  {
    std::vector<float> P(st.floats(), 0.f), E(st.floats(), 0.f);
    each_group(N, C, st.m, [&](int64_t, int64_t c, int64_t n0, int64_t mm) {
      for (int64_t i = 0; i < mm; ++i) st.put(P.data(), i, x + ((n0 + i) * C + c) * in_plane);
      st.clear_after(P.data(), mm);
      correlate(P.data(), w + c * 9, E.data(), st.span(mm), st.Wp);
      for (int64_t i = 0; i < mm; ++i) st.take(E.data(), i, y + ((n0 + i) * C + c) * out_plane);
    });
  }
}

void depthwise3x3_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                           int64_t N, int64_t C, int H, int W, int stride) {
  const int Ho = out_size(H, stride), Wo = out_size(W, stride);
  const int64_t in_plane = int64_t(H) * W, out_plane = int64_t(Ho) * Wo;
  const Stack1 st1(N, H, W);
  const Stack2 st2(N, H, W);
  const int64_t groups = group_count(N, stride == 1 ? st1.m : st2.m);
  std::vector<double> shares(static_cast<size_t>(C * groups * 9), 0.0);
#pragma omp parallel
  {
    if (stride == 1) {
      std::vector<float> buf(3 * st1.floats(), 0.f);
      float *P = buf.data(), *Q = P + st1.floats(), *G = Q + st1.floats();
      each_group(N, C, st1.m, [&](int64_t task, int64_t c, int64_t n0, int64_t mm) {
        for (int64_t i = 0; i < mm; ++i) {
          const int64_t nc = (n0 + i) * C + c;
          st1.put(P, i, x + nc * in_plane);
          st1.put(Q, i, dy + nc * out_plane);
        }
        st1.clear_after(P, mm);
        st1.clear_after(Q, mm);
        backward_s1(P, Q, w + c * 9, G, shares.data() + task * 9, st1.span(mm), st1.Wp);
        for (int64_t i = 0; i < mm; ++i) st1.take(G, i, dx + ((n0 + i) * C + c) * in_plane);
      });
    } else {
      const int64_t f = st2.floats();
      std::vector<float> buf(9 * f, 0.f);
      float* const ph[2][2] = {{buf.data(), buf.data() + f}, {buf.data() + 2 * f, buf.data() + 3 * f}};
      float* const gx[2][2] = {{buf.data() + 4 * f, buf.data() + 5 * f},
                               {buf.data() + 6 * f, buf.data() + 7 * f}};
      float* D = buf.data() + 8 * f;
      each_group(N, C, st2.m, [&](int64_t task, int64_t c, int64_t n0, int64_t mm) {
        for (int64_t i = 0; i < mm; ++i) {
          const int64_t nc = (n0 + i) * C + c;
          st2.put_phases(ph, i, x + nc * in_plane);
          st2.put_grad(D, i, dy + nc * out_plane);
        }
        backward_s2(ph, D, w + c * 9, gx, shares.data() + task * 9, st2.span(mm), st2.Wh);
        for (int64_t i = 0; i < mm; ++i) st2.take_phases(gx, i, dx + ((n0 + i) * C + c) * in_plane);
      });
    }
  }
  sum_shares(shares, C, groups, 9, dw);
}

}  // namespace ppm
