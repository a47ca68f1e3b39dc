// CPU Inv-Entropy family (docs/methods.md#inv-entropy): one question per OpenMP iteration, fp64 arithmetic.
#pragma once

#include <cstdint>

#include "flashuq/dtype.h"

namespace flashuq {
namespace cpu {

struct InvEntropyArgs {
  DType dtype;           // F32 or F64: sx, sy and the outputs
  const void* sx;        // contiguous [Q, Mx, Mx], Mx = N or M
  const void* sy;        // contiguous [Q, M, M]
  const int64_t* keep;   // contiguous [Q, S, N] rows of sy per draw, or nullptr (S = 1, M = N)
  int64_t Q, Mx, M, S, N;
  bool paper;            // P(X) = π Py Px (else the repository's π Py Py Px)
  bool all;              // every field; false: only out[0, :] (Inv-Entropy)
  void* out;             // [5, Q]: inv_entropy, ni_entropy, wd_px_py, max_py, max_py_given_x
  void* p_x;             // [Q, N]
  void* p_y;             // [Q, N]
  int num_threads;
};

// Returns the number of negative similarities among the entries the draws read.
int64_t inv_entropy(const InvEntropyArgs& a);
namespace base { int64_t inv_entropy(const InvEntropyArgs& a); }
namespace avx2 { int64_t inv_entropy(const InvEntropyArgs& a); }
namespace avx512 { int64_t inv_entropy(const InvEntropyArgs& a); }

}  // namespace cpu
}  // namespace flashuq
