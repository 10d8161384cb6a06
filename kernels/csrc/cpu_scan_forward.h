// Forward of the CPU scan.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_scan_inputs.h"

namespace vimbench_cpu_scan {

constexpr int64_t kTimeBlock = 256;  // forward: positions prepared and scanned per pass (buffers stay in L1/L2)

// forward: channels scanned together, one per vector lane (64 bytes: one AVX-512 register, two AVX2 ones)
template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);

// A tile of kLanes channels of one group scans together, one channel per vector lane: per position and
// state, exp(dt*A), the state update and the output sum are plain lane-wise vector ops (B_t[n] and C_t[n]
// are shared by the tile, so they are broadcasts), with no horizontal sums and kLanes independent chains.

template <typename T>
struct TileScratch {
  static constexpr int64_t W = kLanes<T>;
  T *u, *dt_row, *dtu_row, *gate;  // one lane's positions: kTimeBlock each (u: W of them)
  T *dt, *dtu, *y;                 // (kTimeBlock, W) tiles
  T *A, *state;                    // (N, W); A scaled by log2(e)

  explicit TileScratch(int64_t nstate) {
    T* p = thread_scratch<T, 0>(W * kTimeBlock + 3 * kTimeBlock + 3 * kTimeBlock * W + 2 * nstate * W);
    u = p;
    p += W * kTimeBlock;
    for (T** slot : {&dt_row, &dtu_row, &gate}) {
      *slot = p;
      p += kTimeBlock;
    }
    for (T** slot : {&dt, &dtu, &y}) {
      *slot = p;
      p += kTimeBlock * W;
    }
    A = p;
    state = p + nstate * W;
  }
};

// positions [t0, t1) of the tile, in scan order. kN > 0 fixes N at compile time (the n loop unrolls).
template <typename T, int kN>
void scan_tile_block(const ScanInputs<T>& in, const T* B_row, const T* C_row, TileScratch<T>& s, int64_t t0,
                     int64_t t1) {
  constexpr int64_t W = kLanes<T>;
  constexpr int64_t VS = Vec<T>::size();
  constexpr int64_t KV = W / VS;  // vectors per tile: 1 (AVX-512), 2 (AVX2), 4 (NEON), 16 (scalar build)
  static_assert(W % VS == 0, "a tile is a whole number of vectors");
  const int64_t nstate = kN > 0 ? kN : in.nstate;
  for (int64_t i = 0; i < t1 - t0; ++i) {
    const int64_t t = in.reverse ? t1 - 1 - i : t0 + i;
    const T* dt = s.dt + (t - t0) * W;
    const T* dtu = s.dtu + (t - t0) * W;
    const T* bt = B_row + t * in.B.sl;
    const T* ct = C_row + t * in.C.sl;
    Vec<T> dt_v[KV], dtu_v[KV], acc[KV];
    for (int64_t k = 0; k < KV; ++k) {
      dt_v[k] = Vec<T>::loadu(dt + k * VS);
      dtu_v[k] = Vec<T>::loadu(dtu + k * VS);
      acc[k] = Vec<T>(T(0));
    }
    for (int64_t n = 0; n < nstate; ++n) {
      const Vec<T> b(bt[n]), c(ct[n]);
      const T* a = s.A + n * W;
      T* h = s.state + n * W;
      for (int64_t k = 0; k < KV; ++k) {
        const Vec<T> decay = exp2_fast(dt_v[k] * Vec<T>::loadu(a + k * VS));
        const Vec<T> state = fmadd(decay, Vec<T>::loadu(h + k * VS), dtu_v[k] * b);
        state.store(h + k * VS);
        acc[k] = fmadd(state, c, acc[k]);
      }
    }
    T* y = s.y + (t - t0) * W;
    for (int64_t k = 0; k < KV; ++k) acc[k].store(y + k * VS);
  }
}

