// The AVX2 build of the CPU Inv-Entropy driver (compiled with -mavx2 -mfma -ffp-contract=off).
#define FUQ_ISA avx2
#include "inv_entropy_impl.h"
