// Torch binding of the selective-scan CUDA kernels: reads sizes and strides off the tensors, allocates
// outputs, launches on the current stream. Python (kernels/cuda_scan.py) has already normalized the inputs:
// u/delta/z share a dtype, A/D/delta_bias are float32, B/C are 4-D (batch, groups, N, L) views (3-D B/C
// unsqueezed, constant (E, N) B/C expanded with stride 0) in u's dtype.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <optional>
#include <vector>

#include "selective_scan_cuda.h"

namespace vs = vimbench_scan;

namespace {

vs::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return vs::DType::kFloat32;
    case at::kHalf: return vs::DType::kFloat16;
    case at::kBFloat16: return vs::DType::kBFloat16;
    default: TORCH_CHECK(false, "selective scan (cuda): unsupported dtype ", t.scalar_type());
  }
}

vs::ScanParams make_params(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                           const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                           const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                           bool softplus, bool reverse) {
  TORCH_CHECK(u.is_cuda() && u.dim() == 3, "u must be a (batch, dim, L) CUDA tensor");
  TORCH_CHECK(delta.sizes() == u.sizes() && delta.scalar_type() == u.scalar_type(), "delta must match u");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(1) && A.scalar_type() == at::kFloat,
              "A must be float32 (dim, N)");
  TORCH_CHECK(B.dim() == 4 && C.dim() == 4 && B.sizes() == C.sizes(), "B and C must be 4-D views of one shape");
  TORCH_CHECK(B.size(0) == u.size(0) && B.size(2) == A.size(1) && B.size(3) == u.size(2),
              "B/C must be (batch, groups, N, L)");
  TORCH_CHECK(B.size(1) >= 1 && u.size(1) % B.size(1) == 0, "channels must split evenly into B/C groups");
  TORCH_CHECK(B.scalar_type() == u.scalar_type() && C.scalar_type() == u.scalar_type(),
              "B and C must have u's dtype");
  TORCH_CHECK(A.size(1) >= 1 && A.size(1) <= vs::kMaxDState, "d_state must be in 1..", vs::kMaxDState);
  vs::ScanParams p;
  p.batch = u.size(0);
  p.dim = u.size(1);
  p.seqlen = u.size(2);
  p.dstate = A.size(1);
  p.channels_per_group = p.dim / B.size(1);
  p.delta_softplus = softplus;
  p.reverse = reverse;
  p.n_groups = vs::state_groups(p.dstate);
  p.u = u.data_ptr();
  p.delta = delta.data_ptr();
  p.A = A.data_ptr<float>();
  p.B = B.data_ptr();
  p.C = C.data_ptr();
  p.u_batch_stride = u.stride(0), p.u_dim_stride = u.stride(1), p.u_l_stride = u.stride(2);
  p.delta_batch_stride = delta.stride(0), p.delta_dim_stride = delta.stride(1);
  p.delta_l_stride = delta.stride(2);
  p.A_dim_stride = A.stride(0), p.A_n_stride = A.stride(1);
  p.B_batch_stride = B.stride(0), p.B_group_stride = B.stride(1), p.B_n_stride = B.stride(2);
  p.B_l_stride = B.stride(3);
  p.C_batch_stride = C.stride(0), p.C_group_stride = C.stride(1), p.C_n_stride = C.stride(2);
  p.C_l_stride = C.stride(3);
  if (D.has_value()) {
    TORCH_CHECK(D->scalar_type() == at::kFloat && D->numel() == p.dim, "D must be float32 (dim,)");
    p.D = D->data_ptr<float>();
    p.D_stride = D->stride(0);
  }
  if (delta_bias.has_value()) {
    TORCH_CHECK(delta_bias->scalar_type() == at::kFloat && delta_bias->numel() == p.dim,
                "delta_bias must be float32 (dim,)");
    p.delta_bias = delta_bias->data_ptr<float>();
    p.delta_bias_stride = delta_bias->stride(0);
  }
  if (z.has_value()) {
    TORCH_CHECK(z->sizes() == u.sizes() && z->scalar_type() == u.scalar_type(), "z must match u");
    p.z = z->data_ptr();
    p.z_batch_stride = z->stride(0), p.z_dim_stride = z->stride(1), p.z_l_stride = z->stride(2);
  }
  return p;
}

