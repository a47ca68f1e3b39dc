// UQAC backtracking and similarity filter on CUDA: one block per sequence. Thread 0 runs the
// sequential bookkeeping of flashuq/uqac.h (the same code as the CPU); the block sorts each source's
// row cooperatively (bitonic, in the workspace, a total order: weight descending, NaN first, ties by
// the lower key) and computes the cosines warp by warp with fixed-order shuffle reductions. No
// atomics: a sequence's result depends neither on the launch nor on the other sequences.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <type_traits>

#include "flashuq/uqac.h"
#include "uqac.cuh"

namespace flashuq {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__host__ __device__ inline int64_t align16(int64_t x) { return (x + 15) & ~int64_t(15); }

__host__ __device__ inline int64_t pow2_at_least(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

__host__ __device__ inline int64_t seq_bytes(int64_t Nmax, int elem) {
  const int64_t P2 = pow2_at_least(Nmax > 0 ? Nmax : 1);
  return align16(Nmax * elem) + align16(Nmax) + align16(Nmax + 1) + align16(Nmax * 4) + align16(P2 * elem) +
         align16(P2 * 4);
}

template <class T>
struct SortedRanker {
  const int32_t* idx;
  __device__ int64_t key(int64_t rank) const { return idx[rank]; }
};

template <class T>
__device__ bool sort_before(T wa, int32_t ia, T wb, int32_t ib) {
  if (ia == INT_MAX) return false;  // padding sorts last
  if (ib == INT_MAX) return true;
  return uqac_key_before(wa, int64_t(ia), wb, int64_t(ib));
}

// The keys of row w [n] in uqac_key_before order into ki[0, n) (bitonic sort over P2 >= n slots).
template <class T>
__device__ void block_sort_row(const T* w, int64_t n, T* kw, int32_t* ki) {
  const int64_t P2 = pow2_at_least(n);
  for (int64_t i = threadIdx.x; i < P2; i += blockDim.x) {
    kw[i] = i < n ? w[i] : T(0);
    ki[i] = i < n ? int32_t(i) : INT_MAX;
  }
  __syncthreads();
  for (int64_t k = 2; k <= P2; k <<= 1) {
    for (int64_t j = k >> 1; j > 0; j >>= 1) {
      for (int64_t i = threadIdx.x; i < P2; i += blockDim.x) {
        const int64_t l = i ^ j;
        if (l <= i) continue;
        const bool up = (i & k) == 0;
        const bool sw = up ? sort_before(kw[l], ki[l], kw[i], ki[i]) : sort_before(kw[i], ki[i], kw[l], ki[l]);
        if (sw) {
          const T tw = kw[i]; kw[i] = kw[l]; kw[l] = tw;
          const int32_t ti = ki[i]; ki[i] = ki[l]; ki[l] = ti;
        }
      }
      __syncthreads();
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) backtrack_kernel(UqacBacktrackArgs a) {
  __shared__ UqacSeq<T> q;
  __shared__ int flag;
  const int64_t b = blockIdx.x;
  const int64_t Nmax = a.Nmax;
  uint8_t* ws = a.ws + b * seq_bytes(Nmax, int(sizeof(T)));
  T* acc = reinterpret_cast<T*>(ws);
  ws += align16(Nmax * int64_t(sizeof(T)));
  uint8_t* seen = ws;
  ws += align16(Nmax);
  uint8_t* proc = ws;
  ws += align16(Nmax + 1);
  int32_t* touched = reinterpret_cast<int32_t*>(ws);
  ws += align16(Nmax * 4);
  T* kw = reinterpret_cast<T*>(ws);
  ws += align16(pow2_at_least(Nmax > 0 ? Nmax : 1) * int64_t(sizeof(T)));
  int32_t* ki = reinterpret_cast<int32_t*>(ws);
  for (int64_t i = threadIdx.x; i < Nmax; i += blockDim.x) {
    acc[i] = T(0);
    seen[i] = 0;
  }
  for (int64_t i = threadIdx.x; i <= Nmax; i += blockDim.x) proc[i] = 0;
  if (threadIdx.x == 0) {
    const int64_t R = a.R[b], N = a.Ntok[b], A = a.A[b];
    q.attn = static_cast<const T*>(a.attn) + b * a.Rmax * Nmax;
    q.ld = Nmax;
    q.is_stop = a.is_stop + b * Nmax;
    q.ans = a.ans + b * a.Amax;
    q.R = R; q.Ntok = N; q.A = A;
    q.buffer = a.buffer;
    q.threshold = T(a.threshold);
    q.min_len = a.min_len[b];
    q.max_steps = a.max_steps;
    q.chain = a.chain + b * a.C;
    q.scores = static_cast<T*>(a.scores) + b * a.C;
    q.cap = a.C;
    q.acc = acc; q.seen = seen; q.proc = proc; q.touched = touched;
    const bool in_range = R >= 0 && R <= a.Rmax && N >= R && N <= Nmax && A >= 0 && A <= a.Amax;
    flag = in_range && q.begin();
    if (!flag) a.lengths[b] = -1;
  }
  __syncthreads();
  if (!flag) return;
  // Thread 0 alone advances the shared chain state (begin_round / end_round); the round flags are
  // broadcast by __syncthreads_or, and a barrier separates every thread's last read of this round's
  // sources from thread 0 rewriting them (a round of prompt-only sources has no other barrier).
  for (;;) {
    int go = 0;
    if (threadIdx.x == 0) go = q.begin_round();
    if (!__syncthreads_or(go)) break;
    const int64_t n = q.src1 - q.src0;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t s = q.source(k);
      const T* w = q.row(s);
      if (!w) continue;  // uniform: every thread read the same s
      block_sort_row(w, q.Ntok, kw, ki);
      if (threadIdx.x == 0) {
        SortedRanker<T> rk{ki};
        q.scan(s, rk);
      }
      __syncthreads();
    }
    __syncthreads();
    go = 0;
    if (threadIdx.x == 0) go = q.end_round();
    if (!__syncthreads_or(go)) break;
  }
  if (threadIdx.x == 0) {
    q.finish();
    a.lengths[b] = q.len;
  }
}

template <class S> __device__ inline float load_f(const S* p) { return float(*p); }
template <> __device__ inline float load_f<__half>(const __half* p) { return __half2float(*p); }
template <> __device__ inline float load_f<__nv_bfloat16>(const __nv_bfloat16* p) { return __bfloat162float(*p); }

template <class T, class S>
__device__ T load_acc(const S* p) { return T(load_f(p)); }
template <>
__device__ double load_acc<double, double>(const double* p) { return *p; }

template <class T>
__device__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class S, class T>
__global__ void __launch_bounds__(kThreads) similarity_kernel(UqacSimilarityArgs a) {
  __shared__ int ok;
  const int64_t b = blockIdx.x;
  const int64_t A = a.A[b], R = a.R[b], len = a.lengths[b];
  const int64_t Cw = a.C > 0 ? a.C : 1;
  float* sim = a.ws + b * 2 * Cw;
  uint8_t* mark = reinterpret_cast<uint8_t*>(sim + Cw);
  const int64_t* ans = a.ans + b * a.Amax;
  const int64_t* chain = a.chain + b * a.C;
  if (threadIdx.x == 0) {
    bool good = A >= 0 && A <= a.Amax && R >= 0 && R <= a.Rmax && len >= 0 && len <= a.C;
    for (int64_t i = 0; good && i < A; ++i) good = ans[i] >= -1 && ans[i] <= R - 2;
    ok = good;
    if (!good) a.keep_len[b] = -1;
  }
  __syncthreads();
  if (!ok) return;
  const int64_t nc = len - A > 0 ? len - A : 0;
  const int64_t D = a.D;
  const S* hb = static_cast<const S*>(a.h) + b * a.Rmax * D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int64_t i = warp; i < nc; i += nwarps) {
    const int64_t c = chain[i] + 1;
    if (c < 0 || c >= R || A == 0) {
      if (lane == 0) sim[i] = NAN;
      continue;
    }
    const S* y = hb + c * D;
    T ny = 0;
    for (int64_t d = lane; d < D; d += 32) {
      const T v = load_acc<T>(y + d);
      ny += v * v;
    }
    ny = warp_sum(ny);
    T total = 0;
    for (int64_t k = 0; k < A; ++k) {
      const S* x = hb + (ans[k] + 1) * D;
      T dot = 0, nx = 0;
      for (int64_t d = lane; d < D; d += 32) {
        const T u = load_acc<T>(x + d);
        dot += u * load_acc<T>(y + d);
        nx += u * u;
      }
      dot = warp_sum(dot);
      nx = warp_sum(nx);
      T c = uqac_cosine(dot, nx, ny);
      // fp32 sums overflow for norms above ~1.8e19: such a pair is summed again in fp64 (the
      // sums are the warp's, so every lane takes the same branch)
      if constexpr (!std::is_same_v<T, double>) {
        if (!(isfinite(dot) && isfinite(nx) && isfinite(ny))) {
          double dd = 0, dx = 0, dy = 0;
          for (int64_t d = lane; d < D; d += 32) {
            const double u = load_f(x + d), v = load_f(y + d);
            dd += u * v; dx += u * u; dy += v * v;
          }
          c = T(uqac_cosine(warp_sum(dd), warp_sum(dx), warp_sum(dy)));
        }
      }
      total += c;
    }
    if (lane == 0) sim[i] = float(total / T(A));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int64_t kept = uqac_keep_topk(sim, nc, a.k, float(a.threshold), mark);
    int64_t* keep = a.keep + b * a.K;
    int64_t o = 0;
    for (int64_t i = 0; i < nc && o < kept; ++i)
      if (mark[i]) keep[o++] = chain[i];
    a.keep_len[b] = kept;
  }
}

}  // namespace

int64_t uqac_backtrack_workspace(int64_t B, int64_t Nmax, int elem_size) {
  return B * seq_bytes(Nmax, elem_size);
}

int uqac_backtrack(const UqacBacktrackArgs& a, uintptr_t stream) {
  if (a.B == 0) return int(cudaSuccess);
  if (a.B > 0x7fffffffLL || a.Nmax >= INT_MAX) return int(cudaErrorInvalidValue);
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (a.f64) backtrack_kernel<double><<<unsigned(a.B), kThreads, 0, s>>>(a);
  else backtrack_kernel<float><<<unsigned(a.B), kThreads, 0, s>>>(a);
  return int(cudaGetLastError());
}

int uqac_similarity(const UqacSimilarityArgs& a, uintptr_t stream) {
  if (a.B == 0) return int(cudaSuccess);
  if (a.B > 0x7fffffffLL) return int(cudaErrorInvalidValue);
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (a.dtype) {
    case DType::F64: similarity_kernel<double, double><<<unsigned(a.B), kThreads, 0, s>>>(a); break;
    case DType::F32: similarity_kernel<float, float><<<unsigned(a.B), kThreads, 0, s>>>(a); break;
    case DType::F16: similarity_kernel<__half, float><<<unsigned(a.B), kThreads, 0, s>>>(a); break;
    case DType::BF16: similarity_kernel<__nv_bfloat16, float><<<unsigned(a.B), kThreads, 0, s>>>(a); break;
  }
  return int(cudaGetLastError());
}

}  // namespace cuda
}  // namespace flashuq
