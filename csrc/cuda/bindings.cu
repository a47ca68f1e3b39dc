// flashuq._cuda: thin nanobind bindings of the CUDA C++ kernels (the graph spectra and UQAC's
// backtracking and similarity filter; the vocabulary-streaming ops are Triton kernels). Python
// validates; the stream comes in as an integer (torch.cuda.current_stream().cuda_stream), so launches
// are graph safe. As in the CPU bindings, arguments of a fixed element type are typed (TypeError on a
// wrong dtype or rank) and sizes, contiguity and devices raise ValueError.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "flashuq/ndarray_checks.h"
#include "graph.cuh"
#include "uqac.cuh"

namespace nb = nanobind;
using namespace flashuq::cuda;
using flashuq::DType;
using flashuq::dense;
using flashuq::dtype_of;
using flashuq::dtype_of_f32_f64;

using Arr = nb::ndarray<nb::device::cuda>;
template <class T, size_t N> using GArr = flashuq::Typed<nb::device::cuda, T, N>;

// x's data after checking that it is contiguous, has n elements (n < 0: any) and lives on device dev.
template <class A>
static auto on_device(A& x, int64_t n, int dev, const char* name) {
  if (n >= 0 && int64_t(x.size()) != n)
    throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(n) + " elements");
  if (x.device_id() != dev) throw std::invalid_argument(std::string(name) + ": expected the input's device");
  return dense(x, name).data();
}

