// CPU driver of Inv-Entropy and its family, included once per instruction set (FUQ_ISA names
// the namespace; inv_entropy.cpp picks one at run time). Compiled without FMA contraction, so
// that both builds give bitwise the same results.
#include <omp.h>

#include "flashuq/inv_entropy.h"
#include "inv_entropy.h"

namespace flashuq {
namespace cpu {
namespace FUQ_ISA {
namespace {

template <typename S>
int64_t run(const InvEntropyArgs& a) {
  const S* sx = static_cast<const S*>(a.sx);
  const S* sy = static_cast<const S*>(a.sy);
  S* out = static_cast<S*>(a.out);
  S* px = static_cast<S*>(a.p_x);
  S* py = static_cast<S*>(a.p_y);
  const int N = int(a.N);
  const int nt = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
  int64_t negative = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : negative)
  for (int64_t q = 0; q < a.Q; ++q) {
    if (!a.all && !a.keep && a.Mx == a.N && a.M == a.N) {  // one draw of Inv-Entropy alone
      out[q] = S(inv_entropy_single<double>(sx + q * N * N, sy + q * N * N, N, negative));
      continue;
    }
    double o5[5], mx[kInvEntropyMaxN], my[kInvEntropyMaxN];
    negative += inv_entropy_question<double>(sx + q * a.Mx * a.Mx, int(a.Mx), sy + q * a.M * a.M, int(a.M),
                                 a.keep ? a.keep + q * a.S * a.N : nullptr, int(a.S), N, a.paper, a.all, o5, mx, my);
    if (!a.all) {
      out[q] = S(o5[0]);
      continue;
    }
    for (int f = 0; f < 5; ++f) out[f * a.Q + q] = S(o5[f]);
    for (int i = 0; i < N; ++i) {
      px[q * N + i] = S(mx[i]);
      py[q * N + i] = S(my[i]);
    }
  }
  return negative;  // an integer count: the reduction order cannot change it
}

}  // namespace

int64_t inv_entropy(const InvEntropyArgs& a) {
  return a.dtype == DType::F64 ? run<double>(a) : run<float>(a);
}

}  // namespace FUQ_ISA
}  // namespace cpu
}  // namespace flashuq
