// CPU similarity-graph spectra (docs/methods.md#graph-methods), everything in fp64: the shared team code
// of flashuq/graph.h run by a team of one, and the SIMD eigenvalue path of graph_lanes.h.
#pragma once

#include <cstdint>

#include "flashuq/dtype.h"

namespace flashuq {
namespace cpu {

struct GraphArgs {
  int op;                // flashuq::GraphOp
  DType dtype;           // F32 or F64: W and the outputs
  const void* W;         // contiguous [Q, K, K]; question q's leading counts[q] x counts[q] block is used
  const void* C = nullptr;  // kGraphNliHeatEntropy: the contradiction probabilities, as W (which holds E)
  int64_t Q, K;
  const int32_t* counts; // [Q], each in [0, K]
  double threshold;      // kGraphLaplacian: eccentricity keeps eigenvalues < threshold
  double t;              // kGraphHeatEntropy: heat-kernel time
  // kGraphEigvalues: out0 = values [Q, K], out1 = vectors [Q, K, K] or null
  // kGraphLaplacian: out0 = eigv [Q], out1 = eccentricity [Q] or null, out2 = per-sample [Q, K]
  // kGraphHeatEntropy, kGraphNliHeatEntropy: out0 = von Neumann entropy [Q]
  // Entries past a question's count are left as they are (Python fills them with NaN); an
  // empty question (count 0) gets NaN in its scalar outputs.
  void* out0;
  void* out1;
  void* out2;
  int num_threads;       // <= 0: OpenMP's default
  bool lanes = true;     // false: every question on the scalar path (for tests: the results are bitwise equal)
};

void graph(const GraphArgs& a);
namespace base { void graph(const GraphArgs& a); }
namespace avx2 { void graph(const GraphArgs& a); }
namespace avx512 { void graph(const GraphArgs& a); }

}  // namespace cpu
}  // namespace flashuq