static void graph_py(int op, Arr W, GArr<const int32_t, 1> counts, double threshold, double t, Arr out0, std::optional<Arr> out1,
                     std::optional<Arr> out2, uintptr_t stream, std::optional<Arr> C) {
  GraphArgs a{};
  if (op < 0 || op > 3) throw std::invalid_argument("graph: unknown op");
  a.f64 = dtype_of_f32_f64(W, "W") == DType::F64;
  if (W.ndim() != 3 || W.shape(1) != W.shape(2)) throw std::invalid_argument("W: expected [Q, K, K]");
  const int64_t Q = int64_t(W.shape(0)), K = int64_t(W.shape(1));
  if (K < 1 || K > kGraphMaxK) throw std::invalid_argument("W: K must be in [1, 64] on CUDA");
  const int dev = W.device_id();
  dense(W, "W");
  // the counts live on the device: Python guarantees 0 <= counts <= K (sum of a mask)
  const int32_t* counts_p = on_device(counts, Q, dev, "counts");
  if ((op == 3) != bool(C)) throw std::invalid_argument("C: given exactly when op is 3 (KLE from E and C)");
  if (C) {
    if (C->dtype() != W.dtype()) throw nb::type_error("C: expected W's dtype");
    if (C->ndim() != 3 || C->shape(0) != W.shape(0) || C->shape(1) != W.shape(1) || C->shape(2) != W.shape(2))
      throw std::invalid_argument("C: expected W's shape");
    a.C = on_device(*C, Q * K * K, dev, "C");
  }
  auto out = [&](Arr& o, int64_t size, const char* name) {
    if (o.dtype() != W.dtype()) throw nb::type_error((std::string(name) + ": expected W's dtype").c_str());
    return on_device(o, size, dev, name);
  };
  const bool vec = op < 2 && bool(out1);
  a.out0 = out(out0, op == 0 ? Q * K : Q, "out0");
  a.out1 = vec ? out(*out1, op == 0 ? Q * K * K : Q, "out1") : nullptr;
  a.out2 = nullptr;
  if (op == 1 && vec && out2) a.out2 = out(*out2, Q * K, "out2");  // the per-sample norms: optional
  a.op = op; a.W = W.data(); a.Q = Q; a.K = K; a.counts = counts_p;
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

static void uqac_backtrack_py(Arr attn, GArr<const uint8_t, 2> is_stop, GArr<const int64_t, 2> ans,
                              GArr<const int64_t, 1> R, GArr<const int64_t, 1> Ntok, GArr<const int64_t, 1> A,
                              GArr<const int64_t, 1> min_len, int buffer, double threshold, int64_t max_steps,
                              GArr<int64_t, 2> chain, Arr scores, GArr<int64_t, 1> lengths, GArr<uint8_t, 1> ws,
                              uintptr_t stream) {
  UqacBacktrackArgs a{};
  a.f64 = dtype_of_f32_f64(attn, "attn") == DType::F64;
  if (attn.ndim() != 3) throw std::invalid_argument("attn: expected [B, R, N]");
  const int dev = attn.device_id();
  a.attn = on_device(attn, -1, dev, "attn");
  a.B = int64_t(attn.shape(0)); a.Rmax = int64_t(attn.shape(1)); a.Nmax = int64_t(attn.shape(2));
  if (int64_t(is_stop.shape(0)) != a.B || int64_t(is_stop.shape(1)) != a.Nmax)
    throw std::invalid_argument("is_stop: expected [B, N]");
  a.is_stop = on_device(is_stop, -1, dev, "is_stop");
  if (int64_t(ans.shape(0)) != a.B) throw std::invalid_argument("ans: expected [B, Amax]");
  a.Amax = int64_t(ans.shape(1));
  a.ans = on_device(ans, -1, dev, "ans");
  a.R = on_device(R, a.B, dev, "R"); a.Ntok = on_device(Ntok, a.B, dev, "Ntok"); a.A = on_device(A, a.B, dev, "A");
  a.min_len = on_device(min_len, a.B, dev, "min_len");
  a.lengths = on_device(lengths, a.B, dev, "lengths");
  if (int64_t(chain.shape(0)) != a.B) throw std::invalid_argument("chain: expected [B, C]");
  a.C = int64_t(chain.shape(1));
  a.chain = on_device(chain, -1, dev, "chain");
  if (buffer < 0 || max_steps < 0) throw std::invalid_argument("uqac_backtrack: buffer and max_steps must be >= 0");
  {  // the per-sequence lengths live on the device: check against the padded maxima (what Python passes)
    const int64_t picks = buffer == 0 ? 0 : (max_steps > (a.Nmax + buffer - 1) / buffer ? a.Nmax
                                                                                        : std::min<int64_t>(a.Nmax, int64_t(max_steps) * buffer));
    if (a.C < a.Amax + picks) throw std::invalid_argument("chain: capacity C too small (need Amax + min(Nmax, max_steps * buffer))");
  }
  if (scores.dtype() != attn.dtype()) throw nb::type_error("scores: expected the attention's dtype");
  a.scores = on_device(scores, a.B * a.C, dev, "scores");
  if (int64_t(ws.size()) < uqac_backtrack_workspace(a.B, a.Nmax, a.f64 ? 8 : 4))
    throw std::invalid_argument("ws: workspace too small");
  a.ws = on_device(ws, -1, dev, "ws");
  a.buffer = buffer; a.threshold = threshold; a.max_steps = max_steps;
  int err;
  {
    nb::gil_scoped_release release;
    err = uqac_backtrack(a, stream);
  }
  if (err != 0)
    throw std::runtime_error(std::string("flashuq._cuda.uqac_backtrack: ") + cudaGetErrorString(cudaError_t(err)));
}

static void uqac_similarity_py(Arr h, GArr<const int64_t, 2> chain, GArr<const int64_t, 1> lengths,
                               GArr<const int64_t, 2> ans, GArr<const int64_t, 1> A, GArr<const int64_t, 1> R,
                               int64_t k, double threshold, GArr<int64_t, 2> keep, GArr<int64_t, 1> keep_len,
                               GArr<float, 1> ws, uintptr_t stream) {
  UqacSimilarityArgs a{};
  a.dtype = dtype_of(h, "h");
  if (h.ndim() != 3) throw std::invalid_argument("h: expected [B, R, D]");
  const int dev = h.device_id();
  a.h = on_device(h, -1, dev, "h");
  a.B = int64_t(h.shape(0)); a.Rmax = int64_t(h.shape(1)); a.D = int64_t(h.shape(2));
  if (int64_t(chain.shape(0)) != a.B) throw std::invalid_argument("chain: expected [B, C]");
  a.C = int64_t(chain.shape(1));
  a.chain = on_device(chain, -1, dev, "chain");
  if (int64_t(ans.shape(0)) != a.B) throw std::invalid_argument("ans: expected [B, Amax]");
  a.Amax = int64_t(ans.shape(1));
  a.ans = on_device(ans, -1, dev, "ans");
  a.lengths = on_device(lengths, a.B, dev, "lengths"); a.A = on_device(A, a.B, dev, "A");
  a.R = on_device(R, a.B, dev, "R"); a.keep_len = on_device(keep_len, a.B, dev, "keep_len");
  if (int64_t(keep.shape(0)) != a.B) throw std::invalid_argument("keep: expected [B, K]");
  if (k < 0) throw std::invalid_argument("k: must be >= 0");
  a.K = int64_t(keep.shape(1));
  if (a.K < std::min(k, a.C)) throw std::invalid_argument("keep: expected [B, K], K >= min(k, C)");
  a.keep = on_device(keep, -1, dev, "keep");
  const int64_t Cw = a.C > 0 ? a.C : 1;
  if (int64_t(ws.size()) < a.B * 2 * Cw) throw std::invalid_argument("ws: expected float32 [B, 2 * max(C, 1)]");
  a.ws = on_device(ws, -1, dev, "ws");
  a.k = k; a.threshold = threshold;
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
        nb::arg("out2").noconvert().none(), nb::arg("stream"), nb::arg("C").noconvert().none() = nb::none(),
        "Per-question spectra of [Q, K, K] similarity matrices, one block per question; op 3 reads "
        "KLE's entailment E as W and its contradiction C.");
}
