// flashuq._cuda: thin nanobind bindings of the CUDA C++ kernels. Python validates; the stream
// comes in as an integer (torch.cuda.current_stream().cuda_stream), so launches are graph safe.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "flashuq/ndarray_checks.h"
#include "graph.cuh"
#include "token_stats.cuh"
#include "uqac.cuh"

namespace nb = nanobind;
using namespace flashuq::cuda;
using Arr = nb::ndarray<nb::device::cuda>;

static DType dtype_of(const Arr& x) {
  const nb::dlpack::dtype dt = x.dtype();
  if (dt == nb::dtype<float>()) return DType::F32;
  if (dt == nb::dtype<double>()) return DType::F64;
  if (dt.code == uint8_t(nb::dlpack::dtype_code::Float) && dt.bits == 16) return DType::F16;
  if (dt.code == uint8_t(nb::dlpack::dtype_code::Bfloat) && dt.bits == 16) return DType::BF16;
  throw nb::type_error("logits: expected float32, float64, float16 or bfloat16");
}

static void token_stats_py(Arr logits, int64_t rows, int64_t V, int64_t n1, int64_t s0, int64_t s1,
                           std::optional<Arr> tokens, double inv_temp, Arr lse, Arr max_logprob, Arr logprob,
                           Arr entropy, Arr margin, Arr collision, Arr kurtosis, Arr self_certainty, Arr argmax,
                           uintptr_t stream, std::optional<Arr> renyi_term, std::optional<Arr> fisher_rao) {
  TokenStatsArgs a{};
  a.dtype = dtype_of(logits);
  flashuq::check_rows_inside(logits, rows, V, n1, s0, s1);
  const auto want = a.dtype == DType::F64 ? nb::dtype<double>() : nb::dtype<float>();
  Arr* outs[8] = {&lse, &max_logprob, &logprob, &entropy, &margin, &collision, &kurtosis, &self_certainty};
  for (int j = 0; j < 8; ++j) {
    if (outs[j]->dtype() != want || int64_t(outs[j]->size()) != rows || outs[j]->device_id() != logits.device_id() ||
        !flashuq::is_dense(*outs[j]))
      throw std::invalid_argument("token_stats: output of wrong dtype or size");
    a.out[j] = outs[j]->data();
  }
  if (argmax.dtype() != nb::dtype<int64_t>() || int64_t(argmax.size()) != rows ||
      argmax.device_id() != logits.device_id() || !flashuq::is_dense(argmax))
    throw std::invalid_argument("argmax: expected int64 [rows]");
  a.argmax = static_cast<int64_t*>(argmax.data());
  if (bool(renyi_term) != bool(fisher_rao)) throw std::invalid_argument("renyi_term/fisher_rao: give both or neither");
  a.renyi_term = a.fisher_rao = nullptr;
  if (renyi_term) {
    for (Arr* o : {&*renyi_term, &*fisher_rao})
      if (o->dtype() != want || int64_t(o->size()) != rows || o->device_id() != logits.device_id() ||
          !flashuq::is_dense(*o))
        throw std::invalid_argument("renyi_term/fisher_rao: output of wrong dtype or size");
    a.renyi_term = renyi_term->data();
    a.fisher_rao = fisher_rao->data();
  }
  a.tokens = nullptr;
  if (tokens) {
    if (tokens->dtype() != nb::dtype<int64_t>() || int64_t(tokens->size()) != rows ||
        tokens->device_id() != logits.device_id() || !flashuq::is_dense(*tokens))
      throw std::invalid_argument("tokens: expected int64 [rows]");
    a.tokens = static_cast<const int64_t*>(tokens->data());
  }
  a.logits = logits.data();
  a.rows = rows; a.V = V; a.n1 = n1; a.s0 = s0; a.s1 = s1;
  a.inv_temp = inv_temp;
  int err;
  {
    nb::gil_scoped_release release;
    err = token_stats(a, stream);
  }
  if (err != 0) throw std::runtime_error(std::string("flashuq._cuda.token_stats: ") +
                                         cudaGetErrorString(cudaError_t(err)));
}

