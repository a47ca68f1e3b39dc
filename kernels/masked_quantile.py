"""Triton kernel for ``flashuq.masked_quantile``: one program per sequence, the whole sequence in
one block (BLOCK ≥ its length, a power of two), sorted with ``tl.sort``; numpy's "linear" method
including its lerp (interpolate from the upper neighbour when the fraction is ≥ 0.5)."""

import triton
import triton.language as tl

from ._sequences import seq_bounds


@triton.jit
def masked_quantile_kernel(v_ptr, mask_ptr, cu_ptr, q_ptr, out_ptr, T, NQ,
                           HAS_MASK: tl.constexpr, HAS_CU: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    lo, hi = seq_bounds(cu_ptr, b, T, HAS_CU)
    pos = tl.arange(0, BLOCK)
    idx = lo + pos.to(tl.int64)
    real = idx < hi
    if HAS_MASK:
        real = real & (tl.load(mask_ptr + idx, mask=real, other=0) != 0)
    v = tl.load(v_ptr + idx, mask=real, other=0.0).to(ACC)
    nans = tl.sum((real & (v != v)).to(tl.int32))
    n = tl.sum(real.to(tl.int32))
    xs = tl.sort(tl.where(real & (v == v), v, float("inf")))  # real values first, ascending
    nf = n.to(ACC)
    for j in range(0, NQ):
        qj = tl.load(q_ptr + j).to(ACC)
        vi = (nf - 1.0) * qj
        prev = tl.floor(vi)
        i0 = tl.minimum(prev.to(tl.int32), n - 1)
        i1 = tl.minimum(i0 + 1, n - 1)
        a = tl.sum(tl.where(pos == i0, xs, 0.0))
        c = tl.sum(tl.where(pos == i1, xs, 0.0))
        g = vi - prev
        d = c - a
        r = tl.where(g >= 0.5, c - d * (1.0 - g), a + d * g)
        r = tl.where((n > 0) & (nans == 0), r, float("nan"))
        tl.store(out_ptr + b * NQ + j, r)
