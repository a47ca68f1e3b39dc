// Checks shared by the nanobind bindings (CPU and CUDA): the private entry points trust Python's
// validation, but a misuse must raise, never read outside the array.
#pragma once

#include <nanobind/ndarray.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace flashuq {

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
