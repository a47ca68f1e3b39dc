// CUDA similarity-graph spectra: the team code of flashuq/graph.h with one question per block.
#pragma once
#include <cstdint>

namespace flashuq {
namespace cuda {

constexpr int kGraphMaxK = 64;  // two K x K fp64 matrices live in shared memory (68 KB at 64)

struct GraphArgs {
  int op;               // flashuq::GraphOp
  bool f64;             // W and the outputs are fp64 (else fp32); the arithmetic is fp64 always
  const void* W;        // contiguous [Q, K, K] device memory
  const void* C;        // op 3 (kGraphNliHeatEntropy): the contradiction probabilities, as W; else nullptr
  int64_t Q, K;         // K <= kGraphMaxK
  const int32_t* counts;
  double threshold, t;
  void* out0;           // as flashuq::cpu::GraphArgs
  void* out1;
  void* out2;
};

// Launches on `stream`; returns a cudaError_t as int.
int graph(const GraphArgs& a, uintptr_t stream);

}  // namespace cuda
}  // namespace flashuq
