// The CPU eigenvalue path of the graph spectra: L questions of the same size n solved together,
// one SIMD lane each. A group is NC chunks of W questions, W = the doubles in one register; a
// chunk stores its W matrices interleaved ("structure of arrays": entry (i, j) of the W
// questions is one register), so everything runs in plain vector instructions without shuffles:
// the symmetrisation and Laplacian, the reduction to tridiagonal form, the root-free QL (all L
// questions in lockstep, NC independent chains of dependent divisions overlapping each other),
// the sort, and for Eccentricity the inverse iteration, the reflectors and the scores; for Kernel
// Language Entropy the heat kernel, by scaling and squaring (heat_kernel).
//
// Every lane performs exactly the operations of the scalar code in flashuq/graph.h and
// flashuq/symeig.h (GraphTask, tridiagonalize, QLIteration's root-free steps, sort_eigen,
// tridiagonal_inverse_iteration, apply_reflectors), in the same order, with the same tests —
// branches become per-lane masks — so each question's results are bitwise those of the scalar
// path (tests/ops/test_graph.py checks it): independent of which questions share its group, of
// the thread count, of the instruction set (compiled without FMA contraction), and of whether it
// ran here or on the scalar path (questions that fail — a non-finite entry, a zero degree, no
// convergence — are redone there, which writes their NaNs). The exception is the heat kernel:
// the lanes compute it by scaling and squaring (heat_kernel), the scalar path from QL's
// eigenvectors, so KLE's entropies agree to rounding; a question whose |t|·max|λ| may exceed
// kHeatExpMax is redone on the scalar path too.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <utility>

#include "flashuq/graph.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace flashuq {
namespace cpu {
namespace FUQ_ISA {

// dot() below is symeig.h's, on vectors of lanes: the same four partial sums in the same order.
struct GraphLanes {
  typedef double V __attribute__((vector_size(FUQ_VECTOR_BYTES)));
  typedef long long M __attribute__((vector_size(FUQ_VECTOR_BYTES)));  // lane masks: all ones or zero
  static constexpr int W = int(sizeof(V) / sizeof(double));  // questions per chunk
  static constexpr int NC = 4;                               // chunks per group
  static constexpr int L = W * NC;                           // questions per group

  static V splat(double x) {
#if defined(__AVX512F__)  // one broadcast: GCC spells the loop below out as eight masked ones
    return (V)_mm512_set1_pd(x);
#else
    V r;
    for (int k = 0; k < W; ++k) r[k] = x;
    return r;
#endif
  }
  static V vsqrt(V x) {
    V r;
    for (int k = 0; k < W; ++k) r[k] = std::sqrt(x[k]);  // sqrtpd: correctly rounded, like sqrt
    return r;
  }
  // m ? a : b per lane: GCC's own vector ?: (blendvpd; spelled out with & and |, GCC turns it
  // into scalar code)
  static V sel(M m, V a, V b) { return m ? a : b; }
  static V vabs(V x) { return (V)((M)x & ~(M)splat(-0.0)); }
  static V copysign_pos(V r, V h) { return (V)((M)r | ((M)h & (M)splat(-0.0))); }  // r >= 0
  static bool any(M m) {  // one test instruction where there is one (GCC spells the loop out)
#if defined(__AVX512F__)
    return _mm512_test_epi64_mask((__m512i)m, (__m512i)m) != 0;
#elif defined(__AVX__)
    return !_mm256_testz_si256((__m256i)m, (__m256i)m);
#elif defined(__SSE2__)
    return _mm_movemask_pd((__m128d)m) != 0;
#else
    long long a = 0;
    for (int k = 0; k < W; ++k) a |= m[k];
    return a != 0;
#endif
  }
  static V zero() { return splat(0.0); }
  static M finite(V x) { return vabs(x) < std::numeric_limits<double>::infinity(); }  // NaN: false
  // W questions interleaved: the n x n matrix, its tridiagonal form and reflectors, scratch, and
  // the QL's copies qd, qe of d, e.
  struct Chunk {
    V *a, *d, *e, *beta, *v, *p, *qd, *qe;
    V *y, *lu;       // eigenvectors (row j), the LU factors of inverse iteration (5 n)
    V* x;            // the heat kernel's six matrices (heat_kernel), or nullptr
    bool* ok;        // [W]: false sends the question to the scalar path
    double* scale;   // [W]: kGraphEigvalues divided the matrix by this

    // GraphTask::begin up to and including tridiagonalize: Wq[k] is question k's [n, n] block
    // (row stride ld); for kGraphNliHeatEntropy Wq[k] holds E and Cq[k] C.
    template <class S>
    void load(int op, int n, const S* const* Wq, const S* const* Cq, int ld) {
      for (int k = 0; k < W; ++k) ok[k] = true;
      if (op == kGraphNliHeatEntropy)  // load_symmetric: nli_weight's matrix, interleaved ...
        for (int i = 0; i < n; ++i)
          for (int j = 0; j <= i; ++j) {
            V x;
            for (int k = 0; k < W; ++k) x[k] = double(nli_weight(Wq[k], Cq[k], ld, i, j));
            a[i * n + j] = a[j * n + i] = x;
          }
      else  // ... or the W blocks, row by row ...
        for (int i = 0; i < n; ++i) load_row(Wq, int64_t(i) * ld, n, a + i * n);
      for (int i = 0; i < n; ++i)  // ... then (W + Wᵀ)/2 (a + b is b + a, bit for bit) and the degrees
        for (int j = i; j < n; ++j) a[i * n + j] = a[j * n + i] = (a[i * n + j] + a[j * n + i]) * 0.5;
      M fin = ~M{};
      for (int i = 0; i < n; ++i) {
        V deg = zero();
        for (int j = 0; j < n; ++j) deg += a[i * n + j];
        v[i] = deg;
        fin &= finite(deg);
      }
      keep(fin);
      if (op == kGraphEigvalues) {  // work on a / max|a|
        V s = zero();
        for (int i = 0; i < n * n; ++i) {
          const V x = vabs(a[i]);
          s = sel(x > s, x, s);  // = fmax for the finite entries of an ok question
        }
        for (int k = 0; k < W; ++k) scale[k] = s[k];
        const M pos = s > 0;
        for (int i = 0; i < n * n; ++i) a[i] = sel(pos, a[i] / s, a[i]);
      } else if (op == kGraphLaplacian) {  // L = I - D^{-1/2} W D^{-1/2}
        M pos = ~M{};
        for (int i = 0; i < n; ++i) pos &= v[i] > 0;
        keep(pos);
        for (int i = 0; i < n; ++i) p[i] = 1.0 / vsqrt(v[i]);
        const V one = splat(1.0), z = zero();
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) a[i * n + j] = (i == j ? one : z) - a[i * n + j] * (p[i] * p[j]);
      } else {  // the heat kernel: L = diag(row sums) - W, left for heat_kernel (not reduced)
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) a[i * n + j] = (i == j ? v[i] : zero()) - a[i * n + j];
        sanitize(n);
        return;
      }
      reduce(n);
    }

