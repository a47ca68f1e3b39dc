// A small dense symmetric eigensolver for many independent K x K problems (K up to ~100):
// Householder reduction to tridiagonal form, then implicit QL with Wilkinson shifts
// (Golub & Van Loan, "Matrix Computations", 4th ed., §8.3; Wilkinson & Reinsch's tred2/tql2).
//
// One header, compiled into the CPU module (one problem per OpenMP thread) and the CUDA module
// (one problem per block). The code is written for a *team* of cooperating workers:
//
//   struct Team { int rank() const; int size() const; void sync() const; };
//
// CPU: a team of one whose sync() does nothing. CUDA: the threads of a block with
// __syncthreads(). Matrices are row-major n x n in memory all members see (CUDA: shared memory).
// Work is split by ownership, which is what makes the parallel version race free:
//   * row i of `a` (and of the eigenvector matrix during QL) belongs to member i % size;
//   * column j of `z` belongs to member j % size while the reflectors are accumulated;
//   * scalars (reflector norms, shifts, rotations) are computed *redundantly* by every member
//     from data nobody is writing, so all members hold identical copies and never exchange them.
// The tridiagonal vectors d and e are private to each member (each runs the same QL recurrence
// on its own copy and applies the rotations to the rows it owns), so QL needs no barrier at all.
// Every sum runs in a fixed order: results do not depend on the team size's scheduling.
#pragma once

#include <cmath>
#include <limits>

#include "hd.h"

