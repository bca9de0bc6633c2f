// What the two depthwise kernels (depthwise3x3.cc, depthwise5x5.cc) share: the sizes of their
// buffers, their tasks (a channel and a group of its samples) and the filter gradient's sum.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ppm {
namespace depthwise {

constexpr int64_t kBudget = 8192;  // floats per buffer a group aims at (32 KiB)
constexpr int64_t kMargin = 64;    // zeros past the last row: the loops read a little beyond
constexpr int64_t kChunk = 1024;   // filter-gradient positions summed in float before a double

inline int64_t group_count(int64_t N, int64_t m) { return (N + m - 1) / m; }

// fn(task, channel, first sample, samples) for every (channel, group of m samples), shared out
// among the threads of the enclosing parallel region
template <class Fn>
void each_group(int64_t N, int64_t C, int64_t m, Fn fn) {
  const int64_t groups = group_count(N, m);
#pragma omp for schedule(static)
  for (int64_t task = 0; task < C * groups; ++task) {
    const int64_t c = task / groups, n0 = task % groups * m;
    fn(task, c, n0, std::min(m, N - n0));
  }
}

// dw[c][t] = the sum of the groups' shares [c][group][t] in a fixed order: the filter gradient
// does not depend on the thread count
inline void sum_shares(const std::vector<double>& shares, int64_t C, int64_t groups, int taps,
                       float* dw) {
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < taps; ++t) {
      double sum = 0.0;
      for (int64_t g = 0; g < groups; ++g) sum += shares[(c * groups + g) * taps + t];
      dw[c * taps + t] = static_cast<float>(sum);
    }
}

}  // namespace depthwise
}  // namespace ppm
