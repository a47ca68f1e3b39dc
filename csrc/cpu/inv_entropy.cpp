// Picks the widest CPU variant of the Inv-Entropy driver that this processor runs (all give
// bitwise the same results: they are compiled without FMA contraction).
#include "inv_entropy.h"

#include "dispatch.h"

namespace flashuq {
namespace cpu {

int64_t inv_entropy(const InvEntropyArgs& a) {
#if defined(FUQ_HAVE_AVX512_VARIANT)
  if (isa_level() >= kAvx512) return avx512::inv_entropy(a);
#endif
#if defined(FUQ_HAVE_AVX2_VARIANT)
  if (isa_level() >= kAvx2) return avx2::inv_entropy(a);
#endif
  return base::inv_entropy(a);
}

}  // namespace cpu
}  // namespace flashuq
