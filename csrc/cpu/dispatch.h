// Run-time choice of the CPU variant. Ops with instruction-set variants (token_stats and the graph
// spectra up to AVX-512, Inv-Entropy up to AVX2 + FMA) ask isa_level() which one to run, so
// limit_isa narrows all of them at once.
#pragma once

#include "flashuq/dtype.h"

namespace flashuq {
namespace cpu {

enum IsaLevel : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// Whether this processor runs the AVX2 + FMA variants (false where none was built).
bool has_avx2_fma();
// Whether it runs the AVX-512 (F, BW, DQ, VL) variants (false where none was built).
bool has_avx512();
// The widest level this processor runs, no wider than limit_isa allows.
int isa_level();
// Its name: "baseline", "avx2+fma" or "avx512".
const char* isa();
// Use no variant wider than level (kBaseline, kAvx2, kAvx512 = the default): for tests and
// benchmarks that compare the variants on one machine. Returns the level's name now in use.
const char* limit_isa(int level);

}  // namespace cpu
}  // namespace flashuq
