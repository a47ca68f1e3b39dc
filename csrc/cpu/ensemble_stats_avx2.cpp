// The AVX2 build of the CPU ensemble decomposition (compiled with -mavx2 -mfma).
#define FUQ_ISA avx2
#include "ensemble_stats_impl.h"
