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

#include "selective_scan_cuda_core.cuh"

namespace vimbench_scan {

constexpr int kThreads = 128;

template <typename io_t, typename bc_t, int kN, bool kExact>
__global__ void __launch_bounds__(kThreads) selective_scan_fwd_kernel(ScanParams p) {
  const int64_t row = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= (int64_t)p.batch * p.dim) return;
  scan_row_forward<io_t, bc_t, kN, kExact>(p, (int)(row / p.dim), (int)(row % p.dim));
}

template <typename io_t, typename bc_t, int kN>
__global__ void __launch_bounds__(kThreads) selective_scan_bwd_kernel(ScanBwdParams q) {
  const int64_t row = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t rows = (int64_t)q.fwd.batch * q.fwd.dim;
  if (row >= rows) return;
  // blocks are whole warps, so a warp holds rows first..first+31; it may reduce dB/dC over its lanes when
  // all 32 rows exist and share one batch index and one B/C group
  const int64_t first = row - (threadIdx.x & 31), last = first + 31;
  const int dim = q.fwd.dim, cpg = q.fwd.channels_per_group;
  const bool warp_uniform = last < rows && first / dim == last / dim &&
                            (int)(first % dim) / cpg == (int)(last % dim) / cpg;
  scan_row_backward<io_t, bc_t, kN>(q, (int)(row / dim), (int)(row % dim), warp_uniform);
}

namespace {

dim3 grid_for(const ScanParams& p) {
  const int64_t rows = (int64_t)p.batch * p.dim;
  return dim3((unsigned)((rows + kThreads - 1) / kThreads));
}

struct FwdLaunch {
  const ScanParams& p;
  cudaStream_t stream;
  template <typename io_t, typename bc_t, int kN>
  void run() const {
    if (exact_states(p, kN, (int)sizeof(bc_t))) {
      selective_scan_fwd_kernel<io_t, bc_t, kN, true><<<grid_for(p), kThreads, 0, stream>>>(p);
    } else {
      selective_scan_fwd_kernel<io_t, bc_t, kN, false><<<grid_for(p), kThreads, 0, stream>>>(p);
    }
  }
};

struct BwdLaunch {
  const ScanBwdParams& q;
  cudaStream_t stream;
  template <typename io_t, typename bc_t, int kN>
  void run() const {
    selective_scan_bwd_kernel<io_t, bc_t, kN><<<grid_for(q.fwd), kThreads, 0, stream>>>(q);
  }
};

// Calls f.run<io_t, bc_t, kN>() for the runtime types and d_state; false if unsupported. B/C are read in
// the I/O type (the binding casts them): one instantiation per I/O type and register budget.
template <typename F>
bool dispatch(DType io, DType bc, int dstate, const F& f) {
  if (bc != io) return false;
  auto with_n = [&](auto io_tag) {
    using io_t = decltype(io_tag);
    if (dstate <= 16) {
      f.template run<io_t, io_t, 16>();
    } else {
      f.template run<io_t, io_t, kMaxDState>();
    }
    return true;
  };
  switch (io) {
    case DType::kFloat32: return with_n(float{});
    case DType::kFloat16: return with_n(__half{});
    case DType::kBFloat16: return with_n(__nv_bfloat16{});
  }
  return false;
}

bool valid(const ScanParams& p) {
  return p.batch >= 0 && p.dim >= 0 && p.seqlen >= 0 && p.dstate >= 1 && p.dstate <= kMaxDState &&
         p.channels_per_group >= 1;
}

}  // namespace

int launch_selective_scan_fwd(const ScanParams& p, DType io, DType bc, void* stream) {
  if (!valid(p)) return -1;
  if ((int64_t)p.batch * p.dim == 0) return 0;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool ok = dispatch(io, bc, p.dstate, FwdLaunch{p, s});
  if (!ok) return -1;
  return (int)cudaGetLastError();
}

int launch_selective_scan_bwd(const ScanBwdParams& q, DType io, DType bc, void* stream) {
  if (!valid(q.fwd) || q.scratch == nullptr) return -1;
  if ((int64_t)q.fwd.batch * q.fwd.dim == 0) return 0;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool ok = dispatch(io, bc, q.fwd.dstate, BwdLaunch{q, s});
  if (!ok) return -1;
  return (int)cudaGetLastError();
}

}  // namespace vimbench_scan