// The launch config (kernels/cuda_scan.launch_config): positions per tile, tiles, tiles per span, spans.
void set_config(vs::ScanParams& p, int64_t chunk, int64_t n_chunks, int64_t span, int64_t n_par) {
  TORCH_CHECK(chunk >= 1 && chunk <= vs::kTile && n_chunks >= 1 && span >= 1 && n_par >= 1 &&
                  n_chunks * chunk >= p.seqlen && span * n_par >= n_chunks,
              "selective scan (cuda): bad launch config");
  p.chunk = chunk;
  p.n_chunks = n_chunks;
  p.span = span;
  p.n_par = n_par;
}

void check_launch(int rc, const char* what) {
  TORCH_CHECK(rc == 0, "selective scan (cuda) ", what, " failed: ",
              rc < 0 ? "unsupported arguments" : cudaGetErrorString(static_cast<cudaError_t>(rc)));
}

std::vector<at::Tensor> fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                            const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                            const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                            bool softplus, bool reverse, int64_t chunk, int64_t n_chunks, int64_t span,
                            int64_t n_par, int64_t threads) {
  const c10::cuda::CUDAGuard guard(u.device());
  vs::ScanParams p = make_params(u, delta, A, B, C, D, z, delta_bias, softplus, reverse);
  set_config(p, chunk, n_chunks, span, n_par);
  TORCH_CHECK(threads == 32 || threads == 128, "selective scan (cuda): 32 or 128 threads per block");
  p.threads = threads;
  auto f32 = u.options().dtype(at::kFloat);
  at::Tensor out = at::empty_like(u, u.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor last = at::empty({u.size(0), u.size(1), A.size(1)}, f32);  // fully written: no zero-fill
  at::Tensor tiles = at::empty({u.size(0), n_chunks, u.size(1), A.size(1)}, f32);
  at::Tensor dt_sum = n_par > 1 ? at::empty({u.size(0), n_par, u.size(1)}, f32) : at::Tensor();
  // d_state > kGroupStates: each state group's sum_n C h, summed by the finish kernel (freed on return)
  at::Tensor y_part = p.n_groups > 1 ? at::empty({p.n_groups, p.batch, p.dim, p.seqlen}, f32) : at::Tensor();
  p.y_part = y_part.defined() ? y_part.data_ptr<float>() : nullptr;
  p.out = out.data_ptr();
  p.last_state = last.data_ptr<float>();
  p.tile_states = tiles.data_ptr<float>();
  p.dt_sum = dt_sum.defined() ? dt_sum.data_ptr<float>() : nullptr;
  p.out_batch_stride = out.stride(0), p.out_dim_stride = out.stride(1), p.out_l_stride = out.stride(2);
  check_launch(vs::launch_selective_scan_fwd(p, dtype_of(u), dtype_of(B), c10::cuda::getCurrentCUDAStream().stream()),
               "forward");
  return {out, last, tiles};
}

// Returns du, ddelta, dA, dB, dC (float32, B's 4-D shape), dD, dz, ddelta_bias (undefined when absent).
// The kernels write every reduction as float32 partials, one writer per element; the sums over the partial
// axis below (torch reductions: a fixed order) make two runs bitwise equal.
std::vector<at::Tensor> bwd(const at::Tensor& dout, const at::Tensor& u, const at::Tensor& delta,
                            const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                            const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                            const std::optional<at::Tensor>& delta_bias, bool softplus, bool reverse,
                            const at::Tensor& saved, int64_t chunk, int64_t n_chunks, int64_t span,
                            int64_t n_par) {
  const c10::cuda::CUDAGuard guard(u.device());
  vs::ScanBwdParams q;
  q.fwd = make_params(u, delta, A, B, C, D, z, delta_bias, softplus, reverse);
  vs::ScanParams& p = q.fwd;
  set_config(p, chunk, n_chunks, span, n_par);
  TORCH_CHECK(saved.scalar_type() == at::kFloat && saved.is_contiguous() &&
                  saved.sizes() == at::IntArrayRef({p.batch, n_chunks, p.dim, p.dstate}),
              "selective scan (cuda): saved tile states must be the forward's (batch, n_chunks, dim, dstate)");
  p.tile_states = saved.data_ptr<float>();
  TORCH_CHECK(dout.sizes() == u.sizes() && dout.scalar_type() == u.scalar_type(), "dout must match u");
  auto contiguous = u.options().memory_format(at::MemoryFormat::Contiguous);
  auto f32 = u.options().dtype(at::kFloat);
  const bool grouped = p.n_groups > 1;
  const std::vector<int64_t> part_shape{p.n_groups, p.batch, p.dim, p.seqlen};
  at::Tensor du, ddelta, dz, du_part, ddelta_part, dz_part;
  if (grouped) {  // per state group float32 partials, summed below
    du_part = at::empty(part_shape, f32), ddelta_part = at::empty(part_shape, f32);
    dz_part = z.has_value() ? at::empty(part_shape, f32) : at::Tensor();
  } else {
    du = at::empty(u.sizes(), contiguous), ddelta = at::empty(u.sizes(), contiguous);
    dz = z.has_value() ? at::empty(u.sizes(), contiguous) : at::Tensor();
  }
  // (batch, n_par, dim, dstate): every element written once (no zero-fill)
  at::Tensor dA_part = at::empty({p.batch, n_par, p.dim, p.dstate}, f32);
  // dB/dC: one slot per 32-row block touching a (batch, B/C group); all written when the groups are whole
  // blocks (Vim), else zero-filled
  const int slots = vs::bc_partial_slots(p.channels_per_group);
  const bool whole = p.channels_per_group % vs::kBwdThreads == 0;
  std::vector<int64_t> bc_shape{slots};
  bc_shape.insert(bc_shape.end(), B.sizes().begin(), B.sizes().end());
  at::Tensor dB_part = whole ? at::empty(bc_shape, f32) : at::zeros(bc_shape, f32);
  at::Tensor dC_part = whole ? at::empty(bc_shape, f32) : at::zeros(bc_shape, f32);
  at::Tensor dD_part = D.has_value() ? at::empty({p.batch, n_par, p.dim}, f32) : at::Tensor();
  at::Tensor dbias_part =
      delta_bias.has_value() ? at::empty({p.n_groups, p.batch, n_par, p.dim}, f32) : at::Tensor();
  at::Tensor scratch = at::empty({vs::scan_bwd_scratch_floats(p.batch, p.dim, p.dstate, n_par)}, f32);
  at::Tensor carries = n_par > 1 ? at::empty({p.batch, n_par, p.dim, p.dstate}, f32) : at::Tensor();
  at::Tensor dt_sum = n_par > 1 ? at::empty({p.batch, n_par, p.dim}, f32) : at::Tensor();
  q.carries = carries.defined() ? carries.data_ptr<float>() : nullptr;
  p.dt_sum = dt_sum.defined() ? dt_sum.data_ptr<float>() : nullptr;
  q.dout = dout.data_ptr();
  q.dout_batch_stride = dout.stride(0), q.dout_dim_stride = dout.stride(1), q.dout_l_stride = dout.stride(2);
  auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; };
  auto fptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
  q.du = ptr(du);
  q.ddelta = ptr(ddelta);
  q.dz = ptr(dz);
  q.du_part = fptr(du_part);
  q.ddelta_part = fptr(ddelta_part);
  q.dz_part = fptr(dz_part);
  q.dA = dA_part.data_ptr<float>();
  q.dB = dB_part.data_ptr<float>();
  q.dC = dC_part.data_ptr<float>();
  q.dB_slot_stride = dB_part.stride(0), q.dB_batch_stride = dB_part.stride(1);
  q.dB_group_stride = dB_part.stride(2), q.dB_n_stride = dB_part.stride(3), q.dB_l_stride = dB_part.stride(4);
  q.dC_slot_stride = dC_part.stride(0), q.dC_batch_stride = dC_part.stride(1);
  q.dC_group_stride = dC_part.stride(2), q.dC_n_stride = dC_part.stride(3), q.dC_l_stride = dC_part.stride(4);
  q.dD = fptr(dD_part);
  q.ddelta_bias = fptr(dbias_part);
  q.scratch = scratch.data_ptr<float>();
  check_launch(vs::launch_selective_scan_bwd(q, dtype_of(u), dtype_of(B), c10::cuda::getCurrentCUDAStream().stream()),
               "backward");
  if (grouped) {
    du = du_part.sum(0).to(u.scalar_type());
    ddelta = ddelta_part.sum(0).to(u.scalar_type());
    if (dz_part.defined()) dz = dz_part.sum(0).to(u.scalar_type());
  }
  at::Tensor dA = dA_part.view({-1, p.dim, p.dstate}).sum(0);
  at::Tensor dB = slots > 1 ? dB_part.sum(0) : dB_part[0];
  at::Tensor dC = slots > 1 ? dC_part.sum(0) : dC_part[0];
  at::Tensor dD = dD_part.defined() ? dD_part.view({-1, p.dim}).sum(0) : at::Tensor();
  at::Tensor dbias = dbias_part.defined() ? dbias_part.view({-1, p.dim}).sum(0) : at::Tensor();
  return {du, ddelta, dA, dB, dC, dD, dz, dbias};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd", &fwd, "selective scan forward (out, last_state, tile_states)");
  m.def("bwd", &bwd, "selective scan backward (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)");
}
