import itertools

import numpy as np
import pytest
import torch

import flashuq as fuq
from _polygraph_ref import normalize, prr_normalized, prr_raw

M = fuq.metrics


def _data(n, seed, ties=False):
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(0, 6, n).astype(float), rng.integers(0, 4, n).astype(float)
    return rng.normal(size=n), rng.random(n) * 10 - 3


# ---- polygraph mode: bit-identical to the reference ---------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 1000])
@pytest.mark.parametrize("max_rejection", [1.0, 0.5, 0.3])
def test_polygraph_bit_identical(n, max_rejection):
    u, q = _data(n, n)
    if int(max_rejection * n) < 1:  # no rejection rate enters the area: refused, naming the argument
        with pytest.raises(ValueError, match="max_rejection"):
            M.prr(u, q, baseline="polygraph", max_rejection=max_rejection)
        return
    assert M.prr(u, q, baseline="polygraph", max_rejection=max_rejection, normalize=False) == \
        prr_raw(u, q, max_rejection)
    assert M.prr(u, q, baseline="polygraph", max_rejection=max_rejection) == prr_normalized(u, q, max_rejection)


@pytest.mark.parametrize("n", [7, 50, 3000])
def test_polygraph_bit_identical_with_ties(n):
    # the same default np.argsort call as LM-Polygraph: tied items fall in the order it gives them
    u, q = _data(n, 4, ties=True)
    assert M.prr(u, q, baseline="polygraph", normalize=False) == prr_raw(u, q)
    assert M.prr(u, q, baseline="polygraph") == prr_normalized(u, q)


def test_polygraph_binary_quality_and_nans():
    rng = np.random.default_rng(5)
    u = rng.normal(size=300)
    q = (rng.random(300) < 0.6).astype(float)
    u[[3, 10]] = np.nan
    u[20] = np.inf
    u[21] = -np.inf
    q[[4, 40, 41]] = np.nan
    assert M.prr(u, q, baseline="polygraph") == prr_normalized(u, q)


def test_polygraph_leaves_global_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    pos = np.random.get_state()[2]
    M.prr(np.arange(20.0), np.arange(20.0)[::-1], baseline="polygraph")
    st = np.random.get_state()
    assert np.array_equal(st[1], before) and st[2] == pos


def test_polygraph_random_baseline_close_to_exact():
    # docs/methods.md#prr-polygraph: the Monte-Carlo baseline estimates mean(normalised target)
    u, q = _data(400, 1)
    a = M.prr(u, q, baseline="polygraph")
    b = M.prr(u, q, baseline="exact")
    assert abs(a - b) < 0.05


def test_polygraph_constant_quality_returns_raw():
    # the reference skips normalisation when oracle == random and reports the raw area
    u = np.arange(5.0)
    assert M.prr(u, np.ones(5), baseline="polygraph") == 0.5
    assert np.isnan(M.prr(u, np.ones(5)))


# ---- exact mode --------------------------------------------------------------------------------

def test_exact_equals_polygraph_raw_on_distinct_values():
    u, q = _data(500, 2)
    for mr in (1.0, 0.5):
        assert M.prr(u, q, normalize=False, max_rejection=mr) == pytest.approx(prr_raw(u, q, mr), rel=1e-13)


def test_exact_formula():
    u, q = _data(300, 3)
    t = normalize(q)
    raw = prr_raw(u, q)
    oracle = prr_raw(-q, q)
    expect = (raw - t.mean()) / (oracle - t.mean())
    assert M.prr(u, q) == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_exact_ties_average_over_orderings(seed):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 3, 7).astype(float)
    q = rng.random(7)
    # brute force: the raw area of every ordering of the ties (a stable sort of each permuted input)
    t = normalize(q)

    def raw_area(perm):
        order = perm[np.argsort(u[perm], kind="stable")]
        return np.mean(np.cumsum(t[order])[::-1] / np.arange(7, 0, -1))

    vals = [raw_area(np.array(p)) for p in itertools.permutations(range(7))]
    assert M.prr(u, q, normalize=False) == pytest.approx(np.mean(vals), rel=1e-12)


