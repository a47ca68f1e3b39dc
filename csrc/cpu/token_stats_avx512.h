// The AVX-512 build's three passes of the CPU token-statistics kernel for fp32, fp16 and bf16
// input, written with intrinsics (included by token_stats_impl.h where __AVX512F__, inside its
// namespace, after <immintrin.h>). They compute what the generic LoadPass / ExpPass compute, 16
// lanes at a time, with instructions the compiler does not find from the scalar code: vfpclassps tests NaN and +inf in one instruction, vrndscaleps
// rounds, and vscalefps applies 2^n to the exponential's polynomial, subnormal results included,
// with one rounding (the scalar build builds 2^n from two exponent fields and two multiplications).
// Pass 2 is the kernel's arithmetic: fewer instructions per column there is what the kernel gains.
// Pass 3 keeps two sets of partial sums, to hide its additions' latency.
#pragma once

namespace avx512_pass {

constexpr int kLanes = 16;
// The passes sum a whole block in one set of 16-lane partial sums (always vectorised, sanitizer
// builds included): 64 additions per lane, as kSub gives the generic loops.
static_assert(kBlock / kLanes <= 64, "a block must give each lane at most 64 additions");

inline __mmask16 tail_mask(int n) { return n >= kLanes ? __mmask16(0xffff) : __mmask16((1u << n) - 1u); }

// e^x for kMinArg <= x <= 0 in the lanes of live, 0 in the others: Cody-Waite reduction
// x = n ln2 + r with n = round(x log2 e) and ln2 in two parts (n·0.693359375 is exact), the scalar
// build's degree-6 polynomial on |r| <= ln2/2, then p·2^n by vscalefps.
inline __m512 exp_nonpos(__m512 x, __mmask16 live) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(live, p, n);
}

// 16 logits as fp32, lanes outside m read as -inf.
inline __m512 load16(const float* x, __mmask16 m) {
  return _mm512_mask_loadu_ps(_mm512_set1_ps(-std::numeric_limits<float>::infinity()), m, x);
}
inline __m512 load16(const Bf16* x, __mmask16 m) {  // bf16 is the top half of an fp32
  const __m256i h = _mm256_maskz_loadu_epi16(m, x);
  const __m512 v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_mask_mov_ps(_mm512_set1_ps(-std::numeric_limits<float>::infinity()), m, v);
}
inline __m512 load16(const Half* x, __mmask16 m) {  // exact, subnormals, inf and NaN included
  const __m512 v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x));
  return _mm512_mask_mov_ps(_mm512_set1_ps(-std::numeric_limits<float>::infinity()), m, v);
}

// 16 whole logits as fp32 (the passes' main loops, without masks).
inline __m512 load16(const float* x) { return _mm512_loadu_ps(x); }
inline __m512 load16(const Bf16* x) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 load16(const Half* x) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
}

// The loops below run whole vectors unmasked, then the tail (if any) masked: the same lanes
// take the same columns either way, so the sums are those of one masked loop, bit for bit.
template <typename In>
struct LoadPass16 {
  static float run(const In* x, int len, float* buf, int* nbad) {
    const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    __m512 bm = ninf;
    __mmask16 bad = 0;
    const auto step = [&](__m512 v) {
      const __mmask16 b = _mm512_fpclass_ps_mask(v, 0x01 | 0x08 | 0x80);  // QNaN, +inf, SNaN
      v = _mm512_mask_mov_ps(v, b, ninf);
      bm = _mm512_max_ps(bm, v);
      bad = _kor_mask16(bad, b);
      return v;
    };
    int i = 0;
    for (; i + kLanes <= len; i += kLanes) _mm512_storeu_ps(buf + i, step(load16(x + i)));
    if (i < len) {
      const __mmask16 m = tail_mask(len - i);
      _mm512_mask_storeu_ps(buf + i, m, step(load16(x + i, m)));
    }
    *nbad = bad != 0 ? 1 : 0;
    return _mm512_reduce_max_ps(bm);
  }
};

