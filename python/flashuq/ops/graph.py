"""Batched spectra of many small symmetric matrices: one question's ``[K, K]`` similarity graph at
a time, thousands at once (docs/methods.md#graph-methods).

The kernel is ``csrc/include/flashuq/graph.h`` + ``symeig.h``: Householder tridiagonalisation and
implicit QL, written once for a team of workers and compiled for the CPU (``flashuq._C``, one
question per OpenMP iteration, fp64 arithmetic) and CUDA (``flashuq._cuda``, one question per
block, fp64 arithmetic). On the CPU, eigenvalue-only work on questions of 3..64 samples (EigV,
Eccentricity, the heat kernel, ``sym_eig`` without vectors) runs up to 32 questions of one size
at a time in SIMD lanes (``csrc/cpu/graph_lanes.h``; fewer than five of a size take the scalar
path), bitwise equal to the scalar code except the heat kernel (scaling and squaring there, not
eigenvectors; equal to rounding; always in the lanes). Every matrix is symmetrised as
``(W + Wᵀ)/2`` first, which is LM-Polygraph's step for an entailment matrix and changes nothing
for a symmetric one.

Ragged questions (K varies because empty samples were dropped) come as ``sample_mask [Q, K]``;
the valid samples are moved to the front (order kept) and the kernel works on the leading
``n x n`` block, so masked rows and columns never enter a result, whatever they hold.

The ops here return quantities in their natural orientation; the estimators that turn them into
uncertainties are in :mod:`flashuq.methods.graph`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .._checks import check_bool, check_real
from .. import _ext
from ._common import as_tensor, device_guard, plain_cpu_call

OP_EIG, OP_LAPLACIAN, OP_HEAT, OP_NLI_HEAT = 0, 1, 2, 3
MAX_CUDA_K = 64  # the block keeps two K x K fp64 matrices in shared memory


class LaplacianSpectrum(NamedTuple):
    """Scores from the eigen-decomposition of the normalised Laplacian ``L = I - D^-1/2 W D^-1/2``."""

    eigv: Tensor                    #: [Q] Σ_k max(0, 1 - λ_k) (EigV; Lin, Trivedi, Sun 2023)
    eccentricity: Optional[Tensor]  #: [Q] Frobenius norm of the centred eigenvectors with λ < threshold
    #: [Q, K] norm of each response's centred row (NaN = masked); None with per_sample=False
    eccentricity_per_sample: Optional[Tensor]


def _check_matrix(W, name: str) -> Tensor:
    W = as_tensor(W, name)
    if not W.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got {W.dtype}")
    if W.dim() != 3 or W.shape[1] != W.shape[2]:
        raise ValueError(f"{name} must have shape [Q, K, K], got {tuple(W.shape)}")
    if W.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{name} must be on the CPU or a CUDA device, got {W.device}")
    if W.device.type == "cuda" and W.shape[1] > MAX_CUDA_K:
        raise ValueError(f"{name}: K = {W.shape[1]} samples exceed the CUDA kernel's limit of {MAX_CUDA_K}; "
                         "move the matrices to the CPU")
    return W


def _check_mask(sample_mask, W: Tensor) -> Optional[Tensor]:
    if sample_mask is None:
        return None
    m = as_tensor(sample_mask, "sample_mask")
    if m.dtype.is_floating_point or m.dtype.is_complex:
        raise TypeError(f"sample_mask must be a bool (or integer) tensor, got {m.dtype}")
    if tuple(m.shape) != tuple(W.shape[:2]):
        raise ValueError(f"sample_mask must have shape {tuple(W.shape[:2])}, got {tuple(m.shape)}")
    if m.device != W.device:
        raise ValueError(f"sample_mask is on {m.device} but the matrices are on {W.device}")
    return m != 0


def _compact(W: Tensor, mask: Optional[Tensor], C: Optional[Tensor] = None):
    """(W with the valid samples first, int32 counts, the permutation or None, C likewise or None)."""
    Q, K = W.shape[:2]

    def prep(X):
        X = X.detach()
        return X.to(torch.float32) if X.dtype in (torch.float16, torch.bfloat16) else X

    W = prep(W)
    C = None if C is None else prep(C)
    if mask is None:
        counts = torch.full((Q,), K, dtype=torch.int32, device=W.device)
        return W.contiguous(), counts, None, None if C is None else C.contiguous()
    perm = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # valid samples first, in order

    def gather(X):
        return X.gather(1, perm[:, :, None].expand(Q, K, K)).gather(2, perm[:, None, :].expand(Q, K, K)).contiguous()

    return gather(W), mask.sum(1, dtype=torch.int32), perm, None if C is None else gather(C)


def _scatter_rows(x: Tensor, perm: Optional[Tensor]) -> Tensor:
    """Undo the compaction along axis 1 of ``x [Q, K, ...]``."""
    if perm is None:
        return x
    idx = perm.reshape(perm.shape + (1,) * (x.dim() - 2)).expand_as(x)
    return torch.empty_like(x).scatter_(1, idx, x)


def _num(value, name: str) -> float:
    return check_real(value, name)


# ---------------------------------------------------------------------------------------------
# The registered op: one entry for the three per-question computations
# ---------------------------------------------------------------------------------------------

def _alloc(W: Tensor, op: int, vectors: bool, per_sample: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    Q, K = W.shape[:2]
    nan = dict(fill_value=float("nan"), dtype=W.dtype, device=W.device)
    def out(*shape, used=True):  # unused outputs are empty (and distinct: outputs may not alias)
        return torch.full(shape if used else (0,), **nan)

    if op == OP_EIG:
        return out(Q, K), out(Q, K, K, used=vectors), out(0)
    if op == OP_LAPLACIAN:
        return out(Q), out(Q, used=vectors), out(Q, K, used=vectors and per_sample)
    return out(Q), out(0), out(0)


def _graph_spectra(W: Tensor, counts: Tensor, op: int, vectors: bool, threshold: float, t: float,
                   C: Optional[Tensor] = None, per_sample: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """The registered op's implementation (``torch.ops.flashuq.graph_spectra``)."""
    out = _alloc(W, op, vectors, per_sample)
    if W.shape[0] == 0:
        return out
    o1 = out[1] if vectors else None
    o2 = out[2] if vectors and op == OP_LAPLACIAN and per_sample else None
    if W.device.type == "cpu":
        _ext._C.graph(op, W, counts, threshold, t, out[0], o1, o2, torch.get_num_threads(), C=C)
    else:
        if _ext._cuda is None:
            raise RuntimeError("flashuq was built without CUDA (no nvcc at install time): "
                               "move the matrices to the CPU")
        with device_guard(W):
            _ext._cuda.graph(op, W, counts, threshold, t, out[0], o1, o2,
                             torch.cuda.current_stream(W.device).cuda_stream, C=C)
    return out


