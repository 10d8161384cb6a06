// The per-channel work of the selective-scan kernels, as __host__ __device__ code.
//
// One CUDA thread owns one (batch, channel) row, one span of its tiles and one group of up to kGroupStates
// of its states: it walks the positions (forwards, or backwards for `reverse`) with the group's states in
// registers, in float32 (Vim's 16 states: one group). A thread's work
// depends on nothing but its (b, e, span) index, so the same functions run on the host for every row: the
// host harness (selective_scan_cuda_host.cpp) compiles this file with a plain C++ compiler, so the indexing
// and the math of the kernels are tested on machines without a GPU. The backward's block-level part (the
// dB/dC reduction over a block's channels) is in selective_scan_cuda_backward.cuh, written the same way.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "selective_scan_cuda.h"

#if defined(__CUDACC__)
#define VB_HD __host__ __device__ __forceinline__
#define VB_UNROLL _Pragma("unroll")
#else
#define VB_HD inline
#define VB_UNROLL
#endif

namespace vimbench_scan {

constexpr float kLog2e = 1.4426950408889634f;

VB_HD float to_float(float x) { return x; }
VB_HD void store(float* p, float x) { *p = x; }

VB_HD float fast_exp2(float x) {
#if defined(__CUDA_ARCH__)
  // MUFU.EX2 alone (2 ulp): exp2f adds a range check and two scalings per call for denormal results,
  // which a decay never needs (below 2^-126 it flushes to 0)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return std::exp2(x);
#endif
}

VB_HD float softplus(float x) {  // torch's threshold of 20
#if defined(__CUDA_ARCH__)
  return x > 20.f ? x : log1pf(expf(x));
#else
  return x > 20.f ? x : std::log1p(std::exp(x));
#endif
}

// Fast division on the device (__fdividef, 2 ulp): the precise one's slow path is a subroutine call in the
// time loop (an ABI call: registers saved around it, spills).
VB_HD float fast_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdividef(a, b);
#else
  return a / b;
#endif
}

VB_HD float sigmoid(float x) {
#if defined(__CUDA_ARCH__)
  return fast_div(1.f, 1.f + __expf(-x));  // x < -88: 1 / inf = 0, as it should
#else
  return 1.f / (1.f + std::exp(-x));
#endif
}

// Position t's offset along L: 32-bit (one IMAD; the launcher checks seqlen * |stride| < 2^31 for every
// tensor walked along L), added to the row's 64-bit offset.
VB_HD int64_t pos(int t, int64_t l_stride) { return (int64_t)(t * (int32_t)l_stride); }

// What pos() needs of a tensor walked along L (checked by the launchers for every such tensor).
VB_HD bool positions_fit_int32(int seqlen, int64_t l_stride) {
  const int64_t s = l_stride < 0 ? -l_stride : l_stride;
  return s < INT32_MAX && (int64_t)(seqlen > 0 ? seqlen - 1 : 0) * s < (int64_t)INT32_MAX;
}

// Every tensor the forward walks along L (u, delta, z, out, B, C).
VB_HD bool forward_positions_fit(const ScanParams& p) {
  const int L = p.seqlen;
  return positions_fit_int32(L, p.u_l_stride) && positions_fit_int32(L, p.delta_l_stride) &&
         positions_fit_int32(L, p.z_l_stride) && positions_fit_int32(L, p.out_l_stride) &&
         positions_fit_int32(L, p.B_l_stride) && positions_fit_int32(L, p.C_l_stride);
}

// Row (b, e) views of the strided inputs, for state group `sg` (states [sg * kGroupStates, ...)).
struct Row {
  int64_t u, delta, z, out;  // offsets of position 0
  int64_t B, C;              // offsets of (b, group, n = the state group's first, l=0)
  int e;
};

VB_HD Row row_offsets(const ScanParams& p, int b, int e, int sg = 0) {
  const int g = e / p.channels_per_group;
  const int64_t n0 = (int64_t)sg * kGroupStates;
  return Row{b * p.u_batch_stride + e * p.u_dim_stride,
             b * p.delta_batch_stride + e * p.delta_dim_stride,
             b * p.z_batch_stride + e * p.z_dim_stride,
             b * p.out_batch_stride + e * p.out_dim_stride,
             b * p.B_batch_stride + g * p.B_group_stride + n0 * p.B_n_stride,
             b * p.C_batch_stride + g * p.C_group_stride + n0 * p.C_n_stride,
             e};
}

