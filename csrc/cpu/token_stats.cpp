// Picks the widest CPU variant of the token-statistics kernel that this processor runs.
#include "token_stats.h"

#include <algorithm>
#include <atomic>

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

bool has_avx512() {
#if defined(FUQ_HAVE_AVX512_VARIANT)
  // libgcc's check includes the OS's support of the 512-bit register state (XCR0)
  static const bool ok = has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return ok;
#else
  return false;
#endif
}

namespace {
// The widest variant this processor runs, or a narrower one chosen with limit_isa (tests, benchmarks).
std::atomic<int> g_limit{2};
int best() { return has_avx512() ? 2 : has_avx2_fma() ? 1 : 0; }
int active() { return std::min(best(), g_limit.load(std::memory_order_relaxed)); }
const char* const kNames[] = {"baseline", "avx2+fma", "avx512"};
}  // namespace

void token_stats(const TokenStatsArgs& a) {
  switch (active()) {
#if defined(FUQ_HAVE_AVX512_VARIANT)
    case 2: return avx512::token_stats(a);
#endif
#if defined(FUQ_HAVE_AVX2_VARIANT)
    case 1: return avx2::token_stats(a);
#endif
    default: return base::token_stats(a);
  }
}

void exp_nonpos_f32(const float* x, float* out, int64_t n) {
  switch (active()) {
#if defined(FUQ_HAVE_AVX512_VARIANT)
    case 2: return avx512::exp_nonpos_f32(x, out, n);
#endif
#if defined(FUQ_HAVE_AVX2_VARIANT)
    case 1: return avx2::exp_nonpos_f32(x, out, n);
#endif
    default: return base::exp_nonpos_f32(x, out, n);
  }
}

const char* isa() { return kNames[active()]; }

const char* limit_isa(int level) {
  g_limit.store(level < 0 ? 0 : (level > 2 ? 2 : level), std::memory_order_relaxed);
  return isa();
}

}  // namespace cpu
}  // namespace flashuq