_graph_op = torch.library.custom_op("flashuq::graph_spectra", mutates_args=())(_graph_spectra)


@_graph_op.register_fake
def _(W, counts, op, vectors, threshold, t, C=None, per_sample=True):
    return _alloc(W, op, vectors, per_sample)


def _run(W: Tensor, mask, op: int, vectors: bool, threshold: float = 0.0, t: float = 0.0, C=None,
         per_sample: bool = True):
    W, counts, perm, C = _compact(W, mask, C)
    # a CPU call that nothing observes runs the implementation without the op's dispatch
    fn = _graph_spectra if plain_cpu_call(W) and (C is None or plain_cpu_call(C)) else _graph_op
    return (*fn(W, counts, op, vectors, threshold, t, C, per_sample), perm)


# ---------------------------------------------------------------------------------------------
# Public ops
# ---------------------------------------------------------------------------------------------

class SymEig(NamedTuple):
    """What :func:`sym_eig` returns (the field names of ``torch.linalg.eigh``'s result)."""

    eigenvalues: Tensor               #: ``[Q, K]`` ascending; NaN after question q's ``n_q`` values
    eigenvectors: Optional[Tensor]    #: ``[Q, K, K]`` eigenvector j in column j, or None


def sym_eig(A, *, sample_mask=None, eigenvectors: bool = False) -> SymEig:
    """Eigenvalues (ascending) and optionally eigenvectors of many small symmetric matrices.

    ``A [Q, K, K]`` floating (fp16/bf16 computed as fp32; fp64 results for fp64 input), symmetrised
    as ``(A + Aᵀ)/2``. With ``sample_mask [Q, K]`` question q uses the ``n_q x n_q`` submatrix of its
    valid rows and columns.

    Returns :class:`SymEig` ``(eigenvalues [Q, K], eigenvectors [Q, K, K] or None)``, a NamedTuple
    like ``torch.linalg.eigh``'s that unpacks as ``values, vectors``: question q's ``n_q`` eigenvalues
    ascending in ``values[q, :n_q]`` (NaN after), eigenvector j in column j of ``vectors[q]``
    (rows follow the original sample order; masked rows and padded columns are NaN). A matrix
    with a non-finite entry gives NaN. Like ``torch.linalg.eigh``, computed in fp64 on the CPU
    (OpenMP over questions) and on CUDA (one block per question, K <= 64). Not differentiable.
    """
    A = _check_matrix(A, "A")
    mask = _check_mask(sample_mask, A)
    values, vectors, _, perm = _run(A, mask, OP_EIG, bool(eigenvectors))
    if not eigenvectors:
        return SymEig(values, None)
    return SymEig(values, _scatter_rows(vectors, perm))


