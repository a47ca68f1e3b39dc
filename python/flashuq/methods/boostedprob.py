"""BoostedProb (docs/methods.md#boostedprob): a token's probability, boosted to the mass of the whole
dominant cluster when the token belongs to it. Batched over ``[B, T, V]`` logits; only the top few
hundred entries of each step can be dominant, so one ``topk`` per step replaces the reference's sort."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_real
from ._inputs import bool_mask, check_shape, compute_dtype, input_tensor

_SCORES = ("sum_dominant_mass", "weighted_sum_dominant_mass")


def boostedprob_token_scores(logits, tokens, *, p_jump: float = 0.3, epsilon: float = 0.005,
                             score: str = "sum_dominant_mass", gamma: float = 0.01) -> Tensor:
    """Per-token BoostedProb ``[B, T]`` (Dang, Le, Niehues, "Are Generative Models Underconfident? Better
    Quality Estimation with Boosted Model Probability", EMNLP 2025; ``calculate_boostedprob`` of the
    ``boostedprob`` package 0.1.1, which LM-Polygraph uses, with its defaults), a confidence in [0, 1]::

        p_(0) >= p_(1) >= ...                 the step's probabilities, sorted
        cut   = last i with p_(i) - p_(i+1) > p_jump · p_(i)  and  p_(i) - p_(i+1) > epsilon
        D     = {p_(0), ..., p_(cut)}          the dominant tokens (none if no i qualifies)
        b_t   = Σ_D p    if y_t ∈ D            ("sum_dominant_mass")
                Σ_D p · p(y_t)^gamma           ("weighted_sum_dominant_mass", from the package's
                                               repository after 0.1.1)
                p(y_t)   otherwise

    ``logits [B, T, V]`` (or log-probabilities: both are normalised with a logsumexp), ``tokens [B, T]``
    the emitted tokens. The gap test needs ``p_(i) > epsilon``, so fewer than ``1/epsilon`` entries can
    precede the cut: a ``topk`` of ``ceil(1/epsilon) + 2`` entries finds the same cut as the reference's
    full sort (``epsilon = 0`` sorts the whole step). A step whose logits hold a NaN or are all ``-inf``
    gives NaN.
    """
    p_jump = check_real(p_jump, "p_jump", 0.0)
    epsilon = check_real(epsilon, "epsilon", 0.0)
    gamma = check_real(gamma, "gamma", 0.0)
    if score not in _SCORES:
        raise ValueError(f"score must be one of {_SCORES}, got {score!r}")
    z = input_tensor(logits, "logits", 3, "float")
    B, T, V = z.shape
    if V == 0:
        raise ValueError("logits must have a vocabulary axis V >= 1, got V = 0")
    y = input_tensor(tokens, "tokens", 2, "int", z)
    check_shape(y, "tokens", (B, T))
    if bool(((y < 0) | (y >= V)).any()):
        raise ValueError(f"tokens must lie in [0, V) = [0, {V})")
    dt = compute_dtype(z)
    zc = z.to(dt)
    lse = torch.logsumexp(zc, -1, keepdim=True)
    window = V if epsilon == 0 else min(V, math.ceil(1.0 / epsilon) + 2)
    top = torch.topk(zc, window, dim=-1, sorted=True).values
    p = torch.exp(top - lse)                                               # [B, T, window], descending
    gap = p[..., :-1] - p[..., 1:]
    cut_ok = (gap > p_jump * p[..., :-1]) & (gap > epsilon)                # [B, T, window - 1]
    idx = torch.arange(window - 1, device=z.device)
    no_cut = torch.full((B, T, 1), -1, dtype=idx.dtype, device=z.device)  # (a window of one has no gap)
    cut = torch.cat([no_cut, torch.where(cut_ok, idx, -1)], -1).amax(-1)  # -1: no dominant cluster
    in_cluster = idx[None, None, :] <= cut[..., None]
    mass = torch.where(in_cluster, p[..., :-1], 0.0).sum(-1)
    p_cut = p.gather(-1, cut.clamp(min=0)[..., None]).squeeze(-1)
    p_y = torch.exp(zc.gather(-1, y[..., None].long()).squeeze(-1) - lse.squeeze(-1))
    dominant = (cut >= 0) & (p_y >= p_cut)  # the cut's gap is strict, so D = {v : p_v >= p_(cut)}
    boosted = mass if score == "sum_dominant_mass" else mass * torch.pow(p_y, gamma)
    out = torch.where(dominant, boosted, p_y)
    bad = torch.isnan(lse.squeeze(-1)) | torch.isinf(lse.squeeze(-1))
    return torch.where(bad, torch.nan, out)


def boostedprob(logits, tokens, mask=None, *, p_jump: float = 0.3, epsilon: float = 0.005,
                score: str = "sum_dominant_mass", gamma: float = 0.01) -> Tensor:
    """BoostedProb (Dang, Le, Niehues, EMNLP 2025; LM-Polygraph ``BoostedProbSequence``), uncertainty:
    ``-mean_t b_t`` over the real tokens of ``mask [B, T]``, with the per-token scores of
    :func:`boostedprob_token_scores` (whose arguments it takes). Returns ``[B]``; NaN for an empty row."""
    b = boostedprob_token_scores(logits, tokens, p_jump=p_jump, epsilon=epsilon, score=score, gamma=gamma)
    m = bool_mask(mask, "mask", b.shape, b)
    n = m.sum(-1)
    return -torch.where(n > 0, torch.where(m, b, 0.0).sum(-1) / n.clamp(min=1), torch.nan)


__all__ = ["boostedprob_token_scores", "boostedprob"]
