// The backward of the selective scan, from the forward's saved tile start states, as __host__ __device__
// code (the host harness drives it exactly as a block's threads do; see selective_scan_cuda_core.cuh).
//
// A block is kBwdThreads consecutive (batch, channel) rows, one thread each, over one span of tiles
// (all tiles unless chunk-parallel) and one group of up to kGroupStates states (grid z; Vim's 16: one).
// Per tile, from the last to the first:
//  phase 1 (bwd_tile_walk, per thread, no barrier):
//    recompute: the recurrence re-runs from the tile's saved start state; each step's h_t and decay
//      exp(dt_t A) (the update's only exp) go to the thread's slab slot, 16 bytes per access;
//    adjoint: g_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1} walks the tile backwards from the slab; du, ddelta
//      and dz are stored, dA, dD and d(delta_bias) summed in registers; g_t overwrites the spent decay and
//      the step's dC and dB weights (dy_t, dt_t u_t) go to the block's shared buffer;
//  barrier;
//  phase 2 (bwd_tile_reduce, per block): dC[t, n] = sum_e dy[t, e] h[t, n, e] and dB[t, n] = sum_e dtu[t, e]
//    g[t, n, e] over the block's channels, once per tile, each stored (no atomic) in the block's partial
//    slot of (batch, group, n, t) (bwd_block_slot); the caller sums the slots;
//  barrier (the next tile reuses the slab and the buffer).
// dA, dD and d(delta_bias) are stored per (row, span) (and state group) at the end, du/ddelta/dz per state
// group when there are several: every output element has one writer, so the backward is deterministic.
// Chunk-parallel (n_par > 1): bwd_summary_row runs each span's adjoint carry from zero, combine_state
// chains them from the last span, and each span's blocks start from their carry.
#pragma once

#include "selective_scan_cuda_core.cuh"

#if defined(__CUDA_ARCH__)
#define VB_NO_UNROLL _Pragma("unroll 1")
#else
#define VB_NO_UNROLL
#endif

