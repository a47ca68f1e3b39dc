// FUQ_HD: the qualifier of the shared header math, host and device under nvcc, inline elsewhere.
#pragma once

#if defined(__CUDACC__)
#define FUQ_HD __host__ __device__ __forceinline__
#else
#define FUQ_HD inline
#endif
