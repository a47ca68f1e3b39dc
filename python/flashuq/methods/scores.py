"""``fuq.sequence_scores``: every token-statistics method for a batch in a handful of reductions.

Calling the estimators of :mod:`flashuq.methods.token` one by one reduces the same few per-token
fields again and again (log-probabilities alone feed six of them). Here the fields that share a
reduction are stacked and reduced together: one masked mean over ``[F, B, T]``, one masked sum,
one max and one quantile. Each row of a stacked reduction is reduced exactly as the single call
would reduce it, so the results are bitwise those of the individual functions (tested).
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from ..ops.masked_reduce import masked_reduce
from ..ops.token_stats import TokenStats
from .token import _empty_nan, chow_quantile

#: the names sequence_scores returns (renyi_neg and fisher_rao only for stats with renyi=True)
SCORES = ("msp", "gnll", "perplexity", "mean_token_entropy", "max_token_entropy", "geometric_mean_prob",
          "arithmetic_mean_prob", "mean_kurtosis", "chow_sum", "chow_avg", "chow_quantile", "self_certainty",
          "renyi_neg", "fisher_rao")


def sequence_scores(stats: TokenStats, mask=None, *, chow_alpha: float = 0.0) -> Dict[str, Tensor]:
    """Every estimator that needs only the token statistics, for ``[B, T]`` rows at once.

    Args:
        stats: :class:`~flashuq.TokenStats` of ``[B, T]`` rows (``fuq.token_stats(logits, tokens)``;
            add ``renyi=True`` to also get ``renyi_neg`` and ``fisher_rao``).
        mask: ``[B, T]``, nonzero = generated token; None = all tokens are real.
        chow_alpha: the level of ``chow_quantile`` (0 = the least likely token).

    Returns:
        ``{name: [B] uncertainty}`` for the names in :data:`SCORES` (the two tempered ones only when
        ``stats`` has them), each equal to ``flashuq.methods.<name>(stats, mask)``. Higher = less
        trustworthy; an empty sequence gives NaN.
    """
    if not isinstance(stats, TokenStats):
        raise TypeError(f"stats must be a flashuq.TokenStats, got {type(stats).__name__}")
    lp = stats.logprob
    if lp.dim() < 1:
        raise ValueError(f"stats must hold [..., T] rows, got fields of shape {tuple(lp.shape)}")
    tempered = stats.renyi_term is not None and stats.fisher_rao is not None
    chow = chow_quantile(stats, mask, alpha=chow_alpha)  # validates alpha and mask first

    mean_fields = [lp, stats.entropy, torch.exp(lp), stats.kurtosis, stats.self_certainty]
    if tempered:
        mean_fields += [stats.renyi_term, stats.fisher_rao]
    m = _stacked(masked_reduce, mean_fields, mask, op="mean")
    s = _stacked(masked_reduce, [lp, stats.max_logprob], mask, op="sum")
    if mask is not None:
        mask = torch.as_tensor(mask).to(lp.device)
    s = _empty_nan(s, None if mask is None else mask.unsqueeze(0).expand(2, *mask.shape))
    h_max = masked_reduce(stats.entropy, mask, op="max")

    out = {
        "msp": -s[0],
        "gnll": -s[1],
        "perplexity": -m[0],
        "mean_token_entropy": m[1],
        "max_token_entropy": h_max,
        "geometric_mean_prob": -torch.exp(m[0]),
        "arithmetic_mean_prob": -m[2],
        "mean_kurtosis": -m[3],
        "chow_sum": -s[0],
        "chow_avg": -m[0],
        "chow_quantile": chow,
        "self_certainty": -m[4],
    }
    if tempered:
        out["renyi_neg"] = -m[5]
        out["fisher_rao"] = -m[6]
    return out


def _stacked(reduce, fields, mask, **kw) -> Tensor:
    """``reduce`` over ``[F, ..., T]``: the fields stacked, the mask broadcast to match."""
    values = torch.stack(fields)
    if mask is not None:
        mask = torch.as_tensor(mask)
        if mask.shape != fields[0].shape:
            raise ValueError(f"mask must have the shape of the statistics {tuple(fields[0].shape)}, "
                             f"got {tuple(mask.shape)}")
        mask = mask.to(values.device).unsqueeze(0).expand(values.shape)
    return reduce(values, mask, **kw)


__all__ = ["SCORES", "sequence_scores"]
