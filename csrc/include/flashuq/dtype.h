// The element types a kernel reads, one enumeration for the CPU and CUDA builds (the bindings map a
// DLPack dtype to it with flashuq::dtype_of, flashuq/ndarray_checks.h).
#pragma once

namespace flashuq {

enum class DType : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };

}  // namespace flashuq
