// Inv-Entropy and its family for one question (docs/methods.md#inv-entropy; Song, Ji, Shi, Lai, Al Kontar,
// NeurIPS 2025): two random walks, on the inputs' and the outputs' similarity graphs, composed by
// Bayes' rule. Serial per question (N is ~10); the CPU runs one question per OpenMP iteration.
//
// One draw picks N rows/columns of the output matrix sy (and of sx when it is full):
//   Px = SX / rowsum, Py = SY / rowsum               row-stochastic walks
//   pY = (1/N) 1ᵀ Py                                  one step of the output walk from uniform
//   d_i = Σ_k Py[i,k] Px[k,i]                         diag(Py Px) = P(x_i | y_i), A never formed
//   pX = w Px, w = pY Py ("reference") or pY ("paper")
//   b_i = d_i pY_i / pX_i                             P(y_i | x_i) by Bayes (0 where the joint is 0)
//   inv = -Σ d ln d, ni = -Σ b ln b (0 ln 0 = 0), wd = mean |sort pX - sort pY|,
//   max_py = max pY, max_b = max b
// A zero row sum makes the draw NaN; a subnormal one divides its row (1 / sum overflows). Every
// field is averaged over the S draws.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu_math.h"  // log_f64
#include "hd.h"
#include "symeig.h"  // dot()

