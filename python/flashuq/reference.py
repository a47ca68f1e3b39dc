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
# Sequence level: masked and ragged reductions (docs/methods.md#masked-reductions)
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
# Ensemble decomposition (docs/methods.md#ensemble)
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


# ---------------------------------------------------------------------------------------------
# Attention methods (docs/methods.md#attention-methods)
# ---------------------------------------------------------------------------------------------
# Plain float64 numpy transcriptions, loops written out. Sources read for them:
#   UQAC: Yinghao-Li/UQAC src/attrs/processor.py (attn_mat_preprocessing, attention_calibration,
#         attn_mat_reduction, backtrack, get_tkattn_to_tkans_sims), src/pipeline.py (infer_uq,
#         infer_ens), src/dataset/processor.py (expand_samples_for_ens_inference), src/utils/support.py
#         (thresholded_topk_1d, find_column_indices), run/eval/eval.py, src/args.py, scripts/infer-*.sh.
#   RAUQ / AttentionScore: IINemo/lm-polygraph estimators/rauq.py, estimators/attention_score.py,
#         stat_calculators/greedy_probs.py, stat_calculators/attention_forward_pass.py.
# Ties are broken by the lower index everywhere (the reference sorts on the CPU, and so do the kernels).

import numpy as np  # noqa: E402

from ._uqac_calibration import UQAC_CALIBRATION  # noqa: E402  (factor c: key I + r - 10 + c of row r)


def uqac_reduce_attention_ref(attn, n_heads: int = 16, reduction: str = "max") -> np.ndarray:
    """float64 reference of :func:`flashuq.uqac_reduce_attention` for one sequence (docs/methods.md#uqac-reduction).

    ``attn [L, H, R, Ntok]``: the R response rows over all Ntok = I + R tokens. Per (layer, head):
    zero each row's self-attention (column I + r), zero column 0, multiply the 10 keys before the query
    (columns I + r - 10 .. I + r - 1, columns < 0 skipped) by :data:`UQAC_CALIBRATION`. Then over the
    L·H maps ``s = l·H + h``: ``A = A / (rowsum + 1e-12)``, ``Hq = -Σ A log(A + 1e-12)``; for each row r
    the ``n_heads`` maps with the lowest ``Hq[s, r]`` (ties: lower s) are reduced by max or mean.
    Returns ``[R, Ntok]`` float64.
    """
    a = np.array(attn, dtype=np.float64, copy=True)
    if a.ndim != 4:
        raise ValueError(f"attn must be [L, H, R, Ntok], got shape {a.shape}")
    L, H, R, N = a.shape
    I = N - R
    if I < 0:
        raise ValueError("attn has more rows than columns")
    if n_heads < 1 or n_heads > L * H:
        raise ValueError(f"n_heads must be in [1, L*H = {L * H}], got {n_heads}")
    if reduction not in ("max", "mean"):
        raise ValueError(f"reduction must be 'max' or 'mean', got {reduction!r}")
    for r in range(R):
        a[:, :, r, I + r] = 0.0
    a[:, :, :, 0] = 0.0
    for r in range(R):
        for c, f in enumerate(UQAC_CALIBRATION):
            col = I + r - 10 + c
            if col >= 0:
                a[:, :, r, col] *= f
    maps = a.reshape(L * H, R, N)
    out = np.zeros((R, N))
    for r in range(R):
        ent = []
        rows = []
        for s in range(L * H):
            row = maps[s, r] / (maps[s, r].sum() + 1e-12)
            rows.append(row)
            ent.append(-np.sum(row * np.log(row + 1e-12)))
        sel = sorted(range(L * H), key=lambda s: (ent[s], s))[:n_heads]
        stack = np.stack([rows[s] for s in sel])
        out[r] = stack.max(0) if reduction == "max" else stack.mean(0)
    return out


