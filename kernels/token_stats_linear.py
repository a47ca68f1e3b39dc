"""Triton kernel for ``flashuq.token_stats_linear`` on CUDA: the statistics of ``hidden @ W.T (+ b)``
without materialising the logits.

Stage 1 (this file): program ``(row block, vocabulary chunk)`` computes ``[BLOCK_M, BLOCK_N]`` logit
tiles with ``tl.dot`` over ``D`` (fp32 accumulation), applies bias / scale / soft-capping, reduces each
tile row to the token-statistics partial of ``kernels/token_stats.py`` (vectorised over the rows of
the block) and folds the tiles of its chunk in column order; the chunk partials go to the
workspace layout of the split path. Stage 2 is ``token_stats_merge_kernel`` of
``kernels/token_stats.py``, which folds each row's chunk partials in order and finalises. Chunks
are fixed per launch configuration, so results are deterministic; no atomics. Top-k and the
emitted token's logit are not computed here (the Python side falls back / gathers them).
"""

import triton
import triton.language as tl

from .token_stats import _BIG, _SD_SCALE, _WS_FIELDS, _merge


@triton.jit
def _tile_partial(x, cols, inb, scale, ACC: tl.constexpr, FRAC: tl.constexpr):
    # the partial of each row of a [BM, BN] logit tile: _block_partial of token_stats.py, along axis 1
    bad = inb & ((x != x) | (x == float("inf")))
    x = tl.where(bad | ~inb, float("-inf"), x)
    bm = tl.max(x, axis=1)
    has = bm > float("-inf")
    bidx = tl.min(tl.where(x == bm[:, None], cols, _BIG), axis=1)
    is_max = cols == bidx[:, None]
    fin = x > float("-inf")
    d = tl.where(fin, (x - bm[:, None]) * scale, 0.0)
    if FRAC:
        e4 = tl.where(fin, tl.exp(d * 0.25), 0.0)
        eh = e4 * e4
        e = eh * eh
    else:
        e = tl.where(fin, tl.exp(d), 0.0)
        e4 = e
        eh = e
    e_rest = tl.where(is_max, 0.0, e)
    R = tl.sum(e_rest, axis=1)
    T = tl.sum(tl.where(e > 0.0, e * d, 0.0), axis=1)
    Q2 = tl.sum(e_rest * e_rest, axis=1)
    Qh = tl.sum(tl.where(is_max, 0.0, eh), axis=1)
    Qq = tl.sum(tl.where(is_max, 0.0, e4), axis=1)
    if not FRAC:
        Qh = Qh * 0.0
        Qq = Qq * 0.0
    # carried times 2^-32, as in token_stats (float-minimum masks; d itself overflows at T < 1)
    sd = tl.sum(tl.where(fin, (x - bm[:, None]) * (scale * _SD_SCALE), 0.0), axis=1)
    nf = tl.sum(fin.to(ACC), axis=1)
    m2 = tl.max(tl.where(is_max, float("-inf"), x), axis=1)
    n = tl.sum(inb.to(ACC), axis=1)
    mean = tl.where(has, (1.0 + R) / tl.where(n > 0, n, 1.0), 0.0)
    cc = tl.where(inb, e - mean[:, None], 0.0)
    cc2 = cc * cc
    M2 = tl.sum(cc2, axis=1)
    M3 = tl.sum(cc2 * cc, axis=1)
    M4 = tl.sum(cc2 * cc2, axis=1)
    idx = tl.where(has, bidx, -1)
    return bm, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, tl.sum(bad.to(tl.int32), axis=1)


@triton.jit
def token_stats_linear_partial_kernel(
    h_ptr, w_ptr, b_ptr, rows, V, D, stride_h, stride_w, inv_temp_hi, inv_temp_lo, logit_scale, softcap,
    ws_f_ptr, ws_i_ptr, n_chunks, CHUNK,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, ACC: tl.constexpr, FRAC: tl.constexpr,
    IEEE: tl.constexpr,
):
    """Stage 1: chunk partials of ``BLOCK_M`` rows over the vocabulary chunk ``program_id(1)``."""
    pm = tl.program_id(0)
    c = tl.program_id(1)
    r = pm.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    rmask = r < rows
    scale = (tl.zeros([], ACC) + inv_temp_hi) + inv_temp_lo
    ninf = tl.full([BLOCK_M], float("-inf"), ACC)
    zero = tl.zeros([BLOCK_M], ACC)
    m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad = (
        ninf, ninf, tl.full([BLOCK_M], -1, tl.int64), zero, zero, zero, zero, zero, zero, zero, zero, zero,
        zero, zero, zero, tl.zeros([BLOCK_M], tl.int32))
    lo = c.to(tl.int64) * CHUNK
    hi = tl.minimum(lo + CHUNK, V)
    ks = tl.arange(0, BLOCK_K)
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
        cmask = cols < hi
        acc = tl.zeros([BLOCK_M, BLOCK_N], ACC)
        for k0 in range(0, D, BLOCK_K):
            kk = k0 + ks
            kmask = kk < D
            a = tl.load(h_ptr + r[:, None] * stride_h + kk[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            w = tl.load(w_ptr + cols[None, :] * stride_w + kk[:, None], mask=cmask[None, :] & kmask[:, None],
                        other=0.0)
            if IEEE:
                acc += tl.dot(a, w, input_precision="ieee", out_dtype=ACC)
            else:
                acc += tl.dot(a, w, out_dtype=ACC)
        x = acc
        if HAS_BIAS:
            x += tl.load(b_ptr + cols, mask=cmask, other=0.0).to(ACC)[None, :]
        if HAS_SCALE:
            x = x * logit_scale
        if HAS_SOFTCAP:
            # softcap · tanh(x / softcap), tanh from exp (no libdevice in the interpreter)
            y = x / softcap
            t = 1.0 - 2.0 / (tl.exp(2.0 * y) + 1.0)
            x = softcap * t
        inb = rmask[:, None] & cmask[None, :]
        bm, bm2, bidx, bR, bT, bQ2, bQh, bQq, bsd, bnf, bn, bmean, bM2, bM3, bM4, bbad = _tile_partial(
            x, cols[None, :], inb, scale, ACC, FRAC)
        m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad = _merge(
            m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad,
            bm, bm2, bidx, bR, bT, bQ2, bQh, bQq, bsd, bnf, bn, bmean, bM2, bM3, bM4, bbad, scale, FRAC)
    p = r * n_chunks + c
    w_ = ws_f_ptr + p * _WS_FIELDS
    tl.store(w_ + 0, m, mask=rmask)
    tl.store(w_ + 1, m2, mask=rmask)
    tl.store(w_ + 2, R, mask=rmask)
    tl.store(w_ + 3, T, mask=rmask)
    tl.store(w_ + 4, Q2, mask=rmask)
    tl.store(w_ + 5, sd, mask=rmask)
    tl.store(w_ + 6, nf, mask=rmask)
    tl.store(w_ + 7, n, mask=rmask)
    tl.store(w_ + 8, mean, mask=rmask)
    tl.store(w_ + 9, M2, mask=rmask)
    tl.store(w_ + 10, M3, mask=rmask)
    tl.store(w_ + 11, M4, mask=rmask)
    tl.store(w_ + 12, bad.to(ACC), mask=rmask)
    tl.store(w_ + 13, Qh, mask=rmask)
    tl.store(w_ + 14, Qq, mask=rmask)
    tl.store(ws_i_ptr + p, idx, mask=rmask)
