// flashuq._C: thin nanobind bindings of the CPU kernels. Validation lives in Python
// (python/flashuq/ops); these checks only keep a misuse of the private API from crashing. Arguments
// of a fixed element type are typed (nanobind raises TypeError on a wrong dtype or rank); a float
// argument whose dtype selects the kernel goes through dtype_of; sizes, contiguity and values raise
// ValueError.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "dispatch.h"
#include "ensemble_stats.h"
#include "flashuq/cpu_math.h"
#include "flashuq/inv_entropy.h"
#include "flashuq/ndarray_checks.h"
#include "graph.h"
#include "inv_entropy.h"
#include "inversions.h"
#include "masked_reduce.h"
#include "sem_sets.h"
#include "token_stats.h"
#include "uqac.h"

namespace nb = nanobind;
using namespace flashuq::cpu;
using flashuq::dense;
using flashuq::DType;
using flashuq::dtype_of;
using flashuq::dtype_of_f32_f64;

using Arr = nb::ndarray<nb::device::cpu>;
template <class T, size_t N> using CArr = flashuq::Typed<nb::device::cpu, T, N>;
template <class T> using CArrAny = flashuq::TypedAnyRank<nb::device::cpu, T>;

// An output of n elements in the accumulation dtype (float64 for f64, else float32), contiguous.
static void* out_ptr(Arr& x, int64_t n, bool f64, const char* name) {
  const bool ok = f64 ? x.dtype() == nb::dtype<double>() : x.dtype() == nb::dtype<float>();
  if (!ok) throw nb::type_error((std::string(name) + (f64 ? ": expected float64" : ": expected float32")).c_str());
  if (int64_t(x.size()) != n) throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(n) + " elements");
  return dense(x, name).data();
}

// The data of a contiguous array of n elements.
template <class A>
static auto data_of(A& x, int64_t n, const char* name) {
  if (int64_t(x.size()) != n) throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(n) + " elements");
  return dense(x, name).data();
}

// The outputs come in the order of flashuq.TokenStats' fields, as in TokenStatsArgs.
static void token_stats_py(Arr logits, int64_t rows, int64_t V, int64_t n1, int64_t s0, int64_t s1,
                           std::optional<CArrAny<const int64_t>> tokens, double inv_temp, int k, Arr lse,
                           Arr max_logprob, CArrAny<int64_t> argmax, Arr logprob, Arr entropy, Arr margin,
                           Arr collision, Arr kurtosis, Arr self_certainty, Arr topk_logprobs,
                           CArrAny<int64_t> topk_ids, int num_threads, std::optional<Arr> renyi_term,
                           std::optional<Arr> fisher_rao) {
  TokenStatsArgs a{};
  a.dtype = dtype_of(logits, "logits");
  flashuq::check_rows_inside(logits, rows, V, n1, s0, s1);
  if (k < 0 || k > kMaxTopK || k > V) throw std::invalid_argument("token_stats: bad top-k size");
  const bool f64 = a.dtype == DType::F64;
  a.logits = logits.data();
  a.rows = rows; a.V = V; a.n1 = n1; a.s0 = s0; a.s1 = s1;
  a.tokens = tokens ? data_of(*tokens, rows, "tokens") : nullptr;
  a.inv_temp = inv_temp;
  a.k = k;
  a.lse = out_ptr(lse, rows, f64, "lse");
  a.max_logprob = out_ptr(max_logprob, rows, f64, "max_logprob");
  a.argmax = data_of(argmax, rows, "argmax");
  a.logprob = out_ptr(logprob, rows, f64, "logprob");
  a.entropy = out_ptr(entropy, rows, f64, "entropy");
  a.margin = out_ptr(margin, rows, f64, "margin");
  a.collision = out_ptr(collision, rows, f64, "collision");
  a.kurtosis = out_ptr(kurtosis, rows, f64, "kurtosis");
  a.self_certainty = out_ptr(self_certainty, rows, f64, "self_certainty");
  a.topk_logprobs = out_ptr(topk_logprobs, rows * k, f64, "topk_logprobs");
  a.topk_ids = data_of(topk_ids, rows * k, "topk_ids");
  if (bool(renyi_term) != bool(fisher_rao)) throw std::invalid_argument("renyi_term/fisher_rao: give both or neither");
  a.renyi_term = renyi_term ? out_ptr(*renyi_term, rows, f64, "renyi_term") : nullptr;
  a.fisher_rao = fisher_rao ? out_ptr(*fisher_rao, rows, f64, "fisher_rao") : nullptr;
  a.num_threads = num_threads;
  nb::gil_scoped_release release;
  token_stats(a);
}


