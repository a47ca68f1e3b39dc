// CPU token statistics: the argument block shared by the dispatcher and the ISA variants.
#pragma once

#include <cstdint>

#include "flashuq/dtype.h"

namespace flashuq {
namespace cpu {

// Rows are addressed through at most two leading dimensions (Python coalesces the rest):
// row r = i0 * n1 + i1 starts at logits + i0 * s0 + i1 * s1 (element strides, 64-bit).
struct TokenStatsArgs {
  DType dtype;
  const void* logits;
  int64_t rows, V, n1, s0, s1;
  const int64_t* tokens;  // [rows] or nullptr
  double inv_temp;
  int k;                  // top-k size, 0..64
  // The outputs in the order of flashuq.TokenStats' fields (the order of the bindings and of
  // _Outputs in flashuq/ops/token_stats.py): fp32, or fp64 when dtype == F64; each contiguous [rows]
  void* lse;
  void* max_logprob;
  int64_t* argmax;
  void* logprob;
  void* entropy;
  void* margin;
  void* collision;
  void* kurtosis;
  void* self_certainty;
  void* topk_logprobs;    // [rows, k]
  int64_t* topk_ids;      // [rows, k]
  void* renyi_term;       // with fisher_rao: nullptr unless the tempered statistics are requested
  void* fisher_rao;
  int num_threads;        // <= 0: OpenMP's default
};

constexpr int kMaxTopK = 64;
// Fixed column chunk: results do not depend on the thread count or on whether a row was split.
constexpr int64_t kChunk = 16384;

void token_stats(const TokenStatsArgs& a);

// e^x for x <= 0 as the kernel computes it (0 below -104), elementwise, for the tests' error bound.
void exp_nonpos_f32(const float* x, float* out, int64_t n);

// masked_reduce's logsumexp without weights of fp32, bf16 or fp16 sequences (masked_reduce.h's
// layouts; out fp32), on the passes above: blocks summed in fp32 lanes, merged in fp64.
void masked_logsumexp(DType dtype, const void* values, const uint8_t* mask, const int64_t* cu, int64_t B, int64_t T,
                      float* out, int num_threads);

// What row_entropy_sums gives (per ISA below; ensemble_stats' first pass over one member's row of
// fp32, bf16 or fp16 logits, contiguous, calls its own ISA's): the accumulator of
// docs/numerics.md#accumulator restricted to the maximum m, R = Σ e^d over all but the first maximum
// and T = Σ e^d d, d = (x - m)/T, from the passes above (fp32 lanes, blocks merged in fp64); bad: the
// row holds a NaN or +inf.
struct RowEntropySums {
  double m, R, T;
  bool bad;
};

#define FUQ_TOKEN_STATS_VARIANT(ns)                                                                     \
  namespace ns {                                                                                        \
  void token_stats(const TokenStatsArgs& a);                                                            \
  void exp_nonpos_f32(const float* x, float* out, int64_t n);                                           \
  void masked_logsumexp(DType dtype, const void* values, const uint8_t* mask, const int64_t* cu,        \
                        int64_t B, int64_t T, float* out, int num_threads);                             \
  RowEntropySums row_entropy_sums(DType dtype, const void* row, int64_t V, double inv_temp);            \
  }
FUQ_TOKEN_STATS_VARIANT(base)
FUQ_TOKEN_STATS_VARIANT(avx2)
FUQ_TOKEN_STATS_VARIANT(avx512)
#undef FUQ_TOKEN_STATS_VARIANT

}  // namespace cpu
}  // namespace flashuq
