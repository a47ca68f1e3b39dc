// The mergeable one-pass accumulator for token statistics (docs/numerics.md#accumulator, docs/methods.md#token-statistics).
//
// One header, compiled into the CPU module and the CUDA module alike, so every backend combines
// partials with the same arithmetic. A partial describes a contiguous range of one row of logits
// z with its own maximum m, kept in raw logit units; the statistics are of softmax(z / T), with
// d = (z - m) / T <= 0 (scaling the exact difference, not each logit, keeps temperatures other
// than 1 from costing digits on large logits):
//
//   R  = sum_{i != argmax} e^d      (S = 1 + R; the max is excluded so R never meets 1 + tiny)
//   T  = sum e^d * d                (<= 0, every term the same sign: no cancellation)
//   Q2 = sum_{i != argmax} e^{2d}   (collision probability)
//   Qh, Qq = sum_{i != argmax} e^{d/2}, e^{d/4}  (only when asked for: RenyiNeg and FisherRao,
//            whose q = softmax(z / 2T) gives sum sqrt(q) = (1 + Qq) / sqrt(1 + Qh))
//   sd, nf = sum d and count over the finite entries (self-certainty)
//   n, mean, M2, M3, M4 = centred moments of e^d over every column, -inf ones included
//                         (kurtosis is scale invariant, so moments of e^d give those of p)
//
// merge() is associative up to rounding; callers fold partials in a fixed order, so results are
// deterministic (no atomics anywhere).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "hd.h"

