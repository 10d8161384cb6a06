// Selective scan (Mamba-1 S6) on CUDA: parameters and launchers, in plain C++ (no torch, no CUDA headers),
// so the kernel translation unit compiles with nvcc alone and the torch binding only fills these structs.
#pragma once

#include <cstdint>

namespace vimbench_scan {

// Element types of u / delta / z / out; B / C are read in the same type (the binding casts them).
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Largest d_state the kernels keep in registers.
constexpr int kMaxDState = 64;
// Most positions per tile: the forward saves every tile's start state, the backward works tile by tile
// (the launch config's `chunk` is min(kTile, L)).
constexpr int kTile = 16;
// Threads per block of the backward (one warp: its dB/dC reduction runs over 32 channels).
constexpr int kBwdThreads = 32;

// Strides are in elements, so any layout (transposed, sliced) runs without a copy.
struct ScanParams {
  int batch = 0, dim = 0, seqlen = 0, dstate = 0;
  // B/C: channel e reads group e / channels_per_group (1 for constant (E, N) B/C, indexed by channel).
  int channels_per_group = 1;
  bool delta_softplus = false, reverse = false;

  const void* u = nullptr;
  const void* delta = nullptr;
  const float* A = nullptr;
  const void* B = nullptr;
  const void* C = nullptr;
  const float* D = nullptr;           // optional
  const void* z = nullptr;            // optional
  const float* delta_bias = nullptr;  // optional
  void* out = nullptr;
  float* last_state = nullptr;  // (batch, dim, dstate) contiguous

  // Launch config (kernels/triton_common.pick_config, shared with the Triton backend): tiles of `chunk`
  // positions; each program scans `span` tiles, `n_par` spans side by side (chunk-parallel when > 1).
  int chunk = kTile, n_chunks = 1, span = 1, n_par = 1;
  int threads = 128;  // forward threads per block (one channel each)
  float* tile_states = nullptr;  // (batch, n_chunks, dim, dstate) float32: every tile's start state
  float* dt_sum = nullptr;       // (batch, n_par, dim) float32: sum(dt) per span (chunk-parallel only)

  int64_t u_batch_stride = 0, u_dim_stride = 0, u_l_stride = 0;
  int64_t delta_batch_stride = 0, delta_dim_stride = 0, delta_l_stride = 0;
  int64_t z_batch_stride = 0, z_dim_stride = 0, z_l_stride = 0;
  int64_t out_batch_stride = 0, out_dim_stride = 0, out_l_stride = 0;
  int64_t A_dim_stride = 0, A_n_stride = 0;
  int64_t B_batch_stride = 0, B_group_stride = 0, B_n_stride = 0, B_l_stride = 0;
  int64_t C_batch_stride = 0, C_group_stride = 0, C_n_stride = 0, C_l_stride = 0;
  int64_t D_stride = 0, delta_bias_stride = 0;
};

// Backward: per-channel outputs in the input dtype, reductions (over batch, positions or channels of a
// group) accumulated in float32 buffers that the caller zeroes; scratch sized by scan_bwd_scratch_floats.
struct ScanBwdParams {
  ScanParams fwd;
  const void* dout = nullptr;
  int64_t dout_batch_stride = 0, dout_dim_stride = 0, dout_l_stride = 0;
  void* du = nullptr;      // contiguous (batch, dim, seqlen), input dtype
  void* ddelta = nullptr;  // same
  void* dz = nullptr;      // same, when z is given
  float* dA = nullptr;     // (dim, dstate) contiguous
  float* dB = nullptr;     // B's logical shape, contiguous float32: strides below
  float* dC = nullptr;
  int64_t dB_batch_stride = 0, dB_group_stride = 0, dB_n_stride = 0, dB_l_stride = 0;
  int64_t dC_batch_stride = 0, dC_group_stride = 0, dC_n_stride = 0, dC_l_stride = 0;
  float* dD = nullptr;          // (dim,), when D is given
  float* ddelta_bias = nullptr;  // (dim,), when delta_bias is given
  // fwd.tile_states: the forward's saved tile start states (read only here)
  float* scratch = nullptr;  // slab: per (span, row) one tile of states and decays/adjoints
  float* carries = nullptr;  // (batch, n_par, dim, dstate): adjoint carry entering each span (n_par > 1)
};

// Register budget (states per thread) of the instantiation that runs `dstate` states.
inline int state_slots(int dstate) { return dstate <= 16 ? 16 : kMaxDState; }

// Floats of the backward's slab: per (span, row) kTile steps x (h | decay, then adjoint) x state slots.
inline int64_t scan_bwd_scratch_floats(int batch, int dim, int dstate, int n_par) {
  return (int64_t)batch * dim * n_par * kTile * 2 * state_slots(dstate);
}

// Launch on `stream` (a cudaStream_t, passed as void* to keep CUDA types out of this header).
// Return 0 on success, else a cudaError_t value; unsupported arguments return -1.
int launch_selective_scan_fwd(const ScanParams& params, DType io_type, DType bc_type, void* stream);
int launch_selective_scan_bwd(const ScanBwdParams& params, DType io_type, DType bc_type, void* stream);

}  // namespace vimbench_scan
