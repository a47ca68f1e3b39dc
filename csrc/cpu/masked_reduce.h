// CPU masked / ragged reductions over sequences (docs/methods.md#masked-reductions).
#pragma once

#include <cstdint>

namespace flashuq {
namespace cpu {

enum class ReduceOp : int { Sum = 0, Mean = 1, Max = 2, Min = 3, LogSumExp = 4 };

// Sequence b is values[lo, hi) with lo, hi = cu[b], cu[b+1] when cu is given, else b*T, b*T + T
// filtered by mask (nonzero = real token). weights (optional) has the layout of values.
template <typename F>
void masked_reduce(const F* values, const uint8_t* mask, const F* weights, const int64_t* cu, int64_t B, int64_t T,
                   ReduceOp op, F* out, int num_threads);

// Per-sequence quantiles with numpy's "linear" method (its lerp included), out [B, nq].
template <typename F>
void masked_quantile(const F* values, const uint8_t* mask, const int64_t* cu, int64_t B, int64_t T, const double* q,
                     int64_t nq, F* out, int num_threads);

}  // namespace cpu
}  // namespace flashuq
