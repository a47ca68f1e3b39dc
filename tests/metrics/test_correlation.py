import numpy as np
import pytest
import scipy.stats as st
import torch

import flashuq as fuq
from flashuq.metrics.correlation import count_inversions

M = fuq.metrics


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@pytest.mark.parametrize("seed", range(16))
def test_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = [2, 3, 17, 400, 5000][seed % 5]
    lv = [2, 4, 50, 10**6][seed % 4]
    u = rng.integers(0, lv, n).astype(float)
    q = rng.integers(0, [3, 7, 10**6][seed % 3], n).astype(float)
    s_ref = st.spearmanr(u, -q).statistic
    k_ref = st.kendalltau(u, -q).statistic
    s, k = M.spearman(u, q), M.kendall_tau(u, q)
    for got, ref in ((s, s_ref), (k, k_ref)):
        if np.isnan(ref):
            assert np.isnan(got)
        else:
            assert got == pytest.approx(ref, rel=1e-12, abs=1e-14)


def test_count_inversions_brute_force():
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 5, 40, 200):
        for hi in (1, 2, 9, 1000):
            a = rng.integers(0, hi, n)
            brute = int(sum((a[i] > a[i + 1:]).sum() for i in range(n)))
            assert count_inversions(a) == brute


def test_orientation_and_degenerate():
    q = np.arange(10.0)
    assert M.spearman(-q, q) == pytest.approx(1.0)   # uncertainty falls as quality rises: good
    assert M.kendall_tau(-q, q) == pytest.approx(1.0)
    assert M.kendall_tau(q, q) == pytest.approx(-1.0)
    assert np.isnan(M.spearman(np.zeros(5), q[:5]))  # constant uncertainty
    assert np.isnan(M.kendall_tau(q[:5], np.ones(5)))  # constant quality (all correct)
    assert np.isnan(M.spearman([1.0], [2.0]))          # N = 1
    assert np.isnan(M.kendall_tau([1.0], [2.0]))
    assert isinstance(M.kendall_tau(torch.arange(5.0), [1, 0, 1, 0, 0]), float)
