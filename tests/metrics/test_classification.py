import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import flashuq as fuq
from _polygraph_ref import ece as ref_ece

M = fuq.metrics


def _tied(n, seed, levels=5, p_correct=0.6):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, levels, n).astype(float) / 3
    c = (rng.random(n) < p_correct).astype(int)
    return u, c


@pytest.mark.parametrize("seed", range(20))
def test_roc_auc_matches_sklearn_with_ties(seed):
    n = [2, 5, 30, 500, 3000][seed % 5]
    u, c = _tied(n, seed, levels=[2, 3, 10, 1000][seed % 4])
    if c.min() == c.max():
        assert np.isnan(M.roc_auc(u, c))
        return
    assert M.roc_auc(u, c) == pytest.approx(roc_auc_score(1 - c, u), rel=1e-12)
    assert M.roc_auc(u, c) == pytest.approx(roc_auc_score(c, -u), rel=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_pr_auc_matches_sklearn_with_ties(seed):
    n = [2, 5, 30, 500, 3000][seed % 5]
    u, c = _tied(n, seed, levels=[2, 3, 10, 1000][seed % 4])
    if (1 - c).sum() > 0:
        assert M.pr_auc(u, c) == pytest.approx(average_precision_score(1 - c, u), rel=1e-12)
    else:
        assert np.isnan(M.pr_auc(u, c))
    if c.sum() > 0:
        assert M.pr_auc(u, c, positive="correct") == pytest.approx(average_precision_score(c, -u), rel=1e-12)


def test_auc_degenerate():
    u = np.array([0.1, 0.5, 0.9])
    assert np.isnan(M.roc_auc(u, [1, 1, 1]))             # all correct
    assert np.isnan(M.roc_auc(u, [0, 0, 0]))             # all wrong
    assert np.isnan(M.roc_auc([0.3], [1]))               # N = 1
    assert M.roc_auc(np.zeros(10), [0, 1] * 5) == 0.5    # constant uncertainty
    assert M.roc_auc([0.9, 0.1], [0, 1]) == 1.0
    assert M.roc_auc([0.1, 0.9], [0, 1]) == 0.0
    assert np.isnan(M.pr_auc(u, [1, 1, 1]))              # no incorrect item
    assert M.pr_auc(u, [0, 0, 0]) == 1.0                 # every item a positive
    assert M.pr_auc(np.zeros(4), [0, 1, 1, 0]) == pytest.approx(0.5)  # constant: positive rate
    with pytest.raises(ValueError, match="binary"):
        M.roc_auc(u, [0, 1, 2])
    with pytest.raises(ValueError, match="positive"):
        M.pr_auc(u, [0, 1, 1], positive="wrong")


def test_auc_infinities_and_nans():
    u = np.array([np.inf, 0.2, -np.inf, 0.4, np.nan, 0.7])
    c = np.array([0, 1, 1, 0, 1, np.nan])
    with pytest.raises(ValueError, match="NaN"):
        M.roc_auc(u, c)
    keep = ~(np.isnan(u) | np.isnan(c))
    assert M.roc_auc(u, c, nan_policy="omit") == roc_auc_score(1 - c[keep], np.nan_to_num(u[keep]))
    poly_u = np.array([np.inf, 0.2, -np.inf, 0.4, -1e7])
    assert M.roc_auc(u, c, nan_policy="polygraph") == roc_auc_score(1 - c[:5], np.nan_to_num(poly_u))


def test_auc_inputs():
    u, c = _tied(100, 1)
    ref = M.roc_auc(u, c)
    assert isinstance(ref, float)
    assert M.roc_auc(torch.tensor(u), torch.tensor(c).bool()) == ref
    assert M.roc_auc(list(u), c.astype(bool)) == ref


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("normalize", [True, False])
def test_ece_matches_polygraph(seed, normalize):
    rng = np.random.default_rng(seed)
    n = [1, 3, 100, 2000][seed % 4]
    if normalize:
        u = rng.normal(size=n)
        if seed % 3 == 0:
            u = np.round(u, 1)  # ties
    else:
        u = -rng.random(n) * 1.2 + 0.1  # confidence −u in [−0.1, 1.1]: some fall outside every bin
        u[: max(1, n // 10)] = -np.linspace(0, 1, max(1, n // 10))  # points on the bin edges
    c = (rng.random(n) < 0.7).astype(float)
    for bins in (1, 10, 20):
        assert M.ece(u, c, n_bins=bins, normalize=normalize) == pytest.approx(
            ref_ece(u, c, bins, normalize), rel=1e-12, abs=1e-15)


def _numpy_bins(u, c, n_bins, normalize):
    """The bins in numpy (MinMaxScaler's arithmetic, searchsorted, bincount): what the C++ pass
    must reproduce bit for bit."""
    conf = -u
    if normalize:
        lo, hi = conf.min(), conf.max()
        scale = 1.0 / (hi - lo if hi - lo >= 10 * np.finfo(np.float64).eps else 1.0)
        conf = conf * scale + (0.0 - lo * scale)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    inside = (conf >= 0.0) & (conf <= 1.0)
    idx = np.maximum(np.searchsorted(edges, conf[inside], side="left") - 1, 0)
    return (np.bincount(idx, minlength=n_bins), np.bincount(idx, weights=conf[inside], minlength=n_bins),
            np.bincount(idx, weights=c[inside], minlength=n_bins))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("normalize", [True, False])
def test_reliability_bins_are_numpys_bits(seed, normalize):
    rng = np.random.default_rng(seed)
    n = [5, 1000, 30000][seed % 3]
    u = -rng.random(n) * 1.2 + 0.1 if not normalize else np.round(rng.normal(size=n), seed % 3 + 1)
    if not normalize:  # confidences exactly on every edge, and at 0 and 1
        for bins in (1, 7, 20, 64):
            k = min(n, bins + 1)
            u[:k] = -np.linspace(0.0, 1.0, bins + 1)[:k]
    c = rng.random(n) * (seed % 2) + (rng.random(n) < 0.6) * (1 - seed % 2)  # fractional or 0/1
    for bins in (1, 7, 20, 64):
        b = M.reliability_bins(u, c, n_bins=bins, normalize=normalize)
        count, sum_conf, sum_correct = _numpy_bins(u, c, bins, normalize)
        assert np.array_equal(b.count, count) and b.n == n
        with np.errstate(invalid="ignore", divide="ignore"):
            assert np.array_equal(b.confidence, sum_conf / count, equal_nan=True)
            assert np.array_equal(b.accuracy, sum_correct / count, equal_nan=True)


def test_reliability_sums_binding_checks():
    f = fuq._ext._C.reliability_sums
    u, c, e = np.zeros(3), np.ones(3), np.linspace(0.0, 1.0, 3)
    cnt, s1, s2 = np.zeros(2, np.int64), np.zeros(2), np.zeros(2)
    f(u, c, 1.0, 0.0, False, e, cnt, s1, s2)
    assert cnt.tolist() == [3, 0] and s2.tolist() == [3.0, 0.0]
    with pytest.raises(ValueError, match="differ in size"):
        f(u, c[:2], 1.0, 0.0, False, e, cnt, s1, s2)
    with pytest.raises(ValueError, match="len\\(edges\\) - 1"):
        f(u, c, 1.0, 0.0, False, e, cnt[:1], s1, s2)
    with pytest.raises(ValueError, match="at least 2"):
        f(u, c, 1.0, 0.0, False, e[:1], cnt[:0], s1[:0], s2[:0])
    with pytest.raises(ValueError, match="increase"):
        f(u, c, 1.0, 0.0, False, np.array([0.0, 0.5, 0.5]), cnt, s1, s2)
    with pytest.raises(TypeError):
        f(u.astype(np.float32), c, 1.0, 0.0, False, e, cnt, s1, s2)


def test_ece_values():
    # perfectly calibrated bins: conf 0.25 with 1/4 correct, conf 0.75 with 3/4 correct
    u = -np.array([0.25] * 4 + [0.75] * 4)
    c = [1, 0, 0, 0, 1, 1, 1, 0]
    assert M.ece(u, c, normalize=False) == pytest.approx(0.0, abs=1e-15)
    assert M.ece(u, c, n_bins=1, normalize=False) == pytest.approx(0.0, abs=1e-15)
    assert M.ece(np.zeros(4), [1, 1, 0, 0]) == 0.5   # constant confidence → 0 after min-max
    with pytest.raises(ValueError, match="finite"):
        M.ece([np.inf, 0.0], [1, 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.ece([0.0, 1.0], [2, 0])
    with pytest.raises(ValueError, match="n_bins"):
        M.ece([0.0, 1.0], [1, 0], n_bins=0)
    with pytest.raises(TypeError, match="n_bins"):
        M.ece([0.0, 1.0], [1, 0], n_bins=2.5)