// The same kernel on raw data pointers: what flashuq.ops.token_stats calls on CPU tensors. Handing
// nanobind 14 tensors costs about 2 us each (DLPack, through Python), more than a decode-sized
// kernel; the op allocates every output itself and derives the row layout from the tensor, so only
// sizes are checked here. Internal: token_stats above is the checked entry point.
static void token_stats_ptrs_py(int dtype, uintptr_t logits, int64_t rows, int64_t V, int64_t n1, int64_t s0,
                                int64_t s1, uintptr_t tokens, double inv_temp, int k, uintptr_t lse,
                                uintptr_t max_logprob, uintptr_t argmax, uintptr_t logprob, uintptr_t entropy,
                                uintptr_t margin, uintptr_t collision, uintptr_t kurtosis, uintptr_t self_certainty,
                                uintptr_t topk_logprobs, uintptr_t topk_ids, int num_threads, uintptr_t renyi_term,
                                uintptr_t fisher_rao) {
  if (dtype < 0 || dtype > 3) throw std::invalid_argument("token_stats: bad dtype code");
  if (V < 1 || rows < 0 || n1 < 1 || s0 < 0 || s1 < 0) throw std::invalid_argument("token_stats: bad sizes");
  if (k < 0 || k > kMaxTopK || k > V) throw std::invalid_argument("token_stats: bad top-k size");
  if (bool(renyi_term) != bool(fisher_rao)) throw std::invalid_argument("renyi_term/fisher_rao: give both or neither");
  if (rows == 0) return;
  for (uintptr_t p : {logits, lse, max_logprob, argmax, logprob, entropy, margin, collision, kurtosis, self_certainty})
    if (!p) throw std::invalid_argument("token_stats: null data pointer");
  if (k > 0 && (!topk_logprobs || !topk_ids)) throw std::invalid_argument("token_stats: null top-k pointer");
  auto ptr = [](uintptr_t p) { return reinterpret_cast<void*>(p); };
  TokenStatsArgs a{};
  a.dtype = DType(dtype);
  a.logits = ptr(logits);
  a.rows = rows; a.V = V; a.n1 = n1; a.s0 = s0; a.s1 = s1;
  a.tokens = static_cast<const int64_t*>(ptr(tokens));
  a.inv_temp = inv_temp;
  a.k = k;
  a.lse = ptr(lse); a.max_logprob = ptr(max_logprob); a.argmax = static_cast<int64_t*>(ptr(argmax));
  a.logprob = ptr(logprob); a.entropy = ptr(entropy); a.margin = ptr(margin); a.collision = ptr(collision);
  a.kurtosis = ptr(kurtosis); a.self_certainty = ptr(self_certainty);
  a.topk_logprobs = ptr(topk_logprobs);
  a.topk_ids = static_cast<int64_t*>(ptr(topk_ids));
  a.renyi_term = ptr(renyi_term); a.fisher_rao = ptr(fisher_rao);
  a.num_threads = num_threads;
  nb::gil_scoped_release release;
  token_stats(a);
}

// op 0..4: masked_reduce (see ReduceOp); op kQuantileOp: masked_quantile at the float64 levels q.
constexpr int kQuantileOp = 5;

static void masked_reduce_py(Arr values, std::optional<CArrAny<const uint8_t>> mask, std::optional<Arr> weights,
                             std::optional<CArr<const int64_t, 1>> cu_seqlens, int64_t B, int64_t T, int op, Arr out,
                             int num_threads, std::optional<CArr<const double, 1>> q) {
  if (op < 0 || op > kQuantileOp) throw std::invalid_argument("masked_reduce: bad op");
  const double* qs = nullptr;
  int64_t nq = 1;
  if (op == kQuantileOp) {
    if (!q) throw std::invalid_argument("q: the quantile levels are required");
    qs = dense(*q, "q").data();
    nq = int64_t(q->size());
    for (int64_t j = 0; j < nq; ++j)
      if (!(qs[j] >= 0.0 && qs[j] <= 1.0)) throw std::invalid_argument("q: levels must be in [0, 1]");
    if (weights) throw std::invalid_argument("weights: not defined for quantiles");
  }
  // fp16 and bf16 values are read as they are by the logsumexp without weights only
  const bool lse = op == int(ReduceOp::LogSumExp) && !weights;
  const DType vt = lse ? dtype_of(values, "values") : dtype_of_f32_f64(values, "values");
  const bool f64 = vt == DType::F64;
  if (B < 0 || T < 0) throw std::invalid_argument("masked_reduce: bad sizes");
  dense(values, "values");
  out_ptr(out, B * nq, f64, "out");
  const int64_t* cu = nullptr;
  int64_t n = B * T;
  if (cu_seqlens) {
    cu = data_of(*cu_seqlens, B + 1, "cu_seqlens");
    n = int64_t(values.size());
    for (int64_t b = 0; b < B; ++b)
      if (cu[b] < 0 || cu[b] > cu[b + 1] || cu[b + 1] > n) throw std::invalid_argument("cu_seqlens: out of range");
  } else if (int64_t(values.size()) != n) {
    throw std::invalid_argument("values: expected B * T elements");
  }
  const uint8_t* m = mask ? data_of(*mask, n, "mask") : nullptr;
  const void* w = nullptr;
  if (weights) {
    if (weights->dtype() != values.dtype()) throw nb::type_error("weights: expected the values' dtype");
    if (int64_t(weights->size()) != n) throw std::invalid_argument("weights: expected the values' size");
    w = dense(*weights, "weights").data();
  }
  nb::gil_scoped_release release;
  if (op == kQuantileOp) {
    if (f64)
      masked_quantile<double>(static_cast<const double*>(values.data()), m, cu, B, T, qs, nq,
                              static_cast<double*>(out.data()), num_threads);
    else
      masked_quantile<float>(static_cast<const float*>(values.data()), m, cu, B, T, qs, nq,
                             static_cast<float*>(out.data()), num_threads);
    return;
  }
  if (vt == DType::BF16 || vt == DType::F16)
    masked_logsumexp(vt, values.data(), m, cu, B, T, static_cast<float*>(out.data()), num_threads);
  else if (f64)
    masked_reduce<double>(static_cast<const double*>(values.data()), m, static_cast<const double*>(w), cu, B, T,
                          ReduceOp(op), static_cast<double*>(out.data()), num_threads);
  else
    masked_reduce<float>(static_cast<const float*>(values.data()), m, static_cast<const float*>(w), cu, B, T,
                         ReduceOp(op), static_cast<float*>(out.data()), num_threads);
}

