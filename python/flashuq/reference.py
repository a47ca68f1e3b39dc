"""Plain float64 definitions of every flashuq op: the formulas in their most readable form.

Every backend is tested against these. They are written for clarity, not speed, and cost many
full-size passes; use the ops for real work.
"""

from __future__ import annotations

import math

import torch

from .ops.token_stats import TokenStats


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    """``log p_v = (x_v - m) - log1p(R)`` with ``m = max x`` and ``R = Σ_{v≠argmax} e^{x_v - m}``.

    Algebraically ``torch.log_softmax``; written this way because on a confident row
    ``log(1 + R)`` rounds to 0 in the textbook form and the row's entropy loses every digit.
    Rows with NaN/+inf, or only -inf, give NaN.
    """
    x = x.double()
    m = x.max(-1, keepdim=True).values
    am = x.argmax(-1, keepdim=True)
    e = torch.exp(x - m).scatter(-1, am, 0.0)
    R = e.sum(-1, keepdim=True)
    lp = (x - m) - torch.log1p(R)
    invalid = torch.isnan(x).any(-1, keepdim=True) | (x == math.inf).any(-1, keepdim=True) | (m == -math.inf)
    return torch.where(invalid, math.nan, lp)


def token_stats(logits, tokens=None, *, temperature: float = 1.0, topk: int = 0) -> TokenStats:
    """float64 reference of :func:`flashuq.token_stats` (same fields, same conventions)."""
    x = torch.as_tensor(logits).double() / temperature
    V = x.shape[-1]
    lp = log_softmax(x)
    p = lp.exp()
    valid = ~torch.isnan(lp).any(-1)
    nan = torch.full(x.shape[:-1], math.nan, dtype=torch.float64)

    lse = torch.where(valid, torch.logsumexp(x.nan_to_num(nan=0.0, posinf=0.0), -1), nan)
    max_logprob = lp.max(-1).values
    argmax = torch.where(valid, x.argmax(-1), -1)
    if tokens is None:
        logprob = max_logprob
    else:
        logprob = lp.gather(-1, torch.as_tensor(tokens).long().unsqueeze(-1)).squeeze(-1)
    entropy = -torch.where(p > 0, p * lp, 0.0).sum(-1)                  # 0 log 0 = 0; log p from lp, not log(p)
    top2 = p.topk(min(2, V), dim=-1).values
    second = top2[..., 1] if V > 1 else torch.zeros_like(top2[..., 0])
    margin = top2[..., 0] - second
    collision = (p * p).sum(-1)
    mu = p.mean(-1, keepdim=True)  # = 1/V up to rounding; the sample mean, like scipy (a constant row gives NaN)
    m2 = ((p - mu) ** 2).mean(-1)
    m4 = ((p - mu) ** 4).mean(-1)
    # scipy.stats.kurtosis defaults; like scipy, a numerically constant row (m2 within rounding of
    # 0) gives NaN rather than a number made of rounding errors
    zero = m2 <= (torch.finfo(torch.float64).eps * mu.squeeze(-1)) ** 2
    kurtosis = torch.where(zero, math.nan, m4 / m2**2 - 3.0)
    finite = torch.isfinite(lp)
    n_fin = finite.sum(-1).double()
    mean_lp = torch.where(finite, lp, 0.0).sum(-1) / n_fin
    self_certainty = -mean_lp - torch.log(n_fin)                         # KL(U || p) over finite entries

    # top-k: descending values, ties broken by the smaller id (a stable sort)
    order = torch.sort(torch.where(torch.isnan(lp), -math.inf, lp), dim=-1, descending=True, stable=True).indices
    topk_ids = torch.where(valid.unsqueeze(-1), order[..., :topk], -1)
    topk_logprobs = lp.gather(-1, order[..., :topk])

    def v(t):
        return torch.where(valid, t, nan)

    return TokenStats(v(lse), v(max_logprob), argmax, v(logprob), v(entropy), v(margin), v(collision),
                      v(kurtosis), v(self_certainty), topk_logprobs, topk_ids)