// States in state group sg (kGroupStates but for the last group).
VB_HD int group_states(const ScanParams& p, int sg) {
  const int r = p.dstate - sg * kGroupStates;
  return r < kGroupStates ? r : kGroupStates;
}

VB_HD float row_delta(const ScanParams& p, float raw, float bias) {
  const float x = raw + bias;
  return p.delta_softplus ? softplus(x) : x;
}

// kN consecutive states from a 16-byte aligned address, 16 bytes per load (LDG.128 on the device).
struct alignas(16) Raw16 {
  uint32_t w[4];
};

template <typename bc_t, int kN>
VB_HD void load_states16(const bc_t* p, float (&out)[kN]) {
  constexpr int kPer = 16 / (int)sizeof(bc_t);
  static_assert(kN % kPer == 0, "kN must fill whole 16-byte loads");
  const Raw16* raw = reinterpret_cast<const Raw16*>(p);
VB_UNROLL
  for (int q = 0; q < kN / kPer; ++q) {
    const Raw16 chunk = raw[q];
    bc_t vals[kPer];
    memcpy(vals, &chunk, sizeof(chunk));
VB_UNROLL
    for (int k = 0; k < kPer; ++k) out[q * kPer + k] = to_float(vals[k]);
  }
}

// 16 bytes at a time (LDG/STG.128 on the device) for float arrays whose address is 16-byte aligned.
template <int kN>
VB_HD void load_f32x4(const float* p, float (&out)[kN]) {
  static_assert(kN % 4 == 0, "whole 16-byte chunks");
VB_UNROLL
  for (int q = 0; q < kN / 4; ++q) {
    Raw16 chunk = reinterpret_cast<const Raw16*>(p)[q];
    memcpy(&out[4 * q], &chunk, sizeof(chunk));
  }
}

template <int kN>
VB_HD void store_f32x4(float* p, const float (&v)[kN]) {
  static_assert(kN % 4 == 0, "whole 16-byte chunks");
VB_UNROLL
  for (int q = 0; q < kN / 4; ++q) {
    Raw16 chunk;
    memcpy(&chunk, &v[4 * q], sizeof(chunk));
    reinterpret_cast<Raw16*>(p)[q] = chunk;
  }
}

// A row's N states at p (contiguous): 16-byte accesses when N == kN (the caller checked alignment).
template <int kN, bool kExact>
VB_HD void store_state(float* p, const float (&h)[kN], int N) {
  if constexpr (kExact) {
    store_f32x4<kN>(p, h);
  } else {
VB_UNROLL
    for (int n = 0; n < kN; ++n) {
      if (n < N) p[n] = h[n];
    }
  }
}

template <int kN, bool kExact>
VB_HD void load_state(const float* p, float (&h)[kN], int N) {
  if constexpr (kExact) {
    load_f32x4<kN>(p, h);
  } else {
VB_UNROLL
    for (int n = 0; n < kN; ++n) h[n] = n < N ? p[n] : 0.f;
  }
}

// B_t (or C_t) of a row: kExact reads kN contiguous states in 16-byte loads, else N strided ones (0 past N).
template <typename bc_t, int kN, bool kExact>
VB_HD void load_bc(const bc_t* p, int64_t n_stride, int N, float (&out)[kN]) {
  if constexpr (kExact) {
    load_states16<bc_t, kN>(p, out);
  } else {
VB_UNROLL
    for (int n = 0; n < kN; ++n) {
      out[n] = n < N ? to_float(*p) : 0.f;
      if (n < N) p += n_stride;
    }
  }
}

// The forward's three modes (kernels/triton_scan_fwd.py has the same): kFull walks all tiles of a row;
// kSummary scans one span from a zero state and stores its end state and sum(dt) (no output); kSpan scans
// one span from its start state (written by combine_state) and stores the output.
// kPartialOut (or'ed into kFull or kSpan; state groups): the group's float32 partial output instead of out,
// a compile-time choice so that the time loop carries no branch for it.
enum FwdMode : int { kFull = 0, kSummary = 1, kSpan = 2, kPartialOut = 4 };