static void ensemble_stats_py(Arr logits, int64_t P, int64_t M, int64_t V, int64_t n1, int64_t s0, int64_t s1,
                              int64_t sm, CArr<const double, 1> lw, int64_t lw_stride, double inv_temp, Arr total,
                              Arr aleatoric,
                              Arr epistemic, Arr epkl, Arr rmi, int num_threads) {
  EnsembleStatsArgs a{};
  a.dtype = dtype_of(logits, "logits");
  if (M < 1 || sm < 0 || V < 1) throw std::invalid_argument("ensemble_stats: bad member count, stride or V");
  if (sm > 0 && M - 1 > (INT64_MAX - V) / sm) throw std::invalid_argument("ensemble_stats: member span overflows");
  // a position's M member rows span (M - 1) * sm + V elements from its start
  flashuq::check_rows_inside(logits, P, (M - 1) * sm + V, n1, s0, s1);
  if (lw_stride < 0 || (lw_stride != 0 && lw_stride != M))
    throw std::invalid_argument("lw_stride: expected 0 (one weight vector) or M (one per position)");
  const bool f64 = a.dtype == DType::F64;
  a.logits = logits.data();
  a.P = P; a.M = M; a.V = V; a.n1 = n1; a.s0 = s0; a.s1 = s1; a.sm = sm;
  a.lw = data_of(lw, lw_stride == 0 ? M : P * M, "lw");
  a.lw_stride = lw_stride;
  a.inv_temp = inv_temp;
  a.total = out_ptr(total, P, f64, "total");
  a.aleatoric = out_ptr(aleatoric, P, f64, "aleatoric");
  a.epistemic = out_ptr(epistemic, P, f64, "epistemic");
  a.epkl = out_ptr(epkl, P, f64, "epkl");
  a.rmi = out_ptr(rmi, P, f64, "rmi");
  a.num_threads = num_threads;
  nb::gil_scoped_release release;
  ensemble_stats(a);
}

static int64_t count_inversions_py(CArr<const int64_t, 1> a) {
  const int64_t* p = dense(a, "a").data();
  const int64_t n = int64_t(a.size());
  nb::gil_scoped_release release;
  return count_inversions(p, n);
}

// The CPU's vectorisable fp64 log (flashuq/cpu_math.h), elementwise, for the tests' ulp check.
static void log_f64_py(CArrAny<const double> x, Arr out) {
  double* o = static_cast<double*>(out_ptr(out, int64_t(x.size()), true, "out"));
  const double* p = dense(x, "x").data();
  for (size_t i = 0; i < x.size(); ++i) o[i] = flashuq::cpu::log_f64(p[i]);
}

// The CPU's vectorisable fp64 exp (flashuq/cpu_math.h), elementwise, for the tests' ulp check.
static void exp_f64_py(CArrAny<const double> x, Arr out) {
  double* o = static_cast<double*>(out_ptr(out, int64_t(x.size()), true, "out"));
  const double* p = dense(x, "x").data();
  for (size_t i = 0; i < x.size(); ++i) o[i] = flashuq::cpu::exp_f64(p[i]);
}

// The CPU's vectorisable fp32 log (flashuq/cpu_math.h), elementwise, for the tests' ulp check.
static void log_f32_py(CArrAny<const float> x, Arr out) {
  float* o = static_cast<float*>(out_ptr(out, int64_t(x.size()), false, "out"));
  const float* p = dense(x, "x").data();
  for (size_t i = 0; i < x.size(); ++i) o[i] = flashuq::cpu::log_f32(p[i]);
}

// The ensemble kernel's fp32 e^x - 1 and e^x (flashuq/cpu_math.h), elementwise, for the tests' error bound.
static void expm1_exp_f32_py(CArrAny<const float> x, Arr em1, Arr e) {
  float* o1 = static_cast<float*>(out_ptr(em1, int64_t(x.size()), false, "em1"));
  float* o2 = static_cast<float*>(out_ptr(e, int64_t(x.size()), false, "e"));
  const float* p = dense(x, "x").data();
  for (size_t i = 0; i < x.size(); ++i) {
    const flashuq::cpu::Expm1ExpF32 r = flashuq::cpu::expm1_exp_f32(p[i]);
    o1[i] = r.em1;
    o2[i] = r.e;
  }
}

// The token-statistics kernel's fp32 exp (the variant in use), elementwise, for the tests' error bound.
static void exp_nonpos_f32_py(CArrAny<const float> x, Arr out) {
  float* o = static_cast<float*>(out_ptr(out, int64_t(x.size()), false, "out"));
  exp_nonpos_f32(dense(x, "x").data(), o, int64_t(x.size()));
}

