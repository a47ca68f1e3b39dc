"""Prediction-rejection ratio (PRR) and the prediction-rejection curve (docs/methods.md#prr).

Orientation: ``uncertainty`` higher = less trustworthy, ``quality`` higher = better. Rejecting the
most uncertain items first should raise the mean quality of what is kept; PRR measures how much of
the gap between a random ranking and the oracle ranking (by quality itself) an estimator closes.
Reference: LM-Polygraph ``ue_metrics/pred_rej_area.py`` (``PredictionRejectionArea``),
``ue_metric.py`` (``normalize``, ``get_random_scores``, ``normalize_metric``) and
``utils/manager.py`` (``eval_ue``); Malinin et al. 2017 / Fadeeva et al. 2023.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import check_bool
from ._common import apply_nan_policy, argsort_stable, as_float_1d, check_real, check_same_length, tie_groups

_BASELINES = ("exact", "polygraph")
_POLYGRAPH_SEED = 42
_POLYGRAPH_ITERS = 1000


def _normalize_quality(q: np.ndarray) -> np.ndarray:
    """LM-Polygraph's ``normalize``: min-max to [0, 1]; if max ≈ min (np.isclose), the range is
    (min − 1, max + 1), so a constant quality maps to 0.5."""
    lo, hi = q.min(), q.max()
    if np.isclose(lo, hi):
        lo, hi = lo - 1, hi + 1
    return (q - lo) / (hi - lo)


def _tie_averaged(u: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``t`` ordered by ascending ``u``, each run of tied ``u`` replaced by its mean: the expectation
    over all orderings of the tied items (docs/methods.md#prr-exact). A tie group is summed in input
    order (the stable sort)."""
    order = argsort_stable(u)
    ts = t[order]
    starts, sizes = tie_groups(u[order])
    if starts.shape[0] == ts.shape[0]:
        return ts
    return np.repeat(np.add.reduceat(ts, starts) / sizes, sizes)


def _area(sorted_t: np.ndarray, k: int) -> float:
    """Mean over the last ``k`` prefixes of the mean quality of the ``m`` least uncertain items
    (m = N−k+1 … N), i.e. the area under the rejection curve for rejection rates 0, 1/N, …, (k−1)/N.
    The arithmetic follows LM-Polygraph's line for line so the polygraph mode matches to the bit."""
    n = sorted_t.shape[0]
    cs = np.cumsum(sorted_t)[-k:]
    scores = (cs / np.arange(n - k + 1, n + 1))[::-1]
    return np.sum(scores) / k


def _polygraph_random(t: np.ndarray, k: int) -> float:
    """LM-Polygraph's ``get_random_scores``: ``np.random.seed(42)``, then 1000 times shuffle
    ``arange(N)`` *in place* (the shuffles compound) and score it as the uncertainty; the mean.

    Reproduced with a private ``np.random.RandomState(42)`` (the legacy global generator is a
    RandomState, so the stream is identical) and without touching numpy's global state. The scores
    of a permutation are distinct, so ``argsort(perm)`` is the inverse permutation."""
    n = t.shape[0]
    rs = np.random.RandomState(_POLYGRAPH_SEED)
    perm = np.arange(n)
    inv = np.empty_like(perm)
    ar = np.arange(n)
    vals = np.empty(_POLYGRAPH_ITERS, dtype=np.float64)
    for i in range(_POLYGRAPH_ITERS):  # a loop over the 1000 reference draws, not over items
        rs.shuffle(perm)
        inv[perm] = ar
        vals[i] = _area(t[inv], k)
    return np.mean(vals)


def _check_max_rejection(max_rejection, n: int) -> int:
    max_rejection = check_real(max_rejection, "max_rejection")
    if not 0.0 < max_rejection <= 1.0:
        raise ValueError(f"max_rejection must be in (0, 1], got {max_rejection}")
    k = int(max_rejection * n)
    if k < 1:
        raise ValueError(f"max_rejection * N must be at least 1 (max_rejection={max_rejection}, N={n})")
    return k


