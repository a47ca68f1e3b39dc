"""``flashuq.token_stats``: every per-token statistic from one read of the logits.

CPU tensors run the C++ kernel of ``flashuq._C`` (OpenMP); CUDA tensors run the Triton kernels of
``flashuq.kernels.token_stats``. Both use the shifted one-pass accumulator of docs/numerics.md#accumulator, so
confident rows keep their digits (an entropy of 1e-20 keeps ~1e-7 relative error), and both are
deterministic: a row's result does not depend on the thread count, the batch it came in, or
whether its vocabulary was split across workers.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import _ext
from ._common import (acc_dtype, as_tensor, check_bool, check_int, check_logits, check_positive_float, device_guard,
                      plain_cpu_call, row_layout, values_readable)

MAX_TOPK = 64
MIN_TEMPERATURE = 1e-30


class TokenStats(NamedTuple):
    """Statistics of ``p = softmax(logits / temperature)``, each with the leading shape ``[...]``.

    All in nats, natural orientation (docs/methods.md#orientation). Rows with a NaN or +inf logit, or with
    only -inf logits, hold NaN in every float field and -1 in ``argmax``/``topk_ids``.
    """

    lse: Tensor             #: ``logsumexp(logits / T)``
    max_logprob: Tensor     #: ``log max_v p_v``
    argmax: Tensor          #: int64, first index of the maximum
    logprob: Tensor         #: ``log p[tokens]`` (``max_logprob`` when tokens is None)
    entropy: Tensor         #: ``-Σ p log p``
    margin: Tensor          #: ``p(1) - p(2)`` (0 on an exact tie; 1 when V = 1)
    collision: Tensor       #: ``Σ p²``; Rényi-2 entropy is ``-log collision``
    kurtosis: Tensor        #: excess (Fisher) kurtosis of the V probabilities, biased moments
    self_certainty: Tensor  #: ``-mean_v log p_v - log V_finite`` over finite entries, KL(U‖p)
    topk_logprobs: Tensor   #: ``[..., topk]`` largest log-probabilities, descending
    topk_ids: Tensor        #: ``[..., topk]`` their ids (ties: smaller id first)
    #: with ``renyi=True`` (else None), for ``q = softmax(logits / (2·temperature))`` against the
    #: uniform distribution over all V entries: LM-Polygraph's per-step RenyiNeg value
    #: ``D_½(q‖U) − 2·log V`` (α = ½, τ = 2; it rises with confidence) ...
    renyi_term: Optional[Tensor] = None
    #: ... and the Fisher–Rao distance ``(2/π)·arccos(Σ_v √(q_v/V))`` in [0, 1] (0 when uniform)
    fisher_rao: Optional[Tensor] = None


def token_stats(logits, tokens=None, *, temperature: float = 1.0, topk: int = 0, renyi: bool = False) -> TokenStats:
    """Per-token statistics of the next-token distributions in ``logits [..., V]``, in one pass.

    Args:
        logits: ``[..., V]`` float32/float16/bfloat16 (accumulated in fp32, returned in fp32) or
            float64 (computed and returned in fp64). Any leading shape and strides; the vocabulary
            axis must have stride 1. ``-inf`` entries are masked vocabulary. A numpy array is
            accepted (CPU) and the result comes back as torch tensors.
        tokens: optional ``[...]`` integer ids of the emitted tokens, for ``logprob``.
        temperature: scores ``softmax(logits / temperature)``; finite and at least 1e-30. Applied to
            differences from the row maximum, ``(z - max) / T``, so large logits keep their digits.
        topk: number of top log-probabilities and ids to return, 0..64 (and at most V).
        renyi: also accumulate ``Σ e^{d/2}`` and ``Σ e^{d/4}`` in the same pass and return
            ``renyi_term`` and ``fisher_rao``, the per-token terms of RenyiNeg and FisherRao (Darrin et
            al. 2022, RAINPROOF; docs/methods.md#renyi-neg). The one exponential per entry is then
            ``e^{d/4}``, squared for ``e^{d/2}`` and ``e^d`` (docs/numerics.md#accumulator), so the other fields can
            differ from ``renyi=False`` in the last few ulps (both are within the accuracy tested
            against ``flashuq.reference``).

    Returns:
        :class:`TokenStats`. See ``flashuq.reference.token_stats`` for the float64 definition of
        every field, and docs/methods.md#token-statistics for the formulas and the papers that use them.
        On a CPU call that autograd and torch.compile do not see, the float fields of shape
        ``[...]`` are rows of one buffer (one allocation per call): separate, non-overlapping
        tensors that share a storage.

    Differentiable (``register_autograd``) in ``lse``, ``max_logprob``, ``logprob`` and ``entropy``
    with respect to ``logits``; the other fields are marked non-differentiable.
    """
    logits, tokens, temperature, topk = _validate(logits, tokens, temperature, topk)
    renyi = check_bool(renyi, "renyi")
    if plain_cpu_call(logits):  # what the op would run, without torch.library's per-call dispatch
        out = compute(logits, tokens, temperature, topk, backend="cpu", renyi=renyi, pooled=True)
    else:
        out = torch.ops.flashuq.token_stats(logits, tokens, temperature, topk, renyi)
    return TokenStats(*out[:11], *(out[11:] if renyi else (None, None)))


def _validate(logits, tokens, temperature, topk):
    logits = check_logits(logits)
    V = logits.shape[-1]
    temperature = check_positive_float(temperature, "temperature")
    if temperature < MIN_TEMPERATURE:  # 1/T must be a finite fp32 number
        raise ValueError(f"temperature must be at least {MIN_TEMPERATURE:g}, got {temperature:g}")
    topk = check_int(topk, "topk", 0, MAX_TOPK)
    if topk > V:
        raise ValueError(f"topk must be at most the vocabulary size V={V}, got {topk}")
    if tokens is not None:
        tokens = as_tensor(tokens, "tokens")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor, got {tokens.dtype}")
        if tokens.shape != logits.shape[:-1]:
            raise ValueError(
                f"tokens must have the leading shape of logits {tuple(logits.shape[:-1])}, got {tuple(tokens.shape)}")
        if tokens.device != logits.device:
            raise ValueError(f"tokens is on {tokens.device} but logits is on {logits.device}")
        if tokens.dtype != torch.int64:
            tokens = tokens.to(torch.int64)
        if tokens.numel() and values_readable(tokens):
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= V:
                raise ValueError(f"tokens must be in [0, V={V}), got values in [{lo}, {hi}]")
    return logits, tokens, temperature, topk


# ---------------------------------------------------------------------------------------------
# The registered op
# ---------------------------------------------------------------------------------------------

class _Outputs(NamedTuple):
    """The op's 13 outputs, in this one order on every backend (the C++ binding's and the Triton
    launchers'): the 11 :class:`TokenStats` fields, then ``renyi_term`` and ``fisher_rao`` (shape
    ``[0]`` when not requested)."""

    lse: Tensor
    max_logprob: Tensor
    argmax: Tensor
    logprob: Tensor
    entropy: Tensor
    margin: Tensor
    collision: Tensor
    kurtosis: Tensor
    self_certainty: Tensor
    topk_logprobs: Tensor
    topk_ids: Tensor
    renyi_term: Tensor
    fisher_rao: Tensor


_Out = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _alloc(logits: Tensor, topk: int, renyi: bool, pooled: bool = False) -> _Outputs:
    lead = logits.shape[:-1]
    fdt = acc_dtype(logits.dtype)
    dev = logits.device
    if pooled:
        # The float fields of shape lead as rows of one buffer: one allocation instead of eight or
        # ten (each costs ~2 µs, a third of a [1, 128256] call's kernel time). Only for the plain
        # CPU call, whose outputs never pass through torch.library (where outputs must not alias).
        nf = 10 if renyi else 8
        rows = torch.empty((nf, *lead), dtype=fdt, device=dev).unbind(0)
        rest = (torch.empty((*lead, topk), dtype=fdt, device=dev), torch.empty((*lead, topk), dtype=torch.int64,
                                                                                device=dev))
        argmax = torch.empty(lead, dtype=torch.int64, device=dev)
        return _Outputs(rows[0], rows[1], argmax, *rows[2:8], *rest, *(rows[8:] if renyi else (None, None)))

    def f(shape=lead):
        return torch.empty(shape, dtype=fdt, device=dev)

    return _Outputs(f(), f(), torch.empty(lead, dtype=torch.int64, device=dev), f(), f(), f(), f(), f(), f(),
                    torch.empty((*lead, topk), dtype=fdt, device=dev),
                    torch.empty((*lead, topk), dtype=torch.int64, device=dev),
                    f(lead if renyi else (0,)), f(lead if renyi else (0,)))


@torch.library.custom_op("flashuq::token_stats", mutates_args=())
def _token_stats_op(logits: Tensor, tokens: Optional[Tensor], temperature: float, topk: int,
                    renyi: bool = False) -> _Out:
    backend = "cpu" if logits.device.type == "cpu" else "triton"
    return compute(logits, tokens, temperature, topk, backend=backend, renyi=renyi)


@_token_stats_op.register_fake
def _(logits, tokens, temperature, topk, renyi=False):
    return _alloc(logits, topk, renyi)


#: the kernels' dtype codes (csrc/include/flashuq/dtype.h, DType)
_DTYPE_CODE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def compute(logits: Tensor, tokens: Optional[Tensor], temperature: float, topk: int, *, backend: str,
            renyi: bool = False, pooled: bool = False, **launch) -> _Outputs:
    """Run one backend on validated inputs: ``"cpu"`` (C++) or ``"triton"``. ``launch`` passes
    tuning knobs to the Triton launcher (tests use them to force the split or the
    one-program-per-row path). ``pooled`` (CPU): the float fields share one buffer, and the Rényi
    fields are None unless ``renyi``."""
    if backend not in ("cpu", "triton"):
        raise ValueError(f"backend must be 'cpu' or 'triton', got {backend!r}")
    if pooled and backend != "cpu":
        raise ValueError("pooled outputs are for the CPU backend")
    out = _alloc(logits, topk, renyi, pooled)
    V = logits.shape[-1]
    rows = logits.numel() // V if V else 0
    if rows == 0:
        return out
    layout = row_layout(logits)
    if layout is None:  # leading dims that no two (size, stride) pairs describe: copy once
        logits = logits.contiguous()
        layout = row_layout(logits)
    n1, s0, s1 = layout
    tok = None if tokens is None else tokens.reshape(-1).to(torch.int64).contiguous()
    inv_temp = 1.0 / temperature
    if backend == "cpu":
        # data pointers, not tensors: the layout above and the outputs just allocated are what the
        # kernel reads and writes (the checked binding, _C.token_stats, costs ~2 us per tensor)
        if logits.stride(-1) != 1:
            logits = logits.contiguous()
            n1, s0, s1 = row_layout(logits)
        ptr = [t.data_ptr() if t is not None and t.numel() else 0 for t in out]
        _ext._C._token_stats_ptrs(_DTYPE_CODE[logits.dtype], logits.data_ptr(), rows, V, n1, s0, s1,
                                  0 if tok is None else tok.data_ptr(), inv_temp, topk, *ptr[:11],
                                  torch.get_num_threads(), *ptr[11:])
    else:
        with device_guard(logits):  # Triton launches on the current device
            _launch_triton(logits.detach(), rows, V, n1, s0, s1, tok, inv_temp, topk, out, **launch)
    return out


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _launch_triton(x, rows, V, n1, s0, s1, tok, inv_temp, topk, out, *, block=None, chunk=None, split=None,
                   num_warps=None):
    """Launch the Triton kernels. The chunk size is fixed per device type (not per call) so a row's
    result never depends on the batch it arrived in."""
    import triton
    import triton.language as tl

    k = _ext.kernels().token_stats

    on_gpu = x.is_cuda
    # GPU: 2048-column blocks over 8 warps give each thread 8 contiguous columns (one 16-byte bf16
    # load) at 110 registers without spills on sm_90 (ptxas), i.e. two programs per SM; 4096/8
    # needs 144 registers (one per SM). To be tuned on hardware. The interpreter wants huge blocks.
    block = block or (2048 if on_gpu else 65536)
    chunk = chunk or (8192 if on_gpu else 65536)
    if chunk % block:
        raise ValueError(f"chunk ({chunk}) must be a multiple of block ({block})")
    n_chunks = triton.cdiv(V, chunk)
    if split is None:
        sms = _sm_count(x.device.index if x.device.index is not None else torch.cuda.current_device()) if on_gpu else 4
        split = n_chunks > 1 and rows < 2 * sms
    num_warps = num_warps or (8 if on_gpu else 1)
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    kp = triton.next_power_of_2(max(topk, 1))
    has_tok = tok is not None
    # Triton passes Python floats as fp32: send 1/T as hi + lo so fp64 rows get it to ~1e-14
    inv_hi = float(np.float32(inv_temp))
    inv_lo = inv_temp - inv_hi
    tok_arg = tok if has_tok else out[2]
    lse, maxlp, argmax, lp, ent, margin, coll, kurt, sc, tkv, tki, rt, fr = out  # _Outputs' order
    frac = rt.numel() > 0
    rt_arg = rt if frac else lse
    fr_arg = fr if frac else lse
    tkv_arg = tkv if topk else lse
    tki_arg = tki if topk else argmax
    if not split:
        k.token_stats_rows_kernel[(rows,)](
            x, n1, s0, s1, V, tok_arg, inv_hi, inv_lo,
            lse, maxlp, lp, ent, margin, coll, kurt, sc, argmax, tkv_arg, tki_arg, rt_arg, fr_arg,
            chunk, BLOCK=block, K=topk, KP=kp, HAS_TOKENS=has_tok, ACC=acc, PRECISE=on_gpu, FRAC=frac,
            num_warps=num_warps)
        return
    fdt = acc_dtype(x.dtype)
    ws_f = torch.empty((rows, n_chunks, k.WS_FIELDS), dtype=fdt, device=x.device)
    ws_i = torch.empty((rows, n_chunks), dtype=torch.int64, device=x.device)
    ws_tv = torch.empty((rows, n_chunks, kp) if topk else (1,), dtype=fdt, device=x.device)
    ws_ti = torch.empty((rows, n_chunks, kp) if topk else (1,), dtype=torch.int64, device=x.device)
    k.token_stats_split_kernel[(rows, n_chunks)](
        x, n1, s0, s1, V, inv_hi, inv_lo, ws_f, ws_i, ws_tv, ws_ti, n_chunks,
        chunk, BLOCK=block, K=topk, KP=kp, ACC=acc, FRAC=frac, num_warps=num_warps)
    k.token_stats_merge_kernel[(rows,)](
        x, n1, s0, s1, V, tok_arg, inv_hi, inv_lo, ws_f, ws_i, ws_tv, ws_ti, n_chunks,
        lse, maxlp, lp, ent, margin, coll, kurt, sc, argmax, tkv_arg, tki_arg, rt_arg, fr_arg,
        K=topk, KP=kp, HAS_TOKENS=has_tok, ACC=acc, PRECISE=on_gpu, FRAC=frac, num_warps=1 if not on_gpu else 4)


# ---------------------------------------------------------------------------------------------
# Autograd: lse, max_logprob, logprob and entropy
# ---------------------------------------------------------------------------------------------

def _setup_context(ctx, inputs, output):
    logits, tokens, temperature = inputs[:3]
    ctx.save_for_backward(logits, tokens, output[2])
    ctx.temperature = temperature
    ctx.mark_non_differentiable(*(output[i] for i in (2, 5, 6, 7, 8, 9, 10, 11, 12)))


def _backward(ctx, g_lse, g_maxlp, _g_argmax, g_lp, g_ent, *_rest):
    logits, tokens, argmax = ctx.saved_tensors
    acc = acc_dtype(logits.dtype)
    x = logits.to(acc) / ctx.temperature
    lp = torch.log_softmax(x, dim=-1)
    p = lp.exp()
    live = p > 0  # 0·log 0 = 0: never let a -inf logit turn the gradient into NaN
    g = torch.zeros_like(x)
    if g_lse is not None:
        g = g + g_lse.unsqueeze(-1).to(acc) * p
    if g_ent is not None:
        plp = torch.where(live, p * lp, 0.0)
        H = -plp.sum(-1, keepdim=True)
        g = g + g_ent.unsqueeze(-1).to(acc) * torch.where(live, -(plp + p * H), 0.0)  # dH/dx = -p (log p + H)
    for gout, idx in ((g_maxlp, argmax), (g_lp, argmax if tokens is None else tokens)):
        if gout is not None:  # d log p_y / dx = onehot(y) - p
            gout = gout.unsqueeze(-1).to(acc)
            g = (g - gout * p).scatter_add(-1, idx.clamp(min=0).unsqueeze(-1), gout)
    return (g / ctx.temperature).to(logits.dtype), None, None, None, None


torch.library.register_autograd("flashuq::token_stats", _backward, setup_context=_setup_context)