static void graph_py(int op, Arr W, Arr counts, double threshold, double t, Arr out0, std::optional<Arr> out1,
                     std::optional<Arr> out2, uintptr_t stream) {
  GraphArgs a{};
  if (op < 0 || op > 2) throw std::invalid_argument("graph: unknown op");
  if (W.dtype() == nb::dtype<float>()) a.f64 = false;
  else if (W.dtype() == nb::dtype<double>()) a.f64 = true;
  else throw nb::type_error("W: expected float32 or float64");
  if (W.ndim() != 3 || W.shape(1) != W.shape(2)) throw std::invalid_argument("W: expected [Q, K, K]");
  const int64_t Q = int64_t(W.shape(0)), K = int64_t(W.shape(1));
  if (K < 1 || K > kGraphMaxK) throw std::invalid_argument("W: K must be in [1, 64] on CUDA");
  if (!flashuq::is_dense(W)) throw std::invalid_argument("W: expected a contiguous array");
  // the counts live on the device: Python guarantees 0 <= counts <= K (sum of a mask)
  if (counts.dtype() != nb::dtype<int32_t>() || counts.ndim() != 1 || int64_t(counts.size()) != Q ||
      !flashuq::is_dense(counts) || counts.device_id() != W.device_id())
    throw std::invalid_argument("counts: expected contiguous int32 [Q] on W's device");
  auto out = [&](Arr& o, int64_t size, const char* name) {
    const bool ok = a.f64 ? o.dtype() == nb::dtype<double>() : o.dtype() == nb::dtype<float>();
    if (!ok || int64_t(o.size()) != size || o.device_id() != W.device_id() || !flashuq::is_dense(o))
      throw std::invalid_argument(std::string(name) + ": wrong dtype, size or device, or not contiguous");
    return o.data();
  };
  const bool vec = op != 2 && bool(out1);
  a.out0 = out(out0, op == 0 ? Q * K : Q, "out0");
  a.out1 = vec ? out(*out1, op == 0 ? Q * K * K : Q, "out1") : nullptr;
  a.out2 = nullptr;
  if (op == 1 && vec) {
    if (!out2) throw std::invalid_argument("out2: the per-sample eccentricity output is required");
    a.out2 = out(*out2, Q * K, "out2");
  }
  a.op = op; a.W = W.data(); a.Q = Q; a.K = K; a.counts = static_cast<const int32_t*>(counts.data());
  a.threshold = threshold; a.t = t;
  int err;
  {
    nb::gil_scoped_release release;
    err = graph(a, stream);
  }
  if (err != 0) throw std::runtime_error(std::string("flashuq._cuda.graph: ") + cudaGetErrorString(cudaError_t(err)));
}

// ---- UQAC (flashuq.ops.uqac): shapes, dtypes and devices here; values live on the device and are
// checked by the kernels (out-of-range sequences get length -1) ----------------------------------

static void check_i64(const Arr& x, int64_t n, int dev, const char* name) {
  if (x.dtype() != nb::dtype<int64_t>() || int64_t(x.size()) != n || !flashuq::is_dense(x) || x.device_id() != dev)
    throw std::invalid_argument(std::string(name) + ": expected contiguous int64 of size " + std::to_string(n) +
                                " on the attention's device");
}

static void check_i64_2d(const Arr& x, int64_t B, int dev, const char* name) {
  if (x.dtype() != nb::dtype<int64_t>() || x.ndim() != 2 || int64_t(x.shape(0)) != B || !flashuq::is_dense(x) ||
      x.device_id() != dev)
    throw std::invalid_argument(std::string(name) + ": expected contiguous int64 [B, n] on the attention's device");
}

