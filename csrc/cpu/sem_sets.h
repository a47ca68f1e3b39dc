// NumSemSets on the CPU (docs/methods.md#methods; LM-Polygraph num_sem_sets.py): per question, the connected
// components of the graph linking responses i and j when E > C in both directions, over the valid
// responses. Union-find per question, one question per OpenMP iteration.
#pragma once

#include <cstdint>

#include "flashuq/dtype.h"

namespace flashuq {
namespace cpu {

struct SemSetsArgs {
  DType dtype;           // F32 or F64: E, C and out
  const void* E;         // contiguous [Q, K, K] entailment probabilities
  const void* C;         // contiguous [Q, K, K] contradiction probabilities
  const uint8_t* valid;  // [Q, K], nonzero: the response counts
  int64_t Q, K;
  void* out;             // [Q]: the number of components; NaN without a valid response
  int num_threads;       // <= 0: OpenMP's default
};

void num_sem_sets(const SemSetsArgs& a);

}  // namespace cpu
}  // namespace flashuq