// Positions [first, last) in scan order of tile c.
VB_HD int tile_first(const ScanParams& p, int c) { return c * p.chunk; }
VB_HD int tile_end(const ScanParams& p, int c) {
  const int e = (c + 1) * p.chunk;
  return e < p.seqlen ? e : p.seqlen;
}
// Tiles [lo, hi) of span `par` (all tiles when not chunk-parallel).
VB_HD int span_lo(const ScanParams& p, int par) { return par * p.span; }
VB_HD int span_hi(const ScanParams& p, int par) {
  const int h = (par + 1) * p.span;
  return h < p.n_chunks ? h : p.n_chunks;
}
// Row (b, e)'s start state of tile c in the saved (batch, n_chunks, dim, dstate) tile states.
VB_HD int64_t tile_state_offset(const ScanParams& p, int b, int e, int c) {
  return (((int64_t)b * p.n_chunks + c) * p.dim + e) * p.dstate;
}

// Forward for one row, span and state group sg (see FwdMode): out (with D and the silu(z) gate; with state
// groups the group's float32 partial sum_n C h to y_part instead, finish_output adds them up), every tile's
// start state, and the last state (kFull; combine_state writes it when chunk-parallel).
// kExact: the caller checked d_state % kN == 0 and that B and C have unit stride over the states: no
// per-state guards, the states of B_t/C_t at compile-time offsets from one pointer (no pointer walk, no
// predicates).
template <typename io_t, typename bc_t, int kN, bool kExact, int kMode>
VB_HD void scan_row_forward(const ScanParams& p, int b, int e, int par, int sg = 0) {
  const io_t* u = static_cast<const io_t*>(p.u);
  const io_t* delta = static_cast<const io_t*>(p.delta);
  const io_t* z = static_cast<const io_t*>(p.z);
  const bc_t* Bp = static_cast<const bc_t*>(p.B);
  const bc_t* Cp = static_cast<const bc_t*>(p.C);
  io_t* out = static_cast<io_t*>(p.out);
  const Row r = row_offsets(p, b, e, sg);
  const int n0 = sg * kN, N = kExact ? kN : group_states(p, sg);
  const float D = p.D ? p.D[e * p.D_stride] : 0.f;
  const float bias = p.delta_bias ? p.delta_bias[e * p.delta_bias_stride] : 0.f;
  constexpr int kBase = kMode & 3;
  constexpr bool kPartial = (kMode & kPartialOut) != 0;
  const int c_lo = kBase == kFull ? 0 : span_lo(p, par);
  const int c_hi = kBase == kFull ? p.n_chunks : span_hi(p, par);
  // state groups: this group's partial y row (float32, no D, no gate)
  float* y_part = kPartial ? p.y_part + ((int64_t)sg * p.batch * p.dim + (int64_t)b * p.dim + e) * p.seqlen
                                 : nullptr;

  float A2[kN], h[kN];
VB_UNROLL
  for (int n = 0; n < kN; ++n) {
    A2[n] = n < N ? p.A[e * p.A_dim_stride + (n0 + n) * p.A_n_stride] * kLog2e : 0.f;
    h[n] = 0.f;
  }
  if (kBase == kSpan) load_state<kN, kExact>(p.tile_states + tile_state_offset(p, b, e, c_lo) + n0, h, N);
  float dt_sum = 0.f;
  for (int c = c_lo; c < c_hi; ++c) {
    // the tile state's address from (b, e, c) each tile (a pointer kept across the loops cost a spill)
    if (kBase != kSummary) store_state<kN, kExact>(p.tile_states + tile_state_offset(p, b, e, c) + n0, h, N);
    const int s1 = tile_end(p, c);
    for (int s = tile_first(p, c); s < s1; ++s) {
      const int t = p.reverse ? p.seqlen - 1 - s : s;
      const float ut = to_float(u[r.u + pos(t, p.u_l_stride)]);
      const float dt = row_delta(p, to_float(delta[r.delta + pos(t, p.delta_l_stride)]), bias);
      const float du = dt * ut;
      float Bv[kN];
      load_bc<bc_t, kN, kExact>(Bp + r.B + pos(t, p.B_l_stride), p.B_n_stride, N, Bv);
      if (kBase == kSummary) {
VB_UNROLL
        for (int n = 0; n < kN; ++n) h[n] = fast_exp2(dt * A2[n]) * h[n] + du * Bv[n];
        dt_sum += dt;
        continue;
      }
      float Cv[kN];
      load_bc<bc_t, kN, kExact>(Cp + r.C + pos(t, p.C_l_stride), p.C_n_stride, N, Cv);
      float y = 0.f;
VB_UNROLL
      for (int n = 0; n < kN; ++n) {
        h[n] = fast_exp2(dt * A2[n]) * h[n] + du * Bv[n];
        y += h[n] * Cv[n];
      }
      if (kPartial) {
        y_part[t] = y;
        continue;
      }
      y += D * ut;
      if (z) {
        const float zt = to_float(z[r.z + pos(t, p.z_l_stride)]);
        y *= zt * sigmoid(zt);
      }
      store(&out[r.out + pos(t, p.out_l_stride)], y);
    }
  }
  if (kBase == kFull) store_state<kN, false>(p.last_state + ((int64_t)b * p.dim + e) * p.dstate + n0, h, N);
  if (kBase == kSummary) {  // the span's end state from zero, in its first tile's slot (combine_state reads it)
    store_state<kN, kExact>(p.tile_states + tile_state_offset(p, b, e, c_lo) + n0, h, N);
    if (sg == 0) p.dt_sum[((int64_t)b * p.n_par + par) * p.dim + e] = dt_sum;
  }
}

