"""uqlm's black-box consistency scorers, its ensemble, and MAQA's response consistency
(docs/methods.md#blackbox-consistency): how K sampled responses agree with the original one (or with
each other), batched over questions. The references return confidences in [0, 1]; these estimators
return them **negated** (uncertainties). A question without a valid sample gets NaN."""

from __future__ import annotations

import torch
from torch import Tensor

from ._inputs import check_shape, compute_dtype, input_tensor, sample_mask_of
from .samples import _mean, _pair_valid, _unit


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
    pv = _pair_valid(valid)
    return -(torch.where(pv, frac, 0.0).sum((1, 2)) / pv.sum((1, 2)).to(dt))


__all__ = ["uqlm_noncontradiction", "uqlm_entailment", "uqlm_exact_match", "uqlm_cosine_sim", "weighted_ensemble",
           "maqa_response_consistency"]
