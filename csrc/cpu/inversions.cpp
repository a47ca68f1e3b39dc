#include "inversions.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace flashuq {
namespace cpu {

int64_t count_inversions(const int64_t* a, int64_t n) {
  if (n < 2) return 0;
  std::vector<int64_t> x(a, a + n), y(n);
  int64_t total = 0;
  // short runs by insertion sort (each shift is one inversion), then merge passes
  constexpr int64_t kRun = 32;
  for (int64_t lo = 0; lo < n; lo += kRun) {
    const int64_t hi = std::min(n, lo + kRun);
    for (int64_t i = lo + 1; i < hi; ++i) {
      const int64_t v = x[i];
      int64_t j = i;
      while (j > lo && x[j - 1] > v) {
        x[j] = x[j - 1];
        --j;
      }
      total += i - j;
      x[j] = v;
    }
  }
  for (int64_t w = kRun; w < n; w *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * w) {
      const int64_t mid = std::min(n, lo + w), hi = std::min(n, lo + 2 * w);
      int64_t i = lo, j = mid, o = lo;
      while (i < mid && j < hi) {
        if (x[j] < x[i]) {  // strict: equal values are not inverted
          total += mid - i;  // x[j] jumps over every remaining left item
          y[o++] = x[j++];
        } else {
          y[o++] = x[i++];
        }
      }
      while (i < mid) y[o++] = x[i++];
      while (j < hi) y[o++] = x[j++];
    }
    x.swap(y);
  }
  return total;
}

void isotonic_pav(const double* y, const double* w, int64_t n, double* out) {
  // blocks on a stack: weighted sum, weight and first index; merge while the last two decrease
  std::vector<double> sum, wt;
  std::vector<int64_t> start;
  sum.reserve(n); wt.reserve(n); start.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    sum.push_back(w[i] * y[i]);
    wt.push_back(w[i]);
    start.push_back(i);
    while (sum.size() > 1) {
      const size_t b = sum.size() - 1;
      if (sum[b - 1] * wt[b] <= sum[b] * wt[b - 1]) break;  // mean(b-1) <= mean(b): in order
      sum[b - 1] += sum[b];
      wt[b - 1] += wt[b];
      sum.pop_back(); wt.pop_back(); start.pop_back();
    }
  }
  for (size_t b = 0; b < sum.size(); ++b) {
    const int64_t e = b + 1 < sum.size() ? start[b + 1] : n;
    const double m = sum[b] / wt[b];
    for (int64_t i = start[b]; i < e; ++i) out[i] = m;
  }
}

namespace {

// The order-preserving unsigned key of a double: -0 as +0, NaN above +inf.
inline uint64_t sort_key(double v) {
  if (v != v) return ~uint64_t(0);
  uint64_t b;
  std::memcpy(&b, &v, sizeof b);
  if (v == 0.0) b = 0;
  return (b >> 63) ? ~b : (b | (uint64_t(1) << 63));
}

}  // namespace

void argsort_f64(const double* x, int64_t n, int64_t* out) {
  if (n <= 0) return;
  constexpr int kBits = 11, kPasses = (64 + kBits - 1) / kBits;
  constexpr uint64_t kMask = (uint64_t(1) << kBits) - 1;
  std::vector<uint64_t> key(n), key2(n);
  std::vector<int64_t> idx2(n);
  std::vector<int64_t> hist(size_t(kPasses) << kBits, 0);  // every pass's digit counts, from one read
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t k = sort_key(x[i]);
    key[i] = k;
    out[i] = i;
    for (int p = 0; p < kPasses; ++p) ++hist[(size_t(p) << kBits) + ((k >> (p * kBits)) & kMask)];
  }
  uint64_t* src_k = key.data();
  uint64_t* dst_k = key2.data();
  int64_t* src_i = out;
  int64_t* dst_i = idx2.data();
  for (int p = 0; p < kPasses; ++p) {
    int64_t* h = hist.data() + (size_t(p) << kBits);
    if (h[(src_k[0] >> (p * kBits)) & kMask] == n) continue;  // one digit everywhere: the order stands
    int64_t sum = 0;  // counts -> each digit's first slot
    for (uint64_t d = 0; d <= kMask; ++d) {
      const int64_t c = h[d];
      h[d] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {  // in input order: stable
      const uint64_t k = src_k[i];
      const int64_t at = h[(k >> (p * kBits)) & kMask]++;
      dst_k[at] = k;
      dst_i[at] = src_i[i];
    }
    std::swap(src_k, dst_k);
    std::swap(src_i, dst_i);
  }
  if (src_i != out) std::memcpy(out, src_i, size_t(n) * sizeof(int64_t));
}

void reliability_sums(const double* u, const double* correct, int64_t n, double scale, double offset, bool scaled,
                      const double* edges, int n_bins, int64_t* count, double* sum_conf, double* sum_correct) {
  for (int64_t i = 0; i < n; ++i) {
    const double x = scaled ? -u[i] * scale + offset : -u[i];
    if (!(x >= 0.0 && x <= 1.0)) continue;
    // j = the number of edges below x: from the equal-width guess, stepped to the exact count
    int j = std::min(n_bins, std::max(0, int(x * n_bins)));
    while (j > 0 && !(edges[j - 1] < x)) --j;
    while (j <= n_bins && edges[j] < x) ++j;
    const int b = std::max(j - 1, 0);
    ++count[b];
    sum_conf[b] += x;
    sum_correct[b] += correct[i];
  }
}

}  // namespace cpu
}  // namespace flashuq
