// Checks shared by the nanobind bindings (CPU and CUDA): the private entry points trust Python's
// validation, but a misuse must raise, never read outside the array.
#pragma once

#include <nanobind/ndarray.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "flashuq/dtype.h"

namespace flashuq {

// An argument of fixed element type and rank N on Device (TypedAnyRank: any rank): nanobind checks
// both and raises TypeError on a mismatch, as for the wrong type of a scalar argument. Contiguity is
// checked with dense() below, not with nanobind's c_contig: c_contig refuses empty arrays that torch
// calls contiguous (shape [3, 0] with strides [1, 1]), such as a top-k output with k = 0.
template <class Device, class T, size_t N>
using Typed = nanobind::ndarray<T, nanobind::ndim<N>, Device>;
template <class Device, class T>
using TypedAnyRank = nanobind::ndarray<T, Device>;

// The kernel element type of a float array; TypeError naming the argument otherwise.
template <typename Array>
DType dtype_of(const Array& x, const char* name) {
  namespace nb = nanobind;
  const nb::dlpack::dtype dt = x.dtype();
  if (dt == nb::dtype<float>()) return DType::F32;
  if (dt == nb::dtype<double>()) return DType::F64;
  if (dt.code == uint8_t(nb::dlpack::dtype_code::Float) && dt.bits == 16) return DType::F16;
  if (dt.code == uint8_t(nb::dlpack::dtype_code::Bfloat) && dt.bits == 16) return DType::BF16;
  throw nb::type_error((std::string(name) + ": expected float32, float64, float16 or bfloat16").c_str());
}

// The same for arguments the kernel reads as float32 or float64 only.
template <typename Array>
DType dtype_of_f32_f64(const Array& x, const char* name) {
  const DType d = dtype_of(x, name);
  if (d != DType::F32 && d != DType::F64)
    throw nanobind::type_error((std::string(name) + ": expected float32 or float64").c_str());
  return d;
}

// Whether the array is dense in row-major order (dimensions of size 1 may have any stride, as in
// torch), i.e. its elements are data()[0 .. size).
template <typename Array>
bool is_dense(const Array& a) {
  if (a.size() == 0) return true;  // nothing is read or written
  int64_t expect = 1;
  for (size_t d = a.ndim(); d-- > 0;) {
    if (a.shape(d) != 1 && a.stride(d) != expect) return false;
    expect *= int64_t(a.shape(d));
  }
  return true;
}

// x itself after checking that it is dense (ValueError naming it otherwise).
template <typename Array>
Array& dense(Array& x, const char* name) {
  if (!is_dense(x)) throw std::invalid_argument(std::string(name) + ": expected a contiguous array");
  return x;
}

// Rows r = i0 * n1 + i1 start at element (r / n1) * s0 + (r % n1) * s1 and span V elements; all of
// them must lie inside `logits` (element strides, none negative).
template <typename Array>
void check_rows_inside(const Array& logits, int64_t rows, int64_t V, int64_t n1, int64_t s0, int64_t s1) {
  if (V < 1 || rows < 0 || n1 < 1) throw std::invalid_argument("token_stats: bad sizes");
  if (s0 < 0 || s1 < 0) throw std::invalid_argument("token_stats: negative row strides");
  int64_t extent = 1;
  for (size_t d = 0; d < logits.ndim(); ++d) {
    if (logits.shape(d) == 0) { extent = 0; break; }
    if (logits.stride(d) < 0) throw std::invalid_argument("logits: negative strides are not supported");
    extent += (int64_t(logits.shape(d)) - 1) * int64_t(logits.stride(d));
  }
  if (rows > 0) {
    const int64_t n0 = (rows + n1 - 1) / n1;
    const int64_t last = (n0 - 1) * s0 + (std::min(rows, n1) - 1) * s1 + V;  // one past the furthest element
    if (last > extent) throw std::invalid_argument("token_stats: rows exceed the logits array");
  }
}

}  // namespace flashuq
