// Masked and ragged reductions: one sequence per OpenMP iteration, accumulated in fp64 in index
// order (deterministic; padding is never read into an accumulator, so it cannot change a result).
// The logsumexp of fp32 values without weights is the exception: blocks of the token statistics'
// fp32 lanes, merged in fp64 (still deterministic; padding reads as -inf and adds nothing).
#include "masked_reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "token_stats.h"  // masked_logsumexp

namespace flashuq {
namespace cpu {

template <typename F>
void masked_reduce(const F* values, const uint8_t* mask, const F* weights, const int64_t* cu, int64_t B, int64_t T,
                   ReduceOp op, F* out, int num_threads) {
  const int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  // The logsumexp of fp32 values without weights runs on the token statistics' vectorised passes
  // (token_stats.h).
  if constexpr (std::is_same<F, float>::value)
    if (op == ReduceOp::LogSumExp && weights == nullptr)
      return masked_logsumexp(DType::F32, values, mask, cu, B, T, out, nt);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t b = 0; b < B; ++b) {
    const int64_t lo = cu ? cu[b] : b * T, hi = cu ? cu[b + 1] : b * T + T;
    auto real = [&](int64_t i) { return mask == nullptr || mask[i] != 0; };
    auto w = [&](int64_t i) { return weights ? double(weights[i]) : 1.0; };
    int64_t n = 0;
    double r = nan;
    switch (op) {
      case ReduceOp::Sum:
      case ReduceOp::Mean: {
        double s = 0.0, sw = 0.0;
        for (int64_t i = lo; i < hi; ++i)
          if (real(i)) { s += w(i) * double(values[i]); sw += w(i); ++n; }
        r = op == ReduceOp::Sum ? s : (n ? s / sw : nan);
        break;
      }
      case ReduceOp::Max:
      case ReduceOp::Min: {
        const bool mx = op == ReduceOp::Max;
        double best = mx ? -inf : inf;
        bool has_nan = false;
        for (int64_t i = lo; i < hi; ++i) {
          if (!real(i)) continue;
          const double v = values[i];
          has_nan |= v != v;
          best = mx ? (v > best ? v : best) : (v < best ? v : best);
          ++n;
        }
        r = (n == 0 || has_nan) ? nan : best;
        break;
      }
      case ReduceOp::LogSumExp: {
        double m = -inf;
        bool has_nan = false;
        for (int64_t i = lo; i < hi; ++i) {
          if (!real(i)) continue;
          const double v = double(values[i]) + std::log(w(i));
          has_nan |= v != v;
          m = v > m ? v : m;
          ++n;
        }
        if (n == 0 || has_nan) { r = nan; break; }
        if (!std::isfinite(m)) { r = m; break; }  // all -inf, or a +inf
        double s = 0.0;
        for (int64_t i = lo; i < hi; ++i)
          if (real(i)) s += std::exp(double(values[i]) + std::log(w(i)) - m);
        r = m + std::log(s);
        break;
      }
    }
    out[b] = F(r);
  }
}

template void masked_reduce<float>(const float*, const uint8_t*, const float*, const int64_t*, int64_t, int64_t,
                                   ReduceOp, float*, int);
template void masked_reduce<double>(const double*, const uint8_t*, const double*, const int64_t*, int64_t, int64_t,
                                    ReduceOp, double*, int);

// numpy.quantile(method="linear"): virtual index (n - 1) q, then numpy's _lerp, which interpolates
// from the upper neighbour when the fraction is >= 0.5 (so results match numpy to the last bit).
template <typename F>
void masked_quantile(const F* values, const uint8_t* mask, const int64_t* cu, int64_t B, int64_t T, const double* q,
                     int64_t nq, F* out, int num_threads) {
  const int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  const double nan = std::numeric_limits<double>::quiet_NaN();
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t b = 0; b < B; ++b) {
    const int64_t lo = cu ? cu[b] : b * T, hi = cu ? cu[b + 1] : b * T + T;
    std::vector<double> x;
    x.reserve(size_t(hi - lo));
    bool has_nan = false;
    for (int64_t i = lo; i < hi; ++i) {
      if (mask && mask[i] == 0) continue;
      const double v = values[i];
      has_nan |= v != v;
      x.push_back(v);
    }
    std::sort(x.begin(), x.end());
    const int64_t n = int64_t(x.size());
    for (int64_t j = 0; j < nq; ++j) {
      double r = nan;
      if (n > 0 && !has_nan) {
        const double vi = double(n - 1) * q[j];
        const double prev = std::floor(vi);
        const int64_t i0 = std::min<int64_t>(int64_t(prev), n - 1);
        const int64_t i1 = std::min<int64_t>(i0 + 1, n - 1);
        const double g = vi - prev;
        const double a = x[size_t(i0)], d = x[size_t(i1)] - a;
        r = g >= 0.5 ? x[size_t(i1)] - d * (1.0 - g) : a + d * g;
      }
      out[b * nq + j] = F(r);
    }
  }
}

template void masked_quantile<float>(const float*, const uint8_t*, const int64_t*, int64_t, int64_t, const double*,
                                     int64_t, float*, int);
template void masked_quantile<double>(const double*, const uint8_t*, const int64_t*, int64_t, int64_t, const double*,
                                      int64_t, double*, int);

}  // namespace cpu
}  // namespace flashuq
