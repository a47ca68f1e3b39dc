// Branch-free scalar math that compilers vectorise: exp for fp32 and fp64, expm1 for fp32, log for fp32 and fp64, and
// fp16/bf16 -> fp32 loads; a prefetch of the next block.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "hd.h"  // FUQ_ISA_NS

namespace flashuq {
namespace cpu {
inline namespace FUQ_ISA_NS {

// The bits of x as a To of the same size (std::bit_cast before C++20).
template <class To, class From>
inline To bits_as(From x) {
  static_assert(sizeof(To) == sizeof(From), "bits_as: sizes differ");
  To t;
  std::memcpy(&t, &x, sizeof t);
  return t;
}
inline float bits_to_float(uint32_t u) { return bits_as<float>(u); }
inline uint32_t float_to_bits(float f) { return bits_as<uint32_t>(f); }
inline double bits_to_double(uint64_t u) { return bits_as<double>(u); }
inline uint64_t double_to_bits(double f) { return bits_as<uint64_t>(f); }

// Asks the caches for the n elements at p (n may be 0) while the caller works on what it read before:
// the kernels read rows in blocks of about a 4 KiB page (8 KiB for fp64), and the hardware's stream prefetchers stop
// at a page's end, so without this each new page began with a wait on memory.
template <class T>
inline void prefetch_elements(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t o = 0; o < n * int64_t(sizeof(T)); o += 64) __builtin_prefetch(c + o, 0, 3);
}

// bf16 is the top half of an fp32: exact.
inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// IEEE half -> float, exact for normals, subnormals, inf and NaN, without branches.
inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  const float normal = bits_to_float(sign | ((e + 112u) << 23) | (mant << 13));
  const float special = bits_to_float(sign | 0x7f800000u | (mant << 13));
  const float sub = bits_to_float(sign | float_to_bits(float(mant) * 5.9604644775390625e-8f));
  return e == 0 ? sub : (e == 31 ? special : normal);
}

// ln x in fp64, within 1 ulp (checked against std::log in the tests), without branches so that
// compilers vectorise the loops that call it (std::log is a library call per element). The
// scheme of fdlibm's e_log.c: x = 2^k m with m in [sqrt(2)/2, sqrt(2)), f = m - 1,
// s = f / (2 + f), ln m = f - f²/2 + s (f²/2 + R(s²)) with fdlibm's degree-7 minimax R, and
// k ln 2 in two parts. Subnormals are scaled first; x < 0 and NaN give NaN, 0 gives -inf,
// +inf gives +inf, as std::log.
inline double log_f64(double x) {
  const bool sub = x < 2.2250738585072014e-308;  // below the smallest normal (or 0, or < 0)
  const uint64_t u = double_to_bits(sub ? x * 18014398509481984.0 : x);  // 2^54
  // the biased exponent as a double without an int64 -> double conversion (none in AVX2)
  const double e = bits_to_double(0x4330000000000000ULL | (u >> 52)) - 4503599627370496.0;
  double m = bits_to_double((u & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);  // [1, 2)
  const bool big = m > 1.4142135623730951;
  m = big ? m * 0.5 : m;
  const double dk = e - (sub ? 1023.0 + 54.0 : 1023.0) + (big ? 1.0 : 0.0);
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s, w = z * z;
  const double t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
  const double t2 = z * (6.666666666666735130e-01 +
                         w * (2.857142874366239149e-01 + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
  const double hfsq = 0.5 * f * f;
  const double r = dk * 6.93147180369123816490e-01 -
                   ((hfsq - (s * (hfsq + (t1 + t2)) + dk * 1.90821492927058770002e-10)) - f);
  const double inf = std::numeric_limits<double>::infinity();
  return x > 0 ? (x < inf ? r : x) : (x == 0 ? -inf : std::numeric_limits<double>::quiet_NaN());
}

// The core of exp_f64 and exp_nonpos_f64: x = n ln2 + r with n = round(x / ln2) by the 1.5·2^52
// rounding trick (which also leaves n in the low bits of the sum), ln 2 in two parts (n·ln2_hi is
// exact), e^r by its Taylor polynomial to degree 13 on |r| <= ln2/2 (truncation below 2^-57).
// Returns e^r and n; x must lie in [-746, 710] (or be NaN).
struct ExpF64Parts {
  double p;
  int64_t n;
};
inline ExpF64Parts exp_f64_parts(double xc) {
  const double shift = 6755399441055744.0;  // 1.5 * 2^52
  const double t = xc * 1.4426950408889634 + shift;
  const double n = t - shift;
  const double r = (xc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double p = 1.6059043836821613e-10;  // 1/13!
  p = p * r + 2.0876756987868099e-09;  // 1/12!
  p = p * r + 2.5052108385441720e-08;
  p = p * r + 2.7557319223985893e-07;
  p = p * r + 2.7557319223985888e-06;
  p = p * r + 2.4801587301587302e-05;
  p = p * r + 1.9841269841269841e-04;
  p = p * r + 1.3888888888888889e-03;
  p = p * r + 8.3333333333333332e-03;
  p = p * r + 4.1666666666666664e-02;
  p = p * r + 1.6666666666666666e-01;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  return {p, int64_t(double_to_bits(t) - double_to_bits(shift))};  // n, in [-1076, 1024]
}

// e^x in fp64, within 2 ulp (checked against std::exp in the tests), without branches so that the
// loops that call it vectorise: exp_f64_parts, then 2^n in two halves, so that a subnormal result
// is rounded once. x is clamped to [-746, 710] first (e^x is 0 below -745.2 and +inf above 709.8
// either way); NaN gives NaN.
inline double exp_f64(double x) {
  const double xc = x < -746.0 ? -746.0 : (x > 710.0 ? 710.0 : x);  // NaN compares false: stays NaN
  const ExpF64Parts e = exp_f64_parts(xc);
  const int64_t n1 = e.n >> 1, n2 = e.n - n1;
  return e.p * bits_to_double(uint64_t(n1 + 1023) << 52) * bits_to_double(uint64_t(n2 + 1023) << 52);
}

// e^x for x <= 0 (or NaN) where results below the smallest normal double may be 0: as exp_f64 above
// -708 (n >= -1022: 2^n in one factor), 0 below. For sums whose terms under 2^-1022 do not matter.
inline double exp_nonpos_f64(double x) {
  const bool low = x < -708.0;  // -inf included; NaN compares false and stays NaN
  const ExpF64Parts e = exp_f64_parts(low ? 0.0 : x);
  return low ? 0.0 : e.p * bits_to_double(uint64_t(e.n + 1023) << 52);
}

// ln x in fp32, within 1 ulp of the correctly rounded result for every positive float (checked
// exhaustively when it was written; the tests sample it), without branches or divisions: a division
// per element costs as much as the rest of the log, and the UQAC reduction takes one log per
// attention weight. x = 2^k m with m in [sqrt(2)/2, sqrt(2)), k read off the bits of x minus those of
// sqrt(2)/2 (no compare); f = m - 1, ln m = f - f²/2 + f³ P(f) with Cephes logf's degree-8
// polynomial (Moshier), k ln 2 in two parts. Subnormals are scaled by 2^25 first; x < 0 and NaN give
// NaN, 0 gives -inf, +inf gives +inf.
inline float log_f32_reduced(uint32_t u, float kbias) {  // u: the bits of a positive normal float
  const uint32_t t = u - 0x3f3504f3u;  // the bits of sqrt(2)/2: t's exponent field is k
  const float k = float(int32_t(t) >> 23) - kbias;
  const float f = bits_to_float(u - (t & 0xff800000u)) - 1.0f;  // m - 1, m in [sqrt(2)/2, sqrt(2))
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float y = ((p * f * z + k * -2.12194440e-4f) - 0.5f * z);
  return (f + y) + k * 0.693359375f;
}

inline float log_f32(float x) {
  const bool sub = x < 1.17549435e-38f;  // below the smallest normal (or 0, or < 0)
  const float r = log_f32_reduced(float_to_bits(sub ? x * 33554432.0f : x), sub ? 25.0f : 0.0f);
  const float inf = std::numeric_limits<float>::infinity();
  return x > 0 ? (x < inf ? r : x) : (x == 0 ? -inf : std::numeric_limits<float>::quiet_NaN());
}

// log_f32 for a positive, normal, finite x, without the guards: the same bits, fewer instructions
// (for loops whose arguments are known to be in range).
inline float log_f32_normal(float x) { return log_f32_reduced(float_to_bits(x), 0.0f); }

// The core of exp_f32_core and expm1_exp_f32: Cody-Waite reduction x = n ln2 + r with
// n = round(x / ln2) by the 1.5·2^23 rounding trick and ln 2 in two parts (n·0.693359375 is exact),
// then e^r - 1 = r + r² P(r) with a degree-5 P on |r| <= ln2/2 (relative for small r).
struct ExpF32Parts {
  float pm1;  // e^r - 1
  float n;    // an integer
};
inline ExpF32Parts exp_f32_parts(float x) {
  const float t = x * 1.44269504088896341f + 12582912.0f;  // round-to-nearest via 1.5 * 2^23
  const float n = t - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return {p * (r * r) + r, n};
}

// e^x for -104 <= x <= 88, about 1-2 ulp, without branches or selects: exp_f32_parts, then 2^n
// applied as two factors so that results fall gradually into the subnormal range instead of flushing.
inline float exp_f32_core(float x) {
  const ExpF32Parts e = exp_f32_parts(x);
  const float p = e.pm1 + 1.0f;
  const int32_t ni = int32_t(e.n);  // exact: n is an integer in [-150, 127]
  const int32_t n1 = ni >> 1;
  const int32_t n2 = ni - n1;
  const float s1 = bits_to_float(uint32_t(n1 + 127) << 23);
  const float s2 = bits_to_float(uint32_t(n2 + 127) << 23);
  return p * s1 * s2;
}

// e^d - 1 and e^d for d <= 88 in fp32 from one exp_f32_parts (whose e^r - 1 is relative for small
// r): e^d - 1 keeps its relative digits for small |d| (n = 0), and each is within about 2 ulp.
// d <= -87 (2^n no longer normal) gives -1 and 0; -inf included.
struct Expm1ExpF32 {
  float em1, e;
};
inline Expm1ExpF32 expm1_exp_f32(float d) {
  const ExpF32Parts x = exp_f32_parts(d > -87.0f ? d : -87.0f);
  const float s = bits_to_float(uint32_t(int32_t(x.n) + 127) << 23);  // 2^n, n in [-126, 127]
  return {s * x.pm1 + (s - 1.0f), d > -87.0f ? s * x.pm1 + s : 0.0f};
}

// e^x for finite x (the kernels call it with x <= 0), about 1-2 ulp, written without branches so
// that compilers vectorise the loops that call it. Below -104 the result is 0 (it underflows
// anyway); above 88 it is e^88.
inline float exp_f32(float x) {
  float xc = x > -104.0f ? x : -104.0f;
  xc = xc < 88.0f ? xc : 88.0f;
  return x >= -104.0f ? exp_f32_core(xc) : 0.0f;
}

}  // namespace FUQ_ISA_NS
}  // namespace cpu
}  // namespace flashuq