def uqac_backtrack_ref(attn_reduced, ans_src, is_stop, buffer: int = 3, threshold: float = 0.5,
                       min_chain_len=None, max_steps: int = 1000):
    """float64 reference of :func:`flashuq.uqac_backtrack` (docs/methods.md#uqac-backtrack, UQAC ``backtrack``).

    ``attn_reduced [R, Ntok]``, ``ans_src [A]`` response positions, ``is_stop [Ntok]``. Works in absolute
    positions: I = Ntok - R zero rows are put on top, the chain starts as the answer sources (score 0).
    Each round every source s scans its keys by weight descending (ties: lower key first); ranks >= 5 are
    only scanned while nothing has accumulated in this round (over all sources so far) and the chain is
    shorter than ``min_chain_len`` (the TOTAL length incl. answer sources; None = 5 + A). Keys t == s,
    keys whose source t - 1 was processed, and stop keys are skipped; the others add A[s, t] to acc[t].
    Keys with acc > 0 are taken by acc descending (ties: lower t) while fewer than ``buffer`` are picked and
    not (acc < threshold and len(chain) + len(picked) >= min_chain_len) -- ``chain`` already holds this
    round's picks, so they count twice, as in the reference. A picked key t adds t - 1 to the chain and
    becomes a source of the next round. At most ``max_steps`` rounds. An absolute source index < 0 reads
    row -1 (Python indexing, as the reference); it needs a key 0 that is not a stop word.

    Returns ``(chain int64, scores float64)`` sorted by chain value (stable: duplicates keep their
    insertion order) in response positions (-1 = the last instruction token, the source of response
    token 0). An empty ``ans_src`` gives empty arrays (the reference itself fails there).
    """
    A = np.asarray(attn_reduced, dtype=np.float64)
    R, N = A.shape
    I = N - R
    ans = [int(x) for x in np.asarray(ans_src, dtype=np.int64).reshape(-1)]
    stop = [bool(x) for x in np.asarray(is_stop).reshape(-1)]
    if len(stop) != N:
        raise ValueError(f"is_stop must have Ntok = {N} entries, got {len(stop)}")
    min_len = 5 + len(ans) if min_chain_len is None else int(min_chain_len)
    M = np.zeros((N, N))
    M[I:] = A
    chain = [a + I for a in ans]
    scores = [0.0] * len(chain)
    processed = set()
    sources = list(chain)
    for _ in range(max_steps):
        if not sources:
            break
        processed.update(sources)
        acc = np.zeros(N)
        for s in sources:
            row = M[s]
            keys = sorted(range(N), key=lambda t: (-row[t], t))
            for rank, t in enumerate(keys):
                if rank >= 5 and ((acc > 0).any() or len(chain) >= min_len):
                    break
                if t == s or (t - 1) in processed or stop[t]:
                    continue
                acc[t] += row[t]
        candidates = sorted((t for t in range(N) if acc[t] > 0), key=lambda t: (-acc[t], t))
        picked = []
        for t in candidates:
            if len(picked) >= buffer:
                break
            if acc[t] < threshold and len(chain) + len(picked) >= min_len:
                break
            picked.append(t)
            chain.append(t - 1)
            scores.append(float(acc[t]))
        if not picked:
            break
        sources = [t - 1 for t in picked]
    order = sorted(range(len(chain)), key=lambda i: chain[i])
    return (np.array([chain[i] - I for i in order], dtype=np.int64),
            np.array([scores[i] for i in order], dtype=np.float64))


def _cos_torch_style(x: np.ndarray, y: np.ndarray, eps: float = 1e-8) -> float:
    # torch.cosine_similarity: each vector divided by max(its norm, eps), then the dot product
    return float(np.dot(x / max(np.linalg.norm(x), eps), y / max(np.linalg.norm(y), eps)))


