"""One large input (10^6 items) through every O(N log N) metric: no quadratic path, no Python loop
over items. Timing lives in bench/metrics.py, not here."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import flashuq as fuq

M = fuq.metrics


def test_large_inputs():
    n = 10**6
    rng = np.random.default_rng(0)
    u = np.round(rng.normal(size=n), 3)  # many ties
    q = rng.random(n)
    c = rng.random(n) < 1 / (1 + np.exp(u))
    assert -1 <= M.prr(u, q) <= 1
    assert M.roc_auc(u, c) == pytest.approx(roc_auc_score(~c, u), rel=1e-12)
    assert 0 <= M.pr_auc(u, c) <= 1
    assert 0 <= M.ece(u, c) <= 1
    assert abs(M.spearman(u, q)) < 0.01
    assert abs(M.kendall_tau(u, q)) < 0.01
    assert M.rejection_curve(u, q).quality.shape == (n,)
