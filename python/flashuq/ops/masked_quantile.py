"""``flashuq.masked_quantile``: per-sequence quantiles over the real tokens, numpy's "linear" method.

Same layouts as ``masked_reduce`` (padded + mask, or packed + cu_seqlens). CPU: C++ (sort per
sequence, numpy's interpolation to the last bit); CUDA: Triton (one sorted block per sequence, up
to 4096 tokens; longer sequences use a torch sort on the device).
"""

from __future__ import annotations

import numbers
from typing import List, Optional

import numpy as np
import torch
from torch import Tensor

from .. import _ext
from ._common import acc_dtype, as_tensor, device_guard
from .masked_reduce import _validate as _validate_layout

_QUANTILE_OP = 5  # the op code of the shared CPU binding
MAX_TRITON_LEN = 4096  # one sorted block per sequence; longer ones take the torch path


def masked_quantile(values, q, mask=None, *, cu_seqlens=None) -> Tensor:
    """Quantiles of each sequence's real tokens, like ``numpy.quantile(..., method="linear")``.

    Args:
        values: ``[..., T]`` padded sequences, or ``[N]`` packed tokens with ``cu_seqlens``.
        q: a level in [0, 1], or a sequence / 1-d tensor of levels.
        mask: ``[..., T]``, nonzero = real token; None = every token is real.
        cu_seqlens: ``int32/int64 [B+1]`` offsets of packed sequences.

    Returns:
        ``[...]`` for a scalar ``q``, else ``[..., len(q)]`` (``[B]`` / ``[B, len(q)]`` when packed);
        fp32 (fp64 for fp64 values). An empty sequence, or a NaN among its real tokens, gives NaN.
    """
    levels, scalar = _levels(q)
    values, mask, _, cu, _ = _validate_layout(values, mask, "min", None, cu_seqlens)
    out = torch.ops.flashuq.masked_quantile(values, mask, cu, levels)
    return out.squeeze(-1) if scalar else out


def _levels(q):
    """The quantile levels as Python floats, and whether q was a scalar."""
    bad = f"q must be a number or a sequence of numbers in [0, 1], got {type(q).__name__}"
    if isinstance(q, bool):
        raise TypeError(bad)
    if isinstance(q, numbers.Real):
        levels, scalar = [float(q)], True
    elif isinstance(q, (torch.Tensor, np.ndarray)):
        arr = as_tensor(q, "q")
        if arr.dim() != 1 or arr.numel() == 0 or arr.dtype == torch.bool or arr.dtype.is_complex:
            raise ValueError(f"q must be a non-empty 1-d sequence of levels, got shape {tuple(arr.shape)}")
        levels, scalar = [float(v) for v in arr.double().tolist()], False
    elif isinstance(q, (list, tuple)):
        if not q or any(isinstance(v, (list, tuple, np.ndarray, torch.Tensor)) for v in q):
            raise ValueError(f"q must be a non-empty 1-d sequence of levels, got {q!r}")
        if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in q):
            raise TypeError(f"q must be a sequence of numbers in [0, 1], got {q!r}")
        levels, scalar = [float(v) for v in q], False
    else:
        raise TypeError(bad)
    for v in levels:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"q must lie in [0, 1], got {v}")
    return levels, scalar


def _out(values: Tensor, cu: Optional[Tensor], nq: int) -> Tensor:
    dt = acc_dtype(values.dtype)
    lead = (cu.numel() - 1,) if cu is not None else tuple(values.shape[:-1])
    return torch.empty((*lead, nq), dtype=dt, device=values.device)


@torch.library.custom_op("flashuq::masked_quantile", mutates_args=())
def _masked_quantile_op(values: Tensor, mask: Optional[Tensor], cu_seqlens: Optional[Tensor],
                        q: List[float]) -> Tensor:
    out = _out(values, cu_seqlens, len(q))
    B = out.numel() // len(q)
    if B == 0:
        return out
    T = values.shape[-1] if cu_seqlens is None else 0
    v = values.detach().to(out.dtype).contiguous()
    m = None if mask is None else mask.contiguous()
    if values.is_cuda:
        _launch_cuda(v, m, cu_seqlens, q, out, B, T)
    else:
        _ext._C.masked_reduce(v.reshape(-1), None if m is None else m.reshape(-1), None,
                              None if cu_seqlens is None else cu_seqlens.contiguous(), B, T, _QUANTILE_OP,
                              out.reshape(-1), torch.get_num_threads(), torch.tensor(q, dtype=torch.float64))
    return out


@_masked_quantile_op.register_fake
def _(values, mask, cu_seqlens, q):
    return _out(values, cu_seqlens, len(q))


def _launch_cuda(v, m, cu, q, out, B, T, *, block=None):
    longest = T if cu is None else int((cu[1:] - cu[:-1]).max())
    if block is None and longest > MAX_TRITON_LEN:
        out.copy_(_quantile_torch(v, m, cu, q, B, T).reshape(out.shape))
        return
    import triton
    import triton.language as tl

    k = _ext.kernels().masked_quantile
    block = block or triton.next_power_of_2(max(longest, 16))
    qt = torch.tensor(q, dtype=torch.float64, device=v.device)
    dummy = out
    with device_guard(v):
        k.masked_quantile_kernel[(B,)](
            v, m if m is not None else dummy, cu if cu is not None else dummy, qt, out, T, len(q),
            HAS_MASK=m is not None, HAS_CU=cu is not None, BLOCK=block,
            ACC=tl.float64 if v.dtype == torch.float64 else tl.float32)


def _quantile_torch(v, m, cu, q, B, T):
    """Sequences longer than one Triton block: pad to [B, L] with +inf, sort, interpolate like numpy."""
    if cu is not None:
        lengths = cu[1:] - cu[:-1]
        L = int(lengths.max())
        pos = torch.arange(L, device=v.device)
        real = pos[None, :] < lengths[:, None]
        x = torch.where(real, v[(cu[:-1, None] + pos[None, :]).clamp(max=max(v.numel() - 1, 0))], float("inf"))
    else:
        x2 = v.reshape(B, T)
        real = torch.ones_like(x2, dtype=torch.bool) if m is None else m.reshape(B, T) != 0
        x = torch.where(real, x2, float("inf"))
    has_nan = (real & torch.isnan(x)).any(-1)
    x = torch.where(torch.isnan(x), float("inf"), x).sort(-1).values
    n = real.sum(-1).to(x.dtype)
    qs = torch.tensor(q, dtype=x.dtype, device=x.device)
    vi = (n[:, None] - 1.0) * qs[None, :]
    prev = torch.floor(vi)
    nmax = (n - 1).clamp(min=0).long()[:, None]
    i0 = torch.minimum(prev.long().clamp(min=0), nmax)
    i1 = torch.minimum(i0 + 1, nmax)
    a, c = x.gather(-1, i0), x.gather(-1, i1)
    g = vi - prev
    d = c - a
    r = torch.where(g >= 0.5, c - d * (1.0 - g), a + d * g)
    return torch.where((n[:, None] > 0) & ~has_nan[:, None], r, float("nan"))

