// CPU ensemble decomposition (docs/methods.md#ensemble): total / aleatoric / epistemic uncertainty, EPKL and
// reverse mutual information of M member distributions at each position.
#pragma once

#include <cstdint>

#include "flashuq/dtype.h"

namespace flashuq {
namespace cpu {

// Positions are addressed like token_stats rows (Python coalesces the leading dimensions):
// position p = i0 * n1 + i1 starts at logits + i0 * s0 + i1 * s1, and member m of it at
// + m * sm (element strides, 64-bit); its V logits are contiguous.
struct EnsembleStatsArgs {
  DType dtype;
  const void* logits;
  int64_t P, M, V, n1, s0, s1, sm;
  // log member weights, float64: position p's M weights at lw + p * lw_stride (lw_stride = 0:
  // the same weights everywhere, e.g. -log M for the "pe" mode). -inf = a member without weight.
  const double* lw;
  int64_t lw_stride;
  double inv_temp;
  // fp32 outputs, or fp64 when dtype == F64; each contiguous [P]
  void* total;
  void* aleatoric;
  void* epistemic;
  void* epkl;
  void* rmi;
  int num_threads;  // <= 0: OpenMP's default
};

void ensemble_stats(const EnsembleStatsArgs& a);
namespace base { void ensemble_stats(const EnsembleStatsArgs& a); }
namespace avx2 { void ensemble_stats(const EnsembleStatsArgs& a); }
namespace avx512 { void ensemble_stats(const EnsembleStatsArgs& a); }

}  // namespace cpu
}  // namespace flashuq
