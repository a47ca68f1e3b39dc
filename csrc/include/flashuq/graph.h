// Per-question similarity-graph spectra (docs/methods.md#graph-methods), written once for a team of
// workers (see symeig.h) and compiled for the CPU (one question per OpenMP thread, several
// questions' QL iterations interleaved) and CUDA (one question per block). Each question reads
// the leading n x n block of its similarity matrix W (any floating type S, row stride K),
// symmetrises it as (W + Wᵀ)/2 — LM-Polygraph's step for an entailment matrix, a no-op for a
// symmetric one — and writes its results. Non-finite input, a non-positive degree (Laplacian)
// or a QL failure give NaN.
//
// A question is a GraphTask in stages, each ending in a pending QL iteration:
//   bool pending = task.begin(tm);
//   while (pending) { run task.ql to completion; pending = task.resume(tm); }
#pragma once

#include <cstdint>

#include "symeig.h"

namespace flashuq {
inline namespace FUQ_ISA_NS {

enum GraphOp : int {
  kGraphEigvalues = 0,   // eigenvalues (and eigenvectors) of W itself
  kGraphLaplacian = 1,   // EigV and Eccentricity of the normalised Laplacian
  kGraphHeatEntropy = 2,    // von Neumann entropy of the normalised heat kernel (KLE)
  kGraphNliHeatEntropy = 3  // the same of KLE's W, built from NLI probabilities E and C (nli_weight)
};

FUQ_HD bool graph_heat(int op) { return op == kGraphHeatEntropy || op == kGraphNliHeatEntropy; }

// Kernel Language Entropy's weight of responses i and j from the entailment and contradiction
// probabilities E, C (docs/methods.md#kle): Es + ½(2 - Es - Cs) with Es = E_ij + E_ji and
// Cs = C_ij + C_ji, in the inputs' precision and in the order of the method's torch code
// (2 - Es, - Cs, · ½, + Es), so that both give the same bits; symmetric bit for bit (a + b is b + a).
template <class S>
FUQ_HD S nli_weight(const S* E, const S* C, int ld, int i, int j) {
  const S es = E[i * ld + j] + E[j * ld + i], cs = C[i * ld + j] + C[j * ld + i];
  return ((S(2) - es) - cs) * S(0.5) + es;
}

template <class T>
FUQ_HD T graph_nan() { return std::numeric_limits<T>::quiet_NaN(); }

// w.a <- (W + Wᵀ)/2 (rows owned by member i % size), W times `pre` (1, or a power of two: exact);
// w.v[i] <- the row sums (degrees). With C,
// W holds E and the matrix is nli_weight's (symmetrised all the same, which keeps it: the bits
// are those of passing that matrix as W). Returns whether every entry is finite (identical on
// every member; ends synchronised).
template <class T, class S, class Team>
FUQ_HD bool load_symmetric(const Team& tm, const S* W, const S* C, int ld, int n, EigWork<T>& w, T pre = T(1)) {
  const int r0 = tm.rank(), nt = tm.size();
  for (int i = r0; i < n; i += nt) {
    T deg = 0;
    for (int j = 0; j < n; ++j) {
      const T wij = (C ? T(nli_weight(W, C, ld, i, j)) : T(W[i * ld + j])) * pre;
      const T wji = C ? wij : T(W[j * ld + i]) * pre;
      const T x = (wij + wji) * T(0.5);
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

template <class T, class S, class R>
struct GraphTask {
  // inputs
  int op, K, n;
  const S* W;           // this question's [K, K] block (kGraphNliHeatEntropy: of E)
  const S* C;           // kGraphNliHeatEntropy: this question's block of C; otherwise nullptr
  T threshold, t;
  // outputs of this question (see GraphArgs of the drivers): o0 scalar or [K] values, o1 scalar /
  // [K, K] vectors or nullptr, o2 [K] per-sample or nullptr
  R *o0, *o1, *o2;
  // state
  EigWork<T> w;
  QLIteration<T> ql;
  T scale, pre;
  int stage;

  // Load, reduce and start the first QL; false when the question is finished already.
  template <class Team>
  FUQ_HD bool begin(const Team& tm) {
    stage = 0;
    if (n == 0) {
      fail(tm);
      return false;
    }
    pre = T(1);
    if (!load_symmetric(tm, W, C, K, n, w)) {
      // sym_eig of finite entries near the largest double, where (a + b)/2 or a row sum overflowed:
      // the same on W 2^-128 (exact), the eigenvalues scaled back at the end
      if (op != kGraphEigvalues) return fail(tm);
      pre = T(0x1p-128);
      tm.sync();  // every member is done with w before it is written again
      if (!load_symmetric(tm, W, C, K, n, w, pre)) return fail(tm);
    }
    if (op == kGraphEigvalues) {
      scale = 0;  // work on a / max|a|, so that QL's squares cannot overflow whatever the input
      for (int i = 0; i < n * n; ++i) scale = std::fmax(scale, std::fabs(w.a[i]));
      tm.sync();  // every member has read the whole matrix before anyone rescales its rows
      if (scale > 0)
        for (int i = tm.rank(); i < n; i += tm.size())
          for (int j = 0; j < n; ++j) w.a[i * n + j] /= scale;
    } else if (op == kGraphLaplacian) {
      // L = I - D^{-1/2} W D^{-1/2}; a degree that is not positive (LM-Polygraph's inv(sqrt(D))
      // fails or gives NaN there) ends the question with NaN
      for (int i = 0; i < n; ++i)
        if (!(w.v[i] > 0)) return fail(tm);
      for (int i = tm.rank(); i < n; i += tm.size()) w.p[i] = T(1) / std::sqrt(w.v[i]);
      tm.sync();  // n square roots and divisions, not n²
      // W_ij (p_i p_j): bitwise symmetric, as W is (the CPU lanes reduce its lower triangle alone)
      for (int i = tm.rank(); i < n; i += tm.size())
        for (int j = 0; j < n; ++j) {
          const T pp = w.p[i] * w.p[j];
          // two degrees below ~1e-154 overflow p_i p_j: then (W_ij p_lo) p_hi, still symmetric
          const T x = pp <= std::numeric_limits<T>::max() ? w.a[i * n + j] * pp
                                                          : (w.a[i * n + j] * w.p[i < j ? i : j]) * w.p[i < j ? j : i];
          w.a[i * n + j] = (i == j ? T(1) : T(0)) - x;
        }
    } else {  // L = diag(row sums) - W
      for (int i = tm.rank(); i < n; i += tm.size())
        for (int j = 0; j < n; ++j) w.a[i * n + j] = (i == j ? w.v[i] : T(0)) - w.a[i * n + j];
    }
    tm.sync();
    if (!sym_eig_begin(tm, w, n, want_vectors(), ql)) return fail(tm);
    return true;
  }

  // Called when ql is done: finish this stage; true if another QL was started.
  template <class Team>
  FUQ_HD bool resume(const Team& tm) {
    if (!sym_eig_end(tm, w, n, ql)) return fail(tm);
    const bool lead = tm.rank() == 0;
    if (op == kGraphEigvalues) {
      if (lead)
        for (int i = 0; i < n; ++i) o0[i] = R(w.dl[i] * scale / pre);
      if (o1)
        for (int i = tm.rank(); i < n; i += tm.size())
          for (int j = 0; j < n; ++j) o1[i * K + j] = R(w.zt[j * n + i]);
      return false;
    }
    if (op == kGraphLaplacian) {
      laplacian_scores(tm);
      return false;
    }
    if (stage == 0) {  // heat kernel Kh = Z diag(e^{-t λ}) Zᵀ, normalised; then its eigenvalues
      for (int k = 0; k < n; ++k) w.el[k] = std::exp(-t * w.dl[k]);  // private copy, every member
      for (int i = tm.rank(); i < n; i += tm.size()) {  // row i: Σ_k (z_ki e_k) z_k,: in k order
        T* __restrict__ ai = w.a + i * n;
        for (int j = 0; j < n; ++j) ai[j] = 0;
        for (int k = 0; k < n; ++k) {  // (a row update per k: n independent sums, contiguous)
          const T zk = w.zt[k * n + i] * w.el[k];
          const T* __restrict__ zr = w.zt + k * n;
          for (int j = 0; j < n; ++j) ai[j] += zk * zr[j];
        }
      }
      tm.sync();
      for (int i = tm.rank(); i < n; i += tm.size()) w.v[i] = std::sqrt(w.a[i * n + i]) + T(1e-12);
      tm.sync();
      for (int i = tm.rank(); i < n; i += tm.size())
        for (int j = 0; j < n; ++j) w.a[i * n + j] /= w.v[i] * w.v[j] * T(n);
      tm.sync();
      stage = 1;
      if (!sym_eig_begin(tm, w, n, false, ql)) return fail(tm);
      return true;
    }
    if (lead) {  // VNE = -Σ λ ln λ over |λ| > 1e-8 (λ < -1e-8 gives NaN, as numpy's log)
      T h = 0;
      for (int k = 0; k < n; ++k)
        if (std::fabs(w.dl[k]) > T(1e-8)) h -= w.dl[k] * std::log(w.dl[k]);
      *o0 = R(h);
    }
    return false;
  }

 private:
  FUQ_HD bool want_vectors() const {
    // KLE: all vectors for the heat kernel; Eccentricity: only a few, by inverse iteration after
    // the eigenvalues (laplacian_scores)
    if (graph_heat(op)) return stage == 0;
    return op == kGraphEigvalues && o1 != nullptr;
  }

  // NaN into every output of the question (the eigenvalue outputs are pre-filled by the caller).
  template <class Team>
  FUQ_HD bool fail(const Team& tm) {
    if (op == kGraphEigvalues) {
      if (tm.rank() == 0)
        for (int i = 0; i < n; ++i) o0[i] = graph_nan<R>();
      if (o1)
        for (int i = tm.rank(); i < n; i += tm.size())
          for (int j = 0; j < n; ++j) o1[i * K + j] = graph_nan<R>();
      return false;
    }
    if (tm.rank() == 0) {
      *o0 = graph_nan<R>();
      if (op == kGraphLaplacian && o1) *o1 = graph_nan<R>();
    }
    if (op == kGraphLaplacian && o2)
      for (int i = tm.rank(); i < n; i += tm.size()) o2[i] = graph_nan<R>();
    return false;
  }

  // EigV = Σ_k max(0, 1 - λ_k) (LM-Polygraph eig_val_laplacian.py) and, with o1, Eccentricity
  // (eccentricity.py): the eigenvectors with λ < threshold, each centred over the responses,
  // U = Frobenius norm of the centred n x m matrix; o2[i] (when o2 is given) = the norm of response
  // i's centred row.
  template <class Team>
  FUQ_HD void laplacian_scores(const Team& tm) {
    if (tm.rank() == 0) {
      T s = 0;
      for (int k = 0; k < n; ++k) s += w.dl[k] < 1 ? 1 - w.dl[k] : T(0);
      *o0 = R(s);
    }
    if (!o1) return;
    int m = 0;  // eigenvalues are ascending: the kept ones are the first m
    while (m < n && w.dl[m] < threshold) ++m;
    // their eigenvectors into zt's rows 0..m-1: of the tridiagonal (d, e) first, then mapped back
    if (tm.rank() == 0) {
      tridiagonal_inverse_iteration(w.d, w.e, n, w.dl, m, w.zt, w.s);
      // c = Qᵀ1 (into the scratch the iteration is done with): eigenvector u_j = Q y_j has the mean
      // (c·y_j)/n and ‖u_j − mean_j 1‖ = ‖y_j − mean_j c‖ (Q is orthogonal), so Eccentricity
      // needs no vector mapped back
      for (int i = 0; i < n; ++i) w.s[i] = T(1);
      apply_reflectors_transposed(w.a, w.beta, n, w.s);
    }
    tm.sync();
    for (int j = tm.rank(); j < m; j += tm.size()) {  // centred sums of squares, in T's basis
      const T* y = w.zt + j * n;
      const T mean = dot(w.s, y, 0, n) / T(n);
      T ss = 0;
      for (int i = 0; i < n; ++i) ss += (y[i] - mean * w.s[i]) * (y[i] - mean * w.s[i]);
      w.p[j] = ss;
    }
    tm.sync();
    if (o2) {  // the per-sample norms need the vectors themselves: mapped back, then centred
      apply_reflectors(tm, w.a, w.beta, n, w.zt, m);
      for (int j = tm.rank(); j < m; j += tm.size()) {
        const T* u = w.zt + j * n;
        T mean = 0;
        for (int i = 0; i < n; ++i) mean += u[i];
        w.v[j] = mean / n;
      }
      tm.sync();
      for (int i = tm.rank(); i < n; i += tm.size()) {
        T ss = 0;
        for (int j = 0; j < m; ++j) ss += (w.zt[j * n + i] - w.v[j]) * (w.zt[j * n + i] - w.v[j]);
        o2[i] = R(std::sqrt(ss));
      }
    }
    if (tm.rank() == 0) {
      T ss = 0;
      for (int j = 0; j < m; ++j) ss += w.p[j];
      *o1 = R(std::sqrt(ss));
    }
  }
};

// The task of question q of a batch: W (and C, or nullptr) contiguous [Q, K, K]; outputs as the
// drivers' GraphArgs.
template <class T, class S>
FUQ_HD GraphTask<T, S, S> graph_task(int op, const S* W, const S* C, int64_t q, int K, int n, EigWork<T> w,
                                     T threshold, T t, S* o0, S* o1, S* o2) {
  GraphTask<T, S, S> g;
  g.op = op; g.K = K; g.n = n;
  g.W = W + q * K * K;
  g.C = C ? C + q * K * K : static_cast<const S*>(nullptr);
  g.threshold = threshold; g.t = t;
  g.w = w;
  g.scale = T(1);
  g.pre = T(1);
  g.stage = 0;
  if (op == kGraphEigvalues) {
    g.o0 = o0 + q * K;
    g.o1 = o1 ? o1 + q * K * K : static_cast<S*>(nullptr);
    g.o2 = static_cast<S*>(nullptr);
  } else {
    g.o0 = o0 + q;
    g.o1 = o1 ? o1 + q : static_cast<S*>(nullptr);
    g.o2 = o1 && o2 && op == kGraphLaplacian ? o2 + q * K : static_cast<S*>(nullptr);
  }
  return g;
}

// One question start to end by a team (the CUDA block body).
template <class T, class S, class R, class Team>
FUQ_HD void run_graph_task(const Team& tm, GraphTask<T, S, R>& g) {
  bool pending = g.begin(tm);
  while (pending) {
    while (!g.ql.done()) g.ql.step(tm);
    pending = g.resume(tm);
  }
}

}  // namespace FUQ_ISA_NS
}  // namespace flashuq
