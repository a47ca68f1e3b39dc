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


def token_stats(logits, tokens=None, *, temperature: float = 1.0, topk: int = 0, renyi: bool = False) -> TokenStats:
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

    renyi_term = fisher_rao = None
    if renyi:
        # LM-Polygraph RenyiNeg / FisherRao (alpha = 1/2, tau = 2) over all V entries:
        # q = softmax(lp / 2); r = [log sum q^a - (a - 1) log V] / (a - 1); f = (2/pi) acos(sum sqrt(q / V))
        a = 0.5
        lq = log_softmax(lp / 2.0)
        log_sum_qa = torch.logsumexp(torch.where(torch.isnan(lq), -math.inf, lq) * a, -1)
        renyi_term = v((log_sum_qa - (a - 1.0) * math.log(V)) / (a - 1.0))
        bc = torch.exp(torch.logsumexp(torch.where(torch.isnan(lq), -math.inf, lq) / 2.0, -1) - 0.5 * math.log(V))
        fisher_rao = v(2.0 / math.pi * torch.acos(bc.clamp(max=1.0)))

    return TokenStats(v(lse), v(max_logprob), argmax, v(logprob), v(entropy), v(margin), v(collision),
                      v(kurtosis), v(self_certainty), topk_logprobs, topk_ids, renyi_term, fisher_rao)


# ---------------------------------------------------------------------------------------------
# Sequence level: masked and ragged reductions (METHODS.md §3.1)
# ---------------------------------------------------------------------------------------------

def _rows(values, mask=None, cu_seqlens=None):
    """The valid values of each sequence, as a list of float64 1-d tensors."""
    v = torch.as_tensor(values).double()
    if cu_seqlens is not None:
        cu = torch.as_tensor(cu_seqlens).long().tolist()
        return [v[cu[b]:cu[b + 1]] for b in range(len(cu) - 1)]
    v2 = v.reshape(-1, v.shape[-1])
    m2 = torch.ones_like(v2, dtype=torch.bool) if mask is None else torch.as_tensor(mask).reshape(v2.shape) != 0
    return [v2[b][m2[b]] for b in range(v2.shape[0])]


def masked_reduce(values, mask=None, *, op="mean", weights=None, cu_seqlens=None):
    """float64 reference of :func:`flashuq.masked_reduce`: ``op`` over each sequence's real tokens.

    sum: Σ w·v (0 for an empty sequence); mean: Σ w·v / Σ w; max, min; logsumexp: log Σ w·e^v.
    Every op but sum gives NaN for an empty sequence; a NaN among the real tokens gives NaN.
    """
    rows = _rows(values, mask, cu_seqlens)
    wrows = None if weights is None else _rows(weights, mask, cu_seqlens)
    out = []
    for b, r in enumerate(rows):
        w = torch.ones_like(r) if wrows is None else wrows[b]
        if r.numel() == 0:
            out.append(0.0 if op == "sum" else math.nan)
        elif op == "sum":
            out.append(float((w * r).sum()))
        elif op == "mean":
            out.append(float((w * r).sum() / w.sum()))
        elif op == "max":
            out.append(math.nan if torch.isnan(r).any() else float(r.max()))
        elif op == "min":
            out.append(math.nan if torch.isnan(r).any() else float(r.min()))
        elif op == "logsumexp":
            out.append(float(torch.logsumexp(r + torch.log(w), 0)))
        else:
            raise ValueError(op)
    shape = (len(rows),) if cu_seqlens is not None else torch.as_tensor(values).shape[:-1]
    return torch.tensor(out, dtype=torch.float64).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Ensemble decomposition (METHODS.md §4)
# ---------------------------------------------------------------------------------------------

def ensemble_stats(logits, *, dim=0, mode="pe", member_ll=None, temperature=1.0):
    """float64 reference of :func:`flashuq.ensemble_stats`, straight from the definitions.

    ``p̄ = Σ_m w_m P_m`` (``w = 1/M`` for "pe", ``softmax_m(member_ll)`` for "ep");
    TU = H(p̄); AU = Σ_m w_m H(P_m); MI = TU - AU; EPKL_total = -Σ_v p̄_v Σ_m w_m log P_mv;
    epkl = EPKL_total - AU; rmi = EPKL_total - TU. ``0·log 0 = 0`` (a column with p̄_v = 0 and a
    member with w_m = 0 drop out); ``log P_mv = -inf`` where ``p̄_v > 0`` makes EPKL +inf.
    A NaN/+inf logit, an all -inf member, or an invalid ``member_ll`` make the position NaN.
    """
    from .ops.ensemble_stats import EnsembleStats

    x = torch.as_tensor(logits).double().movedim(dim, 0) / temperature  # [M, ..., V]
    M = x.shape[0]
    lp = log_softmax(x)                                                   # NaN rows where invalid
    if mode == "pe":
        lw = torch.full(x.shape[:-1], -math.log(M), dtype=torch.float64)
    elif mode == "ep":
        lw = torch.log_softmax(torch.as_tensor(member_ll).double().movedim(dim, 0), dim=0)
    else:
        raise ValueError(mode)
    w = lw.exp().unsqueeze(-1)                                            # [M, ..., 1]
    has_w = w > 0
    p = lp.exp()
    ent_m = -torch.where(p > 0, p * lp, 0.0).sum(-1, keepdim=True)        # H(P_m)
    aleatoric = torch.where(has_w, w * ent_m, 0.0).sum(0).squeeze(-1)
    lpbar = torch.logsumexp(torch.where(has_w, lw.unsqueeze(-1) + lp, -math.inf), dim=0)  # log p̄
    pbar = lpbar.exp()
    live = lpbar > -math.inf
    total = -torch.where(live, pbar * lpbar, 0.0).sum(-1)
    mean_lp = torch.where(has_w, w * lp, 0.0).sum(0)                     # Σ_m w_m log P_mv (-inf if some 0)
    term = torch.where(torch.isinf(mean_lp), mean_lp, pbar * mean_lp)    # p̄ > 0 even if it underflowed
    epkl_total = -torch.where(live, term, 0.0).sum(-1)
    invalid = torch.isnan(lp).any(-1).any(0) | torch.isnan(lw).any(0)

    def v(t):
        return torch.where(invalid, math.nan, t)

    return EnsembleStats(v(total), v(aleatoric), v(total - aleatoric), v(epkl_total - aleatoric),
                         v(epkl_total - total))