namespace vimbench_scan {

constexpr float kLn2 = 0.6931471805599453f;

// dt = softplus(raw) (or raw) and d(dt)/d(raw), with one exp.
VB_HD void delta_and_slope(bool softplus_on, float raw, float& dt, float& slope) {
  dt = raw;
  slope = 1.f;
  if (softplus_on && raw <= 20.f) {
#if defined(__CUDA_ARCH__)
    const float ex = expf(raw);
    dt = log1pf(ex);
#else
    const float ex = std::exp(raw);
    dt = std::log1p(ex);
#endif
    slope = fast_div(ex, 1.f + ex);
  }
}

// What one thread keeps across tiles: its row's constants and its running sums.
template <int kN>
struct BwdRow {
  Row r;
  int b, e, par, sg;
  int64_t dout_off, own_off;  // dout's row; du, ddelta, dz are contiguous (batch, dim, L)
  float D, bias;
  float G[kN];   // exp(dt_{t+1} A) g_{t+1}: the adjoint arriving from later positions
  float dD, dbias;
};

// Shared buffer of a block: per step k of the tile, 4 weights per thread (dy, dt*u, dt, d(dt)/d(raw));
// then each thread's A * log2(e) (kGroupStates, 0 past the group's states) as 16-byte blocks [q][tid]
// (conflict-free 128-bit accesses): read from there in the time loops (a few LDS.128 per step) rather than
// held in registers through the whole kernel (registers: see the README's GPU status).
VB_HD int w_index(int k, int j, int tid) { return (k * 4 + j) * kBwdThreads + tid; }
constexpr int kBwdWeightFloats = kTile * 4 * kBwdThreads;
constexpr int kBwdSharedFloats = kBwdWeightFloats + 2 * kGroupStates * kBwdThreads;
VB_HD float* a2_slot(float* sh, int q, int tid) { return sh + kBwdWeightFloats + (q * kBwdThreads + tid) * 4; }
VB_HD float* da_slot(float* sh, int q, int tid) {
  return sh + kBwdWeightFloats + kGroupStates * kBwdThreads + (q * kBwdThreads + tid) * 4;
}

template <int kN>
VB_HD void load_a2(const float* sh, int tid, float (&A2)[kN]) {
VB_UNROLL
  for (int q = 0; q < kN / 4; ++q) {
    float v[4];
    load_f32x4<4>(a2_slot(const_cast<float*>(sh), q, tid), v);
VB_UNROLL
    for (int j = 0; j < 4; ++j) A2[4 * q + j] = v[j];
  }
}

// A thread's slab slot: kTile steps x [h (kN) | decay, then the adjoint g (kN)], per (state group, span, row).
template <int kN>
VB_HD float* slab_slot(const ScanBwdParams& q, int par, int64_t row, int sg = 0) {
  const int64_t rows = (int64_t)q.fwd.batch * q.fwd.dim;
  return q.scratch + (((int64_t)sg * q.fwd.n_par + par) * rows + row) * (kTile * 2 * kN);
}

VB_HD int64_t carry_offset(const ScanParams& p, int b, int e, int par) {
  return (((int64_t)b * p.n_par + par) * p.dim + e) * p.dstate;
}

template <int kN>
VB_HD void bwd_row_init(const ScanBwdParams& q, int b, int e, int par, int sg, BwdRow<kN>& w, float* sh,
                        int tid) {
  const ScanParams& p = q.fwd;
  const int N = group_states(p, sg), n0 = sg * kN;
  w.r = row_offsets(p, b, e, sg);
  w.b = b;
  w.e = e;
  w.par = par;
  w.sg = sg;
  w.dout_off = b * q.dout_batch_stride + e * q.dout_dim_stride;
  w.own_off = ((int64_t)b * p.dim + e) * p.seqlen;
  w.D = p.D && sg == 0 ? p.D[e * p.D_stride] : 0.f;  // D's terms (du, dz) in group 0's partials only
  w.bias = p.delta_bias ? p.delta_bias[e * p.delta_bias_stride] : 0.f;
  const bool carried = par + 1 < p.n_par;  // later spans' adjoint, chained by combine_state
VB_UNROLL
  for (int n = 0; n < kN; ++n) {
    a2_slot(sh, n / 4, tid)[n % 4] = n < N ? p.A[e * p.A_dim_stride + (n0 + n) * p.A_n_stride] * kLog2e : 0.f;
    da_slot(sh, n / 4, tid)[n % 4] = 0.f;
    w.G[n] = carried && n < N ? q.carries[carry_offset(p, b, e, par) + n0 + n] : 0.f;
  }
  w.dD = w.dbias = 0.f;
}

// Phase 1 for one thread and tile c (see the file comment). `sh`: the block's shared buffer.
// kPartial (state groups): du, ddelta, dz to the group's float32 partials (a compile-time choice: no branch in
// the time loop).
template <typename io_t, typename bc_t, int kN, bool kExact, bool kPartial>
VB_HD void bwd_tile_walk(const ScanBwdParams& q, BwdRow<kN>& w, int c, float* slab, float* sh, int tid) {
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
  const int N = kExact ? kN : group_states(p, w.sg), L = p.seqlen;
  const int s0 = tile_first(p, c), s1 = tile_end(p, c);
  const int64_t part_off = kPartial ? (int64_t)w.sg * p.batch * p.dim * p.seqlen + w.own_off : 0;
  float h[kN], A2[kN];
  load_state<kN, kExact>(p.tile_states + tile_state_offset(p, w.b, w.e, c) + w.sg * kN, h, N);
VB_NO_UNROLL
  for (int s = s0; s < s1; ++s) {  // recompute
    const int k = s - s0, t = p.reverse ? L - 1 - s : s;
    float dt, slope;
    delta_and_slope(p.delta_softplus, to_float(delta[w.r.delta + pos(t, p.delta_l_stride)]) + w.bias, dt, slope);
    const float ut = to_float(u[w.r.u + pos(t, p.u_l_stride)]);
    const float dtu = dt * ut;
    float Bv[kN], decay[kN];
    load_bc<bc_t, kN, kExact>(Bp + w.r.B + pos(t, p.B_l_stride), p.B_n_stride, N, Bv);
    load_a2<kN>(sh, tid, A2);
VB_UNROLL
    for (int n = 0; n < kN; ++n) {
      decay[n] = fast_exp2(dt * A2[n]);
      h[n] = decay[n] * h[n] + dtu * Bv[n];
    }
    store_f32x4<kN>(slab + k * 2 * kN, h);
    store_f32x4<kN>(slab + k * 2 * kN + kN, decay);
    sh[w_index(k, 1, tid)] = ut;  // for the adjoint, which overwrites it with dt * u
    sh[w_index(k, 2, tid)] = dt;
    sh[w_index(k, 3, tid)] = slope;
  }
VB_NO_UNROLL
  for (int s = s1 - 1; s >= s0; --s) {  // adjoint
    const int k = s - s0, t = p.reverse ? L - 1 - s : s;
    float ht[kN], decay[kN], Bv[kN], Cv[kN], g[kN];
    load_f32x4<kN>(slab + k * 2 * kN, ht);
    load_f32x4<kN>(slab + k * 2 * kN + kN, decay);
    load_bc<bc_t, kN, kExact>(Bp + w.r.B + pos(t, p.B_l_stride), p.B_n_stride, N, Bv);
    load_bc<bc_t, kN, kExact>(Cp + w.r.C + pos(t, p.C_l_stride), p.C_n_stride, N, Cv);
    const float ut = sh[w_index(k, 1, tid)];
    const float dt = sh[w_index(k, 2, tid)];
    const float go = to_float(dout[w.dout_off + pos(t, q.dout_l_stride)]);
    float dy = go;
    if (z) {
      const float zt = to_float(z[w.r.z + pos(t, p.z_l_stride)]);
      const float sz = sigmoid(zt);
      float y = w.D * ut;
VB_UNROLL
      for (int n = 0; n < kN; ++n) y += ht[n] * Cv[n];
      const float dz = go * y * sz * (1.f + zt * (1.f - sz));  // linear in y: per group, summed later
      if (kPartial) {
        q.dz_part[part_off + t] = dz;
      } else {
        store(&dz_out[w.own_off + t], dz);
      }
      dy = go * zt * sz;
    }
    const float dtu = dt * ut;
    float gB = 0.f, gdhA = 0.f, dAs[kN];
    load_a2<kN>(sh, tid, A2);
VB_UNROLL
    for (int n = 0; n < kN; ++n) {
      g[n] = dy * Cv[n] + w.G[n];
      const float gdh = g[n] * (ht[n] - dtu * Bv[n]);  // g_t exp(dt A) h_{t-1}
      gB += g[n] * Bv[n];
      gdhA += gdh * A2[n];
      dAs[n] = gdh * dt;
      w.G[n] = g[n] * decay[n];
    }
    store_f32x4<kN>(slab + k * 2 * kN + kN, g);
VB_UNROLL
    for (int qq = 0; qq < kN / 4; ++qq) {
      float v[4];
      load_f32x4<4>(da_slot(sh, qq, tid), v);
VB_UNROLL
      for (int j = 0; j < 4; ++j) v[j] += dAs[4 * qq + j];
      store_f32x4<4>(da_slot(sh, qq, tid), v);
    }
    sh[w_index(k, 0, tid)] = dy;
    sh[w_index(k, 1, tid)] = dtu;
    const float ddt = (gB * ut + gdhA * kLn2) * sh[w_index(k, 3, tid)];
    w.dD += dy * ut;
    w.dbias += ddt;
    if (kPartial) {
      q.du_part[part_off + t] = dy * w.D + gB * dt;
      q.ddelta_part[part_off + t] = ddt;
    } else {
      store(&du_out[w.own_off + t], dy * w.D + gB * dt);
      store(&ddelta_out[w.own_off + t], ddt);
    }
  }
}

// (batch, group) of a row: consecutive rows have nondecreasing keys.
VB_HD int group_key(const ScanParams& p, int row) {  // rows < 2^31 (the launcher checks): 32-bit divisions
  return (row / p.dim) * (p.dim / p.channels_per_group) + (row % p.dim) / p.channels_per_group;
}

// A block's rows [row0, row0 + nvalid) and state group for phase 2, worked out once per block (no
// divisions per tile).
struct BwdBlock {
  int64_t row0;
  int nvalid;
  int sg, n_states;  // state group, its states
  bool uniform;  // all kBwdThreads rows exist and share one (batch, group): the unrolled reduction
  int64_t dC_off, dB_off;  // of that (batch, group) in its partial slot (and state group), when uniform
};

// The dB/dC partial slot of block `row0` in (batch, group) `key`: blocks touching the key in row order.
VB_HD int bwd_block_slot(const ScanParams& p, int64_t row0, int key) {
  return (int)(row0 / kBwdThreads - (int64_t)key * p.channels_per_group / kBwdThreads);
}

// Offset in dB (or dC) partials of (batch, group) `key`, slot of block row0, state group sg's first state.
VB_HD int64_t grad_offset(const ScanBwdParams& q, int key, bool dB, int64_t row0, int sg) {
  const int groups = q.fwd.dim / q.fwd.channels_per_group;
  const int b = key / groups, g = key % groups;
  const int64_t slot = bwd_block_slot(q.fwd, row0, key), n0 = (int64_t)sg * kGroupStates;
  return dB ? slot * q.dB_slot_stride + b * q.dB_batch_stride + g * q.dB_group_stride + n0 * q.dB_n_stride
            : slot * q.dC_slot_stride + b * q.dC_batch_stride + g * q.dC_group_stride + n0 * q.dC_n_stride;
}

VB_HD BwdBlock bwd_block_init(const ScanBwdParams& q, int64_t row0, int sg) {
  const int64_t rows = (int64_t)q.fwd.batch * q.fwd.dim;
  BwdBlock blk;
  blk.row0 = row0;
  blk.nvalid = rows - row0 < kBwdThreads ? (int)(rows - row0) : kBwdThreads;
  blk.sg = sg;
  blk.n_states = group_states(q.fwd, sg);
  const int key = group_key(q.fwd, (int)row0);
  blk.uniform = blk.nvalid == kBwdThreads && group_key(q.fwd, (int)row0 + blk.nvalid - 1) == key;
  blk.dC_off = grad_offset(q, key, false, row0, sg);
  blk.dB_off = grad_offset(q, key, true, row0, sg);
  return blk;
}

// Stores a 4-state column group of dC (sel 0) or dB (sel 1) at position s (states n0.. of the block's state
// group, `n_states` of them) in the block's partial slot; `off`: grad_offset's.
VB_HD void flush_column(const ScanBwdParams& q, int64_t off, int sel, int n0, int n_states, int s,
                        const float (&acc)[4]) {
  const ScanParams& p = q.fwd;
  const int t = p.reverse ? p.seqlen - 1 - s : s;
  float* dst = sel ? q.dB + off + t * q.dB_l_stride : q.dC + off + t * q.dC_l_stride;
  const int64_t n_stride = sel ? q.dB_n_stride : q.dC_n_stride;
VB_UNROLL
  for (int j = 0; j < 4; ++j) {
    if (n0 + j < n_states) dst[(n0 + j) * n_stride] = acc[j];
  }
}

// Sums channels [lo, hi) of one column group at step k: slab values times the channels' weights.
template <int kN>
VB_HD void sum_channels(const float* col, const float* wk, int lo, int hi, float (&acc)[4]) {
  for (int ch = lo; ch < hi; ++ch) {
    float v[4];
    load_f32x4<4>(col + (int64_t)ch * kTile * 2 * kN, v);
VB_UNROLL
    for (int j = 0; j < 4; ++j) acc[j] += v[j] * wk[ch];
  }
}

// The general case of phase 2: a partial block, or one spanning several (batch, group)s.
template <int kN>
VB_HD void bwd_reduce_general(const ScanBwdParams& q, const BwdBlock& blk, int s0, int len, const float* slab0,
                              const float* sh, int tid) {
  constexpr int kCols = 2 * kN / 4;  // 4-state column groups: dC's, then dB's
  for (int job = tid; job < len * kCols; job += kBwdThreads) {
    const int k = job / kCols, col = job % kCols, sel = col * 4 >= kN ? 1 : 0, n0 = col * 4 - sel * kN;
    if (n0 >= blk.n_states) continue;
    for (int lo = 0; lo < blk.nvalid;) {
      const int key = group_key(q.fwd, (int)blk.row0 + lo);
      int hi = lo + 1;
      while (hi < blk.nvalid && group_key(q.fwd, (int)blk.row0 + hi) == key) ++hi;
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      sum_channels<kN>(slab0 + k * 2 * kN + col * 4, sh + w_index(k, sel, 0), lo, hi, acc);
      flush_column(q, grad_offset(q, key, sel, blk.row0, blk.sg), sel, n0, blk.n_states, s0 + k, acc);
      lo = hi;
    }
  }
}

// Phase 2 for thread `tid` of block `blk`, tile c (see the file comment). The common case (a full block in
// one (batch, group), as every Vim block) is fully unrolled: per thread kTile * kCols / kBwdThreads column
// groups, each a sum over the block's channels in registers.
template <int kN>
VB_HD void bwd_tile_reduce(const ScanBwdParams& q, const BwdBlock& blk, int c, int par, const float* sh,
                           int tid) {
  const ScanParams& p = q.fwd;
  const int s0 = tile_first(p, c), len = tile_end(p, c) - s0;
  const float* slab0 = slab_slot<kN>(q, par, blk.row0, blk.sg);
  if (!blk.uniform) {
    bwd_reduce_general<kN>(q, blk, s0, len, slab0, sh, tid);
    return;
  }
  constexpr int kCols = 2 * kN / 4, kStepsPerPass = kBwdThreads / kCols;
  static_assert(kBwdThreads % kCols == 0 && kTile % kStepsPerPass == 0, "whole jobs per thread");
  // job tid + i * kBwdThreads: column tid % kCols (the same for every i) of step tid / kCols + i * kStepsPerPass,
  // so one base address serves all of a thread's jobs (nothing per job held through the tile loop)
  const int col = tid % kCols, k0 = tid / kCols, sel = col * 4 >= kN ? 1 : 0, n0 = col * 4 - sel * kN;
  const float* colp0 = slab0 + k0 * 2 * kN + col * 4;
VB_UNROLL
  for (int i = 0; i < kTile / kStepsPerPass; ++i) {
    const int k = k0 + i * kStepsPerPass;
    if (k < len && n0 < blk.n_states) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      const float* colp = colp0 + i * kStepsPerPass * 2 * kN;
      const float* wk = sh + w_index(k, sel, 0);
VB_UNROLL
      for (int ch = 0; ch < kBwdThreads; ++ch) {
        float v[4];
        load_f32x4<4>(colp + ch * kTile * 2 * kN, v);
        const float wt = wk[ch];
VB_UNROLL
        for (int j = 0; j < 4; ++j) acc[j] += v[j] * wt;
      }
      flush_column(q, sel ? blk.dB_off : blk.dC_off, sel, n0, blk.n_states, s0 + k, acc);
    }
  }
}