static void isotonic_pav_py(CArr<const double, 1> y, CArr<const double, 1> w, CArr<double, 1> out) {
  if (w.size() != y.size() || out.size() != y.size()) throw std::invalid_argument("isotonic_pav: sizes differ");
  const double* wp = dense(w, "w").data();
  for (size_t i = 0; i < w.size(); ++i)
    if (!(wp[i] > 0.0)) throw std::invalid_argument("isotonic_pav: weights must be positive");
  const double* yp = dense(y, "y").data();
  double* op = dense(out, "out").data();
  const int64_t n = int64_t(y.size());
  nb::gil_scoped_release release;
  isotonic_pav(yp, wp, n, op);
}

static void argsort_f64_py(CArr<const double, 1> x, CArr<int64_t, 1> out) {
  if (out.size() != x.size()) throw std::invalid_argument("argsort_f64: out needs x's size");
  const double* xp = dense(x, "x").data();
  int64_t* op = dense(out, "out").data();
  const int64_t n = int64_t(x.size());
  nb::gil_scoped_release release;
  argsort_f64(xp, n, op);
}

static void reliability_sums_py(CArr<const double, 1> u, CArr<const double, 1> correct, double scale, double offset,
                                bool scaled, CArr<const double, 1> edges, CArr<int64_t, 1> count,
                                CArr<double, 1> sum_conf, CArr<double, 1> sum_correct) {
  if (correct.size() != u.size()) throw std::invalid_argument("reliability_sums: u and correct differ in size");
  if (edges.size() < 2) throw std::invalid_argument("reliability_sums: edges needs at least 2 entries");
  const size_t bins = edges.size() - 1;
  if (bins > size_t(1) << 30) throw std::invalid_argument("reliability_sums: too many bins");
  if (count.size() != bins || sum_conf.size() != bins || sum_correct.size() != bins)
    throw std::invalid_argument("reliability_sums: count, sum_conf and sum_correct need len(edges) - 1 entries");
  const double* e = dense(edges, "edges").data();
  for (size_t b = 0; b < bins; ++b)
    if (!(e[b] < e[b + 1])) throw std::invalid_argument("reliability_sums: edges must increase");
  const double* up = dense(u, "u").data();
  const double* cp = dense(correct, "correct").data();
  int64_t* np_ = dense(count, "count").data();
  double* sc = dense(sum_conf, "sum_conf").data();
  double* st = dense(sum_correct, "sum_correct").data();
  const int64_t n = int64_t(u.size());
  nb::gil_scoped_release release;
  reliability_sums(up, cp, n, scale, offset, scaled, e, int(bins), np_, sc, st);
}

static void graph_py(int op, Arr W, CArr<const int32_t, 1> counts, double threshold, double t, Arr out0, std::optional<Arr> out1,
                     std::optional<Arr> out2, int num_threads, bool lanes, std::optional<Arr> C) {
  GraphArgs a{};
  if (op < 0 || op > 3) throw std::invalid_argument("graph: unknown op");
  a.dtype = dtype_of_f32_f64(W, "W");
  if (W.ndim() != 3 || W.shape(1) != W.shape(2)) throw std::invalid_argument("W: expected [Q, K, K]");
  const int64_t Q = int64_t(W.shape(0)), K = int64_t(W.shape(1));
  if (K > 4096) throw std::invalid_argument("W: K above 4096");
  dense(W, "W");
  if ((op == 3) != bool(C)) throw std::invalid_argument("C: given exactly when op is 3 (KLE from E and C)");
  if (C) {
    if (C->dtype() != W.dtype()) throw nb::type_error("C: expected W's dtype");
    if (C->ndim() != 3 || C->shape(0) != W.shape(0) || C->shape(1) != W.shape(1) || C->shape(2) != W.shape(2))
      throw std::invalid_argument("C: expected W's shape");
    a.C = dense(*C, "C").data();
  }
  const int32_t* c = data_of(counts, Q, "counts");
  for (int64_t q = 0; q < Q; ++q)
    if (c[q] < 0 || c[q] > K) throw std::invalid_argument("counts: entries must lie in [0, K]");
  const bool f64 = a.dtype == DType::F64;
  const bool vec = op == 0 ? bool(out1) : op == 1 ? bool(out1) : false;
  a.out0 = out_ptr(out0, op == 0 ? Q * K : Q, f64, "out0");
  a.out1 = vec ? out_ptr(*out1, op == 0 ? Q * K * K : Q, f64, "out1") : nullptr;
  a.out2 = nullptr;
  if (op == 1 && vec && out2) a.out2 = out_ptr(*out2, Q * K, f64, "out2");  // the per-sample norms: optional
  a.op = op; a.W = W.data(); a.Q = Q; a.K = K; a.counts = c;
  a.threshold = threshold; a.t = t; a.num_threads = num_threads; a.lanes = lanes;
  nb::gil_scoped_release release;
  graph(a);
}