// State groups: out at (row, position t) from the groups' partials, in group order, + D u, gated by silu(z).
template <typename io_t>
VB_HD void finish_output(const ScanParams& p, int64_t row, int t) {
  const int e = (int)(row % p.dim), b = (int)(row / p.dim);
  const int64_t rows = (int64_t)p.batch * p.dim;
  const float* yp = p.y_part + row * p.seqlen + t;
  float y = 0.f;
  for (int sg = 0; sg < p.n_groups; ++sg) y += yp[sg * rows * p.seqlen];
  const Row r = row_offsets(p, b, e);
  if (p.D) y += p.D[e * p.D_stride] * to_float(static_cast<const io_t*>(p.u)[r.u + t * p.u_l_stride]);
  if (p.z) {
    const float zt = to_float(static_cast<const io_t*>(p.z)[r.z + t * p.z_l_stride]);
    y *= zt * sigmoid(zt);
  }
  store(&static_cast<io_t*>(p.out)[r.out + t * p.out_l_stride], y);
}

// Chains the spans of one row's state n, in place: slot k (at slots + k * slot_stride + n) holds span k's end
// state from zero (the forward's summary) and gets the state entering span k; x_next = exp(A sum(dt)) x + S_k.
// `reverse` walks from the last span (the backward's adjoint carries). The final value goes to `last[n]`.
VB_HD void combine_state(const ScanParams& p, int e, int n, float* slots, int64_t slot_stride,
                         const float* dt_sums, float* last, bool reverse) {
  const float A2 = p.A[e * p.A_dim_stride + n * p.A_n_stride] * kLog2e;
  float x = 0.f;
  for (int k = 0; k < p.n_par; ++k) {
    const int c = reverse ? p.n_par - 1 - k : k;
    float* slot = slots + c * slot_stride + n;
    const float s = *slot;
    *slot = x;
    x = fast_exp2(dt_sums[(int64_t)c * p.dim] * A2) * x + s;
  }
  if (last) last[n] = x;
}

// kExact rows (see scan_row_forward): d_state a multiple of kN (whole state groups), unit state strides of B
// and C, and every row's B_t/C_t 16-byte aligned (base pointers and the batch, group and position strides;
// a group's first state is kN states further: 16-byte aligned too).
VB_HD bool exact_states(const ScanParams& p, int kN, int elem_bytes) {
  auto aligned = [&](const void* ptr, int64_t s_b, int64_t s_g, int64_t s_l) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && (s_b * elem_bytes) % 16 == 0 &&
           (s_g * elem_bytes) % 16 == 0 && (s_l * elem_bytes) % 16 == 0;
  };
  return p.dstate % kN == 0 && (kN * elem_bytes) % 16 == 0 && p.B_n_stride == 1 && p.C_n_stride == 1 &&
         aligned(p.B, p.B_batch_stride, p.B_group_stride, p.B_l_stride) &&
         aligned(p.C, p.C_batch_stride, p.C_group_stride, p.C_l_stride) &&
         reinterpret_cast<uintptr_t>(p.tile_states) % 16 == 0;
}

}  // namespace vimbench_scan
