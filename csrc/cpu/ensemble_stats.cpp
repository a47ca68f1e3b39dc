// Ensemble decomposition on the CPU: one position per OpenMP iteration, everything in fp64.
//
// Pass 1 reads each member's row once in blocks and keeps the shifted online accumulator of
// docs/numerics.md#accumulator restricted to (m, R, T): log1p(R) gives log P_mv = (z - m) / T - log1p(R), and
// H_m = log1p(R) - T / (1 + R). Pass 2 reads the M members' logits column by column and, with
// log p̄_v = logsumexp_m(log w_m + log P_mv) and r_mv = log P_mv - log p̄_v, accumulates
//
//   MI  = Σ_v p̄_v Σ_m w_m φ(r_mv),   φ(r) = 1 + e^r (r - 1) >= 0
//   RMI = Σ_v p̄_v Σ_m w_m ψ(r_mv),   ψ(r) = e^r - 1 - r     >= 0
//
// (both follow from Σ_m w_m e^{r_mv} = 1; MI = Σ_m w_m KL(P_m || p̄) and RMI =
// Σ_m w_m KL(p̄ || P_m)). Every term is non-negative, so nothing cancels: TU = AU + MI and
// EPKL - AU = MI + RMI come out accurate even when the members nearly agree, and MI >= 0 holds
// exactly. φ and ψ use their Taylor series for |r| < 1/2. A member with P_mv = 0 where p̄_v > 0
// gives ψ = +inf: EPKL and RMI are +inf (docs/methods.md#ensemble with xlogy semantics).
//
// A position is summed by one thread in column order: results do not depend on the thread count.
#include "ensemble_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <omp.h>

#include "flashuq/cpu_math.h"

