// CPU token-statistics kernel, included once per instruction set (FUQ_ISA names the namespace).
//
// A row is cut into fixed chunks of kChunk columns and each chunk into blocks of kBlock. A block
// is loaded (converted, scaled by 1/temperature) into a small buffer that stays in L1, reduced
// to a partial with vectorised loops, and merged into the chunk's partial; chunk partials merge
// into the row's in column order. Rows are spread over threads; when there are fewer rows than
// threads, (row, chunk) pairs are, with the chunk partials merged afterwards in the same order,
// so both schedules give bitwise the same result.
#include <algorithm>
#include <cmath>
#include <vector>

#include <omp.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "flashuq/accumulator.h"
#include "flashuq/cpu_math.h"
#include "token_stats.h"

namespace flashuq {
namespace cpu {
namespace FUQ_ISA {
namespace {

constexpr int kBlock = 1024;
// Sums run over sub-blocks of kSub columns, each reduced across the vector's lanes at its end: 64
// additions per lane in each vectorised build (16 fp32 lanes with AVX-512, 8 with AVX2, 4 with SSE2)
// keep the fp32 rounding small, and the lanes' reduction, a few dozen scalar additions per sum, is
// paid once per 64 vectors. Sanitizer builds, whose instrumented loops may not vectorise, take 128
// columns: no build chains more than 128 fp32 additions without vectors.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUQ_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(FUQ_SANITIZED)
constexpr int kSub = 128;
#elif defined(__AVX512F__)
constexpr int kSub = 1024;
#elif defined(__AVX2__)
constexpr int kSub = 512;
#else
constexpr int kSub = 256;
#endif
// The first maximum is searched for in runs of kFind columns, stopping at the run that holds it.
constexpr int kFind = 64;
constexpr int kTopkRun = 32;

struct Bf16 { uint16_t v; };
struct Half { uint16_t v; };

template <typename In, typename A> inline A load(const In* p, int64_t i);
template <> inline float load<float, float>(const float* p, int64_t i) { return p[i]; }
template <> inline double load<double, double>(const double* p, int64_t i) { return p[i]; }
template <> inline float load<Bf16, float>(const Bf16* p, int64_t i) { return bf16_to_float(p[i].v); }
template <> inline float load<Half, float>(const Half* p, int64_t i) { return half_to_float(p[i].v); }

template <typename A> struct Math;
// exp_nonpos: e^x for kMinArg <= x <= 0 (the kernel clamps; below kMinArg the result is taken as 0).
template <> struct Math<float> {
  static constexpr float kMinArg = -104.0f;
  static float exp_nonpos(float x) { return exp_f32_core(x); }
  static float log1p(float x) { return std::log1p(x); }
  static float log(float x) { return std::log(x); }
};
template <> struct Math<double> {
  static constexpr double kMinArg = -746.0;
  static double exp_nonpos(double x) { return std::exp(x); }
  static double log1p(double x) { return std::log1p(x); }
  static double log(double x) { return std::log(x); }
};

template <typename A>
struct TopK {
  A v[kMaxTopK];
  int64_t i[kMaxTopK];
  int cnt = 0;
};

// Blocks are reduced in the input's compute type (fp32 for fp32/fp16/bf16: vectorised), and their
// partials are merged and finalised in fp64: hundreds of sequential merges per row then cost no
// digits, and the CPU results sit within a few fp32 ulps of the float64 reference.
using M = double;

template <typename A>
inline Acc<M> widen(const Acc<A>& b) {
  Acc<M> a;
  a.m = b.m; a.m2 = b.m2; a.idx = b.idx;
  a.R = b.R; a.T = b.T; a.Q2 = b.Q2; a.Qh = b.Qh; a.Qq = b.Qq; a.sd = b.sd; a.nf = b.nf;
  a.n = b.n; a.mean = b.mean; a.M2 = b.M2; a.M3 = b.M3; a.M4 = b.M4;
  a.bad = b.bad;
  return a;
}

inline Acc<M> merge_acc(const Acc<M>& a, const Acc<M>& b, M inv_temp, bool frac) {
  return merge(a, b, inv_temp, [](M x) { return std::exp(x); }, frac);
}

// Pass 1 over a block: x[0..len) converted into buf, NaN and +inf (a row without a distribution)
// stored as -inf and *nbad > 0 if there are any; returns the block's maximum (-inf if none).
template <typename In, typename A>
struct LoadPass {
  static A run(const In* x, int len, A* buf, int* nbad) {
    const A ninf = neg_inf<A>();
    const A pinf = -ninf;
    A bm = ninf;
    int bad = 0;
#pragma omp simd reduction(max : bm) reduction(+ : bad)
    for (int i = 0; i < len; ++i) {
      A v = load<In, A>(x, i);                // raw logits; 1/T scales differences below
      const bool b = !(v == v) || v == pinf;  // NaN or +inf: the row has no distribution
      v = b ? ninf : v;
      buf[i] = v;
      bm = v > bm ? v : bm;
      bad += b ? 1 : 0;
    }
    *nbad = bad;
    return bm;
  }
};

// The sums of pass 2 over a block, with d = (x - max)/T over its columns but the maximum (set aside
// as -inf): R = Σ e^d, T = Σ e^d d, Q2 = Σ e^{2d}, Qh = Σ e^{d/2}, Qq = Σ e^{d/4} (Frac only),
// sd = Σ d and nf = the count over finite columns, m2 = the largest remaining value.
template <typename A>
struct ExpSums {
  A R = 0, T = 0, Q2 = 0, Qh = 0, Qq = 0, sd = 0, nf = 0, m2 = neg_inf<A>();
};

// Pass 2: the sums above, and buf[i] <- e^{d_i} (0 where the column is -inf) for the moments' pass.
template <typename A, bool Frac>
struct ExpPass {
  static ExpSums<A> run(A* buf, int len, A bm, A inv_temp) {
    const A ninf = neg_inf<A>();
    ExpSums<A> s;
    A m2 = ninf;
    for (int s0 = 0; s0 < len; s0 += kSub) {
      const int s1 = std::min(len, s0 + kSub);
      A r = 0, t = 0, q = 0, qh = 0, qq = 0, dd = 0, f = 0;
#pragma omp simd reduction(+ : r, t, q, qh, qq, dd, f) reduction(max : m2)
      for (int i = s0; i < s1; ++i) {
        const A x = buf[i];
        m2 = x > m2 ? x : m2;
        const bool fin = x > ninf;
        // -inf for a column set aside, or when the row spans more than the float range
        const A d = (x - bm) * inv_temp;
        A e;
        // the exponential's argument clamped to where it is finite and > 0: no special case inside it
        const A de = Frac ? d * A(0.25) : d;
        const bool live = de >= Math<A>::kMinArg;
        const A ex = Math<A>::exp_nonpos(live ? de : Math<A>::kMinArg);
        if (Frac) {  // one exponential, e^{d/4}; two squarings give e^{d/2} and e^d (docs/numerics.md#accumulator)
          const A e4 = live ? ex : A(0);
          const A eh = e4 * e4;
          e = eh * eh;
          qq += e4;
          qh += eh;
        } else {
          e = live ? ex : A(0);
        }
        r += e;
        t += e * (live ? d : A(0));  // e = 0 where d = -inf
        q += e * e;
        dd += fin ? d : A(0);
        f += fin ? A(1) : A(0);
        buf[i] = e;
      }
      s.R += r; s.T += t; s.Q2 += q; s.Qh += qh; s.Qq += qq; s.sd += dd; s.nf += f;
    }
    s.m2 = m2;
    return s;
  }
};

// Pass 3: the central moments Σ c², Σ c³, Σ c⁴ of the block's probabilities, c = e - mean.
template <typename A>
struct Moments {
  A M2 = 0, M3 = 0, M4 = 0;
};

template <typename A>
struct MomentPass {
  static Moments<A> run(const A* buf, int len, A mean) {
    Moments<A> mo;
    for (int s0 = 0; s0 < len; s0 += kSub) {
      const int s1 = std::min(len, s0 + kSub);
      A m2 = 0, m3 = 0, m4 = 0;
#pragma omp simd reduction(+ : m2, m3, m4)
      for (int i = s0; i < s1; ++i) {
        const A c = buf[i] - mean;
        const A c2 = c * c;
        m2 += c2;
        m3 += c2 * c;
        m4 += c2 * c2;
      }
      mo.M2 += m2; mo.M3 += m3; mo.M4 += m4;
    }
    return mo;
  }
};

#if defined(__AVX512F__)
#include "token_stats_avx512.h"  // hand-written 16-lane passes for fp32, fp16 and bf16 input
#endif

// The first index of v in buf[0..len) (which holds it): a vectorised test per run of kFind
// columns, then a scalar search in the first run that holds it (on average half the block is scanned).
// The x86 builds test one vector at a time and take the first set bit of the compare's mask (fp32
// buffers: fp32, fp16 and bf16 logits; fp64 keeps the loop below): GCC's
// code for the loop below reduces each run's flags across the lanes, which cost as much as a sixth
// of the kernel (fp32 on Intel).
#if defined(__AVX512F__) || defined(__AVX2__)
// Bit j set where p[j] compares Cmp (_CMP_EQ_OQ, _CMP_GT_OQ) with v, for the kVecF lanes at p.
#if defined(__AVX512F__)
constexpr int kVecF = 16;
template <int Cmp>
inline unsigned lanes_where(const float* p, float v) {
  return unsigned(_mm512_cmp_ps_mask(_mm512_loadu_ps(p), _mm512_set1_ps(v), Cmp));
}
#else
constexpr int kVecF = 8;
template <int Cmp>
inline unsigned lanes_where(const float* p, float v) {
  return unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(p), _mm256_set1_ps(v), Cmp)));
}
#endif
inline int first_index_of(const float* buf, int len, float v) {
  int i = 0;
  for (; i + kVecF <= len; i += kVecF)
    if (const unsigned hit = lanes_where<_CMP_EQ_OQ>(buf + i, v)) return i + __builtin_ctz(hit);
  for (; i < len; ++i)
    if (buf[i] == v) return i;
  return 0;
}
#endif
template <typename A>
int first_index_of(const A* buf, int len, A v) {
  for (int s = 0; s < len; s += kFind) {
    const int e = std::min(len, s + kFind);
    int hit = 0;
#pragma omp simd reduction(| : hit)
    for (int i = s; i < e; ++i) hit |= buf[i] == v ? 1 : 0;
    if (hit) {
      int i = s;
      while (!(buf[i] == v)) ++i;
      return i;
    }
  }
  return 0;
}

// Offers buf[0..len) (columns base.., no NaN) to the top-k list in column order: once the list is
// full, only a value above its last can enter (columns arrive in increasing order, so an equal value
// never wins). Generic: runs of kTopkRun columns, a run skipped when its vectorised max cannot enter.
template <typename A>
void topk_scan(const A* buf, int len, int64_t base, TopK<A>* tk, int k) {
  for (int s = 0; s < len; s += kTopkRun) {
    const int e = std::min(len, s + kTopkRun);
    if (tk->cnt == k) {
      A rm = neg_inf<A>();
#pragma omp simd reduction(max : rm)
      for (int i = s; i < e; ++i) rm = buf[i] > rm ? buf[i] : rm;
      if (!(rm > tk->v[k - 1])) continue;
    }
    for (int i = s; i < e; ++i) {
      if (tk->cnt == k && !(buf[i] > tk->v[k - 1])) continue;
      topk_insert(tk->v, tk->i, &tk->cnt, k, buf[i], base + i);
    }
  }
}
// The x86 builds compare a vector with the list's last value and offer only the lanes above it, in
// order (a run's max costs a reduction across the lanes; the compare's mask costs none).
#if defined(__AVX512F__) || defined(__AVX2__)
inline void topk_scan(const float* buf, int len, int64_t base, TopK<float>* tk, int k) {
  int i = 0;
  for (; i < len && tk->cnt < k; ++i) topk_insert(tk->v, tk->i, &tk->cnt, k, buf[i], base + i);
  for (; i + kVecF <= len; i += kVecF)
    for (unsigned hit = lanes_where<_CMP_GT_OQ>(buf + i, tk->v[k - 1]); hit != 0; hit &= hit - 1) {
      const int j = i + __builtin_ctz(hit);  // the list's last value may have risen since the compare
      if (buf[j] > tk->v[k - 1]) topk_insert(tk->v, tk->i, &tk->cnt, k, buf[j], base + j);
    }
  for (; i < len; ++i)
    if (buf[i] > tk->v[k - 1]) topk_insert(tk->v, tk->i, &tk->cnt, k, buf[i], base + i);
}
#endif

// Partial of columns [base, base + len) of one row; buf holds kBlock scratch values. Frac also
// accumulates the tempered sums Qh, Qq: e^{d/4} is then the one exponential per column and e^{d/2},
// e^d are its squares (a few ulp more error in e^d than a direct exp; no extra exp per column).
template <typename In, typename A, bool Frac>
Acc<A> block_partial(const In* row, int64_t base, int len, A inv_temp, A* buf, TopK<A>* tk, int k) {
  const A ninf = neg_inf<A>();
  int nbad = 0;
  const A bm = LoadPass<In, A>::run(row + base, len, buf, &nbad);
  if (k > 0 && (tk->cnt < k || bm > tk->v[k - 1])) topk_scan(buf, len, base, tk, k);
  Acc<A> a = acc_empty<A>();
  a.bad = nbad > 0;
  a.n = A(len);
  if (!(bm > ninf)) return a;  // no finite entry: only the column count matters

  const int bidx = first_index_of(buf, len, bm);
  // The maximum itself is left out of R and Q2 (its e^0 = 1 is implicit) and contributes
  // d = 0 to T and sd; with it set aside, the largest value the pass sees is the second largest.
  buf[bidx] = ninf;
  const ExpSums<A> es = ExpPass<A, Frac>::run(buf, len, bm, inv_temp);
  buf[bidx] = A(1);
  const A mean = (A(1) + es.R) / A(len);
  const Moments<A> mo = MomentPass<A>::run(buf, len, mean);
  a.m = bm;
  a.m2 = es.m2;
  a.idx = base + bidx;
  a.R = es.R;
  a.T = es.T;
  a.Q2 = es.Q2;
  a.Qh = es.Qh;
  a.Qq = es.Qq;
  a.sd = es.sd;
  a.nf = es.nf + A(1);
  a.mean = mean;
  a.M2 = mo.M2;
  a.M3 = mo.M3;
  a.M4 = mo.M4;
  return a;
}

// A block's sd = Σ d over its finite columns, in fp64. The lanes' sum overflows where logits are
// masked with the float minimum (two such columns at T = 1, one at T < 1: Hugging Face's masks),
// although the block's share of self-certainty is finite; only a finite column enters sd, so a
// non-finite sd in a row without NaN or +inf is always such an overflow.
template <typename In, typename A>
M block_sd_f64(const In* x, int len, M bm, M inv_temp) {
  M sd = 0;
  for (int i = 0; i < len; ++i) {
    const M v = M(load<In, A>(x, i));
    if (v > -std::numeric_limits<M>::infinity() && v < std::numeric_limits<M>::infinity())
      sd += (v - bm) * inv_temp;
  }
  return sd;
}

template <typename In, typename A, bool Frac>
Acc<M> chunk_partial(const In* row, int64_t lo, int64_t hi, A inv_temp, M inv_temp_m, TopK<A>* tk, int k) {
  A buf[kBlock];
  Acc<M> acc = acc_empty<M>();
  for (int64_t b = lo; b < hi; b += kBlock) {
    const int len = int(std::min<int64_t>(kBlock, hi - b));
    prefetch_elements(row + b + len, std::min<int64_t>(kBlock, hi - b - len));
    Acc<M> p = widen(block_partial<In, A, Frac>(row, b, len, inv_temp, buf, tk, k));
    if (!(p.sd > -std::numeric_limits<M>::infinity()) && !p.bad && p.m > -std::numeric_limits<M>::infinity())
      p.sd = block_sd_f64<In, A>(row + b, len, p.m, inv_temp_m);
    acc = merge_acc(acc, p, inv_temp_m, Frac);
  }
  return acc;
}

// One row's accumulator restricted to (max, R, T) (the sums ExpPass gives; the moments' pass is
// skipped): blocks in the fp32 lanes, merged in fp64 in column order.
template <typename In>
RowEntropySums row_entropy_sums_t(const In* row, int64_t V, float inv_temp, M inv_temp_m) {
  float buf[kBlock];
  Acc<M> acc = acc_empty<M>();
  for (int64_t b = 0; b < V; b += kBlock) {
    const int len = int(std::min<int64_t>(kBlock, V - b));
    prefetch_elements(row + b + len, std::min<int64_t>(kBlock, V - b - len));
    int nbad = 0;
    const float bm = LoadPass<In, float>::run(row + b, len, buf, &nbad);
    Acc<float> p = acc_empty<float>();
    p.bad = nbad > 0;
    p.n = float(len);
    if (bm > neg_inf<float>()) {
      const int bidx = first_index_of(buf, len, bm);
      buf[bidx] = neg_inf<float>();  // the maximum's e^0 = 1 stays implicit, as in block_partial
      const ExpSums<float> es = ExpPass<float, false>::run(buf, len, bm, inv_temp);
      p.m = bm;
      p.idx = b + bidx;
      p.R = es.R;
      p.T = es.T;
    }
    acc = merge_acc(acc, widen(p), inv_temp_m, false);
  }
  return RowEntropySums{acc.m, acc.R, acc.T, acc.bad};
}

template <typename A>
void merge_topk_into(TopK<A>* dst, const TopK<A>& src, int k) {
  TopK<A> out;
  out.cnt = topk_merge(dst->v, dst->i, dst->cnt, src.v, src.i, src.cnt, k, out.v, out.i);
  *dst = out;
}

template <typename In, typename A>
void write_row(const TokenStatsArgs& a, int64_t r, const In* row, const Acc<M>& acc, const TopK<A>& tk) {
  const M inv_temp = a.inv_temp;
  const RowStats<M> s = finalize(
      acc, inv_temp, [](M x) { return std::exp(x); }, [](M x) { return std::log1p(x); },
      [](M x) { return std::log(x); });
  M lp = s.max_logprob;
  if (a.tokens) {
    const int64_t t = a.tokens[r];
    if (s.valid && t >= 0 && t < a.V) {
      const M zt = load<In, A>(row, t);
      lp = (zt - acc.m) * inv_temp - s.log1p_R;  // subtract the max first; never z/T - lse
    } else {
      lp = quiet_nan<M>();
    }
  }
  static_cast<A*>(a.lse)[r] = s.lse;
  static_cast<A*>(a.max_logprob)[r] = s.max_logprob;
  static_cast<A*>(a.logprob)[r] = lp;
  static_cast<A*>(a.entropy)[r] = s.entropy;
  static_cast<A*>(a.margin)[r] = s.margin;
  static_cast<A*>(a.collision)[r] = s.collision;
  static_cast<A*>(a.kurtosis)[r] = s.kurtosis;
  static_cast<A*>(a.self_certainty)[r] = s.self_certainty;
  if (a.renyi_term) {
    static_cast<A*>(a.renyi_term)[r] = s.renyi_term;
    static_cast<A*>(a.fisher_rao)[r] = s.fisher_rao;
  }
  a.argmax[r] = s.argmax;
  A* tv = static_cast<A*>(a.topk_logprobs) + r * a.k;
  int64_t* ti = a.topk_ids + r * a.k;
  for (int j = 0; j < a.k; ++j) {
    const bool ok = s.valid && j < tk.cnt;
    tv[j] = ok ? A((M(tk.v[j]) - acc.m) * inv_temp - s.log1p_R) : quiet_nan<A>();
    ti[j] = ok ? tk.i[j] : -1;
  }
}

template <typename In, typename A, bool Frac>
void run(const TokenStatsArgs& a) {
  const In* base = static_cast<const In*>(a.logits);
  const A inv_temp = A(a.inv_temp);
  const M inv_temp_m = a.inv_temp;
  const int k = a.k;
  const int64_t rows = a.rows, V = a.V;
  const int64_t nchunks = (V + kChunk - 1) / kChunk;
  const int nt = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
  auto row_ptr = [&](int64_t r) { return base + (r / a.n1) * a.s0 + (r % a.n1) * a.s1; };

  if (rows >= nt || nchunks == 1) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < rows; ++r) {
      const In* row = row_ptr(r);
      Acc<M> acc = acc_empty<M>();
      TopK<A> tk, tc;
      for (int64_t c = 0; c < nchunks; ++c) {
        tc.cnt = 0;
        const int64_t lo = c * kChunk;
        acc = merge_acc(acc,
                        chunk_partial<In, A, Frac>(row, lo, std::min(V, lo + kChunk), inv_temp, inv_temp_m, &tc, k),
                        inv_temp_m, Frac);
        if (k > 0) merge_topk_into(&tk, tc, k);
      }
      write_row<In, A>(a, r, row, acc, tk);
    }
    return;
  }

  // Few rows: split each row into its chunks, then fold the partials in column order.
  const int64_t np = rows * nchunks;
  std::vector<Acc<M>> parts(np);
  std::vector<TopK<A>> tks(k > 0 ? np : 0);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t p = 0; p < np; ++p) {
    const int64_t r = p / nchunks, c = p % nchunks, lo = c * kChunk;
    TopK<A> local;
    parts[p] = chunk_partial<In, A, Frac>(row_ptr(r), lo, std::min(V, lo + kChunk), inv_temp, inv_temp_m, &local, k);
    if (k > 0) tks[p] = local;
  }
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t r = 0; r < rows; ++r) {
    Acc<M> acc = acc_empty<M>();
    TopK<A> tk;
    for (int64_t c = 0; c < nchunks; ++c) {
      acc = merge_acc(acc, parts[r * nchunks + c], inv_temp_m, Frac);
      if (k > 0) merge_topk_into(&tk, tks[r * nchunks + c], k);
    }
    write_row<In, A>(a, r, row_ptr(r), acc, tk);
  }
}