static void uqac_backtrack_py(Arr attn, Arr is_stop, Arr ans, Arr R, Arr Ntok, Arr A, Arr min_len, int buffer,
                              double threshold, int64_t max_steps, Arr chain, Arr scores, Arr lengths, Arr ws,
                              uintptr_t stream) {
  UqacBacktrackArgs a{};
  if (attn.dtype() == nb::dtype<float>()) a.f64 = false;
  else if (attn.dtype() == nb::dtype<double>()) a.f64 = true;
  else throw nb::type_error("attn: expected float32 or float64");
  if (attn.ndim() != 3 || !flashuq::is_dense(attn)) throw std::invalid_argument("attn: expected contiguous [B, R, N]");
  const int dev = attn.device_id();
  a.B = int64_t(attn.shape(0)); a.Rmax = int64_t(attn.shape(1)); a.Nmax = int64_t(attn.shape(2));
  if (is_stop.dtype() != nb::dtype<uint8_t>() || is_stop.ndim() != 2 || int64_t(is_stop.shape(0)) != a.B ||
      int64_t(is_stop.shape(1)) != a.Nmax || !flashuq::is_dense(is_stop) || is_stop.device_id() != dev)
    throw std::invalid_argument("is_stop: expected contiguous uint8 [B, N] on the attention's device");
  check_i64_2d(ans, a.B, dev, "ans");
  a.Amax = int64_t(ans.shape(1));
  check_i64(R, a.B, dev, "R"); check_i64(Ntok, a.B, dev, "Ntok"); check_i64(A, a.B, dev, "A");
  check_i64(min_len, a.B, dev, "min_len"); check_i64(lengths, a.B, dev, "lengths");
  check_i64_2d(chain, a.B, dev, "chain");
  a.C = int64_t(chain.shape(1));
  if (buffer < 0 || max_steps < 0) throw std::invalid_argument("uqac_backtrack: buffer and max_steps must be >= 0");
  {  // the per-sequence lengths live on the device: check against the padded maxima (what Python passes)
    const int64_t picks = buffer == 0 ? 0 : (max_steps > (a.Nmax + buffer - 1) / buffer ? a.Nmax
                                                                                        : std::min<int64_t>(a.Nmax, int64_t(max_steps) * buffer));
    if (a.C < a.Amax + picks) throw std::invalid_argument("chain: capacity C too small (need Amax + min(Nmax, max_steps * buffer))");
  }
  if (scores.dtype() != attn.dtype() || int64_t(scores.size()) != a.B * a.C || !flashuq::is_dense(scores) ||
      scores.device_id() != dev)
    throw std::invalid_argument("scores: expected contiguous [B, C] of the attention's dtype");
  if (ws.dtype() != nb::dtype<uint8_t>() || !flashuq::is_dense(ws) || ws.device_id() != dev ||
      int64_t(ws.size()) < uqac_backtrack_workspace(a.B, a.Nmax, a.f64 ? 8 : 4))
    throw std::invalid_argument("ws: workspace too small");
  a.attn = attn.data(); a.is_stop = static_cast<const uint8_t*>(is_stop.data());
  a.ans = static_cast<const int64_t*>(ans.data());
  a.R = static_cast<const int64_t*>(R.data()); a.Ntok = static_cast<const int64_t*>(Ntok.data());
  a.A = static_cast<const int64_t*>(A.data()); a.min_len = static_cast<const int64_t*>(min_len.data());
  a.buffer = buffer; a.threshold = threshold; a.max_steps = max_steps;
  a.chain = static_cast<int64_t*>(chain.data()); a.scores = scores.data();
  a.lengths = static_cast<int64_t*>(lengths.data());
  a.ws = static_cast<uint8_t*>(ws.data());
  int err;
  {
    nb::gil_scoped_release release;
    err = uqac_backtrack(a, stream);
  }
  if (err != 0)
    throw std::runtime_error(std::string("flashuq._cuda.uqac_backtrack: ") + cudaGetErrorString(cudaError_t(err)));
}

static void uqac_similarity_py(Arr h, Arr chain, Arr lengths, Arr ans, Arr A, Arr R, int64_t k, double threshold,
                               Arr keep, Arr keep_len, Arr ws, uintptr_t stream) {
  UqacSimilarityArgs a{};
  const DType dt = dtype_of(h);
  a.dtype = dt == DType::F64 ? SimDType::F64 : dt == DType::F32 ? SimDType::F32
          : dt == DType::F16 ? SimDType::F16 : SimDType::BF16;
  if (h.ndim() != 3 || !flashuq::is_dense(h)) throw std::invalid_argument("h: expected contiguous [B, R, D]");
  const int dev = h.device_id();
  a.B = int64_t(h.shape(0)); a.Rmax = int64_t(h.shape(1)); a.D = int64_t(h.shape(2));
  check_i64_2d(chain, a.B, dev, "chain");
  a.C = int64_t(chain.shape(1));
  check_i64_2d(ans, a.B, dev, "ans");
  a.Amax = int64_t(ans.shape(1));
  check_i64(lengths, a.B, dev, "lengths"); check_i64(A, a.B, dev, "A"); check_i64(R, a.B, dev, "R");
  check_i64(keep_len, a.B, dev, "keep_len");
  check_i64_2d(keep, a.B, dev, "keep");
  if (k < 0) throw std::invalid_argument("k: must be >= 0");
  a.K = int64_t(keep.shape(1));
  if (a.K < std::min(k, a.C)) throw std::invalid_argument("keep: expected [B, K], K >= min(k, C)");
  const int64_t Cw = a.C > 0 ? a.C : 1;
  if (ws.dtype() != nb::dtype<float>() || !flashuq::is_dense(ws) || ws.device_id() != dev ||
      int64_t(ws.size()) < a.B * 2 * Cw)
    throw std::invalid_argument("ws: expected float32 [B, 2 * max(C, 1)]");
  a.h = h.data(); a.chain = static_cast<const int64_t*>(chain.data());
  a.lengths = static_cast<const int64_t*>(lengths.data()); a.ans = static_cast<const int64_t*>(ans.data());
  a.A = static_cast<const int64_t*>(A.data()); a.R = static_cast<const int64_t*>(R.data());
  a.k = k; a.threshold = threshold;
  a.keep = static_cast<int64_t*>(keep.data()); a.keep_len = static_cast<int64_t*>(keep_len.data());
  a.ws = static_cast<float*>(ws.data());
  int err;
  {
    nb::gil_scoped_release release;
    err = uqac_similarity(a, stream);
  }
  if (err != 0)
    throw std::runtime_error(std::string("flashuq._cuda.uqac_similarity: ") + cudaGetErrorString(cudaError_t(err)));
}

