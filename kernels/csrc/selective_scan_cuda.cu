// Selective-scan CUDA kernels: one thread per (batch, channel) row, states in registers, float32 math.
// Plain CUDA C++ (no torch headers): `nvcc -arch=sm_80 -c selective_scan_cuda.cu` builds it alone; the torch
// binding (selective_scan_cuda_binding.cpp) fills ScanParams and calls the launchers below.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "selective_scan_cuda.h"

namespace vimbench_scan {

__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store(__half* p, float x) { *p = __float2half_rn(x); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

}  // namespace vimbench_scan

#include "selective_scan_cuda_backward.cuh"

namespace vimbench_scan {

constexpr int kMaxThreads = 128;

VB_HD int64_t total_rows(const ScanParams& p) { return (int64_t)p.batch * p.dim; }

// This thread's row (or (row, state): batch * dim * dstate < 2^31, checked by valid(): 32-bit divisions, no
// 64-bit division call).
__device__ __forceinline__ int thread_row() { return (int)(blockIdx.x * blockDim.x + threadIdx.x); }

// grid (row blocks, spans, state groups): blockIdx.y is the span (0 unless chunk-parallel), blockIdx.z the
// state group (0 unless d_state > kGroupStates)
template <typename io_t, typename bc_t, int kN, bool kExact, int kMode>
__global__ void __launch_bounds__(kMaxThreads) selective_scan_fwd_kernel(ScanParams p) {
  const int row = thread_row();
  if (row >= total_rows(p)) return;
  scan_row_forward<io_t, bc_t, kN, kExact, kMode>(p, row / p.dim, row % p.dim, blockIdx.y, blockIdx.z);
}

// State groups: one thread per (row, position) sums the groups' partial outputs (finish_output).
template <typename io_t>
__global__ void __launch_bounds__(kMaxThreads) selective_scan_finish_kernel(ScanParams p) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total_rows(p) * p.seqlen) return;
  finish_output<io_t>(p, i / p.seqlen, (int)(i % p.seqlen));
}

// One thread per (row, state): the spans' summaries -> their start states (forward) or adjoint carries
// (backward).
__global__ void __launch_bounds__(kMaxThreads) selective_scan_combine_kernel(ScanParams p, float* slots,
                                                                           int64_t slot_stride, bool reverse) {
  const int i = thread_row();
  if (i >= total_rows(p) * p.dstate) return;
  const int row = i / p.dstate, n = i % p.dstate, b = row / p.dim, e = row % p.dim;
  const int64_t base = reverse ? carry_offset(p, b, e, 0) : tile_state_offset(p, b, e, 0);
  float* last = reverse ? nullptr : p.last_state + (int64_t)row * p.dstate;
  combine_state(p, e, n, slots + base, slot_stride, p.dt_sum + (int64_t)b * p.n_par * p.dim + e, last, reverse);
}

template <typename io_t, typename bc_t, int kN, bool kExact>
__global__ void __launch_bounds__(kMaxThreads) selective_scan_bwd_summary_kernel(ScanBwdParams q) {
  const int row = thread_row();
  if (row >= total_rows(q.fwd)) return;
  bwd_summary_row<io_t, bc_t, kN, kExact>(q, row / q.fwd.dim, row % q.fwd.dim, blockIdx.y, blockIdx.z);
}

