// Picks the widest CPU variant of the graph spectra that this processor runs (all give bitwise
// the same results: they are compiled without FMA contraction).
#include "graph.h"

#include "dispatch.h"

namespace flashuq {
namespace cpu {

void graph(const GraphArgs& a) {
#if defined(FUQ_HAVE_AVX512_VARIANT)
  if (isa_level() >= kAvx512) return avx512::graph(a);
#endif
#if defined(FUQ_HAVE_AVX2_VARIANT)
  if (isa_level() >= kAvx2) return avx2::graph(a);
#endif
  base::graph(a);
}

}  // namespace cpu
}  // namespace flashuq
