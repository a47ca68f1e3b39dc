"""Triton kernel for the UQAC head/layer reduction (docs/methods.md#uqac-reduction).

Input ``attn [B, L, H, R, Ntok]`` (contiguous; fp16/bf16/fp32/fp64): the R response rows of every
(layer, head), I = Ntok - R instruction columns first. One program per (batch, response row r):

1. for each (layer, head) row s = l*H + h (tiles of S_TILE rows, columns in BLOCK_N chunks), the
   preprocessed row  a = attn[s, r, :]  with column I+r (the diagonal) and column 0 zeroed and the
   10 calibration factors multiplied into columns I+r-10 .. I+r-1 (columns < 0 skipped); pass one
   sums it (Z = Σ a), pass two accumulates the entropy  -Σ p·log(p + 1e-12),  p = a/(Z + 1e-12);
   Z and the entropy go to a per-program workspace row;
2. the n_heads lowest entropies are selected by repeated argmin (ties -> the lower flat index s;
   NaN entropies rank after every number), their indices written to the workspace in selection
   order (ascending entropy);
3. only the selected rows are re-read, preprocessed and normalised again, and reduced column by
   column with max (or mean) into ``out [B, R, Ntok]``.

Accumulation in fp32 (fp64 for fp64 input). The calibration factors and the 1e-12 come from a
small ACC-typed constant tensor (``CONSTS``), so the fp64 path uses them at full precision. No
atomics, no autotuning: results are deterministic, and the kernel runs under ``TRITON_INTERPRET=1``
(only core ``tl.*`` math; no libdevice).

``uqac_reduce_attention(attn, n_heads, reduction, out=None)`` is the launcher for CUDA tensors
(and, under the interpreter, CPU tensors).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from .._uqac_calibration import UQAC_CALIBRATION

# UQAC's calibration (flashuq/_uqac_calibration.py): CAL[9] multiplies the key just before the query
# (column I+r-1), CAL[0] the key ten before it (column I+r-10)
CAL = UQAC_CALIBRATION
EPS = 1e-12
CONSTS = CAL + (EPS,)  # the constant tensor the kernel reads: 10 factors, then the epsilon
N_CAL = len(CAL)
_N_CAL = tl.constexpr(N_CAL)
REDUCTIONS = ("max", "mean")


@triton.jit
def _pre_tile(x_ptr, row_off, rmask, lo, Ntok, diag, consts_ptr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """The preprocessed [rows, BLOCK_N] tile: row_off [rows] element offsets of the rows, columns
    lo .. lo+BLOCK_N-1 (absolute), diag = I + r the query's own (absolute) column."""
    cols = lo + tl.arange(0, BLOCK_N)
    cmask = cols < Ntok
    m = rmask[:, None] & cmask[None, :]
    a = tl.load(x_ptr + row_off[:, None] + cols[None, :], mask=m, other=0.0).to(ACC)
    # only the chunk holding column 0 or a column of the window [I+r-10, I+r] is touched
    if (lo == 0) | ((lo <= diag) & (lo + BLOCK_N > diag - _N_CAL)):
        d = diag - cols  # 1..10: the calibrated keys; 0: the diagonal
        cal = (d >= 1) & (d <= _N_CAL) & cmask
        f = tl.load(consts_ptr + tl.where(cal, _N_CAL - d, 0), mask=cal, other=1.0).to(ACC)
        zero = (d == 0) | (cols == 0)
        # set, not multiply: an inf or NaN in a zeroed column must not reach the row (the CPU never reads it)
        a = tl.where(zero[None, :], 0.0, a * f[None, :])
    return a


