// CUDA UQAC kernels (docs/methods.md#uqac): backtracking and the similarity filter, one thread block per
// sequence, the shared code of flashuq/uqac.h. (The reduction, steps 1-2, is the Triton kernel
// kernels/uqac_reduce.py.)
#pragma once
#include <cstdint>

#include "flashuq/dtype.h"

namespace flashuq {
namespace cuda {

// As flashuq::cpu::UqacBacktrackArgs, all pointers device memory, plus the workspace.
struct UqacBacktrackArgs {
  bool f64;
  const void* attn;             // contiguous [B, Rmax, Nmax]
  const uint8_t* is_stop;       // [B, Nmax]
  const int64_t* ans;           // [B, Amax]
  const int64_t *R, *Ntok, *A, *min_len;  // [B] each; out-of-range values give lengths[b] = -1
  int64_t B, Rmax, Nmax, Amax;
  int buffer;
  double threshold;
  int64_t max_steps;
  int64_t* chain;               // [B, C]
  void* scores;                 // [B, C]
  int64_t* lengths;             // [B]
  int64_t C;
  uint8_t* ws;                  // uqac_backtrack_workspace(B, Nmax, element size) bytes
};

// Workspace bytes of uqac_backtrack.
int64_t uqac_backtrack_workspace(int64_t B, int64_t Nmax, int elem_size);

struct UqacSimilarityArgs {
  DType dtype;
  const void* h;                // contiguous [B, Rmax, D]
  const int64_t* chain;         // [B, C]
  const int64_t* lengths;       // [B]
  const int64_t* ans;           // [B, Amax]
  const int64_t *A, *R;         // [B]
  int64_t B, Rmax, D, C, Amax;
  int64_t k;
  double threshold;
  int64_t* keep;                // [B, K]
  int64_t* keep_len;            // [B]; -1 for out-of-range lengths or answer sources
  int64_t K;
  float* ws;                    // [B, 2 * max(C, 1)]
};

// Launch on `stream`; return a cudaError_t as int.
int uqac_backtrack(const UqacBacktrackArgs& a, uintptr_t stream);
int uqac_similarity(const UqacSimilarityArgs& a, uintptr_t stream);

}  // namespace cuda
}  // namespace flashuq
