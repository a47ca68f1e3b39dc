// Ensemble decomposition on the CPU, included once per instruction set (FUQ_ISA names the
// namespace; ensemble_stats.cpp picks one at run time): positions (or, when there are few, chunks of
// their columns) spread over OpenMP threads, in loops over columns that vectorise (the branch-free
// exponentials and logarithms of cpu_math.h).
//
// Pass 1 reads each member's row once and keeps the shifted online accumulator of
// docs/numerics.md#accumulator restricted to (m, R, T): log1p(R) gives log P_mv = (z - m) / T - log1p(R), and
// H_m = log1p(R) - T / (1 + R). For fp32, bf16 and fp16 logits it runs on token_stats' passes
// (sums in fp32 lanes, blocks merged in fp64); for fp64 logits, in fp64 here. Pass 2 reads the M
// members' logits column by column (in fp64 for fp64 logits, mostly in fp32 lanes for the others:
// mixture_chunk_f32 below) and with p̄_v = Σ_m w_m P_mv and r_mv = log P_mv - log p̄_v accumulates
//
//   MI  = Σ_v p̄_v Σ_m w_m φ(r_mv),   φ(r) = 1 + e^r (r - 1) >= 0
//   RMI = Σ_v p̄_v Σ_m w_m ψ(r_mv),   ψ(r) = e^r - 1 - r     >= 0
//
// (both follow from Σ_m w_m e^{r_mv} = 1; MI = Σ_m w_m KL(P_m || p̄) and RMI =
// Σ_m w_m KL(p̄ || P_m)). Every term is non-negative, so nothing cancels: TU = AU + MI and
// EPKL - AU = MI + RMI come out accurate even when the members nearly agree, and MI >= 0 holds
// exactly. ψ uses its Taylor series for |r| < 1/4 (|r| < 1 in fp32) and φ follows from it (both
// sides are evaluated for every column, then selected). A member with P_mv = 0 where p̄_v > 0
// gives ψ = +inf: EPKL and RMI are +inf (docs/methods.md#ensemble with xlogy semantics).
//
// Why pass 1 may sum in fp32: pass 2 takes each member's normalisation from it, and an error ε_m in
// log1p(R_m) scales P_m by e^{-ε_m}. The sums above, as functions of the ε_m, have the gradients
// -w_m KL(P_m || p̄) and w_m Σ_v P_mv Σ_k w_k r_kv at ε = 0, both of the order of MI (resp. RMI)
// itself: to first order ε moves MI and RMI by a relative ε (~1e-7), and members that agree exactly
// share their ε. The second-order part, of the order w_m ε², adds a relative (ε/r)² where the
// members' log-probabilities differ by r: ~4e-7 at r = 1e-4, ~4e-3 at r = 1e-6, where MI is ~1e-12
// nats (docs/numerics.md#ensemble-numerics). (Identical members give 0 up to the square of a rounding
// error, ~1e-32, from log p̄_v.) Temperatures beyond 1e±30 take the fp64 loop.
//
// A position's columns are summed in fixed chunks (kSplit), merged in column order, by one thread or,
// with fewer positions than threads, by several: results do not depend on the thread count.
// The builds differ by rounding (FMA contraction, and the fp32 passes' instruction sets), within the
// tests' tolerances.
#include "ensemble_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "flashuq/cpu_math.h"
#include "token_stats.h"