@triton.jit
def uqac_reduce_kernel(x_ptr, out_ptr, ws_ptr, sel_ptr, consts_ptr, R, Ntok, S, n_heads,
                       MEAN: tl.constexpr, BLOCK_N: tl.constexpr, S_TILE: tl.constexpr, S_BLOCK: tl.constexpr,
                       K_TILE: tl.constexpr, K_BLOCK: tl.constexpr, ACC: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)  # = b*R + r
    b = pid // R
    r = pid % R
    diag = (Ntok - R) + r
    row_stride = (pid * 0 + R) * Ntok  # (int64) elements between (l, h) rows of one query row
    base = (b * S * R + r) * Ntok  # element offset of attn[b, s=0, r, 0]
    eps = tl.load(consts_ptr + _N_CAL).to(ACC)
    ws_row = ws_ptr + pid * (2 * S)  # [entropy(S), Z(S)] of this program

    # 1. row sums and entropies of every (layer, head) row, S_TILE rows at a time
    st = tl.arange(0, S_TILE)
    for s0 in range(0, S, S_TILE):
        srow = s0 + st
        rmask = srow < S
        row_off = base + srow.to(tl.int64) * row_stride
        z = tl.zeros([S_TILE], ACC)
        for c0 in range(0, Ntok, BLOCK_N):
            a = _pre_tile(x_ptr, row_off, rmask, c0, Ntok, diag, consts_ptr, BLOCK_N, ACC)
            z += tl.sum(a, axis=1)
        den = z + eps
        ent = tl.zeros([S_TILE], ACC)
        for c0 in range(0, Ntok, BLOCK_N):
            a = _pre_tile(x_ptr, row_off, rmask, c0, Ntok, diag, consts_ptr, BLOCK_N, ACC)
            p = a / den[:, None]
            ent -= tl.sum(p * tl.log(p + eps), axis=1)
        tl.store(ws_row + srow, ent, mask=rmask)
        tl.store(ws_row + S + srow, z, mask=rmask)
    tl.debug_barrier()

    # 2. the n_heads lowest entropies, ties -> lower s (argmin returns the first minimum)
    sa = tl.arange(0, S_BLOCK)
    # the order of the CPU kernel: numbers (-inf included) ascending, then +inf, then NaN, each class
    # by index; cls 3 marks padding and rows already chosen
    key = tl.load(ws_row + sa, mask=sa < S, other=0.0)
    cls = tl.where(sa < S, tl.where(key != key, 2, tl.where(key == float("inf"), 1, 0)), 3)
    ka = tl.arange(0, K_BLOCK)
    sel = tl.zeros([K_BLOCK], tl.int64)
    for k in range(0, n_heads):
        mc = tl.min(cls, axis=0)
        cand = tl.where(cls == mc, tl.where(mc == 0, key, 0.0), float("inf"))
        i = tl.argmin(cand, axis=0)  # the first minimum: ties -> lower s
        sel = tl.where(ka == k, i.to(tl.int64), sel)
        cls = tl.where(sa == i, 3, cls)
    sel_row = sel_ptr + pid * n_heads
    tl.store(sel_row + ka, sel, mask=ka < n_heads)
    tl.debug_barrier()

    # 3. max / mean of the selected rows, normalised, K_TILE rows at a time
    kt = tl.arange(0, K_TILE)
    for c0 in range(0, Ntok, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        if MEAN:
            acc = tl.zeros([BLOCK_N], ACC)
        else:
            acc = tl.full([BLOCK_N], float("-inf"), ACC)
        for k0 in range(0, n_heads, K_TILE):
            kmask = (k0 + kt) < n_heads
            s = tl.load(sel_row + k0 + kt, mask=kmask, other=0)
            den = tl.load(ws_row + S + s, mask=kmask, other=0.0) + eps
            a = _pre_tile(x_ptr, base + s * row_stride, kmask, c0, Ntok, diag, consts_ptr, BLOCK_N, ACC)
            p = a / den[:, None]
            if MEAN:
                acc += tl.sum(tl.where(kmask[:, None], p, 0.0), axis=0)
            else:  # NaN propagates, as in the CPU kernel and torch.max (tl.max would drop it)
                ok = kmask[:, None] & (p == p)
                m = tl.max(tl.where(ok, p, float("-inf")), axis=0)
                nan = tl.sum((kmask[:, None] & (p != p)).to(tl.int32), axis=0) > 0
                acc = tl.where(nan | (acc != acc), float("nan"), tl.maximum(acc, m))
        if MEAN:
            acc = acc / n_heads
        tl.store(out_ptr + pid * Ntok + cols, acc, mask=cols < Ntok)


_CONSTS_CACHE: dict = {}


def _consts(device, dtype):
    key = (str(device), dtype)
    t = _CONSTS_CACHE.get(key)
    if t is None:
        t = _CONSTS_CACHE[key] = torch.tensor(CONSTS, dtype=torch.float64).to(device=device, dtype=dtype)
    return t


def uqac_reduce_attention(attn: torch.Tensor, n_heads: int = 16, reduction: str = "max", out=None, *,
                          block_n=None, s_tile=None, k_tile=None, num_warps=None, return_selected=False):
    """UQAC head/layer reduction of ``attn [..., L, H, R, Ntok]`` -> ``[..., R, Ntok]``.

    For each query row r: the ``n_heads`` (layer, head) rows of lowest entropy after the UQAC
    preprocessing and renormalisation, reduced by ``reduction`` ("max" or "mean"). fp16/bf16/fp32
    input gives fp32, fp64 gives fp64. ``out`` (optional) must be contiguous, of that shape and dtype.
    ``return_selected=True`` also returns the selected flat indices l*H + h, ``int64 [..., R, n_heads]``,
    in selection order (ascending entropy, ties -> lower index). Block sizes are fixed heuristics
    (no autotune) and may be overridden (tests use small ones under the interpreter).
    """
    if not isinstance(attn, torch.Tensor):
        raise TypeError(f"attn must be a torch.Tensor, got {type(attn).__name__}")
    if attn.dim() < 4:
        raise ValueError(f"attn must be [..., L, H, R, Ntok], got shape {tuple(attn.shape)}")
    if not attn.dtype.is_floating_point:
        raise TypeError(f"attn must be a floating tensor, got {attn.dtype}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    *lead, L, H, R, Ntok = attn.shape
    S = L * H
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or not 1 <= n_heads <= max(S, 1):
        raise ValueError(f"n_heads must be an int in [1, L*H = {S}], got {n_heads!r}")
    if Ntok < R:
        raise ValueError(f"attn has R = {R} response rows but only Ntok = {Ntok} columns (need Ntok >= R)")
    acc_dt = torch.float64 if attn.dtype == torch.float64 else torch.float32
    shape = (*lead, R, Ntok)
    if out is None:
        out = torch.empty(shape, dtype=acc_dt, device=attn.device)
    elif tuple(out.shape) != shape or out.dtype != acc_dt or not out.is_contiguous() or out.device != attn.device:
        raise ValueError(f"out must be a contiguous {acc_dt} tensor of shape {shape} on {attn.device}")
    B = 1
    for d in lead:
        B *= d
    P = B * R
    sel = torch.empty((*lead, R, n_heads), dtype=torch.int64, device=attn.device)
    if P == 0 or Ntok == 0 or S == 0:
        if S == 0 and P * Ntok > 0:
            raise ValueError("attn has no (layer, head) rows (L*H = 0)")
        return (out, sel) if return_selected else out
    x = attn.detach()
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = x.to(acc_dt)
    x = x.contiguous()
    ws = torch.empty((P, 2 * S), dtype=acc_dt, device=attn.device)
    BLOCK_N = block_n or min(triton.next_power_of_2(Ntok), 1024)
    S_TILE = s_tile or 4
    K_TILE = k_tile or min(triton.next_power_of_2(n_heads), 4)
    if num_warps is None:
        num_warps = 4 if BLOCK_N * S_TILE <= 2048 else 8
    acc_tl = tl.float64 if acc_dt == torch.float64 else tl.float32
    ctx = torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
    with ctx:
        uqac_reduce_kernel[(P,)](
            x, out, ws, sel, _consts(x.device, acc_dt), R, Ntok, S, n_heads,
            MEAN=reduction == "mean", BLOCK_N=BLOCK_N, S_TILE=S_TILE,
            S_BLOCK=triton.next_power_of_2(S), K_TILE=K_TILE, K_BLOCK=triton.next_power_of_2(n_heads),
            ACC=acc_tl, num_warps=num_warps)
    return (out, sel) if return_selected else out
