// CPU driver of the UQAC kernels (flashuq/uqac.h): one sequence per OpenMP iteration, with
// per-thread scratch, for the backtracking and the similarity filter; the reduction's builds per
// instruction set (uqac_reduce_impl.h) are picked here. Items are independent, so the schedule
// cannot change a result.
#include "uqac.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "flashuq/cpu_math.h"
#include "flashuq/uqac.h"

namespace flashuq {
namespace cpu {
namespace {

int threads(int n) { return n > 0 ? n : omp_get_max_threads(); }
// No more threads than work items: one sequence must not wait on waking idle threads.
int threads(int n, int64_t items) { return int(std::max<int64_t>(1, std::min<int64_t>(threads(n), items))); }

struct HalfCvt { static float get(uint16_t h) { return half_to_float(h); } };
struct BF16Cvt { static float get(uint16_t h) { return bf16_to_float(h); } };
template <class S> struct IdCvt { static S get(S x) { return x; } };

// ---- backtracking ----------------------------------------------------------------------------------

// Keys of one row in uqac_key_before order, sorted lazily: the first 8 by a partial sort, then the
// sorted prefix grows geometrically (a source usually needs only its top 5 keys).
template <class T>
struct LazyRanker {
  std::vector<int32_t> idx;
  const T* w = nullptr;
  int64_t n = 0, done = 0;

  void begin(const T* row, int64_t ncols) {
    w = row;
    n = ncols;
    done = 0;
    idx.resize(size_t(n));
    std::iota(idx.begin(), idx.end(), 0);
  }
  int64_t key(int64_t rank) {
    while (rank >= done) {
      const int64_t grow = std::min(n - done, std::max<int64_t>(8, done));
      const T* ww = w;
      std::partial_sort(idx.begin() + done, idx.begin() + done + grow, idx.end(), [ww](int32_t a, int32_t b) {
        return uqac_key_before(ww[a], int64_t(a), ww[b], int64_t(b));
      });
      done += grow;
    }
    return idx[size_t(rank)];
  }
};

template <class T>
void backtrack_run(const UqacBacktrackArgs& a) {
  const T* attn = static_cast<const T*>(a.attn);
  T* scores = static_cast<T*>(a.scores);
#pragma omp parallel num_threads(threads(a.num_threads, a.B))
  {
    std::vector<T> acc(size_t(a.Nmax));
    std::vector<uint8_t> seen(size_t(a.Nmax)), proc(size_t(a.Nmax) + 1);
    std::vector<int32_t> touched(size_t(a.Nmax));
    LazyRanker<T> ranker;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < a.B; ++b) {
      UqacSeq<T> q;
      q.attn = attn + b * a.Rmax * a.Nmax;
      q.ld = a.Nmax;
      q.is_stop = a.is_stop + b * a.Nmax;
      q.ans = a.ans + b * a.Amax;
      q.R = a.R[b]; q.Ntok = a.Ntok[b]; q.A = a.A[b];
      q.buffer = a.buffer;
      q.threshold = T(a.threshold);
      q.min_len = a.min_len[b];
      q.max_steps = a.max_steps;
      q.chain = a.chain + b * a.C;
      q.scores = scores + b * a.C;
      q.cap = a.C;
      std::fill(acc.begin(), acc.end(), T(0));
      std::fill(seen.begin(), seen.end(), uint8_t(0));
      std::fill(proc.begin(), proc.end(), uint8_t(0));
      q.acc = acc.data(); q.seen = seen.data(); q.proc = proc.data(); q.touched = touched.data();
      a.lengths[b] = uqac_backtrack_seq(q, ranker) ? q.len : -1;
    }
  }
}

// ---- similarity ------------------------------------------------------------------------------------

template <class S, class Cvt, class T>
void similarity_run(const UqacSimilarityArgs& a) {
  const S* h = static_cast<const S*>(a.h);
  const int64_t D = a.D;
#pragma omp parallel num_threads(threads(a.num_threads, a.B))
  {
    std::vector<float> sim(size_t(a.C));
    std::vector<T> na(size_t(a.Amax));
    std::vector<uint8_t> mark(size_t(a.C));
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < a.B; ++b) {
      const S* hb = h + b * a.Rmax * D;
      const int64_t* ans = a.ans + b * a.Amax;
      const int64_t A = a.A[b], R = a.R[b];
      const int64_t nc = std::max<int64_t>(0, a.lengths[b] - A);
      auto sq = [&](const S* u) {
        T s = 0;
        for (int64_t d = 0; d < D; ++d) { const T v = T(Cvt::get(u[d])); s += v * v; }
        return s;
      };
      auto cosine_f64 = [&](const S* x, const S* y) {
        double dot = 0, nx = 0, ny = 0;
        for (int64_t d = 0; d < D; ++d) {
          const double u = Cvt::get(x[d]), v = Cvt::get(y[d]);
          dot += u * v; nx += u * u; ny += v * v;
        }
        return uqac_cosine(dot, nx, ny);
      };
      for (int64_t i = 0; i < A; ++i) na[size_t(i)] = sq(hb + (ans[i] + 1) * D);
      for (int64_t i = 0; i < nc; ++i) {
        const int64_t c = a.chain[b * a.C + i] + 1;
        if (c < 0 || c >= R || A == 0) {  // no hidden state (or no answer): never kept
          sim[size_t(i)] = NAN;
          continue;
        }
        const S* y = hb + c * D;
        const T ny = sq(y);
        T total = 0;
        for (int64_t k = 0; k < A; ++k) {
          const S* x = hb + (ans[k] + 1) * D;
          T dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += T(Cvt::get(x[d])) * T(Cvt::get(y[d]));
          T c = uqac_cosine(dot, na[size_t(k)], ny);
          // fp32 sums overflow for norms above ~1.8e19: such a pair is summed again in fp64
          if constexpr (!std::is_same_v<T, double>)
            if (!(std::isfinite(dot) && std::isfinite(na[size_t(k)]) && std::isfinite(ny))) c = T(cosine_f64(x, y));
          total += c;
        }
        sim[size_t(i)] = float(total / T(A));
      }
      const int64_t kept = uqac_keep_topk(sim.data(), nc, a.k, float(a.threshold), mark.data());
      int64_t* keep = a.keep + b * a.K;
      int64_t o = 0;
      for (int64_t i = 0; i < nc && o < kept; ++i)
        if (mark[size_t(i)]) keep[o++] = a.chain[b * a.C + i];
      a.keep_len[b] = kept;
    }
  }
}

}  // namespace

void uqac_reduce(const UqacReduceArgs& a) {
  switch (isa_level()) {
#if defined(FUQ_HAVE_AVX512_VARIANT)
    case kAvx512: return avx512::uqac_reduce(a);
#endif
#if defined(FUQ_HAVE_AVX2_VARIANT)
    case kAvx2: return avx2::uqac_reduce(a);
#endif
    default: return base::uqac_reduce(a);
  }
}

void uqac_backtrack(const UqacBacktrackArgs& a) {
  if (a.f64) backtrack_run<double>(a);
  else backtrack_run<float>(a);
}

void uqac_similarity(const UqacSimilarityArgs& a) {
  switch (a.dtype) {
    case DType::F64: similarity_run<double, IdCvt<double>, double>(a); break;
    case DType::F32: similarity_run<float, IdCvt<float>, float>(a); break;
    case DType::F16: similarity_run<uint16_t, HalfCvt, float>(a); break;
    case DType::BF16: similarity_run<uint16_t, BF16Cvt, float>(a); break;
  }
}

}  // namespace cpu
}  // namespace flashuq
