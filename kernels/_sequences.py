"""Helpers shared by the sequence-level Triton kernels."""

import triton
import triton.language as tl


@triton.jit
def seq_bounds(cu_ptr, b, T, HAS_CU: tl.constexpr):
    """Sequence b is [cu[b], cu[b+1]) of the packed tokens (HAS_CU), else row b of a [B, T] array."""
    if HAS_CU:
        lo = tl.load(cu_ptr + b)
        hi = tl.load(cu_ptr + b + 1)
    else:
        lo = b * T
        hi = lo + T
    return lo, hi
