"""Token scores reweighted by attention (docs/methods.md#csl, #focus): CSL weighs each answer token's
log-probability by the attention a verification prompt pays to it; Focus propagates each keyword's
uncertainty to the keywords that attend to it. Batched over sequences; the attention comes from the
caller's capture."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_real
from ._inputs import bool_mask, check_shape, compute_dtype, input_tensor


def csl(attn_rows, logprobs, mask=None) -> Tensor:
    """CSL, Contextualized Sequence Likelihood (Lin, Trivedi, Sun, EMNLP 2024; LM-Polygraph ``CSL``),
    uncertainty::

        w_t = mean_r attn_rows[r, t] / Σ_t' mean_r attn_rows[r, t']
        u   = -Σ_t w_t log p(y_t)

    ``attn_rows [B, L, H, T]`` (or ``[B, R, T]``): the attention from the **last position** of an extra
    pass over ``[verification prompt; answer; suffix]`` to each of the T answer tokens, one row per
    layer and head; LM-Polygraph averages all L·H rows (the paper selects heads). ``logprobs [B, T]``:
    the answer tokens' log-probabilities. ``mask [B, T]`` drops tokens before the normalisation.
    NaN when the weights sum to 0.
    """
    a = input_tensor(attn_rows, "attn_rows", None, "float")
    if a.dim() not in (3, 4):
        raise ValueError(f"attn_rows must be [B, L, H, T] or [B, R, T], got shape {tuple(a.shape)}")
    B, T = a.shape[0], a.shape[-1]
    ll = input_tensor(logprobs, "logprobs", 2, "float", a)
    check_shape(ll, "logprobs", (B, T))
    valid = bool_mask(mask, "mask", (B, T), a)
    dt = compute_dtype(a, ll)
    w = a.to(dt).reshape(B, -1, T).mean(1)
    w = torch.where(valid, w, 0.0)
    w = w / w.sum(1, keepdim=True)
    return -torch.where(valid, w * ll.to(dt), 0.0).sum(1)


def _focus_terms(logits, tokens, attn, keyword_mask, idf, gamma, p_threshold, mask):
    """Focus's per-token scores ``f [B, T]`` and the real keywords ``[B, T]`` (see :func:`focus`)."""
    gamma = check_real(gamma, "gamma")
    p_threshold = check_real(p_threshold, "p_threshold")
    z = input_tensor(logits, "logits", 3, "float")
    B, T, V = z.shape
    y = input_tensor(tokens, "tokens", 2, "int", z)
    check_shape(y, "tokens", (B, T))
    if bool(((y < 0) | (y >= V)).any()):
        raise ValueError(f"tokens must lie in [0, V) = [0, {V})")
    A = input_tensor(attn, "attn", None, "float", z)
    if A.dim() == 5:
        check_shape(A, "attn", (B, A.shape[1], A.shape[2], T, T))
        A = A.amax((1, 2))
    else:
        check_shape(A, "attn", (B, T, T))
    kw = bool_mask(keyword_mask, "keyword_mask", (B, T), z)
    valid = bool_mask(mask, "mask", (B, T), z)
    w_idf = input_tensor(idf, "idf", 1, "float", z)
    if w_idf.shape[0] > V:
        raise ValueError(f"idf has {w_idf.shape[0]} entries, more than the vocabulary's {V}")
    dt = compute_dtype(z, A, w_idf)
    p = torch.softmax(z.to(dt), -1)
    p = torch.where(p < p_threshold, 0.0, p)
    scale = torch.ones(V, dtype=dt, device=z.device)
    scale[: w_idf.shape[0]] = w_idf.to(dt)
    p = p * scale
    p = p / p.sum(-1, keepdim=True)
    h2 = -torch.where(p > 0, p * torch.log2(p), 0.0).sum(-1)
    hc = -torch.log(p.gather(-1, y[..., None].long()).squeeze(-1) + 1e-5) + torch.exp2(h2)
    kw = kw & valid
    A = torch.where(valid[:, None, :], A.to(dt), 0.0)
    Wt = torch.where(kw[:, :, None], A / (A.sum(-1, keepdim=True) + 1e-6), 0.0)
    f = torch.zeros(B, T, dtype=dt, device=z.device)
    hc = torch.where(valid, hc, 0.0)  # (padding steps hold anything; their f stays 0)
    for t in range(T):  # f_t depends on every earlier f_j
        f[:, t] = hc[:, t] + gamma * (Wt[:, t, :t] * f[:, :t]).sum(-1)
    return f, kw


def focus(logits, tokens, attn, keyword_mask, idf, *, gamma: float, p_threshold: float, mask=None) -> Tensor:
    """Focus (Zhang et al., "Enhancing Uncertainty-Based Hallucination Detection with Stronger Focus",
    EMNLP 2023, arXiv 2311.13230; LM-Polygraph ``Focus``), uncertainty::

        p'   = normalise(idf ⊙ p ⊙ 1[p >= p_threshold])           per step, p = softmax(logits)
        hc_t = -ln(p'(y_t) + 1e-5) + 2^{H_2(p')}                   H_2: the base-2 entropy
        W    = keyword rows of the attention, each / (row sum + 1e-6); other rows 0
        f_t  = hc_t + γ Σ_{j<t} W[t, j] f_j
        u    = mean of f over the keyword tokens                  (NaN without one)

    ``logits [B, T, V]`` of the answer's steps and ``tokens [B, T]`` the emitted tokens;
    ``attn [B, T, T]`` the attention among the answer's tokens, or ``[B, L, H, T, T]`` (its maximum over
    layers and heads is taken, as the reference); ``keyword_mask [B, T]`` marks the keywords (the
    reference: spaCy named entities, nouns, numbers and proper nouns); ``idf [V']`` with V' <= V weighs
    the first V' token ids (the reference: IDF over a text corpus). ``gamma`` and ``p_threshold`` have
    no defaults, as in the reference class. ``mask [B, T]`` drops padding steps. A step whose
    thresholded, weighted mass is 0 gives NaN where it is used.
    """
    f, kw = _focus_terms(logits, tokens, attn, keyword_mask, idf, gamma, p_threshold, mask)
    n = kw.sum(1)
    return torch.where(n > 0, torch.where(kw, f, 0.0).sum(1) / n.clamp(min=1).to(f.dtype), torch.nan)


__all__ = ["csl", "focus"]
