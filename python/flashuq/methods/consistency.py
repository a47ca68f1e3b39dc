"""Confidence combined with consistency over K sampled answers (docs/methods.md#consistency-methods):
the greedy answer's own token statistics weighted by how much the samples disagree with it,
batched over questions."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..ops.token_stats import TokenStats
from ._inputs import check_shape, compute_dtype, input_tensor, sample_mask_of
from .samples import _mean
from .token import mean_token_entropy, msp, perplexity


def _per_question(x, name: str, kind: str, B: int, like: Tensor, K: Optional[int] = None) -> Tensor:
    """A ``[B, K]`` input on ``like``'s device (K taken from the first such input)."""
    x = input_tensor(x, name, 2, kind, like)
    if x.shape[0] != B or (K is not None and x.shape[1] != K):
        check_shape(x, name, (B, x.shape[1] if K is None else K))
    return x


def _mean_dissimilarity(stats: TokenStats, greedy_similarity, sample_mask) -> Tensor:
    """``mean_k (1 - s_k)`` over the valid samples, ``[B]`` (NaN without one)."""
    B = stats.logprob.shape[0]
    s = _per_question(greedy_similarity, "greedy_similarity", "float", B, stats.logprob)
    valid = sample_mask_of(sample_mask, B, s.shape[1], s)
    return _mean(1 - s.to(compute_dtype(s, stats.logprob)), valid)  # NaN without a valid sample


def cocoa_msp(stats: TokenStats, greedy_similarity, mask=None, *, sample_mask=None) -> Tensor:
    """CoCoA-MSP (Vashurin et al. 2025, CoCoA; LM-Polygraph ``CocoaMSP``), uncertainty:
    ``(-Σ_t log p(y_t)) · mean_k (1 - s_k)``.

    ``stats``/``mask``: the greedy answer's token statistics ``[B, T]``; ``greedy_similarity [B, K]``:
    the similarity of the greedy answer to each sample (LM-Polygraph: a cross-encoder's score averaged
    over both orders); the mean runs over ``sample_mask``'s valid samples (NaN without one).
    """
    return msp(stats, mask) * _mean_dissimilarity(stats, greedy_similarity, sample_mask)


def cocoa_ppl(stats: TokenStats, greedy_similarity, mask=None, *, sample_mask=None) -> Tensor:
    """CoCoA-PPL (LM-Polygraph ``CocoaPPL``), uncertainty: ``(-mean_t log p(y_t)) · mean_k (1 - s_k)``;
    arguments as :func:`cocoa_msp`."""
    return perplexity(stats, mask) * _mean_dissimilarity(stats, greedy_similarity, sample_mask)


def cocoa_mte(stats: TokenStats, greedy_similarity, mask=None, *, sample_mask=None) -> Tensor:
    """CoCoA-MTE (LM-Polygraph ``CocoaMTE``), uncertainty: ``(mean_t H_t) · mean_k (1 - s_k)`` with the
    full-vocabulary entropy ``H_t``; arguments as :func:`cocoa_msp`."""
    return mean_token_entropy(stats, mask) * _mean_dissimilarity(stats, greedy_similarity, sample_mask)


def semantic_density(stats: TokenStats, sample_logprobs, sample_lengths, contra, neutral, mask=None, *,
                     sample_mask=None, text_ids=None) -> Tensor:
    """Semantic density (Qiu & Miikkulainen, NeurIPS 2024; LM-Polygraph ``SemanticDensity``),
    **negated** (a confidence)::

        w_i = p_i^(1/len_i)                       each distinct sample's geometric-mean token probability
        d_i = C_i + N_i / 2                       NLI(greedy -> sample i): contradiction + half the neutral
        k_i = 1 - d_i if d_i <= 1 else 0
        w_g = exp(mean_t log p(y_t))              the greedy answer's (stats, mask)
        u   = -(Σ_i w_i k_i + w_g) / (Σ_i w_i + w_g)

    ``sample_logprobs [B, K]`` are the samples' sequence log-probabilities, ``sample_lengths [B, K]``
    their token counts, ``contra``/``neutral [B, K]`` the NLI probabilities of (greedy, sample i).
    LM-Polygraph sums over the distinct sample *texts* (the first of equal ones): pass ``text_ids
    [B, K]`` (equal ids = equal texts) to do the same; ``sample_mask`` drops samples. A valid sample
    with a length <= 0 gives NaN for its question. ``w_g`` is ``exp(mean log p)``, which equals
    LM-Polygraph's ``exp(Σ log p)^(1/T)`` without its underflow to 0 below ``Σ log p = -745``.
    """
    B = stats.logprob.shape[0]
    like = stats.logprob
    lp = _per_question(sample_logprobs, "sample_logprobs", "float", B, like)
    K = lp.shape[1]
    lengths = _per_question(sample_lengths, "sample_lengths", "real", B, like, K)
    c = _per_question(contra, "contra", "float", B, like, K)
    nu = _per_question(neutral, "neutral", "float", B, like, K)
    valid = sample_mask_of(sample_mask, B, K, lp)
    if text_ids is not None:
        ids = _per_question(text_ids, "text_ids", "int", B, like, K)
        same = (ids[:, :, None] == ids[:, None, :]) & valid[:, None, :]
        earlier = torch.ones(K, K, dtype=torch.bool, device=lp.device).tril(-1)  # [i, j]: j < i
        valid = valid & ~(same & earlier).any(2)
    dt = compute_dtype(lp, c, nu, like)
    n = lengths.to(dt)
    w = torch.where(n > 0, torch.exp(lp.to(dt) / n), torch.nan)
    d = c.to(dt) + nu.to(dt) / 2
    k = torch.where(d <= 1, 1 - d, 0.0)
    k = torch.where(d.isnan(), torch.nan, k)  # (d <= 1 is False for NaN)
    w_g = torch.exp(-perplexity(stats, mask).to(dt))
    num = torch.where(valid, w * k, 0.0).sum(1) + w_g
    den = torch.where(valid, w, 0.0).sum(1) + w_g
    return -(num / den)


__all__ = ["cocoa_msp", "cocoa_ppl", "cocoa_mte", "semantic_density"]
