"""Attention-based estimators (docs/methods.md#attention-methods): AttentionScore, RAUQ and UQAC.

Every function returns an uncertainty (higher = less trustworthy).

``attention_score`` and ``rauq`` take a batch of attention probabilities, either full maps
``[B, L, H, N, N]`` (``attn[b, l, h, i, k]`` = attention of query position i to key k) or the captured
diagonals ``[B, L, H, N]`` (``diag[..., i] = attn[..., i, i]``, what ``flashuq.hf`` captures without the
maps); both give the same numbers. Positions are absolute over the N tokens ``[prompt; response]``;
``response_start [B]`` (an int or one per item, so ragged prompts are fine) is the first response position
and ``mask [B, N]`` (optional, True = real token) marks padding. Every item uses its own maps:
LM-Polygraph's attention extraction reads batch element 0 for every item (docs/methods.md#attention-batch-element); that bug is
not reproduced.

``uqac`` runs the four UQAC ops (:func:`flashuq.uqac_reduce_attention`, :func:`flashuq.uqac_backtrack`,
:func:`flashuq.uqac_similarity_filter`, :func:`flashuq.uqac_marginal`) per sequence.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, check_real
from ._inputs import bool_mask, check_shape, compute_dtype, input_tensor

#: RAUQ's default α by (model_type, confidence) (LM-Polygraph ``RAUQ.get_alpha``)
RAUQ_ALPHA = {("instruct", "prob"): 0.5, ("instruct", "entropy"): 0.9,
              ("base", "prob"): 0.2, ("base", "entropy"): 0.8}


# ---- argument checks ------------------------------------------------------------------------------------

def _diagonals(attn, name: str = "attn") -> Tensor:
    """``[B, L, H, N, N]`` maps or ``[B, L, H, N]`` diagonals -> ``[B, L, H, N]`` (a view for maps)."""
    if not isinstance(attn, (Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(attn).__name__}")
    x = torch.as_tensor(attn)
    if x.dim() not in (4, 5):
        raise ValueError(f"{name} must be full maps [B, L, H, N, N] or diagonals [B, L, H, N], "
                         f"got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if x.dim() == 5:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"{name} full maps must be square [B, L, H, N, N], got shape {tuple(x.shape)}")
        x = torch.diagonal(x, dim1=-2, dim2=-1)
    return x


def _int(v, name: str) -> int:
    return check_int(v, name)


def _response_start(response_start, B: int, N: int, like: Tensor) -> Tensor:
    """``response_start`` (int, sequence or [B] tensor) as a long tensor [B], each in [0, N - 1]."""
    if isinstance(response_start, bool):
        raise TypeError("response_start must be an int or an integer tensor of shape [B], got bool")
    if isinstance(response_start, numbers.Integral):
        rs = torch.full((B,), int(response_start), dtype=torch.long)
    else:
        if isinstance(response_start, (list, tuple)):
            response_start = np.asarray(response_start)
        if not isinstance(response_start, (Tensor, np.ndarray)):
            raise TypeError("response_start must be an int, a sequence of ints or an integer tensor, "
                            f"got {type(response_start).__name__}")
        rs = torch.as_tensor(response_start)
        if rs.dtype.is_floating_point or rs.dtype.is_complex or rs.dtype == torch.bool:
            raise TypeError(f"response_start must hold integers, got {rs.dtype}")
        if rs.dim() == 0:
            rs = rs.expand(B)
        check_shape(rs, "response_start", (B,))
        rs = rs.long()
    rs = rs.to(like.device)
    if B and (bool((rs < 0).any()) or bool((rs >= N).any())):
        raise ValueError(f"response_start must lie in [0, N - 1 = {N - 1}] (at least one response token), "
                         f"got {rs.tolist()}")
    return rs


def _mask(mask, B: int, N: int, like: Tensor) -> Tensor:
    return bool_mask(mask, "mask", (B, N), like, other="the attention maps")


def _response_run(rs: Tensor, valid: Tensor):
    """The response tokens of each item: positions rs .. rs + T - 1 (T [B]); the mask must mark them as one run."""
    N = valid.shape[1]
    pos = torch.arange(N, device=valid.device)
    in_resp = valid & (pos >= rs[:, None])
    T = in_resp.sum(1)
    run = (pos >= rs[:, None]) & (pos < (rs + T)[:, None])
    if not torch.equal(in_resp, run):
        raise ValueError("mask must mark each response as one contiguous run of real tokens starting at "
                         "response_start (right padding only)")
    return T


# ---- AttentionScore ---------------------------------------------------------------------------------------

def attention_score(attn, response_start=None, *, layer: Optional[int] = None, mask=None) -> Tensor:
    """AttentionScore (Sriramanan et al., "LLM-Check", NeurIPS 2024; LM-Polygraph ``AttentionScore``),
    uncertainty.

    ``u = -(1/H) Σ_h Σ_i log(A^{l,h}_{ii} + 1e-12)`` -- minus the mean over heads of the log-determinant of
    the (triangular) causal attention map of layer ``l`` (default ``L // 2``, LM-Polygraph's
    ``num_hidden_layers // 2``; negative values count from the end).

    Without ``response_start`` i runs over all real positions (prompt included). With it (LM-Polygraph's
    ``gen_only=True``) i runs over ``response_start[b] .. e_b - 1``, e_b the last real position: the
    reference's slice ``[-|y| : -1]`` leaves the last response token out.

    Args:
        attn: ``[B, L, H, N, N]`` attention probabilities or ``[B, L, H, N]`` diagonals.
        response_start: None, an int or ``[B]`` ints in ``[0, N - 1]``.
        layer: the layer to use.
        mask: ``[B, N]`` bool, True = real token (None: all real); the response must be one run.

    Returns ``[B]``, fp64 for fp64 input, else fp32.
    """
    d = _diagonals(attn)
    B, L, H, N = d.shape
    if layer is None:
        layer = L // 2
    layer = _int(layer, "layer")
    if not -L <= layer < L:
        raise ValueError(f"layer must be in [-L, L) = [{-L}, {L}), got {layer}")
    valid = _mask(mask, B, N, d)
    if response_start is not None:
        rs = _response_start(response_start, B, N, d)
        T = _response_run(rs, valid)
        pos = torch.arange(N, device=d.device)
        valid = (pos >= rs[:, None]) & (pos < (rs + T - 1)[:, None])
    logd = torch.log(d[:, layer].double() + 1e-12)                      # [B, H, N]
    total = torch.where(valid[:, None, :], logd, 0.0).sum((1, 2))
    return (-total / H).to(compute_dtype(d))


# ---- RAUQ -------------------------------------------------------------------------------------------------

def rauq_layers(L: int) -> list:
    """RAUQ's layers: ``range(L // 3, ceil(L / 3 * 2) + 1)``, the middle third (LM-Polygraph ``rauq.py``)."""
    return list(range(L // 3, int(math.ceil(L / 3 * 2)) + 1))


def rauq(attn, logprobs, response_start, *, alpha: Optional[float] = None, confidence: str = "prob",
         entropies=None, vocab_size: Optional[int] = None, model_type: str = "instruct", mask=None) -> Tensor:
    """RAUQ, recurrent attention-based UQ (Vazhentsev et al. 2025, arXiv 2505.20045; LM-Polygraph ``RAUQ``),
    uncertainty.

    Response token j = 0..T-1 of item b sits at position ``s + j`` (``s = response_start[b]``);
    ``p_j = exp(logprobs[b, s + j])`` (``logprobs [B, N]`` = log p of the token at each position).
    ``a_j`` (j >= 1) is the attention diagonal at position ``s + j - 1``: LM-Polygraph's
    ``attention_all.diagonal(offset=-1)[j - 1]`` is the attention of y_{j-1} to itself in the decoding step
    that emits y_j. So the diagonals used are positions ``s .. s + T - 2`` (``.. N - 2`` without padding).
    For each layer l in ``range(L // 3, ceil(2L / 3) + 1)``::

        h*  = argmax_h mean_{j>=1} a_j^{l,h}          (the first head on ties)
        c_0 = p_0,   c_j = α p_j + (1 - α) a_j^{l,h*} c_{j-1}
        u_l = 1 - mean_j log c_j

    and RAUQ = max_l u_l. A one-token response gives ``1 - log p_0``.

    Args:
        attn: ``[B, L, H, N, N]`` maps or ``[B, L, H, N]`` diagonals; needs L >= 3.
        logprobs: ``[B, N]``; may be None for ``confidence="entropy"``.
        response_start: an int or ``[B]`` ints in ``[0, N - 1]``.
        alpha: None = LM-Polygraph's default: instruct 0.5 (entropy 0.9), base 0.2 (entropy 0.8).
        confidence: "prob" (``p_j`` as above) or "entropy": ``p_j = exp(log(log V - H_j + 1e-10))`` as coded,
            i.e. ``log V - H_j + 1e-10`` (NaN where H_j > log V); needs ``entropies [B, N]`` (the entropy of the
            distribution that produced each position's token) and ``vocab_size`` V.
        model_type: "instruct" (default) or "base"; LM-Polygraph's constructor defaults to base
            (``instruct=False``).
        mask: ``[B, N]`` bool, True = real token; the response must be one run from ``response_start``.

    Returns ``[B]``, fp64 if an input is fp64, else fp32.
    """
    d = _diagonals(attn)
    B, L, H, N = d.shape
    if L < 3:
        raise ValueError(f"attn must have at least 3 layers for RAUQ's middle third, got L = {L}")
    if confidence not in ("prob", "entropy"):
        raise ValueError(f"confidence must be 'prob' or 'entropy', got {confidence!r}")
    if model_type not in ("instruct", "base"):
        raise ValueError(f"model_type must be 'instruct' or 'base', got {model_type!r}")
    if alpha is None:
        alpha = RAUQ_ALPHA[(model_type, confidence)]
    alpha = check_real(alpha, "alpha", 0.0, 1.0)
    if confidence == "prob":
        lp = input_tensor(logprobs, "logprobs", 2, "float", d)
        check_shape(lp, "logprobs", (B, N))
        conf = lp.double().exp()
        inputs = (d, lp)
    else:
        if entropies is None or vocab_size is None:
            raise ValueError("confidence='entropy' needs entropies [B, N] and vocab_size")
        ent = input_tensor(entropies, "entropies", 2, "float", d)
        check_shape(ent, "entropies", (B, N))
        V = _int(vocab_size, "vocab_size")
        if V < 1:
            raise ValueError(f"vocab_size must be >= 1, got {V}")
        conf = torch.exp(torch.log(math.log(V) - ent.double() + 1e-10))
        inputs = (d, ent)
    rs = _response_start(response_start, B, N, d)
    T = _response_run(rs, _mask(mask, B, N, d))                           # [B] response lengths
    Tm = int(T.max()) if B else 0
    dev = d.device
    layers = torch.tensor(rauq_layers(L), device=dev)
    j = torch.arange(Tm, device=dev)
    live = j[None, :] < T[:, None]                                        # [B, Tm]
    tok = (rs[:, None] + j[None, :]).clamp(max=N - 1)                     # position of token j
    prev = (tok - 1).clamp(min=0)                                         # position of its diagonal a_j
    p = conf.gather(1, tok)                                               # [B, Tm]
    dl = d[:, layers].double()                                            # [B, nL, H, N]
    nL = dl.shape[1]
    a = dl.gather(3, prev[:, None, None, :].expand(B, nL, H, Tm))        # [B, nL, H, Tm]
    use = live & (j[None, :] >= 1)
    n = (T - 1).clamp(min=1).double()
    head_mean = torch.where(use[:, None, None, :], a, 0.0).sum(-1) / n[:, None, None]
    head = head_mean.argmax(-1)                                           # [B, nL], first max
    ah = a.gather(2, head[:, :, None, None].expand(B, nL, 1, Tm)).squeeze(2)   # [B, nL, Tm]
    c = p[:, 0:1].expand(B, nL) if Tm else torch.zeros(B, nL, dtype=torch.float64, device=dev)
    logsum = torch.log(c)
    for t in range(1, Tm):
        c_new = alpha * p[:, t:t + 1] + (1.0 - alpha) * ah[:, :, t] * c
        on = live[:, t:t + 1]
        c = torch.where(on, c_new, c)
        logsum = logsum + torch.where(on, torch.log(c_new), 0.0)
    u = 1.0 - logsum / T.clamp(min=1).double()[:, None]                  # [B, nL]
    out = u.max(1).values if nL else torch.full((B,), math.nan, dtype=torch.float64, device=dev)
    out = torch.where(T > 0, out, math.nan)
    return out.to(compute_dtype(*inputs))


# ---- UQAC -------------------------------------------------------------------------------------------------

def uqac_top5_logprobs(top5_ids, top5_probs, resp_ids) -> Tensor:
    """Token log-probabilities as UQAC's ``eval.py`` reads them from the teacher-forced top-5 table
    (docs/methods.md#uqac-scores, ``variant="reference"``), to pass as ``token_logprobs`` to :func:`uqac`.

    ``top5_ids, top5_probs [..., R, 5]`` (row r: the top-5 next-token predictions at response position r,
    i.e. for token r + 1), ``resp_ids [..., R]``. Returns ``[..., R]`` indexed by token:
    ``out[r] = log top5_probs[r - 1, c]``, c the first column holding ``resp_ids[r]``, and **c = 0 (the top-1
    probability) when the token is not in the top-5** -- the reference's equality-argmax lookup. ``out[0]``
    reads row R - 1 (the reference indexes row -1 for the chain member -1) instead of the distribution that
    produced response token 0. For the paper's definition pass true log-probabilities instead.
    """
    ids = torch.as_tensor(top5_ids)
    probs = input_tensor(top5_probs, "top5_probs", ids.dim(), "float") if ids.dim() >= 2 else None
    if ids.dim() < 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"top5_ids must be an integer tensor [..., R, k], got {ids.dtype} {tuple(ids.shape)}")
    check_shape(probs, "top5_probs", ids.shape)
    resp = torch.as_tensor(resp_ids)
    if resp.dtype.is_floating_point or resp.dtype == torch.bool:
        raise TypeError(f"resp_ids must be an integer tensor, got {resp.dtype}")
    check_shape(resp, "resp_ids", ids.shape[:-1])
    src_ids = torch.roll(ids, 1, dims=-2)                                # row r <- row r - 1 (row 0 <- row R - 1)
    src_probs = torch.roll(probs, 1, dims=-2)
    eq = src_ids == resp.to(ids.device)[..., None]
    col = torch.where(eq.any(-1), eq.to(torch.int64).argmax(-1), 0)
    return torch.log(src_probs.gather(-1, col[..., None]).squeeze(-1))


def _as_list(x, B, name):
    if x is None:
        return [None] * B
    if isinstance(x, (list, tuple)):
        if len(x) != B:
            raise ValueError(f"{name} must have one entry per sequence ({B}), got {len(x)}")
        return list(x)
    raise TypeError(f"{name} must be a list of per-sequence values when attn is a list, got {type(x).__name__}")


def _ans(ans_src):
    if ans_src is None:
        return None
    a = torch.as_tensor(ans_src)
    if a.dtype.is_floating_point or a.dtype.is_complex or a.dtype == torch.bool:
        raise TypeError(f"ans_src must hold integers, got {a.dtype}")
    a = a.reshape(-1).long()
    return a if a.numel() else None


def _uqac_batch(ops, attn, ans_src, is_stop, h_last, token_logprobs, va_list, vs_list, kw) -> Tensor:
    """-UQAC of B sequences (lists); chains and similarity filters in one batched op call."""
    B = len(attn)
    out = torch.full((B,), math.nan, dtype=torch.float64)
    items = []
    for b in range(B):
        a = attn[b]
        if not isinstance(a, (Tensor, np.ndarray)):
            raise TypeError(f"attn must be a torch.Tensor or numpy.ndarray [L, H, R, Ntok], got {type(a).__name__}")
        a = torch.as_tensor(a)
        if a.dim() not in (2, 4):
            raise ValueError(f"attn must be [L, H, R, Ntok] (response rows) or [R, Ntok] (already reduced, e.g. "
                             f"flashuq.hf.uqac_inputs) per sequence, got shape {tuple(a.shape)}")
        if not a.dtype.is_floating_point:
            raise TypeError(f"attn must be a floating tensor, got {a.dtype}")
        R, N = a.shape[-2], a.shape[-1]
        if N < R:
            raise ValueError(f"attn must have Ntok >= R (its last two dimensions), got shape {tuple(a.shape)}")
        ans = _ans(ans_src[b])
        if ans is None:
            continue                                                   # failed answer span: NaN
        if bool((ans < -1).any()) or bool((ans + 1 >= R).any()):
            raise ValueError(f"ans_src must lie in [-1, R - 2 = {R - 2}] (a source predicts the next token), "
                             f"got {ans.tolist()}")
        h = input_tensor(h_last[b], "h_last", 2, "float")
        check_shape(h, "h_last", (R, h.shape[1]))
        stop = torch.as_tensor(is_stop[b])
        check_shape(stop, "is_stop", (N,))
        items.append((b, a, ans, stop, h))
    if not items:
        return out
    dev = items[0][1].device
    Rm = max(it[1].shape[-2] for it in items)
    Nm = max(it[1].shape[-1] for it in items)
    Am = max(it[2].numel() for it in items)
    D = items[0][4].shape[1]
    if any(it[4].shape[1] != D for it in items):
        raise ValueError("h_last must have the same width D for every sequence")
    n = len(items)
    red_all = None
    ans_p = torch.zeros(n, Am, dtype=torch.long, device=dev)
    stop_p = torch.ones(n, Nm, dtype=torch.bool, device=dev)
    h_p = torch.zeros(n, Rm, D, dtype=torch.float64 if any(it[4].dtype == torch.float64 for it in items)
                      else torch.float32, device=dev)
    lens = torch.zeros(3, n, dtype=torch.long, device=dev)
    for i, (b, a, ans, stop, h) in enumerate(items):
        red = a if a.dim() == 2 else ops.uqac_reduce_attention(a, n_heads=kw["n_heads"], reduction=kw["reduction"])
        if red_all is None:
            red_all = torch.zeros(n, Rm, Nm, dtype=red.dtype, device=dev)
        R, N = red.shape
        red_all[i, :R, :N] = red.to(red_all.dtype)
        ans_p[i, :ans.numel()] = ans.to(dev)
        stop_p[i, :N] = stop.to(dev) != 0
        h_p[i, :R] = h.to(device=dev, dtype=h_p.dtype)
        lens[:, i] = torch.tensor([R, N, ans.numel()])
    res = ops.uqac_chain_batched(red_all, ans_p, stop_p, response_len=lens[0], n_tokens=lens[1], ans_len=lens[2],
                                 h_last=h_p, buffer=kw["buffer"], threshold=kw["threshold"],
                                 min_chain_len=kw["min_chain_len"], max_steps=kw["max_steps"], k=kw["k"],
                                 similarity_threshold=kw["similarity_threshold"])
    keep_all, keep_len = res.keep.cpu(), res.keep_lengths.cpu()
    for i, (b, a, ans, stop, h) in enumerate(items):
        keep = keep_all[i, :int(keep_len[i])]
        ans = ans.cpu()
        va, vs = va_list[b], vs_list[b]
        R = a.shape[-2]
        if va is None:
            lp = input_tensor(token_logprobs[b], "token_logprobs", 1, "float")
            check_shape(lp, "token_logprobs", (R,))
            lp = lp.cpu()
            va, vs = lp[ans + 1][None, :], lp[keep + 1][None, :]
        else:
            va = input_tensor(va, "variant_ans_logprobs", 2, "float")
            check_shape(va, "variant_ans_logprobs", (va.shape[0], ans.numel()))
            if vs is None:
                raise ValueError("variant_seq_logprobs is needed with variant_ans_logprobs")
            vs = input_tensor(vs, "variant_seq_logprobs", 2, "float", va)
            if tuple(vs.shape) != (va.shape[0], keep.numel()):
                raise ValueError(f"variant_seq_logprobs must have shape ({va.shape[0]}, {keep.numel()}) "
                                 f"(variants x kept members {keep.tolist()}), got {tuple(vs.shape)}")
        out[b] = -float(ops.uqac_marginal(va, vs))
    return out


def uqac(attn, ans_src, is_stop, h_last, token_logprobs, *, variant_ans_logprobs=None, variant_seq_logprobs=None,
         n_heads: int = 16, reduction: str = "max", buffer: int = 3, threshold: float = 0.5,
         min_chain_len: Optional[int] = None, max_steps: int = 1000, k: int = 10,
         similarity_threshold: float = 0.0) -> Tensor:
    """UQAC, attention-chain UQ (Li, Qiang, Moukheiber, Zhang, arXiv 2503.19168; ``Yinghao-Li/UQAC``):
    ``-UQAC``, an uncertainty. docs/methods.md#uqac.

    Per sequence (chains and similarity filters of a list run in one ``uqac_chain_batched`` call;
    one teacher-forced pass over ``[instruction; response]``, I instruction and R response
    tokens, Ntok = I + R):

    1. ``A_red = uqac_reduce_attention(attn, n_heads, reduction)``: preprocessing, the ``n_heads``
       lowest-entropy (layer, head) maps per response row, max (or mean).
    2. ``chain = uqac_backtrack(A_red, ans_src, is_stop, buffer, threshold, min_chain_len, max_steps)``.
    3. ``keep = uqac_similarity_filter(h_last, chain, ans_src, k, similarity_threshold)``.
    4. ``UQAC = Σ_v exp(Σ_a max(l_va, log 1e-12)) · exp(Σ_{j∈keep} max(l_vj, log 1e-12))``
       (``uqac_marginal``). Without variants, v is only the original: ``l_a = token_logprobs[a + 1]``,
       ``l_j = token_logprobs[j + 1]`` -- the paper's P̃_sim; member -1 reads ``token_logprobs[0]``.

    Args:
        attn: ``[L, H, R, Ntok]`` (the response rows over all tokens) for one sequence, or a list of them;
            a 2-D ``[R, Ntok]`` entry is taken as already reduced (step 1 done, e.g. by the streaming
            reduction of ``flashuq.hf.uqac_inputs``) and goes straight to step 2.
        ans_src: ``[A]`` response positions predicting the answer tokens (answer token index - 1);
            None or empty (a failed answer-span extraction) gives NaN.
        is_stop: ``[Ntok]`` bool, stop-word keys (instruction positions True).
        h_last: ``[R, D]`` last-layer hidden states at the response positions.
        token_logprobs: ``[R]``, ``token_logprobs[r]`` = log p(response token r | prefix) (token-indexed;
            :func:`uqac_top5_logprobs` gives the reference's top-5 lookup).
        variant_ans_logprobs, variant_seq_logprobs: ``[V, A]`` and ``[V, J]`` (J = the number of kept
            members, row 0 the original; see docs/methods.md#uqac-marginal) for the full P̃_M; per-sequence lists for
            a list input. An empty ``keep`` reduces UQAC to the answer probability (the reference fails there).
        the rest: the UQAC defaults of ``src/args.py`` (``min_chain_len`` None = 5 + A, the total length).

    Returns a 0-dim tensor for one sequence, ``[B]`` for a list; float64.
    """
    from ..ops import uqac as ops
    kw = dict(n_heads=n_heads, reduction=reduction, buffer=buffer, threshold=threshold, min_chain_len=min_chain_len,
              max_steps=max_steps, k=k, similarity_threshold=similarity_threshold)
    if isinstance(attn, (list, tuple)):
        B = len(attn)
        args = [_as_list(x, B, n) for x, n in ((ans_src, "ans_src"), (is_stop, "is_stop"), (h_last, "h_last"),
                                                (token_logprobs, "token_logprobs"),
                                                (variant_ans_logprobs, "variant_ans_logprobs"),
                                                (variant_seq_logprobs, "variant_seq_logprobs"))]
        return _uqac_batch(ops, list(attn), *args, kw)
    return _uqac_batch(ops, [attn], [ans_src], [is_stop], [h_last], [token_logprobs], [variant_ans_logprobs],
                       [variant_seq_logprobs], kw)[0]


class UqacTerms(NamedTuple):
    """The per-sequence quantities of UQAC's evaluation (``run/eval/eval.py``), all **confidences**."""

    chain: Tensor      #: int64 [C] chain members (response positions ascending, answer sources included)
    scores: Tensor     #: [C] their accumulated attention (answer sources 0)
    keep: Tensor       #: int64 [J] the kept members of the similarity filter, ascending
    ans_prob: Tensor   #: Π_a p(answer token)                                ``ans_probs_prod``
    attn_prob: Tensor  #: Π over every chain member c of p(token c + 1), P̃_attn   ``attn_probs_prod``
    sim_prob: Tensor   #: Π_{j ∈ keep} p(token j + 1) · Π_a p(ans_a), P̃_sim   ``sims_probs_prod``


def uqac_terms(attn, ans_src, is_stop, h_last, token_logprobs, *, n_heads: int = 16, reduction: str = "max",
               buffer: int = 3, threshold: float = 0.5, min_chain_len: Optional[int] = None, max_steps: int = 1000,
               k: int = 10, similarity_threshold: float = 0.0) -> UqacTerms:
    """UQAC's chain, kept members and confidence terms of **one** sequence (docs/methods.md#uqac):
    the answer probability, P̃_attn (all chain members) and P̃_sim (kept members and the answer), as the
    reference's ``eval.py`` computes them -- plain products of the token probabilities, no clamping
    (that belongs to the marginal). The chain and the similarity filter run in the C++ / CUDA kernels
    (:func:`flashuq.uqac_backtrack`, :func:`flashuq.uqac_similarity_filter`); the inputs are those of
    :func:`uqac` (``attn`` ``[L, H, R, Ntok]`` or already reduced ``[R, Ntok]``). ``keep`` is what the
    variants of the full UQAC (:func:`uqac` with ``variant_*_logprobs``) substitute. Float64 scalars.
    """
    from ..ops import uqac as ops

    a = torch.as_tensor(attn)
    if a.dim() not in (2, 4):
        raise ValueError(f"attn must be [L, H, R, Ntok] or [R, Ntok], got shape {tuple(a.shape)}")
    red = a if a.dim() == 2 else ops.uqac_reduce_attention(a, n_heads=n_heads, reduction=reduction)
    R = red.shape[0]
    ans = _ans(ans_src)
    if ans is None:
        raise ValueError("ans_src must hold at least one answer source (a failed span has no UQAC terms)")
    lp = input_tensor(token_logprobs, "token_logprobs", 1, "float")
    check_shape(lp, "token_logprobs", (R,))
    h = input_tensor(h_last, "h_last", 2, "float")
    check_shape(h, "h_last", (R, h.shape[1]))
    chain, scores = ops.uqac_backtrack(red, ans.to(red.device), torch.as_tensor(is_stop).to(red.device),
                                       buffer=buffer, threshold=threshold, min_chain_len=min_chain_len,
                                       max_steps=max_steps)
    keep = ops.uqac_similarity_filter(h.to(red.device), chain, ans.to(red.device), k=k,
                                      threshold=similarity_threshold)
    lp = lp.double().cpu()
    chain_c, keep_c, ans_c = chain.cpu(), keep.cpu(), ans.cpu()
    l_ans = lp[ans_c + 1].sum()
    return UqacTerms(chain, scores, keep, l_ans.exp(), lp[chain_c + 1].sum().exp(),
                     (lp[keep_c + 1].sum() + l_ans).exp())


__all__ = ["RAUQ_ALPHA", "UqacTerms", "attention_score", "rauq", "rauq_layers", "uqac", "uqac_terms",
           "uqac_top5_logprobs"]
