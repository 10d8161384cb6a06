// Backward of the CPU scan.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_scan_inputs.h"

namespace vimbench_cpu_scan {

// The N states of a row in vectors of VS lanes; the last one partial when VS does not divide N (its idle
// lanes load zeros, so they add nothing to any sum). kN > 0 fixes N at compile time: every count is a constant.
template <typename T>
inline Vec<T> load_n(const T* p, int64_t count) {
  return count == Vec<T>::size() ? Vec<T>::loadu(p) : Vec<T>::loadu(p, count);
}

template <typename T>
inline void store_n(const Vec<T>& v, T* p, int64_t count) {
  if (count == Vec<T>::size()) {
    v.store(p);
  } else {
    v.store(p, static_cast<int>(count));
  }
}

// Per-thread buffers of the backward: whole rows (L values) and every state of one row (L * N values).
template <typename T>
struct RowScratch {
  T *u, *dt, *dtu, *slope, *y, *gate, *gate_slope, *dy, *ddt, *decay, *states, *state, *carry, *zeros, *A2;

  RowScratch(int64_t length, int64_t nstate) {
    T* p = thread_scratch<T, 1>(9 * length + 2 * length * nstate + 4 * nstate);
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
    std::fill(zeros, zeros + nstate, T(0));
    A2 = p + 3 * nstate;  // A * log2(e): decay = 2^(dt * A2)
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

// Recomputes the forward over the row in scan order: decay_t = exp(dt_t A), h_t = decay_t h_{t-1} + dtu_t B_t,
// y_t = <h_t, C_t>; keeps every decay_t and h_t (L*N each) for the adjoint pass.
template <typename T, int kN>
void recompute_states(const ScanInputs<T>& in, const T* A_row, const T* B_row, const T* C_row, RowScratch<T>& s) {
  constexpr int64_t VS = Vec<T>::size();
  const int64_t nstate = kN > 0 ? kN : in.nstate, length = in.length;
  std::fill(s.state, s.state + nstate, T(0));
  for (int64_t n = 0; n < nstate; ++n) s.A2[n] = A_row[n] * kLog2e<T>;
  for (int64_t i = 0; i < length; ++i) {
    const int64_t t = in.reverse ? length - 1 - i : i;
    const T* bt = B_row + t * in.B.sl;
    const T* ct = C_row + t * in.C.sl;
    T* decay = s.decay + t * nstate;
    T* states = s.states + t * nstate;
    const Vec<T> dt(s.dt[t]), x(s.dtu[t]);
    Vec<T> acc(T(0));
    for (int64_t n = 0; n < nstate; n += VS) {
      const int64_t m = std::min(VS, nstate - n);
      const Vec<T> a = exp2_fast(dt * load_n(s.A2 + n, m));
      const Vec<T> h = fmadd(a, load_n(s.state + n, m), x * load_n(bt + n, m));
      store_n(a, decay + n, m);
      store_n(h, s.state + n, m);
      store_n(h, states + n, m);
      acc = fmadd(h, load_n(ct + n, m), acc);
    }
    s.y[t] = hsum(acc);
  }
}

// One row: recompute the forward (keeping every state h_t, L*N values), then run the adjoint recurrence
// g_t = dy_t * C_t + decay_{t+1} * g_{t+1} backwards through the scan order. dB/dC add into the block sums.
template <typename T, int kN>
void backward_row(const ScanInputs<T>& in, const GradOutputs<T>& go, int64_t b, int64_t e, RowScratch<T>& s,
                  T* dB_block, T* dC_block) {
  constexpr int64_t VS = Vec<T>::size();
  const int64_t length = in.length;
  const int64_t nstate = kN > 0 ? kN : in.nstate;
  const int64_t row = b * in.dim + e;
  prepare_range(in, b, e, 0, length, s.u, s.dt, s.dtu, s.slope);
  const int64_t g = in.group_of(e);
  const T* B_row = in.B.row(b, g);
  const T* C_row = in.C.row(b, g);
  const T* A_row = in.A + e * nstate;
  recompute_states<T, kN>(in, A_row, B_row, C_row, s);

  // output side: out = (y + D u) * silu(z)
  const T D = in.D ? in.D[e] : T(0);
  go.dout.load_range(b, e, 0, length, s.dy);
  T* du = go.du + row * length;
  if (in.z.data) {
    in.z.load_range(b, e, 0, length, s.ddt);  // ddt as scratch for z
    silu_row(s.ddt, length, s.gate, s.gate_slope);
    T* dz = go.dz + row * length;
    for_each_vector<T>(length, [&](int64_t t, int64_t m) {
      const Vec<T> dout = Vec<T>::loadu(s.dy + t, m);
      const Vec<T> out = fmadd(Vec<T>(D), Vec<T>::loadu(s.u + t, m), Vec<T>::loadu(s.y + t, m));
      (dout * out * Vec<T>::loadu(s.gate_slope + t, m)).store(dz + t, m);
      (dout * Vec<T>::loadu(s.gate + t, m)).store(s.dy + t, m);
    });
  }
  Vec<T> dD_acc(T(0));
  for_each_vector<T>(length, [&](int64_t t, int64_t m) {
    const Vec<T> dy = Vec<T>::loadu(s.dy + t, m);
    dD_acc = fmadd(dy, Vec<T>::loadu(s.u + t, m), dD_acc);  // idle lanes load zeros
    (dy * Vec<T>(D)).store(du + t, m);
  });

  // adjoint recurrence; carry_n = decay_{t+1,n} g_{t+1,n}
  T* carry = s.carry;
  T* dA = go.dA + row * nstate;
  std::fill(carry, carry + nstate, T(0));
  std::fill(dA, dA + nstate, T(0));
  for (int64_t i = 0; i < length; ++i) {
    const int64_t t = in.reverse ? i : length - 1 - i;
    const int64_t prev = in.reverse ? t + 1 : t - 1;
    const bool has_prev = in.reverse ? prev < length : prev >= 0;
    const T* h_prev = has_prev ? s.states + prev * nstate : s.zeros;
    const T* h = s.states + t * nstate;
    const T* a = s.decay + t * nstate;
    const T* bt = B_row + t * in.B.sl;
    const T* ct = C_row + t * in.C.sl;
    T* dBt = dB_block + t * nstate;
    T* dCt = dC_block + t * nstate;
    const Vec<T> dy(s.dy[t]), dtu(s.dtu[t]), dt(s.dt[t]);
    Vec<T> gB(T(0)), wA(T(0));
    for (int64_t n = 0; n < nstate; n += VS) {
      const int64_t m = std::min(VS, nstate - n);
      const Vec<T> decay = load_n(a + n, m);
      const Vec<T> gn = fmadd(dy, load_n(ct + n, m), load_n(carry + n, m));
      store_n(fmadd(dy, load_n(h + n, m), load_n(dCt + n, m)), dCt + n, m);
      store_n(fmadd(gn, dtu, load_n(dBt + n, m)), dBt + n, m);
      gB = fmadd(gn, load_n(bt + n, m), gB);
      const Vec<T> w = gn * load_n(h_prev + n, m) * decay;
      wA = fmadd(w, load_n(A_row + n, m), wA);
      store_n(fmadd(w, dt, load_n(dA + n, m)), dA + n, m);
      store_n(gn * decay, carry + n, m);
    }
    const T sum_gB = hsum(gB);
    du[t] += s.dt[t] * sum_gB;
    s.ddt[t] = s.u[t] * sum_gB + hsum(wA);
  }

  T* ddelta = go.ddelta + row * length;
  Vec<T> dbias_acc(T(0));
  for_each_vector<T>(length, [&](int64_t t, int64_t m) {
    const Vec<T> d = Vec<T>::loadu(s.ddt + t, m) * Vec<T>::loadu(s.slope + t, m);
    d.store(ddelta + t, m);
    dbias_acc = dbias_acc + d;
  });
  go.dD[row] = hsum(dD_acc);
  go.dbias[row] = hsum(dbias_acc);
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
            for_each_vector<T>(plane, [&](int64_t i, int64_t m) {
              (Vec<T>::loadu(first + i, m) + Vec<T>::loadu(other + i, m)).store(first + i, m);
            });
          }
        }
      }
    });
  }
}

}  // namespace vimbench_cpu_scan
