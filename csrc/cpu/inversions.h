// Small sequential kernels behind flashuq.metrics: inversions of an integer sequence (Kendall's
// tau, reversed pairs) and the pool-adjacent-violators isotonic fit (isotonic Brier score).
#pragma once

#include <cstdint>

namespace flashuq {
namespace cpu {

// Number of pairs i < j with a[i] > a[j] (strict), by a bottom-up merge sort of a copy:
// O(n log n), exact in 64 bits, deterministic (one thread).
int64_t count_inversions(const int64_t* a, int64_t n);

// Weighted least-squares non-decreasing fit of y (weights w > 0) in the given order, by pool
// adjacent violators: out[i] is the weighted mean of the block that holds i. O(n).
void isotonic_pav(const double* y, const double* w, int64_t n, double* out);

}  // namespace cpu
}  // namespace flashuq
