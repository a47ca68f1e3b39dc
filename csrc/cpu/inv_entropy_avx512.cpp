// The AVX-512 build of the CPU Inv-Entropy driver (compiled with the AVX-512 flags of CMakeLists.txt
// and -ffp-contract=off).
#define FUQ_ISA avx512
#include "inv_entropy_impl.h"
