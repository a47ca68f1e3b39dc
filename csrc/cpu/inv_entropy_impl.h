// CPU driver of Inv-Entropy and its family, included once per instruction set (FUQ_ISA names
// the namespace; inv_entropy.cpp picks one at run time). Compiled without FMA contraction, so
// that every build gives bitwise the same results.
#include <omp.h>

#include <cstring>
#include <limits>

#include "flashuq/inv_entropy.h"
#include "inv_entropy.h"

namespace flashuq {
namespace cpu {
namespace FUQ_ISA {
namespace {

// Eight partial sums in every build, kept as 8 / W registers of W lanes (one zmm, two ymm, four
// xmm): element-wise operations in the same order, so the builds agree bit for bit.
constexpr int kW = FUQ_VECTOR_BYTES / 8;
typedef double VN __attribute__((vector_size(8 * kW)));
typedef long long IN __attribute__((vector_size(8 * kW)));
typedef float FN __attribute__((vector_size(4 * kW)));
constexpr int kParts = 8 / kW;

// Two-register shuffle with constant lane indices (0..2W-1): Clang's builtin, or GCC's (GCC
// before 12 has no __builtin_shufflevector).
#if defined(__clang__)
#define FUQ_SHUFFLE(M, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define FUQ_SHUFFLE(M, a, b, ...) __builtin_shuffle(a, b, M{__VA_ARGS__})
#endif

struct V8 {  // lanes 0..7: part t / kW, lane t % kW
  VN v[kParts];
  double operator[](int t) const { return v[t / kW][t % kW]; }
};
struct I8 {
  IN v[kParts];
};
#define FUQ_PARTS for (int h = 0; h < kParts; ++h)
inline V8 zero8() {
  V8 r;
  FUQ_PARTS r.v[h] = VN{} ;
  return r;
}
inline V8 load8(const double* p) {
  V8 r;
  FUQ_PARTS std::memcpy(&r.v[h], p + h * kW, sizeof(VN));
  return r;
}
inline V8 load8(const float* p) {
  V8 r;
  FUQ_PARTS {
    FN f;
    std::memcpy(&f, p + h * kW, sizeof f);
    r.v[h] = __builtin_convertvector(f, VN);
  }
  return r;
}
inline void store8(double* p, const V8& x) { FUQ_PARTS std::memcpy(p + h * kW, &x.v[h], sizeof(VN)); }
inline V8 operator+(const V8& a, const V8& b) {
  V8 r;
  FUQ_PARTS r.v[h] = a.v[h] + b.v[h];
  return r;
}
inline V8& operator+=(V8& a, const V8& b) { return a = a + b; }
inline V8 operator*(const V8& a, const V8& b) {
  V8 r;
  FUQ_PARTS r.v[h] = a.v[h] * b.v[h];
  return r;
}
inline V8 operator/(const V8& a, const V8& b) {
  V8 r;
  FUQ_PARTS r.v[h] = a.v[h] / b.v[h];
  return r;
}
inline V8 mask8(const V8& x, const I8& keep) {  // +0 where keep is 0
  V8 r;
  FUQ_PARTS r.v[h] = (VN)((IN)x.v[h] & keep.v[h]);
  return r;
}
inline void running_min(V8& lo, const V8& x) {  // NaN never replaces: one min per register
  FUQ_PARTS lo.v[h] = x.v[h] < lo.v[h] ? x.v[h] : lo.v[h];
}
inline bool any_negative(const V8& lo) {
  bool r = false;
  for (int t = 0; t < 8; ++t) r |= lo[t] < 0;
  return r;
}
inline void mark_zero(I8& bad, const V8& x) { FUQ_PARTS bad.v[h] |= (IN)(x.v[h] == 0); }
inline void mark_subnormal(I8& small, const V8& x) {  // 0 < x < DBL_MIN (NaN: no)
  FUQ_PARTS small.v[h] |= (IN)(x.v[h] > 0) & (IN)(x.v[h] < std::numeric_limits<double>::min());
}
inline bool any_lane(const I8& m) {
  long long b[8];
  std::memcpy(b, &m, sizeof b);
  long long any = 0;
  for (int t = 0; t < 8; ++t) any |= b[t];
  return any != 0;
}
inline I8 lanes8(bool on) {
  I8 r;
  FUQ_PARTS r.v[h] = on ? ~IN{} : IN{};
  return r;
}

// The sums of eight rows' partial sums: lane t is ((a_t0 + a_t4) + (a_t2 + a_t6)) + ((a_t1 + a_t5)
// + (a_t3 + a_t7)). With AVX-512 and AVX2 from two-register shuffles (a transposition folded into
// the additions); the baseline build adds lane by lane.
inline V8 sum8x8(const V8* a) {
  V8 r;
#if defined(__AVX512F__)
  typedef long long M __attribute__((vector_size(64)));
  VN c[4], e[2];
  for (int t = 0; t < 4; ++t)  // lanes 0-3: row 2t's a_j + a_{j+4}; lanes 4-7: row 2t+1's
    c[t] = FUQ_SHUFFLE(M, a[2 * t].v[0], a[2 * t + 1].v[0], 0, 1, 2, 3, 8, 9, 10, 11) +
           FUQ_SHUFFLE(M, a[2 * t].v[0], a[2 * t + 1].v[0], 4, 5, 6, 7, 12, 13, 14, 15);
  for (int t = 0; t < 2; ++t)  // two lanes per row: (a_0 + a_4) + (a_2 + a_6), (a_1 + a_5) + (a_3 + a_7)
    e[t] = FUQ_SHUFFLE(M, c[2 * t], c[2 * t + 1], 0, 1, 4, 5, 8, 9, 12, 13) +
           FUQ_SHUFFLE(M, c[2 * t], c[2 * t + 1], 2, 3, 6, 7, 10, 11, 14, 15);
  r.v[0] = FUQ_SHUFFLE(M, e[0], e[1], 0, 2, 4, 6, 8, 10, 12, 14) +
           FUQ_SHUFFLE(M, e[0], e[1], 1, 3, 5, 7, 9, 11, 13, 15);
#elif defined(__AVX__)
  for (int q = 0; q < 2; ++q) {  // rows 4q..4q+3 into r.v[q]
    VN e[2];
    for (int t = 0; t < 2; ++t) {
      const VN h0 = a[4 * q + 2 * t].v[0] + a[4 * q + 2 * t].v[1];  // a_j + a_{j+4}
      const VN h1 = a[4 * q + 2 * t + 1].v[0] + a[4 * q + 2 * t + 1].v[1];
      e[t] = FUQ_SHUFFLE(IN, h0, h1, 0, 1, 4, 5) + FUQ_SHUFFLE(IN, h0, h1, 2, 3, 6, 7);
    }
    r.v[q] = FUQ_SHUFFLE(IN, e[0], e[1], 0, 2, 4, 6) + FUQ_SHUFFLE(IN, e[0], e[1], 1, 3, 5, 7);
  }
#else
  double o[8];
  for (int t = 0; t < 8; ++t) {
    const V8& x = a[t];
    o[t] = ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]));
  }
  r = load8(o);
#endif
  return r;
}

// Rows r[0..8) become columns of out, row stride ld: out[j * ld + i] = r[i][j] (with AVX-512 in
// three rounds of two-register shuffles, with AVX2 as four 4 x 4 blocks).
inline void store_transposed8(V8* r, double* out, int ld) {
#if defined(__AVX512F__)
  typedef long long M __attribute__((vector_size(64)));
  VN a[8], b[8];
  for (int t = 0; t < 4; ++t) {  // rows 2t, 2t+1 interleaved: even columns, odd columns
    a[2 * t] = FUQ_SHUFFLE(M, r[2 * t].v[0], r[2 * t + 1].v[0], 0, 8, 2, 10, 4, 12, 6, 14);
    a[2 * t + 1] = FUQ_SHUFFLE(M, r[2 * t].v[0], r[2 * t + 1].v[0], 1, 9, 3, 11, 5, 13, 7, 15);
  }
  for (int h = 0; h < 8; h += 4)  // four rows: columns c and c + 4 of rows h..h+3
    for (int t = 0; t < 2; ++t) {
      b[h + t] = FUQ_SHUFFLE(M, a[h + t], a[h + t + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      b[h + t + 2] = FUQ_SHUFFLE(M, a[h + t], a[h + t + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int c = 0; c < 4; ++c) {  // b[c], b[c + 4]: columns c (c+4 in their upper halves) of rows 0-3, 4-7
    const VN lo = FUQ_SHUFFLE(M, b[c], b[c + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    const VN hi = FUQ_SHUFFLE(M, b[c], b[c + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    std::memcpy(out + c * ld, &lo, sizeof lo);
    std::memcpy(out + (c + 4) * ld, &hi, sizeof hi);
  }
#elif defined(__AVX__)
  for (int rq = 0; rq < 2; ++rq)    // rows 4rq..4rq+3
    for (int cq = 0; cq < 2; ++cq) {  // columns 4cq..4cq+3: a 4 x 4 transposition
      const VN* x[4] = {&r[4 * rq].v[cq], &r[4 * rq + 1].v[cq], &r[4 * rq + 2].v[cq], &r[4 * rq + 3].v[cq]};
      const VN t0 = FUQ_SHUFFLE(IN, *x[0], *x[1], 0, 4, 2, 6), t1 = FUQ_SHUFFLE(IN, *x[0], *x[1], 1, 5, 3, 7);
      const VN t2 = FUQ_SHUFFLE(IN, *x[2], *x[3], 0, 4, 2, 6), t3 = FUQ_SHUFFLE(IN, *x[2], *x[3], 1, 5, 3, 7);
      const VN c[4] = {FUQ_SHUFFLE(IN, t0, t2, 0, 1, 4, 5), FUQ_SHUFFLE(IN, t1, t3, 0, 1, 4, 5),
                       FUQ_SHUFFLE(IN, t0, t2, 2, 3, 6, 7), FUQ_SHUFFLE(IN, t1, t3, 2, 3, 6, 7)};
      for (int j = 0; j < 4; ++j) std::memcpy(out + (4 * cq + j) * ld + 4 * rq, &c[j], sizeof(VN));
    }
#else
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) out[j * ld + i] = r[i][j];
#endif
}
#undef FUQ_PARTS
#undef FUQ_SHUFFLE

// Inv-Entropy alone of one draw that uses the whole [N, N] matrices (no keep): the fast path.
//   d_i = Σ_k Py[i,k] Px[k,i] = (1/ry_i) Σ_k sy[i,k] sxᵀ[i,k] / rx_k
// forms neither Px nor Py: a pass over sx, in 8 x 8 blocks, takes its row sums and writes its
// transposed copy (in L1) from the same loads, then one pass over sy takes each row sum together
// with d_i, both operands contiguous. A row's sums run in eight partial sums (blocks of 8 entries
// into sums 0..7; the last block is the row's last 8 entries, its lanes already counted in a full
// block masked to zero), added in a fixed order: chains of dependent additions eight times shorter
// than one running sum's, and the same order in every build. Rows go eight at a time (the last
// eight rows last, some of them twice, to the same bits), so that their sums, reciprocals and
// quotients are vector operations. Negative entries are rare: the passes keep a running minimum
// and only a question with one counts them (into `negative`). A zero row sum gives NaN; a
// subnormal one (its reciprocal overflows, its quotients lose digits) sets `tiny` and returns
// before counting anything: the caller then runs inv_entropy_question, which divides such rows.
// 8 <= N <= kInvEntropyMaxN.
template <typename S>
double inv_entropy_single(const S* __restrict__ sx, const S* __restrict__ sy, int N, int64_t& negative, bool& tiny) {
  double xt[kInvEntropyMaxN * kInvEntropyMaxN], ux[kInvEntropyMaxN], p[kInvEntropyMaxN];
  const int nfull = N / 8 * 8;
  long long tl[8];  // the last block's lanes not in a full block
  for (int t = 0; t < 8; ++t) tl[t] = t >= 8 - (N - nfull) ? -1 : 0;
  I8 tail;
  std::memcpy(&tail, tl, sizeof tail);
  I8 bad = lanes8(false), small = lanes8(false);
  V8 lo = zero8();  // running minimum of every entry read (a row read twice changes nothing)
  V8 acc[8], acc2[8], blk[8];
  for (int g = 0; g < N; g += 8) {
    const int k0 = g + 8 <= N ? g : N - 8;
    for (int r = 0; r < 8; ++r) acc[r] = zero8();
    for (int j0 = 0; j0 < N; j0 += 8) {  // full blocks in order, then the masked last block
      const int c0 = j0 + 8 <= N ? j0 : N - 8;
      for (int r = 0; r < 8; ++r) {
        blk[r] = load8(sx + (k0 + r) * N + c0);
        running_min(lo, blk[r]);
        acc[r] += c0 == j0 ? blk[r] : mask8(blk[r], tail);
      }
      store_transposed8(blk, xt + c0 * N + k0, N);
    }
    const V8 sk = sum8x8(acc);
    mark_zero(bad, sk);
    mark_subnormal(small, sk);
    V8 one;
    for (auto& x : one.v) x = VN{} + 1.0;
    store8(ux + k0, one / sk);
  }
  for (int g = 0; g < N; g += 8) {
    const int i0 = g + 8 <= N ? g : N - 8;
    for (int r = 0; r < 8; ++r) {
      const S* row = sy + (i0 + r) * N;
      const double* x = xt + (i0 + r) * N;
      V8 ry = zero8(), d = zero8();
      for (int k = 0; k < nfull; k += 8) {
        const V8 v = load8(row + k);
        ry += v;
        running_min(lo, v);
        d += v * (load8(x + k) * load8(ux + k));
      }
      if (nfull < N) {
        const int k = N - 8;
        const V8 v = load8(row + k);
        ry += mask8(v, tail);
        running_min(lo, v);
        d += mask8(v * (load8(x + k) * load8(ux + k)), tail);  // those lanes are in a full block
      }
      acc[r] = ry;
      acc2[r] = d;
    }
    const V8 ryv = sum8x8(acc);
    mark_zero(bad, ryv);
    mark_subnormal(small, ryv);
    store8(p + i0, sum8x8(acc2) / ryv);
  }
  tiny = any_lane(small);
  if (tiny) return 0;
  for (int i = 0; i < N; ++i) p[i] = xlogx(p[i]);
  double inv = 0;
  for (int i = 0; i < N; ++i) inv -= p[i];
  if (any_negative(lo))
    for (int i = 0; i < N * N; ++i) negative += int64_t(sx[i] < 0) + int64_t(sy[i] < 0);
  return any_lane(bad) ? std::numeric_limits<double>::quiet_NaN() : inv;
}

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
    if (!a.all && !a.keep && a.Mx == a.N && a.M == a.N && N >= 8) {  // one draw of Inv-Entropy alone
      bool tiny = false;
      const double v = inv_entropy_single(sx + q * N * N, sy + q * N * N, N, negative, tiny);
      if (!tiny) {
        out[q] = S(v);
        continue;
      }
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
