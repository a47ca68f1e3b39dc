// CPU driver of the per-question graph spectra: questions are independent, so neither the OpenMP
// schedule nor the grouping can change a result (each question's arithmetic is the same whether it
// runs alone or interleaved with others).
#include "graph.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "flashuq/graph.h"

namespace flashuq {
namespace cpu {
namespace {

// Questions advanced together by one thread: their QL iterations are interleaved step by step,
// so the CPU overlaps their (long, dependent) chains of divisions and square roots.
constexpr int kGroup = 4;

template <typename S>
void run(const GraphArgs& a) {
  S* o0 = static_cast<S*>(a.out0);
  S* o1 = static_cast<S*>(a.out1);
  S* o2 = static_cast<S*>(a.out2);
  const int K = int(a.K);
  const int nt = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
  const int64_t groups = (a.Q + kGroup - 1) / kGroup;
  const SerialTeam tm;
#pragma omp parallel num_threads(nt)
  {
    const size_t ws = size_t(eig_work_size<double>(K)) + 1;
    std::vector<double> buf(kGroup * ws), dl(kGroup * (K + 1)), el(kGroup * (K + 1));
    GraphTask<double, S, S> task[kGroup];
    bool pending[kGroup];
#pragma omp for schedule(dynamic, 4)
    for (int64_t grp = 0; grp < groups; ++grp) {
      const int64_t q0 = grp * kGroup;
      const int g = int(std::min<int64_t>(kGroup, a.Q - q0));
      for (int k = 0; k < g; ++k) {
        const int n = a.counts[q0 + k];
        EigWork<double> w = eig_work(buf.data() + k * ws, n, dl.data() + k * (K + 1), el.data() + k * (K + 1));
        task[k] = graph_task(a.op, static_cast<const S*>(a.W), q0 + k, K, n, w, a.threshold, a.t, o0, o1, o2);
        pending[k] = task[k].begin(tm);
      }
      for (;;) {
        bool any = false;
        for (int k = 0; k < g; ++k) any = any || pending[k];
        if (!any) break;
        for (bool busy = true; busy;) {  // interleaved QL: one step of each unfinished iteration in turn
          busy = false;
          for (int k = 0; k < g; ++k)
            if (pending[k] && !task[k].ql.done()) {
              task[k].ql.step(tm);
              busy = true;
            }
        }
        for (int k = 0; k < g; ++k)
          if (pending[k]) pending[k] = task[k].resume(tm);
      }
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