namespace flashuq {
namespace cpu {
namespace FUQ_ISA {
namespace {

constexpr int kBlock = 1024;  // pass-1 block (columns of one member)
constexpr int kCols = 256;    // pass-2 block (columns of all members)
// Fixed column chunk (a multiple of both blocks): results do not depend on the thread count or on
// whether a position was split.
constexpr int64_t kSplit = 16384;
constexpr double kTiny = 2.2250738585072014e-308;  // the smallest normal double
constexpr float kFloatMin = 1.17549435e-38f;        // the smallest normal float
// In the fp32 pass 2, a member's finite log-probability more than this below the reference's (logits
// masked with the float minimum) can overflow the column's Σ_m w_m ψ(r_m) ~ Σ_m w_m |r_m| (the weights
// rounded to fp32 may sum to more than 1): where that sum came out +inf, the column is computed alone.
constexpr float kDeltaAlone = 0x1p127f;
// A column where every member's log(w_m P_mv) lies below this minus log M has p̄_v < e^-750, whose
// share of MI and RMI rounds to 0 (exp_f64 gives 0 below -745.2) unless some member gives P = 0.
constexpr double kNegligibleLogP = -750.0;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Bf16 { uint16_t v; };
struct Half { uint16_t v; };

inline double load(const float* p, int64_t i) { return p[i]; }
inline double load(const double* p, int64_t i) { return p[i]; }
inline double load(const Bf16* p, int64_t i) { return bf16_to_float(p[i].v); }
inline double load(const Half* p, int64_t i) { return half_to_float(p[i].v); }

// (max, R, T) of a range of one member's row, and whether a NaN/+inf was seen.
struct MemberAcc {
  double m, R, T;
  bool bad;
};

// Fold partial b (columns after a's) into a: the merge of docs/numerics.md#merge restricted to (m, R, T).
inline void merge_into(MemberAcc& a, const MemberAcc& b, double inv_temp) {
  const bool a_top = a.m >= b.m;  // a tie keeps a's (earlier) argmax implicit
  const MemberAcc X = a_top ? a : b;
  const MemberAcc Y = a_top ? b : a;
  double R = X.R, T = X.T;
  if (Y.m > -kInf) {
    const double delta = (Y.m - X.m) * inv_temp;
    const double c = std::exp(delta);
    const double SY = 1.0 + Y.R;
    R = X.R + c * SY;
    if (c > 0.0) T = X.T + c * (Y.T + delta * SY);
  }
  a.m = X.m;
  a.R = R;
  a.T = T;
  a.bad = a.bad || b.bad;
}

template <typename In>
MemberAcc block_partial(const In* row, int64_t base, int len, double inv_temp, double* buf) {
  double bm = -kInf;
  int bad = 0;
#pragma omp simd reduction(max : bm) reduction(| : bad)
  for (int i = 0; i < len; ++i) {
    double x = load(row, base + i);
    const bool b = !(x == x) || x == kInf;  // NaN or +inf: no distribution
    x = b ? -kInf : x;
    buf[i] = x;
    bm = x > bm ? x : bm;
    bad |= b ? 1 : 0;
  }
  MemberAcc acc{bm, 0.0, 0.0, bad != 0};
  if (!(bm > -kInf)) return acc;
  int bidx = 0;
  while (buf[bidx] != bm) ++bidx;
  double R = 0.0, T = 0.0;
#pragma omp simd reduction(+ : R, T)
  for (int i = 0; i < len; ++i) {
    const double d = (buf[i] - bm) * inv_temp;  // -inf for a -inf column, whose e^d is 0
    const double e = exp_nonpos_f64(d);
    R += i == bidx ? 0.0 : e;  // the max's e^0 = 1 stays implicit: R never forms 1 + tiny
    T += e > 0.0 ? e * d : 0.0;
  }
  acc.R = R;
  acc.T = T;
  return acc;
}

// Coefficients of ψ(r)/r² = Σ_k b_k r^k, b_k = 1/(k+2)!, k = 0..Deg (Horner, one multiply-add per
// term), used where |r| < small; clamp keeps r = -inf out of 0 * inf. φ follows from ψ:
// e^r = 1 + r + ψ(r) gives φ(r) = r² + ψ(r)(r - 1), i.e. φ/r² = 1 + (ψ/r²)(r - 1), which lies in
// [0.37, 0.63] for |r| < 1/4 and in [0.26, 1] for |r| < 1 (cancelling by a factor of ~4 at most).
template <typename T, int Deg>
struct PsiSeries {
  T b[Deg + 1];
  T small, clamp;
  PsiSeries(T small_, T clamp_) : small(small_), clamp(clamp_) {
    double f = 2.0;  // (k+2)!
    for (int k = 0; k <= Deg; ++k) {
      if (k > 0) f *= double(k + 2);
      b[k] = T(1.0 / f);
    }
  }
};
// fp64: |r| < 1/4 to degree 12 (truncation < 1e-18 relative)
struct Series : PsiSeries<double, 12> {
  Series() : PsiSeries(0.25, -1e300) {}
};

struct MixturePart {
  double MI = 0.0, RMI = 0.0;
};

// Adds w_m φ(r) and w_m ψ(r) of one member entry to cphi and cpsi, with q = w_m e^r = w_m P_mv / p̄_v.
// Both sides of |r| < series.small are computed and one is selected (the loops calling it
// vectorise). For P_mv = 0 < p̄_v (r = -inf, q = 0): φ = w_m (r clamped), ψ = +inf.
template <typename T, int Deg>
inline void add_phi_psi(T r, T q, T wm, const PsiSeries<T, Deg>& series, T& cphi, T& cpsi) {
  T spsi = series.b[Deg];  // ψ/r², then φ/r², where |r| < small
  for (int k = Deg - 1; k >= 0; --k) spsi = spsi * r + series.b[k];
  const T sphi = T(1) + spsi * (r - T(1));
  const T wr2 = wm * r * r;
  const bool small = std::fabs(r) < series.small;
  const T rc = std::max(r, series.clamp);
  cphi += small ? wr2 * sphi : wm + q * (rc - T(1));
  cpsi += small ? wr2 * spsi : (q - wm) - wm * r;
}

// Pass 1 over columns [lo, hi) of one member's row: (max, R, T), the blocks merged in order.
template <typename In>
MemberAcc member_chunk(const EnsembleStatsArgs& a, const In* row, int64_t lo, int64_t hi, double* buf) {
  MemberAcc acc{-kInf, 0.0, 0.0, false};
  // token_stats' passes subtract the maximum in fp32, where a span beyond the float range gives -inf:
  // with 1/T >= 1e-30 such a term is e^{-3e8} = 0 anyway, and 1/T <= 1e30 keeps 1/T a finite float.
  // Other temperatures take the fp64 loop.
  const bool fp32_pass = !std::is_same<In, double>::value && a.inv_temp >= 1e-30 && a.inv_temp <= 1e30;
  if (!fp32_pass) {
    for (int64_t b = lo; b < hi; b += kBlock) {
      const int len = int(std::min<int64_t>(kBlock, hi - b));
      merge_into(acc, block_partial(row, b, len, a.inv_temp, buf), a.inv_temp);
    }
  } else {  // token_stats' fp32 passes (see the note at the top)
    const RowEntropySums s = FUQ_ISA::row_entropy_sums(a.dtype, row + lo, hi - lo, a.inv_temp);
    acc = MemberAcc{s.m, s.R, s.T, s.bad};
  }
  return acc;
}

// What pass 2 needs of a position's members with weight: their rows, maxima, log1p(R) and weights.
template <typename In>
struct Members {
  int n = 0;
  std::vector<const In*> row;
  std::vector<double> mx, l1p, lw, w;
  explicit Members(int64_t M) : row(M), mx(M), l1p(M), lw(M), w(M) {}
};

// Pass 2's scratch, one per thread: log P_mv and w_m P_mv of a block of kCols columns of every member.
struct Scratch {
  std::vector<double> lp, sp;
  explicit Scratch(int64_t M) : lp(size_t(kCols) * size_t(M)), sp(size_t(kCols) * size_t(M)) {}
};

// One column's share of MI and RMI, computed alone from the logits in fp64 with the shifted sum and
// exp_f64's subnormal results. For the rare columns the block loops cannot hold: p̄_v below 2^-1022
// while some member with weight has P_mv > 0 (every member's log-probability there below about
// -708), whose share p̄_v Σ w ψ need not be negligible since ψ grows like |r|; and, in the fp32 pass,
// a log-probability difference beyond kDeltaAlone.
template <typename In>
MixturePart column_alone(const Members<In>& mb, double inv_temp, int64_t col, const Series& series) {
  auto logp = [&](int t) {
    const double z = load(mb.row[t], col);
    return z > -kInf ? (z - mb.mx[t]) * inv_temp - mb.l1p[t] : -kInf;
  };
  double am = -kInf, Ssh = 0.0;
  bool zero = false;  // a member with weight gives the token P = 0
  for (int t = 0; t < mb.n; ++t) {
    const double l = logp(t);
    am = std::max(am, mb.lw[t] + l);
    zero = zero || !(l > -kInf);
  }
  // p̄_v <= M e^am below e^-750 (every member masked the token with a finite minimum, say): pb below
  // rounds to 0, and so does its share, as computed below; ψ = +inf where a member gives P = 0
  if (am + std::log(double(mb.n)) < kNegligibleLogP) return MixturePart{0.0, zero ? kInf : 0.0};
  for (int t = 0; t < mb.n; ++t) Ssh += exp_f64(mb.lw[t] + logp(t) - am);
  const double lpb = am + std::log(Ssh), pb = exp_f64(lpb);
  double cphi = 0.0, cpsi = 0.0;
  for (int t = 0; t < mb.n; ++t) {
    const double l = logp(t);
    add_phi_psi(l - lpb, exp_f64(mb.lw[t] + l - am) / Ssh, mb.w[t], series, cphi, cpsi);
  }
  return MixturePart{pb * cphi, cpsi == kInf ? kInf : pb * cpsi};
}

// Pass 2 over columns [lo, hi) of a valid position: blocks of kCols columns, each step a loop over
// the block's columns; the blocks' sums added in order.
template <typename In>
MixturePart mixture_chunk(const Members<In>& mb, double inv_temp, const Series& series, int64_t lo, int64_t hi,
                          Scratch& sc) {
  double MI = 0.0, RMI = 0.0;
  // on the stack, where the compiler sees that they alias nothing (the loops vectorise only then)
  double amax[kCols], S[kCols], lpbar[kCols], pbar[kCols], invS[kCols], cphi[kCols], cpsi[kCols];
  for (int64_t c0 = lo; c0 < hi; c0 += kCols) {
    const int len = int(std::min<int64_t>(kCols, hi - c0));
    for (int t = 0; t < mb.n; ++t) prefetch_elements(mb.row[t] + c0 + len, std::min<int64_t>(kCols, hi - c0 - len));
    // log P_mv, s_mv = w_m P_mv and p̄_v = Σ_m s_mv, without a shift: every exponent is <= 0 and a
    // term below 2^-1022 is 0, so p̄_v needs no exponential of its own; a column where that sum is
    // below 2^-1022 is left to column_alone. A column with p̄_v = 0 (amax = -inf: no member with
    // weight has P_mv > 0) adds nothing (xlogy).
    for (int j = 0; j < len; ++j) amax[j] = -kInf;
    for (int j = 0; j < len; ++j) S[j] = 0.0;
    for (int t = 0; t < mb.n; ++t) {
      const In* row = mb.row[t];
      double* lm = &sc.lp[size_t(t) * kCols];
      double* sm = &sc.sp[size_t(t) * kCols];
      const double mxm = mb.mx[t], l1 = mb.l1p[t], lwm = mb.lw[t];
#pragma omp simd
      for (int j = 0; j < len; ++j) {
        const double z = load(row, c0 + j);  // finite or -inf here (the position is valid)
        const double l = z > -kInf ? (z - mxm) * inv_temp - l1 : -kInf;
        const double x = lwm + l;
        const double e = exp_nonpos_f64(x);
        lm[j] = l;
        amax[j] = std::max(amax[j], x);
        sm[j] = e;
        S[j] += e;
      }
    }
#pragma omp simd
    for (int j = 0; j < len; ++j) {
      const bool use = S[j] >= kTiny;
      lpbar[j] = use ? log_f64(S[j]) : 0.0;
      pbar[j] = use ? S[j] : 0.0;
      invS[j] = use ? 1.0 / S[j] : 0.0;
      cphi[j] = 0.0;
      cpsi[j] = 0.0;
    }
    for (int t = 0; t < mb.n; ++t) {
      const double* lm = &sc.lp[size_t(t) * kCols];
      const double* sm = &sc.sp[size_t(t) * kCols];
      const double wm = mb.w[t];
#pragma omp simd
      for (int j = 0; j < len; ++j) add_phi_psi(lm[j] - lpbar[j], sm[j] * invS[j], wm, series, cphi[j], cpsi[j]);
    }
    int ntiny = 0;
#pragma omp simd reduction(+ : MI, RMI, ntiny)
    for (int j = 0; j < len; ++j) {
      const bool live = amax[j] > -kInf;
      MI += live ? pbar[j] * cphi[j] : 0.0;
      RMI += live ? (cpsi[j] == kInf ? kInf : pbar[j] * cpsi[j]) : 0.0;  // +inf even if p̄_v underflowed
      ntiny += live && !(S[j] >= kTiny) ? 1 : 0;
    }
    for (int j = 0; ntiny > 0 && j < len; ++j) {  // in column order, after the block's sums
      if (!(amax[j] > -kInf) || S[j] >= kTiny) continue;
      const MixturePart t = column_alone(mb, inv_temp, c0 + j, series);
      MI += t.MI;
      RMI = cpsi[j] == kInf ? RMI : RMI + t.RMI;  // an infinite ψ is in RMI already
    }
  }
  return MixturePart{MI, RMI};
}

// ---- pass 2 in fp32 (fp32, bf16 and fp16 logits) ------------------------------------------------
//
// Sixteen lanes instead of eight. What must keep its digits is r_mv when the members nearly agree, so
// every entry is taken relative to a reference member, per column the one with the largest w_m P_mv:
// δ_mv = log P_mv - log P_ref,v, formed in fp64 and rounded once (relative error 2^-24 of δ itself,
// whatever the logits' offsets). With Σ_m w_m = 1,
//
//   p̄_v / P_ref,v = Σ_m w_m e^{δ_mv} =: u_v = 1 + Σ_m w_m (e^{δ_mv} - 1),
//   r_mv = δ_mv - ln u_v,   w_m e^{r_mv} = w_m e^{δ_mv} / u_v,
//
// with e^δ - 1 and e^δ from expm1_exp_f32. Where |u - 1| < 1/2, ln u is log_f32 of 1 + (u - 1) plus
// the first-order correction of that sum's rounding, so it keeps the relative digits of u - 1 (the
// members nearly agree there); elsewhere it is log_f32 of the direct sum (u >= w_ref may be far
// below 1, where 1 + (u - 1) would have lost its digits). The weights rounded to fp32 no longer sum
// to 1, but the 1 in u is exact: their rounding moves u - 1 by a relative 2^-24 only. The series
// runs to |r| < 1 (degree 9), where the closed forms cancel at most ~4×. Nothing then cancels beyond
// a few ulp of the larger of |δ| and |r|, except that δ's rounding costs e^δ a relative |δ| 2^-24:
// harmless for δ <= 0 (e^δ is then a small term), but δ reaches ln(w_ref / w_m) > 0 when the
// weights differ, so where they span more than e^4 δ is kept in two floats (the low part corrects
// e^δ and e^δ - 1 to first order). MI and RMI keep about 6e-7 relative accuracy (docs), against
// 2^-53 in the fp64 pass; the outputs are fp32 anyway.
//
// What fp32 cannot hold goes to fp64. e^δ <= w_ref / w_m must fit a float: positions whose weights
// span more than e^69 take the fp64 pass. A column with a finite log-probability difference beyond
// the float range (logits masked with the float minimum, at T < 1) is computed alone in fp64
// (column_alone). P_ref,v = e^{y} is formed in fp32 from y in two parts; a block where some y < -87
// or some p̄_v = P_ref,v u_v falls below the smallest normal float takes fp64 exponentials for p̄,
// and its columns with p̄_v < 2^-1022 are computed alone, as in the fp64 pass.
// fp32: |r| < 1 to degree 9 (truncation below 6e-9 relative at |r| = 1)
struct Series32 : PsiSeries<float, 9> {
  Series32() : PsiSeries(1.0f, -3e38f) {}
};

// A position's weights for the fp32 pass 2, and whether δ needs its low part (weights spanning more
// than e^4: δ up to that span, whose rounding would cost e^δ a relative 4 · 2^-24).
struct Weights32 {
  std::vector<float> w;
  bool two_part = false;
  explicit Weights32(int64_t M) : w(M) {}
};

// Whether a position's pass 2 may run in fp32 (In is not double, the weights span at most e^69), and
// its Weights32.
template <typename In>
bool weights_f32(const Members<In>& mb, Weights32& wt) {
  if (std::is_same<In, double>::value || mb.n == 0) return false;
  double lo = kInf, hi = -kInf;
  for (int t = 0; t < mb.n; ++t) {
    lo = std::min(lo, mb.lw[t]);
    hi = std::max(hi, mb.lw[t]);
  }
  if (!(hi - lo <= 69.0)) return false;
  for (int t = 0; t < mb.n; ++t) wt.w[t] = float(mb.w[t]);
  wt.two_part = hi - lo > 4.0;
  return true;
}

// Pass 2's fp32 step over one member's entries of a block: δ (its low part if TwoPart), e^δ, and
// u - 1 and u accumulated; the count of entries with a finite log-probability whose δ lies below
// -kDeltaAlone (-inf where beyond the float range).
template <bool TwoPart, typename In>
int member_deltas_f32(const In* row, int64_t c0, int len, double mxm, double l1, double inv_temp, float wm,
                      const double* yref, float* dm, float* em, float* um1, float* u) {
  int nbig = 0;
#pragma omp simd reduction(+ : nbig)
  for (int j = 0; j < len; ++j) {
    const double y = (load(row, c0 + j) - mxm) * inv_temp - l1;  // -inf for a -inf logit
    const double dd = y - yref[j];
    const float d = float(dd);
    Expm1ExpF32 x = expm1_exp_f32(d);
    if (TwoPart) {  // e^{d + lo} = e^d (1 + lo) to first order, |lo| <= 2^-24 |d|
      const float lo = d > -std::numeric_limits<float>::infinity() ? float(dd - double(d)) : 0.0f;  // not -inf - -inf
      x.em1 += x.e * lo;
      x.e += x.e * lo;
    }
    dm[j] = d;
    em[j] = x.e;
    um1[j] += wm * x.em1;
    u[j] += wm * x.e;
    nbig += d < -kDeltaAlone && y > -kInf ? 1 : 0;
  }
  return nbig;
}

// Pass 2's fp32 scratch, one per thread: δ_mv and e^{δ_mv} of a block of every member.
struct Scratch32 {
  std::vector<float> d, e;
  explicit Scratch32(int64_t M) : d(size_t(kCols) * size_t(M)), e(size_t(kCols) * size_t(M)) {}
};

// mixture_chunk in fp32 (see above); the blocks' sums in fp64, in order.
template <typename In>
MixturePart mixture_chunk_f32(const Members<In>& mb, const Weights32& wt, double inv_temp, const Series32& series32,
                              const Series& series, int64_t lo, int64_t hi, Scratch32& sc) {
  double MI = 0.0, RMI = 0.0;
  const double negligible = kNegligibleLogP - std::log(double(mb.n));  // column_alone's early exit
  // The running maximum and the reference's log P alternate between two buffers: a select stored in
  // place compiles to a masked store behind a branch per vector, which mispredicts.
  double amax2[2][kCols], yref2[2][kCols];
  float u[kCols], sum[kCols], inv[kCols], lnu[kCols], cphi[kCols], cpsi[kCols], pbar[kCols];
  for (int64_t c0 = lo; c0 < hi; c0 += kCols) {
    const int len = int(std::min<int64_t>(kCols, hi - c0));
    for (int t = 0; t < mb.n; ++t) prefetch_elements(mb.row[t] + c0 + len, std::min<int64_t>(kCols, hi - c0 - len));
    for (int j = 0; j < len; ++j) amax2[0][j] = -kInf;
    for (int j = 0; j < len; ++j) yref2[0][j] = 0.0;  // stays 0 where every member has -inf
    int cur = 0;
    for (int t = 0; t < mb.n; ++t, cur ^= 1) {
      const In* row = mb.row[t];
      const double mxm = mb.mx[t], l1 = mb.l1p[t], lwm = mb.lw[t];
      const double *ai = amax2[cur], *yi = yref2[cur];
      double *ao = amax2[cur ^ 1], *yo = yref2[cur ^ 1];
#pragma omp simd
      for (int j = 0; j < len; ++j) {
        const double y = (load(row, c0 + j) - mxm) * inv_temp - l1;  // -inf for a -inf logit
        const double x = lwm + y;
        const bool top = x > ai[j];
        ao[j] = top ? x : ai[j];
        yo[j] = top ? y : yi[j];
      }
    }
    const double* amax = amax2[cur];
    const double* yref = yref2[cur];
    for (int j = 0; j < len; ++j) u[j] = 0.0f;    // u - 1
    for (int j = 0; j < len; ++j) sum[j] = 0.0f;  // u
    int nbig = 0;
    for (int t = 0; t < mb.n; ++t) {
      float* dm = &sc.d[size_t(t) * kCols];
      float* em = &sc.e[size_t(t) * kCols];
      nbig += wt.two_part ? member_deltas_f32<true>(mb.row[t], c0, len, mb.mx[t], mb.l1p[t], inv_temp, wt.w[t], yref,
                                                    dm, em, u, sum)
                          : member_deltas_f32<false>(mb.row[t], c0, len, mb.mx[t], mb.l1p[t], inv_temp, wt.w[t],
                                                     yref, dm, em, u, sum);
    }
#pragma omp simd
    for (int j = 0; j < len; ++j) {
      const float s = u[j], up = 1.0f + s;
      const bool near = std::fabs(s) < 0.5f;
      const float uj = near ? up : sum[j], iv = 1.0f / uj;  // uj >= w_ref: normal
      lnu[j] = log_f32_normal(uj) + (near ? s - (up - 1.0f) : 0.0f) * iv;
      u[j] = uj;
      inv[j] = iv;
      cphi[j] = 0.0f;
      cpsi[j] = 0.0f;
    }
    for (int t = 0; t < mb.n; ++t) {
      const float* dm = &sc.d[size_t(t) * kCols];
      const float* em = &sc.e[size_t(t) * kCols];
      const float wm = wt.w[t];
#pragma omp simd
      for (int j = 0; j < len; ++j)
        add_phi_psi<float>(dm[j] - lnu[j], wm * em[j] * inv[j], wm, series32, cphi[j], cpsi[j]);
    }
    int nlow = 0;
#pragma omp simd reduction(+ : nlow)
    for (int j = 0; j < len; ++j) {  // P_ref = e^{y}, y in two parts (y's own rounding would cost |y| ulp)
      const double y = yref[j];
      const float yh = float(y), yl = float(y - double(yh));
      pbar[j] = exp_f32_core(std::max(yh, -87.0f)) * (1.0f + yl) * u[j];
      nlow += amax[j] > -kInf && (y < -87.0 || !(pbar[j] >= kFloatMin)) ? 1 : 0;
    }
    int nover = 0;  // columns whose Σ w ψ came out +inf (a member without mass, or an overflow)
    if (nbig > 0)
      for (int j = 0; j < len; ++j) nover += cpsi[j] == kInf ? 1 : 0;
    if (nlow == 0 && nover == 0) {
#pragma omp simd reduction(+ : MI, RMI)
      for (int j = 0; j < len; ++j) {
        const bool live = amax[j] > -kInf;  // else p̄_v = 0: nothing (xlogy)
        MI += live ? double(pbar[j]) * double(cphi[j]) : 0.0;
        RMI += live ? (cpsi[j] == kInf ? kInf : double(pbar[j]) * double(cpsi[j])) : 0.0;
      }
      continue;
    }
    // p̄ in fp64; the columns fp32 could not hold (a Σ w ψ overflowed by a δ below -kDeltaAlone, -inf
    // included where δ lies beyond the float range, or p̄ < 2^-1022)
    // computed alone, in column order after the block's sums
    int64_t alone[kCols];  // 64-bit flags: the loop below mixes them with doubles (vectorises only then)
    for (int j = 0; j < len; ++j) alone[j] = 0;
    for (int t = 0; nover > 0 && t < mb.n; ++t)
      for (int j = 0; j < len; ++j)
        if (sc.d[size_t(t) * kCols + j] < -kDeltaAlone && load(mb.row[t], c0 + j) > -kInf && cpsi[j] == kInf)
          alone[j] = 1;
    int nalone = 0;
#pragma omp simd reduction(+ : MI, RMI, nalone)
    for (int j = 0; j < len; ++j) {
      const bool live = amax[j] > -kInf;
      const double pb = exp_nonpos_f64(yref[j]) * double(u[j]);
      const bool sep = live && (alone[j] != 0 || !(pb >= kTiny));
      alone[j] = sep ? 1 : 0;
      MI += live && !sep ? pb * double(cphi[j]) : 0.0;
      RMI += live && !sep ? (cpsi[j] == kInf ? kInf : pb * double(cpsi[j])) : 0.0;
      nalone += sep ? 1 : 0;
    }
    for (int j = 0; nalone > 0 && j < len; ++j) {
      if (!alone[j]) continue;
      // column_alone's early exit, without its loads (p̄_v < e^-750 and every member gives the token
      // mass, as Σ w ψ < inf shows: a share of 0)
      if (amax[j] < negligible && cpsi[j] != kInf) continue;
      const MixturePart t = column_alone(mb, inv_temp, c0 + j, series);
      MI += t.MI;
      RMI += t.RMI;
    }
  }
  return MixturePart{MI, RMI};
}

// A position's pass-1 results, from its members' merged chunk partials: the members with weight for
// pass 2, the aleatoric part, and whether the position has a distribution at all.
template <typename In>
bool finish_pass1(const EnsembleStatsArgs& a, int64_t p, const In* pos, const MemberAcc* acc, Members<In>& mb,
                  double* AU) {
  const double* lwp = a.lw + p * a.lw_stride;
  bool valid = true;
  double au = 0.0;
  mb.n = 0;
  for (int64_t m = 0; m < a.M; ++m) {
    const double lw = lwp[m], w = std::exp(lw);  // w = 0 for lw = -inf: a member without weight
    valid = valid && lw == lw && !acc[m].bad && acc[m].m > -kInf;
    const double l1p = std::log1p(acc[m].R);
    const double H = l1p - acc[m].T / (1.0 + acc[m].R);  // both terms >= 0
    if (!(w > 0.0)) continue;
    au += w * H;
    mb.row[mb.n] = pos + m * a.sm;
    mb.mx[mb.n] = acc[m].m;
    mb.l1p[mb.n] = l1p;
    mb.lw[mb.n] = lw;
    mb.w[mb.n] = w;
    ++mb.n;
  }
  *AU = au;
  return valid;
}

template <typename Out>
void write(const EnsembleStatsArgs& a, int64_t p, bool valid, double AU, double MI, double RMI) {
  const double v[5] = {AU + MI, AU, MI, MI + RMI, RMI};
  void* const out[5] = {a.total, a.aleatoric, a.epistemic, a.epkl, a.rmi};
  for (int f = 0; f < 5; ++f) static_cast<Out*>(out[f])[p] = Out(valid ? v[f] : kNaN);
}

// Columns are cut into fixed chunks of kSplit, whose partial sums merge in column order. Positions
// are spread over threads; with fewer positions than threads, (position, member, chunk) and then
// (position, chunk) pairs are, and the partials merged afterwards in the same order: both schedules
// give bitwise the same results, whatever the thread count.
template <typename In, typename Out>
void run(const EnsembleStatsArgs& a) {
  const In* x = static_cast<const In*>(a.logits);
  const int64_t M = a.M, V = a.V, P = a.P;
  const int64_t nch = (V + kSplit - 1) / kSplit;
  const int nt = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
  const Series series;
  const Series32 series32;
  auto position = [&](int64_t p) { return x + (p / a.n1) * a.s0 + (p % a.n1) * a.s1; };
  auto end = [&](int64_t c) { return std::min(V, (c + 1) * kSplit); };  // chunk c: [c * kSplit, end(c))

  if (P >= nt || nch == 1) {
#pragma omp parallel num_threads(nt)
    {
      std::vector<double> buf(kBlock);
      std::vector<MemberAcc> acc(M);
      Members<In> mb(M);
      Weights32 wt(M);
      Scratch sc(M);
      Scratch32 sc32(M);
#pragma omp for schedule(static)
      for (int64_t p = 0; p < P; ++p) {
        const In* pos = position(p);
        for (int64_t m = 0; m < M; ++m) {
          acc[m] = MemberAcc{-kInf, 0.0, 0.0, false};
          for (int64_t c = 0; c < nch; ++c)
            merge_into(acc[m], member_chunk(a, pos + m * a.sm, c * kSplit, end(c), buf.data()), a.inv_temp);
        }
        double AU = 0.0, MI = 0.0, RMI = 0.0;
        const bool valid = finish_pass1(a, p, pos, acc.data(), mb, &AU);
        const bool f32 = valid && weights_f32(mb, wt);
        for (int64_t c = 0; c < nch && valid; ++c) {
          const int64_t lo = c * kSplit;
          const MixturePart part = f32 ? mixture_chunk_f32(mb, wt, a.inv_temp, series32, series, lo, end(c), sc32)
                                       : mixture_chunk(mb, a.inv_temp, series, lo, end(c), sc);
          MI += part.MI;
          RMI += part.RMI;
        }
        write<Out>(a, p, valid, AU, MI, RMI);
      }
    }
    return;
  }

  // Few positions (decoding): the chunks are the units of work.
  std::vector<MemberAcc> parts1(size_t(P * M * nch));
  std::vector<MixturePart> parts2(size_t(P * nch));
  std::vector<Members<In>> mbs(static_cast<size_t>(P), Members<In>{M});
  std::vector<Weights32> wts(static_cast<size_t>(P), Weights32{M});
  std::vector<double> AU(P);
  std::vector<char> valid(P), f32(P);
#pragma omp parallel num_threads(nt)
  {
    std::vector<double> buf(kBlock);
    Scratch sc(M);
    Scratch32 sc32(M);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < P * M * nch; ++i) {
      const int64_t p = i / (M * nch), m = (i / nch) % M, c = i % nch;
      parts1[i] = member_chunk(a, position(p) + m * a.sm, c * kSplit, end(c), buf.data());
    }
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      std::vector<MemberAcc> acc(M, MemberAcc{-kInf, 0.0, 0.0, false});
      for (int64_t m = 0; m < M; ++m)
        for (int64_t c = 0; c < nch; ++c) merge_into(acc[m], parts1[(p * M + m) * nch + c], a.inv_temp);
      valid[p] = finish_pass1(a, p, position(p), acc.data(), mbs[p], &AU[p]);
      f32[p] = valid[p] && weights_f32(mbs[p], wts[p]);
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < P * nch; ++i) {
      const int64_t p = i / nch, c = i % nch;
      if (!valid[p]) continue;
      const int64_t lo = c * kSplit;
      parts2[i] = f32[p] ? mixture_chunk_f32(mbs[p], wts[p], a.inv_temp, series32, series, lo, end(c), sc32)
                         : mixture_chunk(mbs[p], a.inv_temp, series, lo, end(c), sc);
    }
#pragma omp for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      double MI = 0.0, RMI = 0.0;
      for (int64_t c = 0; c < nch && valid[p]; ++c) {
        MI += parts2[p * nch + c].MI;
        RMI += parts2[p * nch + c].RMI;
      }
      write<Out>(a, p, valid[p] != 0, AU[p], MI, RMI);
    }
  }
}

}  // namespace

void ensemble_stats(const EnsembleStatsArgs& a) {
  switch (a.dtype) {
    case DType::F32: run<float, float>(a); break;
    case DType::F64: run<double, double>(a); break;
    case DType::F16: run<Half, float>(a); break;
    case DType::BF16: run<Bf16, float>(a); break;
  }
}

}  // namespace FUQ_ISA
}  // namespace cpu
}  // namespace flashuq
