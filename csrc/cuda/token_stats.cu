// One thread block per row. Each thread folds groups of 8 contiguous columns into its partial
// (group partial, then merge), and the block combines the 256 thread partials with a fixed
// shared-memory tree: deterministic, no atomics.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "flashuq/accumulator.h"
#include "token_stats.cuh"

namespace flashuq {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kGroup = 8;

template <typename A> struct Math;
template <> struct Math<float> {
  __host__ __device__ float operator()(float x) const { return ::expf(x); }
  static __device__ float log1p(float x) { return ::log1pf(x); }
  static __device__ float log(float x) { return ::logf(x); }
};
template <> struct Math<double> {
  __host__ __device__ double operator()(double x) const { return ::exp(x); }
  static __device__ double log1p(double x) { return ::log1p(x); }
  static __device__ double log(double x) { return ::log(x); }
};
template <typename A> struct Log1p { __host__ __device__ A operator()(A x) const { return Math<A>::log1p(x); } };
template <typename A> struct Log { __host__ __device__ A operator()(A x) const { return Math<A>::log(x); } };

template <typename In, typename A> __device__ __forceinline__ A load(const In* p, int64_t i);
template <> __device__ __forceinline__ float load<float, float>(const float* p, int64_t i) { return p[i]; }
template <> __device__ __forceinline__ double load<double, double>(const double* p, int64_t i) { return p[i]; }
template <> __device__ __forceinline__ float load<__half, float>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <> __device__ __forceinline__ float load<__nv_bfloat16, float>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}

template <typename In, typename A, bool Frac>
__device__ Acc<A> group_partial(const In* row, int64_t base, int len, A inv_temp) {
  const A ninf = neg_inf<A>();
  A x[kGroup];
  A bm = ninf;
  bool bad = false;
  int bidx = -1;
#pragma unroll
  for (int i = 0; i < kGroup; ++i) {
    A v = i < len ? load<In, A>(row, base + i) : ninf;  // raw logits; 1/T scales differences
    const bool b = i < len && (!(v == v) || v == -ninf);
    bad |= b;
    v = b ? ninf : v;
    x[i] = v;
    if (v > bm) { bm = v; bidx = i; }
  }
  Acc<A> a = acc_empty<A>();
  a.bad = bad;
  a.n = A(len);
  if (bidx < 0) return a;
  A m2 = ninf, R = 0, T = 0, Q2 = 0, Qh = 0, Qq = 0, sd = 0, nf = 0, e[kGroup];
#pragma unroll
  for (int i = 0; i < kGroup; ++i) {
    const bool fin = x[i] > ninf;
    const A d = fin ? (x[i] - bm) * inv_temp : A(0);
    // with Frac one exponential e^{d/4}, squared twice for e^{d/2} and e^d (docs/numerics.md#accumulator)
    const A e4 = Frac && fin ? Math<A>()(d * A(0.25)) : A(0);
    const A ei = Frac ? (e4 * e4) * (e4 * e4) : (fin ? Math<A>()(d) : A(0));
    e[i] = i == bidx ? A(1) : ei;
    if (i != bidx) {
      m2 = x[i] > m2 ? x[i] : m2;
      R += ei;
      Q2 += ei * ei;
      if (Frac) {
        Qq += e4;
        Qh += e4 * e4;
      }
    }
    T += ei > A(0) ? ei * d : A(0);
    sd += d;
    nf += fin ? A(1) : A(0);
  }
  const A mean = (A(1) + R) / A(len);
  A M2 = 0, M3 = 0, M4 = 0;
#pragma unroll
  for (int i = 0; i < kGroup; ++i) {
    const A c = i < len ? e[i] - mean : A(0);
    M2 += c * c; M3 += c * c * c; M4 += c * c * c * c;
  }
  a.m = bm; a.m2 = m2; a.idx = base + bidx;
  a.R = R; a.T = T; a.Q2 = Q2; a.Qh = Qh; a.Qq = Qq; a.sd = sd; a.nf = nf;
  a.mean = mean; a.M2 = M2; a.M3 = M3; a.M4 = M4;
  return a;
}

template <typename In, typename A, bool Frac>
__global__ void __launch_bounds__(kThreads) token_stats_kernel(TokenStatsArgs a) {
  __shared__ Acc<A> sh[kThreads];
  const int64_t r = blockIdx.x;
  const In* row = static_cast<const In*>(a.logits) + (r / a.n1) * a.s0 + (r % a.n1) * a.s1;
  const A inv_temp = A(a.inv_temp);
  Acc<A> acc = acc_empty<A>();
  for (int64_t g = int64_t(threadIdx.x) * kGroup; g < a.V; g += int64_t(kThreads) * kGroup) {
    const int len = int(a.V - g < kGroup ? a.V - g : kGroup);
    acc = merge(acc, group_partial<In, A, Frac>(row, g, len, inv_temp), inv_temp, Math<A>(), Frac);
  }
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] = merge(sh[threadIdx.x], sh[threadIdx.x + s], inv_temp, Math<A>(), Frac);
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  const Acc<A> t = sh[0];
  const RowStats<A> s = finalize(t, inv_temp, Math<A>(), Log1p<A>(), Log<A>());
  A lp = s.max_logprob;
  if (a.tokens) {
    const int64_t tok = a.tokens[r];
    lp = (s.valid && tok >= 0 && tok < a.V) ? (load<In, A>(row, tok) - t.m) * inv_temp - s.log1p_R
                                              : quiet_nan<A>();
  }
  const A vals[8] = {s.lse, s.max_logprob, lp, s.entropy, s.margin, s.collision, s.kurtosis, s.self_certainty};
#pragma unroll
  for (int j = 0; j < 8; ++j) static_cast<A*>(a.out[j])[r] = vals[j];
  a.argmax[r] = s.argmax;
  if (Frac) {
    static_cast<A*>(a.renyi_term)[r] = s.renyi_term;
    static_cast<A*>(a.fisher_rao)[r] = s.fisher_rao;
  }
}

template <typename In, typename A>
int launch(const TokenStatsArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return 0;
  if (a.renyi_term) token_stats_kernel<In, A, true><<<dim3(unsigned(a.rows)), kThreads, 0, stream>>>(a);
  else token_stats_kernel<In, A, false><<<dim3(unsigned(a.rows)), kThreads, 0, stream>>>(a);
  return int(cudaGetLastError());
}

}  // namespace

int token_stats(const TokenStatsArgs& a, uintptr_t stream_handle) {
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  switch (a.dtype) {
    case DType::F32: return launch<float, float>(a, stream);
    case DType::F64: return launch<double, double>(a, stream);
    case DType::F16: return launch<__half, float>(a, stream);
    case DType::BF16: return launch<__nv_bfloat16, float>(a, stream);
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace cuda
}  // namespace flashuq