namespace flashuq {
inline namespace FUQ_ISA_NS {

// The CPU team: one worker.
struct SerialTeam {
  FUQ_HD int rank() const { return 0; }
  FUQ_HD int size() const { return 1; }
  FUQ_HD void sync() const {}
};

// Σ_{j in [lo, hi)} x[j] y[j] in four interleaved partial sums (a fixed order: deterministic),
// which breaks the dependency chain of one running sum. T may also be a vector of SIMD lanes
// (csrc/cpu/graph_lanes.h), each lane summing in this same order.
template <class T>
FUQ_HD T dot(const T* __restrict__ x, const T* __restrict__ y, int lo, int hi) {
  T s0 = T(), s1 = T(), s2 = T(), s3 = T();
  int j = lo;
  for (; j + 3 < hi; j += 4) {
    s0 += x[j] * y[j];
    s1 += x[j + 1] * y[j + 1];
    s2 += x[j + 2] * y[j + 2];
    s3 += x[j + 3] * y[j + 3];
  }
  for (; j < hi; ++j) s0 += x[j] * y[j];
  return (s0 + s1) + (s2 + s3);
}

// The Householder reflector of x = (x0, x1, ...) with sigma = Σ_{i>0} x_i² > 0: alpha = -sign(x0) |x|
// and b = 2 / (vᵀv) for v = x - alpha e_1, written without cancellation.
template <class T>
FUQ_HD void householder_of(T x0, T sigma, T& alpha, T& b) {
  const T norm = std::sqrt(x0 * x0 + sigma);
  alpha = x0 > 0 ? -norm : norm;
  b = T(1) / (norm * norm + std::fabs(x0) * norm);
}

// Reduce the symmetric n x n matrix `a` (both triangles stored) to tridiagonal form
// T = Qᵀ a Q, Q = H_0 H_1 ... H_{n-3}, H_k = I - beta_k v_k v_kᵀ.
// On return d[0..n) is T's diagonal and e[0..n-1) its sub-diagonal (e[k] = T[k+1][k]), e[n-1] = 0
// (d and e written by rank 0, then the team synchronised); v_k is kept in row k of `a`
// right of the diagonal and beta_k in beta[k]. `v`, `p`: n scratch values each.
template <class T, class Team>
FUQ_HD void tridiagonalize(const Team& tm, T* a, int n, T* d, T* e, T* beta, T* v, T* p) {
  const int r0 = tm.rank(), nt = tm.size();
  for (int k = 0; k + 2 < n; ++k) {
    tm.sync();  // the previous step's update of the trailing block is visible
    T sigma = 0;  // |x|^2 below the first entry, x = a[k+1.., k]
    for (int i = k + 2; i < n; ++i) sigma += a[i * n + k] * a[i * n + k];
    const T x0 = a[(k + 1) * n + k];
    T alpha = x0, b = 0, v1 = 0, vs = 1;  // v = vs (x - alpha e_1); vs = 1 but for a tiny column
    if (sigma > 0) {  // reflect x onto alpha e_1; v = x - alpha e_1
      householder_of(x0, sigma, alpha, b);
      v1 = x0 - alpha;
      if (!(b <= std::numeric_limits<T>::max())) {
        // vᵀv underflowed (|x| below ~1e-154 in fp64: the trailing block of a matrix of low
        // rank shrinks by ~eps at every step): the same reflector from x scaled by a power of
        // two (exact), v kept at that scale (any multiple of v with b = 2 / (vᵀv) is H)
        T amax = std::fabs(x0);
        for (int i = k + 2; i < n; ++i) amax = std::fmax(amax, std::fabs(a[i * n + k]));
        vs = std::ldexp(T(1), -std::ilogb(amax));
        T ss = 0;
        for (int i = k + 2; i < n; ++i) ss += (a[i * n + k] * vs) * (a[i * n + k] * vs);
        const T xs = x0 * vs;
        T as;
        householder_of(xs, ss, as, b);
        v1 = xs - as;
        alpha = as / vs;
      }
    }
    if (r0 == 0) {
      e[k] = alpha;
      beta[k] = b;
    }
    if (b == 0) continue;  // uniform across the team: every member computed the same sigma
    for (int i = k + 1 + r0; i < n; i += nt) v[i] = i == k + 1 ? v1 : a[i * n + k] * vs;
    tm.sync();
    for (int i = k + 1 + r0; i < n; i += nt) p[i] = b * dot(a + i * n, v, k + 1, n);  // p = beta A v
    tm.sync();
    T pv = 0;
    for (int i = k + 1; i < n; ++i) pv += p[i] * v[i];
    const T h = T(0.5) * b * pv;  // w = p - h v (into p);  A <- A - v wᵀ - w vᵀ
    tm.sync();  // everyone has read p
    for (int i = k + 1 + r0; i < n; i += nt) p[i] -= h * v[i];
    tm.sync();
    for (int i = k + 1 + r0; i < n; i += nt) {
      T* __restrict__ ai = a + i * n;
      const T* __restrict__ vv = v;
      const T* __restrict__ ww = p;
      const T vi = vv[i], wi = ww[i];
      for (int j = k + 1; j < n; ++j) ai[j] -= vi * ww[j] + wi * vv[j];
    }
    if (k % nt == r0)  // keep the reflector in row k, which no later step reads (contiguous for
      for (int i = k + 1; i < n; ++i) a[k * n + i] = v[i];  // accumulate_reflectors)
  }
  tm.sync();
  if (r0 == 0) {
    for (int i = 0; i < n; ++i) d[i] = a[i * n + i];
    if (n >= 2) {
      e[n - 2] = a[(n - 1) * n + (n - 2)];
      beta[n - 2] = 0;
    }
    e[n - 1] = 0;
    beta[n - 1] = 0;
  }
  tm.sync();
}

// zt = Qᵀ, Q = H_0 ... H_{n-3}, from the reflectors that tridiagonalize() left in `a` and
// `beta`, accumulated backwards. zt is Q *transposed* (row j = column j of Q), so that every
// update below and every rotation of QL runs along contiguous memory. Member r owns the rows
// j = r (mod size) of zt here. Ends synchronised.
template <class T, class Team>
FUQ_HD void accumulate_reflectors(const Team& tm, const T* a, const T* beta, int n, T* zt) {
  const int r0 = tm.rank(), nt = tm.size();
  for (int j = r0; j < n; j += nt)
    for (int i = 0; i < n; ++i) zt[j * n + i] = i == j ? T(1) : T(0);
  for (int k = n - 3; k >= 0; --k) {
    const T b = beta[k];
    if (b == 0) continue;
    const T* __restrict__ vk = a + k * n;
    for (int j = k + 1 + r0; j < n; j += nt) {  // column j of Q <- H_k (column j of Q)
      T* __restrict__ zj = zt + j * n;
      const T s = b * dot(vk, zj, k + 1, n);
      for (int i = k + 1; i < n; ++i) zj[i] -= s * vk[i];
    }
  }
  tm.sync();
}

// Eigenvalues of the symmetric tridiagonal (d, e) by implicit QL with Wilkinson shifts, in
// place in d (unsorted), e destroyed, as a *resumable* sequence of small steps (one shift or
// one plane rotation each). QL is a chain of dependent divisions and square roots, so one
// problem leaves most of a CPU core idle; the CPU driver advances several questions' iterations
// in turn to overlap their chains, with results bitwise identical to running each alone.
//   * With zt != nullptr the rotations are applied to the rows of zt (member r owns the entries
//     k = r (mod size) of every row), so zt = Qᵀ on entry leaves the eigenvectors of the original
//     matrix in zt's rows.
//   * Without vectors the root-free variant of Pal, Walker and Kahan runs instead (the scheme of
//     LAPACK's dsterf): it iterates on the squared off-diagonal, so a rotation costs divisions
//     but no square root, and a 2 x 2 block is solved in closed form.
// d and e must be the calling member's private copies.
template <class T>
struct QLIteration {
  static constexpr T kSplitFloor = T(0x1p-428);  // see split_point (the CPU lanes use it too)
  T *d, *e, *zt;
  int n, l, m, i, iter;
  T s, c, p, g;      // rotation state (with vectors); root-free: s, c, p and g = gamma
  T sigma;           // root-free: the shift
  T atol;            // 0, or once an eigenvalue has taken 64 sweeps: eps ‖T‖ (see split_point)
  bool rotating;
  bool ok;  // false if an eigenvalue did not converge in 64 more sweeps after that

  FUQ_HD void start(T* d_, T* e_, int n_, T* zt_) {
    d = d_; e = e_; zt = zt_; n = n_;
    l = 0; m = 0; i = 0; iter = 0;
    s = c = p = g = sigma = atol = T(0);
    rotating = false;
    ok = true;
    if (!zt)
      for (int k = 0; k + 1 < n; ++k) e[k] *= e[k];
  }
  FUQ_HD bool done() const { return l >= n; }

  template <class Team>
  FUQ_HD void step(const Team& tm) {
    if (zt) step_vectors(tm);
    else step_rootfree();
  }

 private:
  // First negligible off-diagonal at or after l, so that (l..mm) is an unreduced block; `sq`:
  // e holds squares. Negligible: below eps times its two diagonal entries, as LAPACK's dsterf,
  // but never less than eps 2^-428 (T is double: the squares of smaller rows underflow, and the
  // root-free rotation's 1 / (p + e²) overflowed; callers keep entries O(1), so such rows are
  // far below rounding), or, once atol is set, below eps ‖T‖ (the accuracy a backward-stable
  // solver promises). A NaN tol stays NaN: nothing is negligible there.
  FUQ_HD int split_point(bool sq) const {
    const T eps = std::numeric_limits<T>::epsilon();
    int mm = l;
    for (; mm < n - 1; ++mm) {
      const T sd = std::fabs(d[mm]) + std::fabs(d[mm + 1]);
      T tol = eps * (sd < kSplitFloor ? kSplitFloor : sd);
      if (atol > tol) tol = atol;
      if (sq ? e[mm] <= tol * tol : std::fabs(e[mm]) <= tol) break;
    }
    return mm;
  }

  // After 64 sweeps at one l: the relative test can ask for more than rounding allows (an
  // eigenvalue cluster near 0 beside large ones: e stalls near eps ‖T‖, above eps |d|). From
  // then on rows below eps ‖T‖ count as negligible too (Gershgorin's bound on ‖T‖, from the
  // current d and e: the same spectrum), and the count starts again; false if already so.
  FUQ_HD bool loosen(bool sq) {
    if (atol != 0) return false;
    T nrm = 0;
    for (int k = 0; k < n; ++k) {
      const T lo = k > 0 ? (sq ? std::sqrt(e[k - 1]) : std::fabs(e[k - 1])) : T(0);
      const T hi = k + 1 < n ? (sq ? std::sqrt(e[k]) : std::fabs(e[k])) : T(0);
      nrm = std::fmax(nrm, std::fabs(d[k]) + lo + hi);
    }
    atol = std::numeric_limits<T>::epsilon() * nrm;
    if (!(atol > 0)) return false;  // a zero or non-finite matrix gains nothing
    iter = 0;
    return true;
  }

  FUQ_HD void step_rootfree() {
    if (!rotating) {
      const int mm = split_point(true);
      if (mm == l) {  // d[l] has converged
        ++l;
        iter = 0;
        return;
      }
      if (mm == l + 1) {  // a 2 x 2 block [[a, b], [b, c]]: both eigenvalues in closed form
        const T a = d[l], cc = d[l + 1], b2 = e[l];
        const T sm = a + cc, df = a - cc;
        const T rt = std::sqrt(df * df + 4 * b2);
        const T big = sm >= 0 ? T(0.5) * (sm + rt) : T(0.5) * (sm - rt);  // no cancellation
        // the other root from the determinant, unless big == 0 (then both are ±rt/2)
        const T small = big != 0 ? (a * cc - b2) / big : T(-0.5) * rt;
        d[l] = big;
        d[l + 1] = small;
        e[l] = 0;
        l += 2;
        iter = 0;
        return;
      }
      if (iter++ == 64) {
        if (!loosen(true)) {
          ok = false;
          l = n;
        }
        return;
      }
      m = mm;
      const T rte = std::sqrt(e[l]);  // Wilkinson shift from the leading 2 x 2 block
      const T h = (d[l + 1] - d[l]) / (2 * rte);
      const T r = std::sqrt(h * h + 1);  // not hypot() (5x slower): callers keep entries O(1)
      sigma = d[l] - rte / (h + std::copysign(r, h));
      c = T(1);
      s = T(0);
      g = d[m] - sigma;
      p = g * g;
      i = m - 1;
      rotating = true;
      return;
    }
    const T bb = e[i];
    const T r = p + bb;  // > 0: bb is an unreduced block's squared off-diagonal
    if (i != m - 1) e[i + 1] = s * r;
    const T oldc = c, oldg = g, inv = T(1) / r;
    c = p * inv;
    s = bb * inv;
    const T alpha = d[i];
    g = c * (alpha - sigma) - s * oldg;
    d[i + 1] = oldg + (alpha - g);
    p = c != 0 ? g * g / c : oldc * bb;
    if (--i < l) {  // sweep complete
      e[l] = s * p;
      d[l] = sigma + g;
      rotating = false;
    }
  }

  template <class Team>
  FUQ_HD void step_vectors(const Team& tm) {
    if (!rotating) {
      const int mm = split_point(false);
      if (mm == l) {  // d[l] has converged
        ++l;
        iter = 0;
        return;
      }
      if (iter++ == 64) {
        if (!loosen(false)) {
          ok = false;
          l = n;
        }
        return;
      }
      m = mm;
      // Wilkinson shift from the leading 2 x 2 block, folded into the first rotation
      const T h = (d[l + 1] - d[l]) / (2 * e[l]);
      const T r = std::sqrt(h * h + 1);  // not hypot() (5x slower): callers keep entries O(1)
      g = d[m] - d[l] + e[l] / (h + std::copysign(r, h));
      s = c = T(1);
      p = T(0);
      i = m - 1;
      rotating = true;
      return;
    }
    // one rotation of the sweep that chases the bulge up from m to l
    const T f = s * e[i], bb = c * e[i];
    T r = std::sqrt(f * f + g * g);
    e[i + 1] = r;
    if (r == 0) {  // the bulge vanished: split the block here and restart
      d[i + 1] -= p;
      e[m] = 0;
      rotating = false;
      return;
    }
    const T inv = T(1) / r;
    s = f * inv;
    c = g * inv;
    g = d[i + 1] - p;
    r = (d[i] - g) * s + 2 * c * bb;
    p = s * r;
    d[i + 1] = g + p;
    g = c * r - bb;
    T* __restrict__ x = zt + i * n;
    T* __restrict__ y = zt + (i + 1) * n;
    for (int k = tm.rank(); k < n; k += tm.size()) {
      const T xk = x[k], yk = y[k];
      y[k] = s * xk + c * yk;
      x[k] = c * xk - s * yk;
    }
    if (--i < l) {  // sweep complete
      d[l] -= p;
      e[l] = g;
      e[m] = 0;
      rotating = false;
    }
  }
};

// Sort the eigenvalues d ascending, -0 before +0 (a total order on values without NaN, so that
// any sorting method gives this one order: the CPU lanes use a sorting network), permuting zt's
// rows alike (member r swaps the entries k = r (mod size)). Selection sort: n swaps at most,
// no scratch memory.
template <class T, class Team>
FUQ_HD void sort_eigen(const Team& tm, T* d, int n, T* zt) {
  const int r0 = tm.rank(), nt = tm.size();
  for (int i = 0; i + 1 < n; ++i) {
    int k = i;
    for (int j = i + 1; j < n; ++j)
      if (d[j] < d[k] || (d[j] == d[k] && std::signbit(d[j]) && !std::signbit(d[k]))) k = j;
    if (k == i) continue;
    const T t = d[i];
    d[i] = d[k];
    d[k] = t;
    if (zt)
      for (int c = r0; c < n; c += nt) {
        const T u = zt[i * n + c];
        zt[i * n + c] = zt[k * n + c];
        zt[k * n + c] = u;
      }
  }
}

// Entry i of inverse iteration's fixed start vector j: pseudo-random in (-1, 1), different for
// every j.
template <class T>
FUQ_HD T inverse_iteration_start(int i, int j) {
  const unsigned h = (unsigned(i) + 1u) * 2654435761u ^ (unsigned(j) + 1u) * 2246822519u;
  return T((h ^ (h >> 15)) % 2001u) / T(1000) - T(1) + T(1e-3);
}

// Eigenvectors of the symmetric tridiagonal (d, e) (e[k] = T[k+1][k]) for m of its eigenvalues
// lam[0..m), ascending, by inverse iteration as LAPACK's dstein does it: factor T - λI = PLU
// with partial pivoting (tiny pivots raised to eps·‖T‖), three solves from a fixed
// pseudo-random start, each followed by Gram-Schmidt against the earlier vectors of the same
// cluster (eigenvalues closer than 1e-3·‖T‖; equal ones are first pulled apart by 10 eps·‖T‖)
// and normalisation. Far cheaper than QL with vectors when only a few eigenvectors are wanted:
// O(n) per solve instead of O(n²) per sweep. Vector j goes to row j of y (row stride n).
// `s`: 5n scratch values. Run by one member.
template <class T>
FUQ_HD void tridiagonal_inverse_iteration(const T* d, const T* e, int n, const T* lam, int m, T* y, T* s) {
  T* u0 = s;          // 1 / U's diagonal,
  T* u1 = s + n;      // first and
  T* u2 = s + 2 * n;  // second super-diagonal
  T* lm = s + 3 * n;  // L's multipliers
  T* pv = s + 4 * n;  // 1 where rows k and k+1 were swapped
  const T eps = std::numeric_limits<T>::epsilon();
  T norm = 0;
  for (int i = 0; i < n; ++i)
    norm = std::fmax(norm, std::fabs(d[i]) + (i > 0 ? std::fabs(e[i - 1]) : T(0)) + (i + 1 < n ? std::fabs(e[i]) : T(0)));
  if (!(norm > 0)) norm = T(1);
  const T tiny = eps * norm, pertol = 10 * eps * norm, ortol = T(1e-3) * norm;
  T xprev = 0;
  int cluster = 0;  // first vector of the current cluster
  for (int j = 0; j < m; ++j) {
    T x = lam[j];
    if (j > 0) {
      if (x - xprev < pertol) x = xprev + pertol;
      if (x - xprev > ortol) cluster = j;
    }
    xprev = x;
    // PLU of T - xI: Gaussian elimination down the tridiagonal, swapping rows k, k+1 when the
    // sub-diagonal entry is the larger pivot
    T diag = d[0] - x, sup = n > 1 ? e[0] : T(0);
    for (int k = 0; k + 1 < n; ++k) {
      const T sub = e[k], nd = d[k + 1] - x, ns = k + 2 < n ? e[k + 1] : T(0);
      if (std::fabs(diag) >= std::fabs(sub)) {
        const T piv = std::fabs(diag) < tiny ? std::copysign(tiny, diag) : diag;
        u0[k] = T(1) / piv; u1[k] = sup; u2[k] = 0;
        lm[k] = sub * u0[k]; pv[k] = 0;
        diag = nd - lm[k] * sup;
        sup = ns;
      } else {
        u0[k] = T(1) / sub; u1[k] = nd; u2[k] = ns;
        lm[k] = diag * u0[k]; pv[k] = 1;
        diag = sup - lm[k] * nd;
        sup = -lm[k] * ns;
      }
    }
    u0[n - 1] = T(1) / (std::fabs(diag) < tiny ? std::copysign(tiny, diag) : diag);
    T* b = y + j * n;
    for (int i = 0; i < n; ++i) b[i] = inverse_iteration_start<T>(i, j);
    for (int it = 0; it < 3; ++it) {
      for (int k = 0; k + 1 < n; ++k) {  // solve L: forward, with the row swaps
        if (pv[k] != 0) {
          const T t = b[k];
          b[k] = b[k + 1];
          b[k + 1] = t;
        }
        b[k + 1] -= lm[k] * b[k];
      }
      for (int k = n - 1; k >= 0; --k) {  // solve U: backward
        T r = b[k];
        if (k + 1 < n) r -= u1[k] * b[k + 1];
        if (k + 2 < n) r -= u2[k] * b[k + 2];
        b[k] = r * u0[k];
      }
      T nb = 0;  // normalise first: the solve grows b by up to 1 / (eps ‖T‖)
      for (int i = 0; i < n; ++i) nb = std::fmax(nb, std::fabs(b[i]));
      const T inb = T(1) / nb;
      for (int i = 0; i < n; ++i) b[i] *= inb;
      for (int c = cluster; c < j; ++c) {  // orthogonalise within the cluster
        const T* yc = y + c * n;
        const T pr = dot(yc, b, 0, n);
        for (int i = 0; i < n; ++i) b[i] -= pr * yc[i];
      }
      const T in2 = T(1) / std::sqrt(dot(b, b, 0, n));
      for (int i = 0; i < n; ++i) b[i] *= in2;
    }
  }
}

// y <- Q y for the rows j in [0, m) of y (row stride n), Q = H_0 ... H_{n-3} from the reflectors
// that tridiagonalize() left in `a` and `beta`: eigenvectors of T become those of the original
// matrix. Member r transforms the rows j = r (mod size). Ends synchronised.
template <class T, class Team>
FUQ_HD void apply_reflectors(const Team& tm, const T* a, const T* beta, int n, T* y, int m) {
  for (int j = tm.rank(); j < m; j += tm.size()) {
    T* __restrict__ yj = y + j * n;
    for (int k = n - 3; k >= 0; --k) {
      const T b = beta[k];
      if (b == 0) continue;
      const T* __restrict__ vk = a + k * n;
      const T sc = b * dot(vk, yj, k + 1, n);
      for (int i = k + 1; i < n; ++i) yj[i] -= sc * vk[i];
    }
  }
  tm.sync();
}

// c <- Qᵀ c = H_{n-3} ... H_0 c for one vector (apply_reflectors' reflectors in the other order):
// with c = 1, the image of the constant vector in the tridiagonal basis (Eccentricity's means).
template <class T>
FUQ_HD void apply_reflectors_transposed(const T* a, const T* beta, int n, T* c) {
  for (int k = 0; k + 2 < n; ++k) {
    const T b = beta[k];
    if (b == 0) continue;
    const T* __restrict__ vk = a + k * n;
    const T sc = b * dot(vk, c, k + 1, n);
    for (int i = k + 1; i < n; ++i) c[i] -= sc * vk[i];
  }
}

// Work space of one problem of size n: a and zt are n x n (shared by the team), the five
// vectors n each and the 5n scratch s (shared). `dl`, `el` are each member's private copies of
// d and e.
template <class T>
struct EigWork {
  T *a, *zt, *d, *e, *beta, *v, *p, *s;
  T *dl, *el;
};

template <class T>
FUQ_HD int eig_work_size(int n) { return 2 * n * n + 10 * n; }

template <class T>
FUQ_HD EigWork<T> eig_work(T* buf, int n, T* dl, T* el) {
  EigWork<T> w;
  w.a = buf;
  w.zt = w.a + n * n;
  w.d = w.zt + n * n;
  w.e = w.d + n;
  w.beta = w.e + n;
  w.v = w.beta + n;
  w.p = w.v + n;
  w.s = w.p + n;
  w.dl = dl;
  w.el = el;
  return w;
}

// Eigen-decomposition of the symmetric matrix in w.a, in two halves around the QL iteration
// so that a driver can interleave the QL of several problems:
//   sym_eig_begin: reduce to tridiagonal form (and accumulate Qᵀ into w.zt with `vectors`), copy
//     (d, e) into each member's private w.dl, w.el and start `ql`; false if not finite;
//   sym_eig_end:   sort (eigenvalues ascending in w.dl, eigenvector k in row k of w.zt) and
//     synchronise; false if QL did not converge.
template <class T, class Team>
FUQ_HD bool sym_eig_begin(const Team& tm, EigWork<T>& w, int n, bool vectors, QLIteration<T>& ql) {
  tridiagonalize(tm, w.a, n, w.d, w.e, w.beta, w.v, w.p);
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    w.dl[i] = w.d[i];
    w.el[i] = w.e[i];
    finite = finite && std::isfinite(w.d[i]) && std::isfinite(w.e[i]);
  }
  if (!finite) return false;
  if (vectors) accumulate_reflectors(tm, w.a, w.beta, n, w.zt);
  tm.sync();  // QL's ownership of zt differs from the accumulation's
  ql.start(w.dl, w.el, n, vectors ? w.zt : static_cast<T*>(nullptr));
  return true;
}

template <class T, class Team>
FUQ_HD bool sym_eig_end(const Team& tm, EigWork<T>& w, int n, const QLIteration<T>& ql) {
  sort_eigen(tm, w.dl, n, ql.zt);
  tm.sync();
  return ql.ok;
}

}  // namespace FUQ_ISA_NS
}  // namespace flashuq
