// Selective scan (Mamba-1 semantics, plus reverse=True) on CPU: forward and backward.
//
// Built on first use by vimbench/kernels/cpu_scan.py with torch.utils.cpp_extension.load; registers the ops
// torch.ops.vimbench_cpu_scan.fwd / .bwd, .conv1d_silu / .add_rms_norm (cpu_scan_block_ops.h), .vim_block
// (a whole Vim block for inference, cpu_scan_vim_block.h), and
// .isa / .float_lanes (what the build vectorises for). The
// Python side prepares the inputs: everything in one compute dtype (float or double), B and C laid out as
// (batch, groups, L, N) with unit N-stride so the state update is a contiguous vector op; u, delta, z, dout
// may have any strides. Outputs are preallocated contiguous.
//
// Forward: a tile of 64 bytes of channels (16 floats: one AVX-512 vector, two AVX2 ones) of one group scans
// together, one channel per vector lane, so exp(delta*A), the state update and the output sum are lane-wise
// vector ops with no horizontal sums. Backward: one row at a time, the N states in vector lanes; it
// recomputes the row's states (L*N values per thread, never the whole (B, E, L, N) tensor) and runs the
// adjoint scan. dB/dC are summed per block of channels and the blocks reduced in a fixed order: gradients
// are deterministic and do not depend on the thread count. Work goes to torch's threads (at::parallel_for)
// through a shared counter, so a core taken by another process does not stall the call.
// Vector code is explicit (at::vec::Vectorized, cpu_scan_math.h): the build defines ATen's CPU_CAPABILITY
// macros for the running CPU, so the same source gives AVX-512, AVX2, NEON or ATen's portable vectors.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <vector>

#include "cpu_scan_backward.h"
#include "cpu_scan_block_ops.h"
#include "cpu_scan_forward.h"
#include "cpu_scan_vim_block.h"

namespace vimbench_cpu_scan {

template <typename T>
void dispatch_backward(const ScanInputs<T>& in, const GradOutputs<T>& go) {
  if (in.nstate == 16) {
    backward_impl<T, 16>(in, go);
  } else {
    backward_impl<T, 0>(in, go);
  }
}

void scan_fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
              const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
              const std::optional<at::Tensor>& delta_bias, bool delta_softplus, bool reverse, at::Tensor& out,
              at::Tensor& last_state) {
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "cpu scan computes in float32 or float64");
  for (const at::Tensor* t : {&delta, &A, &B, &C}) TORCH_CHECK(t->scalar_type() == dtype, "mixed dtypes");
  TORCH_CHECK(u.device().is_cpu(), "cpu scan needs CPU tensors");
  AT_DISPATCH_FLOATING_TYPES(dtype, "vimbench_cpu_scan_fwd", [&] {
    const auto in = make_inputs<scalar_t>(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse);
    check_output(out, dtype, {in.batch, in.dim, in.length}, "out");
    check_output(last_state, dtype, {in.batch, in.dim, in.nstate}, "last_state");
    forward_impl<scalar_t>(in, out.data_ptr<scalar_t>(), last_state.data_ptr<scalar_t>());
  });
}

void scan_bwd(const at::Tensor& dout, const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
              const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
              const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
              bool delta_softplus, bool reverse, int64_t channel_block, at::Tensor& du, at::Tensor& ddelta,
              at::Tensor& dA, at::Tensor& dB, at::Tensor& dC, at::Tensor& dD, at::Tensor& dz,
              at::Tensor& dbias) {
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "cpu scan computes in float32 or float64");
  for (const at::Tensor* t : {&dout, &delta, &A, &B, &C}) TORCH_CHECK(t->scalar_type() == dtype, "mixed dtypes");
  TORCH_CHECK(channel_block > 0, "channel_block must be positive");
  AT_DISPATCH_FLOATING_TYPES(dtype, "vimbench_cpu_scan_bwd", [&] {
    const auto in = make_inputs<scalar_t>(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse);
    GradOutputs<scalar_t> go;
    go.dout = strided3(dout, in, "dout");
    go.channel_block = channel_block;
    go.blocks = (in.dim / in.groups + channel_block - 1) / channel_block;
    const std::vector<int64_t> row_shape{in.batch, in.dim, in.length};
    const std::vector<int64_t> block_shape{in.batch, in.groups, go.blocks, in.length, in.nstate};
    check_output(du, dtype, row_shape, "du");
    check_output(ddelta, dtype, row_shape, "ddelta");
    check_output(dA, dtype, {in.batch, in.dim, in.nstate}, "dA");
    check_output(dB, dtype, block_shape, "dB");
    check_output(dC, dtype, block_shape, "dC");
    check_output(dD, dtype, {in.batch, in.dim}, "dD");
    check_output(dbias, dtype, {in.batch, in.dim}, "dbias");
    if (z.has_value()) check_output(dz, dtype, row_shape, "dz");
    go.du = du.data_ptr<scalar_t>();
    go.ddelta = ddelta.data_ptr<scalar_t>();
    go.dz = z.has_value() ? dz.data_ptr<scalar_t>() : nullptr;
    go.dA = dA.data_ptr<scalar_t>();
    go.dD = dD.data_ptr<scalar_t>();
    go.dbias = dbias.data_ptr<scalar_t>();
    go.dB = dB.data_ptr<scalar_t>();
    go.dC = dC.data_ptr<scalar_t>();
    dispatch_backward<scalar_t>(in, go);
  });
}

