// CUDA C++ token statistics (k = 0): the same accumulator as the CPU module, for cross-checking
// the Triton kernel on a GPU and as the base of later CUDA-only paths.
#pragma once
#include <cstdint>

namespace flashuq {
namespace cuda {

enum class DType : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };

struct TokenStatsArgs {
  DType dtype;
  const void* logits;
  int64_t rows, V, n1, s0, s1;
  const int64_t* tokens;  // device pointer or nullptr
  double inv_temp;
  void* out[8];           // lse, max_logprob, logprob, entropy, margin, collision, kurtosis, self_certainty
  void* renyi_term;       // with fisher_rao: nullptr unless the tempered statistics are requested
  void* fisher_rao;
  int64_t* argmax;
};

// Launches on `stream`; returns a cudaError_t as int.
int token_stats(const TokenStatsArgs& a, uintptr_t stream);

}  // namespace cuda
}  // namespace flashuq
