// The AVX-512 build of the CPU Inv-Entropy driver (compiled with -mavx512f -mavx512dq -mavx512vl
// -ffp-contract=off).
#define FUQ_ISA avx512
#include "inv_entropy_impl.h"
