"""Rank correlation of uncertainty with quality (LM-Polygraph ``spearmanr.py``, ``kendalltau.py``; docs/methods.md#rank-correlation).

Orientation as LM-Polygraph: the correlation of ``uncertainty`` with ``−quality``, so higher is
better (+1 = uncertainty ranks the items exactly in reverse order of quality). Both are
tie-corrected: Spearman's rho is the Pearson correlation of average ranks
(``scipy.stats.spearmanr(u, −q).statistic``), Kendall's is tau-b
(``scipy.stats.kendalltau(u, −q).statistic``). Kendall's discordant pairs are counted in
O(N log N) by a merge sort in C++ over the quality ranks.
"""

from __future__ import annotations

import numpy as np

from .. import _ext
from ._common import apply_nan_policy, argsort_stable, as_float_1d, check_same_length, rankdata_average, tie_groups


def _pair_inputs(uncertainty, quality, nan_policy):
    u = as_float_1d(uncertainty, "uncertainty")
    q = as_float_1d(quality, "quality")
    check_same_length(u, q, "uncertainty", "quality")
    return apply_nan_policy(u, q, nan_policy)


def spearman(uncertainty, quality, *, nan_policy="raise") -> float:
    """Spearman's rho between ``uncertainty`` and ``−quality`` (average ranks for ties).

    Returns:
        A Python float in [−1, 1]; NaN when N < 2 or either input is constant (as scipy).
    """
    u, q = _pair_inputs(uncertainty, quality, nan_policy)
    if u.shape[0] < 2:
        return float("nan")
    ru = rankdata_average(u)
    rq = rankdata_average(-q)
    ru -= ru.mean()
    rq -= rq.mean()
    den = np.sqrt(np.dot(ru, ru) * np.dot(rq, rq))
    if den == 0:
        return float("nan")
    return float(np.clip(np.dot(ru, rq) / den, -1.0, 1.0))


def _dense_ranks(x: np.ndarray) -> np.ndarray:
    """0-based dense ranks (equal values share one rank), int64."""
    order = argsort_stable(x)
    xs = x[order]
    new = np.empty(x.shape[0], dtype=np.int64)
    new[0] = 0
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    r = np.empty(x.shape[0], dtype=np.int64)
    r[order] = np.cumsum(new)
    return r


def count_inversions(a: np.ndarray) -> int:
    """Number of pairs ``i < j`` with ``a[i] > a[j]`` (strict) of an integer sequence, exact.

    A merge sort in C++ (``flashuq._C.count_inversions``): O(N log N), one thread, deterministic.
    """
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.ndim != 1:
        raise ValueError(f"a must be 1-d, got shape {a.shape}")
    return int(_ext._C.count_inversions(a))


def _tied_pairs(sizes: np.ndarray) -> int:
    s = sizes.astype(np.int64)
    return int(np.sum(s * (s - 1) // 2))


def kendall_tau(uncertainty, quality, *, nan_policy="raise") -> float:
    """Kendall's tau-b between ``uncertainty`` and ``−quality``::

        tau_b = (n_c − n_d) / sqrt((n0 − n_u)(n0 − n_q)),   n0 = N(N−1)/2

    with ``n_u``/``n_q`` the pairs tied in uncertainty/quality (a pair tied in both is in both and is
    neither concordant nor discordant), as ``scipy.stats.kendalltau(u, −q)`` (variant "b").
    All counts are exact integers.

    Returns:
        A Python float in [−1, 1]; NaN when N < 2 or either input is constant (as scipy).
    """
    u, q = _pair_inputs(uncertainty, quality, nan_policy)
    n = u.shape[0]
    if n < 2:
        return float("nan")
    x = _dense_ranks(u)
    y = _dense_ranks(-q)
    ny = int(y.max()) + 1
    joint = x * ny + y                           # by x, ties in x by y ascending (never discordant)
    joint.sort()
    xs, ys = joint // ny, joint % ny
    dis = count_inversions(ys)                   # strict: pairs tied in y are not counted
    tot = n * (n - 1) // 2
    xtie = _tied_pairs(tie_groups(xs)[1])
    ytie = _tied_pairs(np.bincount(y))
    ntie = _tied_pairs(tie_groups(joint)[1])
    if tot == xtie or tot == ytie:
        return float("nan")
    num = tot - xtie - ytie + ntie - 2 * dis
    tau = num / np.sqrt(float(tot - xtie)) / np.sqrt(float(tot - ytie))
    return float(min(1.0, max(-1.0, tau)))


def reversed_pairs_proportion(uncertainty, quality, *, nan_policy="raise") -> float:
    """LM-Polygraph ``ReversedPairsProportion`` ("rpp"; docs/methods.md#other-ranking-metrics): the share of ordered pairs
    ``(i, j)`` where ``j`` is strictly more confident (``u_j < u_i``) yet strictly worse
    (``q_j < q_i``), over all ``N²`` ordered pairs::

        rpp = mean_i mean_j [u_j < u_i ∧ q_j < q_i]

    Lower is better. The reference loops over i (O(N²)); here the pairs are counted in O(N log N)
    as inversions of the quality ranks ordered by uncertainty (ties in uncertainty ordered so that
    they never count).

    Returns:
        A Python float in [0, 1/2].
    """
    u, q = _pair_inputs(uncertainty, quality, nan_policy)
    n = u.shape[0]
    x = _dense_ranks(u)
    y = _dense_ranks(-q)                  # a higher quality gets a smaller rank
    ny = int(y.max()) + 1
    joint = x * ny + y                    # by u ascending; tied u by quality descending: never inverted
    joint.sort()
    return count_inversions(joint % ny) / (float(n) * float(n))
