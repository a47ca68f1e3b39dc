"""flashuq.methods.hidden (docs/methods.md#hidden-state-methods): EigenScore against LM-Polygraph 0.7.0's own
``EigenScore`` estimator (its module imported bare, without the rest of LM-Polygraph) and the float64
transcription ``flashuq.reference.eigenscore_ref``; sample masks, non-finite input, dtypes, batch
independence, argument errors."""

import math

import numpy as np
import pytest
import torch

from flashuq import methods as M
from flashuq.reference import eigenscore_ref
from lmp_cases import lm_polygraph_estimator


def lm_polygraph_eigenscore():
    return lm_polygraph_estimator("eigenscore").EigenScore


def embeddings(Q, K, d, seed=0, dtype=torch.float64):
    """Hidden-state-like rows: a shared offset, a per-question direction, answers in 1-3 clusters
    (near-duplicates make Σ nearly singular, where α matters), on a scale of tens."""
    g = torch.Generator().manual_seed(seed)
    base = 3 * torch.randn(Q, 1, d, generator=g, dtype=torch.float64) + 5
    cls = torch.randint(0, 3, (Q, K), generator=g)
    centres = 4 * torch.randn(Q, 3, d, generator=g, dtype=torch.float64)
    Z = base + centres.gather(1, cls[:, :, None].expand(Q, K, d)) + 0.05 * torch.randn(Q, K, d, generator=g,
                                                                                        dtype=torch.float64)
    return Z.to(dtype)


@pytest.mark.parametrize("K,d", [(1, 8), (5, 16), (10, 64), (20, 48)])
def test_eigenscore_matches_lm_polygraph_and_reference(K, d):
    Q = 12
    Z = embeddings(Q, K, d, seed=K)
    got = M.eigenscore(Z)
    assert got.dtype == torch.float64 and got.shape == (Q,)
    EigenScore = lm_polygraph_eigenscore()
    for alpha in (1e-3, 0.5):
        got = M.eigenscore(Z, alpha=alpha)
        lmp = EigenScore(alpha=alpha)({"sample_embeddings": Z.numpy()})
        ref = np.array([eigenscore_ref(Z[q].numpy(), alpha) for q in range(Q)])
        np.testing.assert_allclose(got.numpy(), lmp, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-10)
    # near-duplicate answers: Σ is close to singular and the score sits near ln α
    dup = Z[:, :1].expand(Q, K, d).contiguous()
    np.testing.assert_allclose(M.eigenscore(dup).numpy(),
                               [eigenscore_ref(dup[q].numpy()) for q in range(Q)], rtol=1e-9, atol=1e-9)
    if K > 1:
        assert (M.eigenscore(dup) < M.eigenscore(Z)).all()  # identical answers: less uncertain


