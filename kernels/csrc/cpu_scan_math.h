// Vector math of the CPU scan: branch-free exp/log/softplus/silu the compiler vectorises (no intrinsics).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(_MSC_VER)
#define NOINLINE __declspec(noinline)
#else
#define NOINLINE __attribute__((noinline))
#endif

namespace vimbench_cpu_scan {

// ---------------------------------------------------------------- vector math

inline float bits_as_float(int32_t bits) { return __builtin_bit_cast(float, bits); }
inline int32_t float_as_bits(float value) { return __builtin_bit_cast(int32_t, value); }

// expf within ~1 ulp: round x/ln2 to n with the 1.5*2^23 trick, Cephes polynomial on the remainder,
// scale by 2^n through the exponent bits. Below -87.34 (denormal results) returns 0; above 88.37, inf.
inline float exp_approx(float x) {
  constexpr float kHi = 88.3762626647949f, kLo = -87.3365447504f;
  const float xc = x < kLo ? kLo : (x > kHi ? kHi : x);  // not fmin/fmax: they block vectorisation
  const float shifted = xc * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float poly = p * r * r + r + 1.0f;
  const float scale = bits_as_float((static_cast<int32_t>(n) + 127) << 23);
  float result = poly * scale;
  result = x < kLo ? 0.0f : result;
  // NaN needs no select: it passes through the clamp (comparisons are false) and poisons `poly`
  return x > kHi ? std::numeric_limits<float>::infinity() : result;
}

inline double exp_approx(double x) { return std::exp(x); }

// log for x >= 1 (finite): split mantissa/exponent, Cephes polynomial.
inline float log_approx(float x) {
  const int32_t bits = float_as_bits(x);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  float m = bits_as_float((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

// softplus(x) = log1p(exp(x)), identity above 20 (as F.softplus), from x and ex = exp(x); `slope` gets its
// derivative sigmoid(x). Callers compute exp in a separate loop: GCC will not vectorise exp and log together.
inline void softplus_from_exp(float x, float ex, float& value, float& slope) {
  const float one_plus = 1.0f + ex;
  const float log_one_plus = log_approx(one_plus);  // computed unconditionally: selects vectorise, calls not
  const float rounded = one_plus - 1.0f;
  const float log1p = rounded == 0.0f ? ex : log_one_plus * (ex / rounded);  // log1p without cancellation
  value = x > 20.0f ? x : log1p;
  slope = x > 20.0f ? 1.0f : ex / one_plus;
}

inline void softplus_from_exp(double x, double ex, double& value, double& slope) {
  value = x > 20.0 ? x : std::log1p(ex);
  slope = x > 20.0 ? 1.0 : ex / (1.0 + ex);
}

// Kept out of line: inlined into the large backward loops, GCC stops vectorising it.
template <typename T>
NOINLINE void exp_inplace(T* __restrict__ x, int64_t count) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) x[i] = exp_approx(x[i]);
}

// silu(z) and its derivative for a row (gate = z * sigmoid(z), slope = sigmoid(z) * (1 + z * (1 - sigmoid(z))))
template <typename T>
NOINLINE void silu_row(const T* __restrict__ z, int64_t length, T* __restrict__ gate, T* __restrict__ slope) {
#pragma omp simd
  for (int64_t t = 0; t < length; ++t) {
    const T sig = T(1) / (T(1) + exp_approx(-z[t]));
    gate[t] = z[t] * sig;
    if (slope) slope[t] = sig * (T(1) + z[t] * (T(1) - sig));
  }
}

}  // namespace vimbench_cpu_scan
