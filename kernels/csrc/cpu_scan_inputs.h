// Inputs of the CPU scan (strided views of the op's tensors), per-row preparation, and the work splitter.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <optional>

#include "cpu_scan_math.h"

namespace vimbench_cpu_scan {

template <typename T>
struct Strided3 {  // a (batch, channel, L) tensor with any strides
  const T* data = nullptr;
  int64_t sb = 0, se = 0, sl = 0;

  // positions [t0, t1) of row (b, e) into dst[0 .. t1 - t0)
  void load_range(int64_t b, int64_t e, int64_t t0, int64_t t1, T* dst) const {
    const T* src = data + b * sb + e * se + t0 * sl;
    if (sl == 1) {
      std::memcpy(dst, src, sizeof(T) * (t1 - t0));
    } else {
      for (int64_t t = 0; t < t1 - t0; ++t) dst[t] = src[t * sl];
    }
  }
};

template <typename T>
struct StateInput {  // B or C as (batch, groups, L, N) with unit N-stride
  const T* data = nullptr;
  int64_t sb = 0, sg = 0, sl = 0;
  const T* row(int64_t b, int64_t g) const { return data + b * sb + g * sg; }
};

template <typename T>
struct ScanInputs {
  int64_t batch = 0, dim = 0, length = 0, nstate = 0, groups = 1;
  Strided3<T> u, delta, z;  // z.data == nullptr: no gate
  const T* A = nullptr;     // (dim, N) contiguous
  StateInput<T> B, C;
  const T* D = nullptr;     // (dim,) or nullptr
  const T* bias = nullptr;  // (dim,) or nullptr
  bool softplus = false, reverse = false;

  int64_t group_of(int64_t e) const { return e / (dim / groups); }
};

template <typename T>
Strided3<T> strided3(const at::Tensor& t, const ScanInputs<T>& shape, const char* name) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == shape.batch && t.size(1) == shape.dim && t.size(2) == shape.length,
              name, " must be (batch, dim, L) like u, got ", t.sizes());
  return {t.const_data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2)};
}

template <typename T>
StateInput<T> state_input(const at::Tensor& t, const ScanInputs<T>& shape, const char* name) {
  TORCH_CHECK(t.dim() == 4 && t.size(0) == shape.batch && t.size(2) == shape.length &&
                  t.size(3) == shape.nstate && (t.size(3) == 1 || t.stride(3) == 1),
              name, " must be (batch, groups, L, N) with unit N-stride, got ", t.sizes());
  return {t.const_data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2)};
}

template <typename T>
const T* vector_or_null(const std::optional<at::Tensor>& t, int64_t dim, const char* name) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == dim && t->is_contiguous(), name, " must be contiguous (dim,)");
  return t->const_data_ptr<T>();
}

template <typename T>
ScanInputs<T> make_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                          const at::Tensor& C, const std::optional<at::Tensor>& D,
                          const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& bias,
                          bool softplus, bool reverse) {
  ScanInputs<T> in;
  TORCH_CHECK(u.dim() == 3, "u must be (batch, dim, L)");
  in.batch = u.size(0);
  in.dim = u.size(1);
  in.length = u.size(2);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == in.dim && A.is_contiguous(), "A must be contiguous (dim, N)");
  in.nstate = A.size(1);
  in.groups = B.size(1);
  TORCH_CHECK(in.groups > 0 && in.dim % in.groups == 0 && C.size(1) == in.groups,
              "B and C need the same number of groups, dividing dim");
  in.u = strided3(u, in, "u");
  in.delta = strided3(delta, in, "delta");
  if (z.has_value()) in.z = strided3(*z, in, "z");
  in.A = A.const_data_ptr<T>();
  in.B = state_input(B, in, "B");
  in.C = state_input(C, in, "C");
  in.D = vector_or_null<T>(D, in.dim, "D");
  in.bias = vector_or_null<T>(bias, in.dim, "delta_bias");
  in.softplus = softplus;
  in.reverse = reverse;
  return in;
}

void check_output(const at::Tensor& t, at::ScalarType dtype, at::IntArrayRef sizes, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype && t.sizes() == sizes && t.is_contiguous(), name,
              " must be a contiguous ", dtype, " tensor of size ", sizes, ", got ", t.sizes());
}

// ---------------------------------------------------------------- per-row pieces

// u, dt = softplus(delta + bias), dt*u and (unless null) d softplus / d x for positions [t0, t1) of one row.
template <typename T>
void prepare_range(const ScanInputs<T>& in, int64_t b, int64_t e, int64_t t0, int64_t t1, T* __restrict__ u,
                   T* __restrict__ dt, T* __restrict__ dtu, T* __restrict__ softplus_slope) {
  const int64_t count = t1 - t0;
  in.u.load_range(b, e, t0, t1, u);
  in.delta.load_range(b, e, t0, t1, dt);
  const Vec<T> bias(in.bias ? in.bias[e] : T(0));
  for_each_vector<T>(count, [&](int64_t t, int64_t n) { (Vec<T>::loadu(dt + t, n) + bias).store(dt + t, n); });
  if (in.softplus) {
    softplus_row(dt, softplus_slope, count);
  } else if (softplus_slope) {
    std::fill(softplus_slope, softplus_slope + count, T(1));
  }
  for_each_vector<T>(count, [&](int64_t t, int64_t n) {
    (Vec<T>::loadu(dt + t, n) * Vec<T>::loadu(u + t, n)).store(dtu + t, n);
  });
}

// `count` values of this thread's scratch for user `Tag`, kept across calls: a fresh buffer per call came
// from newly mapped pages each time (the kernel zeroing them cost a third of a small forward). Contents are
// left from the last call: users write what they read.
template <typename T, int Tag>
T* thread_scratch(int64_t count) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

// Work items [0, count) handed out `grain` at a time to torch's threads (at::parallel_for, so the thread
// count and pool are torch's). Dynamic hand-out keeps both cores busy when one is shared with another
// process; results do not depend on which thread runs an item. `make_scratch()` runs once per thread.
template <typename MakeScratch, typename Body>
void parallel_dynamic(int64_t count, int64_t grain, const MakeScratch& make_scratch, const Body& body) {
  if (count <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), (count + grain - 1) / grain);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    auto scratch = make_scratch();
    for (int64_t begin = next.fetch_add(grain); begin < count; begin = next.fetch_add(grain)) {
      body(scratch, begin, std::min(count, begin + grain));
    }
  });
}

}  // namespace vimbench_cpu_scan
