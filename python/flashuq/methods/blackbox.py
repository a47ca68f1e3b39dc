"""uqlm's black-box consistency scorers, its ensemble, and MAQA's response consistency
(docs/methods.md#blackbox-consistency): how K sampled responses agree with the original one (or with
each other), batched over questions. The references return confidences in [0, 1]; these estimators
return them **negated** (uncertainties). A question without a valid sample gets NaN."""

from __future__ import annotations

import torch
from torch import Tensor

from ._inputs import check_shape, compute_dtype, input_tensor, sample_mask_of
from .samples import _mean, _pair_mean, _unit


def _pair(forward, backward, name_f: str, name_b: str):
    f = input_tensor(forward, name_f, 2, "float")
    b = input_tensor(backward, name_b, 2, "float", f)
    check_shape(b, name_b, f.shape)
    dt = compute_dtype(f, b)
    return f.to(dt), b.to(dt)


def uqlm_noncontradiction(contra_forward, contra_backward, *, sample_mask=None) -> Tensor:
    """uqlm ``noncontradiction`` **negated**: ``-mean_k [(1 - P_c(o→k)) + (1 - P_c(k→o))]/2``.

    ``contra_forward [Q, K]``: the NLI contradiction probability with the original response as premise
    and sample k as hypothesis; ``contra_backward``: the reverse order."""
    f, b = _pair(contra_forward, contra_backward, "contra_forward", "contra_backward")
    valid = sample_mask_of(sample_mask, *f.shape, f)
    return -_mean(((1 - f) + (1 - b)) / 2, valid)


def uqlm_entailment(entail_forward, entail_backward, *, sample_mask=None) -> Tensor:
    """uqlm ``entailment`` **negated**: ``-mean_k [P_e(o→k) + P_e(k→o)]/2``; arguments as
    :func:`uqlm_noncontradiction`, with the entailment probabilities."""
    f, b = _pair(entail_forward, entail_backward, "entail_forward", "entail_backward")
    valid = sample_mask_of(sample_mask, *f.shape, f)
    return -_mean((f + b) / 2, valid)


def uqlm_exact_match(original_ids, sample_ids, *, sample_mask=None) -> Tensor:
    """uqlm ``exact_match`` **negated**: ``-mean_k 1[o == k]``. Texts are compared outside: pass equal
    integer ids for equal texts, ``original_ids [Q]`` and ``sample_ids [Q, K]``. fp32."""
    o = input_tensor(original_ids, "original_ids", 1, "int")
    s = input_tensor(sample_ids, "sample_ids", 2, "int", o)
    if s.shape[0] != o.shape[0]:
        check_shape(s, "sample_ids", (o.shape[0], s.shape[1]))
    valid = sample_mask_of(sample_mask, *s.shape, s)
    return -_mean((s == o[:, None]).float(), valid)


def uqlm_cosine_sim(original_embedding, sample_embeddings, *, sample_mask=None) -> Tensor:
    """uqlm ``cosine_sim`` **negated**: ``-mean_k (1/2 + cos(e_o, e_k)/2)``, the cosine mapped to [0, 1].

    ``original_embedding [Q, D]`` and ``sample_embeddings [Q, K, D]`` (uqlm: a sentence-transformers
    model's). A zero embedding has no direction: its question gets NaN."""
    e = input_tensor(sample_embeddings, "sample_embeddings", 3, "float")
    o = input_tensor(original_embedding, "original_embedding", 2, "float", e)
    check_shape(o, "original_embedding", (e.shape[0], e.shape[2]))
    dt = compute_dtype(e, o)
    cos = (_unit(e.to(dt)) * _unit(o.to(dt))[:, None, :]).sum(-1).clamp(-1.0, 1.0)
    valid = sample_mask_of(sample_mask, *e.shape[:2], e)
    return -_mean(0.5 + cos / 2, valid)


def uqlm_consistency_and_confidence(original_embedding, sample_embeddings, original_prob, *,
                                    sample_mask=None) -> Tensor:
    """uqlm ``consistency_and_confidence`` **negated**: ``-(mean_k (1/2 + cos(e_o, e_k)/2)) · p_o``, the
    cosine consistency of :func:`uqlm_cosine_sim` times the original response's probability
    ``original_prob [Q]`` (as the caller computes it: uqlm's sequence probability)."""
    c = uqlm_cosine_sim(original_embedding, sample_embeddings, sample_mask=sample_mask)
    p = input_tensor(original_prob, "original_prob", 1, "float", c)
    check_shape(p, "original_prob", c.shape)
    dt = compute_dtype(c, p)
    return c.to(dt) * p.to(dt)


