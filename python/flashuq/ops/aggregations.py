"""Aggregation patterns of AlignScore and ValUES (docs/methods.md#aggregation-patterns), batched and
padding-proof: ``max_then_mean`` (AlignScore: best-aligned chunk per claim sentence, then the mean),
``max_window_mean`` (ValUES patch level: the largest sum or mean over a sliding window) and
``thresholded_mean`` (ValUES threshold level: the mean or sum of the values at or above a threshold).
Plain torch (CPU and CUDA): each is one masked pass over small inputs. Sums run in fp64 and the result
is rounded once to the values' dtype (fp32 or fp64), so values near the fp32 maximum cannot overflow them."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_int, check_real
from ._common import as_tensor


def _floats(x, name: str) -> Tensor:
    """``x`` as a floating tensor in its compute dtype (fp64 stays fp64, the rest becomes fp32)."""
    x = as_tensor(x, name)
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)


def _mask(mask, name: str, shape, like: Tensor) -> Tensor:
    """A bool mask of ``shape`` on ``like``'s device (None: all True); nonzero = real."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=like.device)
    m = as_tensor(mask, name)
    if m.dtype.is_floating_point or m.dtype.is_complex:
        raise TypeError(f"{name} must be a bool (or integer) tensor, got {m.dtype}")
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(m.shape)}")
    if m.device != like.device:
        raise ValueError(f"{name} is on {m.device} but the values are on {like.device}")
    return m != 0


def _values_and_mask(values, mask):
    v = _floats(values, "values")
    if v.dim() < 1:
        raise ValueError("values must have at least one dimension [..., T], got a scalar")
    return v, _mask(mask, "mask", v.shape, v)


def max_then_mean(scores, chunk_mask=None, sentence_mask=None) -> Tensor:
    """AlignScore's aggregation (Zha et al., ACL 2023; ``alignscore/inference.py``): ``mean_j max_c S[c, j]``.

    ``scores [..., C, J]``: the alignment of context chunk c with claim sentence j. ``chunk_mask [..., C]``
    and ``sentence_mask [..., J]`` drop padding chunks and sentences. Returns ``[...]``, a confidence
    (AlignScore's orientation); NaN without a real chunk or sentence.
    """
    s = _floats(scores, "scores")
    if s.dim() < 2:
        raise ValueError(f"scores must be [..., C, J], got shape {tuple(s.shape)}")
    cm = _mask(chunk_mask, "chunk_mask", s.shape[:-1], s)
    sm = _mask(sentence_mask, "sentence_mask", s.shape[:-2] + s.shape[-1:], s)
    if s.shape[-2] == 0:  # no chunk: every result is NaN
        return torch.full(s.shape[:-2], torch.nan, dtype=s.dtype, device=s.device)
    best = torch.where(cm[..., :, None], s, -torch.inf).amax(-2)          # [..., J]
    best = torch.where(cm.any(-1, keepdim=True), best, torch.nan)
    n = sm.sum(-1)
    total = torch.where(sm, best, 0.0).sum(-1, dtype=torch.float64)  # fp64: fp32 sums overflow near 3.4e38
    return torch.where(n > 0, total / n.clamp(min=1), torch.nan).to(s.dtype)


def max_window_mean(values, mask=None, *, window: int = 10, mean: bool = True) -> Tensor:
    """ValUES' patch-level aggregation (``aggregate_uncertainties.py``, ``patch_level_aggregation``) along
    each sequence: the largest sum of ``window`` consecutive real values, divided by ``window`` when
    ``mean`` (default ``window = 10``, ValUES' patch size).

    ``values [..., T]``, ``mask [..., T]`` (nonzero = real; padding is removed first, so left and right
    padding give the same result). A sequence with fewer than ``window`` real values is zero-padded to the
    window (what ValUES' ``scipy.signal.convolve(..., mode="valid")`` computes there): its sum, divided by
    ``window`` when ``mean``. Returns ``[...]``; NaN for a sequence without real values.
    """
    w = check_int(window, "window", 1)
    v, m = _values_and_mask(values, mask)
    T = v.shape[-1]
    lead = v.shape[:-1]
    if T == 0 or v.numel() == 0:  # no values: NaN (an empty batch: an empty result)
        return torch.full(lead, torch.nan, dtype=v.dtype, device=v.device)
    v2 = v.reshape(-1, T)
    m2 = m.reshape(-1, T)
    # pack each row's real values to the front, keeping their order
    order = torch.sort((~m2).to(torch.int8), dim=-1, stable=True).indices
    packed = torch.where(m2, v2, 0.0).gather(-1, order)
    n = m2.sum(-1)
    width = max(T, w)
    packed = torch.nn.functional.pad(packed, (0, width - T))
    sums = packed.unfold(-1, w, 1).sum(-1, dtype=torch.float64)           # [R, width - w + 1]; fp64, as above
    start = torch.arange(sums.shape[-1], device=v.device)
    ok = (start[None, :] <= (n - w).clamp(min=0)[:, None])
    best = torch.where(ok, sums, -torch.inf).amax(-1)
    if mean:
        best = best / w
    best = torch.where(n > 0, best, torch.nan)
    return best.to(v.dtype).reshape(lead)


def thresholded_mean(values, mask=None, *, threshold: float, mean: bool = True) -> Tensor:
    """ValUES' threshold aggregation (``aggregate_uncertainties.py``, ``threshold_aggregation``): the mean
    (``mean=True``) or the sum of the real values ``>= threshold``. As in ValUES, a sequence with no value at
    or above the threshold gives 0 (the empty sum). ``values [..., T]``, ``mask [..., T]``; returns ``[...]``.
    """
    tau = check_real(threshold, "threshold")
    v, m = _values_and_mask(values, mask)
    keep = m & (v >= tau)
    total = torch.where(keep, v, 0.0).sum(-1, dtype=torch.float64)  # fp64, as above
    if not mean:
        return total.to(v.dtype)
    n = keep.sum(-1)
    return torch.where(n > 0, total / n.clamp(min=1), total).to(v.dtype)


__all__ = ["max_then_mean", "max_window_mean", "thresholded_mean"]
