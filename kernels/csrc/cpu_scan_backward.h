// Backward of the CPU scan.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_scan_inputs.h"

namespace vimbench_cpu_scan {

// decay[(t - t0) * N + n] = exp(dt[t] * A[n]) for t in [t0, t1)
template <typename T>
void fill_decay(const T* __restrict__ dt, const T* __restrict__ A_row, int64_t t0, int64_t t1, int64_t nstate,
                T* __restrict__ decay) {
  for (int64_t t = t0; t < t1; ++t) {
    T* dst = decay + (t - t0) * nstate;
    const T step = dt[t];
#pragma omp simd
    for (int64_t n = 0; n < nstate; ++n) dst[n] = step * A_row[n];
  }
  exp_inplace(decay, (t1 - t0) * nstate);
}

// h = decay_t * h + dtu_t * B_t; y_t = <h, C_t> over positions [t0, t1) in scan order; optionally keeps h_t.
template <typename T, int kN>
inline void recur_steps(const T* __restrict__ decay, const T* __restrict__ dtu, const StateInput<T>& B,
                        const T* B_row, const StateInput<T>& C, const T* C_row, T* __restrict__ state,
                        T* __restrict__ y, T* __restrict__ states_out, int64_t t0, int64_t t1, int64_t nstate,
                        bool reverse) {
  for (int64_t i = 0; i < t1 - t0; ++i) {
    const int64_t t = reverse ? t1 - 1 - i : t0 + i;
    const T* __restrict__ a = decay + (t - t0) * nstate;
    const T* __restrict__ bt = B_row + t * B.sl;
    const T* __restrict__ ct = C_row + t * C.sl;
    const T x = dtu[t];
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t n = 0; n < (kN > 0 ? kN : nstate); ++n) {
      const T h = a[n] * state[n] + x * bt[n];
      state[n] = h;
      acc += h * ct[n];
    }
    y[t] = acc;
    if (states_out) std::memcpy(states_out + t * nstate, state, sizeof(T) * nstate);
  }
}

// kN > 0 fixes N at compile time and keeps the state in a local array (registers) across steps.
template <typename T, int kN>
void recur(const T* decay, const T* dtu, const StateInput<T>& B, const T* B_row, const StateInput<T>& C,
           const T* C_row, T* state, T* y, T* states_out, int64_t t0, int64_t t1, int64_t nstate, bool reverse) {
  if constexpr (kN > 0) {
    T local[kN];
    std::memcpy(local, state, sizeof local);
    recur_steps<T, kN>(decay, dtu, B, B_row, C, C_row, local, y, states_out, t0, t1, kN, reverse);
    std::memcpy(state, local, sizeof local);
  } else {
    recur_steps<T, kN>(decay, dtu, B, B_row, C, C_row, state, y, states_out, t0, t1, nstate, reverse);
  }
}

// Per-thread buffers of the backward: whole rows (L values) and every state of one row (L * N values).
template <typename T>
struct RowScratch {
  std::vector<T> buffer;
  T *u, *dt, *dtu, *slope, *y, *gate, *gate_slope, *dy, *ddt, *decay, *states, *state, *carry, *zeros;

  RowScratch(int64_t length, int64_t nstate) {
    buffer.assign(9 * length + 2 * length * nstate + 3 * nstate, T(0));
    T* p = buffer.data();
    for (T** slot : {&u, &dt, &dtu, &slope, &y, &gate, &gate_slope, &dy, &ddt}) {
      *slot = p;
      p += length;
    }
    decay = p;
    p += length * nstate;
    states = p;
    p += length * nstate;
    state = p;
    carry = p + nstate;
    zeros = p + 2 * nstate;
  }
};

template <typename T>
struct GradOutputs {
  Strided3<T> dout;
  T *du, *ddelta, *dz;  // (batch, dim, L); dz nullptr without z
  T *dA, *dD, *dbias;   // per-batch partials: (batch, dim, N), (batch, dim), (batch, dim)
  T *dB, *dC;           // per-block partials: (batch, groups, blocks, L, N)
  int64_t channel_block, blocks;
};

