"""``flashuq.claim_reduce``: reduce per-token values over the tokens of each claim.

A claim is a set of token positions of one generated sequence (LM-Polygraph's
``Claim.aligned_token_ids``; docs/methods.md#claim-level). Claims come as CSR arrays, :class:`Claims`:
``rows [C]`` (the sequence of each claim), ``cu [C+1]`` (offsets) and ``tokens [N]`` (the positions, claim
after claim). Sets may overlap, skip tokens and come in any order. The claims' values are gathered
into one packed tensor and reduced by ``masked_reduce``'s kernels (CPU and CUDA); the sizes are
data-dependent, so this is not a registered op.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ._common import as_tensor
from .masked_reduce import masked_reduce

_CLAIM_OPS = ("sum", "mean", "max", "min", "logsumexp")


class Claims(NamedTuple):
    """Claims as CSR arrays: claim ``c`` of sequence ``rows[c]`` covers positions ``tokens[cu[c]:cu[c+1]]``."""

    rows: Tensor    #: ``int64 [C]``, the sequence (row of the ``[B, T]`` values) of each claim
    cu: Tensor      #: ``int64 [C+1]``, offsets into ``tokens``
    tokens: Tensor  #: ``int64 [N]``, token positions along T


def claims_from_lists(aligned_token_ids: Sequence[Sequence[Sequence[int]]], device=None) -> Claims:
    """:class:`Claims` from nested lists: ``aligned_token_ids[b][c]`` lists the token positions of claim
    ``c`` of sequence ``b`` (LM-Polygraph: ``[[claim.aligned_token_ids for claim in claims[b]] for b ...]``).
    Claims are numbered sequence after sequence."""
    if isinstance(aligned_token_ids, (str, bytes)) or not isinstance(aligned_token_ids, Sequence):
        raise TypeError(f"aligned_token_ids must be a list (sequences) of lists (claims) of token positions, "
                        f"got {type(aligned_token_ids).__name__}")
    rows, lens, toks = [], [], []
    for b, claims in enumerate(aligned_token_ids):
        if isinstance(claims, (str, bytes)) or not isinstance(claims, Sequence):
            raise TypeError(f"aligned_token_ids[{b}] must be a list of claims, got {type(claims).__name__}")
        for c, ids in enumerate(claims):
            if isinstance(ids, (Tensor, np.ndarray)):
                ids = ids.tolist()
            if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
                raise TypeError(f"aligned_token_ids[{b}][{c}] must be a list of token positions, "
                                f"got {type(ids).__name__}")
            for i in ids:
                if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                    raise TypeError(f"aligned_token_ids[{b}][{c}] must hold integers, got {type(i).__name__}")
            rows.append(b)
            lens.append(len(ids))
            toks.extend(int(i) for i in ids)
    cu = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=cu[1:])
    as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=device)  # noqa: E731
    return Claims(as_t(rows), as_t(cu), as_t(toks))


def check_claims(claims, B: int, T: int, device) -> Claims:
    """Validated :class:`Claims`, moved to ``device``, for ``[B, T]`` values: 1-d integer tensors, offsets that
    start at 0, never decrease and end at ``len(tokens)``, rows in ``[0, B)``, positions in ``[0, T)``."""
    if not isinstance(claims, tuple) or len(claims) != 3:
        raise TypeError("claims must be a flashuq.Claims (rows, cu, tokens); build one with "
                        f"flashuq.claims_from_lists, got {type(claims).__name__}")
    out = []
    for name, x in zip(("rows", "cu", "tokens"), claims):
        x = as_tensor(x, f"claims.{name}")
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"claims.{name} must be an integer tensor, got {x.dtype}")
        if x.dim() != 1:
            raise ValueError(f"claims.{name} must be 1-d, got shape {tuple(x.shape)}")
        out.append(x.to(device=device, dtype=torch.int64))  # small index arrays: follow the values
    rows, cu, tokens = out
    C = rows.numel()
    if cu.numel() != C + 1:
        raise ValueError(f"claims.cu must have len(rows) + 1 = {C + 1} entries, got {cu.numel()}")
    c = cu.cpu()
    if int(c[0]) != 0 or int(c[-1]) != tokens.numel() or bool((c[1:] < c[:-1]).any()):
        raise ValueError(f"claims.cu must start at 0, never decrease and end at len(tokens) = {tokens.numel()}, "
                         f"got {c.tolist()[:8]}...")
    if C and bool(((rows < 0) | (rows >= B)).any()):
        raise ValueError(f"claims.rows must lie in [0, B) = [0, {B})")
    if tokens.numel() and bool(((tokens < 0) | (tokens >= T)).any()):
        raise ValueError(f"claims.tokens must lie in [0, T) = [0, {T})")
    return Claims(rows, cu, tokens)


def gather_claims(values: Tensor, claims: Claims) -> Tensor:
    """The packed ``[N]`` values of every claim's tokens, claim after claim (``claims`` validated)."""
    counts = claims.cu[1:] - claims.cu[:-1]
    token_row = torch.repeat_interleave(claims.rows, counts)
    return values[token_row, claims.tokens]


def claim_reduce(values, claims, *, op: str = "mean") -> Tensor:
    """``op_{t in claim c} values[rows[c], t]`` for every claim.

    Args:
        values: ``[B, T]`` float per-token values (e.g. ``stats.logprob``, ``stats.entropy``).
        claims: :class:`Claims` (see :func:`claims_from_lists`); positions index the T axis of ``values``
            directly, as LM-Polygraph indexes its per-token arrays.
        op: ``"sum"``, ``"mean"``, ``"max"``, ``"min"`` or ``"logsumexp"``.

    Returns ``[C]``, fp32 (fp64 for fp64 values). A claim without tokens gives NaN (0 for ``"sum"``).
    """
    values = as_tensor(values, "values")
    if not values.dtype.is_floating_point:
        raise TypeError(f"values must be a floating tensor, got {values.dtype}")
    if values.dim() != 2:
        raise ValueError(f"values must be [B, T], got shape {tuple(values.shape)}")
    if not isinstance(op, str) or op not in _CLAIM_OPS:
        raise ValueError(f"op must be one of {_CLAIM_OPS}, got {op!r}")
    claims = check_claims(claims, *values.shape, values.device)
    return masked_reduce(gather_claims(values, claims), op=op, cu_seqlens=claims.cu)


__all__ = ["Claims", "claims_from_lists", "claim_reduce"]
