"""Hidden-state methods (docs/methods.md#hidden-state-methods): uncertainty from the model's internal
representations: EigenScore over sampled answers, Uncertainty as Feature Gaps' projections, and
PA-CCS's probe metrics, batched."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .._checks import check_real
from ..ops.graph import MAX_CUDA_K, sym_eig
from ._inputs import check_shape, compute_dtype, input_tensor, sample_mask_of

# fp64 elements per block of questions whose centred embeddings exist at once (256 MB)
_BLOCK_ELEMENTS = 1 << 25


def _centred_gram(Z: Tensor, valid: Tensor) -> Tensor:
    """``Z̃ Z̃ᵀ`` in fp64 per question, ``Z̃`` = each valid sample's embedding minus its mean over the
    features (masked samples are zero rows), a block of questions at a time."""
    Q, K, d = Z.shape
    G = torch.empty(Q, K, K, dtype=torch.float64, device=Z.device)
    step = max(1, _BLOCK_ELEMENTS // max(1, K * d))
    for q0 in range(0, Q, step):
        Zb = Z[q0:q0 + step].to(torch.float64)
        Zb = torch.where(valid[q0:q0 + step, :, None], Zb, 0.0)  # whatever masked rows hold
        Zb = Zb - Zb.mean(-1, keepdim=True)
        torch.matmul(Zb, Zb.transpose(1, 2), out=G[q0:q0 + step])
    return G


def eigenscore(embeddings, *, alpha: float = 1e-3, sample_mask=None) -> Tensor:
    """EigenScore (Chen et al., "INSIDE: LLMs' Internal States Retain the Power of Hallucination
    Detection", ICLR 2024, arXiv 2402.03744; LM-Polygraph ``eigenscore.py``), uncertainty.

    With ``Z [Q, K, d]`` the K sampled answers' embeddings of each question (the paper and
    LM-Polygraph: the middle layer's hidden state at each answer's last token)::

        Σ = Z J_d Zᵀ,  J_d = I_d - 11ᵀ/d         centred over the d features (paper and LM-Polygraph)
        λ = eig(Σ + α I),  λ <= 0 -> 1e-10
        u = (1/K) Σ_k ln λ_k                      = ln det(Σ + αI) / K

    Higher: the answers' embeddings spread over more directions, i.e. more diverse answers.
    ``Σ = Z̃ Z̃ᵀ`` with each embedding minus its own feature mean (``J_d`` is a symmetric projector), so
    the ``d × d`` matrix is never built; the ``[K, K]`` Gram matrices are accumulated in fp64 (as the
    reference, whose ``J_d`` is fp64) and their eigenvalues come from :func:`flashuq.sym_eig`. With
    ``sample_mask [Q, K]`` the mean runs over the valid answers only; NaN for a question with no valid
    answer or a non-finite entry in a valid one. fp64 result for fp64 input, fp32 otherwise.
    """
    Z = input_tensor(embeddings, "embeddings", 3, "float")
    alpha = check_real(alpha, "alpha")
    Q, K, _ = Z.shape
    valid = sample_mask_of(sample_mask, Q, K, Z)
    out_dtype = compute_dtype(Z)
    G = _centred_gram(Z.detach(), valid)
    G.diagonal(dim1=1, dim2=2).add_(alpha)
    on_cpu = G.device.type == "cuda" and K > MAX_CUDA_K  # beyond the CUDA solver's size: on the CPU
    lam = sym_eig(G.cpu() if on_cpu else G, sample_mask=valid.cpu() if on_cpu else valid).eigenvalues.to(G.device)
    n = valid.sum(1)
    first = torch.arange(K, device=G.device)[None, :] < n[:, None]  # the n valid eigenvalues come first
    logs = torch.log(torch.where(lam > 0, lam, 1e-10))
    logs = torch.where(first, logs, 0.0)
    # a NaN eigenvalue (a non-finite embedding) is not > 0: its question gets NaN, not ln 1e-10
    bad = (first & lam.isnan()).any(1)
    u = torch.where(bad | (n == 0), torch.nan, logs.sum(1) / n.clamp(min=1))
    return u.to(out_dtype)


def mean_hidden_over_span(hidden, start, end) -> Tensor:
    """``h[b, l] = mean_{start_b <= s < end_b} hidden[l, b, s]``: each layer's hidden states averaged over
    a span of positions, ``[B, L, D]`` from ``hidden [L, B, S, D]`` (the ``hidden_states`` tuple of
    transformers, stacked). Feature Gaps takes ``start = P - 1``, ``end = S - 1`` with P prompt ids: the
    positions that predict the generated tokens. An empty span gives NaN."""
    hs = input_tensor(hidden, "hidden", 4, "float")
    L, B, S, D = hs.shape
    st = input_tensor(start, "start", 1, "int", hs)
    en = input_tensor(end, "end", 1, "int", hs)
    check_shape(st, "start", (B,))
    check_shape(en, "end", (B,))
    if bool(((st < 0) | (en > S) | (st > en)).any()):
        raise ValueError(f"start/end: need 0 <= start <= end <= S = {S}")
    pos = torch.arange(S, device=hs.device)
    span = (pos[None, :] >= st[:, None]) & (pos[None, :] < en[:, None])  # [B, S]
    dt = compute_dtype(hs)
    total = torch.where(span[None, :, :, None], hs.to(dt), 0.0).sum(2)  # [L, B, D]
    return (total / (en - st).to(dt)[None, :, None]).transpose(0, 1)


def project_scores(h, mu, direction) -> Tensor:
    """``score[b, l] = (h[b, l] - μ[l]) · d[l] / ‖d[l]‖`` for ``h [B, L, D]``, ``mu``, ``direction [L, D]``
    (Feature Gaps' projection onto a fitted direction; μ is the mean *difference* vector of the
    contrast pairs, as the reference subtracts)."""
    x = input_tensor(h, "h", 3, "float")
    m = input_tensor(mu, "mu", 2, "float", x)
    d = input_tensor(direction, "direction", 2, "float", x)
    check_shape(m, "mu", x.shape[1:])
    check_shape(d, "direction", x.shape[1:])
    dt = compute_dtype(x, m, d)
    d = d.to(dt)
    return ((x.to(dt) - m.to(dt)) * d).sum(-1) / torch.linalg.vector_norm(d, dim=-1)


def feature_gaps(hidden, mu, direction, layer, weight, bias) -> Tensor:
    """Uncertainty as Feature Gaps (Bakman et al., arXiv 2510.02671, ICLR 2026), **negated**
    ``-P(correct)``::

        s_f = (h[:, layer_f] - μ_f) · d_f / ‖d_f‖        F features (context reliance, comprehension, honesty)
        P   = sigmoid(Σ_f w_f s_f + b)

    ``hidden [B, L, D]``: each example's hidden states averaged over the generated positions
    (:func:`mean_hidden_over_span`); ``mu``, ``direction [F, D]``, ``layer [F]`` (an index into L): each
    feature's fitted direction at its chosen layer, with the sign flip of the reference's calibration
    folded into ``direction``; ``weight [F]``, ``bias``: the logistic regression. The fitting (PCA of
    the contrast pairs' differences, the layer choice, the regression) runs outside flashuq.
    """
    h = input_tensor(hidden, "hidden", 3, "float")
    B, L, D = h.shape
    lay = input_tensor(layer, "layer", 1, "int", h)
    F = lay.shape[0]
    if bool(((lay < -L) | (lay >= L)).any()):
        raise ValueError(f"layer: indices must lie in [-L, L) = [{-L}, {L})")
    m = input_tensor(mu, "mu", 2, "float", h)
    check_shape(m, "mu", (F, D))
    w = input_tensor(weight, "weight", 1, "float", h)
    check_shape(w, "weight", (F,))
    b = check_real(bias, "bias")
    s = project_scores(h[:, lay.long() % L], m, direction)  # [B, F]
    return -torch.sigmoid(s @ w.to(s.dtype) + b)


def linear_probe(h, weight, bias) -> Tensor:
    """``sigmoid(h[b, l] · w[l] + b[l])``, ``[B, L]``, for ``h [B, L, D]``, ``weight [L, D]``, ``bias [L]``:
    a CCS probe per layer (PA-CCS, :func:`pa_ccs_metrics`)."""
    x = input_tensor(h, "h", 3, "float")
    w = input_tensor(weight, "weight", 2, "float", x)
    check_shape(w, "weight", x.shape[1:])
    b = input_tensor(bias, "bias", 1, "float", x)
    check_shape(b, "bias", x.shape[1:2])
    dt = compute_dtype(x, w, b)
    return torch.sigmoid((x.to(dt) * w.to(dt)).sum(-1) + b.to(dt))


def pa_ccs_metrics(p_a_yes, p_a_no, p_not_yes, p_not_no) -> Tuple[Tensor, Tensor]:
    """PA-CCS's per-pair terms (Sadiekh, Ericheva, Agarwal, AAAI 2026, arXiv 2511.21737), from a probe's
    probabilities for a statement A and its opposite ¬A, each with "Yes" and with "No" appended::

        PC_i = ½((pA1 - pN0)² + (pA0 - pN1)²) · sign(pA1 - pN1) · sign(pN0 - pA0)     Polar-Consistency
        CI_i = pA1·pN1 + pA0·pN0                                                      Contradiction Index

    Returns ``(PC, CI)`` of the inputs' shape; the paper reports their means over the test pairs (both
    lower-is-better).
    """
    a1 = input_tensor(p_a_yes, "p_a_yes", None, "float")
    rest = [input_tensor(x, n, a1.dim(), "float", a1) for x, n in
            ((p_a_no, "p_a_no"), (p_not_yes, "p_not_yes"), (p_not_no, "p_not_no"))]
    for x, n in zip(rest, ("p_a_no", "p_not_yes", "p_not_no")):
        check_shape(x, n, a1.shape)
    dt = compute_dtype(a1, *rest)
    a1, a0, n1, n0 = (x.to(dt) for x in (a1, *rest))
    pc = 0.5 * ((a1 - n0) ** 2 + (a0 - n1) ** 2) * torch.sign(a1 - n1) * torch.sign(n0 - a0)
    ci = a1 * n1 + a0 * n0
    return pc, ci


__all__ = ["eigenscore", "mean_hidden_over_span", "project_scores", "feature_gaps", "linear_probe", "pa_ccs_metrics"]
