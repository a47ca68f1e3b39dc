"""BoostedProb (docs/methods.md#boostedprob): a token's probability, boosted to the mass of the whole
dominant cluster when the token belongs to it. Batched over ``[B, T, V]`` logits: only entries above
``epsilon`` can precede the cut, so a step's few largest log-probabilities (from the fused
``token_stats`` pass) replace the reference's sort of the vocabulary."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_real
from ..ops.token_stats import token_stats
from ._inputs import bool_mask, check_shape, input_tensor

_SCORES = ("sum_dominant_mass", "weighted_sum_dominant_mass")


#: top entries read from the fused token_stats pass; a step needs more only when its 32nd largest
#: probability still exceeds epsilon (then the full-window path recomputes it). 16 left 35% of
#: SmolLM2-135M's sampled steps to redo, 32 leaves 2.6%, at 0.3 ms more per 16 rows of V = 49152
FAST_TOPK = 32


def _check_options(p_jump, epsilon, score, gamma):
    if score not in _SCORES:
        raise ValueError(f"score must be one of {_SCORES}, got {score!r}")
    return check_real(p_jump, "p_jump", 0.0), check_real(epsilon, "epsilon", 0.0), check_real(gamma, "gamma", 0.0)


def boosted_from_top(top_logprobs: Tensor, top_ids: Tensor, token: Tensor, token_logprob: Tensor, V: int, *,
                     p_jump: float = 0.3, epsilon: float = 0.005, score: str = "sum_dominant_mass",
                     gamma: float = 0.01):
    """BoostedProb from each step's ``k`` largest log-probabilities ``[..., k]`` (descending) with their ids,
    and the emitted token and its log-probability ``[...]``: ``(scores [...], exact [...])``. The token is
    dominant when its id is among the entries before the cut (as the reference decides it: a comparison of
    probabilities computed two ways could disagree in the last bit). ``exact`` is True where the ``k``
    entries decide the cut: ``k = V``, or the k-th probability is at most ``epsilon`` (a cut needs
    ``p_(i) > epsilon``, so none lies at or after it). Elsewhere the score is not the reference's;
    recompute those steps."""
    k = top_logprobs.shape[-1]
    p = torch.exp(top_logprobs)
    gap = p[..., :-1] - p[..., 1:]
    cut_ok = (gap > p_jump * p[..., :-1]) & (gap > epsilon)                    # [..., k - 1]
    idx = torch.arange(k, device=p.device)
    cut = torch.where(cut_ok, idx[:-1], -1).amax(-1) if k > 1 else torch.full(p.shape[:-1], -1, device=p.device)
    in_cluster = idx <= cut[..., None]                                          # [..., k]; cut -1: none
    mass = torch.where(in_cluster, p, 0.0).sum(-1)
    dominant = (in_cluster & (top_ids == token[..., None])).any(-1)
    p_y = torch.exp(token_logprob)
    boosted = mass if score == "sum_dominant_mass" else mass * torch.pow(p_y, gamma)
    out = torch.where(dominant, boosted, p_y)
    bad = torch.isnan(token_logprob) | torch.isnan(p[..., 0])
    exact = bad | (k >= V) | (p[..., -1] <= epsilon)
    return torch.where(bad, torch.nan, out), exact


def boosted_from_logits(z: Tensor, y: Tensor, p_jump, epsilon, score, gamma) -> Tensor:
    """The steps ``z [n, V]`` from their ``ceil(1/epsilon) + 2`` largest logits (all V when epsilon = 0)."""
    V = z.shape[-1]
    lse = torch.logsumexp(z, -1, keepdim=True)
    window = V if epsilon == 0 else min(V, math.ceil(1.0 / epsilon) + 2)
    top = torch.topk(z, window, dim=-1, sorted=True)
    lp_y = z.gather(-1, y[..., None]).squeeze(-1) - lse.squeeze(-1)
    out, _ = boosted_from_top(top.values - lse, top.indices, y, lp_y, V, p_jump=p_jump, epsilon=epsilon,
                              score=score, gamma=gamma)
    return torch.where(torch.isinf(lse.squeeze(-1)), torch.nan, out)


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

    ``logits [B, T, V]`` (or log-probabilities), ``tokens [B, T]`` the emitted tokens. One fused
    ``token_stats`` pass gives each step's 32 largest log-probabilities; they decide the cut unless the
    32nd still exceeds ``epsilon`` (a gap test needs ``p_(i) > epsilon``), and those rare steps are redone
    from their ``ceil(1/epsilon) + 2`` largest logits, which is as exact as the reference's full sort. A
    step whose logits hold a NaN or are all ``-inf`` gives NaN.
    """
    p_jump, epsilon, gamma = _check_options(p_jump, epsilon, score, gamma)
    z = input_tensor(logits, "logits", 3, "float")
    B, T, V = z.shape
    if V == 0:
        raise ValueError("logits must have a vocabulary axis V >= 1, got V = 0")
    y = input_tensor(tokens, "tokens", 2, "int", z)
    check_shape(y, "tokens", (B, T))
    if bool(((y < 0) | (y >= V)).any()):
        raise ValueError(f"tokens must lie in [0, V) = [0, {V})")
    if z.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        z = z.float()
    y = y.long()
    st = token_stats(z, y, topk=min(V, FAST_TOPK))
    out, exact = boosted_from_top(st.topk_logprobs, st.topk_ids, y, st.logprob, V, p_jump=p_jump, epsilon=epsilon,
                                  score=score, gamma=gamma)
    if not bool(exact.all()):
        redo = ~exact
        out = out.clone()
        out[redo] = boosted_from_logits(z[redo].to(out.dtype), y[redo], p_jump, epsilon, score, gamma)
    return out


def boostedprob(logits, tokens, mask=None, *, p_jump: float = 0.3, epsilon: float = 0.005,
                score: str = "sum_dominant_mass", gamma: float = 0.01) -> Tensor:
    """BoostedProb (Dang, Le, Niehues, EMNLP 2025; LM-Polygraph ``BoostedProbSequence``), uncertainty:
    ``-mean_t b_t`` over the real tokens of ``mask [B, T]``, with the per-token scores of
    :func:`boostedprob_token_scores` (whose arguments it takes). Returns ``[B]``; NaN for an empty row."""
    b = boostedprob_token_scores(logits, tokens, p_jump=p_jump, epsilon=epsilon, score=score, gamma=gamma)
    m = bool_mask(mask, "mask", b.shape, b)
    n = m.sum(-1)
    return -torch.where(n > 0, torch.where(m, b, 0.0).sum(-1) / n.clamp(min=1), torch.nan)


__all__ = ["boostedprob_token_scores", "boostedprob", "boosted_from_top"]