void conv1d_silu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                 bool reverse, bool activation, at::Tensor& out) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat, "conv1d_silu: float32");
  TORCH_CHECK(x.dim() == 3 && weight.dim() == 2 && weight.size(0) == x.size(1) && weight.is_contiguous(),
              "conv1d_silu: x (batch, dim, L), contiguous weight (dim, K)");
  const int64_t batch = x.size(0), dim = x.size(1), length = x.size(2);
  check_output(out, at::kFloat, {batch, dim, length}, "out");
  Conv1dJob<float> job;
  job.x = {x.const_data_ptr<float>(), x.stride(0), x.stride(1), x.stride(2)};
  job.batch = batch;
  job.dim = dim;
  job.length = length;
  job.width = weight.size(1);
  job.weight = weight.const_data_ptr<float>();
  job.bias = vector_or_null<float>(bias, dim, "bias");
  job.reverse = reverse;
  job.activation = activation;
  job.out = out.data_ptr<float>();
  conv1d_silu_jobs(&job, 1);
}

void add_rms_norm(const at::Tensor& x, const std::optional<at::Tensor>& residual, const at::Tensor& weight,
                  double eps, at::Tensor& out, at::Tensor& res) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous(), "add_rms_norm: contiguous float32 x");
  const int64_t dim = x.size(-1), rows = x.numel() / std::max<int64_t>(dim, 1);
  TORCH_CHECK(!residual || (residual->scalar_type() == at::kFloat && residual->is_contiguous() &&
                            residual->sizes() == x.sizes()), "add_rms_norm: residual like x");
  check_output(out, at::kFloat, x.sizes(), "out");
  check_output(res, at::kFloat, x.sizes(), "res");
  add_rms_norm_impl<float>(x.const_data_ptr<float>(), residual ? residual->const_data_ptr<float>() : nullptr,
                           vector_or_null<float>(weight, dim, "weight"), eps, rows, dim, out.data_ptr<float>(),
                           res.data_ptr<float>());
}

std::string isa() { return kIsa; }
int64_t float_lanes() { return Vec<float>::size(); }

}  // namespace vimbench_cpu_scan

TORCH_LIBRARY(vimbench_cpu_scan, m) {
  m.def("isa() -> str", &vimbench_cpu_scan::isa);
  m.def("float_lanes() -> int", &vimbench_cpu_scan::float_lanes);
  m.def("conv1d_silu(Tensor x, Tensor weight, Tensor? bias, bool reverse, bool activation, Tensor(a!) out) -> ()");
  m.def(
      "vim_block(Tensor hidden, Tensor? residual, Tensor norm_weight, float eps, Tensor in_proj, "
      "Tensor out_proj, Tensor[] fwd, Tensor[] bwd, int dt_rank) -> (Tensor, Tensor)");
  m.def("add_rms_norm(Tensor x, Tensor? residual, Tensor weight, float eps, Tensor(a!) out, Tensor(b!) res) -> ()");
  m.def(
      "fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
      "bool delta_softplus, bool reverse, Tensor(a!) out, Tensor(b!) last_state) -> ()",
      &vimbench_cpu_scan::scan_fwd);
  m.def(
      "bwd(Tensor dout, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool delta_softplus, bool reverse, int channel_block, Tensor(a!) du, "
      "Tensor(b!) ddelta, Tensor(c!) dA, Tensor(d!) dB, Tensor(e!) dC, Tensor(f!) dD, Tensor(g!) dz, "
      "Tensor(h!) dbias) -> ()",
      &vimbench_cpu_scan::scan_bwd);
}

// CPU kernels (not catch-alls) so the Python side can give torch.compile their output shapes (register_fake)
TORCH_LIBRARY_IMPL(vimbench_cpu_scan, CPU, m) {
  m.impl("vim_block", &vimbench_cpu_scan::vim_block);
  m.impl("conv1d_silu", &vimbench_cpu_scan::conv1d_silu);
  m.impl("add_rms_norm", &vimbench_cpu_scan::add_rms_norm);
}
