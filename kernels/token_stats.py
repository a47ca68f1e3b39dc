"""Triton kernels for ``flashuq.token_stats``: every statistic from one read of the logits.

Numerics follow docs/numerics.md#accumulator and mirror ``csrc/include/flashuq/accumulator.h``: each block of
``BLOCK`` columns becomes a partial (max, argmax, second max, R, T, Q2, Σd, n_finite, the
centred moments of e^d and, with ``FRAC``, the tempered sums Qh, Qq of e^{d/2}, e^{d/4}),
partials fold into a chunk's partial, and chunk partials fold into the row's in column order. A row is cut into chunks of ``CHUNK`` columns whatever the launch shape,
so the one-program-per-row path and the split-vocabulary path (stage 1 writes chunk partials to
a workspace, stage 2 folds them in order) perform the same arithmetic: results are deterministic
and do not depend on the batch a row came in. No atomics, no autotuning (the kernels also run
under ``TRITON_INTERPRET=1``). libdevice's log1p/log/expm1/acos are used on the GPU only (``PRECISE``);
the interpreter has no libdevice and gets Kahan's formulations and a Newton arccos instead.
"""

import triton
import triton.language as tl
from triton.language.extra import libdevice

# workspace layout of one chunk partial (float fields; the argmax goes to a separate int64 array)
WS_FIELDS = 16
_WS_FIELDS = tl.constexpr(WS_FIELDS)
_BIG = tl.constexpr(2**62)  # index sentinel: worse than any real column on ties
# sd (Σ d over the finite entries, for self-certainty) is carried times 2^-32: a logit masked with
# the float minimum has d ~ -3.4e38, and two of them overflowed the fp32 sum (+inf self-certainty
# where the value is ~1e37). A power of two changes no rounding, so other rows keep their bits.
_SD_SCALE = tl.constexpr(2.0**-32)
_SD_UNSCALE = tl.constexpr(2.0**32)


# The once-per-row functions. On a GPU (PRECISE) they come from libdevice; the interpreter has no
# libdevice (docs/numerics.md#triton-interpreter), so there Kahan's formulations over tl.log are used (docs/numerics.md#log1p-without-libdevice).
@triton.jit
def _log1p(r, PRECISE: tl.constexpr):
    if PRECISE:
        out = libdevice.log1p(r)
    else:
        u = 1.0 + r
        um1 = tl.where(u == 1.0, 1.0, u - 1.0)
        out = tl.where(u == 1.0, r, tl.log(u) * (r / um1))
    return out


@triton.jit
def _log(x, PRECISE: tl.constexpr):
    if PRECISE:
        out = libdevice.log(x)
    else:
        out = tl.log(x)
    return out


@triton.jit
def _expm1(x, PRECISE: tl.constexpr):
    if PRECISE:
        out = libdevice.expm1(x)
    else:
        u = tl.exp(x)
        um1 = u - 1.0
        lu = tl.where((u == 1.0) | (um1 == -1.0), 1.0, tl.log(u))
        out = tl.where(u == 1.0, x, tl.where(um1 == -1.0, -1.0, um1 * (x / lu)))
    return out


@triton.jit
def _acos(x, PRECISE: tl.constexpr):
    # arccos on [0, 1]. The interpreter has no libdevice: acos(x) = 2·asin(s), s = sqrt((1 - x)/2)
    # <= 0.71, by Newton on sin from a cubic start (4 steps: full precision in fp32 and fp64).
    if PRECISE:
        out = libdevice.acos(x)
    else:
        s = tl.sqrt((1.0 - x) * 0.5)
        y = s + s * s * s * (1.0 / 6.0)
        for _ in tl.static_range(4):
            y = y - (tl.sin(y) - s) / tl.cos(y)
        out = 2.0 * y
    return out


