"""Calibrated abstention: an uncertainty threshold whose kept answers have a guaranteed error rate
(docs/abstention.md).

Answer when ``uncertainty <= threshold``, abstain otherwise. :func:`abstention_threshold` picks the
threshold on a labelled calibration set with Learn then Test (Angelopoulos, Bates, Candès, Jordan and
Lei 2021, arXiv 2110.01052): one null hypothesis per candidate threshold, ``H_t: R(t) > α``, where
``R(t) = P(wrong | uncertainty <= t)`` is the error rate among the answers kept; a p-value for each
from the ``k_t`` kept calibration answers and their ``e_t`` errors (the kept answers are, given their
number, i.i.d. draws of the kept population); fixed-sequence testing from the strictest threshold
towards the most permissive, which controls the family-wise error at δ without a correction. The
threshold returned is the most permissive one rejected: with probability at least ``1 − δ`` over the
calibration draw, the error rate of the answers it keeps is at most ``α``.

p-values (``bound``):

- ``"binomial"`` (default, exact for 0/1 errors): ``p = P(Binomial(k, α) <= e)``;
- ``"hoeffding_bentkus"``: LTT's Hoeffding–Bentkus p-value,
  ``p = min(exp(-k · h(min(e/k, α), α)), e · P(Binomial(k, α) <= ceil(e)))``,
  ``h(a, b) = a log(a/b) + (1 − a) log((1 − a)/(1 − b))``, valid for any loss in [0, 1].

Candidates are ``grid`` coverage levels (default 50: the thresholds that keep 1/50, 2/50, … of the
calibration answers, a tie kept or dropped whole; ``grid=None``: every distinct uncertainty), from the
first that keeps at least ``k_start`` answers: the least number at which a set with half the target
error rate, ``floor(k α / 2)`` errors, would be certified (``P(Binomial(k, α) <= floor(k α / 2)) <= δ``).
``k_start`` depends on α and δ only, not on the data. The fixed sequence ends at its first failure, and
a start among a handful of answers would end it on the noise of one early error; the coarse grid
helps for the same reason (docs/abstention.md has the simulations).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

from .._checks import check_int, check_real
from ._common import argsort_stable, as_float_1d, check_same_length

BOUNDS = ("binomial", "hoeffding_bentkus")


class AbstentionThreshold(NamedTuple):
    """The selected threshold and what it does on the calibration set."""

    threshold: float   #: answer when uncertainty <= threshold (-inf: always abstain)
    coverage: float    #: share of the calibration answers kept
    kept: int          #: calibration answers kept
    errors: int        #: of which wrong
    risk_hat: float    #: errors / kept (NaN when nothing is kept)
    p_value: float     #: of the selected threshold's null hypothesis (NaN when none was rejected)
    n: int             #: calibration answers
    risk: float        #: the target α
    delta: float       #: the allowed failure probability δ
    bound: str


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def binom_cdf(e: int, k: int, p: float) -> float:
    """``P(Binomial(k, p) <= e)`` (via ``I_{1-p}(k - e, e + 1)``)."""
    if e < 0:
        return 0.0
    if e >= k:
        return 1.0
    return _betainc(k - e, e + 1.0, 1.0 - p)


def _p_value(e: int, k: int, alpha: float, bound: str) -> float:
    if bound == "binomial":
        return binom_cdf(e, k, alpha)
    r = min(e / k, alpha)
    h = (r * math.log(r / alpha) if r > 0 else 0.0) + (1 - r) * math.log((1 - r) / (1 - alpha))
    return min(math.exp(-k * h), math.e * binom_cdf(math.ceil(e), k, alpha))


def start_count(alpha: float, delta: float) -> int:
    """``k_start``: the least k with ``P(Binomial(k, α) <= floor(k α / 2)) <= δ``."""
    k = max(1, math.ceil(math.log(delta) / math.log1p(-alpha) - 1e-12))  # (1-α)^k <= δ: none below
    while binom_cdf(math.floor(k * alpha / 2), k, alpha) > delta:
        k += 1
    return k


def _probability(name: str, v) -> float:
    return check_real(v, name, 0.0, 1.0, lo_open=True, hi_open=True)


def abstention_threshold(uncertainty, correct, *, risk: float, delta: float = 0.1,
                         bound: str = "binomial", grid: Optional[int] = 50) -> AbstentionThreshold:
    """The most permissive uncertainty threshold whose kept answers have error rate <= ``risk``
    with probability >= ``1 - delta`` over the calibration draw (Learn then Test; module docstring).

    Args:
        uncertainty: [N] uncertainty of each calibration answer (higher = less trustworthy; NaN not allowed).
        correct: [N] whether each answer is right (bool or 0/1).
        risk: α, the highest acceptable error rate among kept answers.
        delta: δ, the allowed probability that the calibration draw gives a threshold above that.
        bound: ``"binomial"`` or ``"hoeffding_bentkus"`` p-values.
        grid: the number of coverage levels tried (None: every distinct uncertainty).
    """
    alpha = _probability("risk", risk)
    delta = _probability("delta", delta)
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
    if grid is not None:
        grid = check_int(grid, "grid", 1)
    u = as_float_1d(uncertainty, "uncertainty")
    c = as_float_1d(correct, "correct")
    check_same_length(u, c, "uncertainty", "correct")
    if np.isnan(u).any():
        raise ValueError("uncertainty must not contain NaN (a method that failed on an answer cannot rank it)")
    if not np.isin(c, (0.0, 1.0)).all():
        raise ValueError("correct must be 0/1 or bool")
    n = u.size
    none = AbstentionThreshold(-math.inf, 0.0, 0, 0, math.nan, math.nan, n, alpha, delta, bound)
    if n == 0:
        return none
    order = argsort_stable(u)
    us, wrong = u[order], 1.0 - c[order]
    last = np.r_[us[1:] != us[:-1], True]        # the last position of each distinct value: ties go together
    kept = np.nonzero(last)[0] + 1                 # answers kept at each distinct threshold
    if grid is not None and grid < kept.size:      # the first distinct threshold keeping >= j n / grid
        want = np.ceil(np.arange(1, grid + 1) * n / grid)
        kept = np.unique(kept[np.searchsorted(kept, want)])
    errors = np.cumsum(wrong)[kept - 1]
    k_start = start_count(alpha, delta)
    best = none
    for t, k, e in zip(us[kept - 1], kept, errors):
        if k < k_start:
            continue
        p = _p_value(int(e), int(k), alpha, bound)
        if p > delta:
            break  # fixed sequence: the first hypothesis not rejected ends the test
        best = AbstentionThreshold(float(t), float(k) / n, int(k), int(e), float(e) / float(k), p, n, alpha, delta, bound)
    return best


__all__ = ["AbstentionThreshold", "BOUNDS", "abstention_threshold", "binom_cdf", "start_count"]
