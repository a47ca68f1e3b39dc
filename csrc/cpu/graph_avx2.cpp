// The AVX2 build of the CPU graph spectra (compiled with -mavx2 -mfma -ffp-contract=off).
#define FUQ_ISA avx2
#include "graph_impl.h"