@triton.jit
def _moments_merge(n, mean, M2, M3, M4, nb, meanb, M2b, M3b, M4b):
    # Pairwise centred-moment update (Chan et al.; Pébay). Exact for n == 0 or nb == 0 too.
    N = n + nb
    delta = meanb - mean
    dn = delta / tl.where(N > 0, N, 1.0)
    dn2 = dn * dn
    t1 = delta * dn * n * nb
    M4n = M4 + M4b + t1 * dn2 * (n * n - n * nb + nb * nb) + 6.0 * dn2 * (n * n * M2b + nb * nb * M2) \
        + 4.0 * dn * (n * M3b - nb * M3)
    M3n = M3 + M3b + t1 * dn * (n - nb) + 3.0 * dn * (n * M2b - nb * M2)
    M2n = M2 + M2b + t1
    return N, mean + dn * nb, M2n, M3n, M4n


@triton.jit
def _merge(am, am2, aidx, aR, aT, aQ2, aQh, aQq, asd, anf, an, amean, aM2, aM3, aM4, abad,
           bm, bm2, bidx, bR, bT, bQ2, bQh, bQq, bsd, bnf, bn, bmean, bM2, bM3, bM4, bbad, scale,
           FRAC: tl.constexpr):
    # Merge two partials of one row (docs/numerics.md#merge); ties of the max keep the smaller index.
    a_top = (am > bm) | ((am == bm) & ((bidx < 0) | ((aidx >= 0) & (aidx <= bidx))))
    Xm = tl.where(a_top, am, bm)
    Xm2 = tl.where(a_top, am2, bm2)
    Xidx = tl.where(a_top, aidx, bidx)
    XR = tl.where(a_top, aR, bR)
    XT = tl.where(a_top, aT, bT)
    XQ2 = tl.where(a_top, aQ2, bQ2)
    XQh = tl.where(a_top, aQh, bQh)
    XQq = tl.where(a_top, aQq, bQq)
    Xsd = tl.where(a_top, asd, bsd)
    Xnf = tl.where(a_top, anf, bnf)
    Xn = tl.where(a_top, an, bn)
    Xmean = tl.where(a_top, amean, bmean)
    XM2 = tl.where(a_top, aM2, bM2)
    XM3 = tl.where(a_top, aM3, bM3)
    XM4 = tl.where(a_top, aM4, bM4)
    Ym = tl.where(a_top, bm, am)
    YR = tl.where(a_top, bR, aR)
    YT = tl.where(a_top, bT, aT)
    YQ2 = tl.where(a_top, bQ2, aQ2)
    YQh = tl.where(a_top, bQh, aQh)
    YQq = tl.where(a_top, bQq, aQq)
    Ysd = tl.where(a_top, bsd, asd)
    Ynf = tl.where(a_top, bnf, anf)
    Yn = tl.where(a_top, bn, an)
    Ymean = tl.where(a_top, bmean, amean)
    YM2 = tl.where(a_top, bM2, aM2)
    YM3 = tl.where(a_top, bM3, aM3)
    YM4 = tl.where(a_top, bM4, aM4)

    y_has = Ym > float("-inf")  # then Xm >= Ym is finite; maxima are raw logits, scale = 1/T
    delta = tl.where(y_has, (Ym - Xm) * scale, 0.0)
    c = tl.where(y_has, tl.exp(delta), 0.0)
    c2 = c * c
    SY = tl.where(y_has, 1.0 + YR, 0.0)
    R = XR + c * SY
    T = tl.where(c > 0.0, XT + c * (YT + delta * SY), XT)  # delta = -inf only when c = 0
    Q2 = XQ2 + c2 * tl.where(y_has, 1.0 + YQ2, 0.0)
    Qh = XQh
    Qq = XQq
    if FRAC:
        Qh = XQh + tl.where(y_has, tl.exp(delta * 0.5) * (1.0 + YQh), 0.0)
        Qq = XQq + tl.where(y_has, tl.exp(delta * 0.25) * (1.0 + YQq), 0.0)
    sd = Xsd + Ysd + Ynf * (delta * _SD_SCALE)
    nf = Xnf + Ynf
    m2 = tl.maximum(Xm2, Ym)
    n, mean, M2, M3, M4 = _moments_merge(Xn, Xmean, XM2, XM3, XM4, Yn, Ymean * c, YM2 * c2, YM3 * c2 * c,
                                         YM4 * c2 * c2)
    return Xm, m2, Xidx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, abad + bbad