    // ok[k] &= m[k]
    void keep(M m) {
      for (int k = 0; k < W; ++k) ok[k] = ok[k] && m[k] != 0;
    }

    // out[j] = (Wq[0][off + j], ..., Wq[W - 1][off + j]) as doubles, j < n. With AVX-512, eight
    // segments of a row transposed in registers (built lane by lane, a vector costs eight
    // dependent inserts); with four lanes GCC's inserts are the faster.
    template <class S>
    static void load_row(const S* const* Wq, int64_t off, int n, V* __restrict__ out) {
#if defined(__AVX512F__)
      for (int j0 = 0; j0 < n; j0 += 8) {
        const int cnt = std::min(8, n - j0);
        __m512d r[8], t[8], b[8];
        for (int k = 0; k < 8; ++k) r[k] = load8(Wq[k] + off + j0, cnt);
        for (int k = 0; k < 8; k += 2) {  // 128-bit lane L of t[k]: columns 2L of rows k, k + 1; of t[k + 1]: 2L + 1
          t[k] = _mm512_unpacklo_pd(r[k], r[k + 1]);
          t[k + 1] = _mm512_unpackhi_pd(r[k], r[k + 1]);
        }
        for (int k = 0; k < 8; k += 4)  // b[k + c], c < 4: columns c and c + 4 of rows k .. k + 3
          for (int h = 0; h < 2; ++h) {
            b[k + h] = _mm512_shuffle_f64x2(t[k + h], t[k + h + 2], 0x88);
            b[k + h + 2] = _mm512_shuffle_f64x2(t[k + h], t[k + h + 2], 0xdd);
          }
        for (int c = 0; c < 4; ++c) {
          if (c < cnt) out[j0 + c] = (V)_mm512_shuffle_f64x2(b[c], b[c + 4], 0x88);
          if (c + 4 < cnt) out[j0 + c + 4] = (V)_mm512_shuffle_f64x2(b[c], b[c + 4], 0xdd);
        }
      }
#else
      for (int j = 0; j < n; ++j) {
        V x;
        for (int k = 0; k < W; ++k) x[k] = double(Wq[k][off + j]);
        out[j] = x;
      }
#endif
    }
    // the first cnt entries at p (no read past them), as doubles; a masked load only for a row's
    // tail (they are slow on AMD's cores)
#if defined(__AVX512F__)
    static __m512d load8(const double* p, int cnt) {
      return cnt == 8 ? _mm512_loadu_pd(p) : _mm512_maskz_loadu_pd(__mmask8((1u << cnt) - 1), p);
    }
    static __m512d load8(const float* p, int cnt) {
      return _mm512_cvtps_pd(cnt == 8 ? _mm256_loadu_ps(p)
                                      : _mm512_castps512_ps256(_mm512_maskz_loadu_ps(__mmask16((1u << cnt) - 1), p)));
    }
#endif

    // A failed question gets the identity: no inf or NaN below.
    void sanitize(int n) {
      for (int k = 0; k < W; ++k)
        if (!ok[k])
          for (int i = 0; i < n; ++i)
            for (int j = 0; j < n; ++j) a[i * n + j][k] = i == j ? 1.0 : 0.0;
    }

    // Sanitize, tridiagonalize, and sym_eig_begin's finiteness test.
    void reduce(int n) {
      sanitize(n);
      tridiagonalize(n);
      M fin = ~M{};
      for (int i = 0; i < n; ++i) fin &= finite(d[i]) & finite(e[i]);
      keep(fin);
      for (int k = 0; k < W; ++k)
        if (!ok[k])
          for (int i = 0; i < n; ++i) {
            d[i][k] = 1.0;
            e[i][k] = 0.0;
          }
    }

    // Kernel Language Entropy's first stage on the lanes: from L = D - W in `a`, the heat kernel
    // Kh = expm(-t L) by scaling and squaring (not from eigenvectors, as the scalar path: the two
    // agree to rounding), normalised as GraphTask::resume does, into `a` and reduced to
    // tridiagonal form for the second QL.
    // L's rows sum to zero, so 1 is an eigenvector (eigenvalue 0), and L' = L + cJ (J all ones,
    // c the mean off-diagonal weight) moves that eigenvalue to σ = nc and keeps the others:
    //   expm(-tL) = expm(-tL') + (1 - e^{-tσ}) J/n.
    // L' has narrower Gershgorin discs than L (its off-diagonal entries -W_ij + c are centred),
    // which saves a squaring on KLE's graphs. With μ the centre and r the radius of L''s
    // Gershgorin interval and A = -t (L' - μI) / 2^s, ‖A‖∞ <= |t| r / 2^s <= 1/2:
    //   expm(-tL') = e^{-tμ} · T14(A)^(2^s),   T14 = Σ_{k<=14} A^k / k!   (Paterson–Stockmeyer in A⁴)
    // where the Taylor remainder is below 2.4e-17. A question whose |t| max(|λ|) may exceed
    // kHeatExpMax (bounded by Gershgorin) goes to the scalar path instead. Every product of two
    // polynomials in A is symmetric: its lower triangle is computed, then mirrored.
    static constexpr double kHeatExpMax = 128;

    // C = f(i, j, X Y) for symmetric X, Y that commute and an f that keeps the result symmetric:
    // the lower triangle, each sum over k in order, mirrored. kRows rows and four columns at a
    // time (4 kRows independent sums; four rows where 32 registers hold them, else two): reads up
    // to 3 entries past Y's last row (padding, never used in a result). The blocking changes no
    // sum, so every build gives the same bits.
    static constexpr int kRows = W >= 8 ? 4 : 2;
    template <class F>
    static void sym_product(int n, const V* __restrict__ X, const V* __restrict__ Y, V* __restrict__ C, F f) {
      for (int i = 0; i < n; i += kRows) {
        int r[kRows];  // rows past the last repeat it (computed twice)
        for (int q = 0; q < kRows; ++q) r[q] = i + q < n ? i + q : n - 1;
        for (int j0 = 0; j0 <= r[kRows - 1]; j0 += 4) {
          V c[kRows][4];
          for (int q = 0; q < kRows; ++q)
            for (int u = 0; u < 4; ++u) c[q][u] = zero();
          for (int k = 0; k < n; ++k) {
            const V* y = Y + k * n + j0;
            const V y0 = y[0], y1 = y[1], y2 = y[2], y3 = y[3];
            for (int q = 0; q < kRows; ++q) {
              const V x = X[r[q] * n + k];
              c[q][0] += x * y0;
              c[q][1] += x * y1;
              c[q][2] += x * y2;
              c[q][3] += x * y3;
            }
          }
          for (int q = 0; q < kRows; ++q) {
            V* ci = C + r[q] * n + j0;
            const int jn = r[q] + 1 - j0;
            for (int u = 0; u < 4; ++u)
              if (u < jn) ci[u] = f(r[q], j0 + u, c[q][u]);
          }
        }
      }
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < i; ++j) C[j * n + i] = C[i * n + j];
    }

