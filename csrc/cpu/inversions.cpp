#include "inversions.h"

#include <algorithm>
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

}  // namespace cpu
}  // namespace flashuq