@triton.jit
def _topk_worst(tv, ti, slots, K: tl.constexpr):
    # The entry a better candidate replaces: the smallest value, and of those the largest index.
    ok = slots < K
    wv = tl.min(tl.where(ok, tv, float("inf")))
    wi = tl.max(tl.where(ok & (tv == wv), ti, -1))
    ws = tl.min(tl.where(ok & (tv == wv) & (ti == wi), slots, K))
    return wv, wi, ws


@triton.jit
def _topk_absorb(tv, ti, cv, ci, cmask, K: tl.constexpr, KP: tl.constexpr):
    # Insert the candidates (cv, ci) where cmask into the unsorted top-K set (tv, ti).
    slots = tl.arange(0, KP)
    wv, wi, ws = _topk_worst(tv, ti, slots, K)
    cand = cmask & ((cv > wv) | ((cv == wv) & (ci < wi)))
    while tl.max(cand.to(tl.int32)) > 0:
        v = tl.max(tl.where(cand, cv, float("-inf")))
        i = tl.min(tl.where(cand & (cv == v), ci, _BIG))
        tv = tl.where(slots == ws, v, tv)
        ti = tl.where(slots == ws, i, ti)
        wv, wi, ws = _topk_worst(tv, ti, slots, K)
        cand = cand & (ci != i) & ((cv > wv) | ((cv == wv) & (ci < wi)))
    return tv, ti


@triton.jit
def _acc_empty(ACC: tl.constexpr):
    # the identity of _merge: no column seen (m = -inf, argmax -1, every sum 0)
    zero = tl.zeros([], ACC)
    ninf = tl.full([], float("-inf"), ACC)
    return ninf, ninf, tl.full([], -1, tl.int64), zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, \
        zero, zero, tl.zeros([], tl.int32)


@triton.jit
def _block_partial(row_ptr, cols0, hi, scale, BLOCK: tl.constexpr, ACC: tl.constexpr, FRAC: tl.constexpr):
    cols = cols0 + tl.arange(0, BLOCK).to(tl.int64)
    inb = cols < hi
    x = tl.load(row_ptr + cols, mask=inb, other=float("-inf")).to(ACC)  # raw: 1/T scales differences
    bad = inb & ((x != x) | (x == float("inf")))
    x = tl.where(bad, float("-inf"), x)
    bm = tl.max(x)
    has = bm > float("-inf")
    bidx = tl.min(tl.where(x == bm, cols, _BIG))
    is_max = cols == bidx
    fin = x > float("-inf")
    d = tl.where(fin, (x - bm) * scale, 0.0)
    if FRAC:  # one exponential e^{d/4}; e^{d/2} and e^d are its squares (docs/numerics.md#accumulator: saves MUFU work)
        e4 = tl.where(fin, tl.exp(d * 0.25), 0.0)
        eh = e4 * e4
        e = eh * eh
    else:
        e = tl.where(fin, tl.exp(d), 0.0)
        e4 = e  # unused without FRAC
        eh = e
    e_rest = tl.where(is_max, 0.0, e)  # the max is implicit (e^0 = 1): R never forms 1 + tiny
    R = tl.sum(e_rest)
    T = tl.sum(tl.where(e > 0.0, e * d, 0.0))  # d is -inf if the row spans beyond the float range
    Q2 = tl.sum(e_rest * e_rest)
    Qh = tl.zeros([], ACC)
    Qq = tl.zeros([], ACC)
    if FRAC:
        Qq = tl.sum(tl.where(is_max, 0.0, e4))
        Qh = tl.sum(tl.where(is_max, 0.0, eh))
    sd = tl.sum(tl.where(fin, (x - bm) * (scale * _SD_SCALE), 0.0))  # d itself overflows at T < 1
    nf = tl.sum(fin.to(ACC))
    m2 = tl.max(tl.where(is_max, float("-inf"), x))
    n = tl.minimum(hi - cols0, BLOCK).to(ACC)  # columns of this block inside [lo, hi)
    mean = tl.where(has, (1.0 + R) / n, 0.0)
    cc = tl.where(inb, e - mean, 0.0)
    cc2 = cc * cc
    M2 = tl.sum(cc2)
    M3 = tl.sum(cc2 * cc)
    M4 = tl.sum(cc2 * cc2)
    idx = tl.where(has, bidx, -1)
    return x, bm, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, tl.sum(bad.to(tl.int32))


