"""The float64 reference against independent transcriptions (scipy/numpy) and docs/methods.md#golden-values."""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

import flashuq as fuq


def test_reference_matches_scipy_on_random_rows():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 300)) * 2.5
    z[1, :40] = -np.inf
    tok = rng.integers(0, 300, size=5)
    tok[1] = 50
    ref = fuq.reference.token_stats(torch.from_numpy(z), torch.from_numpy(tok), topk=4)
    for i in range(5):
        row = z[i]
        lse = scipy.special.logsumexp(row)
        p = np.exp(row - lse)
        fin = np.isfinite(row)
        np.testing.assert_allclose(ref.lse[i], lse, rtol=1e-13)
        np.testing.assert_allclose(ref.entropy[i], scipy.stats.entropy(p), rtol=1e-12)
        np.testing.assert_allclose(ref.logprob[i], row[tok[i]] - lse, rtol=1e-12)
        np.testing.assert_allclose(ref.max_logprob[i], np.log(p.max()), rtol=1e-12)
        assert ref.argmax[i] == np.argmax(row)
        s = np.sort(p)[::-1]
        np.testing.assert_allclose(ref.margin[i], s[0] - s[1], rtol=1e-12)
        np.testing.assert_allclose(ref.collision[i], np.sum(p**2), rtol=1e-12)
        np.testing.assert_allclose(ref.kurtosis[i], scipy.stats.kurtosis(p, fisher=True, bias=True), rtol=1e-9)
        lp = row[fin] - lse
        np.testing.assert_allclose(ref.self_certainty[i], -lp.mean() - np.log(fin.sum()), rtol=1e-12)
        order = np.argsort(-row, kind="stable")[:4]
        np.testing.assert_array_equal(ref.topk_ids[i].numpy(), order)
        np.testing.assert_allclose(ref.topk_logprobs[i].numpy(), row[order] - lse, rtol=1e-12)


def test_golden_kurtosis_methods_md():
    # docs/methods.md#golden-values: kurtosis of p = [.7, .2, .05, .03, .02], Fisher biased
    p = torch.tensor([0.7, 0.2, 0.05, 0.03, 0.02], dtype=torch.float64)
    ref = fuq.reference.token_stats(p.log())
    assert ref.kurtosis.item() == pytest.approx(-0.08805425549826396, rel=1e-12)
    assert math.isnan(fuq.reference.token_stats(torch.zeros(7, dtype=torch.float64)).kurtosis.item())


def test_golden_maqa_methods_md():
    # docs/methods.md#golden-values (MAQA): logits [3, 2, .5, .1, -1], k = 3
    ref = fuq.reference.token_stats(torch.tensor([3.0, 2.0, 0.5, 0.1, -1.0], dtype=torch.float64), topk=3)
    assert ref.max_logprob.exp().item() == pytest.approx(0.6564680853949656, rel=1e-14)
    assert ref.margin.item() == pytest.approx(0.41496697299297897, rel=1e-13)
    q = ref.topk_logprobs.exp()
    assert (q * q.log()).sum().item() == pytest.approx(-0.7768346012413029, rel=1e-13)


@pytest.mark.parametrize("gap", [50.0, 60.0, 75.0])
def test_reference_confident_row_closed_form(gap):
    # one logit `gap` above V-1 zeros: R = (V-1) e^-gap, H = log1p(R) + gap R / (1 + R) exactly
    V = 1000
    x = torch.zeros(V, dtype=torch.float64)
    x[17] = gap
    R = (V - 1) * math.exp(-gap)
    H = math.log1p(R) + gap * R / (1 + R)
    ref = fuq.reference.token_stats(x)
    assert ref.entropy.item() == pytest.approx(H, rel=1e-12)
    assert ref.max_logprob.item() == pytest.approx(-math.log1p(R), rel=1e-12)
