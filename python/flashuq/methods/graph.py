"""Similarity-graph estimators over K sampled responses (docs/methods.md#graph-methods): DegMat, EigV,
Eccentricity, Kernel Language Entropy and the number of semantic sets.

All take ``[Q, K, K]`` matrices and an optional ``sample_mask [Q, K]`` and return an uncertainty
``[Q]`` (higher = less trustworthy). ``W`` may be a raw entailment matrix ``E`` (``W[i, j] =
P(entail | premise i, hypothesis j)``): every function symmetrises it as ``(W + Wᵀ)/2`` first,
exactly as LM-Polygraph does, so ``eigv(E)`` equals ``eigv(symmetrize(E))``. For LM-Polygraph's
``affinity="contra"`` pass ``1 - C``. The spectra run in the batched C++/CUDA kernel of
:mod:`flashuq.ops.graph`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _ext
from .._checks import check_bool
from ..ops._common import is_tracing
from ..ops.graph import laplacian_spectrum, nli_heat_kernel_entropy
from ._inputs import check_shape, compute_dtype, input_tensor, sample_mask_of


def _matrix(W, name: str = "W", like=None) -> Tensor:
    W = input_tensor(W, name, 3, "float", like)
    if W.shape[1] != W.shape[2]:
        raise ValueError(f"{name} must have shape [Q, K, K], got {tuple(W.shape)}")
    return W


def degree(W, *, sample_mask=None) -> Tensor:
    """DegMat (LM-Polygraph ``deg_mat.py``; Lin, Trivedi, Sun 2023, arXiv 2305.19187), uncertainty.

    ``u = trace(n·I - D)/n² = 1 - mean_{i,j} W_ij`` over the n valid responses, diagonal included
    (``D`` = the degrees of the symmetrised W; symmetrising does not change the mean).
    NaN for a question without a valid sample.
    """
    W = _matrix(W)
    Q, K = W.shape[:2]
    x = W.to(compute_dtype(W))
    if sample_mask is None:
        return 1 - x.mean((1, 2))  # K = 0: 0/0 = NaN
    valid = sample_mask_of(sample_mask, Q, K, W)
    pair = valid[:, :, None] & valid[:, None, :]
    return 1 - torch.where(pair, x, 0).sum((1, 2)) / pair.sum((1, 2)).to(x.dtype)


def eigv(W, *, sample_mask=None) -> Tensor:
    """EigV, the sum of eigenvalues of the graph Laplacian (LM-Polygraph ``eig_val_laplacian.py``;
    Lin, Trivedi, Sun 2023), uncertainty: ``Σ_k max(0, 1 - λ_k)`` over the eigenvalues of
    ``L = I - D^-1/2 W D^-1/2``. A continuous count of semantic sets: n disconnected responses give
    n, n identical ones give 1. NaN where a degree is not positive (LM-Polygraph's ``inv(sqrt(D))``
    fails there) or for a question without a valid sample.
    """
    W = _matrix(W)
    return laplacian_spectrum(W, sample_mask=sample_mask, eccentricity=False).eigv


def eccentricity(W, *, threshold: float = 0.9, sample_mask=None, return_per_sample: bool = False):
    """Eccentricity (LM-Polygraph ``eccentricity.py``; Lin, Trivedi, Sun 2023), uncertainty.

    The eigenvectors of ``L = I - D^-1/2 W D^-1/2`` with eigenvalue ``< threshold`` (default 0.9,
    a threshold rather than a fixed count, as the reference) embed each response as a row; the
    score is the Frobenius norm of the embedding after centring each eigenvector over the
    responses. With ``return_per_sample=True`` also returns ``[Q, K]`` per-response distances from
    the centre (the per-response norms of the paper; LM-Polygraph's ``C_Ecc_s_j`` is computed per
    eigenvector instead, so it is not reproduced). NaN as :func:`eigv`.
    """
    W = _matrix(W)
    return_per_sample = check_bool(return_per_sample, "return_per_sample")
    spec = laplacian_spectrum(W, sample_mask=sample_mask, threshold=threshold, eccentricity=True,
                              per_sample=return_per_sample)
    return (spec.eccentricity, spec.eccentricity_per_sample) if return_per_sample else spec.eccentricity


def kernel_language_entropy(entail, contra, *, t: float = 0.3, sample_mask=None) -> Tensor:
    """Kernel Language Entropy, KLE(K_heat) (Nikitin, Kossen, Gal, Marttinen, NeurIPS 2024, arXiv
    2405.20003; LM-Polygraph ``kernel_language_entropy.py``), uncertainty.

    With ``E, C [Q, K, K]`` the NLI entailment and contradiction probabilities::

        W   = (E + Eᵀ) + 0.5·(2 - (E + Eᵀ) - (C + Cᵀ))     weights in [0, 2]: entail 1, neutral ½
        L   = diag(Σ_j W_ij) - W
        Kh  = expm(-t L),  normalised to unit diagonal and divided by n
        KLE = -Σ λ ln λ (|λ| > 1e-8) / ln n

    This is docs/methods.md#kle, the paper's kernel. The LM-Polygraph code differs in two ways that
    make it no per-question function: its Laplacian is ``W - D`` (so it computes expm(+tL)), and
    its degrees ``np.diag(np.sum(W, axis=0))`` sum over the *batch* axis of the ``[B, K, K]``
    stack. NaN for fewer than two valid responses (ln 1 = 0).
    """
    E = _matrix(entail, "entail")
    C = _matrix(contra, "contra", E)
    check_shape(C, "contra", E.shape)
    dt = compute_dtype(E, C)
    E, C = E.to(dt), C.to(dt)
    Q, K = E.shape[:2]
    valid = sample_mask_of(sample_mask, Q, K, E)
    # the kernel builds W = Es + 0.5·(2 - Es - Cs) from E and C as it loads them: new [Q, K, K]
    # tensors this large are fresh memory from the system, whose page faults cost more than the
    # arithmetic
    vne = nli_heat_kernel_entropy(E, C, t=t, sample_mask=None if sample_mask is None else valid)
    n = valid.sum(1)
    # ln 1 = 0: one response has no entropy to scale (its VNE is ~1e-12 from the normaliser's epsilon)
    return torch.where(n >= 2, vne / torch.log(n.to(dt)), torch.nan)


def num_sem_sets(entail, contra, *, sample_mask=None) -> Tensor:
    """NumSemSets, the number of semantic sets (LM-Polygraph ``num_sem_sets.py``; Lin, Trivedi, Sun
    2023), uncertainty, as a float.

    Responses i and j are linked when ``E > C`` in **both** directions (probabilities compared
    elementwise, not the NLI argmax); the score is the number of connected components of that
    graph over the valid responses. On the CPU: union-find per question in C++ (``flashuq._C``);
    on other devices and under ``torch.compile``: boolean transitive closure batched over
    questions, ``ceil(log2 K)`` squarings of ``[Q, K, K]``. NaN for a question without a valid
    sample.
    """
    E = _matrix(entail, "entail")
    C = _matrix(contra, "contra", E)
    check_shape(C, "contra", E.shape)
    Q, K = E.shape[:2]
    valid = sample_mask_of(sample_mask, Q, K, E)
    dt = compute_dtype(E, C)
    if K == 0:
        return torch.full((Q,), torch.nan, dtype=dt, device=E.device)
    if E.device.type == "cpu" and not is_tracing():
        out = torch.empty(Q, dtype=dt)
        if Q:  # the comparisons are exact in fp32/fp64, whatever the input's floating type
            _ext._C.num_sem_sets(E.detach().to(dt).contiguous(), C.detach().to(dt).contiguous(),
                                 valid.contiguous(), out, torch.get_num_threads())
        return out
    A = E > C
    A = A & A.transpose(1, 2) & valid[:, :, None] & valid[:, None, :]
    A = A | torch.eye(K, dtype=torch.bool, device=A.device)
    R = A.to(torch.float32)
    for _ in range(max(1, math.ceil(math.log2(max(K, 2))))):  # paths of length up to 2^s
        R = (torch.bmm(R, R) > 0).to(torch.float32)
    # a component is counted at its lowest-numbered valid member
    first = R.argmax(dim=2)  # the first index reachable from i (R[i, i] = 1, so <= i)
    roots = (first == torch.arange(K, device=A.device)) & valid
    n = roots.sum(1).to(compute_dtype(E, C))
    return torch.where(valid.any(1), n, torch.nan)


__all__ = ["degree", "eccentricity", "eigv", "kernel_language_entropy", "num_sem_sets"]
