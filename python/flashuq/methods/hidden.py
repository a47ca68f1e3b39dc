"""Hidden-state methods (docs/methods.md#hidden-state-methods): uncertainty from the model's internal
representations of its sampled answers, batched over questions."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_real
from ..ops.graph import MAX_CUDA_K, sym_eig
from ._inputs import compute_dtype, input_tensor, sample_mask_of

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


__all__ = ["eigenscore"]
