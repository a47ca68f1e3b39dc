// Picks the widest CPU variant of the token-statistics kernel that this processor runs.
#include "token_stats.h"

namespace flashuq {
namespace cpu {

static bool use_avx2() {
#if defined(FUQ_HAVE_AVX2_VARIANT)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

void token_stats(const TokenStatsArgs& a) {
#if defined(FUQ_HAVE_AVX2_VARIANT)
  if (use_avx2()) return avx2::token_stats(a);
#endif
  base::token_stats(a);
}

const char* isa() { return use_avx2() ? "avx2+fma" : "baseline"; }

}  // namespace cpu
}  // namespace flashuq
