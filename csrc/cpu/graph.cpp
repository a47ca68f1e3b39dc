// CPU driver of the per-question graph spectra: questions are independent, so the OpenMP
// schedule cannot change a result (each is computed by one thread, start to end).
#include "graph.h"

#include <omp.h>

#include <vector>

#include "flashuq/graph.h"

namespace flashuq {
namespace cpu {
namespace {

template <typename S>
void run(const GraphArgs& a) {
  const S* W = static_cast<const S*>(a.W);
  S* o0 = static_cast<S*>(a.out0);
  S* o1 = static_cast<S*>(a.out1);
  S* o2 = static_cast<S*>(a.out2);
  const int K = int(a.K);
  const int nt = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
  {
    std::vector<double> buf(size_t(eig_work_size<double>(K)) + 1), dl(K + 1), el(K + 1);
#pragma omp for schedule(dynamic, 16)
    for (int64_t q = 0; q < a.Q; ++q) {
      EigWork<double> w = eig_work(buf.data(), a.counts[q], dl.data(), el.data());
      graph_question(SerialTeam{}, a.op, W, q, K, a.counts[q], w, a.threshold, a.t, o0, o1, o2);
    }
  }
}

}  // namespace

void graph(const GraphArgs& a) {
  if (a.dtype == DType::F64) run<double>(a);
  else run<float>(a);
}

}  // namespace cpu
}  // namespace flashuq
