#include "sem_sets.h"

#include <omp.h>

#include <cstddef>
#include <limits>
#include <vector>

namespace flashuq {
namespace cpu {
namespace {

// The root of i, halving the path on the way (iterative: no recursion depth to worry about).
inline int32_t find(int32_t* parent, int32_t i) {
  while (parent[i] != i) {
    parent[i] = parent[parent[i]];
    i = parent[i];
  }
  return i;
}

template <typename S>
void run(const SemSetsArgs& a) {
  const S* E = static_cast<const S*>(a.E);
  const S* C = static_cast<const S*>(a.C);
  S* out = static_cast<S*>(a.out);
  const int64_t K = a.K;
  const int nt = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
  {
    std::vector<int32_t> parent(std::size_t(K > 0 ? K : 1));
#pragma omp for schedule(static)
    for (int64_t q = 0; q < a.Q; ++q) {
      const S* e = E + q * K * K;
      const S* c = C + q * K * K;
      const uint8_t* v = a.valid + q * K;
      int32_t* p = parent.data();
      for (int64_t i = 0; i < K; ++i) p[i] = int32_t(i);
      for (int64_t i = 0; i < K; ++i) {
        if (!v[i]) continue;
        const S* ei = e + i * K;
        const S* ci = c + i * K;
        for (int64_t j = i + 1; j < K; ++j)  // linked: E > C both ways (NaN links nothing)
          if (v[j] && ei[j] > ci[j] && e[j * K + i] > c[j * K + i]) {
            const int32_t ri = find(p, int32_t(i)), rj = find(p, int32_t(j));
            if (ri < rj) p[rj] = ri;
            else if (rj < ri) p[ri] = rj;
          }
      }
      int64_t components = 0, valid = 0;
      for (int64_t i = 0; i < K; ++i)
        if (v[i]) {
          ++valid;
          components += find(p, int32_t(i)) == i;
        }
      out[q] = valid ? S(components) : std::numeric_limits<S>::quiet_NaN();
    }
  }
}

}  // namespace

void num_sem_sets(const SemSetsArgs& a) {
  if (a.dtype == DType::F64) run<double>(a);
  else run<float>(a);
}

}  // namespace cpu
}  // namespace flashuq