// channels [e0, e0 + lanes) of batch b, all in one group. last_state may be null. With `accumulate`, the
// tile's (gated) output is added to what `out` holds and the sum multiplied by `scale`: the second direction
// of a bidirectional call, with the same arithmetic as adding two separate outputs.
template <typename T>
void forward_tile(const ScanInputs<T>& in, int64_t b, int64_t e0, int64_t lanes, TileScratch<T>& s, T* out,
                  T* last_state, bool accumulate = false, T scale = T(1)) {
  constexpr int64_t W = kLanes<T>;
  const int64_t length = in.length, nstate = in.nstate;
  const int64_t g = in.group_of(e0);
  const T* B_row = in.B.row(b, g);
  const T* C_row = in.C.row(b, g);
  std::fill(s.A, s.A + nstate * W, T(0));  // idle lanes: A = dt = dtu = 0 keeps them finite
  std::fill(s.dt, s.dt + kTimeBlock * W, T(0));
  std::fill(s.dtu, s.dtu + kTimeBlock * W, T(0));
  std::fill(s.state, s.state + nstate * W, T(0));
  for (int64_t w = 0; w < lanes; ++w) {
    for (int64_t n = 0; n < nstate; ++n) s.A[n * W + w] = in.A[(e0 + w) * nstate + n] * kLog2e<T>;
  }
  const int64_t blocks = (length + kTimeBlock - 1) / kTimeBlock;
  for (int64_t k = 0; k < blocks; ++k) {
    const int64_t t0 = (in.reverse ? blocks - 1 - k : k) * kTimeBlock;
    const int64_t t1 = std::min(length, t0 + kTimeBlock);
    const int64_t count = t1 - t0;
    for (int64_t w = 0; w < lanes; ++w) {
      prepare_range(in, b, e0 + w, t0, t1, s.u + w * kTimeBlock, s.dt_row, s.dtu_row, static_cast<T*>(nullptr));
      for (int64_t t = 0; t < count; ++t) {
        s.dt[t * W + w] = s.dt_row[t];
        s.dtu[t * W + w] = s.dtu_row[t];
      }
    }
    if (nstate == 16) {
      scan_tile_block<T, 16>(in, B_row, C_row, s, t0, t1);
    } else {
      scan_tile_block<T, 0>(in, B_row, C_row, s, t0, t1);
    }
    for (int64_t w = 0; w < lanes; ++w) {
      const int64_t e = e0 + w;
      const T D = in.D ? in.D[e] : T(0);
      const T* u = s.u + w * kTimeBlock;
      T* dst = out + (b * in.dim + e) * length + t0;
      T* row = accumulate ? s.dtu_row : dst;  // dtu_row is free once the tile is scanned
      for (int64_t t = 0; t < count; ++t) row[t] = s.y[t * W + w] + D * u[t];
      if (in.z.data) {
        in.z.load_range(b, e, t0, t1, s.dt_row);
        silu_row(s.dt_row, count, s.gate, static_cast<T*>(nullptr));
        for_each_vector<T>(count, [&](int64_t t, int64_t n) {
          (Vec<T>::loadu(row + t, n) * Vec<T>::loadu(s.gate + t, n)).store(row + t, n);
        });
      }
      if (accumulate) {
        const Vec<T> factor(scale);
        for_each_vector<T>(count, [&](int64_t t, int64_t n) {
          const Vec<T> sum = Vec<T>::loadu(dst + t, n) + Vec<T>::loadu(row + t, n);
          (scale == T(1) ? sum : sum * factor).store(dst + t, n);
        });
      }
    }
  }
  if (!last_state) return;
  for (int64_t w = 0; w < lanes; ++w) {
    T* dst = last_state + (b * in.dim + e0 + w) * nstate;
    for (int64_t n = 0; n < nstate; ++n) dst[n] = s.state[n * W + w];
  }
}

template <typename T>
void forward_impl(const ScanInputs<T>& in, T* out, T* last_state) {
  constexpr int64_t W = kLanes<T>;
  const int64_t per_group = in.dim / in.groups;
  const int64_t tiles_per_group = (per_group + W - 1) / W;
  const int64_t tiles = in.batch * in.groups * tiles_per_group;
  parallel_dynamic(
      tiles, 1, [&] { return TileScratch<T>(in.nstate); },
      [&](TileScratch<T>& scratch, int64_t tile, int64_t) {
        const int64_t bg = tile / tiles_per_group, k = tile % tiles_per_group;
        const int64_t b = bg / in.groups, g = bg % in.groups;
        const int64_t e0 = g * per_group + k * W;
        forward_tile(in, b, e0, std::min(W, g * per_group + per_group - e0), scratch, out, last_state);
      });
}

// Both directions of a Vim mixer in one parallel region (inference): per tile the forward direction writes
// its gated output, the reverse one adds its own and scales the sum, so no second pass over `out`.
// fwd and bwd have the same shape and groups; no last states.
template <typename T>
void bidirectional_forward_impl(const ScanInputs<T>& fwd, const ScanInputs<T>& bwd, T scale, T* out) {
  constexpr int64_t W = kLanes<T>;
  const int64_t per_group = fwd.dim / fwd.groups;
  const int64_t tiles_per_group = (per_group + W - 1) / W;
  const int64_t tiles = fwd.batch * fwd.groups * tiles_per_group;
  parallel_dynamic(
      tiles, 1, [&] { return TileScratch<T>(fwd.nstate); },
      [&](TileScratch<T>& scratch, int64_t tile, int64_t) {
        const int64_t bg = tile / tiles_per_group, k = tile % tiles_per_group;
        const int64_t b = bg / fwd.groups, g = bg % fwd.groups;
        const int64_t e0 = g * per_group + k * W;
        const int64_t lanes = std::min(W, g * per_group + per_group - e0);
        forward_tile(fwd, b, e0, lanes, scratch, out, static_cast<T*>(nullptr));
        forward_tile(bwd, b, e0, lanes, scratch, out, static_cast<T*>(nullptr), true, scale);
      });
}

}  // namespace vimbench_cpu_scan
