// Host harness for the CUDA scan kernels' code (float32 only): runs the per-row functions for every
// (batch, channel) row and span, and the backward's blocks as loops over their kBwdThreads rows with a plain
// buffer for the block's shared memory (each barrier a boundary between two loops over the rows), exactly
// in the kernels' order, so tests on a machine without a GPU check the kernels' indexing, strides, reverse
// order, tiles, spans, state groups, the combine, the block reductions and the sums over the partials that
// the torch binding makes (in the same order).
// Build: g++ -O2 -shared -fPIC selective_scan_cuda_host.cpp -o libscan_host.so; call through ctypes.
#include <type_traits>
#include <vector>

#include "selective_scan_cuda_backward.cuh"

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
  p.n_groups = state_groups(p.dstate);
  p.chunk = sizes[7];
  p.n_chunks = sizes[8];
  p.span = sizes[9];
  p.n_par = sizes[10];
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
  p.tile_states = static_cast<float*>(const_cast<void*>(ptrs[10]));
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

bool config_ok(const ScanParams& p) {
  return p.dstate >= 1 && p.dstate <= kMaxDState && p.chunk >= 1 && p.chunk <= kTile && p.span >= 1 &&
         p.n_par >= 1 && (int64_t)p.n_chunks * p.chunk >= p.seqlen && (int64_t)p.span * p.n_par >= p.n_chunks &&
         forward_positions_fit(p);
}

// launch_fwd's sequence: one full pass, or summary -> combine -> span pass; per state group, then the finish
// pass that sums the groups' partial outputs.
template <int kN, bool kExact>
void run_fwd(ScanParams& p) {
  std::vector<float> y_part(p.n_groups > 1 ? (size_t)p.n_groups * p.batch * p.dim * p.seqlen : 0);
  p.y_part = y_part.empty() ? nullptr : y_part.data();
  const bool partial = p.n_groups > 1;
  if (p.n_par == 1) {
    for (int sg = 0; sg < p.n_groups; ++sg)
      for_each_row(p, [&](int b, int e) {
        if (partial) {
          scan_row_forward<float, float, kN, kExact, kFull | kPartialOut>(p, b, e, 0, sg);
        } else {
          scan_row_forward<float, float, kN, kExact, kFull>(p, b, e, 0, sg);
        }
      });
  } else {
    std::vector<float> dt_sum((size_t)p.batch * p.n_par * p.dim);
    p.dt_sum = dt_sum.data();
    for (int sg = 0; sg < p.n_groups; ++sg)
      for (int par = 0; par < p.n_par; ++par)
        for_each_row(p, [&](int b, int e) {
          scan_row_forward<float, float, kN, kExact, kSummary>(p, b, e, par, sg);
        });
    for_each_row(p, [&](int b, int e) {
      for (int n = 0; n < p.dstate; ++n)
        combine_state(p, e, n, p.tile_states + tile_state_offset(p, b, e, 0), (int64_t)p.span * p.dim * p.dstate,
                      p.dt_sum + (int64_t)b * p.n_par * p.dim + e,
                      p.last_state + ((int64_t)b * p.dim + e) * p.dstate, false);
    });
    for (int sg = 0; sg < p.n_groups; ++sg)
      for (int par = 0; par < p.n_par; ++par)
        for_each_row(p, [&](int b, int e) {
          if (partial) {
            scan_row_forward<float, float, kN, kExact, kSpan | kPartialOut>(p, b, e, par, sg);
          } else {
            scan_row_forward<float, float, kN, kExact, kSpan>(p, b, e, par, sg);
          }
        });
    p.dt_sum = nullptr;
  }
  if (p.n_groups > 1) {
    for (int64_t row = 0; row < (int64_t)p.batch * p.dim; ++row)
      for (int t = 0; t < p.seqlen; ++t) finish_output<float>(p, row, t);
  }
  p.y_part = nullptr;
}

