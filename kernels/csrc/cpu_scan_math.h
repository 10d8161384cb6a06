// Vector math of the CPU scan, written with explicit vectors: at::vec::Vectorized<T> (AVX2, AVX-512,
// NEON/SVE or ATen's portable fallback, chosen by the CPU_CAPABILITY_* macro the build defines) so the hot
// loops never depend on the auto-vectoriser if-converting selects. VIMBENCH_CPU_SCAN_SCALAR builds the same
// kernels over a one-lane type with plain libm calls: the scalar baseline a CI guard must tell apart.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if !defined(VIMBENCH_CPU_SCAN_SCALAR)
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#endif

namespace vimbench_cpu_scan {

template <typename T>
constexpr T kLog2e = T(1.44269504088896340735992468100189214);

#if defined(VIMBENCH_CPU_SCAN_SCALAR)

// One lane, the subset of Vectorized's interface the kernels use.
template <typename T>
struct ScalarVec {
  T value = T(0);
  ScalarVec() = default;
  ScalarVec(T v) : value(v) {}  // NOLINT: broadcasts convert implicitly, as with Vectorized
  static constexpr int size() { return 1; }
  static ScalarVec loadu(const void* p, int64_t = 1) { return *static_cast<const T*>(p); }
  void store(void* p, int64_t count = 1) const {
    if (count > 0) *static_cast<T*>(p) = value;
  }
  ScalarVec operator+(ScalarVec o) const { return value + o.value; }
  ScalarVec operator-(ScalarVec o) const { return value - o.value; }
  ScalarVec operator*(ScalarVec o) const { return value * o.value; }
  ScalarVec operator/(ScalarVec o) const { return value / o.value; }
};

template <typename T>
using Vec = ScalarVec<T>;
constexpr const char* kIsa = "SCALAR";

template <typename T>
inline Vec<T> fmadd(Vec<T> a, Vec<T> b, Vec<T> c) { return a.value * b.value + c.value; }
template <typename T>
inline T hsum(Vec<T> v) { return v.value; }
template <typename T>
inline Vec<T> exp_fast(Vec<T> x) { return std::exp(x.value); }
template <typename T>
inline Vec<T> exp2_fast(Vec<T> x) { return std::exp2(x.value); }
template <typename T>
inline Vec<T> log1p_fast(Vec<T> x) { return std::log1p(x.value); }
template <typename T>
inline Vec<T> select_gt(Vec<T> x, T threshold, Vec<T> if_greater, Vec<T> otherwise) {
  return x.value > threshold ? if_greater : otherwise;
}

#else

template <typename T>
using Vec = at::vec::Vectorized<T>;
using at::vec::fmadd;
#if defined(CPU_CAPABILITY_AVX512)
constexpr const char* kIsa = "AVX512";
#elif defined(CPU_CAPABILITY_AVX2)
constexpr const char* kIsa = "AVX2";
#else
constexpr const char* kIsa = "DEFAULT";  // ATen's NEON vectors on arm64, its portable arrays elsewhere
#endif

template <typename T>
inline T hsum(const Vec<T>& v) {
  return at::vec::vec_reduce_all<T>([](const Vec<T>& a, const Vec<T>& b) { return a + b; }, v);
}

// where x > threshold: if_greater, else otherwise (NaN x: otherwise)
template <typename T>
inline Vec<T> select_gt(const Vec<T>& x, T threshold, const Vec<T>& if_greater, const Vec<T>& otherwise) {
  return Vec<T>::blendv(otherwise, if_greater, x > Vec<T>(threshold));
}

// expf within ~1 ulp, inline (the decay exp(delta*A) of every state update): Cody-Waite reduction by ln2
// with n rounded by the 1.5*2^23 trick, Cephes polynomial, 2^n built in the exponent bits. The clamp keeps
// NaN (ATen's clamp_min/max return `a` when it is NaN) and needs no select afterwards: below -88 n = -127,
// whose exponent bits make 2^n = +0 (results down to the denormal range stay exact multiplies); above 88.5
// n = 128 gives inf.
inline Vec<float> exp_fast(const Vec<float>& x) {
  using V = Vec<float>;
  using VI = at::vec::Vectorized<int32_t>;
  const V shifter(12582912.0f);
  const V xc = at::vec::clamp_max(at::vec::clamp_min(x, V(-88.0f)), V(88.5f));
  const V n = fmadd(xc, V(1.44269504088896341f), shifter) - shifter;  // round(x / ln2)
  V r = fmadd(n, V(-0.693359375f), xc);
  r = fmadd(n, V(2.12194440e-4f), r);
  V p = fmadd(V(1.9875691500e-4f), r, V(1.3981999507e-3f));
  p = fmadd(p, r, V(8.3334519073e-3f));
  p = fmadd(p, r, V(4.1665795894e-2f));
  p = fmadd(p, r, V(1.6666665459e-1f));
  p = fmadd(p, r, V(5.0000001201e-1f));
  const V poly = fmadd(p, r * r, r + V(1.0f));
  const VI exponent = (at::vec::convert_to_int_of_same_size(n) + VI(127)) << VI(23);
  return poly * at::vec::cast<float>(exponent);
}

// 2^x within ~2 ulp, inline: the decay of every state update, exp(delta*A) = 2^(delta * A*log2(e)) with
// A*log2(e) computed once per channel. n = round(x) by the 1.5*2^23 trick, whose bits also hold n for the
// exponent field; Cephes exp2f polynomial on f = x - n in [-0.5, 0.5]. The clamp keeps NaN; at -127 the
// exponent field is 0 (2^n = +0, so no select is needed), at 128 it is 255 (inf).
inline Vec<float> exp2_fast(const Vec<float>& x) {
  using V = Vec<float>;
  using VI = at::vec::Vectorized<int32_t>;
  const V shifter(12582912.0f);
  const V xc = at::vec::clamp_max(at::vec::clamp_min(x, V(-127.0f)), V(128.0f));
  const V shifted = xc + shifter;  // bits: 0x4B400000 + n
  const V f = xc - (shifted - shifter);
  V p = fmadd(V(1.535336188319500e-4f), f, V(1.339887440266574e-3f));
  p = fmadd(p, f, V(9.618437357674640e-3f));
  p = fmadd(p, f, V(5.550332471162809e-2f));
  p = fmadd(p, f, V(2.402264791363012e-1f));
  p = fmadd(p, f, V(6.931472028550421e-1f));
  p = fmadd(p, f, V(1.0f));
  // (0x4B400000 + n) << 23 keeps only n << 23; adding 127 << 23 makes the exponent field n + 127
  const VI exponent = (at::vec::cast<int32_t>(shifted) << VI(23)) + VI(127 << 23);
  return p * at::vec::cast<float>(exponent);
}

inline Vec<double> exp2_fast(const Vec<double>& x) { return x.exp2(); }  // Sleef, 1 ulp (std::exp2: DEFAULT)

// log1p(y) for y >= 0 from y and 1 + y (Cephes logf of the mantissa/exponent split, then the log1p
// correction log(u) * y / (u - 1) so small y keep their precision). Finite inputs; NaN passes through.
inline Vec<float> log1p_fast(const Vec<float>& y) {
  using V = Vec<float>;
  using VI = at::vec::Vectorized<int32_t>;
  const V one(1.0f), u = one + y;
  const VI bits = at::vec::cast<int32_t>(u);
  V e = at::vec::convert_to_fp_of_same_size<float>((bits >> VI(23)) - VI(126));
  V m = at::vec::cast<float>((bits & VI(0x007fffff)) | VI(0x3f000000));  // mantissa in [0.5, 1)
  const V small = m < V(0.707106781186547524f);
  e = V::blendv(e, e - one, small);
  m = V::blendv(m - one, m + m - one, small);
  const V z = m * m;
  V p = fmadd(V(7.0376836292e-2f), m, V(-1.1514610310e-1f));
  p = fmadd(p, m, V(1.1676998740e-1f));
  p = fmadd(p, m, V(-1.2420140846e-1f));
  p = fmadd(p, m, V(1.4249322787e-1f));
  p = fmadd(p, m, V(-1.6668057665e-1f));
  p = fmadd(p, m, V(2.0000714765e-1f));
  p = fmadd(p, m, V(-2.4999993993e-1f));
  p = fmadd(p, m, V(3.3333331174e-1f));
  V logu = p * m * z;
  logu = fmadd(V(-2.12194440e-4f), e, logu);
  logu = fmadd(V(-0.5f), z, logu);
  logu = fmadd(V(0.693359375f), e, m + logu);
  const V rounded = u - one;
  return V::blendv(logu * (y / rounded), y, rounded == V(0.0f));
}

inline Vec<double> log1p_fast(const Vec<double>& y) { return y.log1p(); }  // Sleef (std::log1p: DEFAULT)

inline Vec<double> exp_fast(const Vec<double>& x) { return x.exp(); }  // Sleef, 1 ulp (std::exp: DEFAULT)



#endif

// ---------------------------------------------------------------- row functions (O(L), not the hot loop)

// Applies `body(Vec<T>* in_out, count)` over [0, count) a vector at a time, the tail through partial loads.
template <typename T, typename Body>
inline void for_each_vector(int64_t count, const Body& body) {
  constexpr int64_t VS = Vec<T>::size();
  int64_t t = 0;
  for (; t + VS <= count; t += VS) body(t, VS);
  if (t < count) body(t, count - t);
}

// dt = softplus(dt) in place (identity above 20, as F.softplus); slope (unless null) = sigmoid(dt), its derivative.
template <typename T>
inline void softplus_row(T* __restrict__ dt, T* __restrict__ slope, int64_t count) {
  for_each_vector<T>(count, [&](int64_t t, int64_t n) {
    const Vec<T> x = Vec<T>::loadu(dt + t, n);
    const Vec<T> ex = exp_fast(x);
    select_gt(x, T(20), x, log1p_fast(ex)).store(dt + t, n);
    if (slope) select_gt(x, T(20), Vec<T>(T(1)), ex / (Vec<T>(T(1)) + ex)).store(slope + t, n);
  });
}

// silu(z) and its derivative for a row (gate = z * sigmoid(z), slope = sigmoid(z) * (1 + z * (1 - sigmoid(z))))
template <typename T>
inline void silu_row(const T* __restrict__ z, int64_t length, T* __restrict__ gate, T* __restrict__ slope) {
  const Vec<T> one(T(1));
  for_each_vector<T>(length, [&](int64_t t, int64_t n) {
    const Vec<T> x = Vec<T>::loadu(z + t, n);
    const Vec<T> sig = one / (one + exp_fast(Vec<T>(T(0)) - x));
    (x * sig).store(gate + t, n);
    if (slope) (sig * fmadd(x, one - sig, one)).store(slope + t, n);
  });
}

}  // namespace vimbench_cpu_scan
