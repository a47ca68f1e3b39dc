"""``flashuq.segment_reduce``: reduce within segments (e.g. sentences), then average over segments.

Look Before You Leap's sentence-level scores (docs/methods.md#look-before-you-leap): per sentence the max or mean of a
per-token value, then the mean over the sentences of each sequence. A segment is a maximal run of
equal ``seg_ids`` among a row's real tokens (segmentation itself stays with the caller). Built from
two ``masked_reduce`` calls over packed segments, so it runs in flashuq's kernels on CPU and CUDA;
it has data-dependent sizes and is not a registered op (``torch.compile`` breaks the graph here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import acc_dtype, as_tensor
from .masked_reduce import masked_reduce

_SEGMENT_OPS = ("sum", "mean", "max", "min")


def segment_reduce(values, seg_ids, mask=None, *, op: str = "mean") -> Tensor:
    """``mean over segments s of op_{t in s} values_t`` for each row of ``values [B, T]``.

    Args:
        values: ``[B, T]`` float.
        seg_ids: ``[B, T]`` integer segment ids; consecutive real tokens with the same id form a segment.
        mask: ``[B, T]``, nonzero = real token (None: all real).
        op: reduction inside a segment, ``"max"``, ``"mean"``, ``"sum"`` or ``"min"``.

    Returns ``[B]``, fp32 (fp64 for fp64 values), computed in fp64; a row without real tokens gives NaN.
    """
    values = as_tensor(values, "values")
    seg_ids = as_tensor(seg_ids, "seg_ids")
    if not values.dtype.is_floating_point:
        raise TypeError(f"values must be a floating tensor, got {values.dtype}")
    if values.dim() != 2:
        raise ValueError(f"values must be [B, T], got shape {tuple(values.shape)}")
    if seg_ids.shape != values.shape or seg_ids.dtype.is_floating_point or seg_ids.dtype == torch.bool:
        raise ValueError(f"seg_ids must be an integer tensor of shape {tuple(values.shape)}, got "
                         f"{seg_ids.dtype} {tuple(seg_ids.shape)}")
    if op not in _SEGMENT_OPS:
        raise ValueError(f"op must be one of {_SEGMENT_OPS}, got {op!r}")
    B, T = values.shape
    if mask is None:
        real = torch.ones(B, T, dtype=torch.bool, device=values.device)
    else:
        mask = as_tensor(mask, "mask")
        if mask.shape != values.shape:
            raise ValueError(f"mask must have the shape of values {tuple(values.shape)}, got {tuple(mask.shape)}")
        real = mask.to(values.device) != 0
    seg_ids = seg_ids.to(values.device)
    # segments reduced in fp64 (a segment's sum of fp32 values may pass the fp32 maximum while the mean
    # over segments does not), the result rounded once
    v = values[real].to(torch.float64)
    row = torch.arange(B, device=values.device)[:, None].expand(B, T)[real]
    sid = seg_ids[real]
    new = torch.ones_like(row, dtype=torch.bool)
    if row.numel() > 1:
        new[1:] = (row[1:] != row[:-1]) | (sid[1:] != sid[:-1])
    starts = torch.nonzero(new).flatten()
    cu_seg = torch.cat([starts, torch.tensor([v.numel()], device=values.device)])
    per_segment = masked_reduce(v, op=op, cu_seqlens=cu_seg)
    per_row = torch.bincount(row[starts], minlength=B)
    cu_row = torch.cat([torch.zeros(1, dtype=torch.int64, device=values.device), torch.cumsum(per_row, 0)])
    return masked_reduce(per_segment, op="mean", cu_seqlens=cu_row).to(acc_dtype(values.dtype))
