"""flashuq.metrics.abstention_threshold (Learn then Test, docs/abstention.md): the binomial tail
against scipy, known answers worked out with exact integer arithmetic, and the guarantee itself
checked empirically: over hundreds of calibration draws from a known population, the share of
thresholds whose kept answers' error rate exceeds α stays within δ (plus the check's own binomial
slack)."""

import json
import math
import pathlib
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats as st

from flashuq import metrics
from flashuq.metrics.abstention import binom_cdf, start_count

HERE = pathlib.Path(__file__).parent


@pytest.mark.parametrize("k", [1, 2, 7, 50, 300, 2000])
@pytest.mark.parametrize("p", [0.001, 0.05, 0.2, 0.5, 0.9])
def test_binomial_tail_equals_scipy(k, p):
    for e in sorted({0, 1, k // 10, k // 3, k // 2, k - 1, k}):
        assert binom_cdf(e, k, p) == pytest.approx(st.binom.cdf(e, k, p), rel=1e-10, abs=1e-300)


def exact_cdf(e, k, p: Fraction) -> Fraction:
    return sum(Fraction(math.comb(k, i)) * p ** i * (1 - p) ** (k - i) for i in range(e + 1))


def first_count(alpha: Fraction, delta: Fraction) -> int:
    """k_start in exact arithmetic: the least k at which floor(k α / 2) errors are certified."""
    k = 1
    while exact_cdf(math.floor(k * alpha / 2), k, alpha) > delta:
        k += 1
    return k


def fixed_sequence(wrong_sorted, alpha: Fraction, delta: Fraction):
    """The test's own transcription: kept counts k_start..N in order (distinct scores), binomial
    p-values in exact rationals, stop at the first p > δ; returns the last rejected kept count (0: none)."""
    best, e = 0, 0
    k0 = first_count(alpha, delta)
    for k, w in enumerate(wrong_sorted, start=1):
        e += w
        if k < k0:
            continue
        if exact_cdf(e, k, alpha) > delta:
            break
        best = k
    return best


def test_known_answers():
    # α = δ = 0.1: one error in k is certified from k = 38 on (P(Bin(38, 0.1) <= 1) = 0.0969)
    assert first_count(Fraction(1, 10), Fraction(1, 10)) == start_count(0.1, 0.1) == 38
    assert first_count(Fraction(3, 10), Fraction(1, 20)) == start_count(0.3, 0.05)
    u = np.arange(40) / 40.0
    # 40 right answers: 0.9^40 = 0.015 <= 0.1, everything is kept
    r = metrics.abstention_threshold(u, np.ones(40, bool), risk=0.1, delta=0.1)
    assert (r.kept, r.errors, r.threshold, r.coverage) == (40, 0, u[-1], 1.0)
    assert r.p_value == pytest.approx(0.9 ** 40)
    # 30 right answers (0.9^30 = 0.042 would pass): fewer than k_start, always abstain
    r = metrics.abstention_threshold(u[:30], np.ones(30, bool), risk=0.1, delta=0.1)
    assert (r.kept, r.threshold, r.coverage) == (0, -math.inf, 0.0) and math.isnan(r.risk_hat)
    # errors spread along the ranking: the transcription in exact arithmetic decides
    rng = np.random.default_rng(5)
    for trial in range(20):
        n = 120
        u = rng.permutation(n).astype(float)
        rank = np.argsort(np.argsort(u)) / n  # errors grow likelier down the ranking
        wrong = (rng.uniform(size=n) < 0.4 * rank).astype(int)
        for alpha, delta in ((Fraction(1, 10), Fraction(1, 10)), (Fraction(1, 5), Fraction(1, 20))):
            want = fixed_sequence(wrong[np.argsort(u)].tolist(), alpha, delta)
            got = metrics.abstention_threshold(u, 1 - wrong, risk=float(alpha), delta=float(delta), grid=None)
            assert got.kept == want, (trial, alpha, delta)
            if want:
                assert got.threshold == np.sort(u)[want - 1]
                assert got.errors == wrong[np.argsort(u)][:want].sum()


def test_coverage_grid():
    # grid=4 on 100 distinct scores: only thresholds keeping 25, 50, 75 or 100 answers are tried
    u = np.arange(100.0)
    correct = np.ones(100, bool)
    correct[[60, 90]] = False
    r = metrics.abstention_threshold(u, correct, risk=0.1, delta=0.1, grid=4)
    assert r.kept == 100 and r.errors == 2
    assert metrics.abstention_threshold(u, correct, risk=0.1, delta=0.1, grid=None).kept == 100
    r = metrics.abstention_threshold(u, correct, risk=0.02, delta=0.1, grid=4)
    assert r.kept == 0 or r.kept in (25, 50, 75)
    for grid in (0, -1):
        with pytest.raises(ValueError, match="grid"):
            metrics.abstention_threshold(u, correct, risk=0.1, grid=grid)
    for grid in (2.5, True, "4"):  # not an int: the same TypeError as everywhere (tests/test_checks.py)
        with pytest.raises(TypeError, match="grid"):
            metrics.abstention_threshold(u, correct, risk=0.1, grid=grid)


def test_ties_are_kept_or_dropped_together():
    u = np.array([0.1] * 40 + [0.2] * 10 + [0.3] * 50)
    correct = np.array([1] * 40 + [1] * 9 + [0] + [0] * 50, dtype=bool)
    r = metrics.abstention_threshold(u, correct, risk=0.1, delta=0.1)
    assert r.threshold == 0.2 and r.kept == 50 and r.errors == 1  # never 45 of the 50 at <= 0.2


@pytest.mark.parametrize("bound", ["binomial", "hoeffding_bentkus"])
def test_guarantee_on_a_known_population(bound):
    # U ~ Uniform(0, 1), P(wrong | U) = U: the error rate of the answers kept by t is t / 2
    alpha, delta, n, trials = 0.2, 0.1, 300, 400
    rng = np.random.default_rng(11)
    exceed, coverage = 0, []
    for _ in range(trials):
        u = rng.uniform(size=n)
        correct = rng.uniform(size=n) >= u
        r = metrics.abstention_threshold(u, correct, risk=alpha, delta=delta, bound=bound)
        pop_risk = min(r.threshold, 1.0) / 2 if r.kept else 0.0
        exceed += pop_risk > alpha
        coverage.append(min(max(r.threshold, 0.0), 1.0))
    slack = 3 * math.sqrt(delta * (1 - delta) / trials)
    assert exceed / trials <= delta + slack
    # and it keeps answers (the ideal, knowing the population: 40%; Hoeffding-Bentkus is looser)
    assert np.mean(coverage) > (0.15 if bound == "binomial" else 0.08)


def test_guarantee_on_the_bundled_questions():
    # msp and correctness of SmolLM2-135M-Instruct's greedy answers to the 202 bundled questions
    # (flashuq demo, cached once): calibration sets drawn from them with replacement, the risk of a
    # threshold measured on all 202 (the population of the draws)
    cached = json.loads((HERE / "data" / "demo_msp.json").read_text())
    u, correct = np.array(cached["msp"]), np.array(cached["correct"], bool)
    alpha, delta, trials = 0.3, 0.1, 300
    rng = np.random.default_rng(2)
    exceed, kept = 0, []
    for _ in range(trials):
        idx = rng.integers(0, u.size, u.size)
        r = metrics.abstention_threshold(u[idx], correct[idx], risk=alpha, delta=delta)
        keep = u <= r.threshold
        exceed += keep.any() and (1 - correct[keep].mean()) > alpha
        kept.append(keep.mean())
    assert exceed / trials <= delta + 3 * math.sqrt(delta * (1 - delta) / trials)
    assert np.mean(kept) > 0.1


def test_bad_arguments():
    u, c = np.array([0.1, 0.2]), np.array([1, 0])
    for risk in (0, 1, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="risk"):
            metrics.abstention_threshold(u, c, risk=risk)
    for risk in ("0.1", None, True):
        with pytest.raises(TypeError, match="risk"):
            metrics.abstention_threshold(u, c, risk=risk)
    with pytest.raises(ValueError, match="delta"):
        metrics.abstention_threshold(u, c, risk=0.1, delta=1.0)
    with pytest.raises(ValueError, match="bound"):
        metrics.abstention_threshold(u, c, risk=0.1, bound="hoeffding")
    with pytest.raises(ValueError, match="NaN"):
        metrics.abstention_threshold([0.1, math.nan], c, risk=0.1)
    with pytest.raises(ValueError, match="correct"):
        metrics.abstention_threshold(u, [1, 0.5], risk=0.1)
    with pytest.raises(ValueError, match="same length"):
        metrics.abstention_threshold(u, [1], risk=0.1)
    assert metrics.abstention_threshold([], [], risk=0.1).kept == 0