template <bool Frac>
void dispatch(const TokenStatsArgs& a) {
  switch (a.dtype) {
    case DType::F32: run<float, float, Frac>(a); break;
    case DType::F64: run<double, double, Frac>(a); break;
    case DType::F16: run<Half, float, Frac>(a); break;
    case DType::BF16: run<Bf16, float, Frac>(a); break;
  }
}

}  // namespace

void token_stats(const TokenStatsArgs& a) {
  if (a.renyi_term) dispatch<true>(a);
  else dispatch<false>(a);
}

// masked_reduce's logsumexp without weights (masked_reduce.h's layouts) on the token statistics'
// passes: per block of kBlock entries, the real ones are read (padding as -inf) with their max,
// ExpPass sums e^{x - max} in its fp32 lanes, and the blocks merge in fp64 as (max, sum). A
// sequence with a NaN or +inf among its real entries is NaN if it holds a NaN, else +inf (the fp64
// loop's results); without real entries, NaN.
template <typename In>
void masked_logsumexp_rows(const In* values, const uint8_t* mask, const int64_t* cu, int64_t B, int64_t T,
                           float* out, int nt) {
  const float ninf = neg_inf<float>();
  const double dninf = -std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
#pragma omp parallel num_threads(nt)
  {
    float buf[kBlock];
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t lo = cu ? cu[b] : b * T, hi = cu ? cu[b + 1] : b * T + T;
      double m = dninf, S = 0.0;
      int64_t n = 0;
      bool bad = false;
      for (int64_t c = lo; c < hi && !bad; c += kBlock) {
        const int len = int(std::min<int64_t>(kBlock, hi - c));
        const In* x = values + c;
        prefetch_elements(x + len, std::min<int64_t>(kBlock, hi - c - len));
        if (mask) prefetch_elements(mask + c + len, std::min<int64_t>(kBlock, hi - c - len));
        const uint8_t* mk = mask ? mask + c : nullptr;
        int nreal = len, nbad = 0;  // NaN or +inf
        float bm;
        if (mk) {  // the padding as -inf, into buf first
          nreal = 0;
#pragma omp simd reduction(+ : nreal)
          for (int i = 0; i < len; ++i) {
            const bool real = mk[i] != 0;
            buf[i] = real ? load<In, float>(x, i) : ninf;
            nreal += real ? 1 : 0;
          }
          bm = LoadPass<float, float>::run(buf, len, buf, &nbad);
        } else {
          bm = LoadPass<In, float>::run(x, len, buf, &nbad);
        }
        bad = nbad > 0;
        n += nreal;
        if (bad || !(bm > ninf)) continue;
        const double r = double(ExpPass<float, false>::run(buf, len, bm, 1.0f).R);  // Σ e^{x - bm}, >= 1
        if (double(bm) > m) {
          S = S * std::exp(m - double(bm)) + r;
          m = bm;
        } else {
          S += r * std::exp(double(bm) - m);
        }
      }
      double res = n == 0 ? nan : m > dninf ? m + std::log(S) : m;
      if (bad) {  // rare: NaN if the sequence holds one among its real entries, else +inf
        res = std::numeric_limits<double>::infinity();
        for (int64_t i = lo; i < hi; ++i)
          if ((mask == nullptr || mask[i] != 0) && std::isnan(load<In, float>(values, i))) res = nan;
      }
      out[b] = float(res);
    }
  }
}

