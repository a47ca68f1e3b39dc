"""MAQA's first-answer-token scores (Yang, Yoo, Lee, NAACL Findings 2025, arXiv 2408.06816;
docs/methods.md#maqa).

For each answer of a multi-answer output, the distribution at the answer's **first token** is
scored through its top-k probabilities ``q`` (from the full softmax, not renormalised). Per answer:
``max = q_1``, ``margin = q_1 - q_2``, ``Σ_j q_j ln q_j`` (the code's "entropy", a confidence) and
``-q_1 ln q_1``; per question, a masked mean over the answers (the paper's aggregation is not
public [unverified]). Estimators return uncertainties: the confidences are negated.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_int
from ..ops._common import as_tensor
from ..ops.masked_reduce import masked_reduce
from ..ops.token_stats import token_stats


class TopKAtPositions(NamedTuple):
    """Per answer ``[B, A]``; NaN where ``pos_mask`` is 0."""

    max_prob: Tensor        #: q_1
    margin: Tensor          #: q_1 - q_2 (full-softmax probabilities)
    topk_neg_entropy: Tensor  #: Σ_{j≤k} q_j ln q_j (unnormalised top-k; MAQA's "Entropy")
    greedy_entropy: Tensor  #: -q_1 ln q_1


def topk_stats_at_positions(logits, pos, pos_mask=None, *, k: int = 10) -> TopKAtPositions:
    """Top-k statistics of ``logits [B, T, V]`` at positions ``pos [B, A]`` (one pass over those rows only)."""
    logits = as_tensor(logits, "logits")
    pos = as_tensor(pos, "pos")
    k = check_int(k, "k", 1, 64)
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, T, V], got shape {tuple(logits.shape)}")
    if pos.dim() != 2 or pos.shape[0] != logits.shape[0] or pos.dtype.is_floating_point or pos.dtype == torch.bool:
        raise ValueError(f"pos must be integer [B, A] with B = {logits.shape[0]}, got {pos.dtype} {tuple(pos.shape)}")
    real = torch.ones(pos.shape, dtype=torch.bool, device=pos.device) if pos_mask is None else (
        as_tensor(pos_mask, "pos_mask") != 0)
    if real.shape != pos.shape:
        raise ValueError(f"pos_mask must have the shape of pos {tuple(pos.shape)}, got {tuple(real.shape)}")
    T = logits.shape[1]
    p = torch.where(real, pos, 0).long()
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= T):
        raise ValueError(f"pos must be in [0, T={T}) where pos_mask is set")
    rows = logits[torch.arange(logits.shape[0], device=logits.device)[:, None], p.to(logits.device)]  # [B, A, V]
    s = token_stats(rows, topk=min(k, logits.shape[-1]))
    q = s.topk_logprobs.exp()
    nan = torch.tensor(float("nan"), dtype=q.dtype, device=q.device)
    keep = real.to(q.device)
    q1 = q[..., 0]
    return TopKAtPositions(
        max_prob=torch.where(keep, q1, nan),
        margin=torch.where(keep, s.margin, nan),
        topk_neg_entropy=torch.where(keep, torch.special.xlogy(q, q).sum(-1), nan),
        greedy_entropy=torch.where(keep, -torch.special.xlogy(q1, q1), nan),
    )


def _mean(x: Tensor, pos_mask) -> Tensor:
    mask = None if pos_mask is None else as_tensor(pos_mask, "pos_mask").to(x.device)
    return masked_reduce(x, mask, op="mean")


def maqa_max_prob(logits, pos, pos_mask=None, *, k: int = 10) -> Tensor:
    """``-mean_answers q_1`` (MAQA "MSP"/"max logit", negated)."""
    return -_mean(topk_stats_at_positions(logits, pos, pos_mask, k=k).max_prob, pos_mask)


def maqa_margin(logits, pos, pos_mask=None, *, k: int = 10) -> Tensor:
    """``-mean_answers (q_1 - q_2)`` (MAQA "Margin", negated)."""
    return -_mean(topk_stats_at_positions(logits, pos, pos_mask, k=k).margin, pos_mask)


def maqa_entropy(logits, pos, pos_mask=None, *, k: int = 10) -> Tensor:
    """``mean_answers -Σ_{j≤k} q_j ln q_j``: the top-k entropy, i.e. MAQA's coded "Entropy" negated."""
    return -_mean(topk_stats_at_positions(logits, pos, pos_mask, k=k).topk_neg_entropy, pos_mask)


def maqa_greedy_entropy(logits, pos, pos_mask=None, *, k: int = 10) -> Tensor:
    """``mean_answers -q_1 ln q_1`` (MAQA ``mean_greedy_entropy``; non-monotone in q_1, treated as an uncertainty)."""
    return _mean(topk_stats_at_positions(logits, pos, pos_mask, k=k).greedy_entropy, pos_mask)