template <bool Frac>
struct ExpPass16 {
  static ExpSums<float> run(float* buf, int len, float bm, float inv_temp) {
    const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    const __m512 vbm = _mm512_set1_ps(bm), vit = _mm512_set1_ps(inv_temp);
    const __m512 kmin = _mm512_set1_ps(Math<float>::kMinArg), one = _mm512_set1_ps(1.0f);
    const __m512 zero = _mm512_setzero_ps();
    __m512 r = zero, t = zero, q = zero, qh = zero, qq = zero, dd = zero, f = zero, m2 = ninf;
    const auto step = [&](__m512 x) {
      m2 = _mm512_max_ps(m2, x);
      const __mmask16 fin = _mm512_cmp_ps_mask(x, ninf, _CMP_GT_OQ);
      const __m512 d = _mm512_mul_ps(_mm512_sub_ps(x, vbm), vit);  // -inf where x is
      const __m512 de = Frac ? _mm512_mul_ps(d, _mm512_set1_ps(0.25f)) : d;
      const __mmask16 live = _mm512_cmp_ps_mask(de, kmin, _CMP_GE_OQ);
      const __m512 ex = exp_nonpos(_mm512_max_ps(de, kmin), live);
      __m512 e = ex;
      if (Frac) {  // e^{d/4}; two squarings give e^{d/2} and e^d
        const __m512 eh = _mm512_mul_ps(ex, ex);
        e = _mm512_mul_ps(eh, eh);
        qq = _mm512_add_ps(qq, ex);
        qh = _mm512_add_ps(qh, eh);
      }
      r = _mm512_add_ps(r, e);
      t = _mm512_mask3_fmadd_ps(e, d, t, live);  // e = 0 and d may be -inf where not live
      q = _mm512_fmadd_ps(e, e, q);
      dd = _mm512_mask_add_ps(dd, fin, dd, d);
      f = _mm512_mask_add_ps(f, fin, f, one);
      return e;
    };
    int i = 0;
    for (; i + kLanes <= len; i += kLanes) _mm512_storeu_ps(buf + i, step(_mm512_loadu_ps(buf + i)));
    if (i < len) {
      const __mmask16 m = tail_mask(len - i);
      _mm512_mask_storeu_ps(buf + i, m, step(_mm512_mask_loadu_ps(ninf, m, buf + i)));
    }
    ExpSums<float> s;
    s.R = _mm512_reduce_add_ps(r);
    s.T = _mm512_reduce_add_ps(t);
    s.Q2 = _mm512_reduce_add_ps(q);
    s.Qh = _mm512_reduce_add_ps(qh);
    s.Qq = _mm512_reduce_add_ps(qq);
    s.sd = _mm512_reduce_add_ps(dd);
    s.nf = _mm512_reduce_add_ps(f);
    s.m2 = _mm512_reduce_max_ps(m2);
    return s;
  }
};

// Pass 3 in two sets of 16-lane sums (even and odd vectors): one set would wait on its own
// additions' latency, the loop has so little else to do.
struct MomentPass16 {
  struct Sums {
    __m512 m2, m3, m4;
    void add(__m512 c) {
      const __m512 c2 = _mm512_mul_ps(c, c);
      m2 = _mm512_add_ps(m2, c2);
      m3 = _mm512_fmadd_ps(c2, c, m3);
      m4 = _mm512_fmadd_ps(c2, c2, m4);
    }
  };
  static Moments<float> run(const float* buf, int len, float mean) {
    const __m512 vm = _mm512_set1_ps(mean), zero = _mm512_setzero_ps();
    Sums a{zero, zero, zero}, b{zero, zero, zero};
    int i = 0;
    for (; i + 2 * kLanes <= len; i += 2 * kLanes) {
      a.add(_mm512_sub_ps(_mm512_loadu_ps(buf + i), vm));
      b.add(_mm512_sub_ps(_mm512_loadu_ps(buf + i + kLanes), vm));
    }
    for (; i < len; i += kLanes)  // lanes past len read as the mean: c = 0 adds nothing
      a.add(_mm512_sub_ps(_mm512_mask_loadu_ps(vm, tail_mask(len - i), buf + i), vm));
    Moments<float> mo;
    mo.M2 = _mm512_reduce_add_ps(_mm512_add_ps(a.m2, b.m2));
    mo.M3 = _mm512_reduce_add_ps(_mm512_add_ps(a.m3, b.m3));
    mo.M4 = _mm512_reduce_add_ps(_mm512_add_ps(a.m4, b.m4));
    return mo;
  }
};

}  // namespace avx512_pass

template <> struct LoadPass<float, float> : avx512_pass::LoadPass16<float> {};
template <> struct LoadPass<Bf16, float> : avx512_pass::LoadPass16<Bf16> {};
template <> struct LoadPass<Half, float> : avx512_pass::LoadPass16<Half> {};
template <bool Frac> struct ExpPass<float, Frac> : avx512_pass::ExpPass16<Frac> {};
template <> struct MomentPass<float> : avx512_pass::MomentPass16 {};
