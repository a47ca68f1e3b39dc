// Picks the widest CPU variant of the token-statistics kernel that this processor runs.
#include "token_stats.h"

#include "dispatch.h"

namespace flashuq {
namespace cpu {

void token_stats(const TokenStatsArgs& a) {
  switch (isa_level()) {
#if defined(FUQ_HAVE_AVX512_VARIANT)
    case kAvx512: return avx512::token_stats(a);
#endif
#if defined(FUQ_HAVE_AVX2_VARIANT)
    case kAvx2: return avx2::token_stats(a);
#endif
    default: return base::token_stats(a);
  }
}

void exp_nonpos_f32(const float* x, float* out, int64_t n) {
  switch (isa_level()) {
#if defined(FUQ_HAVE_AVX512_VARIANT)
    case kAvx512: return avx512::exp_nonpos_f32(x, out, n);
#endif
#if defined(FUQ_HAVE_AVX2_VARIANT)
    case kAvx2: return avx2::exp_nonpos_f32(x, out, n);
#endif
    default: return base::exp_nonpos_f32(x, out, n);
  }
}

void masked_logsumexp(DType dtype, const void* values, const uint8_t* mask, const int64_t* cu, int64_t B, int64_t T,
                      float* out, int num_threads) {
  switch (isa_level()) {
#if defined(FUQ_HAVE_AVX512_VARIANT)
    case kAvx512: return avx512::masked_logsumexp(dtype, values, mask, cu, B, T, out, num_threads);
#endif
#if defined(FUQ_HAVE_AVX2_VARIANT)
    case kAvx2: return avx2::masked_logsumexp(dtype, values, mask, cu, B, T, out, num_threads);
#endif
    default: return base::masked_logsumexp(dtype, values, mask, cu, B, T, out, num_threads);
  }
}

}  // namespace cpu
}  // namespace flashuq