NB_MODULE(_cuda, m) {
  m.doc() = "flashuq CUDA C++ kernels (cudart linked statically)";
  m.def("token_stats", &token_stats_py, nb::arg("logits").noconvert(), nb::arg("rows"), nb::arg("V"),
        nb::arg("n1"), nb::arg("s0"), nb::arg("s1"), nb::arg("tokens").noconvert().none(),
        nb::arg("inv_temp"), nb::arg("lse").noconvert(), nb::arg("max_logprob").noconvert(),
        nb::arg("logprob").noconvert(), nb::arg("entropy").noconvert(), nb::arg("margin").noconvert(),
        nb::arg("collision").noconvert(), nb::arg("kurtosis").noconvert(),
        nb::arg("self_certainty").noconvert(), nb::arg("argmax").noconvert(), nb::arg("stream"),
        nb::arg("renyi_term").noconvert().none() = nb::none(), nb::arg("fisher_rao").noconvert().none() = nb::none(),
        "Token statistics (no top-k) of rows of CUDA logits on the given stream.");
  m.def("uqac_backtrack", &uqac_backtrack_py, nb::arg("attn").noconvert(), nb::arg("is_stop").noconvert(),
        nb::arg("ans").noconvert(), nb::arg("R").noconvert(), nb::arg("Ntok").noconvert(), nb::arg("A").noconvert(),
        nb::arg("min_len").noconvert(), nb::arg("buffer"), nb::arg("threshold"), nb::arg("max_steps"),
        nb::arg("chain").noconvert(), nb::arg("scores").noconvert(), nb::arg("lengths").noconvert(),
        nb::arg("ws").noconvert(), nb::arg("stream"), "UQAC attention chains, one block per sequence.");
  m.def("uqac_backtrack_workspace", &uqac_backtrack_workspace, nb::arg("B"), nb::arg("Nmax"), nb::arg("elem_size"),
        "Workspace bytes of uqac_backtrack.");
  m.def("uqac_similarity", &uqac_similarity_py, nb::arg("h").noconvert(), nb::arg("chain").noconvert(),
        nb::arg("lengths").noconvert(), nb::arg("ans").noconvert(), nb::arg("A").noconvert(),
        nb::arg("R").noconvert(), nb::arg("k"), nb::arg("threshold"), nb::arg("keep").noconvert(),
        nb::arg("keep_len").noconvert(), nb::arg("ws").noconvert(), nb::arg("stream"),
        "UQAC similarity filter, one block per sequence.");
  m.def("device_count", []() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  }, "CUDA devices visible to the statically linked runtime (0 without a driver).");
  m.def("graph", &graph_py, nb::arg("op"), nb::arg("W").noconvert(), nb::arg("counts").noconvert(),
        nb::arg("threshold"), nb::arg("t"), nb::arg("out0").noconvert(), nb::arg("out1").noconvert().none(),
        nb::arg("out2").noconvert().none(), nb::arg("stream"),
        "Per-question spectra of [Q, K, K] similarity matrices, one block per question.");
}