static int64_t inv_entropy_py(Arr sx, Arr sy, std::optional<CArr<const int64_t, 3>> keep, int64_t N, bool paper, bool all, Arr out,
                           Arr p_x, Arr p_y, int num_threads) {
  InvEntropyArgs a{};
  a.dtype = dtype_of_f32_f64(sy, "sy");
  if (sx.dtype() != sy.dtype()) throw nb::type_error("sx: expected the dtype of sy");
  if (sx.ndim() != 3 || sy.ndim() != 3 || sx.shape(1) != sx.shape(2) || sy.shape(1) != sy.shape(2) ||
      sx.shape(0) != sy.shape(0))
    throw std::invalid_argument("sx, sy: expected [Q, Mx, Mx] and [Q, M, M]");
  dense(sx, "sx");
  dense(sy, "sy");
  const int64_t Q = int64_t(sy.shape(0)), M = int64_t(sy.shape(1)), Mx = int64_t(sx.shape(1));
  if (N < 1 || N > flashuq::kInvEntropyMaxN || M % N != 0 || (Mx != N && Mx != M))
    throw std::invalid_argument("N: must be in [1, 64], divide M, and Mx must be N or M");
  int64_t S = 1;
  a.keep = nullptr;
  if (keep) {
    if (int64_t(keep->shape(0)) != Q || int64_t(keep->shape(2)) != N)
      throw std::invalid_argument("keep: expected [Q, S, N]");
    S = int64_t(keep->shape(1));
    const int64_t* k = dense(*keep, "keep").data();
    for (size_t i = 0; i < keep->size(); ++i)
      if (k[i] < 0 || k[i] >= M) throw std::invalid_argument("keep: indices must lie in [0, M)");
    a.keep = k;
  } else if (M != N) {
    throw std::invalid_argument("keep: required when sy is larger than N x N");
  }
  if (S < 1) throw std::invalid_argument("keep: at least one draw");
  const bool f64 = a.dtype == DType::F64;
  a.out = out_ptr(out, 5 * Q, f64, "out");
  a.p_x = out_ptr(p_x, Q * N, f64, "p_x");
  a.p_y = out_ptr(p_y, Q * N, f64, "p_y");
  a.sx = sx.data(); a.sy = sy.data();
  a.Q = Q; a.Mx = Mx; a.M = M; a.S = S; a.N = N; a.paper = paper; a.all = all; a.num_threads = num_threads;
  nb::gil_scoped_release release;
  return inv_entropy(a);
}

// ---- NumSemSets (flashuq.methods.num_sem_sets) -------------------------------------------------------

static void num_sem_sets_py(Arr E, Arr C, CArr<const bool, 2> valid, Arr out, int num_threads) {
  SemSetsArgs a{};
  a.dtype = dtype_of_f32_f64(E, "E");
  if (C.dtype() != E.dtype()) throw nb::type_error("C: expected the dtype of E");
  if (E.ndim() != 3 || E.shape(1) != E.shape(2)) throw std::invalid_argument("E: expected [Q, K, K]");
  dense(E, "E");
  if (C.ndim() != 3 || C.shape(0) != E.shape(0) || C.shape(1) != E.shape(1) || C.shape(2) != E.shape(2))
    throw std::invalid_argument("C: expected E's shape");
  dense(C, "C");
  const int64_t Q = int64_t(E.shape(0)), K = int64_t(E.shape(1));
  if (K > (int64_t(1) << 30)) throw std::invalid_argument("E: K too large");
  if (int64_t(valid.shape(0)) != Q || int64_t(valid.shape(1)) != K)
    throw std::invalid_argument("valid: expected [Q, K]");
  a.out = out_ptr(out, Q, a.dtype == DType::F64, "out");
  a.E = E.data(); a.C = C.data(); a.valid = reinterpret_cast<const uint8_t*>(dense(valid, "valid").data());
  a.Q = Q; a.K = K; a.num_threads = num_threads;
  nb::gil_scoped_release release;
  num_sem_sets(a);
}

// ---- UQAC (flashuq.ops.uqac) -------------------------------------------------------------------------

static void uqac_reduce_py(Arr attn, int n_heads, bool mean, CArr<const double, 1> calibration, Arr out,
                           CArr<int64_t, 3> selected, int num_threads) {
  UqacReduceArgs a{};
  a.dtype = dtype_of(attn, "attn");
  if (attn.ndim() != 5) throw std::invalid_argument("attn: expected [B, L, H, R, Ntok]");
  a.B = int64_t(attn.shape(0)); a.L = int64_t(attn.shape(1)); a.H = int64_t(attn.shape(2));
  a.R = int64_t(attn.shape(3)); a.Ntok = int64_t(attn.shape(4));
  if (a.Ntok < a.R) throw std::invalid_argument("attn: Ntok must be >= R");
  const int64_t LH = a.L * a.H;
  if (n_heads < 1 || n_heads > LH) throw std::invalid_argument("n_heads: must be in [1, L*H]");
  for (size_t d = 0; d < 5; ++d)
    if (attn.stride(d) < 0) throw std::invalid_argument("attn: negative strides are not supported");
  if (a.Ntok > 1 && attn.stride(4) != 1) throw std::invalid_argument("attn: the last axis must have stride 1");
  if (int64_t(calibration.shape(0)) != kUqacCalibration)
    throw std::invalid_argument("calibration: expected " + std::to_string(kUqacCalibration) + " factors");
  if (int64_t(selected.shape(0)) != a.B || int64_t(selected.shape(1)) != a.R || int64_t(selected.shape(2)) != n_heads)
    throw std::invalid_argument("selected: expected [B, R, n_heads]");
  a.sb = attn.stride(0); a.sl = attn.stride(1); a.sh = attn.stride(2); a.sr = attn.stride(3);
  a.attn = attn.data();
  a.calibration = calibration.data();
  a.n_heads = n_heads; a.mean = mean;
  a.out = out_ptr(out, a.B * a.R * a.Ntok, a.dtype == DType::F64, "out");
  a.selected = selected.data();
  a.num_threads = num_threads;
  if (a.B * a.R * a.Ntok == 0) return;
  nb::gil_scoped_release release;
  uqac_reduce(a);
}

