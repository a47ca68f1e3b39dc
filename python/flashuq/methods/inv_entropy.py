"""Inv-Entropy and its family (Song, Ji, Shi, Lai, Al Kontar; NeurIPS 2025, arXiv 2506.09684;
docs/methods.md#inv-entropy).

Inputs are similarity matrices of ``N`` perturbed inputs (the question and its paraphrases) and of the
answers to them, one answer per input: ``sx [Q, N, N]`` and ``sy [Q, N, N]``, non-negative. Each is
turned into a row-stochastic random walk, ``Px = sx / rowsum(sx)`` and ``Py = sy / rowsum(sy)``. With
``π = 1/N``::

    pY = (π·Py)ᵀ                      P(Y = y_j): uniform start, one step on the output chain
    A  = Py·Px                        A[i, j] = P(X = x_j | Y = y_i)
    pX = (π·Py·Py·Px)ᵀ                variant="reference" (the repository applies Py twice)
       = (π·Py·Px)ᵀ                   variant="paper"
    Bm = A ∘ pY / pXᵀ                 Bm[i, j] = P(Y = y_i | X = x_j) by Bayes
    d  = diag(A)                      d_i = Σ_k Py[i, k]·Px[k, i]; A itself is never formed
    Inv-Entropy = -Σ_i d_i ln d_i     natural log; an unnormalised entropy over the diagonal only

Inv-Entropy and NI-Entropy (``-Σ_i b_i ln b_i`` with ``b = diag(Bm)``) are **uncertainties**: higher
means less trustworthy. Inv-Entropy does not depend on ``pX``, so ``variant`` changes only NI-Entropy,
P(y_i|x_i) and the WD measure (and the default number of bootstrap draws). The WD and max-P measures
have no documented orientation and are exposed only through :func:`inv_entropy_measures`
(docs/methods.md#orientation).

**Bootstrap** (the repository's procedure): every input is answered ``r`` times and the full output
matrix ``sy [Q, N·r, N·r]`` holds the answers in blocks of ``r`` rows per input (rows ``i·r .. i·r+r-1``
answer input ``i``). A draw ``keep[q, s] [N]`` picks one answer per input
(``i·r <= keep[q, s, i] < i·r + r``); the draw's output matrix is ``sy[q][keep][:, keep]`` and the
result is the mean over the ``S`` draws. ``keep [Q, S, N]`` is given, or drawn with ``generator``:
``S`` distinct tuples per question, uniformly (the repository redraws a tuple until it is new).

Numerics: computed in the inputs' float dtype (fp64 stays fp64; fp32, fp16 and bf16 give fp32);
``0·ln 0 = 0`` (``xlogy``; the repository gives NaN there); a zero row sum in a draw gives NaN for that
question; NaN inputs give NaN for their question only.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._checks import check_int
from .. import _ext
from ..ops._common import acc_dtype, as_tensor, is_tracing, values_readable

#: default number of bootstrap draws per variant: the repository's 20 and the paper's S = 30
#: (the authors' ``inventropy`` package uses 10)
DEFAULT_NUM_BOOTSTRAP = {"reference": 20, "paper": 30}
#: the seed of the generator used when ``generator`` is None (never the global RNG)
DEFAULT_SEED = 0
_VARIANTS = ("reference", "paper")


class InvEntropyMeasures(NamedTuple):
    """Per-question measures ``[Q]`` (``p_x``, ``p_y``: ``[Q, N]``); with a bootstrap, each field is the
    mean over the draws."""

    inv_entropy: Tensor     #: -Σ_i d_i ln d_i, d_i = P(x_i | y_i) (repository ``pseduo_entropy_x_y_I``)
    ni_entropy: Tensor      #: -Σ_i b_i ln b_i, b_i = P(y_i | x_i) (``pseduo_entropy_y_x_I``; depends on the variant)
    wd_px_py: Tensor        #: scipy ``wasserstein_distance(pX, pY)``, values as samples (``WD_px_py_I``)
    max_py: Tensor          #: max_j P(Y = y_j), what the repository's ``max_y_I`` computes
    max_py_given_x: Tensor  #: max_i P(y_i | x_i), the paper's MAX-py-x (depends on the variant)
    p_x: Tensor             #: the marginal P(X = x_i) [Q, N] (depends on the variant)
    p_y: Tensor             #: the marginal P(Y = y_i) [Q, N]


# ---------------------------------------------------------------------------------------------------
# validation helpers


def _check_variant(variant) -> str:
    if not isinstance(variant, str) or variant not in _VARIANTS:
        raise ValueError(f"variant must be 'reference' or 'paper', got {variant!r}")
    return variant


def _compute_dtype(*dtypes) -> torch.dtype:
    dt = dtypes[0]
    for d in dtypes[1:]:
        dt = torch.promote_types(dt, d)
    return acc_dtype(dt)


def _negative_error(name: str) -> ValueError:
    return ValueError(f"{name} must be non-negative (similarities are |cos|, (1+cos)/2 or probabilities); "
                      "got a negative entry")


def _check_sign(x: Tensor, name: str) -> None:
    if x.numel() and values_readable(x) and bool(x.amin() < 0):  # one reduction, no [Q, M, M] temporary
        raise _negative_error(name)


def _similarity(x, name: str, check_sign: bool = True) -> Tensor:
    """A float [Q, M, M] similarity batch; non-negative (checked here, or by the C++ kernel, which
    counts the negative entries it reads, when ``check_sign`` is False)."""
    x = as_tensor(x, name)
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor (float64, float32, float16 or bfloat16), got {x.dtype}")
    if x.dim() != 3 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must be a batch of square matrices [Q, N, N], got shape {tuple(x.shape)}")
    if x.shape[-1] < 2:
        raise ValueError(f"{name}: Inv-Entropy needs N >= 2 inputs, got N = {x.shape[-1]}")
    if check_sign:
        _check_sign(x, name)
    return x


def _check_count(value, name: str) -> int:
    return check_int(value, name, 1)


def _check_keep(keep, Q: int, N: int, r: int, device) -> Tensor:
    keep = as_tensor(keep, "keep")
    if keep.dtype.is_floating_point or keep.dtype.is_complex or keep.dtype == torch.bool:
        raise TypeError(f"keep must be an integer tensor, got {keep.dtype}")
    if keep.dim() != 3 or keep.shape[0] != Q or keep.shape[2] != N or keep.shape[1] < 1:
        raise ValueError(f"keep must be [Q={Q}, S>=1, N={N}], got shape {tuple(keep.shape)}")
    keep = keep.to(device=device, dtype=torch.int64)
    if keep.numel() and values_readable(keep):
        lo = torch.arange(N, device=device) * r
        if bool(((keep < lo) | (keep >= lo + r)).any()):
            raise ValueError(f"keep[q, s, i] must lie in block i of the outputs, [i·r, i·r + r) with r = {r}")
    return keep


# ---------------------------------------------------------------------------------------------------
# bootstrap draws


def _draw_keep(Q: int, N: int, r: int, S: int, generator: torch.Generator) -> Tensor:
    """``S`` distinct tuples ``[Q, S, N]`` per question, uniformly among the ordered tuples of distinct
    draws (the distribution of the repository's redraw-until-new loop), on ``generator.device``."""
    K = r ** N  # Python int: exact however large
    if K < S:
        raise ValueError(f"num_bootstrap: only r**N = {r}**{N} = {K} distinct draws exist, asked for {S}")
    dev = generator.device
    base = torch.arange(N, device=dev) * r
    if K <= 2 * S:
        # a uniform S-prefix of a random permutation of the K tuple codes, decoded in base r
        codes = torch.rand(Q, K, generator=generator, device=dev).argsort(dim=-1)[:, :S]
        powers = r ** torch.arange(N - 1, -1, -1, device=dev, dtype=torch.int64)
        digits = (codes[..., None] // powers) % r
        return base + digits
    # K > 2·S: redraw the repeats until all are new (a redraw collides with probability < S/K < 1/2)
    digits = torch.randint(0, r, (Q, S, N), generator=generator, device=dev)
    while True:
        dup = _repeats(digits)
        n = int(dup.sum())
        if n == 0:
            return base + digits
        digits[dup] = torch.randint(0, r, (n, N), generator=generator, device=dev)


def _repeats(t: Tensor) -> Tensor:
    """``[Q, S]`` True where tuple ``t[q, s]`` equals an earlier tuple ``t[q, s' < s]`` (lexicographic
    sort, stable so that the first occurrence comes first)."""
    Q, S, N = t.shape
    order = torch.arange(S, device=t.device).expand(Q, S)
    for i in range(N - 1, -1, -1):  # LSD radix: stable sorts by the last digit first
        key = torch.gather(t[..., i], 1, order)
        order = torch.gather(order, 1, torch.sort(key, dim=1, stable=True).indices)
    st = torch.gather(t, 1, order[..., None].expand(Q, S, N))
    same = torch.zeros(Q, S, dtype=torch.bool, device=t.device)
    same[:, 1:] = (st[:, 1:] == st[:, :-1]).all(-1)
    dup = torch.zeros_like(same)
    dup.scatter_(1, order, same)
    return dup


# ---------------------------------------------------------------------------------------------------
# the computation


def _gather(m: Tensor, keep: Tensor) -> Tensor:
    """``m [Q, M, M]``, ``keep [Q, S, N]`` -> ``m[q][keep[q, s]][:, keep[q, s]]`` as ``[Q, S, N, N]``."""
    q = torch.arange(m.shape[0], device=m.device)[:, None, None, None]
    return m[q, keep[..., :, None], keep[..., None, :]]


def _measures(sx: Tensor, sy: Tensor, variant: str) -> InvEntropyMeasures:
    """All measures for matching batches ``sx, sy [..., N, N]`` (any leading shape)."""
    rx = sx.sum(-1, keepdim=True)
    ry = sy.sum(-1, keepdim=True)
    bad = (rx == 0).any(-2).squeeze(-1) | (ry == 0).any(-2).squeeze(-1)  # [...]
    px = sx / torch.where(rx == 0, 1.0, rx)
    py = sy / torch.where(ry == 0, 1.0, ry)
    p_y = py.mean(-2)                                    # π·Py
    d = (py * px.transpose(-1, -2)).sum(-1)              # diag(Py·Px)
    w = (p_y.unsqueeze(-2) @ py).squeeze(-2) if variant == "reference" else p_y
    p_x = (w.unsqueeze(-2) @ px).squeeze(-2)             # π·Py·Py·Px or π·Py·Px
    num = d * p_y
    b = torch.where(num == 0, torch.zeros_like(num), num / p_x)  # diag(Bm); P(y_i|x_i) = 0 where the joint is 0
    inv = -torch.special.xlogy(d, d).sum(-1)
    ni = -torch.special.xlogy(b, b).sum(-1)
    wd = (torch.sort(p_x, dim=-1).values - torch.sort(p_y, dim=-1).values).abs().mean(-1)
    out = (inv, ni, wd, p_y.max(-1).values, b.max(-1).values, p_x, p_y)
    nan = torch.tensor(float("nan"), dtype=inv.dtype, device=inv.device)
    return InvEntropyMeasures(*(torch.where(bad if f.dim() == bad.dim() else bad[..., None], nan, f) for f in out))


def _prepare(sx, sy, keep, variant, replicates, num_bootstrap, generator):
    """Validate and return ``(sx, sy, keep, N)``: ``keep`` is None for a single draw (``sx, sy [Q, N, N]``),
    else the checked ``[Q, S, N]`` draws (drawn here when not given)."""
    variant = _check_variant(variant)
    sx = as_tensor(sx, "sx")
    on_cpu = sx.device.type == "cpu"  # the C++ kernel checks the signs of what it reads (_compute)
    sx = _similarity(sx, "sx", check_sign=not on_cpu)
    sy = _similarity(sy, "sy", check_sign=not on_cpu)
    if sx.device != sy.device:
        raise ValueError(f"sx and sy must be on the same device, got {sx.device} and {sy.device}")
    if sx.shape[0] != sy.shape[0]:
        raise ValueError(f"sx and sy must have the same number of questions Q, got {sx.shape[0]} and {sy.shape[0]}")
    dt = _compute_dtype(sx.dtype, sy.dtype)
    sx, sy = sx.to(dt), sy.to(dt)
    Q, M = sy.shape[0], sy.shape[-1]
    if replicates is not None:
        replicates = _check_count(replicates, "replicates")
    if num_bootstrap is not None:
        num_bootstrap = _check_count(num_bootstrap, "num_bootstrap")
        if keep is not None:
            raise ValueError("num_bootstrap: give either keep (precomputed draws) or num_bootstrap, not both")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")

    # the number of inputs N and of replicates r
    if keep is not None:
        keep_t = as_tensor(keep, "keep")
        if keep_t.dim() != 3:
            raise ValueError(f"keep must be [Q, S, N], got shape {tuple(keep_t.shape)}")
        N = keep_t.shape[-1]
    elif sx.shape[-1] != M:
        N = sx.shape[-1]
    elif replicates is not None:
        if M % replicates:
            raise ValueError(f"replicates: sy's size {M} is not a multiple of replicates = {replicates}")
        N = M // replicates
    else:
        N = M
    if N < 2 or M % N:
        raise ValueError(f"sy: its size {M} must be N·r for the N = {N} inputs (N >= 2)")
    r = M // N
    if replicates is not None and replicates != r:
        raise ValueError(f"replicates = {replicates} does not match sy's size {M} for N = {N} inputs")
    if sx.shape[-1] not in (N, M):
        raise ValueError(f"sx must be [Q, N, N] or [Q, N·r, N·r] = [Q, {M}, {M}], got shape {tuple(sx.shape)}")

    if keep is None and num_bootstrap is None and r == 1:
        return sx, sy, None, N  # a single draw
    if keep is None:
        S = DEFAULT_NUM_BOOTSTRAP[variant] if num_bootstrap is None else num_bootstrap
        if generator is None:
            generator = torch.Generator().manual_seed(DEFAULT_SEED)
        keep = _draw_keep(Q, N, r, S, generator)
    return sx, sy, _check_keep(keep, Q, N, r, sy.device), N


def _compute(sx: Tensor, sy: Tensor, keep: Optional[Tensor], N: int, variant: str, *,
             backend: Optional[str] = None, only_inv: bool = False) -> InvEntropyMeasures:
    """The measures averaged over the draws. ``backend``: "cpu" (the C++ kernel of ``flashuq._C``,
    one question per OpenMP iteration, draws read in place) or "torch" (batched tensor ops over the
    gathered ``[Q, S, N, N]`` draws; CUDA tensors, and N > 64); None picks by device. With
    ``only_inv`` the C++ kernel computes Inv-Entropy alone (the other fields are then undefined)."""
    if backend is None:
        backend = "cpu" if sy.device.type == "cpu" and N <= 64 and not is_tracing() else "torch"
    if backend == "cpu":
        Q = sy.shape[0]
        out = torch.empty(5, Q, dtype=sy.dtype)
        p_x, p_y = torch.empty(Q, N, dtype=sy.dtype), torch.empty(Q, N, dtype=sy.dtype)
        if Q:
            negative = _ext._C.inv_entropy(sx.detach().contiguous(), sy.detach().contiguous(),
                                           None if keep is None else keep.contiguous(), N, variant == "paper",
                                           not only_inv, out, p_x, p_y, torch.get_num_threads())
            if negative:
                _check_sign(sx, "sx")
                raise _negative_error("sy")
        return InvEntropyMeasures(*out.unbind(0), p_x, p_y)
    if sy.device.type == "cpu":  # _prepare left the sign checks to the C++ kernel
        _check_sign(sx, "sx")
        _check_sign(sy, "sy")
    if keep is None:
        return _measures(sx, sy, variant)
    M = sy.shape[-1]
    sx_d = _gather(sx, keep) if sx.shape[-1] == M and M != N else sx[:, None]
    return InvEntropyMeasures(*(f.mean(1) for f in _measures(sx_d, _gather(sy, keep), variant)))


def inv_entropy(sx, sy, *, keep=None, variant: str = "reference", replicates: Optional[int] = None,
                num_bootstrap: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """Inv-Entropy ``-Σ_i d_i ln d_i`` with ``d_i = P(x_i | y_i) = Σ_k Py[i, k]·Px[k, i]`` -> ``[Q]``,
    an **uncertainty** (Song, Ji, Shi, Lai, Al Kontar; NeurIPS 2025, arXiv 2506.09684; docs/methods.md#inv-entropy).

    ``Px``, ``Py`` are the row-normalised input and output similarity matrices (see the module
    docstring); natural log; an unnormalised entropy over the diagonal of ``A = Py·Px``.

    - **Single draw:** ``sx, sy [Q, N, N]`` (one answer per input; NR-Inv-Entropy is this with r = 1).
    - **Bootstrap:** ``sy [Q, N·r, N·r]``, the full output matrix in blocks of ``r`` replicate answers per
      input; ``sx`` is ``[Q, N, N]`` or ``[Q, N·r, N·r]``. The draws are ``keep [Q, S, N]``
      (``i·r <= keep[q, s, i] < i·r + r``; used as given, repeats included), or, when ``keep`` is None,
      ``num_bootstrap`` distinct tuples per question drawn with ``generator`` (a ``torch.Generator``;
      None: a fresh one seeded with ``DEFAULT_SEED``, so results are reproducible and the global RNG is
      never touched). ``num_bootstrap`` defaults to 20 (the repository) with ``variant="reference"`` and
      30 (the paper's S) with ``variant="paper"``; the authors' package uses 10. Fewer than
      ``num_bootstrap`` possible tuples (``r**N``) raise ValueError. The result is the mean over draws.
      A full ``sx`` is sliced like the outputs, ``sx[keep][:, keep]`` (the repository's own slicing);
      in the repository's layout, where the ``r`` rows of a block repeat the same input, that is the
      ``[N, N]`` matrix of the block representatives for every draw. ``r`` is inferred from the shapes
      (``sx [Q, N, N]`` or ``keep``); with a full ``sx`` and no ``keep``, pass ``replicates=r``.

    ``variant`` ("reference" | "paper") does not change Inv-Entropy itself, only the default draw count.
    Similarities must be non-negative (ValueError otherwise); a zero row sum gives NaN for that
    question; ``0·ln 0 = 0``. N >= 2. Computed in fp64 for fp64 inputs, else fp32.
    """
    sx, sy, keep, N = _prepare(sx, sy, keep, variant, replicates, num_bootstrap, generator)
    return _compute(sx, sy, keep, N, variant, only_inv=True).inv_entropy


def inv_entropy_measures(sx, sy, *, variant: str = "reference", keep=None, replicates: Optional[int] = None,
                         num_bootstrap: Optional[int] = None,
                         generator: Optional[torch.Generator] = None) -> InvEntropyMeasures:
    """Every measure of the Inv-Entropy framework (docs/methods.md#inv-entropy) -> :class:`InvEntropyMeasures`.

    Inputs, draws and defaults as :func:`inv_entropy`; with a bootstrap every field is the mean over the
    draws. Fields (repository column -> paper name):

    - ``inv_entropy``: ``-Σ d_i ln d_i`` (``pseduo_entropy_x_y_I``; Inv-Entropy), an uncertainty.
    - ``ni_entropy``: ``-Σ b_i ln b_i`` with ``b_i = P(y_i | x_i) = d_i·pY_i / pX_i``, the diagonal of
      ``Bm`` (``pseduo_entropy_y_x_I``; NI-Entropy), an uncertainty. Depends on ``pX``, hence on ``variant``:
      ``pX = π·Py·Py·Px`` ("reference", the repository) or ``π·Py·Px`` ("paper").
    - ``wd_px_py``: ``scipy.stats.wasserstein_distance(pX, pY)`` with the probabilities passed as 1-D
      *samples* (the repository's quirk): ``mean_i |sort(pX)_i - sort(pY)_i|`` (``WD_px_py_I``).
    - ``max_py``: ``max_j P(Y = y_j)``, what the repository's ``max_y_I`` computes.
    - ``max_py_given_x``: ``max_i P(y_i | x_i) = max_i b_i``, the paper's MAX-py-x (depends on ``variant``).
    - ``p_x``, ``p_y``: the marginals ``[Q, N]``.

    The WD and max-P measures have no documented orientation (docs/methods.md#orientation); they are reported in
    their natural orientation, as computed.
    """
    sx, sy, keep, N = _prepare(sx, sy, keep, variant, replicates, num_bootstrap, generator)
    return _compute(sx, sy, keep, N, variant)


# ---------------------------------------------------------------------------------------------------
# similarity matrices


def inv_entropy_similarity(emb, *, variant: str = "reference") -> Tensor:
    """Cosine-based similarity ``[Q, N, N]`` of sentence embeddings ``emb [Q, N, D]`` (SBERT).

    ``variant="reference"``: ``|cos(e_i, e_j)|`` (the repository); ``"paper"``: ``(1 + cos)/2``.
    Embeddings are L2-normalised with ``eps = 1e-12`` (sentence-transformers' ``cos_sim``; a zero
    embedding has cosine 0 with everything), and the matrix is exactly symmetric (upper triangle
    mirrored, as the repository fills it). The diagonal is the computed ``cos(e_i, e_i)``, not forced
    to 1. fp64 in, fp64 out; otherwise fp32.
    """
    variant = _check_variant(variant)
    emb = as_tensor(emb, "emb")
    if not emb.dtype.is_floating_point:
        raise TypeError(f"emb must be a floating tensor, got {emb.dtype}")
    if emb.dim() != 3:
        raise ValueError(f"emb must be [Q, N, D], got shape {tuple(emb.shape)}")
    emb = emb.to(_compute_dtype(emb.dtype))
    e = torch.nn.functional.normalize(emb, p=2.0, dim=-1, eps=1e-12)
    c = e @ e.transpose(-1, -2)
    c = torch.triu(c) + torch.triu(c, diagonal=1).transpose(-1, -2)
    return c.abs() if variant == "reference" else (1.0 + c) / 2.0


def nli_similarity(p_entail) -> Tensor:
    """NLI similarity ``S[i, j] = (P(i ⇒ j) + P(j ⇒ i))/2`` with ``S[i, i] = 1`` -> ``[Q, N, N]``.

    ``p_entail [Q, N, N]``: ``p_entail[q, i, j]`` is the entailment probability with ``i`` as premise and
    ``j`` as hypothesis (for DeBERTa-v2-xlarge-MNLI, the softmax at label index 2), in [0, 1]
    (ValueError otherwise). The diagonal of ``p_entail`` is ignored. fp64 in, fp64 out; otherwise fp32.
    """
    p = as_tensor(p_entail, "p_entail")
    if not p.dtype.is_floating_point:
        raise TypeError(f"p_entail must be a floating tensor, got {p.dtype}")
    if p.dim() != 3 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"p_entail must be a batch of square matrices [Q, N, N], got shape {tuple(p.shape)}")
    if p.numel() and values_readable(p) and bool(((p < 0) | (p > 1)).any()):
        raise ValueError("p_entail must hold probabilities in [0, 1]")
    p = p.to(_compute_dtype(p.dtype))
    s = (p + p.transpose(-1, -2)) / 2.0
    eye = torch.eye(p.shape[-1], dtype=torch.bool, device=p.device)
    return torch.where(eye, torch.ones((), dtype=s.dtype, device=s.device), s)


__all__ = ["DEFAULT_NUM_BOOTSTRAP", "DEFAULT_SEED", "InvEntropyMeasures", "inv_entropy", "inv_entropy_measures",
           "inv_entropy_similarity", "nli_similarity"]
