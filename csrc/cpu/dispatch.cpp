// The processor's instruction sets, asked once, and the tests' limit on them.
#include "dispatch.h"

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
std::atomic<int> g_limit{kAvx512};
const char* const kNames[] = {"baseline", "avx2+fma", "avx512"};
}  // namespace

int isa_level() {
  const int best = has_avx512() ? kAvx512 : has_avx2_fma() ? kAvx2 : kBaseline;
  return std::min(best, g_limit.load(std::memory_order_relaxed));
}

const char* isa() { return kNames[isa_level()]; }

const char* limit_isa(int level) {
  g_limit.store(std::clamp(level, int(kBaseline), int(kAvx512)), std::memory_order_relaxed);
  return isa();
}

}  // namespace cpu
}  // namespace flashuq
