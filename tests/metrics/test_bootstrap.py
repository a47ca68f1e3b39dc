import numpy as np
import pytest

import flashuq as fuq

M = fuq.metrics


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n)
    c = (rng.random(n) < 1 / (1 + np.exp(2 * u))).astype(float)
    return u, c


def test_deterministic_and_contains_estimate():
    u, c = _data()
    a = M.bootstrap(M.roc_auc, u, c, n_resamples=200, seed=3)
    b = M.bootstrap(M.roc_auc, u, c, n_resamples=200, seed=3)
    assert a.estimate == M.roc_auc(u, c)
    assert (a.low, a.high) == (b.low, b.high)
    assert np.array_equal(a.samples, b.samples)
    assert a.low < a.estimate < a.high
    assert isinstance(a.low, float) and a.samples.shape == (200,)
    c2 = M.bootstrap(M.roc_auc, u, c, n_resamples=200, seed=4)
    assert (c2.low, c2.high) != (a.low, a.high)


def test_percentiles_and_kwargs():
    u, c = _data()
    r = M.bootstrap(M.prr, u, c, n_resamples=100, confidence=0.8, max_rejection=0.5)
    lo, hi = np.quantile(r.samples, [0.1, 0.9])
    assert (r.low, r.high) == (lo, hi)
    assert r.estimate == M.prr(u, c, max_rejection=0.5)
    # the resamples are the documented ones
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(u), size=len(u))
    assert r.samples[0] == M.prr(u[idx], c[idx], max_rejection=0.5)


def test_tuple_metric_and_nan_resamples():
    before = np.array([1, 1, 1, 0, 0, 1] * 5)
    after = np.array([0, 1, 0, 1, 0, 0] * 5)
    r = M.bootstrap(M.misleading_rate, before, after, n_resamples=50)
    assert r.estimate.shape == (2,) and r.low.shape == (2,) and r.samples.shape == (50, 2)
    assert np.all(r.low <= r.estimate) and np.all(r.estimate <= r.high)
    # one-class resamples give NaN and are ignored
    r = M.bootstrap(M.roc_auc, [0.1, 0.9], [1, 0], n_resamples=50)
    assert np.isnan(r.samples).any() and np.isfinite(r.low)


def test_validation():
    with pytest.raises(ValueError, match="first dimension"):
        M.bootstrap(M.roc_auc, [1.0, 2.0], [1])
    with pytest.raises(ValueError, match="confidence"):
        M.bootstrap(M.roc_auc, [1.0, 2.0], [1, 0], confidence=1.0)
    with pytest.raises(TypeError, match="callable"):
        M.bootstrap("roc_auc", [1.0, 2.0], [1, 0])