namespace flashuq {
inline namespace FUQ_ISA_NS {

template <typename A>
FUQ_HD A neg_inf() { return -std::numeric_limits<A>::infinity(); }

template <typename A>
FUQ_HD A quiet_nan() { return std::numeric_limits<A>::quiet_NaN(); }

template <typename A>
struct Acc {
  A m;          // maximum (-inf when the range holds no finite entry)
  A m2;         // second largest value (equal to m on an exact tie)
  int64_t idx;  // first index of the maximum (-1 when empty)
  A R, T, Q2;
  A Qh, Qq;     // 0 unless the tempered sums were requested
  A sd, nf;
  A n, mean, M2, M3, M4;
  bool bad;     // a NaN or +inf was seen: the row has no distribution
};

template <typename A>
FUQ_HD Acc<A> acc_empty() {
  Acc<A> a;
  a.m = neg_inf<A>();
  a.m2 = neg_inf<A>();
  a.idx = -1;
  a.R = a.T = a.Q2 = a.Qh = a.Qq = a.sd = a.nf = A(0);
  a.n = a.mean = a.M2 = a.M3 = a.M4 = A(0);
  a.bad = false;
  return a;
}

// Pairwise update of centred moments (Chan et al. 1979; Pebay 2008): (n, mean, M2..M4) += B.
template <typename A>
FUQ_HD void moments_merge(Acc<A>& a, A nb, A meanb, A M2b, A M3b, A M4b) {
  if (nb == A(0)) return;
  if (a.n == A(0)) {
    a.n = nb; a.mean = meanb; a.M2 = M2b; a.M3 = M3b; a.M4 = M4b;
    return;
  }
  const A na = a.n, n = na + nb;
  const A delta = meanb - a.mean;
  const A dn = delta / n;
  const A dn2 = dn * dn;
  const A t1 = delta * dn * na * nb;  // delta^2 na nb / n
  const A M4 = a.M4 + M4b + t1 * dn2 * (na * na - na * nb + nb * nb) +
               A(6) * dn2 * (na * na * M2b + nb * nb * a.M2) + A(4) * dn * (na * M3b - nb * a.M3);
  const A M3 = a.M3 + M3b + t1 * dn * (na - nb) + A(3) * dn * (na * M2b - nb * a.M2);
  a.M2 = a.M2 + M2b + t1;
  a.M3 = M3;
  a.M4 = M4;
  a.mean = a.mean + dn * nb;
  a.n = n;
}

// Merge two partials of the same row. `a` must cover columns before `b` only for the tie rule
// to read naturally; the index comparison makes it hold in any order. `frac` also merges the
// tempered sums Qh, Qq (two more exponentials per merge, nothing per column).
template <typename A, typename ExpFn>
FUQ_HD Acc<A> merge(const Acc<A>& a, const Acc<A>& b, A inv_temp, ExpFn expf_, bool frac = false) {
  const bool a_top = (a.m > b.m) || (a.m == b.m && (b.idx < 0 || (a.idx >= 0 && a.idx <= b.idx)));
  const Acc<A>& X = a_top ? a : b;
  const Acc<A>& Y = a_top ? b : a;
  Acc<A> r = X;
  r.bad = a.bad || b.bad;
  if (!(Y.m > neg_inf<A>())) {
    // Y carries no probability mass: only its column count joins the moments (x = 0 there).
    moments_merge(r, Y.n, A(0), A(0), A(0), A(0));
    return r;
  }
  // Here X.m >= Y.m > -inf. (A span beyond the float range makes delta -inf and c 0: Y's mass
  // vanishes, as it should, and the c > 0 guards keep 0 * -inf out of T.)
  const A delta = (Y.m - X.m) * inv_temp;
  const A c = expf_(delta);
  const A c2 = c * c;
  const A SY = A(1) + Y.R;
  r.R = X.R + c * SY;
  r.T = c > A(0) ? X.T + c * (Y.T + delta * SY) : X.T;
  r.Q2 = X.Q2 + c2 * (A(1) + Y.Q2);
  if (frac) {
    r.Qh = X.Qh + expf_(delta * A(0.5)) * (A(1) + Y.Qh);
    r.Qq = X.Qq + expf_(delta * A(0.25)) * (A(1) + Y.Qq);
  }
  r.sd = X.sd + Y.sd + Y.nf * delta;
  r.nf = X.nf + Y.nf;
  r.m2 = X.m2 > Y.m ? X.m2 : Y.m;
  moments_merge(r, Y.n, Y.mean * c, Y.M2 * c2, Y.M3 * c2 * c, Y.M4 * c2 * c2);
  return r;
}

// The statistics of TokenStats (docs/architecture.md#public-api), from a whole row's accumulator.
template <typename A>
struct RowStats {
  A lse, max_logprob, entropy, margin, collision, kurtosis, self_certainty;
  A renyi_term, fisher_rao;  // meaningful only when the tempered sums were accumulated
  A log1p_R;  // log(S): log p_v = (x_v - m) - log1p_R
  int64_t argmax;
  bool valid;
};

// expm1 from exp and log (Kahan): accurate for small |x| without a libm expm1 on every backend.
template <typename A, typename ExpFn, typename LogFn>
FUQ_HD A expm1_kahan(A x, ExpFn expf_, LogFn logf_) {
  const A u = expf_(x);
  if (u == A(1)) return x;
  const A um1 = u - A(1);
  if (um1 == A(-1)) return A(-1);
  return um1 * x / logf_(u);
}

template <typename A, typename ExpFn, typename Log1pFn, typename LogFn>
FUQ_HD RowStats<A> finalize(const Acc<A>& a, A inv_temp, ExpFn expf_, Log1pFn log1pf_, LogFn logf_) {
  RowStats<A> s;
  s.valid = !a.bad && (a.m > neg_inf<A>());
  if (!s.valid) {
    const A nan = quiet_nan<A>();
    s.lse = s.max_logprob = s.entropy = s.margin = s.collision = s.kurtosis = s.self_certainty = nan;
    s.renyi_term = s.fisher_rao = nan;
    s.log1p_R = nan;
    s.argmax = -1;
    return s;
  }
  const A S = A(1) + a.R;
  const A l1p = log1pf_(a.R);
  s.log1p_R = l1p;
  s.lse = a.m * inv_temp + l1p;
  s.max_logprob = -l1p;
  s.argmax = a.idx;
  s.entropy = l1p - a.T / S;                                   // both terms >= 0
  // p(1) - p(2) = (1 - e^{m2-m}) / S; expm1 keeps near-ties exact
  s.margin = a.m2 > neg_inf<A>() ? -expm1_kahan((a.m2 - a.m) * inv_temp, expf_, logf_) / S : A(1) / S;
  s.collision = (A(1) + a.Q2) / (S * S);                       // sum p^2
  s.kurtosis = a.n * a.M4 / (a.M2 * a.M2) - A(3);              // Fisher, biased (scipy default)
  // KL(U || p) over the finite entries = log(S / nf) - sd / nf: two terms of the row's scale,
  // not of log V, so near-uniform rows (KL ~ 0) keep their digits
  s.self_certainty = logf_(S / a.nf) - a.sd / a.nf;
  // q = softmax(z / 2T) against the uniform distribution over all V = n columns
  // (docs/numerics.md#closed-forms): log sum sqrt(q / V) = log1p(Qq) - log1p(Qh) / 2 - log(V) / 2, and R cancels.
  //   renyi_term = LM-Polygraph's per-step RenyiNeg value, D_1/2(q || U) - 2 log V
  //   fisher_rao = (2 / pi) arccos(sum sqrt(q / V)), the Fisher-Rao distance of q from uniform
  const A l1h = log1pf_(a.Qh), l1q = log1pf_(a.Qq), logV = logf_(a.n);
  s.renyi_term = l1h - A(2) * l1q - logV;
  using std::acos;
  A bc = expf_(l1q - A(0.5) * (l1h + logV));
  bc = bc > A(1) ? A(1) : bc;
  s.fisher_rao = A(0.63661977236758134308) * acos(bc);
  return s;
}

// ---- top-k lists: sorted best-first; ties go to the smaller index -------------------------
template <typename A>
FUQ_HD bool topk_better(A va, int64_t ia, A vb, int64_t ib) {
  return va > vb || (va == vb && ia < ib);
}

// Insert (v, i) into a sorted list of capacity k holding *cnt entries.
template <typename A>
FUQ_HD void topk_insert(A* vals, int64_t* ids, int* cnt, int k, A v, int64_t i) {
  int c = *cnt;
  if (c == k) {
    if (!topk_better(v, i, vals[k - 1], ids[k - 1])) return;
    c = k - 1;
  }
  int p = c;
  while (p > 0 && topk_better(v, i, vals[p - 1], ids[p - 1])) {
    vals[p] = vals[p - 1];
    ids[p] = ids[p - 1];
    --p;
  }
  vals[p] = v;
  ids[p] = i;
  *cnt = c + 1;
}

// out = the best k of two sorted lists (out must not alias the inputs).
template <typename A>
FUQ_HD int topk_merge(const A* va, const int64_t* ia, int ca, const A* vb, const int64_t* ib, int cb,
                      int k, A* vo, int64_t* io) {
  int p = 0, q = 0, o = 0;
  while (o < k && (p < ca || q < cb)) {
    const bool take_a = q >= cb || (p < ca && topk_better(va[p], ia[p], vb[q], ib[q]));
    if (take_a) { vo[o] = va[p]; io[o] = ia[p]; ++p; }
    else        { vo[o] = vb[q]; io[o] = ib[q]; ++q; }
    ++o;
  }
  return o;
}

}  // namespace FUQ_ISA_NS
}  // namespace flashuq