void masked_logsumexp(DType dtype, const void* values, const uint8_t* mask, const int64_t* cu, int64_t B, int64_t T,
                      float* out, int num_threads) {
  const int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  switch (dtype) {
    case DType::BF16: return masked_logsumexp_rows(static_cast<const Bf16*>(values), mask, cu, B, T, out, nt);
    case DType::F16: return masked_logsumexp_rows(static_cast<const Half*>(values), mask, cu, B, T, out, nt);
    default: return masked_logsumexp_rows(static_cast<const float*>(values), mask, cu, B, T, out, nt);
  }
}

RowEntropySums row_entropy_sums(DType dtype, const void* row, int64_t V, double inv_temp) {
  const float it = float(inv_temp);
  switch (dtype) {
    case DType::BF16: return row_entropy_sums_t(static_cast<const Bf16*>(row), V, it, inv_temp);
    case DType::F16: return row_entropy_sums_t(static_cast<const Half*>(row), V, it, inv_temp);
    default: return row_entropy_sums_t(static_cast<const float*>(row), V, it, inv_temp);
  }
}

void exp_nonpos_f32(const float* x, float* out, int64_t n) {
  using F = Math<float>;
#if defined(__AVX512F__)  // the exponential pass 2 takes in this build
  const __m512 kmin = _mm512_set1_ps(F::kMinArg);
  for (int64_t i = 0; i < n; i += avx512_pass::kLanes) {
    const __mmask16 m = avx512_pass::tail_mask(int(std::min<int64_t>(n - i, avx512_pass::kLanes)));
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __mmask16 live = _mm512_cmp_ps_mask(v, kmin, _CMP_GE_OQ);
    _mm512_mask_storeu_ps(out + i, m, avx512_pass::exp_nonpos(_mm512_max_ps(v, kmin), live));
  }
#else
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const bool live = x[i] >= F::kMinArg;  // as in ExpPass
    const float e = F::exp_nonpos(live ? x[i] : F::kMinArg);
    out[i] = live ? e : 0.0f;
  }
#endif
}

}  // namespace FUQ_ISA
}  // namespace cpu
}  // namespace flashuq
