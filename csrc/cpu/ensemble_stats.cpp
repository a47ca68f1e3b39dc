// Picks the widest CPU variant of the ensemble decomposition that this processor runs.
#include "ensemble_stats.h"

#include "dispatch.h"

namespace flashuq {
namespace cpu {

void ensemble_stats(const EnsembleStatsArgs& a) {
  switch (isa_level()) {
#if defined(FUQ_HAVE_AVX512_VARIANT)
    case kAvx512: return avx512::ensemble_stats(a);
#endif
#if defined(FUQ_HAVE_AVX2_VARIANT)
    case kAvx2: return avx2::ensemble_stats(a);
#endif
    default: return base::ensemble_stats(a);
  }
}

}  // namespace cpu
}  // namespace flashuq