// One row: recompute the forward (keeping every state h_t, L*N values), then run the adjoint recurrence
// g_t = dy_t * C_t + decay_{t+1} * g_{t+1} backwards through the scan order. dB/dC add into the block sums.
template <typename T, int kN>
void backward_row(const ScanInputs<T>& in, const GradOutputs<T>& go, int64_t b, int64_t e, RowScratch<T>& s,
                  T* dB_block, T* dC_block) {
  const int64_t length = in.length;
  const int64_t nstate = kN > 0 ? kN : in.nstate;
  const int64_t row = b * in.dim + e;
  prepare_range(in, b, e, 0, length, s.u, s.dt, s.dtu, s.slope);
  const int64_t g = in.group_of(e);
  const T* B_row = in.B.row(b, g);
  const T* C_row = in.C.row(b, g);
  const T* A_row = in.A + e * nstate;
  fill_decay(s.dt, A_row, 0, length, nstate, s.decay);
  std::fill(s.state, s.state + nstate, T(0));
  recur<T, kN>(s.decay, s.dtu, in.B, B_row, in.C, C_row, s.state, s.y, s.states, 0, length, nstate, in.reverse);

  // output side: out = (y + D u) * silu(z)
  const T D = in.D ? in.D[e] : T(0);
  go.dout.load_range(b, e, 0, length, s.dy);
  T* du = go.du + row * length;
  T dD = 0;
  if (in.z.data) {
    in.z.load_range(b, e, 0, length, s.ddt);  // ddt as scratch for z
    silu_row(s.ddt, length, s.gate, s.gate_slope);
    T* dz = go.dz + row * length;
#pragma omp simd
    for (int64_t t = 0; t < length; ++t) {
      const T dout = s.dy[t];
      dz[t] = dout * (s.y[t] + D * s.u[t]) * s.gate_slope[t];
      s.dy[t] = dout * s.gate[t];
    }
  }
#pragma omp simd reduction(+ : dD)
  for (int64_t t = 0; t < length; ++t) {
    dD += s.dy[t] * s.u[t];
    du[t] = s.dy[t] * D;
  }

  // adjoint recurrence
  T* __restrict__ carry = s.carry;
  T dA_acc[kN > 0 ? kN : 1];
  T* __restrict__ dA = kN > 0 ? dA_acc : go.dA + row * nstate;
  std::fill(carry, carry + nstate, T(0));
  std::fill(dA, dA + nstate, T(0));
  for (int64_t i = 0; i < length; ++i) {
    const int64_t t = in.reverse ? i : length - 1 - i;
    const int64_t prev = in.reverse ? t + 1 : t - 1;
    const bool has_prev = in.reverse ? prev < length : prev >= 0;
    const T* __restrict__ h_prev = has_prev ? s.states + prev * nstate : s.zeros;
    const T* __restrict__ h = s.states + t * nstate;
    const T* __restrict__ a = s.decay + t * nstate;
    const T* __restrict__ bt = B_row + t * in.B.sl;
    const T* __restrict__ ct = C_row + t * in.C.sl;
    T* __restrict__ dBt = dB_block + t * nstate;
    T* __restrict__ dCt = dC_block + t * nstate;
    const T dy = s.dy[t], dtu = s.dtu[t], dt = s.dt[t];
    T sum_gB = 0, sum_wA = 0;
#pragma omp simd reduction(+ : sum_gB, sum_wA)
    for (int64_t n = 0; n < nstate; ++n) {
      const T gn = carry[n] + dy * ct[n];
      dCt[n] += dy * h[n];
      dBt[n] += gn * dtu;
      sum_gB += gn * bt[n];
      const T w = gn * h_prev[n] * a[n];
      sum_wA += w * A_row[n];
      dA[n] += w * dt;
      carry[n] = gn * a[n];
    }
    du[t] += dt * sum_gB;
    s.ddt[t] = s.u[t] * sum_gB + sum_wA;
  }
  if (kN > 0) std::memcpy(go.dA + row * nstate, dA, sizeof(T) * nstate);

  T* ddelta = go.ddelta + row * length;
  T dbias = 0;
#pragma omp simd reduction(+ : dbias)
  for (int64_t t = 0; t < length; ++t) {
    const T d = s.ddt[t] * s.slope[t];
    ddelta[t] = d;
    dbias += d;
  }
  go.dD[row] = dD;
  go.dbias[row] = dbias;
}

template <typename T, int kN>
void backward_impl(const ScanInputs<T>& in, const GradOutputs<T>& go) {
  const int64_t per_group = in.dim / in.groups;
  const int64_t plane = in.length * in.nstate;  // one (L, N) block sum
  const int64_t tasks = in.batch * in.groups * go.blocks;
  parallel_dynamic(
      tasks, 1, [&] { return RowScratch<T>(in.length, in.nstate); },
      [&](RowScratch<T>& scratch, int64_t task, int64_t) {
        const int64_t block = task % go.blocks, bg = task / go.blocks;
        const int64_t b = bg / in.groups, g = bg % in.groups;
        T* dB_block = go.dB + task * plane;
        T* dC_block = go.dC + task * plane;
        std::fill(dB_block, dB_block + plane, T(0));
        std::fill(dC_block, dC_block + plane, T(0));
        const int64_t e0 = g * per_group + block * go.channel_block;
        const int64_t e1 = std::min(g * per_group + per_group, e0 + go.channel_block);
        for (int64_t e = e0; e < e1; ++e) backward_row<T, kN>(in, go, b, e, scratch, dB_block, dC_block);
      });
  // blocks of one (batch, group) summed into block 0, always in the same order
  if (go.blocks > 1) {
    at::parallel_for(0, in.batch * in.groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bg = begin; bg < end; ++bg) {
        for (T* sums : {go.dB, go.dC}) {
          T* first = sums + bg * go.blocks * plane;
          for (int64_t block = 1; block < go.blocks; ++block) {
            const T* other = first + block * plane;
#pragma omp simd
            for (int64_t i = 0; i < plane; ++i) first[i] += other[i];
          }
        }
      }
    });
  }
}

}  // namespace vimbench_cpu_scan