static void uqac_backtrack_py(Arr attn, CArr<const uint8_t, 2> is_stop, CArr<const int64_t, 2> ans,
                              CArr<const int64_t, 1> R, CArr<const int64_t, 1> Ntok, CArr<const int64_t, 1> A,
                              CArr<const int64_t, 1> min_len, int buffer, double threshold, int64_t max_steps,
                              CArr<int64_t, 2> chain, Arr scores, CArr<int64_t, 1> lengths, int num_threads) {
  UqacBacktrackArgs a{};
  a.f64 = dtype_of_f32_f64(attn, "attn") == DType::F64;
  if (attn.ndim() != 3) throw std::invalid_argument("attn: expected [B, R, N]");
  dense(attn, "attn");
  a.B = int64_t(attn.shape(0)); a.Rmax = int64_t(attn.shape(1)); a.Nmax = int64_t(attn.shape(2));
  if (int64_t(is_stop.shape(0)) != a.B || int64_t(is_stop.shape(1)) != a.Nmax)
    throw std::invalid_argument("is_stop: expected [B, N]");
  if (int64_t(ans.shape(0)) != a.B) throw std::invalid_argument("ans: expected [B, Amax]");
  a.Amax = int64_t(ans.shape(1));
  a.R = data_of(R, a.B, "R"); a.Ntok = data_of(Ntok, a.B, "Ntok"); a.A = data_of(A, a.B, "A");
  a.min_len = data_of(min_len, a.B, "min_len");
  a.ans = dense(ans, "ans").data();
  for (int64_t b = 0; b < a.B; ++b) {
    if (a.R[b] < 0 || a.R[b] > a.Rmax || a.Ntok[b] < a.R[b] || a.Ntok[b] > a.Nmax || a.A[b] < 0 || a.A[b] > a.Amax)
      throw std::invalid_argument("uqac_backtrack: sequence lengths out of range");
    for (int64_t i = 0; i < a.A[b]; ++i) {
      const int64_t v = a.ans[b * a.Amax + i];
      if (v < -1 || v > a.R[b] - 2) throw std::invalid_argument("ans: answer sources must lie in [-1, R - 2]");
    }
  }
  if (buffer < 0 || max_steps < 0) throw std::invalid_argument("uqac_backtrack: buffer and max_steps must be >= 0");
  if (int64_t(chain.shape(0)) != a.B) throw std::invalid_argument("chain: expected [B, C]");
  a.C = int64_t(chain.shape(1));
  for (int64_t b = 0; b < a.B; ++b) {  // A + at most one pick per key and at most buffer per round
    const int64_t n = a.Ntok[b];
    const int64_t picks =
        buffer == 0 ? 0 : (max_steps > (n + buffer - 1) / buffer ? n : std::min(n, max_steps * buffer));
    if (a.C < a.A[b] + picks) throw std::invalid_argument("chain: capacity C too small");
  }
  a.scores = out_ptr(scores, a.B * a.C, a.f64, "scores");
  a.lengths = data_of(lengths, a.B, "lengths");
  a.chain = dense(chain, "chain").data();
  a.is_stop = dense(is_stop, "is_stop").data();
  a.attn = attn.data();
  a.buffer = buffer; a.threshold = threshold; a.max_steps = max_steps; a.num_threads = num_threads;
  nb::gil_scoped_release release;
  uqac_backtrack(a);
}

static void uqac_similarity_py(Arr h, CArr<const int64_t, 2> chain, CArr<const int64_t, 1> lengths,
                               CArr<const int64_t, 2> ans, CArr<const int64_t, 1> A, CArr<const int64_t, 1> R,
                               int64_t k, double threshold, CArr<int64_t, 2> keep, CArr<int64_t, 1> keep_len,
                               int num_threads) {
  UqacSimilarityArgs a{};
  a.dtype = dtype_of(h, "h");
  if (h.ndim() != 3) throw std::invalid_argument("h: expected [B, R, D]");
  dense(h, "h");
  a.B = int64_t(h.shape(0)); a.Rmax = int64_t(h.shape(1)); a.D = int64_t(h.shape(2));
  if (int64_t(chain.shape(0)) != a.B) throw std::invalid_argument("chain: expected [B, C]");
  a.C = int64_t(chain.shape(1));
  if (int64_t(ans.shape(0)) != a.B) throw std::invalid_argument("ans: expected [B, Amax]");
  a.Amax = int64_t(ans.shape(1));
  a.lengths = data_of(lengths, a.B, "lengths"); a.A = data_of(A, a.B, "A"); a.R = data_of(R, a.B, "R");
  a.chain = dense(chain, "chain").data();
  a.ans = dense(ans, "ans").data();
  for (int64_t b = 0; b < a.B; ++b) {
    if (a.R[b] < 0 || a.R[b] > a.Rmax || a.A[b] < 0 || a.A[b] > a.Amax || a.lengths[b] < 0 || a.lengths[b] > a.C)
      throw std::invalid_argument("uqac_similarity: sequence lengths out of range");
    for (int64_t i = 0; i < a.A[b]; ++i) {
      const int64_t v = a.ans[b * a.Amax + i];
      if (v < -1 || v > a.R[b] - 2) throw std::invalid_argument("ans: answer sources must lie in [-1, R - 2]");
    }
  }
  if (k < 0) throw std::invalid_argument("k: must be >= 0");
  if (int64_t(keep.shape(0)) != a.B || int64_t(keep.shape(1)) < std::min(k, a.C))
    throw std::invalid_argument("keep: expected [B, K], K >= min(k, C)");
  a.K = int64_t(keep.shape(1));
  a.keep = dense(keep, "keep").data();
  a.keep_len = data_of(keep_len, a.B, "keep_len");
  a.h = h.data();
  a.k = k; a.threshold = threshold; a.num_threads = num_threads;
  nb::gil_scoped_release release;
  uqac_similarity(a);
}

