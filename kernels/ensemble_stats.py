"""Triton kernel for ``flashuq.ensemble_stats``: the ensemble decomposition of docs/methods.md#ensemble.

One program per position works on ``[MP, BLOCK]`` tiles (all members, BLOCK columns; MP = M
rounded up to a power of two) and reads the members' logits twice:

1. per member, the shifted online accumulator of docs/numerics.md#accumulator restricted to (max, R, T):
   ``log P_mv = (z_mv - max_m)/T - log1p(R_m)`` and ``H_m = log1p(R_m) - T_m/(1 + R_m)``;
2. per column, ``log p̄_v = logsumexp_m(log w_m + log P_mv)`` and ``r_mv = log P_mv - log p̄_v``,
   accumulating ``MI = Σ_v p̄_v Σ_m w_m φ(r_mv)`` and ``RMI = Σ_v p̄_v Σ_m w_m ψ(r_mv)`` with
   ``φ(r) = 1 + e^r (r - 1)`` and ``ψ(r) = e^r - 1 - r``, both >= 0 (Taylor series for |r| < 1/2).

Then TU = AU + MI and EPKL - AU = MI + RMI: sums of non-negative terms, nothing cancels. Blocks
are folded in column order (deterministic), no atomics, no autotuning, and no libdevice outside
the PRECISE (GPU) branch, so it also runs under ``TRITON_INTERPRET=1``.
"""

import triton
import triton.language as tl

from .token_stats import _log, _log1p

_BIG = tl.constexpr(2**62)  # index sentinel
_SMALL = tl.constexpr(0.5)  # |r| below this: Taylor series of φ and ψ


@triton.jit
def _load_tile(rows, start, V, mok, BLOCK: tl.constexpr, ACC: tl.constexpr):
    cols = start + tl.arange(0, BLOCK).to(tl.int64)
    inb = mok[:, None] & (cols[None, :] < V)
    x = tl.load(rows + cols[None, :], mask=inb, other=float("-inf")).to(ACC)
    bad = inb & ((x != x) | (x == float("inf")))
    x = tl.where(bad, float("-inf"), x)
    return x, cols, bad