def laplacian_spectrum(W, *, sample_mask=None, threshold: float = 0.9,
                       eccentricity: bool = True, per_sample: bool = True) -> LaplacianSpectrum:
    """EigV and Eccentricity from the normalised graph Laplacian of similarity matrices W.

    With ``W ← (W + Wᵀ)/2``, degrees ``D = diag(Σ_j W_ij)`` and ``L = I - D^-1/2 W D^-1/2``
    (LM-Polygraph ``eig_val_laplacian.py`` and ``eccentricity.py``; Lin, Trivedi, Sun, "Generating
    with Confidence", arXiv 2305.19187)::

        eigv         = Σ_k max(0, 1 - λ_k(L))
        eccentricity = ‖ U - 1 ūᵀ ‖_F,  U = the eigenvectors with λ < threshold as columns,
                                         ū = their means over the responses
        per-sample   = ‖ row i of (U - 1 ūᵀ) ‖

    Policy for degenerate graphs: a question whose degrees are not all positive (a response
    with zero total similarity, where LM-Polygraph's ``inv(sqrt(D))`` fails) gives NaN, as does
    one with a non-finite entry or no valid sample. ``eccentricity=False`` skips the eigenvectors
    (eigenvalues only, about twice as fast). ``per_sample=False`` leaves ``eccentricity_per_sample``
    None and skips mapping the eigenvectors back to the responses (Eccentricity itself needs only
    their means: docs/numerics.md#small-eigenproblems), about 8% of the time.
    """
    W = _check_matrix(W, "W")
    mask = _check_mask(sample_mask, W)
    threshold = _num(threshold, "threshold")
    eccentricity, per_sample = check_bool(eccentricity, "eccentricity"), check_bool(per_sample, "per_sample")
    eigv, ecc, per, perm = _run(W, mask, OP_LAPLACIAN, eccentricity, threshold=threshold, per_sample=per_sample)
    if not eccentricity:
        return LaplacianSpectrum(eigv, None, None)
    return LaplacianSpectrum(eigv, ecc, _scatter_rows(per, perm) if per_sample else None)


def heat_kernel_entropy(W, *, t: float = 0.3, sample_mask=None) -> Tensor:
    """Von Neumann entropy of the normalised heat kernel of the graph W (natural log, unscaled).

    ``L = diag(Σ_j W_ij) - W`` (W symmetrised), ``Kh = expm(-t L)``, ``K̃ = Kh_ij / ((√Kh_ii + 1e-12)
    (√Kh_jj + 1e-12)) / n`` and ``VNE = -Σ λ ln λ`` over K̃'s eigenvalues with ``|λ| > 1e-8``
    (Nikitin et al., "Kernel Language Entropy", arXiv 2405.20003; LM-Polygraph
    ``kernel_language_entropy.py``). ``expm`` comes from the eigen-decomposition of L, which is
    exact for a symmetric L; on the CPU's SIMD lanes (3..64 samples) from scaling and squaring a
    degree-14 Taylor polynomial of the shifted L instead (docs/numerics.md#small-eigenproblems),
    the same to rounding. Returns ``[Q]`` (NaN for an empty question).
    """
    W = _check_matrix(W, "W")
    mask = _check_mask(sample_mask, W)
    t = _num(t, "t")
    return _run(W, mask, OP_HEAT, False, t=t)[0]


def nli_heat_kernel_entropy(E: Tensor, C: Tensor, *, t: float, sample_mask: Optional[Tensor] = None) -> Tensor:
    """:func:`heat_kernel_entropy` of Kernel Language Entropy's graph, built inside the kernel from the
    entailment and contradiction probabilities ``E, C [Q, K, K]`` (same dtype and shape, checked by the
    caller, :func:`flashuq.methods.kernel_language_entropy`)::

        W = Es + 0.5·(2 - Es - Cs),  Es = E + Eᵀ,  Cs = C + Cᵀ

    in the inputs' precision and order of operations, so the result is bitwise that of building W in
    torch and calling :func:`heat_kernel_entropy`, without the three ``[Q, K, K]`` temporaries.
    """
    E, C = _check_matrix(E, "entail"), _check_matrix(C, "contra")
    mask = _check_mask(sample_mask, E)
    return _run(E, mask, OP_NLI_HEAT, False, t=_num(t, "t"), C=C)[0]


__all__ = ["LaplacianSpectrum", "heat_kernel_entropy", "laplacian_spectrum", "sym_eig"]
