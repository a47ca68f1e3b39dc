// Small sequential kernels behind flashuq.metrics: inversions of an integer sequence (Kendall's
// tau, reversed pairs), the ranks' sort order, the pool-adjacent-violators isotonic fit (isotonic
// Brier score) and the confidence bins of ECE.
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

// Stable ascending order of x (out[k] = the index of the k-th smallest; equal values, -0 and +0
// among them, keep their input order; NaN last) by a least-significant-digit radix sort of the
// values' bit patterns, 11 bits per pass, skipping the passes whose digit is the same everywhere.
// O(n); one thread.
void argsort_f64(const double* x, int64_t n, int64_t* out);

// The sums per confidence bin behind ECE, in one pass. conf_i = (-u_i) * scale + offset when
// `scaled` (numpy's x * scale + offset: the caller's min-max scaling), else -u_i. Items with conf_i
// outside [0, 1] land in no bin. Bin b holds (edges[b], edges[b + 1]], bin 0 also edges[0] (numpy's
// searchsorted(edges, conf, "left") - 1, at least 0). count, sum_conf and sum_correct ([n_bins],
// zeroed by the caller) accumulate in index order, as numpy's bincount does: the same bits.
void reliability_sums(const double* u, const double* correct, int64_t n, double scale, double offset, bool scaled,
                      const double* edges, int n_bins, int64_t* count, double* sum_conf, double* sum_correct);

}  // namespace cpu
}  // namespace flashuq
