// A whole Vim block for CPU inference in one op: add + RMSNorm, in_proj, both directions' conv1d + SiLU,
// x_proj, dt_proj, the bidirectional scan with its z gate, out_proj. The same ATen GEMM calls (MKL/oneDNN)
// on the same layouts and the same kernels as the Python path (vimbench/models/vim.py with the "cpu"
// backends), so outputs match it; what goes is the Python and dispatch between ~40 small ops per block, the
// aten::add of the two directions (each tile adds its reverse direction in place), -exp(A_log)'s neg, and
// three fork/joins (both convs share one parallel region, both scans another). The final halving is applied
// before out_proj instead of after: scaling by 1/2 is exact, so the GEMM's result is the same.
// The profiler sees "vimbench::scope::norm|conv1d|scan" around the fused parts and aten::mm for the GEMMs.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>
#include <ATen/record_function.h>

#include <optional>
#include <tuple>
#include <vector>

#include "cpu_scan_block_ops.h"
#include "cpu_scan_forward.h"

namespace vimbench_cpu_scan {

// one direction's weights, in this order: conv weight (E, K) or (E, 1, K), conv bias (E,), x_proj (R + 2N, E),
// dt_proj weight (E, R), dt_proj bias (E,), A_log (E, N), D (E,)
constexpr size_t kDirectionWeights = 7;

inline void check_float32(at::TensorList tensors, const char* what) {
  for (const at::Tensor& t : tensors) {
    TORCH_CHECK(t.defined() && t.scalar_type() == at::kFloat && t.device().is_cpu(), what,
                ": CPU float32 tensors only");
  }
}

// x_proj and dt_proj of one direction and its scan inputs (views of x_dbl, kept alive by `keep`)
inline ScanInputs<float> direction_inputs(const at::Tensor& xc, const at::Tensor& z, at::TensorList w,
                                          int64_t dt_rank, bool reverse, std::vector<at::Tensor>& keep) {
  const int64_t batch = xc.size(0), length = xc.size(2);
  const int64_t nstate = w[5].size(1);
  const at::Tensor x_dbl = at::linear(xc.transpose(1, 2).reshape({batch * length, -1}), w[2]);
  const at::Tensor dt = x_dbl.narrow(1, 0, dt_rank);
  const at::Tensor delta = at::mm(w[3], dt.t()).view({-1, batch, length}).transpose(0, 1);
  const at::Tensor B = x_dbl.narrow(1, dt_rank, nstate).view({batch, length, nstate}).unsqueeze(1);
  const at::Tensor C = x_dbl.narrow(1, dt_rank + nstate, nstate).view({batch, length, nstate}).unsqueeze(1);
  const at::Tensor A = at::exp(w[5]).neg_();
  for (const at::Tensor& t : {x_dbl, delta, A}) keep.push_back(t);
  return make_inputs<float>(xc, delta, A, B, C, w[6], z, w[4], /*softplus=*/true, reverse);
}

inline std::tuple<at::Tensor, at::Tensor> vim_block(const at::Tensor& hidden,
                                                    const std::optional<at::Tensor>& residual,
                                                    const at::Tensor& norm_weight, double eps,
                                                    const at::Tensor& in_proj, const at::Tensor& out_proj,
                                                    at::TensorList fwd, at::TensorList bwd, int64_t dt_rank) {
  TORCH_CHECK(fwd.size() == kDirectionWeights && bwd.size() == kDirectionWeights,
              "vim_block: 7 weights per direction");
  TORCH_CHECK(hidden.dim() == 3, "vim_block: hidden (batch, L, D)");
  check_float32({hidden, norm_weight, in_proj, out_proj}, "vim_block");
  check_float32(fwd, "vim_block");
  check_float32(bwd, "vim_block");
  const int64_t batch = hidden.size(0), length = hidden.size(1), model_dim = hidden.size(2);
  const at::Tensor x = hidden.contiguous();
  at::Tensor normed = at::empty_like(x), res = at::empty_like(x);
  {
    RECORD_FUNCTION("vimbench::scope::norm", std::vector<c10::IValue>());
    std::optional<at::Tensor> r;
    if (residual.has_value()) {
      check_float32({*residual}, "vim_block residual");
      TORCH_CHECK(residual->sizes() == x.sizes(), "vim_block: residual like hidden");
      r = residual->contiguous();
    }
    add_rms_norm_impl<float>(x.const_data_ptr<float>(), r ? r->const_data_ptr<float>() : nullptr,
                             vector_or_null<float>(norm_weight, model_dim, "norm weight"), eps,
                             batch * length, model_dim, normed.data_ptr<float>(), res.data_ptr<float>());
  }
  // (2E, B*L) -> (B, 2E, L) without a transpose copy, as the Python path does
  const at::Tensor xz = at::mm(in_proj, normed.reshape({batch * length, -1}).t())
                            .view({-1, batch, length})
                            .transpose(0, 1);
  const int64_t dim = xz.size(1) / 2;
  const at::Tensor xs = xz.narrow(1, 0, dim), z = xz.narrow(1, dim, dim);
  const at::Tensor xc = at::empty({2, batch, dim, length}, x.options());
  {
    RECORD_FUNCTION("vimbench::scope::conv1d", std::vector<c10::IValue>());
    Conv1dJob<float> jobs[2];
    for (int d = 0; d < 2; ++d) {
      const at::TensorList w = d == 0 ? fwd : bwd;
      TORCH_CHECK(w[0].size(0) == dim && w[0].numel() == dim * w[0].size(-1) && w[0].is_contiguous(),
                  "vim_block: conv weight (E, K) or (E, 1, K), contiguous");
      Conv1dJob<float>& job = jobs[d];
      job.x = {xs.const_data_ptr<float>(), xs.stride(0), xs.stride(1), xs.stride(2)};
      job.batch = batch;
      job.dim = dim;
      job.length = length;
      job.width = w[0].size(-1);
      job.weight = w[0].const_data_ptr<float>();
      job.bias = vector_or_null<float>(w[1], dim, "conv bias");
      job.reverse = d == 1;
      job.out = xc[d].data_ptr<float>();
    }
    conv1d_silu_jobs(jobs, 2);
  }
  std::vector<at::Tensor> keep;
  const ScanInputs<float> in_f = direction_inputs(xc[0], z, fwd, dt_rank, false, keep);
  const ScanInputs<float> in_b = direction_inputs(xc[1], z, bwd, dt_rank, true, keep);
  TORCH_CHECK(in_f.nstate == in_b.nstate && in_f.groups == in_b.groups, "vim_block: directions differ");
  const at::Tensor y = at::empty({batch, dim, length}, x.options());
  {
    RECORD_FUNCTION("vimbench::scope::scan", std::vector<c10::IValue>());
    bidirectional_forward_impl<float>(in_f, in_b, 0.5f, y.data_ptr<float>());
  }
  return {at::linear(y.transpose(1, 2), out_proj), res};
}

}  // namespace vimbench_cpu_scan
