// The AVX-512 build of the CPU token-statistics kernel (compiled with -mavx512f/bw/dq/vl -mfma and
// 512-bit vectors preferred): the same code as the other variants, 16 fp32 lanes per vector.
#define FUQ_ISA avx512
#include "token_stats_impl.h"
