// The per-channel work of the selective-scan kernels, as __host__ __device__ code.
//
// One CUDA thread owns one (batch, channel) row: it walks the sequence (forwards, or backwards for
// `reverse`) with all d_state states in registers, in float32. Because a thread's work depends on nothing
// but its (b, e) index, the same functions run on the host for every row: the host harness
// (selective_scan_cuda_host.cpp) compiles this file with a plain C++ compiler, so the indexing and the
// math of the kernels are tested on machines without a GPU.
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

VB_HD float sigmoid(float x) {
#if defined(__CUDA_ARCH__)
  return 1.f / (1.f + expf(-x));
#else
  return 1.f / (1.f + std::exp(-x));
#endif
}

VB_HD void atomic_add(float* p, float v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(p, v);
#else
  *p += v;  // the host harness runs rows one after another
#endif
}

// dB/dC are sums over the channels of a group. When every lane of a warp shares (batch, group), the warp
// sums its 32 contributions with shuffles and one lane does the atomic: 32x fewer atomics. The flag must
// be the same on all lanes of the warp (the kernel derives it from the warp's first and last rows).
VB_HD void atomic_add_group(float* p, float v, bool warp_uniform) {
#if defined(__CUDA_ARCH__)
  if (warp_uniform) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if ((threadIdx.x & 31) == 0) atomicAdd(p, v);
    return;
  }
  atomicAdd(p, v);
#else
  (void)warp_uniform;
  *p += v;
#endif
}

// Row (b, e) views of the strided inputs.
struct Row {
  int64_t u, delta, z, out;  // offsets of position 0
  int64_t B, C;              // offsets of (b, group, n=0, l=0)
  int e;
};

VB_HD Row row_offsets(const ScanParams& p, int b, int e) {
  const int g = e / p.channels_per_group;
  return Row{b * p.u_batch_stride + e * p.u_dim_stride,
             b * p.delta_batch_stride + e * p.delta_dim_stride,
             b * p.z_batch_stride + e * p.z_dim_stride,
             b * p.out_batch_stride + e * p.out_dim_stride,
             b * p.B_batch_stride + g * p.B_group_stride,
             b * p.C_batch_stride + g * p.C_group_stride,
             e};
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

// Forward for one row: out (with D and the silu(z) gate) and the final state.
// kExact: the caller checked d_state == kN and that B and C have unit stride over the states: no per-state
// guards, the states of B_t/C_t at compile-time offsets from one pointer (no pointer walk, no predicates).
template <typename io_t, typename bc_t, int kN, bool kExact = false>
VB_HD void scan_row_forward(const ScanParams& p, int b, int e) {
  const io_t* u = static_cast<const io_t*>(p.u);
  const io_t* delta = static_cast<const io_t*>(p.delta);
  const io_t* z = static_cast<const io_t*>(p.z);
  const bc_t* Bp = static_cast<const bc_t*>(p.B);
  const bc_t* Cp = static_cast<const bc_t*>(p.C);
  io_t* out = static_cast<io_t*>(p.out);
  const Row r = row_offsets(p, b, e);
  const int N = kExact ? kN : p.dstate;
  const float D = p.D ? p.D[e * p.D_stride] : 0.f;
  const float bias = p.delta_bias ? p.delta_bias[e * p.delta_bias_stride] : 0.f;

  float A2[kN], h[kN];
VB_UNROLL
  for (int n = 0; n < kN; ++n) {
    A2[n] = n < N ? p.A[e * p.A_dim_stride + n * p.A_n_stride] * kLog2e : 0.f;
    h[n] = 0.f;
  }
  for (int s = 0; s < p.seqlen; ++s) {
    const int t = p.reverse ? p.seqlen - 1 - s : s;
    const float ut = to_float(u[r.u + t * p.u_l_stride]);
    const float dt = row_delta(p, to_float(delta[r.delta + t * p.delta_l_stride]), bias);
    const float du = dt * ut;
    float y = 0.f;
    const bc_t* Bt = Bp + r.B + t * p.B_l_stride;  // walk the states by pointer: fewer live registers
    const bc_t* Ct = Cp + r.C + t * p.C_l_stride;
    if (kExact) {  // exact_states() checked 16-byte alignment: B_t and C_t in 16-byte loads
      float Bv[kN], Cv[kN];
      load_states16<bc_t, kN>(Bt, Bv);
      load_states16<bc_t, kN>(Ct, Cv);
VB_UNROLL
      for (int n = 0; n < kN; ++n) {
        h[n] = fast_exp2(dt * A2[n]) * h[n] + du * Bv[n];
        y += h[n] * Cv[n];
      }
    } else {
VB_UNROLL
      for (int n = 0; n < kN; ++n) {
        if (n < N) {
          h[n] = fast_exp2(dt * A2[n]) * h[n] + du * to_float(*Bt);
          y += h[n] * to_float(*Ct);
          Bt += p.B_n_stride;
          Ct += p.C_n_stride;
        }
      }
    }
    y += D * ut;
    if (z) {
      const float zt = to_float(z[r.z + t * p.z_l_stride]);
      y *= zt * sigmoid(zt);
    }
    store(&out[r.out + t * p.out_l_stride], y);
  }
  float* last = p.last_state + ((int64_t)b * p.dim + e) * N;
VB_UNROLL
  for (int n = 0; n < kN; ++n) {
    if (n < N) last[n] = h[n];
  }
}

// kExact rows (see scan_row_forward): d_state == kN, unit state strides of B and C, and every row's B_t/C_t
// 16-byte aligned (base pointers and the batch, group and position strides).
VB_HD bool exact_states(const ScanParams& p, int kN, int elem_bytes) {
  auto aligned = [&](const void* ptr, int64_t s_b, int64_t s_g, int64_t s_l) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && (s_b * elem_bytes) % 16 == 0 &&
           (s_g * elem_bytes) % 16 == 0 && (s_l * elem_bytes) % 16 == 0;
  };
  return p.dstate == kN && (kN * elem_bytes) % 16 == 0 && p.B_n_stride == 1 && p.C_n_stride == 1 &&
         aligned(p.B, p.B_batch_stride, p.B_group_stride, p.B_l_stride) &&
         aligned(p.C, p.C_batch_stride, p.C_group_stride, p.C_l_stride);
}

