// The other per-token ops of a Vim block on CPU, in the same extension as the scan (one build, one ISA):
// depthwise causal (or anti-causal) conv1d + SiLU and residual add + RMSNorm. Plain PyTorch runs each as
// several ops with a thread-pool hand-off apiece; here each is one pass over the data, vectorised along the
// sequence (conv) or the channels (norm).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu_scan_inputs.h"

namespace vimbench_cpu_scan {

// out[b, e, t] = act(bias[e] + sum_j w[e, j] x[b, e, t - (K-1) + j]) (causal), or with reverse
// act(bias[e] + sum_j w[e, K-1-j] x[b, e, t + j]) (anti-causal), zeros outside [0, L). act = SiLU or identity.
template <typename T>
void conv1d_silu_impl(const Strided3<T>& x, int64_t batch, int64_t dim, int64_t length, const T* weight,
                      int64_t width, const T* bias, bool reverse, bool activation, T* out) {
  // about 2^20 multiply-adds per task: a Vim-T layer at 224 px stays on one thread (waking the pool costs
  // more than the work), a 1248 px one spreads over all of them
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(1, length * width));
  at::parallel_for(0, batch * dim, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> padded(length + 2 * width, T(0));
    T* row = padded.data() + (reverse ? 0 : width - 1);  // causal: K-1 zeros in front; reverse: behind
    const Vec<T> one(T(1));
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / dim, e = r % dim;
      x.load_range(b, e, 0, length, row);
      const T* w = weight + e * width;
      const Vec<T> b0(bias ? bias[e] : T(0));
      T* dst = out + r * length;
      for_each_vector<T>(length, [&](int64_t t, int64_t m) {
        Vec<T> acc = b0;
        for (int64_t j = 0; j < width; ++j) {
          const T wj = reverse ? w[width - 1 - j] : w[j];
          acc = fmadd(Vec<T>(wj), Vec<T>::loadu(padded.data() + t + j, m), acc);
        }
        if (activation) acc = acc / (one + exp_fast(Vec<T>(T(0)) - acc));
        acc.store(dst + t, m);
      });
    }
  });
}

// res = x + residual (residual may be null), out = res / sqrt(mean(res^2) + eps) * weight, per row of `dim`.
template <typename T>
void add_rms_norm_impl(const T* x, const T* residual, const T* weight, double eps, int64_t rows, int64_t dim,
                       T* out, T* res) {
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, dim));  // as above
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * dim;
      const T* rr = residual ? residual + r * dim : nullptr;
      T* res_row = res + r * dim;
      Vec<T> squares(T(0));
      for_each_vector<T>(dim, [&](int64_t i, int64_t m) {
        Vec<T> v = Vec<T>::loadu(xr + i, m);
        if (rr) v = v + Vec<T>::loadu(rr + i, m);
        v.store(res_row + i, m);
        squares = fmadd(v, v, squares);  // idle lanes load zeros
      });
      const Vec<T> scale(T(1) / std::sqrt(hsum(squares) / T(dim) + T(eps)));
      T* out_row = out + r * dim;
      for_each_vector<T>(dim, [&](int64_t i, int64_t m) {
        (Vec<T>::loadu(res_row + i, m) * scale * Vec<T>::loadu(weight + i, m)).store(out_row + i, m);
      });
    }
  });
}

}  // namespace vimbench_cpu_scan