def prr(uncertainty, quality, *, max_rejection=1.0, normalize=True, baseline="exact", nan_policy=None) -> float:
    """Prediction-rejection ratio (LM-Polygraph ``prr`` / ``prr_normalized``; docs/methods.md#prr).

    With ``t`` = quality min-max normalised to [0, 1] (a constant quality maps to 0.5), items sorted
    by ascending uncertainty, ``cs_m`` the sum of ``t`` over the ``m`` least uncertain items and
    ``k = int(max_rejection · N)``::

        PRR_raw  = (1/k) Σ_{m=N−k+1..N} cs_m / m            # area under the rejection curve
        PRR      = (PRR_raw − PRR_rand) / (PRR_oracle − PRR_rand)

    ``PRR_oracle`` ranks by ``−quality``. Higher is better: 1 = oracle, 0 = random, < 0 = worse
    than random.

    Args:
        uncertainty: ``[N]``, higher = less trustworthy.
        quality: ``[N]``, higher = better (any scale; only its min-max normalisation matters).
        max_rejection: rejection rates 0 … max_rejection enter the area (LM-Polygraph ``prr_0.5`` is
            ``max_rejection=0.5``); ``int(max_rejection·N)`` must be ≥ 1.
        normalize: False returns ``PRR_raw`` (the area, in normalised-quality units).
        baseline:
            ``"exact"`` (default): ``PRR_rand = mean(t)``, the exact expectation of a random ranking;
            tied uncertainties are averaged over all their orderings (so the result does not
            depend on input order); no RNG. If ``PRR_oracle == PRR_rand`` (constant quality, or
            N = 1) the normalised value is NaN.
            ``"polygraph"``: LM-Polygraph's numbers: the ranking is numpy's default ``np.argsort``,
            the very call LM-Polygraph makes, so tied uncertainties fall in the order it gives them
            on the same numpy and machine (that order is not stable and may differ between numpy
            builds: use ``"exact"`` for a tie rule that does not), and ``PRR_rand`` is the mean over LM-Polygraph's 1000 shuffles
            after seed 42, reproduced to the last bit with a private RandomState (numpy's global
            random state is left alone). When ``PRR_oracle == PRR_rand`` the reference skips the
            normalisation and reports the raw area; so does this mode.
        nan_policy: ``"raise"``, ``"omit"`` or ``"polygraph"`` (see ``flashuq.metrics``); the default
            is ``"polygraph"`` with ``baseline="polygraph"`` (a NaN uncertainty becomes −1e7, the most
            confident; NaN qualities are dropped) and ``"raise"`` otherwise.

    Returns:
        A Python float.
    """
    if baseline not in _BASELINES:
        raise ValueError(f"baseline must be one of {_BASELINES}, got {baseline!r}")
    normalize = check_bool(normalize, "normalize")
    if nan_policy is None:
        nan_policy = "polygraph" if baseline == "polygraph" else "raise"
    u = as_float_1d(uncertainty, "uncertainty")
    q = as_float_1d(quality, "quality")
    check_same_length(u, q, "uncertainty", "quality")
    u, q = apply_nan_policy(u, q, nan_policy)
    n = u.shape[0]
    k = _check_max_rejection(max_rejection, n)
    t = _normalize_quality(q)

    if baseline == "polygraph":
        raw = _area(t[np.argsort(u)], k)  # LM-Polygraph's call, default (non-stable) kind
        if not normalize:
            return float(raw)
        oracle = _area(t[np.argsort(-q)], k)
        rand = _polygraph_random(t, k)
        if oracle == rand:
            return float(raw)
        return float((raw - rand) / (oracle - rand))

    raw = _area(_tie_averaged(u, t), k)
    if not normalize:
        return float(raw)
    oracle = _area(np.sort(t)[::-1], k)
    rand = np.mean(t)
    if not oracle > rand:
        return float("nan")
    return float((raw - rand) / (oracle - rand))


class RejectionCurve(NamedTuple):
    """The prediction-rejection curve, one point per rejection rate ``i/N`` (i = 0 … N−1).

    ``quality[i]`` is the mean quality (caller's units) of the ``N − i`` least uncertain items, tied
    uncertainties averaged over their orderings; ``oracle`` ranks by quality itself, ``random`` is
    its expectation under a random ranking (the overall mean, constant). The normalised PRR equals
    ``(mean(quality) − mean(random)) / (mean(oracle) − mean(random))``.
    """

    rejection_rate: np.ndarray
    quality: np.ndarray
    oracle: np.ndarray
    random: np.ndarray


def rejection_curve(uncertainty, quality, *, nan_policy="raise") -> RejectionCurve:
    """The prediction-rejection curve behind :func:`prr` (exact tie handling).

    Args:
        uncertainty: ``[N]``, higher = less trustworthy.
        quality: ``[N]``, higher = better.
        nan_policy: ``"raise"`` (default), ``"omit"`` or ``"polygraph"``.

    Returns:
        :class:`RejectionCurve` of four float64 numpy arrays ``[N]``.
    """
    u = as_float_1d(uncertainty, "uncertainty")
    q = as_float_1d(quality, "quality")
    check_same_length(u, q, "uncertainty", "quality")
    u, q = apply_nan_policy(u, q, nan_policy)
    n = u.shape[0]
    m = np.arange(1, n + 1)
    curve = (np.cumsum(_tie_averaged(u, q)) / m)[::-1]
    oracle = (np.cumsum(np.sort(q)[::-1]) / m)[::-1]
    rand = np.full(n, np.mean(q))
    return RejectionCurve(np.arange(n) / n, np.ascontiguousarray(curve), np.ascontiguousarray(oracle), rand)


def risk_coverage_auc(uncertainty, quality, *, normalize=True, ties="average", nan_policy="raise") -> float:
    """Area under the risk-coverage curve (LM-Polygraph ``RiskCoverageCurveAUC``, "rcc-auc"; docs/methods.md#other-ranking-metrics).

    Items by ascending uncertainty; ``risk = 1 − normalised quality`` (LM-Polygraph's min-max);
    the cumulative risk, divided by the number of items covered when ``normalize``; its mean.
    Lower is better. With ``normalize`` it equals ``1 − prr(..., normalize=False)``.

    Args:
        ties: ``"average"`` (default): tied uncertainties averaged over their orderings, so the
            result does not depend on input order; ``"polygraph"``: ties keep input order, as
            LM-Polygraph's stable ``list.sort`` leaves them (its number to the last bit).
        nan_policy: ``"raise"``, ``"omit"`` or ``"polygraph"``.

    Returns:
        A Python float.
    """
    if ties not in ("average", "polygraph"):
        raise ValueError(f"ties must be 'average' or 'polygraph', got {ties!r}")
    normalize = check_bool(normalize, "normalize")
    u = as_float_1d(uncertainty, "uncertainty")
    q = as_float_1d(quality, "quality")
    check_same_length(u, q, "uncertainty", "quality")
    u, q = apply_nan_policy(u, q, nan_policy)
    risk = 1 - _normalize_quality(q)
    ordered = _tie_averaged(u, risk) if ties == "average" else risk[argsort_stable(u)]
    cum = np.cumsum(ordered)
    if normalize:
        cum = cum / np.arange(1, u.shape[0] + 1)
    return float(cum.mean())