namespace flashuq {
namespace cpu {
namespace {

constexpr int kBlock = 1024;  // pass-1 block (columns of one member)
constexpr int kCols = 256;    // pass-2 block (columns of all members)
constexpr double kSmall = 0.5;
constexpr int kSeries = 14;   // Taylor terms beyond the first: truncation < 1e-16 relative at |r| = 1/2

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
  bool bad = false;
  for (int i = 0; i < len; ++i) {
    double x = load(row, base + i);
    const bool b = !(x == x) || x == kInf;  // NaN or +inf: no distribution
    x = b ? -kInf : x;
    buf[i] = x;
    bm = x > bm ? x : bm;
    bad = bad || b;
  }
  MemberAcc acc{bm, 0.0, 0.0, bad};
  if (!(bm > -kInf)) return acc;
  int bidx = 0;
  while (buf[bidx] != bm) ++bidx;
  double R = 0.0, T = 0.0;
  for (int i = 0; i < len; ++i) {
    const double x = buf[i];
    if (!(x > -kInf)) continue;
    const double d = (x - bm) * inv_temp;
    const double e = std::exp(d);
    R += i == bidx ? 0.0 : e;  // the max's e^0 = 1 stays implicit: R never forms 1 + tiny
    T += e > 0.0 ? e * d : 0.0;
  }
  acc.R = R;
  acc.T = T;
  return acc;
}

// Horner factors of φ(r)/r² = Σ_k r^k (k+1)/(k+2)! and ψ(r)/r² = Σ_k r^k / (k+2)!, both 1/2 at 0.
struct Series {
  double phi[kSeries + 1], psi[kSeries + 1];
  Series() {
    for (int i = 1; i <= kSeries; ++i) {
      psi[i] = 1.0 / double(i + 2);
      phi[i] = double(i + 1) / (double(i) * double(i + 2));
    }
  }
  void eval(double r, double* phi_r2, double* psi_r2) const {
    double tphi = 1.0, tpsi = 1.0;
    for (int i = kSeries; i >= 1; --i) {
      tphi = 1.0 + tphi * r * phi[i];
      tpsi = 1.0 + tpsi * r * psi[i];
    }
    *phi_r2 = 0.5 * tphi;
    *psi_r2 = 0.5 * tpsi;
  }
};

template <typename In, typename Out>
void run(const EnsembleStatsArgs& a) {
  const In* x = static_cast<const In*>(a.logits);
  Out* o_tu = static_cast<Out*>(a.total);
  Out* o_au = static_cast<Out*>(a.aleatoric);
  Out* o_mi = static_cast<Out*>(a.epistemic);
  Out* o_epkl = static_cast<Out*>(a.epkl);
  Out* o_rmi = static_cast<Out*>(a.rmi);
  const int64_t M = a.M, V = a.V;
  const double inv_temp = a.inv_temp;
  const int nt = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
  const Series series;
#pragma omp parallel num_threads(nt)
  {
    std::vector<double> buf(kBlock), lp(size_t(kCols) * size_t(M)), mx(M), l1p(M), w(M), lw(M);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < a.P; ++p) {
      const In* pos = x + (p / a.n1) * a.s0 + (p % a.n1) * a.s1;
      const double* lwp = a.lw + p * a.lw_stride;
      bool valid = true;
      double AU = 0.0;
      // ---- pass 1: per member (max, log1p R, entropy)
      for (int64_t m = 0; m < M && valid; ++m) {
        lw[m] = lwp[m];
        w[m] = std::exp(lw[m]);  // 0 for lw = -inf: a member without weight
        valid = lw[m] == lw[m];
        const In* row = pos + m * a.sm;
        MemberAcc acc{-kInf, 0.0, 0.0, false};
        for (int64_t b = 0; b < V; b += kBlock) {
          const int len = int(std::min<int64_t>(kBlock, V - b));
          merge_into(acc, block_partial(row, b, len, inv_temp, buf.data()), inv_temp);
        }
        valid = valid && !acc.bad && acc.m > -kInf;
        mx[m] = acc.m;
        l1p[m] = std::log1p(acc.R);
        const double H = l1p[m] - acc.T / (1.0 + acc.R);  // both terms >= 0
        if (w[m] > 0.0) AU += w[m] * H;
      }
      if (!valid) {
        o_tu[p] = o_au[p] = o_mi[p] = o_epkl[p] = o_rmi[p] = Out(kNaN);
        continue;
      }
      // ---- pass 2: the members' log-probabilities column by column
      double MI = 0.0, RMI = 0.0;
      for (int64_t c0 = 0; c0 < V; c0 += kCols) {
        const int len = int(std::min<int64_t>(kCols, V - c0));
        for (int64_t m = 0; m < M; ++m) {
          const In* row = pos + m * a.sm;
          for (int j = 0; j < len; ++j) {
            const double z = load(row, c0 + j);  // finite or -inf here (the position is valid)
            lp[size_t(j) * M + m] = z > -kInf ? (z - mx[m]) * inv_temp - l1p[m] : -kInf;
          }
        }
        for (int j = 0; j < len; ++j) {
          const double* l = &lp[size_t(j) * M];
          double amax = -kInf;
          for (int64_t m = 0; m < M; ++m)
            if (w[m] > 0.0) amax = std::max(amax, lw[m] + l[m]);
          if (!(amax > -kInf)) continue;  // p̄_v = 0: every term is 0 (xlogy)
          double S = 0.0;
          for (int64_t m = 0; m < M; ++m)
            if (w[m] > 0.0) S += std::exp(lw[m] + l[m] - amax);  // >= 1
          const double lpbar = amax + std::log(S);
          const double pbar = std::exp(lpbar);
          double cphi = 0.0, cpsi = 0.0;
          for (int64_t m = 0; m < M; ++m) {
            if (!(w[m] > 0.0)) continue;
            const double r = l[m] - lpbar;
            if (std::fabs(r) < kSmall) {
              double sphi, spsi;
              series.eval(r, &sphi, &spsi);
              const double wr2 = w[m] * r * r;
              cphi += wr2 * sphi;
              cpsi += wr2 * spsi;
            } else if (r > -kInf) {
              const double q = std::exp(lw[m] + r);  // w_m P_mv / p̄_v <= 1
              cphi += w[m] + q * (r - 1.0);
              cpsi += (q - w[m]) - w[m] * r;
            } else {  // P_mv = 0 < p̄_v: φ(-inf) = 1, ψ(-inf) = +inf
              cphi += w[m];
              cpsi = kInf;
            }
          }
          MI += pbar * cphi;
          RMI += cpsi == kInf ? kInf : pbar * cpsi;  // +inf even if p̄_v underflowed
        }
      }
      o_tu[p] = Out(AU + MI);
      o_au[p] = Out(AU);
      o_mi[p] = Out(MI);
      o_epkl[p] = Out(MI + RMI);
      o_rmi[p] = Out(RMI);
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

}  // namespace cpu
}  // namespace flashuq
