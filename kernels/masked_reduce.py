"""Triton kernel for ``flashuq.masked_reduce``: one program per sequence, blocks folded in order.

Sequence b is ``values[lo, hi)`` with ``lo, hi = cu[b], cu[b+1]`` (packed, HAS_CU) or
``b*T, b*T + T`` filtered by ``mask`` (padded). Padding is never loaded into an accumulator.
OP: 0 sum, 1 mean, 2 max, 3 min, 4 logsumexp (online max + rescaled sum).
"""

import triton
import triton.language as tl

from ._sequences import seq_bounds


@triton.jit
def masked_reduce_kernel(v_ptr, mask_ptr, w_ptr, cu_ptr, out_ptr, T,
                         OP: tl.constexpr, HAS_MASK: tl.constexpr, HAS_W: tl.constexpr, HAS_CU: tl.constexpr,
                         BLOCK: tl.constexpr, ACC: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    lo, hi = seq_bounds(cu_ptr, b, T, HAS_CU)
    s = tl.zeros([], ACC)             # Σ w v, or the logsumexp sum
    sw = tl.zeros([], ACC)            # Σ w
    n = tl.zeros([], tl.int64)        # real tokens
    nans = tl.zeros([], tl.int32)
    if OP == 3:
        best = tl.full([], float("inf"), ACC)
    else:
        best = tl.full([], float("-inf"), ACC)
    for start in range(lo, hi, BLOCK):
        idx = start + tl.arange(0, BLOCK).to(tl.int64)
        real = idx < hi
        if HAS_MASK:
            real = real & (tl.load(mask_ptr + idx, mask=real, other=0) != 0)
        v = tl.load(v_ptr + idx, mask=real, other=0.0).to(ACC)
        if HAS_W:
            w = tl.load(w_ptr + idx, mask=real, other=0.0).to(ACC)
        else:
            w = tl.where(real, 1.0, 0.0).to(ACC)
        n += tl.sum(real.to(tl.int64))
        nans += tl.sum((real & (v != v)).to(tl.int32))
        if OP <= 1:
            s += tl.sum(tl.where(real, w * v, 0.0))
            sw += tl.sum(w)
        elif OP == 2:
            best = tl.maximum(best, tl.max(tl.where(real & (v == v), v, float("-inf"))))
        elif OP == 3:
            best = tl.minimum(best, tl.min(tl.where(real & (v == v), v, float("inf"))))
        else:
            u = tl.where(real & (v == v), v + tl.log(w), float("-inf"))
            m_new = tl.maximum(best, tl.max(u))
            # rescale the running sum to the new max (nothing to rescale while all seen is -inf)
            m_safe = tl.where(m_new > float("-inf"), m_new, 0.0)
            s = s * tl.exp(tl.where(m_new > float("-inf"), best - m_safe, 0.0))
            s += tl.sum(tl.where(u > float("-inf"), tl.exp(u - m_safe), 0.0))
            best = m_new
    nan = float("nan")
    if OP == 0:
        r = s
    elif OP == 1:
        r = tl.where(n > 0, s / sw, nan)
    elif OP == 4:
        r = tl.where((best > float("-inf")) & (best < float("inf")), best + tl.log(s), best)
        r = tl.where(n > 0, r, nan)
    else:
        r = tl.where(n > 0, best, nan)
    r = tl.where(nans > 0, nan, r)
    tl.store(out_ptr + b, r)