def test_exact_is_order_invariant():
    u, q = _data(1000, 4, ties=True)
    p = np.random.default_rng(0).permutation(1000)
    assert M.prr(u, q) == pytest.approx(M.prr(u[p], q[p]), rel=1e-12, abs=1e-14)


def test_oracle_and_anti_oracle():
    q = np.random.default_rng(1).random(100)
    assert M.prr(-q, q) == pytest.approx(1.0)
    assert M.prr(q, q) < 0
    assert M.prr(np.zeros(100), q) == pytest.approx(0.0, abs=1e-12)  # constant uncertainty = random


def test_degenerate():
    assert np.isnan(M.prr([0.3], [1.0]))
    assert M.prr([0.3], [1.0], normalize=False) == 0.5
    assert np.isnan(M.prr([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]))  # all correct
    assert np.isnan(M.prr([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]))  # all wrong
    with pytest.raises(ValueError, match="max_rejection"):
        M.prr([1.0, 2.0], [0.0, 1.0], max_rejection=0.4)
    with pytest.raises(ValueError, match="max_rejection"):
        M.prr([1.0, 2.0], [0.0, 1.0], max_rejection=1.5)
    with pytest.raises(ValueError, match="no items"):
        M.prr([], [])


def test_validation():
    with pytest.raises(ValueError, match="same length"):
        M.prr([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="one-dimensional"):
        M.prr(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="uncertainty"):
        M.prr(["a", "b"], [1, 2])
    with pytest.raises(ValueError, match="baseline"):
        M.prr([1.0, 2.0], [0.0, 1.0], baseline="mc")
    with pytest.raises(ValueError, match="NaN"):
        M.prr([np.nan, 2.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="inf"):
        M.prr([1.0, 2.0], [0.0, np.inf])
    with pytest.raises(ValueError, match="nan_policy"):
        M.prr([1.0, 2.0], [0.0, 1.0], nan_policy="drop")


def test_nan_policies_exact():
    u = np.array([0.1, np.nan, 0.5, 0.9, 0.2])
    q = np.array([1.0, 0.0, np.nan, 0.0, 1.0])
    omit = M.prr(u, q, nan_policy="omit")
    assert omit == M.prr([0.1, 0.9, 0.2], [1.0, 0.0, 1.0])
    poly = M.prr(u, q, nan_policy="polygraph")
    assert poly == M.prr([0.1, -1e7, 0.9, 0.2], [1.0, 0.0, 0.0, 1.0])


def test_input_types():
    u, q = _data(50, 6)
    ref = M.prr(u, q)
    assert isinstance(ref, float)
    assert M.prr(list(u), list(q)) == ref
    assert M.prr(torch.from_numpy(u), torch.from_numpy(q)) == ref
    assert M.prr(torch.from_numpy(u).float(), q) == pytest.approx(ref, abs=1e-6)


def test_rejection_curve():
    u, q = _data(200, 7, ties=True)
    c = M.rejection_curve(u, q)
    assert c.rejection_rate.shape == c.quality.shape == c.oracle.shape == c.random.shape == (200,)
    assert c.rejection_rate[0] == 0 and c.rejection_rate[-1] == pytest.approx(199 / 200)
    assert c.quality[0] == pytest.approx(q.mean())
    assert np.all(c.oracle >= c.quality - 1e-12)
    assert c.oracle[-1] == q.max()
    norm = (c.quality.mean() - c.random.mean()) / (c.oracle.mean() - c.random.mean())
    assert M.prr(u, q) == pytest.approx(norm, rel=1e-12)
    # the last point keeps one item: the mean over the least uncertain tie group
    lo = u == u.min()
    assert c.quality[-1] == pytest.approx(q[lo].mean())