namespace flashuq {
inline namespace FUQ_ISA_NS {

constexpr int kInvEntropyMaxN = 64;

// x ln x, 0 ln 0 = 0. On the CPU ln is log_f64 (within 1 ulp of std::log, and loops over it
// vectorise), so every CPU build gives the same bits.
#if defined(__CUDA_ARCH__)
template <class T>
FUQ_HD T xlogx(T x) { return x == T(0) ? T(0) : x * std::log(x); }
#else
template <class T>
inline T xlogx(T x) { return x == T(0) ? T(0) : x * T(cpu::log_f64(double(x))); }
#endif

// Σ x[0..n) in four interleaved partial sums (one running sum is a chain of dependent adds),
// counting the negative entries into `negative`.
template <class T>
FUQ_HD T row_sum(const T* __restrict__ x, int n, int64_t& negative) {
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t neg = 0;
  int k = 0;
  for (; k + 3 < n; k += 4) {
    s0 += x[k];
    s1 += x[k + 1];
    s2 += x[k + 2];
    s3 += x[k + 3];
  }
  for (; k < n; ++k) s0 += x[k];
  for (k = 0; k < n; ++k) neg += x[k] < 0;
  negative += neg;
  return (s0 + s1) + (s2 + s3);
}

// sx: [Mx, Mx] (row stride Mx), sy: [M, M]; keep: S x N indices into sy (nullptr: S = 1, the
// identity, M = N). sx is indexed through keep as well when Mx == M > N (a full input matrix),
// else it is the [N, N] matrix itself. out5: inv, ni, wd, max_py, max_b; px, py: [N] means.
// With all == false only out5[0] (Inv-Entropy itself, which needs neither pX nor pY) is computed.
// Returns the number of negative similarities read (the caller rejects them).
template <class T, class S>
FUQ_HD int64_t inv_entropy_question(const S* sx, int Mx, const S* sy, int M, const int64_t* keep, int nS, int N,
                                    bool paper, bool all, T* out5, T* px_mean, T* py_mean) {
  int64_t negative = 0;
  T PxT[kInvEntropyMaxN * kInvEntropyMaxN], Py[kInvEntropyMaxN * kInvEntropyMaxN];
  T pY[kInvEntropyMaxN], pX[kInvEntropyMaxN], w[kInvEntropyMaxN], a[kInvEntropyMaxN], b[kInvEntropyMaxN];
  int iy[kInvEntropyMaxN], ix[kInvEntropyMaxN];
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const bool full_x = Mx == M && M != N;
  for (int f = 0; f < 5; ++f) out5[f] = 0;
  for (int i = 0; i < N; ++i) px_mean[i] = py_mean[i] = 0;
  for (int s = 0; s < nS; ++s) {
    for (int i = 0; i < N; ++i) {
      iy[i] = keep ? int(keep[s * N + i]) : i;
      ix[i] = full_x ? iy[i] : i;
    }
    bool bad = false;
    for (int i = 0; i < N; ++i) {  // row-normalised walks on the drawn rows and columns
      T* __restrict__ py = Py + i * N;
      const S* rowy = sy + iy[i] * M;
      for (int k = 0; k < N; ++k) py[k] = T(rowy[iy[k]]);
      const T ry = row_sum(py, N, negative);
      bad = bad || ry == 0;
      const T uy = ry == 0 ? T(1) : T(1) / ry;
      if (uy <= std::numeric_limits<T>::max())
        for (int k = 0; k < N; ++k) py[k] *= uy;
      else  // a subnormal row sum: 1 / ry overflowed
        for (int k = 0; k < N; ++k) py[k] /= ry;
    }
    // Px is kept transposed (PxT[i][k] = Px[k][i]): every product below then reads two rows
    for (int i = 0; i < N; ++i) {  // row i of Px = column i of PxT
      const S* rowx = sx + ix[i] * Mx;
      for (int k = 0; k < N; ++k) a[k] = T(rowx[ix[k]]);
      const T rx = row_sum(a, N, negative);
      bad = bad || rx == 0;
      const T ux = rx == 0 ? T(1) : T(1) / rx;
      if (ux <= std::numeric_limits<T>::max())
        for (int k = 0; k < N; ++k) PxT[k * N + i] = a[k] * ux;
      else
        for (int k = 0; k < N; ++k) PxT[k * N + i] = a[k] / rx;
    }
    if (!all) {
      for (int i = 0; i < N; ++i) a[i] = dot(Py + i * N, PxT + i * N, 0, N);
      for (int i = 0; i < N; ++i) a[i] = xlogx(a[i]);
      T inv = 0;
      for (int i = 0; i < N; ++i) inv -= a[i];
      out5[0] += bad ? nan : inv;
      continue;
    }
    for (int k = 0; k < N; ++k) {
      T s1 = 0;
      for (int i = 0; i < N; ++i) s1 += Py[i * N + k];
      pY[k] = s1 / T(N);
    }
    for (int k = 0; k < N; ++k) {
      T s1 = 0;
      if (paper) s1 = pY[k];
      else
        for (int i = 0; i < N; ++i) s1 += pY[i] * Py[i * N + k];
      w[k] = s1;
    }
    T maxpy = -std::numeric_limits<T>::infinity(), maxb = maxpy;
    for (int i = 0; i < N; ++i) {
      const T d = dot(Py + i * N, PxT + i * N, 0, N), x = dot(PxT + i * N, w, 0, N);
      pX[i] = x;
      a[i] = d;
      const T num = d * pY[i];
      b[i] = num == 0 ? T(0) : num / x;
      maxpy = pY[i] > maxpy || pY[i] != pY[i] ? pY[i] : maxpy;  // NaN wins, as torch's max
      maxb = b[i] > maxb || b[i] != b[i] ? b[i] : maxb;
    }
    T inv = 0, ni = 0;  // the logs in loops of their own (vectorised on the CPU)
    for (int i = 0; i < N; ++i) a[i] = xlogx(a[i]);
    for (int i = 0; i < N; ++i) inv -= a[i];
    for (int i = 0; i < N; ++i) a[i] = xlogx(b[i]);
    for (int i = 0; i < N; ++i) ni -= a[i];
    // Wasserstein-1 between the two value sets (scipy with the values as samples): sorted differences
    for (int i = 0; i < N; ++i) {
      a[i] = pX[i];
      w[i] = pY[i];
    }
    for (int i = 1; i < N; ++i)
      for (int j = i; j > 0 && a[j] < a[j - 1]; --j) {
        const T t = a[j]; a[j] = a[j - 1]; a[j - 1] = t;
      }
    for (int i = 1; i < N; ++i)
      for (int j = i; j > 0 && w[j] < w[j - 1]; --j) {
        const T t = w[j]; w[j] = w[j - 1]; w[j - 1] = t;
      }
    T wd = 0;
    for (int i = 0; i < N; ++i) wd += std::fabs(a[i] - w[i]);
    wd /= T(N);
    const T f5[5] = {inv, ni, wd, maxpy, maxb};
    for (int f = 0; f < 5; ++f) out5[f] += bad ? nan : f5[f];
    for (int i = 0; i < N; ++i) {
      px_mean[i] += bad ? nan : pX[i];
      py_mean[i] += bad ? nan : pY[i];
    }
  }
  for (int f = 0; f < 5; ++f) out5[f] /= T(nS);
  for (int i = 0; i < N; ++i) {
    px_mean[i] /= T(nS);
    py_mean[i] /= T(nS);
  }
  return negative;
}

}  // namespace FUQ_ISA_NS
}  // namespace flashuq
