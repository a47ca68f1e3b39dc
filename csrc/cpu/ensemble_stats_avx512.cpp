// The AVX-512 build of the CPU ensemble decomposition: eight columns per register.
#define FUQ_ISA avx512
#include "ensemble_stats_impl.h"