// out[i] = sum over the partial axis (`parts` slices of `n` floats) in order, as the binding's torch sums.
void sum_parts(const std::vector<float>& part, int64_t parts, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    float acc = 0.f;
    for (int64_t k = 0; k < parts; ++k) acc += part[k * n + i];
    out[i] = acc;
  }
}

// The caller's final gradients (ScanBwdParams' pointers on entry) from the partials the kernels write: what
// the torch binding allocates and sums (dB/dC: B's contiguous logical shape, `bc_elems` floats).
struct HostBwdOutputs {
  float *du, *ddelta, *dz, *dA, *dB, *dC, *dD, *dbias;
};

// launch_bwd's sequence; each block of the backward kernel as loops over its threads between barriers.
template <int kN, bool kExact>
void run_bwd(ScanBwdParams& q, int64_t bc_elems) {
  ScanParams& p = q.fwd;
  const HostBwdOutputs out{static_cast<float*>(q.du), static_cast<float*>(q.ddelta), static_cast<float*>(q.dz),
                           q.dA, q.dB, q.dC, q.dD, q.ddelta_bias};
  const int64_t rows = (int64_t)p.batch * p.dim, per_row = rows * p.seqlen, spans = (int64_t)p.batch * p.n_par;
  const bool grouped = p.n_groups > 1;
  std::vector<float> du_part(grouped ? p.n_groups * per_row : 0), ddelta_part(du_part.size());
  std::vector<float> dz_part(grouped && p.z ? p.n_groups * per_row : 0);
  if (grouped) {
    q.du = q.ddelta = q.dz = nullptr;
    q.du_part = du_part.data();
    q.ddelta_part = ddelta_part.data();
    q.dz_part = p.z ? dz_part.data() : nullptr;
  }
  const int slots = bc_partial_slots(p.channels_per_group);
  std::vector<float> dA((size_t)spans * p.dim * p.dstate), dB((size_t)slots * bc_elems, 0.f), dC(dB.size(), 0.f);
  std::vector<float> dD((size_t)spans * p.dim), dbias((size_t)p.n_groups * spans * p.dim);
  q.dA = dA.data();
  q.dB = dB.data();
  q.dC = dC.data();
  q.dB_slot_stride = q.dC_slot_stride = bc_elems;
  q.dD = out.dD ? dD.data() : nullptr;
  q.ddelta_bias = out.dbias ? dbias.data() : nullptr;

  std::vector<float> scratch(scan_bwd_scratch_floats(p.batch, p.dim, p.dstate, p.n_par));
  std::vector<float> carries((size_t)p.batch * p.n_par * p.dim * p.dstate), dt_sum((size_t)spans * p.dim);
  q.scratch = scratch.data();
  q.carries = carries.data();
  p.dt_sum = dt_sum.data();
  if (p.n_par > 1) {
    for (int sg = 0; sg < p.n_groups; ++sg)
      for (int par = 0; par < p.n_par; ++par)
        for_each_row(p, [&](int b, int e) { bwd_summary_row<float, float, kN, kExact>(q, b, e, par, sg); });
    for_each_row(p, [&](int b, int e) {
      for (int n = 0; n < p.dstate; ++n)
        combine_state(p, e, n, q.carries + carry_offset(p, b, e, 0), (int64_t)p.dim * p.dstate,
                      p.dt_sum + (int64_t)b * p.n_par * p.dim + e, nullptr, true);
    });
  }
  std::vector<float> shared(kBwdSharedFloats);
  std::vector<BwdRow<kN>> threads(kBwdThreads);
  for (int sg = 0; sg < p.n_groups; ++sg) {
    for (int64_t row0 = 0; row0 < rows; row0 += kBwdThreads) {
      for (int par = 0; par < p.n_par; ++par) {
        const BwdBlock blk = bwd_block_init(q, row0, sg);
        for (int tid = 0; tid < blk.nvalid; ++tid)
          bwd_row_init<kN>(q, (int)((row0 + tid) / p.dim), (int)((row0 + tid) % p.dim), par, sg, threads[tid],
                           shared.data(), tid);
        for (int c = span_hi(p, par) - 1; c >= span_lo(p, par); --c) {
          for (int tid = 0; tid < blk.nvalid; ++tid)
            if (grouped) {
              bwd_tile_walk<float, float, kN, kExact, true>(q, threads[tid], c, slab_slot<kN>(q, par, row0 + tid, sg),
                                                            shared.data(), tid);
            } else {
              bwd_tile_walk<float, float, kN, kExact, false>(q, threads[tid], c,
                                                             slab_slot<kN>(q, par, row0 + tid, sg), shared.data(), tid);
            }
          // __syncthreads()
          for (int tid = 0; tid < kBwdThreads; ++tid) bwd_tile_reduce<kN>(q, blk, c, par, shared.data(), tid);
          // __syncthreads()
        }
        for (int tid = 0; tid < blk.nvalid; ++tid) bwd_row_finish<kN>(q, threads[tid], shared.data(), tid);
      }
    }
  }
  // the binding's sums over the partial axes
  if (grouped) {
    sum_parts(du_part, p.n_groups, per_row, out.du);
    sum_parts(ddelta_part, p.n_groups, per_row, out.ddelta);
    if (out.dz) sum_parts(dz_part, p.n_groups, per_row, out.dz);
  }
  sum_parts(dA, spans, (int64_t)p.dim * p.dstate, out.dA);
  sum_parts(dB, slots, bc_elems, out.dB);
  sum_parts(dC, slots, bc_elems, out.dC);
  if (out.dD) sum_parts(dD, spans, p.dim, out.dD);
  if (out.dbias) sum_parts(dbias, (int64_t)p.n_groups * spans, p.dim, out.dbias);
  q.scratch = q.carries = p.dt_sum = nullptr;
}

