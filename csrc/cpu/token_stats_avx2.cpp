// The AVX2 + FMA build of the CPU token-statistics kernel (compiled with -mavx2 -mfma).
#define FUQ_ISA avx2
#include "token_stats_impl.h"
