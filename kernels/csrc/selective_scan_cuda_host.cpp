// Host harness for the CUDA scan kernels' per-row code (float32 only): runs scan_row_forward /
// scan_row_backward for every (batch, channel) row, exactly as the kernels' threads do, so tests on a
// machine without a GPU check the kernels' indexing, strides, reverse order, chunked recompute and math.
// Build: g++ -O2 -shared -fPIC selective_scan_cuda_host.cpp -o libscan_host.so; call through ctypes.
#include <vector>

#include "selective_scan_cuda_core.cuh"

using namespace vimbench_scan;

namespace {

// strides: u, delta, z, out: 3 each (batch, dim, l); A: 2; B, C: 4 each (batch, group, n, l); D, bias: 1 each
ScanParams make_params(const int* sizes, const int64_t* s, const void* const* ptrs) {
  ScanParams p;
  p.batch = sizes[0];
  p.dim = sizes[1];
  p.seqlen = sizes[2];
  p.dstate = sizes[3];
  p.channels_per_group = sizes[4];
  p.delta_softplus = sizes[5] != 0;
  p.reverse = sizes[6] != 0;
  p.u = ptrs[0];
  p.delta = ptrs[1];
  p.A = static_cast<const float*>(ptrs[2]);
  p.B = ptrs[3];
  p.C = ptrs[4];
  p.D = static_cast<const float*>(ptrs[5]);
  p.z = ptrs[6];
  p.delta_bias = static_cast<const float*>(ptrs[7]);
  p.out = const_cast<void*>(ptrs[8]);
  p.last_state = static_cast<float*>(const_cast<void*>(ptrs[9]));
  p.u_batch_stride = s[0], p.u_dim_stride = s[1], p.u_l_stride = s[2];
  p.delta_batch_stride = s[3], p.delta_dim_stride = s[4], p.delta_l_stride = s[5];
  p.z_batch_stride = s[6], p.z_dim_stride = s[7], p.z_l_stride = s[8];
  p.out_batch_stride = s[9], p.out_dim_stride = s[10], p.out_l_stride = s[11];
  p.A_dim_stride = s[12], p.A_n_stride = s[13];
  p.B_batch_stride = s[14], p.B_group_stride = s[15], p.B_n_stride = s[16], p.B_l_stride = s[17];
  p.C_batch_stride = s[18], p.C_group_stride = s[19], p.C_n_stride = s[20], p.C_l_stride = s[21];
  p.D_stride = s[22], p.delta_bias_stride = s[23];
  return p;
}

template <typename Row>
void for_each_row(const ScanParams& p, Row&& row) {
  for (int b = 0; b < p.batch; ++b)
    for (int e = 0; e < p.dim; ++e) row(b, e);
}

}  // namespace

extern "C" {

// sizes: batch, dim, seqlen, dstate, channels_per_group, softplus, reverse. Returns 0, or -1 if d_state > 64.
int vb_scan_fwd_host(const int* sizes, const int64_t* strides, const void* const* ptrs) {
  const ScanParams p = make_params(sizes, strides, ptrs);
  if (p.dstate < 1 || p.dstate > kMaxDState) return -1;
  for_each_row(p, [&](int b, int e) {
    if (exact_states(p, 16, (int)sizeof(float))) {
      scan_row_forward<float, float, 16, true>(p, b, e);
    } else if (p.dstate <= 16) {
      scan_row_forward<float, float, 16>(p, b, e);
    } else {
      scan_row_forward<float, float, kMaxDState>(p, b, e);
    }
  });
  return 0;
}

// bwd_ptrs: dout, du, ddelta, dz, dA, dB, dC, dD, ddelta_bias; bwd_strides: dout (3), dB (4), dC (4).
int vb_scan_bwd_host(const int* sizes, const int64_t* strides, const void* const* ptrs,
                     const int64_t* bwd_strides, const void* const* bwd_ptrs) {
  ScanBwdParams q;
  q.fwd = make_params(sizes, strides, ptrs);
  const ScanParams& p = q.fwd;
  if (p.dstate < 1 || p.dstate > kMaxDState) return -1;
  q.dout = bwd_ptrs[0];
  q.du = const_cast<void*>(bwd_ptrs[1]);
  q.ddelta = const_cast<void*>(bwd_ptrs[2]);
  q.dz = const_cast<void*>(bwd_ptrs[3]);
  q.dA = static_cast<float*>(const_cast<void*>(bwd_ptrs[4]));
  q.dB = static_cast<float*>(const_cast<void*>(bwd_ptrs[5]));
  q.dC = static_cast<float*>(const_cast<void*>(bwd_ptrs[6]));
  q.dD = static_cast<float*>(const_cast<void*>(bwd_ptrs[7]));
  q.ddelta_bias = static_cast<float*>(const_cast<void*>(bwd_ptrs[8]));
  const int64_t* s = bwd_strides;
  q.dout_batch_stride = s[0], q.dout_dim_stride = s[1], q.dout_l_stride = s[2];
  q.dB_batch_stride = s[3], q.dB_group_stride = s[4], q.dB_n_stride = s[5], q.dB_l_stride = s[6];
  q.dC_batch_stride = s[7], q.dC_group_stride = s[8], q.dC_n_stride = s[9], q.dC_l_stride = s[10];
  std::vector<float> scratch(scan_bwd_scratch_floats(p.batch, p.dim, p.seqlen, p.dstate));
  q.scratch = scratch.data();
  for_each_row(p, [&](int b, int e) {
    if (p.dstate <= 16) {
      scan_row_backward<float, float, 16>(q, b, e, false);
    } else {
      scan_row_backward<float, float, kMaxDState>(q, b, e, false);
    }
  });
  return 0;
}

}  // extern "C"
