// CPU UQAC kernels (docs/methods.md#uqac): the shared code of flashuq/uqac.h, OpenMP over query rows
// (reduction) and over sequences (backtracking, similarity filter). No atomics: every output
// element is written by one thread, so results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "flashuq/dtype.h"

namespace flashuq {
namespace cpu {

constexpr int kUqacCalibration = 10;

struct UqacReduceArgs {
  DType dtype;                 // of attn; the output is F64 for F64 input, else F32
  const void* attn;            // [B, L, H, R, Ntok], column stride 1
  int64_t B, L, H, R, Ntok;
  int64_t sb, sl, sh, sr;      // element strides of the first four dimensions (non-negative)
  const double* calibration;   // [kUqacCalibration]: factor c multiplies the key at column I + r - 10 + c
  int n_heads;                 // 1 .. L*H
  bool mean;                   // else max
  void* out;                   // contiguous [B, R, Ntok]
  int64_t* selected;           // contiguous [B, R, n_heads]: the chosen l*H + h, ascending entropy
  int num_threads;
};

void uqac_reduce(const UqacReduceArgs& a);
// its builds per instruction set (uqac_reduce_impl.h)
namespace base { void uqac_reduce(const UqacReduceArgs& a); }
namespace avx2 { void uqac_reduce(const UqacReduceArgs& a); }
namespace avx512 { void uqac_reduce(const UqacReduceArgs& a); }

struct UqacBacktrackArgs {
  bool f64;                    // attn and scores are fp64 (else fp32)
  const void* attn;            // contiguous [B, Rmax, Nmax]
  const uint8_t* is_stop;      // contiguous [B, Nmax]
  const int64_t* ans;          // contiguous [B, Amax]
  const int64_t *R, *Ntok, *A; // [B] each: 0 <= R <= Rmax, R <= Ntok <= Nmax, 0 <= A <= Amax
  const int64_t* min_len;      // [B] total minimum chain lengths
  int64_t B, Rmax, Nmax, Amax;
  int buffer;
  double threshold;
  int64_t max_steps;
  int64_t* chain;              // [B, C]
  void* scores;                // [B, C]
  int64_t* lengths;            // [B]; -1 when sequence b's answer sources are out of range
  int64_t C;
  int num_threads;
};

void uqac_backtrack(const UqacBacktrackArgs& a);

struct UqacSimilarityArgs {
  DType dtype;                 // of h; similarities in fp64 for F64, else fp32
  const void* h;               // contiguous [B, Rmax, D]
  const int64_t* chain;        // contiguous [B, C], ascending, the answer sources last
  const int64_t* lengths;      // [B] chain lengths (<= C); members past length - A are candidates
  const int64_t* ans;          // contiguous [B, Amax]
  const int64_t *A, *R;        // [B] each
  int64_t B, Rmax, D, C, Amax;
  int64_t k;
  double threshold;
  int64_t* keep;               // [B, K] kept chain members, ascending
  int64_t* keep_len;           // [B]
  int64_t K;                   // min(k, C)
  int num_threads;
};

void uqac_similarity(const UqacSimilarityArgs& a);

}  // namespace cpu
}  // namespace flashuq