def uqac_similarity_filter_ref(h_last, chain, ans_src, k: int = 10, threshold: float = 0.0) -> np.ndarray:
    """float64 reference of :func:`flashuq.uqac_similarity_filter` (docs/methods.md#uqac-similarity).

    Rules, as UQAC's ``get_tkattn_to_tkans_sims`` (``sim-mean``) and ``expand_samples_for_ens_inference``
    (``thresholded_topk_1d``) apply them:

    * ``h_last [R, D]`` is indexed by token: a source id c maps to its token c + 1 (member -1 -> row 0).
      ``sim(c) = mean_{a in ans_src} cos(h_last[a+1], h_last[c+1])`` with torch's cosine (each norm
      clamped at 1e-8, so a zero vector has similarity 0).
    * Candidates: the chain entries in chain order, **without its last A = len(ans_src) entries**
      (the reference slices ``sims[:-A]`` of the ascending chain). For chains produced by the backtrack
      from causal attention the last A entries are exactly the answer sources, so this is "every chain
      member that is not an answer source".
    * Keep a candidate iff ``float32(sim) >= float32(threshold)`` (the reference casts with ``.float()``
      before comparing); among those, the ``k`` highest float32 values (ties: the earlier chain entry).
    * Return the kept member ids sorted ascending (int64; duplicates possible if the chain has them).
    """
    h = np.asarray(h_last, dtype=np.float64)
    ch = [int(c) for c in np.asarray(chain, dtype=np.int64).reshape(-1)]
    ans = [int(a) for a in np.asarray(ans_src, dtype=np.int64).reshape(-1)]
    if not ans:
        raise ValueError("ans_src must not be empty")
    cand = ch[:max(len(ch) - len(ans), 0)]
    sims32 = []
    for c in cand:
        sims32.append(np.float32(np.mean([_cos_torch_style(h[a + 1], h[c + 1]) for a in ans])))
    ok = [i for i in range(len(cand)) if sims32[i] >= np.float32(threshold)]
    ok = sorted(ok, key=lambda i: (-sims32[i], i))[:k]
    return np.sort(np.array([cand[i] for i in ok], dtype=np.int64))


def uqac_marginal_ref(ans_logprobs, seq_logprobs) -> np.ndarray:
    """float64 reference of :func:`flashuq.uqac_marginal` (docs/methods.md#uqac-marginal).

    ``ans_logprobs [..., V, A]``, ``seq_logprobs [..., V, J]`` (row 0 = the original sequence). As
    ``infer_ens`` + ``eval.py``: every factor is clamped on its own, ``p -> max(p, 1e-12)`` before the log
    (i.e. ``l -> max(l, log 1e-12)``), the answer product and the kept-token product are exponentiated
    separately, multiplied, and summed over the variants. J = 0 gives a kept product of 1. NaN propagates.
    """
    a = np.asarray(ans_logprobs, dtype=np.float64)
    s = np.asarray(seq_logprobs, dtype=np.float64)
    floor = math.log(1e-12)
    ans_prob = np.exp(np.maximum(a, floor).sum(-1))
    seq_prob = np.exp(np.maximum(s, floor).sum(-1))
    return (ans_prob * seq_prob).sum(-1)


def uqac_top5_logprobs_ref(top5_ids, top5_probs, resp_ids) -> np.ndarray:
    """The teacher-forced log-probability of each response token as UQAC's ``eval.py`` looks it up.

    ``top5_ids, top5_probs [R, 5]``: row r is the next-token top-5 at response position r (it predicts
    token r + 1); ``resp_ids [R]``. Returns ``[R]``, indexed by TOKEN: ``out[r] = log top5_probs[r-1, c]``
    with c the first column where ``top5_ids[r-1, c] == resp_ids[r]`` and **c = 0 when the token is not in
    the top-5** (``find_column_indices`` is an argmax over an all-False row: the top-1 probability is used).
    ``out[0]`` reads row -1, i.e. the LAST response row (the reference indexes ``top5[src]`` with src = -1
    for the chain member -1); it does not see the distribution that produced response token 0.
    """
    ids = np.asarray(top5_ids)
    probs = np.asarray(top5_probs, dtype=np.float64)
    resp = np.asarray(resp_ids)
    R = resp.shape[0]
    out = np.empty(R)
    for r in range(R):
        src = r - 1 if r >= 1 else R - 1
        col = 0
        for c in range(ids.shape[1]):
            if ids[src, c] == resp[r]:
                col = c
                break
        out[r] = math.log(probs[src, col])
    return out


