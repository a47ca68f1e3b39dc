// Pair counting for rank statistics (Kendall's tau): inversions of an integer sequence.
#pragma once

#include <cstdint>

namespace flashuq {
namespace cpu {

// Number of pairs i < j with a[i] > a[j] (strict), by a bottom-up merge sort of a copy:
// O(n log n), exact in 64 bits, deterministic (one thread).
int64_t count_inversions(const int64_t* a, int64_t n);

}  // namespace cpu
}  // namespace flashuq
