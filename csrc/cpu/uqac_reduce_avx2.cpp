// The AVX2 build (compiled with -mavx2 -mfma -ffp-contract=off) of the CPU UQAC reduction.
#define FUQ_ISA avx2
#include "uqac_reduce_impl.h"