def uqac_ref(attn, ans_src, is_stop, h_last, token_logprobs, *, variant_ans_logprobs=None,
             variant_seq_logprobs=None, n_heads=16, reduction="max", buffer=3, threshold=0.5,
             min_chain_len=None, max_steps=1000, k=10, similarity_threshold=0.0) -> float:
    """float64 reference of :func:`flashuq.methods.uqac` for one sequence: ``-UQAC`` (an uncertainty).

    Reduction -> backtrack -> similarity filter -> marginal. ``token_logprobs [R]`` is token-indexed
    (``token_logprobs[r]`` = log p(response token r | prefix)); answer source a contributes
    ``token_logprobs[a+1]`` and kept member j ``token_logprobs[j+1]``. Without variants
    ``UQAC = marginal([[l_a]], [[l_j]])`` = P~_sim; with them ``marginal(variant_ans, variant_seq)``
    (J must equal the number of kept members). NaN for a failed answer span (None or empty ``ans_src``).
    """
    if ans_src is None or len(np.asarray(ans_src).reshape(-1)) == 0:
        return math.nan
    ans = np.asarray(ans_src, dtype=np.int64).reshape(-1)
    red = uqac_reduce_attention_ref(attn, n_heads=n_heads, reduction=reduction)
    chain, _ = uqac_backtrack_ref(red, ans, is_stop, buffer=buffer, threshold=threshold,
                                  min_chain_len=min_chain_len, max_steps=max_steps)
    keep = uqac_similarity_filter_ref(h_last, chain, ans, k=k, threshold=similarity_threshold)
    if variant_ans_logprobs is None:
        lp = np.asarray(token_logprobs, dtype=np.float64)
        va, vs = lp[ans + 1][None, :], lp[keep + 1][None, :]
    else:
        va = np.asarray(variant_ans_logprobs, dtype=np.float64)
        vs = np.asarray(variant_seq_logprobs, dtype=np.float64).reshape(va.shape[0], -1)
        if vs.shape[1] != len(keep):
            raise ValueError(f"variant_seq_logprobs has {vs.shape[1]} columns but {len(keep)} members were kept")
    return -float(uqac_marginal_ref(va, vs))


def _diagonals_ref(attn) -> np.ndarray:
    """[B, L, H, N, N] maps or [B, L, H, N] diagonals -> [B, L, H, N] float64 diagonals."""
    a = np.asarray(attn, dtype=np.float64)
    if a.ndim == 5:
        B, L, H, N, _ = a.shape
        d = np.empty((B, L, H, N))
        for i in range(N):
            d[..., i] = a[..., i, i]
        return d
    return a


def _real_positions_ref(mask_row, N):
    return [i for i in range(N) if mask_row is None or bool(mask_row[i])]


def attention_score_ref(attn, response_start=None, layer=None, mask=None) -> np.ndarray:
    """float64 reference of :func:`flashuq.methods.attention_score` (LM-Polygraph ``AttentionScore``).

    ``u_b = -(1/H) Σ_h Σ_i log(A[b, layer, h, i, i] + 1e-12)``, ``layer = L // 2`` by default (LM-Polygraph:
    ``num_hidden_layers // 2``). Without ``response_start`` i runs over all (real) positions; with it over
    ``response_start[b] .. e_b - 1`` where e_b is the last real position (LM-Polygraph's ``gen_only`` slice
    ``[-|y| : -1]`` leaves the last token out).
    """
    d = _diagonals_ref(attn)
    B, L, H, N = d.shape
    layer = L // 2 if layer is None else layer
    out = np.empty(B)
    for b in range(B):
        pos = _real_positions_ref(None if mask is None else mask[b], N)
        if response_start is not None:
            rs = int(response_start[b])
            pos = [i for i in pos if i >= rs][:-1]
        total = 0.0
        for h in range(H):
            for i in pos:
                total += math.log(d[b, layer, h, i] + 1e-12)
        out[b] = -total / H
    return out


