// Selective scan (Mamba-1 S6) on CUDA: parameters and launchers, in plain C++ (no torch, no CUDA headers),
// so the kernel translation unit compiles with nvcc alone and the torch binding only fills these structs.
#pragma once

#include <cstdint>

namespace vimbench_scan {

// Element types of u / delta / z / out; B / C are read in the same type (the binding casts them).
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Largest d_state (the Triton backend's too). One thread holds kGroupStates of a channel's states; past that
// the states are split into groups, one thread per (row, group): grid z = group, and what sums over states
// (out; du, ddelta, dz, d(delta_bias)) is written as float32 partials per group and summed afterwards.
constexpr int kMaxDState = 256;
constexpr int kGroupStates = 16;
inline int state_groups(int dstate) { return (dstate + kGroupStates - 1) / kGroupStates; }
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

  // Launch config (kernels/launch_rules.pick_config, shared with the Triton backend): tiles of `chunk`
  // positions; each program scans `span` tiles, `n_par` spans side by side (chunk-parallel when > 1).
  int chunk = kTile, n_chunks = 1, span = 1, n_par = 1;
  int threads = 128;  // forward threads per block (one channel each)
  int n_groups = 1;   // state_groups(dstate)
  float* y_part = nullptr;  // n_groups > 1: (n_groups, batch, dim, seqlen) float32 sum_n C h per group
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

// Backward: per-channel outputs in the input dtype (float32 partials per state group when n_groups > 1);
// every reduction (over batch, spans, positions or channels of a B/C group) is written as float32 partials,
// each element by exactly one thread, that the caller sums in a fixed order (torch sums): no atomics, so
// two runs are bitwise equal. Scratch sized by scan_bwd_scratch_floats.
struct ScanBwdParams {
  ScanParams fwd;
  const void* dout = nullptr;
  int64_t dout_batch_stride = 0, dout_dim_stride = 0, dout_l_stride = 0;
  void* du = nullptr;      // contiguous (batch, dim, seqlen), input dtype (n_groups == 1)
  void* ddelta = nullptr;  // same
  void* dz = nullptr;      // same, when z is given
  // n_groups > 1: (n_groups, batch, dim, seqlen) float32 partials instead of du / ddelta / dz
  float* du_part = nullptr;
  float* ddelta_part = nullptr;
  float* dz_part = nullptr;
  float* dA = nullptr;  // (batch, n_par, dim, dstate): each (row, span)'s dA
  // dB/dC: (bc_slots, B's logical shape) float32 partials: slot s of (batch, group) is the s-th 32-row
  // block touching it (bwd_block_slot); strides of one slot below
  float* dB = nullptr;
  float* dC = nullptr;
  int64_t dB_slot_stride = 0, dB_batch_stride = 0, dB_group_stride = 0, dB_n_stride = 0, dB_l_stride = 0;
  int64_t dC_slot_stride = 0, dC_batch_stride = 0, dC_group_stride = 0, dC_n_stride = 0, dC_l_stride = 0;
  float* dD = nullptr;           // (batch, n_par, dim), when D is given (written by state group 0)
  float* ddelta_bias = nullptr;  // (n_groups, batch, n_par, dim), when delta_bias is given
  // fwd.tile_states: the forward's saved tile start states (read only here)
  float* scratch = nullptr;  // slab: per (span, row) one tile of states and decays/adjoints
  float* carries = nullptr;  // (batch, n_par, dim, dstate): adjoint carry entering each span (n_par > 1)
};

// Floats of the backward's slab: per (state group, span, row) kTile steps x (h | decay, then adjoint) x
// kGroupStates.
inline int64_t scan_bwd_scratch_floats(int batch, int dim, int dstate, int n_par) {
  return (int64_t)batch * dim * n_par * state_groups(dstate) * kTile * 2 * kGroupStates;
}

// dB/dC partial slots: the most kBwdThreads-row blocks that touch one (batch, B/C group) of
// `channels_per_group` consecutive rows (its first row's offset in a block is a multiple of
// gcd(channels_per_group, kBwdThreads)). Every slot of every (batch, group) is written iff
// channels_per_group % kBwdThreads == 0 (Vim); else the caller zero-fills the partials.
inline int bc_partial_slots(int channels_per_group) {
  int a = channels_per_group, b = kBwdThreads;
  while (b) {
    const int t = a % b;
    a = b;
    b = t;
  }
  return (kBwdThreads - a + channels_per_group - 1) / kBwdThreads + 1;
}

// Launch on `stream` (a cudaStream_t, passed as void* to keep CUDA types out of this header).
// Return 0 on success, else a cudaError_t value; unsupported arguments return -1.
int launch_selective_scan_fwd(const ScanParams& params, DType io_type, DType bc_type, void* stream);
int launch_selective_scan_bwd(const ScanBwdParams& params, DType io_type, DType bc_type, void* stream);

}  // namespace vimbench_scan