def test_eigenscore_masked_samples_and_bad_rows():
    Q, K, d = 9, 7, 24
    Z = embeddings(Q, K, d, seed=3)
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(Q, K, generator=g) > 0.3
    mask[0] = False            # no valid answer: NaN
    mask[1] = False
    mask[1, 2] = True          # one valid answer
    Zg = Z.clone()
    Zg[~mask] = torch.nan      # whatever masked rows hold never enters a result
    Zg[2, 0, 0] = torch.inf if mask[2, 0] else Zg[2, 0, 0]
    got = M.eigenscore(Zg, sample_mask=mask)
    assert got[0].isnan()
    for q in range(1, Q):
        idx = mask[q].nonzero().flatten().numpy()
        if q == 2 and mask[2, 0]:
            assert got[q].isnan()  # a non-finite entry in a valid answer: NaN for its question only
            continue
        assert got[q].item() == pytest.approx(eigenscore_ref(Z[q].numpy()[idx]), rel=1e-10, abs=1e-10)
    # the same questions one at a time, or padded with more masked answers: the same values
    for q in range(Q):
        one = M.eigenscore(Zg[q:q + 1], sample_mask=mask[q:q + 1])
        assert torch.equal(one.nan_to_num(7.0), got[q:q + 1].nan_to_num(7.0))
    pad = torch.cat([Zg, torch.full((Q, 3, d), 1e30, dtype=Zg.dtype)], 1)
    mpad = torch.cat([mask, torch.zeros(Q, 3, dtype=torch.bool)], 1)
    torch.testing.assert_close(M.eigenscore(pad, sample_mask=mpad), got, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_eigenscore_dtypes_and_numpy_input():
    Z = embeddings(6, 5, 32, seed=9)
    want = M.eigenscore(Z)
    for dt in (torch.float32, torch.bfloat16):
        Zl = Z.to(dt)
        got = M.eigenscore(Zl)
        assert got.dtype == torch.float32
        # computed in fp64 from the rounded inputs, as the reference (its J_d is fp64)
        ref = np.array([eigenscore_ref(Zl[q].double().numpy()) for q in range(6)])
        np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-6, atol=1e-6)
    # (bf16 rounds away the near-duplicates' differences; fp32 keeps them)
    np.testing.assert_allclose(M.eigenscore(Z.float()).double().numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    assert torch.equal(M.eigenscore(Z.numpy()), want)
    assert M.REGISTRY["eigenscore"].fn is M.eigenscore and M.REGISTRY["eigenscore"].inputs == ("embeddings",)


def test_eigenscore_blocks_of_questions_agree(monkeypatch):
    """The Gram matrices are built a block of questions at a time: the block size changes nothing."""
    from flashuq.methods import hidden

    Z = embeddings(10, 6, 40, seed=11)
    whole = M.eigenscore(Z)
    monkeypatch.setattr(hidden, "_BLOCK_ELEMENTS", 6 * 40 * 3)  # three questions per block
    assert torch.equal(M.eigenscore(Z), whole)


def test_eigenscore_argument_errors():
    Z = embeddings(2, 3, 4)
    with pytest.raises(TypeError, match="embeddings"):
        M.eigenscore([[[1.0]]])
    with pytest.raises(TypeError, match="embeddings"):
        M.eigenscore(torch.ones(2, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="embeddings"):
        M.eigenscore(Z[0])
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="alpha"):
            M.eigenscore(Z, alpha=bad)
    with pytest.raises(TypeError, match="alpha"):
        M.eigenscore(Z, alpha="0.1")
    with pytest.raises(ValueError, match="sample_mask"):
        M.eigenscore(Z, sample_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="sample_mask"):
        M.eigenscore(Z, sample_mask=torch.ones(2, 3))
    assert M.eigenscore(torch.zeros(0, 3, 4)).shape == (0,)


# ---- Uncertainty as Feature Gaps, PA-CCS -----------------------------------------------------------------

def test_mean_hidden_over_span_and_projection():
    g = torch.Generator().manual_seed(21)
    L, B, S, D = 4, 3, 10, 6
    hs = torch.randn(L, B, S, D, generator=g, dtype=torch.float64)
    start, end = torch.tensor([2, 0, 5]), torch.tensor([9, 4, 6])
    h = M.mean_hidden_over_span(hs, start, end)
    assert h.shape == (B, L, D)
    for b in range(B):  # the reference: hs[l][0, P-1 : S-1].mean(0) per example
        for l in range(L):
            np.testing.assert_allclose(h[b, l].numpy(), hs[l, b, start[b]:end[b]].numpy().mean(0), rtol=1e-14)
    assert M.mean_hidden_over_span(hs, torch.tensor([3, 3, 3]), torch.tensor([3, 4, 5]))[0].isnan().all()
    mu, d = torch.randn(L, D, generator=g, dtype=torch.float64), torch.randn(L, D, generator=g, dtype=torch.float64)
    sc = M.project_scores(h, mu, d)
    want = np.einsum("bld,ld->bl", h.numpy() - mu.numpy(), d.numpy()) / np.linalg.norm(d.numpy(), axis=1)
    np.testing.assert_allclose(sc.numpy(), want, rtol=1e-13)
    with pytest.raises(ValueError, match="start/end"):
        M.mean_hidden_over_span(hs, torch.tensor([0, 0, 7]), torch.tensor([1, 1, 6]))
    with pytest.raises(ValueError, match="start"):
        M.mean_hidden_over_span(hs, torch.tensor([0, 0]), end)
    with pytest.raises(ValueError, match="direction"):
        M.project_scores(h, mu, d[:, :5])


def test_feature_gaps_against_numpy():
    g = torch.Generator().manual_seed(22)
    B, L, D, F = 5, 6, 8, 3
    h = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    mu = torch.randn(F, D, generator=g, dtype=torch.float64)
    d = torch.randn(F, D, generator=g, dtype=torch.float64)
    layer = torch.tensor([5, 2, -1])
    w, b = torch.tensor([0.7, -1.2, 0.4], dtype=torch.float64), 0.3
    u = M.feature_gaps(h, mu, d, layer, w, b)
    for i in range(B):
        s = [(h[i, int(layer[f]) % L] - mu[f]).numpy() @ d[f].numpy() / np.linalg.norm(d[f].numpy()) for f in range(F)]
        want = -1 / (1 + np.exp(-(np.dot(s, w.numpy()) + b)))
        assert u[i].item() == pytest.approx(want, rel=1e-13)
    assert M.REGISTRY["feature_gaps"].fn is M.feature_gaps
    with pytest.raises(ValueError, match="layer"):
        M.feature_gaps(h, mu, d, torch.tensor([6, 0, 0]), w, b)
    with pytest.raises(ValueError, match="weight"):
        M.feature_gaps(h, mu, d, layer, w[:2], b)
    with pytest.raises(ValueError, match="bias"):
        M.feature_gaps(h, mu, d, layer, w, float("nan"))


def test_pa_ccs_golden_values_and_probe():
    # docs/methods.md#pa-ccs: pA1 = [.9, .6], pA0 = [.2, .5], pN1 = [.1, .55], pN0 = [.8, .4]
    pc, ci = M.pa_ccs_metrics(torch.tensor([.9, .6], dtype=torch.float64), torch.tensor([.2, .5], dtype=torch.float64),
                              torch.tensor([.1, .55], dtype=torch.float64), torch.tensor([.8, .4], dtype=torch.float64))
    np.testing.assert_allclose(pc.numpy(), [0.01, -0.02125], rtol=1e-12)
    np.testing.assert_allclose(ci.numpy(), [0.25, 0.53], rtol=1e-12)
    assert pc.mean().item() == pytest.approx(-0.005625) and ci.mean().item() == pytest.approx(0.39)
    g = torch.Generator().manual_seed(23)
    h = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    w, b = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    p = M.linear_probe(h, w, b)
    np.testing.assert_allclose(p.numpy(), 1 / (1 + np.exp(-(np.einsum("bld,ld->bl", h.numpy(), w.numpy()) + b.numpy()))),
                               rtol=1e-13)
    with pytest.raises(ValueError, match="p_not_no"):
        M.pa_ccs_metrics(p[:, 0], p[:, 0], p[:, 0], p[:2, 0])
    with pytest.raises(ValueError, match="bias"):
        M.linear_probe(h, w, b[:2])