// The row's parameter gradients, once per (row, span, state group), each to its own partial (no atomics).
template <int kN>
VB_HD void bwd_row_finish(const ScanBwdParams& q, const BwdRow<kN>& w, float* sh, int tid) {
  const ScanParams& p = q.fwd;
  const int N = group_states(p, w.sg);
  const int64_t slot = ((int64_t)w.b * p.n_par + w.par) * p.dim + w.e;
VB_UNROLL
  for (int n = 0; n < kN; ++n) {
    if (n < N) q.dA[slot * p.dstate + w.sg * kN + n] = da_slot(sh, n / 4, tid)[n % 4];
  }
  if (q.dD && w.sg == 0) q.dD[slot] = w.dD;
  if (q.ddelta_bias) q.ddelta_bias[(int64_t)w.sg * p.batch * p.n_par * p.dim + slot] = w.dbias;
}

// Chunk-parallel backward: span `par`'s adjoint carry from zero, exp(dt A) g at the span's first position,
// and its sum(dt) (neither needs the states); combine_state then chains the spans from the last.
template <typename io_t, typename bc_t, int kN, bool kExact>
VB_HD void bwd_summary_row(const ScanBwdParams& q, int b, int e, int par, int sg = 0) {
  const ScanParams& p = q.fwd;
  const io_t* delta = static_cast<const io_t*>(p.delta);
  const io_t* z = static_cast<const io_t*>(p.z);
  const io_t* dout = static_cast<const io_t*>(q.dout);
  const bc_t* Cp = static_cast<const bc_t*>(p.C);
  const Row r = row_offsets(p, b, e, sg);
  const int N = kExact ? kN : group_states(p, sg), n0 = sg * kN, L = p.seqlen;
  const int64_t dout_off = b * q.dout_batch_stride + e * q.dout_dim_stride;
  const float bias = p.delta_bias ? p.delta_bias[e * p.delta_bias_stride] : 0.f;
  float A2[kN], G[kN];
VB_UNROLL
  for (int n = 0; n < kN; ++n) {
    A2[n] = n < N ? p.A[e * p.A_dim_stride + (n0 + n) * p.A_n_stride] * kLog2e : 0.f;
    G[n] = 0.f;
  }
  float dt_sum = 0.f;
  const int s_lo = tile_first(p, span_lo(p, par)), s_hi = tile_end(p, span_hi(p, par) - 1);
VB_NO_UNROLL
  for (int s = s_hi - 1; s >= s_lo; --s) {
    const int t = p.reverse ? L - 1 - s : s;
    const float dt = row_delta(p, to_float(delta[r.delta + pos(t, p.delta_l_stride)]), bias);
    float dy = to_float(dout[dout_off + pos(t, q.dout_l_stride)]);
    if (z) {
      const float zt = to_float(z[r.z + pos(t, p.z_l_stride)]);
      dy *= zt * sigmoid(zt);
    }
    float Cv[kN];
    load_bc<bc_t, kN, kExact>(Cp + r.C + pos(t, p.C_l_stride), p.C_n_stride, N, Cv);
VB_UNROLL
    for (int n = 0; n < kN; ++n) G[n] = (dy * Cv[n] + G[n]) * fast_exp2(dt * A2[n]);
    dt_sum += dt;
  }
  float* slot = q.carries + carry_offset(p, b, e, par) + n0;
VB_UNROLL
  for (int n = 0; n < kN; ++n) {
    if (n < N) slot[n] = G[n];
  }
  if (sg == 0) p.dt_sum[((int64_t)b * p.n_par + par) * p.dim + e] = dt_sum;
}

}  // namespace vimbench_scan