NB_MODULE(_C, m) {
  m.doc() = "flashuq CPU kernels (C++17, OpenMP)";
  m.def("_token_stats_ptrs", &token_stats_ptrs_py, nb::arg("dtype"), nb::arg("logits"), nb::arg("rows"), nb::arg("V"),
        nb::arg("n1"), nb::arg("s0"), nb::arg("s1"), nb::arg("tokens"), nb::arg("inv_temp"), nb::arg("k"),
        nb::arg("lse"), nb::arg("max_logprob"), nb::arg("argmax"), nb::arg("logprob"), nb::arg("entropy"),
        nb::arg("margin"), nb::arg("collision"), nb::arg("kurtosis"), nb::arg("self_certainty"),
        nb::arg("topk_logprobs"), nb::arg("topk_ids"), nb::arg("num_threads"), nb::arg("renyi_term"),
        nb::arg("fisher_rao"),
        "token_stats on data pointers (internal: flashuq.ops.token_stats lays out and allocates every array).");
  m.def("token_stats", &token_stats_py, nb::arg("logits").noconvert(), nb::arg("rows"), nb::arg("V"),
        nb::arg("n1"), nb::arg("s0"), nb::arg("s1"), nb::arg("tokens").noconvert().none(),
        nb::arg("inv_temp"), nb::arg("k"), nb::arg("lse").noconvert(), nb::arg("max_logprob").noconvert(),
        nb::arg("argmax").noconvert(), nb::arg("logprob").noconvert(), nb::arg("entropy").noconvert(),
        nb::arg("margin").noconvert(), nb::arg("collision").noconvert(), nb::arg("kurtosis").noconvert(),
        nb::arg("self_certainty").noconvert(), nb::arg("topk_logprobs").noconvert(), nb::arg("topk_ids").noconvert(), nb::arg("num_threads"),
        nb::arg("renyi_term").noconvert().none() = nb::none(), nb::arg("fisher_rao").noconvert().none() = nb::none(),
        "Token statistics of rows of logits into preallocated outputs (see flashuq.token_stats).");
  m.def("masked_reduce", &masked_reduce_py, nb::arg("values").noconvert(), nb::arg("mask").noconvert().none(),
        nb::arg("weights").noconvert().none(), nb::arg("cu_seqlens").noconvert().none(), nb::arg("B"), nb::arg("T"),
        nb::arg("op"), nb::arg("out").noconvert(), nb::arg("num_threads"), nb::arg("q").noconvert().none() = nb::none(),
        "Masked / ragged reduction (op 0-4) or quantiles (op 5, levels q) of sequences into a preallocated "
        "out (see flashuq.masked_reduce, flashuq.masked_quantile).");
  m.def("ensemble_stats", &ensemble_stats_py, nb::arg("logits").noconvert(), nb::arg("P"), nb::arg("M"),
        nb::arg("V"), nb::arg("n1"), nb::arg("s0"), nb::arg("s1"), nb::arg("sm"), nb::arg("lw").noconvert(),
        nb::arg("lw_stride"), nb::arg("inv_temp"), nb::arg("total").noconvert(), nb::arg("aleatoric").noconvert(),
        nb::arg("epistemic").noconvert(), nb::arg("epkl").noconvert(), nb::arg("rmi").noconvert(),
        nb::arg("num_threads"),
        "Ensemble decomposition of M member distributions per position into preallocated outputs "
        "(see flashuq.ensemble_stats).");
  m.def("count_inversions", &count_inversions_py, nb::arg("a").noconvert(),
        "Pairs i < j with a[i] > a[j] of an int64 array, by merge sort (flashuq.metrics.kendall_tau).");
  m.def("num_sem_sets", &num_sem_sets_py, nb::arg("E").noconvert(), nb::arg("C").noconvert(),
        nb::arg("valid").noconvert(), nb::arg("out").noconvert(), nb::arg("num_threads"),
        "NumSemSets per question: components of the E > C-both-ways graph over the valid responses "
        "(flashuq.methods.num_sem_sets).");
  m.def("_exp_nonpos_f32", &exp_nonpos_f32_py, nb::arg("x").noconvert(), nb::arg("out").noconvert(),
        "The token-statistics kernel's fp32 e^x for x <= 0 (the variant in use), elementwise (tests).");
  m.def("_expm1_exp_f32", &expm1_exp_f32_py, nb::arg("x").noconvert(), nb::arg("em1").noconvert(),
        nb::arg("e").noconvert(), "e^x - 1 and e^x for x <= 88 by the ensemble kernel's fp32 expm1 (tests).");
  m.def("_log_f32", &log_f32_py, nb::arg("x").noconvert(), nb::arg("out").noconvert(),
        "ln x by the CPU kernels' branch-free fp32 log (for tests: within 1 ulp of the correctly rounded log).");
  m.def("_log_f64", &log_f64_py, nb::arg("x").noconvert(), nb::arg("out").noconvert(),
        "ln x by the CPU kernels' branch-free fp64 log (for tests: within 1 ulp of std::log).");
  m.def("_exp_f64", &exp_f64_py, nb::arg("x").noconvert(), nb::arg("out").noconvert(),
        "e^x by the CPU kernels' branch-free fp64 exp (for tests: within 2 ulp of std::exp).");
  m.def("isotonic_pav", &isotonic_pav_py, nb::arg("y").noconvert(), nb::arg("w").noconvert(),
        nb::arg("out").noconvert(), "Pool-adjacent-violators non-decreasing fit of y with weights w into out.");
  m.def("argsort_f64", &argsort_f64_py, nb::arg("x").noconvert(), nb::arg("out").noconvert(),
        "Stable ascending order of a float64 array into out (int64), by radix sort: equal values (-0 and +0 "
        "among them) keep their input order, NaN last (flashuq.metrics' ranks).");
  m.def("reliability_sums", &reliability_sums_py, nb::arg("u").noconvert(), nb::arg("correct").noconvert(),
        nb::arg("scale"), nb::arg("offset"), nb::arg("scaled"), nb::arg("edges").noconvert(),
        nb::arg("count").noconvert(), nb::arg("sum_conf").noconvert(), nb::arg("sum_correct").noconvert(),
        "Per-bin count, confidence sum and correct sum of conf = -u (* scale + offset when scaled) over "
        "increasing edges, in index order (flashuq.metrics.reliability_bins); the caller zeroes the outputs.");
  m.def("graph", &graph_py, nb::arg("op"), nb::arg("W").noconvert(), nb::arg("counts").noconvert(),
        nb::arg("threshold"), nb::arg("t"), nb::arg("out0").noconvert(), nb::arg("out1").noconvert().none(),
        nb::arg("out2").noconvert().none(), nb::arg("num_threads"), nb::arg("lanes") = true,
        nb::arg("C").noconvert().none() = nb::none(),
        "Per-question spectra of [Q, K, K] similarity matrices (flashuq.ops.graph); op 3 reads KLE's "
        "entailment E as W and its contradiction C. lanes=False runs every question on the scalar path, "
        "which the SIMD path matches bit for bit (for tests).");
  m.def("inv_entropy", &inv_entropy_py, nb::arg("sx").noconvert(), nb::arg("sy").noconvert(),
        nb::arg("keep").noconvert().none(), nb::arg("N"), nb::arg("paper"), nb::arg("all"), nb::arg("out").noconvert(),
        nb::arg("p_x").noconvert(), nb::arg("p_y").noconvert(), nb::arg("num_threads"),
        "Inv-Entropy measures per question, averaged over the keep draws (flashuq.methods.inv_entropy); "
        "returns the number of negative similarities read.");
  m.def("uqac_reduce", &uqac_reduce_py, nb::arg("attn").noconvert(), nb::arg("n_heads"), nb::arg("mean"),
        nb::arg("calibration").noconvert(), nb::arg("out").noconvert(), nb::arg("selected").noconvert(),
        nb::arg("num_threads"),
        "UQAC steps 1-2: [B, L, H, R, Ntok] attention -> [B, R, Ntok] reduced rows and the [B, R, n_heads] chosen "
        "(layer, head) rows, with the 10 recency calibration factors given (flashuq.ops.uqac).");
  m.def("uqac_backtrack", &uqac_backtrack_py, nb::arg("attn").noconvert(), nb::arg("is_stop").noconvert(),
        nb::arg("ans").noconvert(), nb::arg("R").noconvert(), nb::arg("Ntok").noconvert(), nb::arg("A").noconvert(),
        nb::arg("min_len").noconvert(), nb::arg("buffer"), nb::arg("threshold"), nb::arg("max_steps"),
        nb::arg("chain").noconvert(), nb::arg("scores").noconvert(), nb::arg("lengths").noconvert(),
        nb::arg("num_threads"), "UQAC step 3: attention chains of B padded sequences (flashuq.ops.uqac).");
  m.def("uqac_similarity", &uqac_similarity_py, nb::arg("h").noconvert(), nb::arg("chain").noconvert(),
        nb::arg("lengths").noconvert(), nb::arg("ans").noconvert(), nb::arg("A").noconvert(),
        nb::arg("R").noconvert(), nb::arg("k"), nb::arg("threshold"), nb::arg("keep").noconvert(),
        nb::arg("keep_len").noconvert(), nb::arg("num_threads"),
        "UQAC step 4: chain members kept by similarity to the answer (flashuq.ops.uqac).");
  m.def("isa", []() { return std::string(isa()); },
        "The CPU variant in use: baseline, avx2+fma or avx512 (token_stats and the graph spectra have all three; "
        "Inv-Entropy runs avx2+fma at the avx512 level).");
  m.def("limit_isa", [](int level) { return std::string(limit_isa(level)); }, nb::arg("level"),
        "Run no CPU variant wider than level (0 baseline, 1 AVX2, 2 AVX-512, the default), for every op; returns "
        "the variant now in use. For tests and benchmarks that compare the variants.");
  m.attr("MAX_TOPK") = kMaxTopK;
  m.attr("CHUNK") = kChunk;
}