    void heat_kernel(int n, double t) {
      const size_t ms = size_t(n) * n + 4;  // a matrix and its padding
      V *A = x, *A2 = A + ms, *A3 = A2 + ms, *A4 = A3 + ms, *R = A4 + ms, *P = R + ms;
      V wsum = zero();  // cj: the mean off-diagonal weight (c above)
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j)
          if (j != i) wsum -= a[i * n + j];
      const V cj = wsum / double(n * (n - 1));
      V lo = splat(std::numeric_limits<double>::infinity()), hi = -lo;
      for (int i = 0; i < n; ++i) {  // Gershgorin: the eigenvalues of L' in [lo, hi]
        V off = zero();
        for (int j = 0; j < n; ++j)
          if (j != i) off += vabs(a[i * n + j] + cj);
        const V l = (a[i * n + i] + cj) - off, h = (a[i * n + i] + cj) + off;
        lo = sel(l < lo, l, lo);
        hi = sel(h > hi, h, hi);
      }
      V mu, sc, emu, corr;
      int s[W], smax = 0;
      for (int k = 0; k < W; ++k) {
        const double big = std::fmax(std::fabs(lo[k]), std::fabs(hi[k])), at = std::fabs(t);
        if (!(at * big <= kHeatExpMax)) ok[k] = false;  // (NaN included) the scalar path's
        mu[k] = ok[k] ? 0.5 * (lo[k] + hi[k]) : 0.0;
        // ‖A‖∞ · 2^s <= 1/2: ar = 2 |t| r, written so that it cannot overflow once |t| max(|lo|, |hi|)
        // <= kHeatExpMax (hi - lo itself can exceed the largest double)
        const double ar = ok[k] ? at * hi[k] - at * lo[k] : 0.0;
        if (!(ar <= 2 * kHeatExpMax)) ok[k] = false;
        int e = 0;
        const double f = std::frexp(ar, &e);  // ar = f 2^e, f in [0.5, 1)
        s[k] = ar <= 1 ? 0 : f == 0.5 ? e - 1 : e;
        smax = s[k] > smax ? s[k] : smax;
        sc[k] = ok[k] ? std::ldexp(-t, -s[k]) : 0.0;  // exact: a power of two
        emu[k] = ok[k] ? std::exp(-t * mu[k]) : 1.0;
        corr[k] = ok[k] ? -std::expm1(-t * (n * cj[k])) / n : 0.0;  // (1 - e^{-tσ}) / n
      }
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) A[i * n + j] = (i == j ? (a[i * n + j] + cj) - mu : a[i * n + j] + cj) * sc;
      for (size_t i = size_t(n) * n; i < ms; ++i) A[i] = A2[i] = R[i] = P[i] = zero();  // padding
      const auto product = [](int, int, V x) { return x; };
      sym_product(n, A, A, A2, product);
      sym_product(n, A2, A, A3, product);
      sym_product(n, A2, A2, A4, product);
      constexpr int m = 14;
      double c[m + 1];  // 1/k!
      c[0] = 1;
      for (int k = 1; k <= m; ++k) c[k] = c[k - 1] / k;
      for (int i = 0; i < n; ++i)  // the highest block: c12 + c13 A + c14 A²
        for (int j = 0; j < n; ++j)
          R[i * n + j] = (i == j ? splat(c[12]) : zero()) + c[13] * A[i * n + j] + c[14] * A2[i * n + j];
      for (int b = 2; b >= 0; --b) {  // R <- B_b + A⁴ R,  B_b = Σ_{q<4} c_{4b+q} A^q
        const double* cb = c + 4 * b;
        sym_product(n, A4, R, P, [&](int i, int j, V x) {
          const int e = i * n + j;
          return (i == j ? splat(cb[0]) : zero()) + cb[1] * A[e] + cb[2] * A2[e] + cb[3] * A3[e] + x;
        });
        std::swap(R, P);
      }
      for (int q = 0; q < smax; ++q) {  // each lane squares s times
        M sq;
        for (int k = 0; k < W; ++k) sq[k] = q < s[k] ? -1 : 0;
        sym_product(n, R, R, P, [&](int i, int j, V x) { return sel(sq, x, R[i * n + j]); });
        std::swap(R, P);
      }
      for (int i = 0; i < n; ++i) v[i] = vsqrt(R[i * n + i] * emu + corr) + 1e-12;
      for (int i = 0; i < n; ++i)  // Kh = e^{-tμ} R + corr normalised as GraphTask::resume, and mirrored
        for (int j = 0; j <= i; ++j)
          a[i * n + j] = a[j * n + i] = (R[i * n + j] * emu + corr) / (v[i] * v[j] * double(n));
      reduce(n);
    }

    // The von Neumann entropy -Σ λ ln λ over |λ| > 1e-8 of the sorted eigenvalues (λ < -1e-8
    // gives NaN, as numpy's log), as GraphTask::resume.
    V von_neumann_entropy(int n) {
      V h = zero();
      for (int k = 0; k < n; ++k)
        for (int w = 0; w < W; ++w) {
          const double x = qd[k][w];
          if (std::fabs(x) > 1e-8) h[w] -= x * std::log(x);
        }
      return h;
    }

    // Row i of the symmetric matrix dotted with y over columns [lo, hi), reading only the lower
    // triangle (entry (i, j), j > i, from (j, i)): symeig.h's dot, the same four partial sums.
    V dot_lower(int n, int i, const V* __restrict__ y, int lo, int hi) const {
      auto x = [&](int j) -> V { return j <= i ? a[i * n + j] : a[j * n + i]; };
      V s0 = zero(), s1 = zero(), s2 = zero(), s3 = zero();
      int j = lo;
      for (; j + 3 < hi; j += 4) {
        s0 += x(j) * y[j];
        s1 += x(j + 1) * y[j + 1];
        s2 += x(j + 2) * y[j + 2];
        s3 += x(j + 3) * y[j + 3];
      }
      for (; j < hi; ++j) s0 += x(j) * y[j];
      return (s0 + s1) + (s2 + s3);
    }

    // symeig.h tridiagonalize, lane-wise. A question whose column is already reduced
    // (beta == 0) skips the step, as the scalar code does; the masked update keeps its entries.
    // Only the lower triangle is updated and read: the scalar code's full update keeps the
    // matrix exactly symmetric (entries (i, j) and (j, i) subtract the same two products, added
    // in swapped order), so the lower triangle alone gives bitwise the same reduction.
    void tridiagonalize(int n) {
      for (int k = 0; k + 2 < n; ++k) {
        V sigma = zero();
        for (int i = k + 2; i < n; ++i) sigma += a[i * n + k] * a[i * n + k];
        const V x0 = a[(k + 1) * n + k];
        const M pos = sigma > 0;
        const V norm = vsqrt(x0 * x0 + sigma);
        const V alpha = sel(pos, sel(x0 > 0, -norm, norm), x0);
        const V b = sel(pos, 1.0 / (norm * norm + vabs(x0) * norm), zero());
        e[k] = alpha;
        beta[k] = b;
        const M upd = b != 0;  // the scalar code's `if (b == 0) continue;`
        const bool skip = any(~upd);
        if (skip && !any(upd)) continue;
        for (int i = k + 1; i < n; ++i) v[i] = i == k + 1 ? x0 - alpha : a[i * n + k];
        for (int i = k + 1; i < n; ++i) p[i] = b * dot_lower(n, i, v, k + 1, n);
        V pv = zero();
        for (int i = k + 1; i < n; ++i) pv += p[i] * v[i];
        const V h = 0.5 * b * pv;
        for (int i = k + 1; i < n; ++i) p[i] -= h * v[i];
        if (!skip) {  // two rows at a time: each p[j], v[j] loaded once for both (the loads bound this)
          int i = k + 1;
          for (; i + 1 < n; i += 2) {
            V* __restrict__ a0 = a + i * n;
            V* __restrict__ a1 = a0 + n;
            const V v0 = v[i], w0 = p[i], v1 = v[i + 1], w1 = p[i + 1];
            for (int j = k + 1; j <= i; ++j) {
              const V pj = p[j], vj = v[j];
              a0[j] -= v0 * pj + w0 * vj;
              a1[j] -= v1 * pj + w1 * vj;
            }
            a1[i + 1] -= v1 * p[i + 1] + w1 * v[i + 1];
          }
          if (i < n) {
            V* __restrict__ ai = a + i * n;
            const V vi = v[i], wi = p[i];
            for (int j = k + 1; j <= i; ++j) ai[j] -= vi * p[j] + wi * v[j];
          }
          for (int i = k + 1; i < n; ++i) a[k * n + i] = v[i];
        } else {
          for (int i = k + 1; i < n; ++i) {
            V* __restrict__ ai = a + i * n;
            const V vi = v[i], wi = p[i];
            for (int j = k + 1; j <= i; ++j) ai[j] = sel(upd, ai[j] - (vi * p[j] + wi * v[j]), ai[j]);
          }
          for (int i = k + 1; i < n; ++i) a[k * n + i] = sel(upd, v[i], a[k * n + i]);
        }
      }
      for (int i = 0; i < n; ++i) d[i] = a[i * n + i];
      if (n >= 2) {
        e[n - 2] = a[(n - 1) * n + (n - 2)];
        beta[n - 2] = zero();
      }
      e[n - 1] = zero();
      beta[n - 1] = zero();
    }

    // sort_eigen (symeig.h) of each question's eigenvalues in qd: ascending, -0 before +0, by a
    // sorting network (odd-even transposition: n rounds of compare-exchanges between
    // neighbours) on integer keys in that total order (a negative value's bits other than the
    // sign flipped), the order sort_eigen's selection sort produces for values without NaN (a
    // lane that reaches here has none: QL's input is finite and its failures leave the lanes).
    void sort(int n) {
      const M flip = ~(M)splat(-0.0);  // 0x7ff...f
      // the key, as a value bit-cast (no access through another type), and back: an involution
      const auto key = [flip](V x) { const M b = (M)x; return (V)(b ^ ((b >> 63) & flip)); };
      for (int i = 0; i < n; ++i) qd[i] = key(qd[i]);
      for (int r = 0; r < n; ++r)
        for (int i = r & 1; i + 1 < n; i += 2) {
          const M x = (M)qd[i], y = (M)qd[i + 1];
          const M sw = y < x;
          qd[i] = (V)(sw ? y : x);
          qd[i + 1] = (V)(sw ? x : y);
        }
      for (int i = 0; i < n; ++i) qd[i] = key(qd[i]);
    }

    // GraphTask::laplacian_scores, lane-wise, after sort(), in three parts. EigV:
    V eigv(int n) const {
      V sum = zero();
      for (int k = 0; k < n; ++k) sum += sel(qd[k] < 1, 1.0 - qd[k], zero());
      return sum;
    }

    // Eccentricity keeps the eigenvectors with eigenvalue < threshold, the first m of each
    // question: m into mv, the largest m returned.
    int kept(int n, double threshold, V& mv) const {
      int mmax = 0;
      for (int w = 0; w < W; ++w) {
        int m = 0;
        while (m < n && qd[m][w] < threshold) ++m;
        mv[w] = m;
        mmax = m > mmax ? m : mmax;
      }
      return mmax;
    }

    // ... and, once GraphLanes::inverse_iteration has left those vectors of the tridiagonal in y,
    // takes Eccentricity into ecc_out from them and c = Qᵀ1 (GraphTask::laplacian_scores) and,
    // if per_sample is not null, maps them back (apply_reflectors) for the per-sample norms
    // (per_sample[0..n)). Question w keeps its first mv[w] rows; the others are scratch.
    void eccentricity(int n, int mmax, V mv, V& ecc_out, V* per_sample) {
      V* c = lu;  // apply_reflectors_transposed (symeig.h) of the constant vector; lu is free now
      for (int i = 0; i < n; ++i) c[i] = splat(1.0);
      for (int k = 0; k + 2 < n; ++k) {
        const V b = beta[k];
        const M upd = b != 0;
        if (!any(upd)) continue;
        const V* __restrict__ vk = a + k * n;
        const V sc = b * dot(vk, c, k + 1, n);
        for (int i = k + 1; i < n; ++i) c[i] = sel(upd, c[i] - sc * vk[i], c[i]);
      }
      V total = zero();
      for (int j = 0; j < mmax; ++j) {  // centred sums of squares, in T's basis
        const M act = splat(double(j)) < mv;
        const V* yj = y + j * n;
        const V mean = dot(c, yj, 0, n) / double(n);
        V ss = zero();
        for (int i = 0; i < n; ++i) ss += (yj[i] - mean * c[i]) * (yj[i] - mean * c[i]);
        total += sel(act, ss, zero());
      }
      ecc_out = vsqrt(total);
      if (!per_sample) return;
      apply_reflectors(n, mmax);
      for (int i = 0; i < n; ++i) per_sample[i] = zero();
      for (int j = 0; j < mmax; ++j) {  // eigenvector means, then each response's centred sum
        const M act = splat(double(j)) < mv;
        const V* u = y + j * n;
        V mean = zero();
        for (int i = 0; i < n; ++i) mean += u[i];
        mean /= double(n);
        for (int i = 0; i < n; ++i) per_sample[i] += sel(act, (u[i] - mean) * (u[i] - mean), zero());
      }
      for (int i = 0; i < n; ++i) per_sample[i] = vsqrt(per_sample[i]);
    }

    // apply_reflectors (symeig.h): rows j < mmax of y <- Q y_j, each reflector applied to all
    // the rows in turn (the rows' operations are independent: the same as one row at a time).
    void apply_reflectors(int n, int mmax) {
      for (int k = n - 3; k >= 0; --k) {
        const V b = beta[k];
        const M upd = b != 0;
        if (!any(upd)) continue;
        const bool all = !any(~upd);
        const V* __restrict__ vk = a + k * n;
        for (int j = 0; j < mmax; ++j) {
          V* __restrict__ yj = y + j * n;
          const V sc = b * dot(vk, yj, k + 1, n);
          if (all)
            for (int i = k + 1; i < n; ++i) yj[i] -= sc * vk[i];
          else
            for (int i = k + 1; i < n; ++i) yj[i] = sel(upd, yj[i] - sc * vk[i], yj[i]);
        }
      }
    }
  };

  // with the heat kernel's six matrices (and their padding)
  static size_t chunk_size(int n, bool heat) {
    return 2 * size_t(n) * n + 13 * size_t(n) + (heat ? 6 * (size_t(n) * n + 4) : 0);
  }
  // Work space of one group, in V.
  static size_t work_size(int n, bool heat) { return NC * chunk_size(n, heat); }

  int n;
  Chunk ch[NC];
  bool ok[L];
  double scale[L];

  void bind(V* buf, int n_, bool heat) {
    n = n_;
    for (int c = 0; c < NC; ++c) {
      Chunk& h = ch[c];
      h.a = buf + c * chunk_size(n, heat);
      h.d = h.a + n * n;
      h.e = h.d + n;
      h.beta = h.e + n;
      h.v = h.beta + n;
      h.p = h.v + n;
      h.qd = h.p + n;
      h.qe = h.qd + n;
      h.y = h.qe + n;
      h.lu = h.y + n * n;
      h.x = heat ? h.lu + 5 * n : nullptr;
      h.ok = ok + c * W;
      h.scale = scale + c * W;
    }
  }

  // tridiagonal_inverse_iteration (symeig.h) of every question's (d, e) at its sorted eigenvalues
  // qd[0..m) (m = mv[h][w]; rows up to mmax are computed for all, the extra ones are scratch):
  // vector j into row j of y. Pivoting and the clusters are per question (masks). Each step is
  // written across the NC chunks, so that their chains of divisions and solves overlap.
  void inverse_iteration(int mmax, const V* mv) {
#define FUQ_CHUNKS for (int h = 0; h < NC; ++h)
    const double eps = std::numeric_limits<double>::epsilon();
    V tiny[NC], pertol[NC], ortol[NC], xprev[NC], cluster[NC], x[NC], diag[NC], sup[NC];
    FUQ_CHUNKS {
      const V* d = ch[h].d;
      const V* e = ch[h].e;
      V norm = zero();
      for (int i = 0; i < n; ++i) {
        const V r = vabs(d[i]) + (i > 0 ? vabs(e[i - 1]) : zero()) + (i + 1 < n ? vabs(e[i]) : zero());
        norm = sel(r > norm, r, norm);  // fmax
      }
      norm = sel(norm > 0, norm, splat(1.0));
      tiny[h] = eps * norm;
      pertol[h] = 10 * eps * norm;
      ortol[h] = 1e-3 * norm;
      xprev[h] = cluster[h] = zero();
    }
    for (int j = 0; j < mmax; ++j) {
      const V jv = splat(double(j));
      FUQ_CHUNKS {
        x[h] = ch[h].qd[j];
        if (j > 0) {
          x[h] = sel(x[h] - xprev[h] < pertol[h], xprev[h] + pertol[h], x[h]);
          cluster[h] = sel(x[h] - xprev[h] > ortol[h], jv, cluster[h]);
        }
        xprev[h] = x[h];
        diag[h] = ch[h].d[0] - x[h];
        sup[h] = n > 1 ? ch[h].e[0] : zero();
      }
      for (int k = 0; k + 1 < n; ++k)  // PLU of T - xI, rows k, k+1 swapped where pv[k]
        FUQ_CHUNKS {
          const V* d = ch[h].d;
          const V* e = ch[h].e;
          V* u = ch[h].lu;  // u0, u1, u2, lm, pv (masks as V bits), n each
          const V sub = e[k], nd = d[k + 1] - x[h], ns = k + 2 < n ? e[k + 1] : zero();
          const M keep = vabs(diag[h]) >= vabs(sub);
          const V piv = sel(vabs(diag[h]) < tiny[h], copysign_pos(tiny[h], diag[h]), diag[h]);
          const V u0 = 1.0 / sel(keep, piv, sub);
          u[k] = u0;
          u[n + k] = sel(keep, sup[h], nd);
          u[2 * n + k] = sel(keep, zero(), ns);
          const V lm = sel(keep, sub, diag[h]) * u0;
          u[3 * n + k] = lm;
          u[4 * n + k] = (V)~keep;
          const V dk = nd - lm * sup[h], ds = sup[h] - lm * nd;
          diag[h] = sel(keep, dk, ds);
          sup[h] = sel(keep, ns, -lm * ns);
        }
      FUQ_CHUNKS ch[h].lu[n - 1] = 1.0 / sel(vabs(diag[h]) < tiny[h], copysign_pos(tiny[h], diag[h]), diag[h]);
      for (int i = 0; i < n; ++i) {  // the scalar code's start vector
        const V b0 = splat(inverse_iteration_start<double>(i, j));
        FUQ_CHUNKS ch[h].y[j * n + i] = b0;
      }
      int cmin = j;  // the first vector of any question's current cluster
      FUQ_CHUNKS for (int w = 0; w < W; ++w)
        if (j < int(mv[h][w]) && int(cluster[h][w]) < cmin) cmin = int(cluster[h][w]);
      for (int it = 0; it < 3; ++it) {
        // the two solves carry the entries of the chain in registers (b[k] of L into the next
        // step, the two newest of U) instead of reloading what the step before stored
        V cur[NC], x1[NC], x2[NC];
        FUQ_CHUNKS cur[h] = ch[h].y[j * n];
        for (int k = 0; k + 1 < n; ++k)  // solve L
          FUQ_CHUNKS {
            V* b = ch[h].y + j * n;
            const V* u = ch[h].lu;
            const M sw = (M)u[4 * n + k];
            const V nxt = b[k + 1];
            const V bk = sel(sw, nxt, cur[h]), bk1 = sel(sw, cur[h], nxt);
            b[k] = bk;
            cur[h] = bk1 - u[3 * n + k] * bk;
          }
        FUQ_CHUNKS x1[h] = x2[h] = zero();
        for (int k = n - 1; k >= 0; --k)  // solve U
          FUQ_CHUNKS {
            V* b = ch[h].y + j * n;
            const V* u = ch[h].lu;
            V r = k == n - 1 ? cur[h] : b[k];
            if (k + 1 < n) r -= u[n + k] * x1[h];
            if (k + 2 < n) r -= u[2 * n + k] * x2[h];
            x2[h] = x1[h];
            x1[h] = r * u[k];
            b[k] = x1[h];
          }
        FUQ_CHUNKS {
          V* b = ch[h].y + j * n;
          V nb = zero();
          for (int i = 0; i < n; ++i) {
            const V ab = vabs(b[i]);
            nb = sel(ab > nb, ab, nb);  // fmax
          }
          const V inb = 1.0 / nb;
          for (int i = 0; i < n; ++i) b[i] *= inb;
        }
        for (int c = cmin; c < j; ++c)  // orthogonalise within each question's cluster
          FUQ_CHUNKS {
            V* b = ch[h].y + j * n;
            const M in = splat(double(c)) >= cluster[h];
            const V* yc = ch[h].y + c * n;
            const V pr = dot(yc, b, 0, n);
            for (int i = 0; i < n; ++i) b[i] = sel(in, b[i] - pr * yc[i], b[i]);
          }
        FUQ_CHUNKS {
          V* b = ch[h].y + j * n;
          const V in2 = 1.0 / vsqrt(dot(b, b, 0, n));
          for (int i = 0; i < n; ++i) b[i] *= in2;
        }
      }
    }
#undef FUQ_CHUNKS
  }

  // Wq[k] (and Cq[k]): question k's block.
  template <class S>
  void load(int op, const S* const* Wq, const S* const* Cq, int ld) {
    for (int c = 0; c < NC; ++c) ch[c].load(op, n, Wq + c * W, Cq + c * W, ld);
  }

  // QLIteration::split_point's tolerance of a row from its two diagonal entries (symeig.h): e is
  // negligible where e² <= tol².
  static V split_tol(V da, V db) {
    const V sd = vabs(da) + vabs(db), fl = splat(QLIteration<double>::kSplitFloor);
    return std::numeric_limits<double>::epsilon() * sel(sd < fl, fl, sd);
  }

  // Deflation of chunk h for one QL round, step_rootfree's per question (l, iter: its first
  // unconverged row and its sweeps there; bit w of live: question w is not done): while the
  // first negligible row mm from l (bits: neg's bits | row n - 1) is l, row l has converged
  // (l + 1); if it is l + 1, the 2 x 2 block (l, l + 1) is solved in closed form (l + 2); else
  // the question needs a sweep over rows l..mm (m = mm, its first state recorded: e[l], d[l],
  // d[l + 1], g = d[mm], lv = l, mv = mm, and [lo, hi] widened), or fails after 64 sweeps at one
  // l. A question without a sweep gets m = -1 and the placeholders.
  static void solve2x2(double aa, double cc, double b2, double& big, double& small) {
    const double sm = aa + cc, df = aa - cc;
    const double rt = std::sqrt(df * df + 4 * b2);
    big = sm >= 0 ? 0.5 * (sm + rt) : 0.5 * (sm - rt);
    small = big != 0 ? (aa * cc - b2) / big : -0.5 * rt;
  }
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  // The same, the chunk's eight questions at once: per-lane shifts and counts of trailing zeros
  // instead of bit scans, gathers and scatters for the rows l, l + 1 and m.
  static __m512i tzcnt(__m512i x) {  // the index of the lowest set bit (x != 0): 2^k as a double is exact
    const __m512i low = _mm512_and_si512(x, _mm512_sub_epi64(_mm512_setzero_si512(), x));
    const __m512i ex = _mm512_srli_epi64(_mm512_castpd_si512(_mm512_cvtepu64_pd(low)), 52);
    return _mm512_sub_epi64(ex, _mm512_set1_epi64(1023));
  }
  void deflate(int h, M negh, long long* lq, long long* mq, long long* iq, unsigned& live, V& el, V& dl, V& dl1,
               V& g, V& lv, V& mv, int& lo, int& hi) {
    static_assert(W == 8, "one zmm of questions");
    const __m512i zero_i = _mm512_setzero_si512(), one = _mm512_set1_epi64(1), nn = _mm512_set1_epi64(n);
    const __m512i rows = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);  // entry (i, w) of a V array: i * 8 + w
    double* ds = reinterpret_cast<double*>(ch[h].qd);
    double* es = reinterpret_cast<double*>(ch[h].qe);
    const __m512i bits = _mm512_or_si512((__m512i)negh, _mm512_set1_epi64((long long)(1ull << (n - 1))));
    __m512i lk = _mm512_load_si512(lq), it = _mm512_load_si512(iq), mm = _mm512_set1_epi64(-1);
    __mmask8 pend = __mmask8(live), sweep = 0;
    while (pend) {
      // rows l, l + 1, ... that have converged (a run of set bits from l; ~x is 0 only when all
      // 64 are set, n = 64 and l = 0)
      const __m512i inv = _mm512_andnot_si512(_mm512_srlv_epi64(bits, lk), _mm512_set1_epi64(-1));
      const __m512i run = _mm512_mask_mov_epi64(tzcnt(inv), _mm512_cmpeq_epi64_mask(inv, zero_i),
                                                _mm512_set1_epi64(64));
      it = _mm512_mask_mov_epi64(it, pend & _mm512_cmpgt_epi64_mask(run, zero_i), zero_i);
      lk = _mm512_mask_add_epi64(lk, pend, lk, run);
      const __mmask8 done = pend & _mm512_cmpge_epi64_mask(lk, nn);
      live &= ~unsigned(done);
      pend &= ~done;
      if (!pend) break;
      const __m512i t = tzcnt(_mm512_srlv_epi64(bits, lk));  // >= 1: row n - 1's bit is set
      const __m512i i0 = _mm512_add_epi64(_mm512_slli_epi64(lk, 3), rows), i1 = _mm512_add_epi64(i0, _mm512_set1_epi64(8));
      const __mmask8 two = pend & _mm512_cmpeq_epi64_mask(t, one);
      if (two) {  // solve2x2, lane-wise
        const __m512d aa = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), two, i0, ds, 8);
        const __m512d cc = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), two, i1, ds, 8);
        const __m512d b2 = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), two, i0, es, 8);
        const __m512d sm = _mm512_add_pd(aa, cc), df = _mm512_sub_pd(aa, cc);
        const __m512d rt = _mm512_sqrt_pd(_mm512_add_pd(_mm512_mul_pd(df, df), _mm512_mul_pd(_mm512_set1_pd(4), b2)));
        const __m512d half = _mm512_set1_pd(0.5);
        const __m512d big = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(sm, _mm512_setzero_pd(), _CMP_GE_OQ),
                                                 _mm512_mul_pd(half, _mm512_sub_pd(sm, rt)),
                                                 _mm512_mul_pd(half, _mm512_add_pd(sm, rt)));
        const __m512d small = _mm512_mask_blend_pd(
            _mm512_cmp_pd_mask(big, _mm512_setzero_pd(), _CMP_NEQ_UQ), _mm512_mul_pd(_mm512_set1_pd(-0.5), rt),
            _mm512_div_pd(_mm512_sub_pd(_mm512_mul_pd(aa, cc), b2), big));
        _mm512_mask_i64scatter_pd(ds, two, i0, big, 8);
        _mm512_mask_i64scatter_pd(ds, two, i1, small, 8);
        _mm512_mask_i64scatter_pd(es, two, i0, _mm512_setzero_pd(), 8);
        lk = _mm512_mask_add_epi64(lk, two, lk, _mm512_set1_epi64(2));
        it = _mm512_mask_mov_epi64(it, two, zero_i);
      }
      __mmask8 need = pend & ~two;
      const __mmask8 fail = need & _mm512_cmpeq_epi64_mask(it, _mm512_set1_epi64(64));
      it = _mm512_mask_add_epi64(it, need, it, one);
      need &= ~fail;
      if (fail) {
        live &= ~unsigned(fail);
        for (int w = 0; w < W; ++w)
          if (fail >> w & 1) ch[h].ok[w] = false;
      }
      mm = _mm512_mask_add_epi64(mm, need, lk, t);
      sweep |= need;
      pend = two;  // those look again from l + 2
    }
    _mm512_store_si512(lq, lk);
    _mm512_store_si512(iq, it);
    _mm512_store_si512(mq, mm);
    const __m512i i0 = _mm512_add_epi64(_mm512_slli_epi64(lk, 3), rows);
    const __m512d onev = _mm512_set1_pd(1.0);
    el = (V)_mm512_mask_i64gather_pd(onev, sweep, i0, es, 8);
    dl = (V)_mm512_mask_i64gather_pd(_mm512_setzero_pd(), sweep, i0, ds, 8);
    dl1 = (V)_mm512_mask_i64gather_pd(onev, sweep, _mm512_add_epi64(i0, _mm512_set1_epi64(8)), ds, 8);
    g = (V)_mm512_mask_i64gather_pd(onev, sweep, _mm512_add_epi64(_mm512_slli_epi64(mm, 3), rows), ds, 8);
    lv = (V)_mm512_mask_cvtepi64_pd(_mm512_set1_pd(double(n)), sweep, lk);  // never active
    mv = (V)_mm512_mask_cvtepi64_pd(_mm512_set1_pd(-1.0), sweep, mm);
    if (sweep) {
      lo = std::min(lo, int(_mm512_mask_reduce_min_epi64(sweep, lk)));
      hi = std::max(hi, int(_mm512_mask_reduce_max_epi64(sweep, mm)));
    }
  }
  // e[l] = s p, d[l] = sigma + g: each sweep closed at its first row
  void close_sweeps(int h, const long long* lq, const long long* mq, V e_l, V d_l, M& neg) {
    const __m512i lk = _mm512_load_si512(lq);
    const __mmask8 sweep = _mm512_cmpge_epi64_mask(_mm512_load_si512(mq), _mm512_setzero_si512());
    const __m512i i0 = _mm512_add_epi64(_mm512_slli_epi64(lk, 3), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    _mm512_mask_i64scatter_pd(reinterpret_cast<double*>(ch[h].qe), sweep, i0, (__m512d)e_l, 8);
    _mm512_mask_i64scatter_pd(reinterpret_cast<double*>(ch[h].qd), sweep, i0, (__m512d)d_l, 8);
    // retest row l (its e and d are new; d[l + 1] was written by the sweep)
    const __m512d d1 = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), sweep, _mm512_add_epi64(i0, _mm512_set1_epi64(8)),
                                                reinterpret_cast<const double*>(ch[h].qd), 8);
    const V tol = split_tol(d_l, (V)d1);
    const __mmask8 t = sweep & _mm512_cmp_pd_mask((__m512d)e_l, (__m512d)(tol * tol), _CMP_LE_OQ);
    const __m512i bit = _mm512_sllv_epi64(_mm512_set1_epi64(1), lk);
    __m512i nb = _mm512_mask_andnot_epi64((__m512i)neg, sweep, bit, (__m512i)neg);
    nb = _mm512_mask_or_epi64(nb, t, nb, bit);
    neg = (M)nb;
  }
