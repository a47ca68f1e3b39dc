"""``flashuq.ensemble_stats``: the total / aleatoric / epistemic decomposition of an ensemble.

docs/methods.md#ensemble (Malinin & Gales 2021, "Uncertainty estimation in autoregressive structured
prediction"; LM-Polygraph ``utils/ensemble_utils``; ValUES ``calculate_uncertainty``). CPU
tensors run the C++ kernel of ``flashuq._C`` (OpenMP, fp64 arithmetic); CUDA tensors run the
Triton kernel of ``flashuq.kernels.ensemble_stats`` (fp32 accumulation, fp64 for fp64 input).
Both read each member's logits twice (pass 1: the shifted online accumulator gives each
member's log-normaliser and entropy; pass 2: the members' log-probabilities column by column)
and are deterministic: a position is summed by one worker in a fixed order.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import _ext
from ._common import (FLOAT_DTYPES, acc_dtype, as_tensor, check_logits, check_positive_float, device_guard,
                      row_layout)

MIN_TEMPERATURE = 1e-30
MODES = ("pe", "ep")


class EnsembleStats(NamedTuple):
    """Ensemble uncertainties per position, each of shape ``logits.shape`` without the member and
    vocabulary axes. All are uncertainties (higher = less certain), in nats, all >= 0.

    ``total = aleatoric + epistemic`` and ``epkl = epistemic + rmi`` hold up to rounding.
    """

    total: Tensor      #: TU = H(p̄) = -Σ_v p̄_v log p̄_v, entropy of the ensemble's mean distribution
    aleatoric: Tensor  #: AU = E_m H(P_m), expected (mean) member entropy, "data uncertainty"
    epistemic: Tensor  #: MI = TU - AU = E_m KL(P_m ‖ p̄), mutual information, "knowledge uncertainty"
    epkl: Tensor       #: EPKL = -Σ_v p̄_v E_m log P_mv - AU, expected pairwise KL; +inf if a member gives 0
    rmi: Tensor        #: RMI = -Σ_v p̄_v E_m log P_mv - TU = E_m KL(p̄ ‖ P_m), reverse mutual information


def ensemble_stats(logits, *, dim: int = 0, mode: str = "pe", member_ll=None,
                   temperature: float = 1.0) -> EnsembleStats:
    """Decompose the uncertainty of an ensemble (members, MC-dropout passes, augmentations).

    With ``P_m = softmax(logits_m / temperature)`` the distribution of member ``m`` at a position
    and weights ``w_m`` (``1/M`` in mode ``"pe"``), per position, natural log::

        p̄          = Σ_m w_m P_m
        total      = H(p̄)                         = -Σ_v p̄_v log p̄_v        (0·log 0 = 0)
        aleatoric  = Σ_m w_m H(P_m)
        epistemic  = total - aleatoric           = Σ_m w_m KL(P_m ‖ p̄) >= 0
        EPKL_total = -Σ_v p̄_v Σ_m w_m log P_mv
        epkl       = EPKL_total - aleatoric      = Σ_m Σ_v w_m (P_mv - p̄_v)(log P_mv - log p̄_v)
        rmi        = EPKL_total - total          = Σ_m w_m KL(p̄ ‖ P_m)

    Modes (LM-Polygraph's ensembling):

    * ``"pe"`` (product of expectations, the default): ``w_m = 1/M``, the arithmetic mean.
    * ``"ep"`` (expectation of products): ``w_m = softmax_m(member_ll)``, each member weighted by
      the likelihood it gives the prefix, i.e. ``log p̄ = logsumexp_m(log P_m + ll_m) -
      logsumexp_m(ll_m)``. The *same* weights are used for every expectation over members (the
      aleatoric mean entropy and the mean log-probability in EPKL), so ``"ep"`` with equal
      ``member_ll`` is exactly ``"pe"``. A member with ``member_ll = -inf`` has no weight.

    Numerics: with ``r_mv = log P_mv - log p̄_v`` the kernels accumulate ``epistemic = Σ_v p̄_v
    Σ_m w_m φ(r_mv)`` and ``rmi = Σ_v p̄_v Σ_m w_m ψ(r_mv)`` with ``φ(r) = 1 + e^r (r - 1) >= 0``
    and ``ψ(r) = e^r - 1 - r >= 0`` (Taylor series near 0), then ``total = aleatoric +
    epistemic`` and ``epkl = epistemic + rmi``. Every term is non-negative, so nothing cancels:
    ``epistemic`` keeps its relative accuracy when the members nearly agree (where ``TU - AU``
    would be a difference of two nearly equal numbers) and is never negative. On the CPU, with
    fp32/bf16/fp16 logits, it does so down to about 1e-10 nats: below, the members' normalisers,
    summed in fp32, leave an absolute error of about 1e-14 (fp64 logits keep 1e-6 relative down
    to 1e-22 nats). The member
    entropies use the shifted accumulator of docs/numerics.md#accumulator (``log1p(R) - T/(1 + R)``).

    Special values: ``-inf`` logits are masked vocabulary. Where a member gives a token
    probability 0 (a ``-inf`` logit) that another member with weight gives probability > 0,
    ``log P_mv = -inf`` enters EPKL with weight ``p̄_v > 0``: ``epkl`` and ``rmi`` are ``+inf``
    by definition (ValUES and LM-Polygraph produce inf or NaN there), while ``total``,
    ``aleatoric`` and ``epistemic`` stay finite. A NaN or ``+inf`` logit in any member, a member
    whose logits are all ``-inf``, or a NaN in ``member_ll`` (or ``+inf``, or all ``-inf``) makes
    that position NaN in every field, and only that position.

    Args:
        logits: ``[..., M, ..., V]`` float32/float16/bfloat16 (fp32 results) or float64 (fp64
            results), the members stacked on ``dim``, the vocabulary last (stride 1). Any other
            strides. A numpy array is accepted (CPU).
        dim: the member axis, any axis but the last; negative counts from the end.
        mode: ``"pe"`` or ``"ep"``.
        member_ll: mode ``"ep"`` only: ``logits.shape[:-1]`` floating log-likelihoods of the
            prefix under each member, the members on the same ``dim``.
        temperature: scores ``softmax(logits / temperature)``; finite, at least 1e-30.

    Returns:
        :class:`EnsembleStats`; see ``flashuq.reference.ensemble_stats`` for the float64 definition.
        Not differentiable.
    """
    logits, member_ll, dim, temperature = _validate(logits, dim, mode, member_ll, temperature)
    return EnsembleStats(*torch.ops.flashuq.ensemble_stats(logits, member_ll, dim, temperature))


def _validate(logits, dim, mode, member_ll, temperature):
    logits = check_logits(logits)
    if logits.dim() < 2:
        raise ValueError(f"logits must have a member axis and a vocabulary axis [..., M, ..., V], "
                         f"got shape {tuple(logits.shape)}")
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    nd = logits.dim()
    if not -nd <= dim < nd:
        raise ValueError(f"dim must be in [{-nd}, {nd - 1}] for logits of {nd} dimensions, got {dim}")
    dim = int(dim) % nd
    if dim == nd - 1:
        raise ValueError("dim must not be the last (vocabulary) axis of logits")
    if logits.shape[dim] < 1:
        raise ValueError(f"logits must have at least one member along dim={dim}, got 0")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be 'pe' or 'ep', got {mode!r}")
    temperature = check_positive_float(temperature, "temperature")
    if temperature < MIN_TEMPERATURE:
        raise ValueError(f"temperature must be at least {MIN_TEMPERATURE:g}, got {temperature:g}")
    if mode == "pe":
        if member_ll is not None:
            raise ValueError("member_ll is only used with mode='ep'")
    else:
        if member_ll is None:
            raise ValueError("mode='ep' needs member_ll, the log-likelihood of the prefix under each member")
        member_ll = as_tensor(member_ll, "member_ll")
        if member_ll.dtype not in FLOAT_DTYPES:
            raise TypeError(f"member_ll must be a floating tensor, got {member_ll.dtype}")
        if member_ll.shape != logits.shape[:-1]:
            raise ValueError(f"member_ll must have the shape of logits without the vocabulary axis "
                             f"{tuple(logits.shape[:-1])}, got {tuple(member_ll.shape)}")
        if member_ll.device != logits.device:
            raise ValueError(f"member_ll is on {member_ll.device} but logits is on {logits.device}")
    return logits, member_ll, dim, temperature


# ---------------------------------------------------------------------------------------------
# The registered op
# ---------------------------------------------------------------------------------------------

_Out = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


def _alloc(logits: Tensor, dim: int) -> _Out:
    shape = [n for i, n in enumerate(logits.shape[:-1]) if i != dim]
    fdt = acc_dtype(logits.dtype)
    return tuple(torch.empty(shape, dtype=fdt, device=logits.device) for _ in range(5))


@torch.library.custom_op("flashuq::ensemble_stats", mutates_args=())
def _ensemble_stats_op(logits: Tensor, member_ll: Optional[Tensor], dim: int, temperature: float) -> _Out:
    backend = "cpu" if logits.device.type == "cpu" else "triton"
    return compute(logits, member_ll, dim, temperature, backend=backend)


@_ensemble_stats_op.register_fake
def _(logits, member_ll, dim, temperature):
    return _alloc(logits, dim)


def _positions(x: Tensor):
    """``x [..., M, V]`` -> (x, n1, s0, s1): positions addressed through at most two leading
    dimensions (``row_layout`` over the ``[M, V]`` blocks), copying once when they cannot be."""
    layout = row_layout(x, trailing=2)
    if layout is None:
        x = x.contiguous()
        layout = row_layout(x, trailing=2)
    return (x, *layout)


def compute(logits: Tensor, member_ll: Optional[Tensor], dim: int, temperature: float, *, backend: str,
            **launch) -> _Out:
    """Run one backend on validated inputs: ``"cpu"`` (C++) or ``"triton"``. ``launch`` passes
    tuning knobs to the Triton launcher (tests use them to force small blocks)."""
    out = _alloc(logits, dim)
    x = logits.detach().movedim(dim, -2)  # [..., M, V]
    M, V = x.shape[-2], x.shape[-1]
    P = out[0].numel()
    if P == 0:
        return out
    x, n1, s0, s1 = _positions(x)
    sm = x.stride(-2)
    if member_ll is None:  # "pe": one weight vector for every position (stride 0)
        lw_dtype = torch.float64 if backend == "cpu" or x.dtype == torch.float64 else torch.float32
        lw = torch.full((M,), -math.log(M), dtype=lw_dtype, device=x.device)
        lw_stride = 0
    else:
        lw = torch.log_softmax(member_ll.detach().movedim(dim, -1).to(torch.float64), dim=-1)
        if backend != "cpu" and x.dtype != torch.float64:
            lw = lw.to(torch.float32)
        lw = lw.reshape(-1).contiguous()
        lw_stride = M
    inv_temp = 1.0 / temperature
    if backend == "cpu":
        _ext._C.ensemble_stats(x, P, M, V, n1, s0, s1, sm, lw, lw_stride, inv_temp, *out,
                               torch.get_num_threads())
    elif backend == "triton":
        with device_guard(x):
            _launch_triton(x, P, M, V, n1, s0, s1, sm, lw, lw_stride, inv_temp, out, **launch)
    else:
        raise ValueError(f"backend must be 'cpu' or 'triton', got {backend!r}")
    return out


def _launch_triton(x, P, M, V, n1, s0, s1, sm, lw, lw_stride, inv_temp, out, *, block=None, num_warps=None):
    """One program per position. The block is fixed per (device type, member count), never per
    call, so a position's result does not depend on the batch it came in."""
    import triton
    import triton.language as tl

    k = _ext.kernels().ensemble_stats
    on_gpu = x.is_cuda
    mp = triton.next_power_of_2(M)
    # the [MP, BLOCK] tile: ~4096 elements on a GPU (registers), 65536 in the interpreter
    block = block or max(16, (4096 if on_gpu else 65536) // mp)
    num_warps = num_warps or (8 if on_gpu else 1)
    f64 = x.dtype == torch.float64
    inv_hi = float(np.float32(inv_temp))  # Triton passes Python floats as fp32: send 1/T as hi + lo
    inv_lo = inv_temp - inv_hi
    k.ensemble_stats_kernel[(P,)](
        x, n1, s0, s1, sm, M, V, lw, lw_stride, inv_hi, inv_lo, *out,
        BLOCK=block, MP=mp, NTERMS=14 if f64 else 7, ACC=tl.float64 if f64 else tl.float32, PRECISE=on_gpu,
        num_warps=num_warps)