// Scratch layout (float32), interleaved over rows so neighbouring threads touch neighbouring words:
// checkpoints [chunk][n][row] (state before each chunk), then the chunk's states [step][n][row].
VB_HD int64_t bwd_chunks(int seqlen) { return (seqlen + kBwdChunk - 1) / kBwdChunk; }

// Backward for one row: recompute states chunk by chunk from checkpoints, then walk the chunk backwards.
template <typename io_t, typename bc_t, int kN>
VB_HD void scan_row_backward(const ScanBwdParams& q, int b, int e, bool warp_uniform) {
  const ScanParams& p = q.fwd;
  const io_t* u = static_cast<const io_t*>(p.u);
  const io_t* delta = static_cast<const io_t*>(p.delta);
  const io_t* z = static_cast<const io_t*>(p.z);
  const io_t* dout = static_cast<const io_t*>(q.dout);
  const bc_t* Bp = static_cast<const bc_t*>(p.B);
  const bc_t* Cp = static_cast<const bc_t*>(p.C);
  io_t* du_out = static_cast<io_t*>(q.du);
  io_t* ddelta_out = static_cast<io_t*>(q.ddelta);
  io_t* dz_out = static_cast<io_t*>(q.dz);
  const Row r = row_offsets(p, b, e);
  const int N = p.dstate, L = p.seqlen;
  const int64_t rows = (int64_t)p.batch * p.dim, row = (int64_t)b * p.dim + e;
  const int64_t dout_off = b * q.dout_batch_stride + e * q.dout_dim_stride;
  const int64_t own_off = row * L;  // du, ddelta, dz are contiguous
  const int g = e / p.channels_per_group;
  const int64_t dB_off = b * q.dB_batch_stride + g * q.dB_group_stride;
  const int64_t dC_off = b * q.dC_batch_stride + g * q.dC_group_stride;
  const float D = p.D ? p.D[e * p.D_stride] : 0.f;
  const float bias = p.delta_bias ? p.delta_bias[e * p.delta_bias_stride] : 0.f;
  float* ckpt = q.scratch;
  float* chunk_states = q.scratch + bwd_chunks(L) * N * rows;

  float A[kN], h[kN];
VB_UNROLL
  for (int n = 0; n < kN; ++n) {
    A[n] = n < N ? p.A[e * p.A_dim_stride + n * p.A_n_stride] : 0.f;
    h[n] = 0.f;
  }
  // pass 1: states at chunk starts
  for (int s = 0; s < L; ++s) {
    const int t = p.reverse ? L - 1 - s : s;
    if (s % kBwdChunk == 0) {
VB_UNROLL
      for (int n = 0; n < kN; ++n) {
        if (n < N) ckpt[((s / kBwdChunk) * N + n) * rows + row] = h[n];
      }
    }
    const float dt = row_delta(p, to_float(delta[r.delta + t * p.delta_l_stride]), bias);
    const float dtu = dt * to_float(u[r.u + t * p.u_l_stride]);
    const bc_t* Bt = Bp + r.B + t * p.B_l_stride;
VB_UNROLL
    for (int n = 0; n < kN; ++n) {
      if (n < N) {
        h[n] = fast_exp2(dt * A[n] * kLog2e) * h[n] + dtu * to_float(*Bt);
        Bt += p.B_n_stride;
      }
    }
  }
  // pass 2: chunks from the last scanned to the first; dh carries dL/dh across positions
  float dh[kN], dA_acc[kN];
VB_UNROLL
  for (int n = 0; n < kN; ++n) dh[n] = dA_acc[n] = 0.f;
  float dD_acc = 0.f, dbias_acc = 0.f;
  for (int c = (int)bwd_chunks(L) - 1; c >= 0; --c) {
    const int s0 = c * kBwdChunk, s1 = s0 + kBwdChunk < L ? s0 + kBwdChunk : L;
VB_UNROLL
    for (int n = 0; n < kN; ++n) {
      if (n < N) h[n] = ckpt[(c * N + n) * rows + row];
    }
    for (int s = s0; s < s1; ++s) {
      const int t = p.reverse ? L - 1 - s : s;
      const float dt = row_delta(p, to_float(delta[r.delta + t * p.delta_l_stride]), bias);
      const float dtu = dt * to_float(u[r.u + t * p.u_l_stride]);
      const bc_t* Bt = Bp + r.B + t * p.B_l_stride;
      float* saved = chunk_states + (int64_t)(s - s0) * N * rows + row;
VB_UNROLL
      for (int n = 0; n < kN; ++n) {
        if (n < N) {
          h[n] = fast_exp2(dt * A[n] * kLog2e) * h[n] + dtu * to_float(*Bt);
          saved[n * rows] = h[n];
          Bt += p.B_n_stride;
        }
      }
    }
    for (int s = s1 - 1; s >= s0; --s) {
      const int t = p.reverse ? L - 1 - s : s;
      const float ut = to_float(u[r.u + t * p.u_l_stride]);
      const float raw = to_float(delta[r.delta + t * p.delta_l_stride]) + bias;
      const float dt = p.delta_softplus ? softplus(raw) : raw;
      const float go = to_float(dout[dout_off + t * q.dout_l_stride]);
      const bc_t* Bt = Bp + r.B + t * p.B_l_stride;
      const bc_t* Ct = Cp + r.C + t * p.C_l_stride;
      const float* h_now = chunk_states + (int64_t)(s - s0) * N * rows + row;
      // state before position s: the previous saved one, or the chunk's checkpoint
      const float* h_before = s > s0 ? h_now - N * rows : ckpt + (int64_t)c * N * rows + row;
      float y = D * ut;
      for (int n = 0; n < kN && n < N; ++n) y += h_now[n * rows] * to_float(Ct[n * p.C_n_stride]);
      float dy = go;
      if (z) {
        const float zt = to_float(z[r.z + t * p.z_l_stride]);
        const float sz = sigmoid(zt);
        dy = go * zt * sz;
        store(&dz_out[own_off + t], go * y * sz * (1.f + zt * (1.f - sz)));
      }
      dD_acc += dy * ut;
      float du = dy * D, ddt = 0.f;
VB_UNROLL
      for (int n = 0; n < kN; ++n) {
        if (n < N) {
          const float ht = h_now[n * rows], hp = h_before[n * rows];
          const float Bn = to_float(*Bt), Cn = to_float(*Ct);
          Bt += p.B_n_stride;
          Ct += p.C_n_stride;
          const float a = fast_exp2(dt * A[n] * kLog2e);
          dh[n] += dy * Cn;
          atomic_add_group(&q.dC[dC_off + n * q.dC_n_stride + t * q.dC_l_stride], dy * ht, warp_uniform);
          atomic_add_group(&q.dB[dB_off + n * q.dB_n_stride + t * q.dB_l_stride], dh[n] * dt * ut,
                           warp_uniform);
          ddt += dh[n] * (A[n] * a * hp + ut * Bn);
          dA_acc[n] += dh[n] * dt * a * hp;
          du += dh[n] * dt * Bn;
          dh[n] *= a;
        }
      }
      const float dpre = p.delta_softplus && raw <= 20.f ? ddt * sigmoid(raw) : ddt;
      dbias_acc += dpre;
      store(&du_out[own_off + t], du);
      store(&ddelta_out[own_off + t], dpre);
    }
  }
VB_UNROLL
  for (int n = 0; n < kN; ++n) {
    if (n < N) atomic_add(&q.dA[e * N + n], dA_acc[n]);
  }
  if (q.dD) atomic_add(&q.dD[e], dD_acc);
  if (q.ddelta_bias) atomic_add(&q.ddelta_bias[e], dbias_acc);
}

}  // namespace vimbench_scan