// Block = kBwdThreads rows, blockIdx.y = span, blockIdx.z = state group; see
// selective_scan_cuda_backward.cuh.
template <typename io_t, typename bc_t, int kN, bool kExact, bool kPartial>
__global__ void __launch_bounds__(kBwdThreads) selective_scan_bwd_kernel(ScanBwdParams q) {
  __shared__ float sh[kBwdSharedFloats];
  const ScanParams& p = q.fwd;
  const int tid = threadIdx.x, par = blockIdx.y, sg = blockIdx.z;
  const BwdBlock blk = bwd_block_init(q, (int64_t)blockIdx.x * kBwdThreads, sg);
  const bool valid = tid < blk.nvalid;
  const int row = (int)blk.row0 + (valid ? tid : 0);
  BwdRow<kN> w;
  bwd_row_init<kN>(q, row / p.dim, row % p.dim, par, sg, w, sh, tid);
  float* slab = slab_slot<kN>(q, par, row, sg);
  for (int c = span_hi(p, par) - 1; c >= span_lo(p, par); --c) {
    if (valid) bwd_tile_walk<io_t, bc_t, kN, kExact, kPartial>(q, w, c, slab, sh, tid);
    __syncthreads();
    bwd_tile_reduce<kN>(q, blk, c, par, sh, tid);
    __syncthreads();
  }
  if (valid) bwd_row_finish<kN>(q, w, sh, tid);
}