template <typename Run>
void dispatch(const ScanParams& p, Run&& run) {
  if (exact_states(p, kGroupStates, (int)sizeof(float))) {
    run(std::integral_constant<int, kGroupStates>{}, std::true_type{});
  } else {
    run(std::integral_constant<int, kGroupStates>{}, std::false_type{});
  }
}

}  // namespace

extern "C" {

// sizes: batch, dim, seqlen, dstate, channels_per_group, softplus, reverse, chunk, n_chunks, span, n_par.
// ptrs: u, delta, A, B, C, D, z, delta_bias, out, last_state, tile_states. Returns 0, or -1 if unsupported.
int vb_scan_fwd_host(const int* sizes, const int64_t* strides, const void* const* ptrs) {
  ScanParams p = make_params(sizes, strides, ptrs);
  if (!config_ok(p)) return -1;
  dispatch(p, [&](auto n, auto exact) { run_fwd<decltype(n)::value, decltype(exact)::value>(p); });
  return 0;
}

// As vb_scan_fwd_host, tile_states being the forward's; bwd_ptrs: dout, du, ddelta, dz, dA, dB, dC, dD,
// ddelta_bias (float32; du, ddelta, dz contiguous (batch, dim, L), dA (dim, dstate), dB/dC contiguous in B's
// 4-D logical shape); bwd_strides: dout (3), dB (4), dC (4).
int vb_scan_bwd_host(const int* sizes, const int64_t* strides, const void* const* ptrs,
                     const int64_t* bwd_strides, const void* const* bwd_ptrs) {
  ScanBwdParams q;
  q.fwd = make_params(sizes, strides, ptrs);
  if (!config_ok(q.fwd)) return -1;
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
  const int64_t bc_elems = (int64_t)q.fwd.batch * (q.fwd.dim / q.fwd.channels_per_group) * q.fwd.dstate *
                           q.fwd.seqlen;
  dispatch(q.fwd, [&](auto n, auto exact) { run_bwd<decltype(n)::value, decltype(exact)::value>(q, bc_elems); });
  return 0;
}

}  // extern "C"
