// CPU token statistics: the argument block shared by the dispatcher and the ISA variants.
#pragma once

#include <cstdint>

namespace flashuq {
namespace cpu {

enum class DType : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };

// Rows are addressed through at most two leading dimensions (Python coalesces the rest):
// row r = i0 * n1 + i1 starts at logits + i0 * s0 + i1 * s1 (element strides, 64-bit).
struct TokenStatsArgs {
  DType dtype;
  const void* logits;
  int64_t rows, V, n1, s0, s1;
  const int64_t* tokens;  // [rows] or nullptr
  double inv_temp;
  int k;                  // top-k size, 0..64
  // fp32 outputs, or fp64 when dtype == F64; each contiguous [rows]
  void* lse;
  void* max_logprob;
  void* logprob;
  void* entropy;
  void* margin;
  void* collision;
  void* kurtosis;
  void* self_certainty;
  void* renyi_term;       // with fisher_rao: nullptr unless the tempered statistics are requested
  void* fisher_rao;
  int64_t* argmax;
  void* topk_logprobs;    // [rows, k]
  int64_t* topk_ids;      // [rows, k]
  int num_threads;        // <= 0: OpenMP's default
};

constexpr int kMaxTopK = 64;
// Fixed column chunk: results do not depend on the thread count or on whether a row was split.
constexpr int64_t kChunk = 16384;

void token_stats(const TokenStatsArgs& a);

// Whether this processor runs the AVX2 + FMA variants (false where none was built).
bool has_avx2_fma();

namespace base { void token_stats(const TokenStatsArgs& a); }
namespace avx2 { void token_stats(const TokenStatsArgs& a); }

}  // namespace cpu
}  // namespace flashuq
