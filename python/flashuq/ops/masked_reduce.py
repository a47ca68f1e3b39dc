"""``flashuq.masked_reduce``: sum / mean / max / min / logsumexp over each sequence's real tokens.

Sequences come padded (``values [..., T]`` with ``mask [..., T]``, 1 = real token) or packed
(``values [N]`` with ``cu_seqlens [B+1]``, the flash-attn convention). Padding never enters a
reduction, so padded values (NaN included) and the padding side cannot change a result
(docs/methods.md#padding-and-masks, docs/methods.md#masked-reductions). CPU: C++ (OpenMP, fp64
accumulation; the logsumexp without weights of fp32/fp16/bf16 values sums blocks of 1024 in
vectorised fp32 lanes, merged in fp64); CUDA: Triton.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _ext
from ._common import acc_dtype, as_tensor, device_guard, values_readable

OPS = {"sum": 0, "mean": 1, "max": 2, "min": 3, "logsumexp": 4}
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def masked_reduce(values, mask=None, *, op: str = "mean", weights=None, cu_seqlens=None) -> Tensor:
    """Reduce each sequence over its real tokens.

    Args:
        values: ``[..., T]`` padded sequences, or ``[N]`` packed tokens with ``cu_seqlens``.
        mask: ``[..., T]`` (bool or numbers, nonzero = real token); None = every token is real.
        op: ``"sum"`` (Σ w·v), ``"mean"`` (Σ w·v / Σ w), ``"max"``, ``"min"`` or ``"logsumexp"``
            (log Σ w·e^v).
        weights: optional non-negative weights with the layout of ``values`` (sum, mean, logsumexp).
            fp64 weights are used in fp64 whatever the values' dtype (the result is rounded once).
        cu_seqlens: ``int32/int64 [B+1]`` offsets of packed sequences (then ``mask`` must be None).

    Returns:
        ``[...]`` (padded) or ``[B]`` (packed), fp32 (fp64 for fp64 values). An empty sequence
        gives NaN, except ``"sum"``, which gives 0; a NaN among the real tokens gives NaN.
    """
    values, mask, weights, cu, opi = _validate(values, mask, op, weights, cu_seqlens)
    return torch.ops.flashuq.masked_reduce(values, mask, weights, cu, opi)


def _validate(values, mask, op, weights, cu_seqlens):
    values = as_tensor(values, "values")
    if values.dtype not in _FLOATS:
        raise TypeError(f"values must be a floating tensor, got {values.dtype}")
    if not isinstance(op, str) or op not in OPS:
        raise ValueError(f"op must be one of {sorted(OPS)}, got {op!r}")
    if values.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"values must be on the CPU or a CUDA device, got {values.device}")
    if cu_seqlens is not None:
        cu_seqlens = as_tensor(cu_seqlens, "cu_seqlens")
        if mask is not None:
            raise ValueError("give either mask or cu_seqlens, not both")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
            raise ValueError(f"cu_seqlens must be 1-d [B+1], got shape {tuple(cu_seqlens.shape)}")
        if values.dim() != 1:
            raise ValueError(f"values must be 1-d [N] with cu_seqlens, got shape {tuple(values.shape)}")
        if cu_seqlens.device != values.device:
            raise ValueError(f"cu_seqlens is on {cu_seqlens.device} but values is on {values.device}")
        cu_seqlens = cu_seqlens.to(torch.int64)
        if values_readable(cu_seqlens):
            c = cu_seqlens.cpu()
            if int(c[0]) != 0 or int(c[-1]) != values.numel() or bool((c[1:] < c[:-1]).any()):
                raise ValueError("cu_seqlens must start at 0, never decrease and end at len(values) "
                                 f"= {values.numel()}, got {c.tolist()[:8]}...")
    elif values.dim() == 0:
        raise ValueError("values must have at least one dimension [..., T]")
    if mask is not None:
        mask = as_tensor(mask, "mask")
        if mask.shape != values.shape:
            raise ValueError(f"mask must have the shape of values {tuple(values.shape)}, got {tuple(mask.shape)}")
        if mask.device != values.device:
            raise ValueError(f"mask is on {mask.device} but values is on {values.device}")
        mask = mask.view(torch.uint8) if mask.dtype == torch.bool else (mask != 0).to(torch.uint8)  # bool: no copy
    if weights is not None:
        if op in ("max", "min"):
            raise ValueError(f"weights are not defined for op={op!r}")
        weights = as_tensor(weights, "weights")
        if weights.dtype not in _FLOATS:
            raise TypeError(f"weights must be a floating tensor, got {weights.dtype}")
        if weights.shape != values.shape:
            raise ValueError(f"weights must have the shape of values {tuple(values.shape)}, got {tuple(weights.shape)}")
        if weights.device != values.device:
            raise ValueError(f"weights is on {weights.device} but values is on {values.device}")
        if values_readable(weights):
            if bool((weights < 0).any()):
                raise ValueError("weights must be non-negative")
    return values, mask, weights, cu_seqlens, OPS[op]


def _out(values: Tensor, cu: Optional[Tensor]) -> Tensor:
    dt = acc_dtype(values.dtype)
    shape = (cu.numel() - 1,) if cu is not None else values.shape[:-1]
    return torch.empty(shape, dtype=dt, device=values.device)


@torch.library.custom_op("flashuq::masked_reduce", mutates_args=())
def _masked_reduce_op(values: Tensor, mask: Optional[Tensor], weights: Optional[Tensor],
                      cu_seqlens: Optional[Tensor], op: int) -> Tensor:
    out = _out(values, cu_seqlens)
    B = out.numel()
    if B == 0:
        return out
    T = values.shape[-1] if cu_seqlens is None else 0
    # fp64 weights keep their range and digits beside fp32/bf16/fp16 values (1e-50 is 0 in fp32):
    # the reduction then runs in fp64 and only its result is rounded to out's dtype
    acc = torch.float64 if weights is not None and weights.dtype == torch.float64 else out.dtype
    res = out if acc == out.dtype else torch.empty(out.shape, dtype=acc, device=out.device)
    # the CPU logsumexp without weights reads fp16 and bf16 as they are (no fp32 copy)
    keep16 = not values.is_cuda and op == OPS["logsumexp"] and weights is None
    v = values.detach().contiguous() if keep16 else values.detach().to(acc).contiguous()
    w = None if weights is None else weights.detach().to(acc).contiguous()
    m = None if mask is None else mask.contiguous()
    if values.is_cuda:
        _launch_triton(v, m, w, cu_seqlens, res, B, T, op)
    else:
        _ext._C.masked_reduce(v.reshape(-1), None if m is None else m.reshape(-1),
                              None if w is None else w.reshape(-1),
                              None if cu_seqlens is None else cu_seqlens.contiguous(), B, T, op, res.reshape(-1),
                              torch.get_num_threads())
    if res is not out:
        out.copy_(res)
    return out


@_masked_reduce_op.register_fake
def _(values, mask, weights, cu_seqlens, op):
    return _out(values, cu_seqlens)


def _launch_triton(v, m, w, cu, out, B, T, op, *, block=None):
    import triton.language as tl

    k = _ext.kernels().masked_reduce
    block = block or (1024 if v.is_cuda else 4096)
    dummy = out
    with device_guard(v):
        k.masked_reduce_kernel[(B,)](
            v, m if m is not None else dummy, w if w is not None else dummy, cu if cu is not None else dummy, out,
            T, OP=op, HAS_MASK=m is not None, HAS_W=w is not None, HAS_CU=cu is not None, BLOCK=block,
            ACC=tl.float64 if v.dtype == torch.float64 else tl.float32)
