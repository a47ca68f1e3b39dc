"""Claim-level estimators (docs/methods.md#claim-level): LM-Polygraph's ``estimators/claim`` classes, one
uncertainty per claim ``[C]``. A claim is a set of token positions of one generated sequence; claims come
as :class:`flashuq.Claims` (CSR arrays, :func:`flashuq.claims_from_lists` builds them from
LM-Polygraph's ``aligned_token_ids``). Each estimator computes its per-token values for the whole batch,
then reduces them over every claim at once (:func:`flashuq.claim_reduce`)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.claim_reduce import check_claims, claim_reduce, gather_claims
from ..ops.masked_reduce import masked_reduce
from ..ops.token_stats import TokenStats
from .attention import _diagonals, _int, _response_start
from .attention_weighted import _focus_terms
from .boostedprob import boostedprob_token_scores
from .ccp import ccp_token_logprobs
from ._inputs import bool_mask, compute_dtype, input_tensor
from .token import _first_token, _per_token


def maximum_claim_probability(stats: TokenStats, claims) -> Tensor:
    """``-Σ_{t∈c} log p(y_t)``, LM-Polygraph ``MaximumClaimProbability``."""
    return -claim_reduce(stats.logprob, claims, op="sum")


def perplexity_claim(stats: TokenStats, claims) -> Tensor:
    """``-mean_{t∈c} log p(y_t)``, LM-Polygraph ``PerplexityClaim``."""
    return -claim_reduce(stats.logprob, claims, op="mean")


def max_token_entropy_claim(stats: TokenStats, claims) -> Tensor:
    """``max_{t∈c} H_t``, LM-Polygraph ``MaxTokenEntropyClaim``."""
    return claim_reduce(stats.entropy, claims, op="max")


def self_certainty_claim(stats: TokenStats, claims) -> Tensor:
    """``-mean_{t∈c} KL(U ‖ p_t)``, LM-Polygraph ``SelfCertaintyClaim`` (already an uncertainty)."""
    return -claim_reduce(stats.self_certainty, claims, op="mean")


def pmi_claim(stats: TokenStats, lm_logprobs, claims, mask=None) -> Tensor:
    """``-Σ_{t∈c} (log p(y_t|x,y<t) - log p(y_t|y<t))``, the prompt-free term 0 at each sequence's first
    real token (``mask [B, T]``), LM-Polygraph ``PointwiseMutualInformationClaim``."""
    lm = _per_token(lm_logprobs, "lm_logprobs", stats)
    if mask is not None:
        bool_mask(mask, "mask", lm.shape, lm)
    s = stats.logprob - torch.where(_first_token(mask, lm), 0.0, lm)
    return -claim_reduce(s, claims, op="sum")


def token_sar_claim(stats: TokenStats, relevance, claims, mask=None) -> Tensor:
    """``Σ_{t∈c} E_t`` with ``E_t = -log p(y_t)·R_t / Σ_{t'} R_t'`` (the sum over the sequence's real tokens),
    LM-Polygraph ``TokenSARClaim``; ``relevance [B, T]`` = 1 - the leave-one-token-out similarity."""
    r = _per_token(relevance, "relevance", stats)
    m = bool_mask(mask, "mask", r.shape, r)
    total = masked_reduce(r, m, op="sum")
    e = -stats.logprob * r / total[:, None]
    return claim_reduce(e, claims, op="sum")


def ccp_claim(alt_logprobs, nli_forward, nli_backward, claims, *, alt_mask=None, stopword_mask=None) -> Tensor:
    """``-Π_{t∈c} ccp_t = -exp(Σ_{t∈c} log ccp_t)``, LM-Polygraph ``ClaimConditionedProbabilityClaim``
    ("no_context": the NLI labels of each step's alternatives without the claim as context). The
    per-token terms are :func:`~flashuq.methods.ccp_token_logprobs` (same arguments);
    ``stopword_mask [B, T]`` marks steps whose emitted word is a stop-word, which count as entailed
    (``ccp_t = 1``), as the reference does. For "fact_pref", pass labels computed with each claim as
    the NLI prefix: one call per claim's labels."""
    t = ccp_token_logprobs(alt_logprobs, nli_forward, nli_backward, alt_mask=alt_mask)
    if stopword_mask is not None:
        t = torch.where(bool_mask(stopword_mask, "stopword_mask", t.shape, t), 0.0, t)
    return -torch.exp(claim_reduce(t, claims, op="sum"))


def boostedprob_claim(logits, tokens, claims, **kwargs) -> Tensor:
    """``-mean_{t∈c} b_t`` with the per-token BoostedProb of :func:`~flashuq.methods.boostedprob_token_scores`
    (keyword arguments passed on), LM-Polygraph ``BoostedProbClaim``."""
    return -claim_reduce(boostedprob_token_scores(logits, tokens, **kwargs), claims, op="mean")


def focus_claim(logits, tokens, attn, keyword_mask, idf, claims, *, gamma: float, p_threshold: float,
                mask=None) -> Tensor:
    """``mean_{t∈c} f_t`` over all the claim's tokens, with Focus's per-token scores ``f`` (see
    :func:`~flashuq.methods.focus`, same arguments), LM-Polygraph ``FocusClaim``. A claim of a sequence
    without keywords gives NaN (the reference has no token scores there)."""
    f, kw = _focus_terms(logits, tokens, attn, keyword_mask, idf, gamma, p_threshold, mask)
    f = torch.where(kw.any(1, keepdim=True), f, torch.nan)
    return claim_reduce(f, claims, op="mean")


def attention_score_claim(attn, response_start, claims, *, layer=None) -> Tensor:
    """``-(1/H) Σ_h Σ_{t∈c} log(A^{l,h}_{ii} + 1e-12)`` with ``i = response_start + t``: AttentionScore
    (:func:`~flashuq.methods.attention_score`) restricted to the claim's tokens, LM-Polygraph
    ``AttentionScoreClaim``. ``attn [B, L, H, N, N]`` (or its diagonals ``[B, L, H, N]``); claim positions
    count from each sequence's ``response_start``; ``layer`` defaults to ``L // 2``."""
    d = _diagonals(attn)
    B, L, H, N = d.shape
    layer = L // 2 if layer is None else _int(layer, "layer")
    if not -L <= layer < L:
        raise ValueError(f"layer must be in [-L, L) = [{-L}, {L}), got {layer}")
    rs = _response_start(response_start, B, N, d)
    cl = check_claims(claims, B, N, d.device)
    pos = cl.tokens + torch.repeat_interleave(rs[cl.rows], cl.cu[1:] - cl.cu[:-1])
    if pos.numel() and bool((pos >= N).any()):
        raise ValueError(f"claims.tokens: response_start + position must be < N = {N}")
    per_pos = torch.log(d[:, layer].double() + 1e-12).sum(1) / H            # [B, N]
    shifted = type(cl)(cl.rows, cl.cu, pos)
    out = masked_reduce(gather_claims(per_pos, shifted), op="sum", cu_seqlens=cl.cu)
    return (-out).to(compute_dtype(d))


def frequency_scoring_claim(nli_to_samples, sample_mask=None) -> Tensor:
    """``#contra - #entail`` over the sampled answers, LM-Polygraph ``FrequencyScoringClaim`` (Mohri &
    Hashimoto's frequency scoring with an NLI model). ``nli_to_samples``: ``[C, S, 3]`` NLI probabilities
    of (claim, sample) pairs in the label order ``ENTAIL, NEUTRAL, CONTRA`` (the argmax is taken, ties to
    entail, then contra, then neutral, as LM-Polygraph's ``max`` over its label dict), or ``[C, S]``
    integer labels. ``sample_mask [C, S]`` drops samples. Returns ``[C]``
    (fp32)."""
    x = input_tensor(nli_to_samples, "nli_to_samples", None, "real")
    if x.dtype.is_floating_point:
        if x.dim() != 3 or x.shape[-1] != 3:
            raise ValueError(f"nli_to_samples must be [C, S, 3] probabilities or [C, S] labels, "
                             f"got {x.dtype} {tuple(x.shape)}")
        prefer = torch.tensor([0, 2, 1], device=x.device)  # ENTAIL, CONTRA, NEUTRAL
        labels = prefer[x[..., prefer].argmax(-1)]
    else:
        if x.dim() != 2:
            raise ValueError(f"nli_to_samples must be [C, S, 3] probabilities or [C, S] labels, got shape "
                             f"{tuple(x.shape)}")
        if bool(((x < 0) | (x > 2)).any()):
            raise ValueError("nli_to_samples: labels must be 0 (entail), 1 (neutral) or 2 (contra)")
        labels = x
    m = bool_mask(sample_mask, "sample_mask", labels.shape, labels)
    count = lambda c: ((labels == c) & m).sum(-1)  # noqa: E731
    return (count(2) - count(0)).to(torch.float32)


__all__ = ["maximum_claim_probability", "perplexity_claim", "max_token_entropy_claim", "self_certainty_claim",
           "pmi_claim", "token_sar_claim", "ccp_claim", "boostedprob_claim", "focus_claim",
           "attention_score_claim", "frequency_scoring_claim"]