def rauq_ref(attn, logprobs, response_start, alpha=None, confidence="prob", entropies=None, vocab_size=None,
             model_type="instruct", mask=None) -> np.ndarray:
    """float64 reference of :func:`flashuq.methods.rauq` (LM-Polygraph ``RAUQ``; arXiv 2505.20045).

    Response tokens j = 0..T-1 sit at positions ``response_start[b] + j``; ``ll_j = logprobs[b, rs + j]``.
    ``a_j`` (j >= 1) is the diagonal at position ``rs + j - 1`` -- LM-Polygraph's
    ``attention_all.diagonal(-1)[j-1]``, the attention of y_{j-1} to itself while emitting y_j -- so the
    diagonals used are positions rs .. rs + T - 2. Layers ``range(L // 3, ceil(L / 3 * 2) + 1)``; per layer
    the head with the largest mean a_j (first on ties); ``c_0 = p_0``, ``c_j = α p_j + (1-α) a_j c_{j-1}``,
    ``u_l = 1 - mean_j log c_j``; RAUQ = max_l u_l. ``p_j = exp(ll_j)``, or for ``confidence="entropy"``
    ``p_j = exp(log(log V - H_j + 1e-10))``. α defaults: instruct 0.5 (entropy 0.9), base 0.2 (0.8).
    """
    d = _diagonals_ref(attn)
    B, L, H, N = d.shape
    if alpha is None:
        alpha = {("instruct", "prob"): 0.5, ("instruct", "entropy"): 0.9,
                 ("base", "prob"): 0.2, ("base", "entropy"): 0.8}[(model_type, confidence)]
    layers = range(L // 3, int(math.ceil(L / 3 * 2)) + 1)
    out = np.empty(B)
    for b in range(B):
        rs = int(response_start[b])
        pos = [i for i in _real_positions_ref(None if mask is None else mask[b], N) if i >= rs]
        T = len(pos)
        if T == 0:
            out[b] = math.nan
            continue
        if confidence == "prob":
            p = [math.exp(float(logprobs[b][i])) for i in pos]
        else:
            p = [math.exp(math.log(math.log(vocab_size) - float(entropies[b][i]) + 1e-10)) for i in pos]
        best = -math.inf
        for layer in layers:
            head, head_mean = 0, -math.inf
            if T > 1:
                for h in range(H):
                    m = float(np.mean([d[b, layer, h, pos[j] - 1] for j in range(1, T)]))
                    if m > head_mean:
                        head, head_mean = h, m
            c = [p[0]]
            for j in range(1, T):
                c.append(alpha * p[j] + (1 - alpha) * d[b, layer, head, pos[j] - 1] * c[-1])
            u = 1 - float(np.mean(np.log(c)))
            best = max(best, u)
        out[b] = best
    return out


# ---- Q-Tuning's Error–Uncertainty plane (docs/eu_plane.md) ------------------------------------------

def _quantile_ref(values, q: float) -> float:
    """The linear-interpolation quantile of a list (numpy's default), written out."""
    v = sorted(float(x) for x in values)
    h = (len(v) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (h - lo) * (v[hi] - v[lo])


def eu_kept_ref(ppl, ent, level: float):
    """The samples kept at quantile level ``a``: Q2 (PPL >= Q_PPL(1-a), Ent <= Q_Ent(a)) and Q4
    (PPL <= Q_PPL(a), Ent >= Q_Ent(1-a)); returns ``(thresholds, [quadrant or 0 per sample])``."""
    pl, ph = _quantile_ref(ppl, level), _quantile_ref(ppl, 1 - level)
    el, eh = _quantile_ref(ent, level), _quantile_ref(ent, 1 - level)
    out = []
    for p, e in zip(ppl, ent):
        if p >= ph and e <= el:
            out.append(2)
        elif p <= pl and e >= eh:
            out.append(4)
        else:
            out.append(0)
    return (pl, ph, el, eh), out


def eu_plane_ref(ppl, ent, keep_samples: float):
    """float64 transcription of :func:`flashuq.data.eu_plane` on samples without NaN: the largest
    level (bisection, 60 halvings of [0, 1/2]) whose kept set holds at most floor(keep * N) samples,
    then every other sample labelled by the midlines. Returns ``(level, thresholds, quadrants, kept)``."""
    N = len(ppl)
    budget = math.floor(keep_samples * N + 1e-9)
    lo, hi = 0.0, 0.5
    if sum(1 for q in eu_kept_ref(ppl, ent, hi)[1] if q) <= budget:
        lo = hi
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            if sum(1 for q in eu_kept_ref(ppl, ent, mid)[1] if q) <= budget:
                lo = mid
            else:
                hi = mid
    (pl, ph, el, eh), region = eu_kept_ref(ppl, ent, lo)
    pm, em = (pl + ph) / 2, (el + eh) / 2
    quadrant = []
    for p, e, r in zip(ppl, ent, region):
        if r:
            quadrant.append(r)
        elif p >= pm:
            quadrant.append(1 if e >= em else 2)
        else:
            quadrant.append(4 if e >= em else 3)
    return lo, (pl, ph, el, eh), quadrant, [bool(r) for r in region]


def context_token_scores_ref(token_logprob, lam: float = 0.5):
    """``s_i = (1-λ) PPL_i + λ (PPL_{i-1} + PPL_{i+1})`` with ``PPL_i = exp(-log p_i)``; a missing
    neighbour counts as the token itself."""
    t = [math.exp(-float(x)) for x in token_logprob]
    n = len(t)
    return [(1 - lam) * t[i] + lam * (t[i - 1 if i > 0 else i] + t[i + 1 if i < n - 1 else i]) for i in range(n)]


def token_keep_mask_ref(token_logprob, keep: float, lam: float = 0.5):
    """1 for the ceil(keep * T) tokens with the lowest context-aware score (ties: the earlier)."""
    s = context_token_scores_ref(token_logprob, lam)
    n = math.ceil(keep * len(s) - 1e-9)
    order = sorted(range(len(s)), key=lambda i: (s[i], i))
    keep_set = set(order[:n])
    return [1 if i in keep_set else 0 for i in range(len(s))]


def eigenscore_ref(Z, alpha: float = 1e-3) -> float:
    """EigenScore of one question's ``Z [K, d]`` (docs/methods.md#eigenscore), as LM-Polygraph's
    ``eigenscore.py`` codes it: the explicit ``d × d`` centring matrix, ``Z J_d Zᵀ + αI``, its
    eigenvalues (``λ <= 0 -> 1e-10``) and the mean of their logs."""
    Z = np.asarray(Z, dtype=np.float64)
    d = Z.shape[-1]
    J = np.eye(d) - np.ones((d, d)) / d
    S = Z @ J @ Z.T + alpha * np.eye(Z.shape[0])
    lam = np.linalg.eigvalsh(S)
    return float(np.mean(np.log(np.where(lam > 0, lam, 1e-10))))


def boostedprob_ref(logprobs, token: int, p_jump: float = 0.3, epsilon: float = 0.005,
                    score: str = "sum_dominant_mass", gamma: float = 0.01) -> float:
    """BoostedProb of one step (docs/methods.md#boostedprob): ``logprobs [V]`` (normalised, float64) and the
    emitted ``token``. Sort the probabilities, cut after the last position whose gap to
    the next one exceeds both ``p_jump`` times its probability and ``epsilon``; the tokens before the cut
    are dominant. A dominant token scores the dominant mass (times ``p^gamma`` when weighted), any other
    its own probability."""
    p = np.exp(np.asarray(logprobs, dtype=np.float64))
    order = np.argsort(-p, kind="stable")
    top = p[order]
    cut = -1
    for i in range(len(top) - 1):
        gap = top[i] - top[i + 1]
        if gap > p_jump * top[i] and gap > epsilon:
            cut = i
    p_y = float(p[token])
    if cut < 0 or token not in set(order[: cut + 1].tolist()):
        return p_y
    mass = float(top[: cut + 1].sum())
    return mass if score == "sum_dominant_mass" else mass * p_y ** gamma
