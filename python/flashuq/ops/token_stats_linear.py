"""``flashuq.token_stats_linear``: the statistics of ``logits = hidden @ weight.T (+ bias)`` without
ever holding the ``[..., V]`` logits of all rows.

The rows are processed in blocks: one matmul per block gives that block's logits, computed exactly
as the model's own head computes them (``F.linear`` in the weight's dtype, then the optional
``logit_scale`` and soft-capping), and the token-statistics kernel reduces them; the block's logits
are freed before the next block. Peak extra memory is ``block_rows × V`` logits instead of
``rows × V``. Per row, the result equals ``token_stats`` on the materialised logits up to the
matmul's own rounding (BLAS may block a large matmul differently from a small one).

This is the CPU path of API.md's ``token_stats_linear`` and, for now, the CUDA one as well (row
blocks, the Triton token-statistics kernel per block). The fused Triton kernel tiled over rows ×
vocabulary (ISSUE 5) is still to come; the blocked path already bounds the memory.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ._common import as_tensor, check_int, check_positive_float
from .token_stats import TokenStats, _validate, token_stats

#: logits kept at once by default (per block): 64 MiB of fp32
DEFAULT_BLOCK_BYTES = 64 << 20


def token_stats_linear(hidden, weight, tokens=None, *, bias=None, temperature: float = 1.0, topk: int = 0,
                       renyi: bool = False, logit_scale: Optional[float] = None, softcap: Optional[float] = None,
                       block_rows: Optional[int] = None) -> TokenStats:
    """:func:`flashuq.token_stats` of ``logits = hidden @ weight.T + bias`` without materialising them.

    Args:
        hidden: ``[..., D]`` final hidden states (after the model's final norm), float.
        weight: ``[V, D]`` the output projection (``lm_head.weight``; for tied embeddings the input
            embedding matrix), same dtype and device as ``hidden``.
        tokens: optional ``[...]`` ids of the emitted tokens, for ``logprob``.
        bias: optional ``[V]`` (GPT-2-style heads have none; some do).
        temperature, topk, renyi: as in :func:`flashuq.token_stats`.
        logit_scale: multiply the logits by this first (Cohere-style ``config.logit_scale``).
        softcap: ``softcap · tanh(logits / softcap)`` after the scale (Gemma-2-style
            ``config.final_logit_softcapping``); None = no capping.
        block_rows: rows per block (default: as many as fit in 64 MiB of fp32 logits).

    Returns:
        :class:`~flashuq.TokenStats` with the leading shape of ``hidden``.
    """
    hidden = as_tensor(hidden, "hidden")
    weight = as_tensor(weight, "weight")
    for name, t in (("hidden", hidden), ("weight", weight)):
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if hidden.dim() < 1:
        raise ValueError("hidden must be [..., D], got a 0-d tensor")
    if weight.dim() != 2 or weight.shape[0] == 0:
        raise ValueError(f"weight must be [V, D] with V >= 1, got shape {tuple(weight.shape)}")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must be [V, D={hidden.shape[-1]}] to match hidden, got {tuple(weight.shape)}")
    if weight.device != hidden.device:
        raise ValueError(f"weight is on {weight.device} but hidden is on {hidden.device}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight ({weight.dtype}) and hidden ({hidden.dtype}) must have the same dtype")
    V = weight.shape[0]
    if bias is not None:
        bias = as_tensor(bias, "bias")
        if bias.shape != (V,):
            raise ValueError(f"bias must be [V={V}], got shape {tuple(bias.shape)}")
        if bias.device != hidden.device or bias.dtype != hidden.dtype:
            raise ValueError("bias must have the dtype and device of hidden")
    if logit_scale is not None:
        logit_scale = check_positive_float(logit_scale, "logit_scale")
    if softcap is not None:
        softcap = check_positive_float(softcap, "softcap")
    lead = hidden.shape[:-1]
    rows = math.prod(lead)
    if block_rows is None:
        block_rows = max(1, DEFAULT_BLOCK_BYTES // (4 * V))
    block_rows = check_int(block_rows, "block_rows", 1, 2**62)
    # temperature and topk checked once, against a data-less stand-in for the logits
    _, _, temperature, topk = _validate(torch.empty((*lead, V), device="meta"), None, temperature, topk)
    if tokens is not None:  # the id range is checked per block by token_stats
        tokens = as_tensor(tokens, "tokens")
        if tokens.shape != lead:
            raise ValueError(f"tokens must have the leading shape of hidden {tuple(lead)}, got {tuple(tokens.shape)}")
        if tokens.device != hidden.device:
            raise ValueError(f"tokens is on {tokens.device} but hidden is on {hidden.device}")

    h2 = hidden.reshape(rows, hidden.shape[-1])
    t2 = None if tokens is None else tokens.reshape(rows)
    parts = []
    for lo in range(0, rows, block_rows):
        logits = F.linear(h2[lo:lo + block_rows], weight, bias)
        if logit_scale is not None:
            logits = logits * logit_scale
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        parts.append(token_stats(logits, None if t2 is None else t2[lo:lo + block_rows],
                                 temperature=temperature, topk=topk, renyi=renyi))
        del logits
    if not parts:  # no rows: the empty result of token_stats
        return token_stats(torch.empty((*lead, V), dtype=hidden.dtype, device=hidden.device), tokens,
                           temperature=temperature, topk=topk, renyi=renyi)
    fields = []
    for i, name in enumerate(TokenStats._fields):
        vals = [p[i] for p in parts]
        if vals[0] is None:
            fields.append(None)
            continue
        cat = torch.cat(vals, dim=0)
        fields.append(cat.reshape(*lead, *cat.shape[1:]))
    return TokenStats(*fields)


__all__ = ["token_stats_linear"]