#else
  void deflate(int h, M negh, long long* lq, long long* mq, long long* iq, unsigned& live, V& el, V& dl, V& dl1,
               V& g, V& lv, V& mv, int& lo, int& hi) {
    double* ds0 = reinterpret_cast<double*>(ch[h].qd);
    double* es0 = reinterpret_cast<double*>(ch[h].qe);
    for (int w = 0; w < W; ++w) {
      double* ds = ds0 + w;  // entry i: ds[i * W]
      double* es = es0 + w;
      const unsigned long long bits = (unsigned long long)negh[w] | (1ull << (n - 1));
      el[w] = dl1[w] = g[w] = 1.0;
      dl[w] = 0.0;
      lv[w] = double(n);
      mv[w] = -1.0;
      mq[w] = -1;
      while (live >> w & 1) {
        const int lk = int(lq[w]);
        if (lk >= n) {
          live &= ~(1u << w);
          break;
        }
        const int mm = lk + __builtin_ctzll(bits >> lk);  // the first negligible row from l
        if (mm == lk) {
          ++lq[w];
          iq[w] = 0;
          continue;
        }
        if (mm == lk + 1) {  // a 2 x 2 block in closed form
          double big, small;
          solve2x2(ds[lk * W], ds[(lk + 1) * W], es[lk * W], big, small);
          ds[lk * W] = big;
          ds[(lk + 1) * W] = small;
          es[lk * W] = 0;
          lq[w] += 2;
          iq[w] = 0;
          continue;
        }
        if (iq[w]++ == 64) {
          ch[h].ok[w] = false;
          live &= ~(1u << w);
          break;
        }
        mq[w] = mm;
        el[w] = es[lk * W];
        dl[w] = ds[lk * W];
        dl1[w] = ds[(lk + 1) * W];
        g[w] = ds[mm * W];
        lv[w] = lk;
        mv[w] = mm;
        lo = lk < lo ? lk : lo;
        hi = mm > hi ? mm : hi;
        break;
      }
    }
  }
  void close_sweeps(int h, const long long* lq, const long long* mq, V e_l, V d_l, M& neg) {
    V d1 = zero();
    M bit = (M)zero();
    for (int w = 0; w < W; ++w)
      if (mq[w] >= 0) {
        const int j = int(lq[w]);
        ch[h].qe[j][w] = e_l[w];
        ch[h].qd[j][w] = d_l[w];
        d1[w] = ch[h].qd[j + 1][w];
        bit[w] = (long long)(1ull << j);
      }
    // retest row l (its e and d are new; d[l + 1] was written by the sweep)
    const V tol = split_tol(d_l, d1);
    neg = (neg & ~bit) | ((e_l <= tol * tol) & bit);
  }
