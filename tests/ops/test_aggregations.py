"""flashuq.max_then_mean, max_window_mean, thresholded_mean (docs/methods.md#aggregation-patterns):
against numpy transcriptions of AlignScore's aggregation and ValUES' ``patch_level_aggregation`` (scipy's
``convolve(..., mode="valid")``, short rows included) and ``threshold_aggregation``; padding, errors."""

import numpy as np
import pytest
import torch
from scipy.signal import convolve

import flashuq as fuq


def values_case(seed=0, B=5, T=14):
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(B, T, generator=g, dtype=torch.float64) * 2 - 0.5
    lengths = torch.tensor([14, 10, 3, 1, 0])
    return v, torch.arange(T)[None, :] < lengths[:, None], lengths


@pytest.mark.parametrize("window", [1, 4, 10])
@pytest.mark.parametrize("mean", [True, False])
def test_max_window_mean_matches_values_convolve(window, mean):
    v, mask, lengths = values_case()
    got = fuq.max_window_mean(v, mask, window=window, mean=mean)
    for b in range(5):
        n = int(lengths[b])
        if n == 0:
            assert got[b].isnan()
            continue
        agg = convolve(v[b, :n].numpy(), np.ones(window), mode="valid")  # ValUES' patch-level step
        want = agg.max() / (window if mean else 1)
        assert got[b].item() == pytest.approx(want, rel=1e-12, abs=1e-15), (b, window, mean)
    # left padding and NaN in the padding give the same numbers
    left = torch.full_like(v, torch.nan)
    lmask = torch.zeros_like(mask)
    for b in range(5):
        n = int(lengths[b])
        if n:
            left[b, -n:] = v[b, :n]
            lmask[b, -n:] = True
    torch.testing.assert_close(fuq.max_window_mean(left, lmask, window=window, mean=mean), got, rtol=0, atol=0,
                               equal_nan=True)


@pytest.mark.parametrize("mean", [True, False])
def test_thresholded_mean_matches_values(mean):
    v, mask, lengths = values_case(1)
    got = fuq.thresholded_mean(v.reshape(5, 2, 7), mask.reshape(5, 2, 7), threshold=0.8, mean=mean)
    assert got.shape == (5, 2)
    for b in range(5):
        for h in range(2):
            row = v[b, 7 * h: 7 * h + 7][mask[b, 7 * h: 7 * h + 7]].numpy()
            s, c = row[row >= 0.8].sum(), (row >= 0.8).sum()   # ValUES' threshold_aggregation
            want = s / c if mean and c > 0 else s
            assert got[b, h].item() == pytest.approx(want, rel=1e-12, abs=1e-300), (b, h)


def test_max_then_mean_matches_alignscore():
    g = torch.Generator().manual_seed(2)
    S = torch.rand(3, 4, 5, generator=g, dtype=torch.float64)
    chunks = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    sents = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    got = fuq.max_then_mean(S, chunks, sents)
    for q in range(2):
        sub = S[q][chunks[q]][:, sents[q]].numpy()
        assert got[q].item() == pytest.approx(sub.max(0).mean(), rel=1e-14)
    assert got[2].isnan()
    S2 = S.clone()
    S2[1, 2:] = torch.nan
    S2[1, :, 1] = torch.nan
    torch.testing.assert_close(fuq.max_then_mean(S2, chunks, sents)[1], got[1], rtol=0, atol=0)
    assert fuq.max_then_mean(S.float()).dtype == torch.float32


def test_fp32_values_near_the_maximum():
    # sums run in fp64: fp32 inputs near 3.4e38 whose results are finite stay finite, equal to the fp64
    # value of the same inputs rounded once
    v = torch.tensor([[3e38, 3e38, 1.0, -3e38], [3e38, -3e38, 3e38, 3e38]], dtype=torch.float32)
    x = v.double().numpy()
    windows = lambda r, w: convolve(r, np.ones(w), mode="valid").max() / w
    above = lambda r, t: r[r >= t].mean()
    for got, want in (
            (fuq.max_window_mean(v, window=2), [windows(r, 2) for r in x]),
            (fuq.max_window_mean(v, window=3), [windows(r, 3) for r in x]),
            (fuq.thresholded_mean(v, threshold=0.5), [above(r, 0.5) for r in x]),
            (fuq.thresholded_mean(v, threshold=-1e39), [r.mean() for r in x]),
            (fuq.max_then_mean(v[:, None, :]), [r.mean() for r in x])):
        assert got.dtype == torch.float32
        assert np.isfinite(want).all()
        np.testing.assert_array_equal(got.numpy(), np.float32(want))


def test_empty_axes_give_nan():
    assert fuq.max_then_mean(torch.zeros(2, 0, 3)).isnan().all()
    assert fuq.max_window_mean(torch.zeros(3, 0)).isnan().all() and fuq.max_window_mean(torch.zeros(0, 4)).shape == (0,)
    assert fuq.thresholded_mean(torch.zeros(3, 0), threshold=0.1).tolist() == [0.0, 0.0, 0.0]


def test_errors_name_the_argument():
    v = torch.rand(2, 5)
    with pytest.raises(ValueError, match="window"):
        fuq.max_window_mean(v, window=0)
    with pytest.raises(TypeError, match="window"):
        fuq.max_window_mean(v, window=2.5)
    with pytest.raises(ValueError, match="mask"):
        fuq.max_window_mean(v, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="values"):
        fuq.thresholded_mean(v.long(), threshold=0.5)
    with pytest.raises(ValueError, match="threshold"):
        fuq.thresholded_mean(v, threshold=float("nan"))
    with pytest.raises(ValueError, match="scores"):
        fuq.max_then_mean(v[0])
    with pytest.raises(ValueError, match="chunk_mask"):
        fuq.max_then_mean(v[None], torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="sentence_mask"):
        fuq.max_then_mean(v[None], None, torch.ones(1, 2, dtype=torch.bool))
