"""risk_coverage_auc, reversed_pairs_proportion (LM-Polygraph, docs/methods.md#other-ranking-metrics), ap_ratio_prr and
isotonic_brier (Inv-Entropy, docs/methods.md#inv-entropy-evaluation): against direct transcriptions and scikit-learn."""

import itertools

import numpy as np
import pytest

import flashuq as fuq
from _polygraph_ref import normalize

M = fuq.metrics


def rcc_reference(estimator, target, norm=True):
    """LM-Polygraph RiskCoverageCurveAUC, transcribed: a stable Python sort of (ue, risk) pairs."""
    risk = 1 - normalize(target)
    pairs = sorted(zip(estimator, risk), key=lambda x: x[0])
    cum = np.cumsum([r for _, r in pairs])
    if norm:
        cum = cum / np.arange(1, len(estimator) + 1)
    return cum.mean()


def rpp_reference(estimator, target):
    """LM-Polygraph ReversedPairsProportion, transcribed (O(N²))."""
    conf, target = -np.asarray(estimator), np.asarray(target)
    return np.mean([np.logical_and(conf > conf[i], target < target[i]).mean() for i in range(len(conf))])


def data(n, seed, ties):
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(0, 5, n).astype(float), rng.integers(0, 4, n).astype(float)
    return rng.normal(size=n), rng.random(n)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [1, 2, 9, 300])
@pytest.mark.parametrize("norm", [True, False])
def test_risk_coverage_auc_polygraph_is_the_reference(n, ties, norm):
    u, q = data(n, n, ties)
    assert M.risk_coverage_auc(u, q, normalize=norm, ties="polygraph") == rcc_reference(u, q, norm)


def test_risk_coverage_auc_average_over_orderings_and_prr_identity():
    u, q = data(7, 3, True)
    vals = [rcc_reference(u[np.array(p)], q[np.array(p)]) for p in itertools.permutations(range(7))]
    assert M.risk_coverage_auc(u, q) == pytest.approx(np.mean(vals), rel=1e-12)
    u, q = data(500, 4, True)
    assert M.risk_coverage_auc(u, q) == pytest.approx(1 - M.prr(u, q, normalize=False), rel=1e-12)
    p = np.random.default_rng(0).permutation(500)
    assert M.risk_coverage_auc(u[p], q[p]) == pytest.approx(M.risk_coverage_auc(u, q), rel=1e-12)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [1, 2, 10, 400])
def test_reversed_pairs_proportion_matches_reference(n, ties):
    u, q = data(n, 10 + n, ties)
    assert M.reversed_pairs_proportion(u, q) == pytest.approx(rpp_reference(u, q), rel=1e-12, abs=1e-15)


def test_reversed_pairs_extremes():
    q = np.arange(10.0)
    assert M.reversed_pairs_proportion(-q, q) == 0.0                # perfect: uncertainty falls as quality rises
    assert M.reversed_pairs_proportion(q, q) == pytest.approx(45 / 100)  # every pair reversed


@pytest.mark.parametrize("seed", range(3))
def test_ap_ratio_prr_matches_sklearn(seed):
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    u = np.round(rng.random(400), 1)  # many ties
    y = (rng.random(400) < 0.4).astype(int)
    want = skm.average_precision_score(y, 1 - u) / skm.average_precision_score(y, y)
    assert M.ap_ratio_prr(u, y) == pytest.approx(want, rel=1e-12)
    assert np.isnan(M.ap_ratio_prr(u, np.zeros(400)))


@pytest.mark.parametrize("seed", range(3))
def test_isotonic_brier_matches_sklearn(seed):
    iso = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(seed)
    conf = np.round(rng.random(500), 2)  # ties in the confidence
    y = (rng.random(500) < conf).astype(float)
    fit = iso.IsotonicRegression().fit_transform(conf, y)
    assert M.isotonic_brier(conf, y) == pytest.approx(np.mean((fit - y) ** 2), rel=1e-12)
    # a monotone, already calibrated 0/1 pattern is fitted exactly
    assert M.isotonic_brier([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0


def test_isotonic_pav_binding_checks():
    y = np.array([3.0, 1.0, 2.0])
    out = np.empty(3)
    fuq._ext._C.isotonic_pav(y, np.ones(3), out)
    np.testing.assert_allclose(out, [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        fuq._ext._C.isotonic_pav(y, np.array([1.0, 0.0, 1.0]), out)
    with pytest.raises(ValueError, match="sizes"):
        fuq._ext._C.isotonic_pav(y, np.ones(2), out)
    with pytest.raises(TypeError):  # a wrong dtype is a TypeError, as everywhere
        fuq._ext._C.isotonic_pav(y.astype(np.float32), np.ones(3), out)
    with pytest.raises(ValueError, match="contiguous"):
        fuq._ext._C.isotonic_pav(np.arange(6.0)[::2], np.ones(3), out)


def test_bad_arguments():
    u, q = data(10, 0, False)
    with pytest.raises(ValueError, match="ties"):
        M.risk_coverage_auc(u, q, ties="stable")
    with pytest.raises(ValueError, match="quality"):
        M.reversed_pairs_proportion(u, q[:-1])
    with pytest.raises(ValueError, match="correct"):
        M.isotonic_brier(u, q * 3)
    for fn in (M.risk_coverage_auc, M.reversed_pairs_proportion, M.isotonic_brier):
        with pytest.raises(ValueError, match="no items"):
            fn([], [])
