// CPU UQAC reduction, steps 1-2 (docs/methods.md#uqac-reduction), included once per instruction set
// (FUQ_ISA names the namespace; uqac.cpp picks one at run time). One query row per OpenMP iteration.
// Each of its L·H attention rows is preprocessed into a buffer that stays in L1 (column 0 and the
// diagonal zeroed, the 10 keys before the diagonal calibrated), then summed and its entropy taken
// from the buffer in 16 fixed partial sums, which the compiler keeps in vector registers. The
// entropy's log is cpu_math.h's branch-free log (fp32 for fp32/fp16/bf16 input, fp64 for fp64).
// Both sums stop at the row's last non-zero block: a causal row is zero past its diagonal, and a
// zero adds exactly nothing. The n_heads rows of lowest entropy are preprocessed again and reduced
// by max or mean. Compiled without FMA contraction, with the same 16
// partial sums in every build, so every build gives bitwise the same results.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "flashuq/cpu_math.h"
#include "flashuq/uqac.h"
#include "uqac.h"

namespace flashuq {
namespace cpu {
namespace FUQ_ISA {
namespace {

constexpr int kParts = 16;  // partial sums: the order of every sum, the same in each build

struct HalfCvt { static float get(uint16_t h) { return half_to_float(h); } };
struct BF16Cvt { static float get(uint16_t h) { return bf16_to_float(h); } };
template <class S> struct IdCvt { static S get(S x) { return x; } };

// a[0..n) <- the preprocessed row x of the query whose own column is diag. Returns whether the row
// is clean: every entry finite and >= 0 (then each q = a/(Σa + 1e-12) lies in [0, 1] and the
// entropy's log argument q + 1e-12 is a positive normal float).
template <class T, class S, class Cvt>
bool preprocess(const S* x, int64_t n, int64_t diag, const T* cal, T* a) {
  int dirty = 0;
  for (int64_t j = 0; j < n; ++j) {
    a[j] = T(Cvt::get(x[j]));
    dirty |= (a[j] >= T(0) && a[j] <= std::numeric_limits<T>::max()) ? 0 : 1;
  }
  const int64_t lo = diag - kUqacCalibration;
  for (int64_t j = std::max<int64_t>(lo, 1); j < std::min(diag, n); ++j) a[j] *= cal[j - lo];
  // set, not multiply: an inf or NaN in a zeroed column must not reach the row
  if (n > 0) a[0] = T(0);
  if (diag < n) a[diag] = T(0);
  return dirty == 0;  // (calibration factors are positive: they keep a clean row clean)
}

template <class T>
T sum16(const T* a, int64_t n) {
  T p[kParts] = {};
  int64_t j = 0;
  for (; j + kParts <= n; j += kParts)
    for (int k = 0; k < kParts; ++k) p[k] += a[j + k];
  for (int k = 0; j + k < n; ++k) p[k] += a[j + k];
  T s = 0;
  for (int k = 0; k < kParts; ++k) s += p[k];
  return s;
}

// Whether a vector of lanes has a bit set: OR its halves together down to one 16-byte vector (a
// vector op each, no per-lane extraction).
template <class V>
bool any_bits(V v) {
  if constexpr (sizeof(V) <= 16) {
    for (int k = 0; k < int(sizeof(V) / sizeof(v[0])); ++k)
      if (v[k] != 0) return true;
    return false;
  } else {
    using E = std::remove_reference_t<decltype(v[0])>;
    typedef E Half __attribute__((vector_size(sizeof(V) / 2)));
    Half lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return any_bits(lo | hi);
  }
}

// The length of a[0..n) up to its last block of kParts holding a non-zero, scanned from the end in
// whole vectors (the bits bar the sign, so that -0 counts as zero; NaN counts). Past it the row adds
// exactly nothing to its sum or its entropy: a causal row is zero past its diagonal.
template <class T>
int64_t nonzero_prefix(const T* a, int64_t n) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  typedef Bits Block __attribute__((vector_size(sizeof(T) * kParts)));
  int64_t m = n;
  for (; m >= kParts; m -= kParts) {
    Block v;
    std::memcpy(&v, a + m - kParts, sizeof v);
    if (any_bits(v << 1)) break;
  }
  return m;
}

inline float log_lane(float x) { return log_f32(x); }
inline double log_lane(double x) { return log_f64(x); }
inline float log_lane_normal(float x) { return log_f32_normal(x); }  // the same bits, unguarded
inline double log_lane_normal(double x) { return log_f64(x); }

// -Σ q log(q + 1e-12), q = a · (1/d), in T (fp32 for fp32/fp16/bf16 input), over a[0..m) (one
// division per row: a division per element would cost as much as the log). A clean row (see
// preprocess) takes the log without its guards for zero, negatives, subnormals and inf: the same
// results in fewer instructions.
template <class T, bool Clean>
T entropy16(const T* a, int64_t m, T d) {
  const T inv = T(1) / d;
  T p[kParts] = {};
  int64_t j = 0;
  for (; j + kParts <= m; j += kParts)
    for (int k = 0; k < kParts; ++k) {
      const T q = a[j + k] * inv;
      p[k] -= q * (Clean ? log_lane_normal(q + T(1e-12)) : log_lane(q + T(1e-12)));
    }
  for (int k = 0; j + k < m; ++k) {
    const T q = a[j + k] * inv;
    p[k] -= q * (Clean ? log_lane_normal(q + T(1e-12)) : log_lane(q + T(1e-12)));
  }
  T h = 0;
  for (int k = 0; k < kParts; ++k) h += p[k];
  return h;
}

template <class S, class Cvt, class T>
void reduce_run(const UqacReduceArgs& a) {
  const S* x = static_cast<const S*>(a.attn);
  T* out = static_cast<T*>(a.out);
  const int64_t LH = a.L * a.H, items = a.B * a.R, I = a.Ntok - a.R, n = a.Ntok;
  T cal[kUqacCalibration];
  for (int c = 0; c < kUqacCalibration; ++c) cal[c] = T(a.calibration[c]);
  const int nt = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> ent(LH), sums(LH), buf(n);
#pragma omp for schedule(dynamic, 4)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t b = it / a.R, r = it % a.R, diag = I + r;
      const S* q0 = x + b * a.sb + r * a.sr;
      auto row = [&](int64_t s) { return q0 + (s / a.H) * a.sl + (s % a.H) * a.sh; };
      for (int64_t s = 0; s < LH; ++s) {
        const bool clean = preprocess<T, S, Cvt>(row(s), n, diag, cal, buf.data());
        const int64_t m = nonzero_prefix(buf.data(), n);
        sums[s] = sum16(buf.data(), m);
        const T d = sums[s] + T(1e-12);
        ent[s] = clean ? entropy16<T, true>(buf.data(), m, d) : entropy16<T, false>(buf.data(), m, d);
      }
      int64_t* sel = a.selected + it * a.n_heads;
      uqac_select_heads(ent.data(), LH, a.n_heads, sel);
      T* o = out + it * n;
      for (int i = 0; i < a.n_heads; ++i) {
        preprocess<T, S, Cvt>(row(sel[i]), n, diag, cal, buf.data());
        const T d = sums[sel[i]] + T(1e-12);
        const T* v = buf.data();
        if (i == 0) {
          for (int64_t j = 0; j < n; ++j) o[j] = v[j] / d;
        } else if (a.mean) {
          for (int64_t j = 0; j < n; ++j) o[j] += v[j] / d;
        } else {  // max, NaN propagating (as torch.max)
          for (int64_t j = 0; j < n; ++j) {
            const T q = v[j] / d;
            o[j] = (q > o[j] || q != q) ? q : o[j];
          }
        }
      }
      if (a.mean)
        for (int64_t j = 0; j < n; ++j) o[j] /= T(a.n_heads);
    }
  }
}

}  // namespace

void uqac_reduce(const UqacReduceArgs& a) {
  switch (a.dtype) {
    case DType::F64: reduce_run<double, IdCvt<double>, double>(a); break;
    case DType::F32: reduce_run<float, IdCvt<float>, float>(a); break;
    case DType::F16: reduce_run<uint16_t, HalfCvt, float>(a); break;
    case DType::BF16: reduce_run<uint16_t, BF16Cvt, float>(a); break;
  }
}

}  // namespace FUQ_ISA
}  // namespace cpu
}  // namespace flashuq
