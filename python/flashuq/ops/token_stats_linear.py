"""``flashuq.token_stats_linear``: the statistics of ``logits = hidden @ weight.T (+ bias)`` without
ever holding the ``[..., V]`` logits of all rows.

The rows are processed in blocks: one matmul per block gives that block's logits, computed exactly
as the model's own head computes them (``F.linear`` in the weight's dtype, then the optional
``logit_scale`` and soft-capping), and the token-statistics kernel reduces them; the block's logits
are freed before the next block. Peak extra memory is ``block_rows × V`` logits instead of
``rows × V``. Per row, the result equals ``token_stats`` on the materialised logits up to the
matmul's own rounding (BLAS may block a large matmul differently from a small one).

This blocked path serves CPU tensors, and CUDA tensors that ask for top-k or are fp64. Other CUDA
tensors take the fused Triton path (:func:`compute_fused`, ``kernels/token_stats_linear.py``):
``tl.dot`` tiles over rows × vocabulary with fp32 accumulation, each tile reduced to the
token-statistics partial and merged in a fixed order (deterministic, no atomics), so no logits
exist beyond one ``[BLOCK_M, BLOCK_N]`` tile per program.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

import torch
import torch.nn.functional as F

from .. import _ext
from ._common import acc_dtype, as_tensor, check_int, check_positive_float, device_guard
from .token_stats import TokenStats, _alloc, _validate, token_stats

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
    if hidden.is_cuda and topk == 0 and rows > 0 and hidden.dtype != torch.float64 and _ext.triton_available():
        out = compute_fused(h2, weight, bias, t2, temperature, renyi=renyi, logit_scale=logit_scale,
                            softcap=softcap)
        return TokenStats(*(None if f is None else f.reshape(*lead, *f.shape[1:]) for f in out))
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


def _head_logits(h2, weight, bias, idx, logit_scale, softcap):
    """The logits of the columns ``idx [rows, k]`` only, in the accumulation dtype (a small gather)."""
    acc = acc_dtype(h2.dtype)
    z = torch.einsum("rd,rkd->rk", h2.to(acc), weight[idx].to(acc))
    if bias is not None:
        z = z + bias[idx].to(acc)
    if logit_scale is not None:
        z = z * logit_scale
    if softcap is not None:
        z = torch.tanh(z / softcap) * softcap
    return z


def compute_fused(h2, weight, bias, t2, temperature, *, renyi=False, logit_scale=None, softcap=None,
                  block_m=None, block_n=None, block_k=None, chunk=None):
    """The fused Triton path (no top-k) on validated 2-D inputs ``h2 [rows, D]``: stage 1 tiles rows ×
    vocabulary with ``tl.dot`` and writes chunk partials, stage 2 is token_stats' merge kernel. The
    emitted token's log-probability comes from a gather of two logits per row,
    ``(z_y − z_argmax)/T + log p_max`` (the max subtracted first). Tests run it through the
    interpreter on CPU tensors."""
    import triton
    import triton.language as tl

    k = _ext.kernels()
    rows, D = h2.shape
    V = weight.shape[0]
    on_gpu = h2.is_cuda
    block_m = block_m or (64 if on_gpu else 16)
    block_n = block_n or (128 if on_gpu else 256)
    block_k = block_k or (64 if on_gpu else 64)
    chunk = chunk or (8192 if on_gpu else 65536)
    if chunk % block_n:
        raise ValueError(f"chunk ({chunk}) must be a multiple of block_n ({block_n})")
    h2 = h2.contiguous()
    weight = weight.contiguous()
    fdt = acc_dtype(h2.dtype)
    acc = tl.float64 if fdt == torch.float64 else tl.float32
    out = list(_alloc(torch.empty((rows, 1), dtype=h2.dtype, device=h2.device), 0, renyi))
    n_chunks = triton.cdiv(V, chunk)
    ws_f = torch.empty((rows, n_chunks, k.token_stats.WS_FIELDS), dtype=fdt, device=h2.device)
    ws_i = torch.empty((rows, n_chunks), dtype=torch.int64, device=h2.device)
    inv_temp = 1.0 / temperature
    inv_hi = float(np.float32(inv_temp))
    inv_lo = inv_temp - inv_hi
    lse, maxlp, argmax, lp, ent, margin, coll, kurt, sc, tkv, tki, rt, fr = out
    with device_guard(h2):
        k.token_stats_linear.token_stats_linear_partial_kernel[(triton.cdiv(rows, block_m), n_chunks)](
            h2, weight, bias if bias is not None else h2, rows, V, D, h2.stride(0), weight.stride(0), inv_hi, inv_lo,
            float(logit_scale or 1.0), float(softcap or 1.0), ws_f, ws_i, n_chunks, chunk,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, HAS_BIAS=bias is not None,
            HAS_SCALE=logit_scale is not None, HAS_SOFTCAP=softcap is not None, ACC=acc, FRAC=renyi,
            IEEE=h2.dtype in (torch.float32, torch.float64), num_warps=4 if on_gpu else 1)
        k.token_stats.token_stats_merge_kernel[(rows,)](
            h2, 1, 0, 0, V, argmax, inv_hi, inv_lo, ws_f, ws_i, lse, argmax, n_chunks,
            lse, maxlp, lp, ent, margin, coll, kurt, sc, argmax, lse, argmax, rt if renyi else lse,
            fr if renyi else lse, K=0, KP=1, HAS_TOKENS=False, ACC=acc, PRECISE=on_gpu, FRAC=renyi,
            num_warps=1 if not on_gpu else 4)
    if t2 is not None:
        idx = torch.stack([t2.to(torch.int64), argmax.clamp(min=0)], dim=1)
        z = _head_logits(h2, weight, bias, idx, logit_scale, softcap)
        out[3] = ((z[:, 0] - z[:, 1]) * inv_temp + maxlp).to(fdt)
    if not renyi:
        out[11] = out[12] = None
    return out


__all__ = ["token_stats_linear"]
