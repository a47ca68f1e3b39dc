// One block per question runs the shared team code of flashuq/graph.h: the block's threads
// split the rows of the K x K work matrices (shared memory) and synchronise with
// __syncthreads(); scalars are computed redundantly by every thread, so no atomics and no
// reductions across threads: a question's result does not depend on the launch.
#include <cuda_runtime.h>

#include "flashuq/graph.h"
#include "graph.cuh"

namespace flashuq {
namespace cuda {
namespace {

struct BlockTeam {
  FUQ_HD int rank() const {
#ifdef __CUDA_ARCH__
    return int(threadIdx.x);
#else
    return 0;
#endif
  }
  FUQ_HD int size() const {
#ifdef __CUDA_ARCH__
    return int(blockDim.x);
#else
    return 1;
#endif
  }
  FUQ_HD void sync() const {
#ifdef __CUDA_ARCH__
    __syncthreads();
#endif
  }
};

template <typename S>
__global__ void graph_kernel(GraphArgs a) {
  extern __shared__ double smem[];
  double dl[kGraphMaxK], el[kGraphMaxK];  // each thread's private tridiagonal copy (symeig.h)
  const int64_t q = blockIdx.x;
  const int n = a.counts[q];
  GraphTask<double, S, S> task =
      graph_task(a.op, static_cast<const S*>(a.W), static_cast<const S*>(a.C), q, int(a.K), n,
                 eig_work(smem, n, dl, el), a.threshold, a.t, static_cast<S*>(a.out0), static_cast<S*>(a.out1),
                 static_cast<S*>(a.out2));
  run_graph_task(BlockTeam{}, task);
}

template <typename S>
int launch(const GraphArgs& a, cudaStream_t stream) {
  if (a.Q == 0) return int(cudaSuccess);
  if (a.K < 1 || a.K > kGraphMaxK || a.Q > 0x7fffffffLL) return int(cudaErrorInvalidValue);
  const int K = int(a.K);
  const size_t bytes = sizeof(double) * size_t(eig_work_size<double>(K));
  if (bytes > 48 * 1024) {  // above the default: opt in (sm_80+ allow up to 163-227 KB)
    const cudaError_t e =
        cudaFuncSetAttribute(graph_kernel<S>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
    if (e != cudaSuccess) return int(e);
  }
  const int threads = K <= 32 ? 32 : 64;
  graph_kernel<S><<<unsigned(a.Q), threads, bytes, stream>>>(a);
  return int(cudaGetLastError());
}

}  // namespace

int graph(const GraphArgs& a, uintptr_t stream) {
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  return a.f64 ? launch<double>(a, s) : launch<float>(a, s);
}

}  // namespace cuda
}  // namespace flashuq
