"""UQAC ops: the attention-chain pieces of Li et al., "Uncertainty Quantification for LLMs through
Attention Chains" (arXiv 2503.19168; docs/methods.md#uqac), after the reference code Yinghao-Li/UQAC.

* :func:`uqac_reduce_attention` (steps 1-2): preprocessing, per-query-row choice of the ``n_heads``
  lowest-entropy (layer, head) maps, max / mean. CPU: ``flashuq._C`` (C++, OpenMP over query rows);
  CUDA: the Triton kernel ``kernels/uqac_reduce.py``. Both read the given rows only: no
  ``[L·H, R, Ntok]`` temporaries.
* :func:`uqac_backtrack` (step 3): the greedy chain from the answer sources back to the prompt.
  CPU: C++ (one sequence per OpenMP thread); CUDA: one thread block per sequence.
* :func:`uqac_similarity_filter` (step 4): the chain members most similar to the answer.
  C++ / CUDA as the backtracking.
* :func:`uqac_marginal` (step 6): the marginal over token-substituted variants (torch).
* :func:`uqac_chain_batched`: steps 3-4 for B padded sequences in one call (used by
  :func:`flashuq.methods.uqac`).

The kernel code is ``csrc/include/flashuq/uqac.h``, shared by the CPU and CUDA builds. Ties are broken by
the lower index everywhere (head choice, key order, picking, similarity top-k); no atomics, so results
do not depend on the thread count or on the batch a sequence is in.

Coordinates: a response position is a row of ``attn_reduced`` (0 .. R-1); absolute position
``I + i`` with ``I = Ntok - R`` instruction tokens. A chain member c is a *source* id: it predicts
response token ``c + 1``, so ``-1`` (the last instruction token, source of response token 0) is legal.
Answer sources ``ans_src`` predict the answer tokens, hence ``-1 <= ans_src <= R - 2`` (checked).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .. import _ext
from .._uqac_calibration import UQAC_CALIBRATION
from ._common import FLOAT_DTYPES, acc_dtype, as_tensor, check_int, check_real, device_guard, values_readable

REDUCTIONS = ("max", "mean")
_INT64_MIN = -(2 ** 63)
LOG_EPS = math.log(1e-12)


class UqacChains(NamedTuple):
    """Chains (and kept members) of B sequences from :func:`uqac_chain_batched`; row b is valid up to
    its length, padded after (ids and kept members ``-2**63``, scores 0)."""

    chain: Tensor                   #: int64 [B, C] chain members, response positions ascending
    scores: Tensor                  #: [B, C] accumulated attention of each member (answer sources: 0)
    lengths: Tensor                 #: int64 [B]
    keep: Optional[Tensor]          #: int64 [B, K] kept members, ascending (None without h_last)
    keep_lengths: Optional[Tensor]  #: int64 [B]


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------

def _float_tensor(x, name: str, dim: Optional[int] = None, min_dim: Optional[int] = None) -> Tensor:
    x = as_tensor(x, name)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {x.dtype}")
    if dim is not None and x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")
    if min_dim is not None and x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions, got shape {tuple(x.shape)}")
    if x.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{name} must be on the CPU or a CUDA device, got {x.device}")
    return x


def _int_tensor(x, name: str, device) -> Tensor:
    x = as_tensor(x, name)
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {x.dtype}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the attention is on {device}")
    return x


def _cuda_module():
    if _ext._cuda is None:
        raise RuntimeError("flashuq was built without CUDA (no nvcc at install time): move the tensors to the CPU")
    return _ext._cuda


# ---------------------------------------------------------------------------------------------
# Registered ops
# ---------------------------------------------------------------------------------------------

_CALIBRATION = torch.tensor(UQAC_CALIBRATION, dtype=torch.float64)


@torch.library.custom_op("flashuq::uqac_reduce", mutates_args=())
def _reduce_op(attn: Tensor, n_heads: int, mean: bool) -> Tuple[Tensor, Tensor]:
    B, L, H, R, N = attn.shape
    out = torch.empty((B, R, N), dtype=acc_dtype(attn.dtype), device=attn.device)
    selected = torch.empty((B, R, n_heads), dtype=torch.int64, device=attn.device)
    if out.numel() == 0:
        return out, selected
    if attn.device.type == "cpu":
        _ext._C.uqac_reduce(attn, n_heads, mean, _CALIBRATION, out, selected, torch.get_num_threads())
    else:
        k = _ext.kernels()
        with device_guard(attn):
            _, selected = k.uqac_reduce.uqac_reduce_attention(attn, n_heads, "mean" if mean else "max", out,
                                                              return_selected=True)
    return out, selected


@_reduce_op.register_fake
def _(attn, n_heads, mean):
    B, L, H, R, N = attn.shape
    return (attn.new_empty((B, R, N), dtype=acc_dtype(attn.dtype)),
            attn.new_empty((B, R, n_heads), dtype=torch.int64))


@torch.library.custom_op("flashuq::uqac_backtrack", mutates_args=())
def _backtrack_op(attn: Tensor, is_stop: Tensor, ans: Tensor, R: Tensor, Ntok: Tensor, A: Tensor, min_len: Tensor,
                  buffer: int, threshold: float, max_steps: int, C: int) -> Tuple[Tensor, Tensor, Tensor]:
    B = attn.shape[0]
    chain = torch.full((B, C), _INT64_MIN, dtype=torch.int64, device=attn.device)
    scores = torch.zeros((B, C), dtype=attn.dtype, device=attn.device)
    lengths = torch.zeros((B,), dtype=torch.int64, device=attn.device)
    if B == 0:
        return chain, scores, lengths
    if attn.device.type == "cpu":
        _ext._C.uqac_backtrack(attn, is_stop, ans, R, Ntok, A, min_len, buffer, threshold, max_steps,
                               chain, scores, lengths, torch.get_num_threads())
    else:
        cu = _cuda_module()
        with device_guard(attn):
            ws = torch.empty(cu.uqac_backtrack_workspace(B, attn.shape[2], attn.element_size()),
                             dtype=torch.uint8, device=attn.device)
            cu.uqac_backtrack(attn, is_stop, ans, R, Ntok, A, min_len, buffer, threshold, max_steps,
                              chain, scores, lengths, ws, torch.cuda.current_stream(attn.device).cuda_stream)
    return chain, scores, lengths


@_backtrack_op.register_fake
def _(attn, is_stop, ans, R, Ntok, A, min_len, buffer, threshold, max_steps, C):
    B = attn.shape[0]
    return (attn.new_empty((B, C), dtype=torch.int64), attn.new_empty((B, C)),
            attn.new_empty((B,), dtype=torch.int64))


@torch.library.custom_op("flashuq::uqac_similarity", mutates_args=())
def _similarity_op(h: Tensor, chain: Tensor, lengths: Tensor, ans: Tensor, A: Tensor, R: Tensor, k: int,
                   threshold: float) -> Tuple[Tensor, Tensor]:
    B, C = chain.shape
    K = min(k, C)
    keep = torch.full((B, K), _INT64_MIN, dtype=torch.int64, device=h.device)
    keep_len = torch.zeros((B,), dtype=torch.int64, device=h.device)
    if B == 0:
        return keep, keep_len
    if h.device.type == "cpu":
        _ext._C.uqac_similarity(h, chain, lengths, ans, A, R, k, threshold, keep, keep_len, torch.get_num_threads())
    else:
        cu = _cuda_module()
        with device_guard(h):
            ws = torch.empty(B * 2 * max(C, 1), dtype=torch.float32, device=h.device)
            cu.uqac_similarity(h, chain, lengths, ans, A, R, k, threshold, keep, keep_len, ws,
                               torch.cuda.current_stream(h.device).cuda_stream)
    return keep, keep_len


@_similarity_op.register_fake
def _(h, chain, lengths, ans, A, R, k, threshold):
    B, C = chain.shape
    K = min(k, C)
    return chain.new_empty((B, K)), chain.new_empty((B,))


# ---------------------------------------------------------------------------------------------
# Public ops
# ---------------------------------------------------------------------------------------------

def uqac_reduce_attention(attn, *, n_heads: int = 16, reduction: str = "max", return_selected: bool = False):
    """UQAC steps 1-2: ``attn [..., L, H, R, Ntok]`` -> ``[..., R, Ntok]``.

    The R response rows of every (layer, head) over all ``Ntok = I + R`` tokens. Each row of query r
    is preprocessed (self-attention column ``I + r`` and column 0 zeroed; the keys at columns
    ``I + r - 10 .. I + r - 1`` scaled by the calibration factors, columns < 0 skipped), renormalised
    ``A = A / (rowsum + 1e-12)`` and its entropy ``-Σ A log(A + 1e-12)`` taken; per query row the
    ``n_heads`` maps of lowest entropy (ties: the lower flat index ``l·H + h``) are reduced by
    ``reduction`` ("max" or "mean"). Any float dtype; accumulation in fp32 (fp64 for fp64 input),
    output float32 (float64 for float64 input). Not differentiable.

    ``return_selected=True`` returns ``(reduced, selected)``: ``selected`` int64 ``[..., R, n_heads]``
    holds the chosen flat indices ``l·H + h`` of each row, lowest entropy first. Merging the kept rows
    of one call with new ones in a later call gives the selection over all of them, which is how
    :class:`flashuq.hf.AttentionCapture` streams the reduction over the layers.
    """
    attn = _float_tensor(attn, "attn", min_dim=4)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not isinstance(return_selected, bool):
        raise TypeError(f"return_selected must be a bool, got {type(return_selected).__name__}")
    *lead, L, H, R, N = attn.shape
    if N < R:
        raise ValueError(f"attn has R = {R} response rows but only Ntok = {N} columns (need Ntok >= R)")
    n_heads = check_int(n_heads, "n_heads", 1)
    if n_heads > L * H:
        raise ValueError(f"n_heads = {n_heads} exceeds the L*H = {L * H} (layer, head) maps of attn")
    x = attn.detach()
    B = math.prod(lead)
    try:
        x = x.view(B, L, H, R, N)
    except RuntimeError:
        x = x.reshape(B, L, H, R, N)
    if x.device.type == "cuda" or (N > 1 and x.stride(-1) != 1) or any(s < 0 for s in x.stride()):
        x = x.contiguous()
    out, selected = _reduce_op(x, n_heads, reduction == "mean")
    out = out.reshape(*lead, R, N)
    return (out, selected.reshape(*lead, R, n_heads)) if return_selected else out


def _seq_lengths(values, name: str, B: int, default: int, device) -> Tensor:
    if values is None:
        return torch.full((B,), default, dtype=torch.int64, device=device)
    v = _int_tensor(values, name, device)
    if tuple(v.shape) != (B,):
        raise ValueError(f"{name} must have shape [{B}], got {tuple(v.shape)}")
    return v.to(torch.int64).contiguous()


def uqac_chain_batched(attn_reduced, ans_src, is_stop, *, response_len=None, n_tokens=None, ans_len=None,
                       h_last=None, buffer: int = 3, threshold: float = 0.5, min_chain_len: Optional[int] = None,
                       max_steps: int = 1000, k: int = 10, similarity_threshold: float = 0.0) -> UqacChains:
    """Steps 3-4 of UQAC for B padded sequences in one C++ call / CUDA launch each.

    ``attn_reduced [B, Rmax, Nmax]`` (rows ``:R_b``, columns ``:Ntok_b`` of sequence b are used),
    ``ans_src [B, Amax]`` int (``:A_b`` used; each in ``[-1, R_b - 2]``), ``is_stop [B, Nmax]`` bool,
    ``response_len`` (R_b), ``n_tokens`` (Ntok_b >= R_b) and ``ans_len`` (A_b), int ``[B]`` each
    (default: the padded sizes), ``h_last [B, Rmax, D]`` optional (rows ``:R_b``). Per sequence exactly
    :func:`uqac_backtrack` and, with ``h_last``, :func:`uqac_similarity_filter` (``k``,
    ``similarity_threshold``); ``min_chain_len`` None means ``5 + A_b`` for each b, an int the same total
    for all. The chain capacity is ``C = Amax + min(max_steps * buffer, Nmax)``.
    """
    attn = _float_tensor(attn_reduced, "attn_reduced", dim=3)
    B, Rmax, Nmax = attn.shape
    dev = attn.device
    ans = _int_tensor(ans_src, "ans_src", dev)
    if ans.dim() != 2 or ans.shape[0] != B:
        raise ValueError(f"ans_src must have shape [{B}, Amax], got {tuple(ans.shape)}")
    Amax = ans.shape[1]
    stop = as_tensor(is_stop, "is_stop")
    if stop.dtype.is_floating_point or stop.dtype.is_complex:
        raise TypeError(f"is_stop must be a bool (or integer) tensor, got {stop.dtype}")
    if tuple(stop.shape) != (B, Nmax):
        raise ValueError(f"is_stop must have shape [{B}, {Nmax}], got {tuple(stop.shape)}")
    if stop.device != dev:
        raise ValueError(f"is_stop is on {stop.device} but attn_reduced is on {dev}")
    R = _seq_lengths(response_len, "response_len", B, Rmax, dev)
    N = _seq_lengths(n_tokens, "n_tokens", B, Nmax, dev)
    A = _seq_lengths(ans_len, "ans_len", B, Amax, dev)
    buffer = check_int(buffer, "buffer", 0)
    max_steps = check_int(max_steps, "max_steps", 0)
    threshold = check_real(threshold, "threshold", finite=False)
    if min_chain_len is None:
        min_len = A + 5
    else:
        min_len = torch.full((B,), check_int(min_chain_len, "min_chain_len", 0), dtype=torch.int64, device=dev)
    ans = ans.to(torch.int64).contiguous()
    if values_readable(attn) and B > 0:
        if bool(((R < 0) | (R > Rmax)).any()):
            raise ValueError(f"response_len must lie in [0, {Rmax}]")
        if bool(((N < R) | (N > Nmax)).any()):
            raise ValueError(f"n_tokens must lie in [response_len, {Nmax}]")
        if bool(((A < 0) | (A > Amax)).any()):
            raise ValueError(f"ans_len must lie in [0, {Amax}]")
        used = torch.arange(Amax, device=dev)[None, :] < A[:, None]
        bad = used & ((ans < -1) | (ans > (R - 2)[:, None]))
        if bool(bad.any()):
            b = int(bad.nonzero()[0, 0])
            raise ValueError(f"ans_src of sequence {b} must lie in [-1, R - 2 = {int(R[b]) - 2}] "
                             "(answer sources predict answer tokens inside the response)")
    x = attn.detach()
    x = (x.to(torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else x).contiguous()
    stop_u8 = (stop != 0).to(torch.uint8).contiguous()
    C = Amax + (min(max_steps * buffer, Nmax) if buffer > 0 else 0)
    chain, scores, lengths = _backtrack_op(x, stop_u8, ans, R, N, A, min_len, buffer, threshold, max_steps, C)
    if values_readable(attn) and B > 0 and bool((lengths < 0).any()):
        raise ValueError("ans_src out of range for its sequence")  # only reachable on CUDA (the CPU checks first)
    if h_last is None:
        return UqacChains(chain, scores, lengths, None, None)
    h = _float_tensor(h_last, "h_last", dim=3)
    if h.shape[0] != B or h.shape[1] != Rmax:
        raise ValueError(f"h_last must have shape [{B}, {Rmax}, D], got {tuple(h.shape)}")
    if h.device != dev:
        raise ValueError(f"h_last is on {h.device} but attn_reduced is on {dev}")
    k = check_int(k, "k", 0)
    sim_thr = check_real(similarity_threshold, "similarity_threshold", finite=False)
    keep, keep_len = _similarity_op(h.detach().contiguous(), chain, lengths, ans, A, R, k, sim_thr)
    if values_readable(h) and B > 0 and bool((keep_len < 0).any()):
        raise ValueError("similarity filter: sequence lengths or answer sources out of range")
    return UqacChains(chain, scores, lengths, keep, keep_len)


def uqac_backtrack(attn_reduced, ans_src, is_stop, *, buffer: int = 3, threshold: float = 0.5,
                   min_chain_len: Optional[int] = None, max_steps: int = 1000) -> Tuple[Tensor, Tensor]:
    """UQAC step 3 for one sequence: the attention chain from the answer sources back to the prompt.

    ``attn_reduced [R, Ntok]`` (from :func:`uqac_reduce_attention`), ``ans_src [A]`` response positions
    that predict the answer tokens (``-1 <= a <= R - 2``), ``is_stop [Ntok]`` bool (instruction positions
    True). Works in absolute positions with ``I = Ntok - R`` zero rows on top, exactly as the reference
    ``backtrack``: each round, every source scans its keys by weight descending (ties: the lower key);
    ranks >= 5 only while nothing has accumulated and the chain is shorter than ``min_chain_len`` (the
    TOTAL minimum incl. the answer sources; None = 5 + A); keys equal to the source, keys whose source
    was already expanded and stop keys are skipped; then up to ``buffer`` keys are picked by accumulated
    score (ties: the lower key) unless ``score < threshold`` with the chain long enough (this round's picks
    counted twice, as the reference does). At most ``max_steps`` rounds.

    Returns ``(chain int64 [C], scores [C])``: response positions ascending (the answer sources, score 0,
    normally last; -1 = the source of response token 0), scores float32 (float64 for float64 input).
    An empty ``ans_src`` gives an empty chain.
    """
    attn = _float_tensor(attn_reduced, "attn_reduced", dim=2)
    ans = _int_tensor(ans_src, "ans_src", attn.device)
    if ans.dim() != 1:
        raise ValueError(f"ans_src must be 1-D [A], got shape {tuple(ans.shape)}")
    stop = as_tensor(is_stop, "is_stop")
    if stop.dim() != 1 or stop.shape[0] != attn.shape[1]:
        raise ValueError(f"is_stop must have shape [Ntok = {attn.shape[1]}], got {tuple(stop.shape)}")
    if attn.shape[1] < attn.shape[0]:
        raise ValueError(f"attn_reduced is [R, Ntok] with Ntok >= R, got shape {tuple(attn.shape)}")
    out = uqac_chain_batched(attn[None], ans[None], stop[None], buffer=buffer, threshold=threshold,
                             min_chain_len=min_chain_len, max_steps=max_steps)
    n = int(out.lengths[0]) if values_readable(attn) else out.chain.shape[1]
    return out.chain[0, :n], out.scores[0, :n]


def uqac_similarity_filter(h_last, chain, ans_src, *, k: int = 10, threshold: float = 0.0) -> Tensor:
    """UQAC step 4 for one sequence: the chain members kept for the confidence.

    ``h_last [R, D]`` last-layer hidden states by response TOKEN (source c -> row c + 1), ``chain [C]``
    as :func:`uqac_backtrack` returns it (ascending, the A answer sources last), ``ans_src [A]``.
    ``sim(c) = mean_a cos(h_last[a+1], h_last[c+1])`` (torch's cosine, norms clamped at 1e-8), over the
    chain without its last A entries (the reference's ``sims[:-A]``: the members that are not answer
    sources); kept: ``float32(sim) >= threshold``, then the ``k`` highest (ties: the earlier chain
    entry). Returns the kept members ascending (int64). No answer source keeps nothing.
    """
    h = _float_tensor(h_last, "h_last", dim=2)
    ch = _int_tensor(chain, "chain", h.device)
    ans = _int_tensor(ans_src, "ans_src", h.device)
    if ch.dim() != 1 or ans.dim() != 1:
        raise ValueError("chain and ans_src must be 1-D")
    R = h.shape[0]
    ch = ch.to(torch.int64).contiguous()
    ans = ans.to(torch.int64).contiguous()
    k = check_int(k, "k", 0)
    thr = check_real(threshold, "threshold", finite=False)
    if values_readable(h):
        if ans.numel() and bool(((ans < -1) | (ans > R - 2)).any()):
            raise ValueError(f"ans_src must lie in [-1, R - 2 = {R - 2}]")
        if ch.numel() and bool(((ch < -1) | (ch > R - 2)).any()):
            raise ValueError(f"chain members must lie in [-1, R - 2 = {R - 2}]")
    dev = h.device
    one = lambda v: torch.tensor([v], dtype=torch.int64, device=dev)  # noqa: E731
    keep, n = _similarity_op(h.detach().contiguous()[None], ch[None], one(ch.numel()), ans[None], one(ans.numel()),
                             one(R), k, thr)
    m = int(n[0]) if values_readable(h) else keep.shape[1]
    return keep[0, :m]


def uqac_marginal(ans_logprobs, seq_logprobs) -> Tensor:
    """UQAC step 6: ``Σ_v exp(Σ_a max(l, log 1e-12)) · exp(Σ_j max(l, log 1e-12))``.

    ``ans_logprobs [..., V, A]`` and ``seq_logprobs [..., V, J]`` are the log-probabilities of the answer
    tokens and of the kept chain tokens in each variant (row 0 = the original sequence); every factor is
    clamped at probability 1e-12 on its own, as the reference. ``J = 0`` gives the summed answer
    probability. Returns ``[...]`` (float64 for float64 input, else float32). NaN propagates.
    """
    a = _float_tensor(ans_logprobs, "ans_logprobs", min_dim=2)
    s = _float_tensor(seq_logprobs, "seq_logprobs", min_dim=2)
    if a.shape[:-1] != s.shape[:-1]:
        raise ValueError(f"ans_logprobs {tuple(a.shape)} and seq_logprobs {tuple(s.shape)} must agree "
                         "in every dimension but the last ([..., n_variants, A] and [..., n_variants, J])")
    if a.device != s.device:
        raise ValueError(f"ans_logprobs is on {a.device} but seq_logprobs is on {s.device}")
    dt = acc_dtype(torch.promote_types(a.dtype, s.dtype))
    a, s = a.to(dt), s.to(dt)
    # clamp_min keeps NaN (torch.clamp propagates it)
    return (a.clamp_min(LOG_EPS).sum(-1).exp() * s.clamp_min(LOG_EPS).sum(-1).exp()).sum(-1)


__all__ = ["UqacChains", "uqac_backtrack", "uqac_chain_batched", "uqac_marginal", "uqac_reduce_attention",
           "uqac_similarity_filter"]