#endif

  // QLIteration's root-free iteration (symeig.h) on the copies qd, qe, lane-wise; the
  // eigenvalues end in qd (unsorted). The QL runs in rounds: each question deflates (scalar,
  // the tests of step_rootfree) until it needs a sweep, then all the sweeps run in one pass
  // down the rows, each question active in its own range of rows.
  void ql() {
    for (int c = 0; c < NC; ++c)
      for (int i = 0; i < n; ++i) {
        ch[c].qd[i] = ch[c].d[i];
        ch[c].qe[i] = i + 1 < n ? ch[c].e[i] * ch[c].e[i] : ch[c].e[i];
      }
    alignas(64) long long l[L], m[L], iter[L];
    unsigned live[NC];  // bit w: question w of the chunk still has rows to converge
    for (int h = 0; h < NC; ++h) live[h] = 0;
    for (int k = 0; k < L; ++k) {
      l[k] = 0;
      iter[k] = 0;
      live[k / W] |= unsigned(ok[k]) << (k % W);
    }
    V s[NC], c[NC], pp[NC], g[NC];
    // each sweep's first state, recorded by the deflation: sigma's inputs e[l], d[l], d[l + 1],
    // g = d[m] and the rows l, m; a question without a sweep keeps placeholders (finite, and
    // never used: its rows are never active)
    V el[NC], dl[NC], dl1[NC], lv[NC], mv[NC];
    // step_rootfree's test of row j (e[j] negligible) as one bit per row and question: bit j of
    // neg[h][w] (row n - 1, where the scalar scan stops, is added by deflate). Every row once;
    // then each round's sweeps retest the rows they change as they write them, and the close
    // each sweep's first row, so that the bits always describe the current rows.
    M neg[NC];
    for (int h = 0; h < NC; ++h) neg[h] = (M)zero();
    for (int j = 0; j < n - 1; ++j) {
      M bit;
      for (int w = 0; w < W; ++w) bit[w] = (long long)(1ull << j);
      for (int h = 0; h < NC; ++h) {
        const V tol = split_tol(ch[h].qd[j], ch[h].qd[j + 1]);
        neg[h] |= (ch[h].qe[j] <= tol * tol) & bit;
      }
    }
    for (;;) {
      int lo = n, hi = -1;
      for (int h = 0; h < NC; ++h) deflate(h, neg[h], l + h * W, m + h * W, iter + h * W, live[h], el[h], dl[h],
                                           dl1[h], g[h], lv[h], mv[h], lo, hi);
      if (hi < 0) break;
      // each sweep's shift (Wilkinson, from the leading 2 x 2 block) and first state, written
      // across the chunks (their chains of square roots and divisions overlap)
      V sigma[NC], mv1[NC], rte[NC], hh[NC], r[NC];
#define FUQ_CHUNKS for (int h = 0; h < NC; ++h)
      FUQ_CHUNKS mv1[h] = mv[h] - 1.0;
      FUQ_CHUNKS rte[h] = vsqrt(el[h]);
      FUQ_CHUNKS hh[h] = (dl1[h] - dl[h]) / (2.0 * rte[h]);
      FUQ_CHUNKS r[h] = vsqrt(hh[h] * hh[h] + 1.0);
      FUQ_CHUNKS sigma[h] = dl[h] - rte[h] / (hh[h] + copysign_pos(r[h], hh[h]));
      FUQ_CHUNKS {
        c[h] = splat(1.0);
        s[h] = zero();
        g[h] = g[h] - sigma[h];  // d[m] - sigma
        pp[h] = g[h] * g[h];
      }
#undef FUQ_CHUNKS
      // The sweeps, row by row: question k rotates at rows m_k - 1 down to l_k; elsewhere its
      // state stands still (before its rows: the first state; after them: the last, from which
      // its sweep is closed below). One rotation is written operation by operation across the
      // NC chunks, so that the instruction stream interleaves their independent chains (an
      // out-of-order window cannot overlap chains this long if they come one after another).
      V iv = splat(double(hi - 1));
      M rbit;  // bit i + 1
      for (int w = 0; w < W; ++w) rbit[w] = (long long)(1ull << hi);
      for (int i = hi - 1; i >= lo; --i, iv -= 1.0) {
        M act[NC], acte[NC];
        V bb[NC], alpha[NC], rr[NC], inv[NC], sr[NC], cn[NC], sn[NC], gn[NC], dn[NC], pn[NC];
#define FUQ_CHUNKS for (int h = 0; h < NC; ++h)
        FUQ_CHUNKS {
          const M ge = iv >= lv[h];
          act[h] = ge & (iv < mv[h]);
          acte[h] = ge & (iv < mv1[h]);  // e[i + 1] is kept at a sweep's first row
          bb[h] = ch[h].qe[i];
          alpha[h] = ch[h].qd[i];
        }
        FUQ_CHUNKS rr[h] = pp[h] + bb[h];
        FUQ_CHUNKS inv[h] = 1.0 / rr[h];
        FUQ_CHUNKS sr[h] = s[h] * rr[h];
        FUQ_CHUNKS cn[h] = pp[h] * inv[h];
        FUQ_CHUNKS sn[h] = bb[h] * inv[h];
        FUQ_CHUNKS gn[h] = cn[h] * (alpha[h] - sigma[h]) - sn[h] * g[h];
        FUQ_CHUNKS dn[h] = g[h] + (alpha[h] - gn[h]);
        FUQ_CHUNKS pn[h] = gn[h] * gn[h] / cn[h];
        FUQ_CHUNKS pn[h] = sel(cn[h] != 0, pn[h], c[h] * bb[h]);  // c == 0: p = oldc * bb
        FUQ_CHUNKS {
          ch[h].qe[i + 1] = sel(acte[h], sr[h], ch[h].qe[i + 1]);
          ch[h].qd[i + 1] = sel(act[h], dn[h], ch[h].qd[i + 1]);
          c[h] = sel(act[h], cn[h], c[h]);
          s[h] = sel(act[h], sn[h], s[h]);
          g[h] = sel(act[h], gn[h], g[h]);
          pp[h] = sel(act[h], pn[h], pp[h]);
        }
        if (i + 1 < n - 1)  // retest row i + 1: e[i + 1], d[i + 1] written now, d[i + 2] before
          FUQ_CHUNKS {
            const V tol = split_tol(ch[h].qd[i + 1], ch[h].qd[i + 2]);
            neg[h] = (neg[h] & ~rbit) | ((ch[h].qe[i + 1] <= tol * tol) & rbit);
          }
        rbit = (M)((unsigned long long __attribute__((vector_size(FUQ_VECTOR_BYTES))))rbit >> 1);
#undef FUQ_CHUNKS
      }
      for (int h = 0; h < NC; ++h) close_sweeps(h, l + h * W, m + h * W, s[h] * pp[h], sigma[h] + g[h], neg[h]);
    }
  }
};

}  // namespace FUQ_ISA
}  // namespace cpu
}  // namespace flashuq
