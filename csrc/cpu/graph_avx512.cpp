// The AVX-512 build of the CPU graph spectra: 8 questions per register, 32 per lane group
// (compiled with -mavx512f -mavx512dq -mavx512vl -ffp-contract=off).
#define FUQ_ISA avx512
#include "graph_impl.h"
