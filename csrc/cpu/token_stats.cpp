// Picks the widest CPU variant of the token-statistics kernel that this processor runs.
#include "token_stats.h"

namespace flashuq {
namespace cpu {

bool has_avx2_fma() {
#if defined(FUQ_HAVE_AVX2_VARIANT)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

void token_stats(const TokenStatsArgs& a) {
#if defined(FUQ_HAVE_AVX2_VARIANT)
  if (has_avx2_fma()) return avx2::token_stats(a);
#endif
  base::token_stats(a);
}

const char* isa() { return has_avx2_fma() ? "avx2+fma" : "baseline"; }

}  // namespace cpu
}  // namespace flashuq
