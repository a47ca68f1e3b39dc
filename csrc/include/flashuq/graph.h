// Per-question similarity-graph spectra (METHODS.md §5.7-5.9), written once for a team of
// workers (see symeig.h) and compiled for the CPU (one question per OpenMP thread) and CUDA
// (one question per block). Each function reads the leading n x n block of one question's
// similarity matrix W (any floating type S, row stride ld), symmetrises it as (W + Wᵀ)/2 —
// LM-Polygraph's step for an entailment matrix, a no-op for a symmetric one — and writes the
// question's results. Non-finite input, a non-positive degree or a QL failure give NaN.
#pragma once

#include <cstdint>

#include "symeig.h"

namespace flashuq {

enum GraphOp : int {
  kGraphEigvalues = 0,   // eigenvalues (and eigenvectors) of W itself
  kGraphLaplacian = 1,   // EigV and Eccentricity of the normalised Laplacian
  kGraphHeatEntropy = 2  // von Neumann entropy of the normalised heat kernel (KLE)
};

template <class T>
FUQ_HD T graph_nan() { return std::numeric_limits<T>::quiet_NaN(); }

// w.a <- (W + Wᵀ)/2 (rows owned by member i % size); w.v[i] <- the row sums (degrees).
// Returns whether every entry is finite (identical on every member; ends synchronised).
template <class T, class S, class Team>
FUQ_HD bool load_symmetric(const Team& tm, const S* W, int ld, int n, EigWork<T>& w) {
  const int r0 = tm.rank(), nt = tm.size();
  for (int i = r0; i < n; i += nt) {
    T deg = 0;
    for (int j = 0; j < n; ++j) {
      const T x = (T(W[i * ld + j]) + T(W[j * ld + i])) * T(0.5);
      w.a[i * n + j] = x;
      deg += x;
    }
    w.v[i] = deg;
  }
  tm.sync();
  bool finite = true;
  for (int i = 0; i < n; ++i) finite = finite && std::isfinite(w.v[i]);
  return finite;  // a NaN or inf entry makes its row sum non-finite
}

// Generic: eigenvalues ascending into vals[0..n), eigenvectors (columns) into vecs (n x n,
// row stride ldv) when vecs != nullptr.
template <class T, class S, class R, class Team>
FUQ_HD void graph_eigvalues(const Team& tm, const S* W, int ld, int n, EigWork<T>& w, R* vals, R* vecs,
                            int ldv) {
  bool ok = load_symmetric(tm, W, ld, n, w);
  T scale = 0;  // work on a / max|a|, so that QL's squares cannot overflow whatever the input
  if (ok) {
    for (int i = 0; i < n * n; ++i) scale = std::fmax(scale, std::fabs(w.a[i]));
    tm.sync();  // every member has read the whole matrix before anyone rescales its rows
    if (scale > 0)
      for (int i = tm.rank(); i < n; i += tm.size())
        for (int j = 0; j < n; ++j) w.a[i * n + j] /= scale;
    ok = sym_eig(tm, w, n, vecs != nullptr);
  }
  if (tm.rank() == 0)
    for (int i = 0; i < n; ++i) vals[i] = ok ? R(w.dl[i] * scale) : graph_nan<R>();
  if (vecs)
    for (int i = tm.rank(); i < n; i += tm.size())
      for (int j = 0; j < n; ++j) vecs[i * ldv + j] = ok ? R(w.zt[j * n + i]) : graph_nan<R>();
}

// The symmetric normalised Laplacian L = I - D^{-1/2} W D^{-1/2}, D = diag(row sums), in w.a.
// False (every member) if a degree is not positive and finite: LM-Polygraph's inv(sqrt(D))
// would fail or give NaN there.
template <class T, class S, class Team>
FUQ_HD bool load_normalized_laplacian(const Team& tm, const S* W, int ld, int n, EigWork<T>& w) {
  if (!load_symmetric(tm, W, ld, n, w)) return false;
  for (int i = 0; i < n; ++i)
    if (!(w.v[i] > 0)) return false;
  for (int i = tm.rank(); i < n; i += tm.size()) {
    const T si = T(1) / std::sqrt(w.v[i]);
    for (int j = 0; j < n; ++j)
      w.a[i * n + j] = (i == j ? T(1) : T(0)) - w.a[i * n + j] * si / std::sqrt(w.v[j]);
  }
  tm.sync();
  return true;
}

// EigV = Σ_k max(0, 1 - λ_k) over the eigenvalues of L (LM-Polygraph eig_val_laplacian.py) and,
// with `ecc` != nullptr, Eccentricity (eccentricity.py): the eigenvectors with λ < threshold,
// each centred over the responses, U = Frobenius norm of the centred n x m matrix; per_sample[i]
// is the norm of response i's centred row (the per-response norms of Lin et al. 2023).
template <class T, class S, class R, class Team>
FUQ_HD void graph_laplacian(const Team& tm, const S* W, int ld, int n, EigWork<T>& w, T threshold, R* eigv,
                            R* ecc, R* per_sample) {
  const bool vectors = ecc != nullptr;
  bool ok = load_normalized_laplacian(tm, W, ld, n, w);
  if (ok) ok = sym_eig(tm, w, n, vectors);
  if (tm.rank() == 0) {
    T s = 0;
    for (int k = 0; k < n; ++k) s += w.dl[k] < 1 ? 1 - w.dl[k] : T(0);
    *eigv = ok ? R(s) : graph_nan<R>();
  }
  if (!vectors) return;
  if (!ok) {
    if (tm.rank() == 0) *ecc = graph_nan<R>();
    for (int i = tm.rank(); i < n; i += tm.size()) per_sample[i] = graph_nan<R>();
    return;
  }
  int m = 0;  // eigenvalues are ascending: the kept ones are the first m
  while (m < n && w.dl[m] < threshold) ++m;
  for (int j = tm.rank(); j < m; j += tm.size()) {  // eigenvector means and centred sums of squares
    const T* u = w.zt + j * n;
    T mean = 0;
    for (int i = 0; i < n; ++i) mean += u[i];
    mean /= n;
    T ss = 0;
    for (int i = 0; i < n; ++i) ss += (u[i] - mean) * (u[i] - mean);
    w.v[j] = mean;
    w.p[j] = ss;
  }
  tm.sync();
  for (int i = tm.rank(); i < n; i += tm.size()) {
    T ss = 0;
    for (int j = 0; j < m; ++j) ss += (w.zt[j * n + i] - w.v[j]) * (w.zt[j * n + i] - w.v[j]);
    per_sample[i] = R(std::sqrt(ss));
  }
  if (tm.rank() == 0) {
    T ss = 0;
    for (int j = 0; j < m; ++j) ss += w.p[j];
    *ecc = R(std::sqrt(ss));
  }
}

// Kernel Language Entropy's von Neumann entropy (LM-Polygraph kernel_language_entropy.py):
// L = diag(row sums of W) - W, heat kernel Kh = expm(-t L) = Z diag(e^{-t λ}) Zᵀ, normalised
// Kh_ij / ((√Kh_ii + 1e-12)(√Kh_jj + 1e-12)) / n, VNE = -Σ λ ln λ over its eigenvalues with
// |λ| > 1e-8. (The caller divides by ln n.)
template <class T, class S, class R, class Team>
FUQ_HD void graph_heat_entropy(const Team& tm, const S* W, int ld, int n, EigWork<T>& w, T t, R* vne) {
  bool ok = load_symmetric(tm, W, ld, n, w);
  if (ok) {
    for (int i = tm.rank(); i < n; i += tm.size())
      for (int j = 0; j < n; ++j) w.a[i * n + j] = (i == j ? w.v[i] : T(0)) - w.a[i * n + j];
    ok = sym_eig(tm, w, n, true);
  }
  if (ok) {
    for (int k = 0; k < n; ++k) w.el[k] = std::exp(-t * w.dl[k]);  // private copy, every member
    for (int i = tm.rank(); i < n; i += tm.size())
      for (int j = 0; j < n; ++j) {
        T s = 0;
        for (int k = 0; k < n; ++k) s += w.zt[k * n + i] * w.el[k] * w.zt[k * n + j];
        w.a[i * n + j] = s;
      }
    tm.sync();
    for (int i = tm.rank(); i < n; i += tm.size()) w.v[i] = std::sqrt(w.a[i * n + i]) + T(1e-12);
    tm.sync();
    for (int i = tm.rank(); i < n; i += tm.size())
      for (int j = 0; j < n; ++j) w.a[i * n + j] /= w.v[i] * w.v[j] * T(n);
    tm.sync();
    ok = sym_eig(tm, w, n, false);
  }
  if (tm.rank() == 0) {
    T h = 0;
    for (int k = 0; k < n; ++k)
      if (std::fabs(w.dl[k]) > T(1e-8)) h -= w.dl[k] * std::log(w.dl[k]);  // λ < -1e-8 -> NaN, as numpy
    *vne = ok ? R(h) : graph_nan<R>();
  }
}

// One question q of a batch (the CPU loop body and the CUDA block body): W is contiguous
// [Q, K, K], the question's leading n x n block is used; outputs as GraphArgs documents
// (entries past n are not touched; an empty question gets NaN in its scalar outputs).
template <class T, class S, class Team>
FUQ_HD void graph_question(const Team& tm, int op, const S* W, int64_t q, int K, int n, EigWork<T>& w,
                           T threshold, T t, S* o0, S* o1, S* o2) {
  const S* Wq = W + q * K * K;
  const bool lead = tm.rank() == 0;
  if (op == kGraphEigvalues) {
    if (n > 0) graph_eigvalues(tm, Wq, K, n, w, o0 + q * K, o1 ? o1 + q * K * K : static_cast<S*>(nullptr), K);
  } else if (op == kGraphLaplacian) {
    if (n > 0) {
      graph_laplacian(tm, Wq, K, n, w, threshold, o0 + q, o1 ? o1 + q : static_cast<S*>(nullptr),
                      o1 ? o2 + q * K : static_cast<S*>(nullptr));
    } else if (lead) {
      o0[q] = graph_nan<S>();
      if (o1) o1[q] = graph_nan<S>();
    }
  } else {
    if (n > 0) graph_heat_entropy(tm, Wq, K, n, w, t, o0 + q);
    else if (lead) o0[q] = graph_nan<S>();
  }
}

}  // namespace flashuq
