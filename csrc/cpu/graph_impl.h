// CPU driver of the per-question graph spectra, included once per instruction set (FUQ_ISA
// names the namespace; graph.cpp picks one at run time). Compiled without FMA contraction, so
// that both builds give bitwise the same results.
//
// EigV, Eccentricity, Kernel Language Entropy and eigenvalue-only sym_eig of questions with
// 3..kLaneMaxN samples: kLanes questions of the same size at a time, one SIMD lane each
// (graph_lanes.h), from the input to the scores. Everything else (eigenvectors, tiny or large
// questions, and any lane that fails: non-finite input, a non-positive degree, no convergence)
// runs the scalar GraphTask code, one question per OpenMP iteration. A lane computes what the
// scalar code computes — bit for bit, except the heat kernel, which the lanes compute by scaling
// and squaring instead of from QL's eigenvectors (equal to rounding) — so neither the grouping, the OpenMP schedule nor the thread
// count can change a result.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "flashuq/graph.h"
#include "graph.h"
#include "graph_lanes.h"

namespace flashuq {
namespace cpu {
namespace FUQ_ISA {
namespace {

using Lanes = GraphLanes;
constexpr int kLanes = Lanes::L;
// Larger questions spend their time in O(n^3) work either way; and the QL's deflation tests keep
// one bit per row in a 64-bit word (GraphLanes::ql).
constexpr int kLaneMaxN = 64;


constexpr int kGroupChunk = 4, kScalarChunk = 16;  // the OpenMP chunks: lane groups, scalar questions
// Fewer questions of one size than this run on the scalar path: a group of kLanes lanes costs about
// as much as five scalar questions (68 µs against 12.5 µs each for EigV at K = 20, one thread).
constexpr int kMinLaneGroup = 5;

template <typename S>
void run(const GraphArgs& a) {
  S* o0 = static_cast<S*>(a.out0);
  S* o1 = static_cast<S*>(a.out1);
  S* o2 = static_cast<S*>(a.out2);
  const S* W = static_cast<const S*>(a.W);
  const S* C = static_cast<const S*>(a.C);
  const int K = int(a.K);
  const int nt = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
  const SerialTeam tm;
  auto task_of = [&](int64_t q, double* buf, double* dl, double* el) {
    const int n = a.counts[q];
    return graph_task(a.op, W, C, q, K, n, eig_work(buf, n, dl, el), a.threshold, a.t, o0, o1, o2);
  };

  // The lane path's questions, by size (a counting sort, index order within a size), in groups
  // of at most kLanes; the rest go to `scalar`.
  const bool lanes_op = a.lanes && (a.op != kGraphEigvalues || o1 == nullptr);
  const int nmax = std::min(K, kLaneMaxN);
  std::vector<int64_t> order, scalar, groups;  // groups: (begin, end) offsets into order, pairwise
  if (lanes_op && nmax >= 3) {
    std::vector<int64_t> start(nmax + 2, 0);
    for (int64_t q = 0; q < a.Q; ++q) {
      const int n = a.counts[q];
      if (n >= 3 && n <= nmax) ++start[n + 1];
      else scalar.push_back(q);
    }
    for (int n = 1; n <= nmax + 1; ++n) start[n] += start[n - 1];
    order.resize(size_t(start[nmax + 1]));
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t q = 0; q < a.Q; ++q) {
      const int n = a.counts[q];
      if (n >= 3 && n <= nmax) order[size_t(fill[n]++)] = q;
    }
    for (int n = 3; n <= nmax; ++n)
      for (int64_t g = start[n]; g < start[n + 1]; g += kLanes) {
        const int64_t end = std::min<int64_t>(g + kLanes, start[n + 1]);
        // a group costs as much as kLanes questions: a few are cheaper on the scalar path, which
        // gives the same bits (not the heat kernel, whose routes agree to rounding only: it stays
        // in the lanes, so that a question's result does not depend on its batch)
        if (end - g < kMinLaneGroup && !graph_heat(a.op)) {
          scalar.insert(scalar.end(), order.begin() + g, order.begin() + end);
          continue;
        }
        groups.push_back(g);
        groups.push_back(end);
      }
  } else {
    for (int64_t q = 0; q < a.Q; ++q) scalar.push_back(q);
  }
  const int64_t ngroups = int64_t(groups.size()) / 2, nscalar = int64_t(scalar.size());
  // no more threads than the loops below hand out chunks (4 groups, 16 scalar questions): a
  // worker without work would still be woken, which costs a small call more than its work
  const int64_t chunks = (ngroups + kGroupChunk - 1) / kGroupChunk + (nscalar + kScalarChunk - 1) / kScalarChunk;
  const int nth = int(std::max<int64_t>(1, std::min<int64_t>(nt, chunks)));

#pragma omp parallel num_threads(nth)
  {
    const size_t ws = size_t(eig_work_size<double>(K)) + 1;
    std::vector<double> buf(ws), dl(K + 1), el(K + 1);
    const bool heat = graph_heat(a.op);
    std::vector<Lanes::V> lbuf(ngroups > 0 ? Lanes::work_size(nmax, heat) : 0);
#pragma omp for schedule(dynamic, kGroupChunk) nowait
    for (int64_t gi = 0; gi < ngroups; ++gi) {
      const int64_t g0 = groups[2 * gi], cnt = groups[2 * gi + 1] - g0;
      const int n = a.counts[order[g0]];
      Lanes lanes;
      lanes.bind(lbuf.data(), n, heat);
      const S *Wk[kLanes], *Ck[kLanes];
      for (int k = 0; k < kLanes; ++k) {  // a short group repeats its last question in the spare lanes
        const int64_t off = order[g0 + std::min<int64_t>(k, cnt - 1)] * K * K;
        Wk[k] = W + off;
        Ck[k] = C ? C + off : nullptr;
      }
      lanes.load(a.op, Wk, Ck, K);
      if (heat)  // the heat kernel of each question, reduced for its eigenvalues
        for (int h = 0; h < Lanes::NC; ++h) lanes.ch[h].heat_kernel(n, a.t);
      lanes.ql();
      const bool lap = a.op == kGraphLaplacian;
      Lanes::V mv[Lanes::NC];
      for (int h = 0; h < Lanes::NC; ++h) lanes.ch[h].sort(n);
      int mmax = 0;  // Eccentricity's kept eigenvectors
      if (lap && o1) {
        for (int h = 0; h < Lanes::NC; ++h) mmax = std::max(mmax, lanes.ch[h].kept(n, a.threshold, mv[h]));
        lanes.inverse_iteration(mmax, mv);
      }
      for (int h = 0; h < Lanes::NC; ++h) {  // the scores, then the outputs
        Lanes::Chunk& c = lanes.ch[h];
        Lanes::V eigv, ecc, per_sample[kLaneMaxN], entropy;
        if (lap) eigv = c.eigv(n);
        if (lap && o1) c.eccentricity(n, mmax, mv[h], ecc, o2 ? per_sample : nullptr);
        if (heat) entropy = c.von_neumann_entropy(n);
        for (int w = 0; w < Lanes::W; ++w) {
          const int k = h * Lanes::W + w;
          if (k >= cnt) break;
          const int64_t q = order[g0 + k];
          if (!lanes.ok[k]) {  // redone on the scalar path, which fails the same way and writes the NaNs
            GraphTask<double, S, S> t = task_of(q, buf.data(), dl.data(), el.data());
            run_graph_task(tm, t);
            continue;
          }
          if (heat) {
            o0[q] = S(entropy[w]);
            continue;
          }
          if (!lap) {
            for (int i = 0; i < n; ++i) o0[q * K + i] = S(c.qd[i][w] * c.scale[w]);
            continue;
          }
          o0[q] = S(eigv[w]);
          if (o1) {
            o1[q] = S(ecc[w]);
            if (o2)
              for (int i = 0; i < n; ++i) o2[q * K + i] = S(per_sample[i][w]);
          }
        }
      }
    }
#pragma omp for schedule(dynamic, kScalarChunk)
    for (int64_t i = 0; i < nscalar; ++i) {
      GraphTask<double, S, S> t = task_of(scalar[i], buf.data(), dl.data(), el.data());
      run_graph_task(tm, t);
    }
  }
}

}  // namespace

void graph(const GraphArgs& a) {
  if (a.dtype == DType::F64) run<double>(a);
  else run<float>(a);
}

}  // namespace FUQ_ISA
}  // namespace cpu
}  // namespace flashuq