@triton.jit
def ensemble_stats_kernel(
    x_ptr, n1, s0, s1, sm, M, V, lw_ptr, lw_stride, inv_temp_hi, inv_temp_lo,
    tu_ptr, au_ptr, mi_ptr, epkl_ptr, rmi_ptr,
    BLOCK: tl.constexpr, MP: tl.constexpr, NTERMS: tl.constexpr, ACC: tl.constexpr, PRECISE: tl.constexpr,
):
    pos = tl.program_id(0).to(tl.int64)
    base = x_ptr + (pos // n1) * s0 + (pos % n1) * s1
    scale = (tl.zeros([], ACC) + inv_temp_hi) + inv_temp_lo  # 1/T as two fp32 halves: exact for fp64
    mem = tl.arange(0, MP)
    mok = mem < M
    rows = base + mem.to(tl.int64)[:, None] * sm  # [MP, 1] member row pointers
    lw = tl.load(lw_ptr + pos * lw_stride + mem, mask=mok, other=float("-inf")).to(ACC)
    lw_nan = tl.sum((mok & (lw != lw)).to(tl.int32))
    lw = tl.where(lw != lw, float("-inf"), lw)
    w = tl.where(lw > float("-inf"), tl.exp(lw), 0.0)
    wok = w > 0.0

    # ---- pass 1: (max, R, T) per member, blocks folded in column order
    m = tl.full([MP], float("-inf"), ACC)
    R = tl.zeros([MP], ACC)
    T = tl.zeros([MP], ACC)
    nbad = tl.zeros([MP], tl.int32)
    for start in range(0, V, BLOCK):
        x, cols, bad = _load_tile(rows, start, V, mok, BLOCK, ACC)
        nbad += tl.sum(bad.to(tl.int32), axis=1)
        bm = tl.max(x, axis=1)
        bidx = tl.min(tl.where(x == bm[:, None], cols[None, :], _BIG), axis=1)
        fin = x > float("-inf")
        bm_s = tl.where(bm > float("-inf"), bm, 0.0)  # no -inf - -inf, even in unselected lanes
        d = tl.where(fin, (x - bm_s[:, None]) * scale, 0.0)
        e = tl.where(fin, tl.exp(d), 0.0)
        bR = tl.sum(tl.where(cols[None, :] == bidx[:, None], 0.0, e), axis=1)  # the max's 1 stays implicit
        bT = tl.sum(tl.where(e > 0.0, e * d, 0.0), axis=1)
        # merge (docs/numerics.md#merge): the running partial covers earlier columns, so it wins ties
        b_top = bm > m
        Xm = tl.where(b_top, bm, m)
        XR = tl.where(b_top, bR, R)
        XT = tl.where(b_top, bT, T)
        Ym = tl.where(b_top, m, bm)
        YR = tl.where(b_top, R, bR)
        YT = tl.where(b_top, T, bT)
        y_has = Ym > float("-inf")
        delta = tl.where(y_has, (Ym - tl.where(y_has, Xm, 0.0)) * scale, 0.0)  # Xm >= Ym > -inf
        c = tl.where(y_has, tl.exp(delta), 0.0)
        SY = tl.where(y_has, 1.0 + YR, 0.0)
        R = XR + c * SY
        T = tl.where(c > 0.0, XT + c * (YT + delta * SY), XT)
        m = Xm
    member_ok = (nbad == 0) & (m > float("-inf"))
    n_invalid = tl.sum((mok & ~member_ok).to(tl.int32)) + lw_nan
    l1p = _log1p(R, PRECISE)
    H = l1p - T / (1.0 + R)  # both terms >= 0
    AU = tl.sum(tl.where(wok & member_ok, w * H, 0.0))
    mx = tl.where(m > float("-inf"), m, 0.0)
    l1p = tl.where(member_ok, l1p, 0.0)

    # ---- pass 2: the members' log-probabilities column by column
    MI = tl.zeros([], ACC)
    RMI = tl.zeros([], ACC)
    for start in range(0, V, BLOCK):
        x, cols, bad = _load_tile(rows, start, V, mok, BLOCK, ACC)
        lp = tl.where(x > float("-inf"), (x - mx[:, None]) * scale - l1p[:, None], float("-inf"))
        use = wok[:, None] & (lp > float("-inf"))
        a = tl.where(use, lw[:, None] + lp, float("-inf"))
        amax = tl.max(a, axis=0)
        live = amax > float("-inf")  # p̄_v > 0
        amax_s = tl.where(live, amax, 0.0)
        S = tl.sum(tl.where(use, tl.exp(a - amax_s[None, :]), 0.0), axis=0)  # >= 1 where live
        lpbar = amax_s + _log(tl.where(live, S, 1.0), PRECISE)
        pbar = tl.where(live, tl.exp(lpbar), 0.0)
        r = tl.where(use, lp - lpbar[None, :], 0.0)
        small = tl.abs(r) < _SMALL
        rs = tl.where(small, r, 0.0)
        # φ(r)/r² = Σ_k r^k (k+1)/(k+2)!, ψ(r)/r² = Σ_k r^k/(k+2)!, in nested (Horner) form
        tphi = tl.full([MP, BLOCK], 1.0, ACC)
        tpsi = tl.full([MP, BLOCK], 1.0, ACC)
        for i in tl.static_range(NTERMS, 0, -1):
            tphi = 1.0 + tphi * rs * ((i + 1) / (i * (i + 2)))
            tpsi = 1.0 + tpsi * rs * (1.0 / (i + 2))
        wr2 = w[:, None] * rs * rs * 0.5
        rl = tl.where(small, 0.0, r)
        q = tl.where(use & ~small, tl.exp(lw[:, None] + rl), 0.0)  # w_m P_mv / p̄_v <= 1
        wphi = tl.where(small, wr2 * tphi, w[:, None] + q * (rl - 1.0))
        wpsi = tl.where(small, wr2 * tpsi, (q - w[:, None]) - w[:, None] * rl)
        zero_p = wok[:, None] & (lp == float("-inf")) & live[None, :]  # P_mv = 0 < p̄_v: φ = 1, ψ = +inf
        wphi = tl.where(use, wphi, tl.where(zero_p, w[:, None], 0.0))
        wpsi = tl.where(use, wpsi, 0.0)
        col_phi = tl.sum(wphi, axis=0)
        col_psi = tl.sum(wpsi, axis=0)
        col_inf = tl.sum(zero_p.to(tl.int32), axis=0) > 0
        MI += tl.sum(tl.where(live, pbar * col_phi, 0.0))
        RMI += tl.sum(tl.where(live & col_inf, float("inf"), tl.where(live, pbar * col_psi, 0.0)))

    valid = n_invalid == 0
    nan = float("nan")
    tl.store(tu_ptr + pos, tl.where(valid, AU + MI, nan))
    tl.store(au_ptr + pos, tl.where(valid, AU, nan))
    tl.store(mi_ptr + pos, tl.where(valid, MI, nan))
    tl.store(epkl_ptr + pos, tl.where(valid, MI + RMI, nan))
    tl.store(rmi_ptr + pos, tl.where(valid, RMI, nan))