@triton.jit
def _chunk_partial(row_ptr, lo, hi, scale, tv, ti,
                   BLOCK: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, ACC: tl.constexpr, FRAC: tl.constexpr):
    m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad = _acc_empty(ACC)
    for start in range(lo, hi, BLOCK):
        x, bm, bm2, bidx, bR, bT, bQ2, bQh, bQq, bsd, bnf, bn, bmean, bM2, bM3, bM4, bbad = _block_partial(
            row_ptr, start, hi, scale, BLOCK, ACC, FRAC)
        cols = start + tl.arange(0, BLOCK).to(tl.int64)
        m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad = _merge(
            m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad,
            bm, bm2, bidx, bR, bT, bQ2, bQh, bQq, bsd, bnf, bn, bmean, bM2, bM3, bM4, bbad, scale, FRAC)
        if K > 0:
            tv, ti = _topk_absorb(tv, ti, x, cols, cols < hi, K, KP)
    return m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad, tv, ti


@triton.jit
def _finalize(row, row_ptr, m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, M2, M4, bad, tv, ti, tok_ptr, scale, V,
              lse_ptr, maxlp_ptr, lp_ptr, ent_ptr, margin_ptr, coll_ptr, kurt_ptr, sc_ptr, argmax_ptr,
              tkv_ptr, tki_ptr, rt_ptr, fr_ptr, HAS_TOKENS: tl.constexpr, K: tl.constexpr, KP: tl.constexpr,
              ACC: tl.constexpr, PRECISE: tl.constexpr, FRAC: tl.constexpr):
    valid = (bad == 0) & (m > float("-inf"))
    nan = float("nan")
    S = 1.0 + R
    l1p = _log1p(R, PRECISE)
    mx = tl.where(valid, m, 0.0)
    max_lp = tl.where(valid, -l1p, nan)
    lp = max_lp
    if HAS_TOKENS:
        tok = tl.load(tok_ptr + row)
        tok_ok = (tok >= 0) & (tok < V)
        xt = tl.load(row_ptr + tl.where(tok_ok, tok, 0)).to(ACC)
        lp = tl.where(valid & tok_ok, (xt - mx) * scale - l1p, nan)
    tl.store(lse_ptr + row, tl.where(valid, m * scale + l1p, nan))
    tl.store(maxlp_ptr + row, max_lp)
    tl.store(lp_ptr + row, lp)
    tl.store(ent_ptr + row, tl.where(valid, l1p - T / S, nan))
    gap = tl.where(m2 > float("-inf"), (m2 - mx) * scale, -1.0)
    margin = tl.where(m2 > float("-inf"), -_expm1(gap, PRECISE), 1.0) / S  # p(1) - p(2), exact near ties
    tl.store(margin_ptr + row, tl.where(valid, margin, nan))
    tl.store(coll_ptr + row, tl.where(valid, (1.0 + Q2) / (S * S), nan))
    tl.store(kurt_ptr + row, tl.where(valid, n * M4 / (M2 * M2) - 3.0, nan))
    nfs = tl.where(nf > 0, nf, 1.0)
    # KL(U || p) over finite entries as log(S / nf) - sd / nf: terms of the row's scale, not log V
    tl.store(sc_ptr + row, tl.where(valid, _log(S / nfs, PRECISE) - (sd / nfs) * _SD_UNSCALE, nan))
    tl.store(argmax_ptr + row, tl.where(valid, idx, -1))
    if FRAC:
        # q = softmax(z / 2T) against uniform over all n = V columns (accumulator.h, docs/numerics.md#closed-forms)
        l1h = _log1p(Qh, PRECISE)
        l1q = _log1p(Qq, PRECISE)
        logV = _log(n, PRECISE)
        tl.store(rt_ptr + row, tl.where(valid, l1h - 2.0 * l1q - logV, nan))
        bc = tl.minimum(tl.exp(l1q - 0.5 * (l1h + logV)), 1.0)
        tl.store(fr_ptr + row, tl.where(valid, 0.6366197723675814 * _acos(bc, PRECISE), nan))
    if K > 0:
        # rank of each entry among the K (value descending, index ascending), then scatter
        slots = tl.arange(0, KP)
        ok = slots < K
        better = ((tv[None, :] > tv[:, None]) | ((tv[None, :] == tv[:, None]) & (ti[None, :] < ti[:, None]))) \
            & ok[None, :]
        rank = tl.sum(better.to(tl.int32), axis=1)
        real = ti < _BIG
        base = row.to(tl.int64) * K
        tl.store(tkv_ptr + base + rank, tl.where(valid & real, (tv - mx) * scale - l1p, nan), mask=ok)
        tl.store(tki_ptr + base + rank, tl.where(valid & real, ti, -1), mask=ok)


