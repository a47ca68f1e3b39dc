// Branch-free scalar math that compilers vectorise: exp for fp32, and fp16/bf16 -> fp32 loads.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "hd.h"  // FUQ_ISA_NS

namespace flashuq {
namespace cpu {
inline namespace FUQ_ISA_NS {

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
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

// e^x for finite x (the kernels call it with x <= 0), about 1-2 ulp; written without branches so
// that compilers vectorise the loops that call it. Cody-Waite reduction x = n ln2 + r, a degree-6
// polynomial on |r| <= ln2/2, and 2^n applied as two factors so that results fall gradually into
// the subnormal range instead of flushing. Below -104 the result is 0 (it underflows anyway).
inline float exp_f32(float x) {
  float xc = x > -104.0f ? x : -104.0f;
  xc = xc < 88.0f ? xc : 88.0f;
  const float t = xc * 1.44269504088896341f + 12582912.0f;  // round-to-nearest via 1.5 * 2^23
  const float n = t - 12582912.0f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t ni = int32_t(float_to_bits(t) & 0x7fffffu) - 0x400000;  // n as an integer
  const int32_t n1 = ni >> 1;
  const int32_t n2 = ni - n1;
  const float s1 = bits_to_float(uint32_t(n1 + 127) << 23);
  const float s2 = bits_to_float(uint32_t(n2 + 127) << 23);
  return x >= -104.0f ? p * s1 * s2 : 0.0f;
}

}  // namespace FUQ_ISA_NS
}  // namespace cpu
}  // namespace flashuq
