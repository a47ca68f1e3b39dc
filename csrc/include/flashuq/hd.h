// FUQ_HD: the qualifier of the shared header math, host and device under nvcc, inline elsewhere.
#pragma once

#if defined(__CUDACC__)
#define FUQ_HD __host__ __device__ __forceinline__
#else
#define FUQ_HD inline
#endif

// The inline code of these headers is compiled into translation units built for different
// instruction sets (the CPU module's x86-64 baseline and AVX2 variants). Each set gets its own
// inline namespace, hence its own symbols: otherwise the linker keeps one copy of a function that
// was not inlined everywhere, possibly the AVX2 one, and baseline code calling it would fault on
// a processor without AVX2.
#if defined(__CUDACC__)
#define FUQ_ISA_NS isa_cuda
#elif defined(__AVX512F__)
#define FUQ_ISA_NS isa_avx512
#elif defined(__AVX2__)
#define FUQ_ISA_NS isa_avx2
#elif defined(__AVX__)
#define FUQ_ISA_NS isa_avx
#else
#define FUQ_ISA_NS isa_base
#endif

// The CPU build's widest vector register in bytes, for GCC vector types: 64 with AVX-512, 32 with
// AVX, 16 (SSE2) on the x86-64 baseline.
#if defined(__AVX512F__)
#define FUQ_VECTOR_BYTES 64
#elif defined(__AVX__)
#define FUQ_VECTOR_BYTES 32
#else
#define FUQ_VECTOR_BYTES 16
#endif