@triton.jit
def _row_ptr(x_ptr, row, n1, s0, s1):
    r = row.to(tl.int64)
    return x_ptr + (r // n1) * s0 + (r % n1) * s1


@triton.jit
def token_stats_rows_kernel(
    x_ptr, n1, s0, s1, V, tok_ptr, inv_temp_hi, inv_temp_lo,
    lse_ptr, maxlp_ptr, lp_ptr, ent_ptr, margin_ptr, coll_ptr, kurt_ptr, sc_ptr, argmax_ptr, tkv_ptr, tki_ptr,
    rt_ptr, fr_ptr, CHUNK, BLOCK: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, HAS_TOKENS: tl.constexpr,
    ACC: tl.constexpr, PRECISE: tl.constexpr, FRAC: tl.constexpr,
):
    """One program per row: fold the row's chunks in order, then write every statistic."""
    row = tl.program_id(0)
    row_ptr = _row_ptr(x_ptr, row, n1, s0, s1)
    scale = (tl.zeros([], ACC) + inv_temp_hi) + inv_temp_lo  # 1/T as two fp32 halves: exact for fp64 rows
    m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad = _acc_empty(ACC)
    tv = tl.full([KP], float("-inf"), ACC)
    ti = tl.full([KP], _BIG, tl.int64)
    for lo in range(0, V, CHUNK):
        hi = tl.minimum(lo + CHUNK, V)
        cm, cm2, cidx, cR, cT, cQ2, cQh, cQq, csd, cnf, cn, cmean, cM2, cM3, cM4, cbad, tv, ti = _chunk_partial(
            row_ptr, lo, hi, scale, tv, ti, BLOCK, K, KP, ACC, FRAC)
        m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad = _merge(
            m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad,
            cm, cm2, cidx, cR, cT, cQ2, cQh, cQq, csd, cnf, cn, cmean, cM2, cM3, cM4, cbad, scale, FRAC)
    _finalize(row, row_ptr, m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, M2, M4, bad, tv, ti, tok_ptr, scale, V,
              lse_ptr, maxlp_ptr, lp_ptr, ent_ptr, margin_ptr, coll_ptr, kurt_ptr, sc_ptr, argmax_ptr,
              tkv_ptr, tki_ptr, rt_ptr, fr_ptr, HAS_TOKENS, K, KP, ACC, PRECISE, FRAC)


@triton.jit
def token_stats_split_kernel(
    x_ptr, n1, s0, s1, V, inv_temp_hi, inv_temp_lo, ws_f_ptr, ws_i_ptr, ws_tv_ptr, ws_ti_ptr, n_chunks,
    CHUNK, BLOCK: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, ACC: tl.constexpr, FRAC: tl.constexpr,
):
    """Stage 1 of the split path: program (row, chunk) writes the chunk's partial."""
    row = tl.program_id(0)
    c = tl.program_id(1)
    row_ptr = _row_ptr(x_ptr, row, n1, s0, s1)
    scale = (tl.zeros([], ACC) + inv_temp_hi) + inv_temp_lo  # 1/T as two fp32 halves: exact for fp64 rows
    lo = c.to(tl.int64) * CHUNK
    hi = tl.minimum(lo + CHUNK, V)
    tv = tl.full([KP], float("-inf"), ACC)
    ti = tl.full([KP], _BIG, tl.int64)
    m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad, tv, ti = _chunk_partial(
        row_ptr, lo, hi, scale, tv, ti, BLOCK, K, KP, ACC, FRAC)
    p = row.to(tl.int64) * n_chunks + c
    w = ws_f_ptr + p * _WS_FIELDS
    tl.store(w + 0, m)
    tl.store(w + 1, m2)
    tl.store(w + 2, R)
    tl.store(w + 3, T)
    tl.store(w + 4, Q2)
    tl.store(w + 5, sd)
    tl.store(w + 6, nf)
    tl.store(w + 7, n)
    tl.store(w + 8, mean)
    tl.store(w + 9, M2)
    tl.store(w + 10, M3)
    tl.store(w + 11, M4)
    tl.store(w + 12, bad.to(ACC))
    if FRAC:
        tl.store(w + 13, Qh)
        tl.store(w + 14, Qq)
    tl.store(ws_i_ptr + p, idx)
    if K > 0:
        slots = tl.arange(0, KP)
        tl.store(ws_tv_ptr + p * KP + slots, tv)
        tl.store(ws_ti_ptr + p * KP + slots, ti)


@triton.jit
def token_stats_merge_kernel(
    x_ptr, n1, s0, s1, V, tok_ptr, inv_temp_hi, inv_temp_lo, ws_f_ptr, ws_i_ptr, ws_tv_ptr, ws_ti_ptr, n_chunks,
    lse_ptr, maxlp_ptr, lp_ptr, ent_ptr, margin_ptr, coll_ptr, kurt_ptr, sc_ptr, argmax_ptr, tkv_ptr, tki_ptr,
    rt_ptr, fr_ptr, K: tl.constexpr, KP: tl.constexpr, HAS_TOKENS: tl.constexpr, ACC: tl.constexpr,
    PRECISE: tl.constexpr, FRAC: tl.constexpr,
):
    """Stage 2 of the split path: fold the row's chunk partials in column order and finalize."""
    row = tl.program_id(0)
    row_ptr = _row_ptr(x_ptr, row, n1, s0, s1)
    scale = (tl.zeros([], ACC) + inv_temp_hi) + inv_temp_lo  # 1/T as two fp32 halves: exact for fp64 rows
    m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad = _acc_empty(ACC)
    slots = tl.arange(0, KP)
    tv = tl.full([KP], float("-inf"), ACC)
    ti = tl.full([KP], _BIG, tl.int64)
    for c in range(0, n_chunks):
        p = row.to(tl.int64) * n_chunks + c
        w = ws_f_ptr + p * _WS_FIELDS
        cQh = tl.zeros([], ACC)
        cQq = tl.zeros([], ACC)
        if FRAC:
            cQh = tl.load(w + 13)
            cQq = tl.load(w + 14)
        m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad = _merge(
            m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, mean, M2, M3, M4, bad,
            tl.load(w + 0), tl.load(w + 1), tl.load(ws_i_ptr + p), tl.load(w + 2), tl.load(w + 3),
            tl.load(w + 4), cQh, cQq, tl.load(w + 5), tl.load(w + 6), tl.load(w + 7), tl.load(w + 8), tl.load(w + 9),
            tl.load(w + 10), tl.load(w + 11), tl.load(w + 12).to(tl.int32), scale, FRAC)
        if K > 0:
            cv = tl.load(ws_tv_ptr + p * KP + slots)
            ci = tl.load(ws_ti_ptr + p * KP + slots)
            tv, ti = _topk_absorb(tv, ti, cv, ci, (slots < K) & (ci < _BIG), K, KP)
    _finalize(row, row_ptr, m, m2, idx, R, T, Q2, Qh, Qq, sd, nf, n, M2, M4, bad, tv, ti, tok_ptr, scale, V,
              lse_ptr, maxlp_ptr, lp_ptr, ent_ptr, margin_ptr, coll_ptr, kurt_ptr, sc_ptr, argmax_ptr,
              tkv_ptr, tki_ptr, rt_ptr, fr_ptr, HAS_TOKENS, K, KP, ACC, PRECISE, FRAC)
