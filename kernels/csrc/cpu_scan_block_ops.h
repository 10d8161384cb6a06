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
struct Conv1dJob {
  Strided3<T> x;
  int64_t batch = 0, dim = 0, length = 0, width = 0;
  const T* weight = nullptr;  // (dim, width)
  const T* bias = nullptr;    // (dim,) or null
  bool reverse = false, activation = true;
  T* out = nullptr;           // (batch, dim, length) contiguous
};

// one row's conv, no activation: kK > 0 fixes the width at compile time (the tap loop unrolls)
template <typename T, int kK>
inline void conv_row(const T* padded, const T* w, int64_t width, bool reverse, T bias, int64_t length, T* dst) {
  const int64_t k = kK > 0 ? kK : width;
  for_each_vector<T>(length, [&](int64_t t, int64_t m) {
    Vec<T> acc(bias);
    for (int64_t j = 0; j < k; ++j) {
      acc = fmadd(Vec<T>(reverse ? w[k - 1 - j] : w[j]), Vec<T>::loadu(padded + t + j, m), acc);
    }
    acc.store(dst + t, m);
  });
}

// rows [begin, end) of batch * dim; `padded` holds length + 2 * width values. Two passes per row (taps,
// then SiLU in place): each is a loop of independent vectors the core overlaps, where one fused loop
// chained the taps, the exp and the division of every vector.
template <typename T>
void conv1d_silu_rows(const Conv1dJob<T>& job, int64_t begin, int64_t end, T* padded) {
  const int64_t length = job.length, width = job.width;
  std::fill(padded, padded + length + 2 * width, T(0));
  T* row = padded + (job.reverse ? 0 : width - 1);  // causal: K-1 zeros in front; reverse: behind
  const Vec<T> one(T(1)), zero(T(0));
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / job.dim, e = r % job.dim;
    job.x.load_range(b, e, 0, length, row);
    const T* w = job.weight + e * width;
    const T bias = job.bias ? job.bias[e] : T(0);
    T* dst = job.out + r * length;
    if (width == 4) {
      conv_row<T, 4>(padded, w, width, job.reverse, bias, length, dst);
    } else {
      conv_row<T, 0>(padded, w, width, job.reverse, bias, length, dst);
    }
    if (job.activation) {
      for_each_vector<T>(length, [&](int64_t t, int64_t m) {
        const Vec<T> v = Vec<T>::loadu(dst + t, m);
        (v / (one + exp_fast(zero - v))).store(dst + t, m);
      });
    }
  }
}

// Runs every job's rows over torch's threads. About 2^20 multiply-adds per task: a Vim-T layer at 224 px
// stays one task per job (waking the pool costs more than the work; the two directions of a Vim mixer
// then run on two threads), a 1248 px one spreads over all of them.
template <typename T>
void conv1d_silu_jobs(const Conv1dJob<T>* jobs, int64_t count) {
  if (count <= 0) return;
  const Conv1dJob<T>& first = jobs[0];
  const int64_t rows = first.batch * first.dim;  // every job has the same shape
  const int64_t work = std::max<int64_t>(1, first.length * first.width);
  const int64_t grain = std::min(rows, std::max<int64_t>(1, (int64_t(1) << 20) / work));
  const int64_t chunks = (rows + grain - 1) / grain;
  at::parallel_for(0, count * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> padded(first.length + 2 * first.width);
    for (int64_t task = begin; task < end; ++task) {
      const Conv1dJob<T>& job = jobs[task / chunks];
      const int64_t r0 = (task % chunks) * grain;
      conv1d_silu_rows(job, r0, std::min(rows, r0 + grain), padded.data());
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
