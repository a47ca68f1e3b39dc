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


@pytest.mark.parametrize("seed", range(6))
def test_radix_argsort_is_numpys_stable_argsort(seed):
    """_C.argsort_f64 gives np.argsort(kind="stable")'s order exactly: ties (-0 and +0 among them)
    in input order, ±inf, subnormals, NaN last."""
    rng = np.random.default_rng(seed)
    n = [1, 2, 5000, 70000, 3, 40000][seed]
    x = [rng.normal(size=n), np.round(rng.normal(size=n), 1), rng.integers(-3, 4, n).astype(float),
         rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, n), np.array([0.0, -0.0, 0.0][:n]),
         rng.choice([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1.0], n)][seed]
    out = np.empty(n, np.int64)
    fuq._ext._C.argsort_f64(x, out)
    assert np.array_equal(out, np.argsort(x, kind="stable"))


@pytest.mark.parametrize("seed", range(4))
def test_ranks_by_radix_equal_numpys(seed, monkeypatch):
    """Spearman's and Kendall's ranks take the radix order above 2,048 items: the same values and
    the same bits as with numpy's argsort (a rank depends only on the values)."""
    from flashuq.metrics import _common, correlation

    rng = np.random.default_rng(seed)
    n = 50000
    u = np.round(rng.normal(size=n), [1, 2, 4, 8][seed])
    q = rng.integers(0, [3, 50, 10**4, 10**9][seed], n).astype(float)
    got = (M.spearman(u, q), M.kendall_tau(u, q), M.reversed_pairs_proportion(u, q),
           _common.rankdata_average(u), correlation._dense_ranks(-q))
    monkeypatch.setattr(_common, "argsort_stable", np.argsort)
    monkeypatch.setattr(correlation, "argsort_stable", np.argsort)
    want = (M.spearman(u, q), M.kendall_tau(u, q), M.reversed_pairs_proportion(u, q),
            _common.rankdata_average(u), correlation._dense_ranks(-q))
    assert got[:3] == want[:3]
    assert np.array_equal(got[3], want[3]) and np.array_equal(got[4], want[4])


def test_argsort_binding_checks():
    f = fuq._ext._C.argsort_f64
    with pytest.raises(ValueError, match="size"):
        f(np.zeros(3), np.empty(2, np.int64))
    with pytest.raises(TypeError):
        f(np.zeros(3, np.float32), np.empty(3, np.int64))
    with pytest.raises(TypeError):
        f(np.zeros(3), np.empty(3, np.int32))
    with pytest.raises((TypeError, ValueError)):
        f(np.zeros(6)[::2], np.empty(3, np.int64))
    out = np.empty(0, np.int64)
    f(np.zeros(0), out)