namespace {

dim3 grid_for(const ScanParams& p, int threads) {
  return dim3((unsigned)((total_rows(p) + threads - 1) / threads), (unsigned)p.n_par, (unsigned)p.n_groups);
}

dim3 states_grid(const ScanParams& p) {
  return dim3((unsigned)((total_rows(p) * p.dstate + kMaxThreads - 1) / kMaxThreads));
}

template <typename io_t, typename bc_t, int kN, bool kExact>
void launch_fwd(const ScanParams& p, cudaStream_t stream) {
  const int threads = p.threads;
  const bool partial = p.n_groups > 1;
  if (p.n_par <= 1) {
    if (partial) {
      selective_scan_fwd_kernel<io_t, bc_t, kN, kExact, kFull | kPartialOut><<<grid_for(p, threads), threads, 0,
                                                                              stream>>>(p);
    } else {
      selective_scan_fwd_kernel<io_t, bc_t, kN, kExact, kFull><<<grid_for(p, threads), threads, 0, stream>>>(p);
    }
  } else {
    selective_scan_fwd_kernel<io_t, bc_t, kN, kExact, kSummary><<<grid_for(p, threads), threads, 0, stream>>>(p);
    selective_scan_combine_kernel<<<states_grid(p), kMaxThreads, 0, stream>>>(
        p, p.tile_states, (int64_t)p.span * p.dim * p.dstate, false);
    if (partial) {
      selective_scan_fwd_kernel<io_t, bc_t, kN, kExact, kSpan | kPartialOut><<<grid_for(p, threads), threads, 0,
                                                                              stream>>>(p);
    } else {
      selective_scan_fwd_kernel<io_t, bc_t, kN, kExact, kSpan><<<grid_for(p, threads), threads, 0, stream>>>(p);
    }
  }
  if (partial) {
    const int64_t n = total_rows(p) * p.seqlen;
    selective_scan_finish_kernel<io_t><<<(unsigned)((n + kMaxThreads - 1) / kMaxThreads), kMaxThreads, 0,
                                         stream>>>(p);
  }
}

template <typename io_t, typename bc_t, int kN, bool kExact>
void launch_bwd(const ScanBwdParams& q, cudaStream_t stream) {
  const ScanParams& p = q.fwd;
  if (p.n_par > 1) {
    selective_scan_bwd_summary_kernel<io_t, bc_t, kN, kExact><<<grid_for(p, kBwdThreads), kBwdThreads, 0,
                                                                stream>>>(q);
    selective_scan_combine_kernel<<<states_grid(p), kMaxThreads, 0, stream>>>(
        p, q.carries, (int64_t)p.dim * p.dstate, true);
  }
  if (p.n_groups > 1) {
    selective_scan_bwd_kernel<io_t, bc_t, kN, kExact, true><<<grid_for(p, kBwdThreads), kBwdThreads, 0, stream>>>(q);
  } else {
    selective_scan_bwd_kernel<io_t, bc_t, kN, kExact, false><<<grid_for(p, kBwdThreads), kBwdThreads, 0, stream>>>(
        q);
  }
}

struct FwdLaunch {
  const ScanParams& p;
  cudaStream_t stream;
  template <typename io_t, typename bc_t, int kN>
  void run() const {
    if (exact_states(p, kN, (int)sizeof(bc_t))) {
      launch_fwd<io_t, bc_t, kN, true>(p, stream);
    } else {
      launch_fwd<io_t, bc_t, kN, false>(p, stream);
    }
  }
};

struct BwdLaunch {
  const ScanBwdParams& q;
  cudaStream_t stream;
  template <typename io_t, typename bc_t, int kN>
  void run() const {
    if (exact_states(q.fwd, kN, (int)sizeof(bc_t))) {
      launch_bwd<io_t, bc_t, kN, true>(q, stream);
    } else {
      launch_bwd<io_t, bc_t, kN, false>(q, stream);
    }
  }
};

// Calls f.run<io_t, bc_t, kGroupStates>() for the runtime types; false if unsupported. B/C are read in the
// I/O type (the binding casts them): one instantiation per I/O type (more states: more state groups).
template <typename F>
bool dispatch(DType io, DType bc, const F& f) {
  if (bc != io) return false;
  auto with_n = [&](auto io_tag) {
    using io_t = decltype(io_tag);
    f.template run<io_t, io_t, kGroupStates>();
    return true;
  };
  switch (io) {
    case DType::kFloat32: return with_n(float{});
#if !defined(VB_FP32_ONLY)  // a quicker build for looking at the fp32 kernels' code
    case DType::kFloat16: return with_n(__half{});
    case DType::kBFloat16: return with_n(__nv_bfloat16{});
#endif
    default: break;
  }
  return false;
}

bool valid(const ScanParams& p) {
  const bool config = p.chunk >= 1 && p.chunk <= kTile && p.span >= 1 && p.n_par >= 1 &&
                      p.n_chunks >= 1 && (int64_t)p.n_chunks * p.chunk >= p.seqlen &&
                      (int64_t)p.span * p.n_par >= p.n_chunks && p.tile_states != nullptr &&
                      (p.n_par == 1 || p.dt_sum != nullptr) && (p.threads == 32 || p.threads == 128) &&
                      p.n_groups == state_groups(p.dstate);
  return config && total_rows(p) * p.dstate < (int64_t)INT32_MAX && forward_positions_fit(p) && p.batch >= 0 &&
         p.dim >= 0 &&
         p.seqlen >= 0 && p.dstate >= 1 && p.dstate <= kMaxDState && p.channels_per_group >= 1;
}

bool valid_bwd(const ScanBwdParams& q) {
  const bool grouped = q.fwd.n_groups > 1;
  return q.scratch != nullptr && (q.fwd.n_par == 1 || q.carries != nullptr) && q.dA != nullptr &&
         positions_fit_int32(q.fwd.seqlen, q.dout_l_stride) &&
         q.dB != nullptr && q.dC != nullptr &&
         (!grouped || (q.du_part && q.ddelta_part && (!q.fwd.z || q.dz_part))) &&
         (grouped || (q.du_part == nullptr && q.ddelta_part == nullptr && q.dz_part == nullptr));
}

}  // namespace

int launch_selective_scan_fwd(const ScanParams& p, DType io, DType bc, void* stream) {
  if (!valid(p) || (p.n_groups > 1 && p.y_part == nullptr)) return -1;
  if (total_rows(p) == 0) return 0;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool ok = dispatch(io, bc, FwdLaunch{p, s});
  if (!ok) return -1;
  return (int)cudaGetLastError();
}

int launch_selective_scan_bwd(const ScanBwdParams& q, DType io, DType bc, void* stream) {
  if (!valid(q.fwd) || !valid_bwd(q)) return -1;
  if (total_rows(q.fwd) == 0) return 0;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool ok = dispatch(io, bc, BwdLaunch{q, s});
  if (!ok) return -1;
  return (int)cudaGetLastError();
}

}  // namespace vimbench_scan
