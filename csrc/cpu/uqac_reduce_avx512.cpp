// The AVX-512 build (compiled with -mavx512f -mavx512dq -mavx512vl -ffp-contract=off) of the CPU UQAC reduction.
#define FUQ_ISA avx512
#include "uqac_reduce_impl.h"