def uqlm_semantic_density(contra, neutral, sample_probs, *, sample_mask=None) -> Tensor:
    """uqlm ``semantic_density`` **negated**: with the NLI probabilities of (original, candidate k)
    (``contra``, ``neutral [Q, K]``; uqlm puts the prompt before both)::

        E[d]  = C_k + N_k·√2/2,   E[d²] = C_k + N_k/2
        κ_k   = (1 - E[d²]) · 1[E[d] <= 1]
        u     = -Σ_k w_k κ_k / Σ_k w_k,    w = sample_probs [Q, K], the candidates' sequence probabilities

    over the valid candidates (NaN when their weights sum to 0). LM-Polygraph's variant, which adds
    the greedy answer, is :func:`flashuq.methods.semantic_density`."""
    c = input_tensor(contra, "contra", 2, "float")
    nu = input_tensor(neutral, "neutral", 2, "float", c)
    check_shape(nu, "neutral", c.shape)
    w = input_tensor(sample_probs, "sample_probs", 2, "float", c)
    check_shape(w, "sample_probs", c.shape)
    dt = compute_dtype(c, nu, w)
    c, nu, w = c.to(dt), nu.to(dt), w.to(dt)
    valid = sample_mask_of(sample_mask, *c.shape, c)
    ed = c + nu * (2 ** 0.5 / 2)
    kern = torch.where(ed <= 1, 1 - (c + nu / 2), 0.0)
    kern = torch.where(ed.isnan(), torch.nan, kern)  # (ed <= 1 is False for NaN)
    num = torch.where(valid, w * kern, 0.0).sum(1)
    return -(num / torch.where(valid, w, 0.0).sum(1))


def weighted_ensemble(scores, weights) -> Tensor:
    """uqlm ``UQEnsemble``'s combination: ``Σ_s w_s u_s / Σ_s w_s`` of S component scores
    ``scores [Q, S]`` with ``weights [S]`` (non-negative, not all 0; uqlm normalises them to sum 1).

    The combination is linear, so passing flashuq's negated confidences gives the negated uqlm
    ensemble (an uncertainty); uqlm's default, Chen & Mueller's "BS detector", weighs noncontradiction
    0.56, exact match 0.14 and a self-judge 0.3. The weights are not tuned here. A NaN component gives
    NaN for its question."""
    x = input_tensor(scores, "scores", 2, "float")
    w = input_tensor(weights, "weights", 1, "real", x)
    check_shape(w, "weights", (x.shape[1],))
    dt = compute_dtype(x, w if w.dtype.is_floating_point else None)
    w = w.to(dt)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not bool((w.sum() > 0)):
        raise ValueError("weights must be finite and non-negative, with a positive sum")
    return (x.to(dt) * (w / w.sum())).sum(1)


def maqa_response_consistency(overlap, n_answers, *, sample_mask=None) -> Tensor:
    """MAQA's response consistency (Yang, Yoo, Lee, NAACL Findings 2025, arXiv 2408.06816) **negated**:
    ``-mean_{i≠j} |ans_i ∩ ans_j| / |ans_i|`` over ordered pairs of valid responses, a response
    without answers scoring 0.

    Each response is parsed into a set of answers outside flashuq; ``overlap [Q, K, K]`` holds
    ``|{a ∈ ans_i : a ∈ ans_j}|`` and ``n_answers [Q, K]`` holds ``|ans_i|``. Fewer than two valid
    responses give NaN."""
    ov = input_tensor(overlap, "overlap", 3, "real")
    Q, K = ov.shape[:2]
    check_shape(ov, "overlap", (Q, K, K))
    n = input_tensor(n_answers, "n_answers", 2, "real", ov)
    check_shape(n, "n_answers", (Q, K))
    dt = compute_dtype(ov if ov.dtype.is_floating_point else None, n if n.dtype.is_floating_point else None)
    ov, n = ov.to(dt), n.to(dt)
    valid = sample_mask_of(sample_mask, Q, K, ov)
    nn = n[:, :, None]
    frac = torch.where(nn > 0, ov / nn, torch.where(nn == 0, 0.0, torch.nan))  # (a negative count: NaN)
    return -_pair_mean(frac, valid)


__all__ = ["uqlm_noncontradiction", "uqlm_entailment", "uqlm_exact_match", "uqlm_cosine_sim",
           "uqlm_consistency_and_confidence", "uqlm_semantic_density", "weighted_ensemble", "maqa_response_consistency"]
