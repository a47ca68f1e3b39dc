"""flashuq.methods.blackbox (docs/methods.md#blackbox-consistency): uqlm's noncontradiction, entailment,
exact-match and cosine scorers, its weighted ensemble and MAQA's response consistency, against per-question
numpy transcriptions of their definitions (uqlm's ``black_box`` scorers, MAQA's ``consistency``); sample
masks, bad rows, argument errors."""

import numpy as np
import pytest
import torch

from flashuq import methods as M


def rng_case(Q=8, K=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(Q, K, generator=g) > 0.3
    mask[0] = False  # no valid sample
    mask[1] = False
    mask[1, 2] = True  # one
    return g, mask


def test_nli_scorers_against_numpy():
    g, mask = rng_case()
    cf, cb, ef, eb = (torch.rand(8, 6, generator=g, dtype=torch.float64) for _ in range(4))
    nc = M.uqlm_noncontradiction(cf, cb, sample_mask=mask)
    en = M.uqlm_entailment(ef, eb, sample_mask=mask)
    assert nc.dtype == en.dtype == torch.float64
    assert nc[0].isnan() and en[0].isnan()
    for q in range(1, 8):
        k = mask[q].numpy()
        want_nc = -np.mean([((1 - a) + (1 - b)) / 2 for a, b in zip(cf[q].numpy()[k], cb[q].numpy()[k])])
        want_en = -np.mean([(a + b) / 2 for a, b in zip(ef[q].numpy()[k], eb[q].numpy()[k])])
        assert nc[q].item() == pytest.approx(want_nc, rel=1e-14)
        assert en[q].item() == pytest.approx(want_en, rel=1e-14)
    # all valid by default; masked entries may hold anything
    cf2 = torch.where(mask, cf, torch.nan)
    assert torch.equal(M.uqlm_noncontradiction(cf2, cb, sample_mask=mask)[1:], nc[1:])
    full = M.uqlm_entailment(ef, eb)
    assert full[3].item() == pytest.approx(-((ef[3] + eb[3]) / 2).mean().item(), rel=1e-14)


def test_exact_match_and_cosine_against_numpy():
    g, mask = rng_case(seed=1)
    o = torch.randint(0, 3, (8,), generator=g)
    s = torch.randint(0, 3, (8, 6), generator=g)
    em = M.uqlm_exact_match(o, s, sample_mask=mask)
    assert em.dtype == torch.float32 and em[0].isnan()
    eo = torch.randn(8, 16, generator=g, dtype=torch.float64)
    es = torch.randn(8, 6, 16, generator=g, dtype=torch.float64)
    es[4, 0] = 0.0
    cs = M.uqlm_cosine_sim(eo, es, sample_mask=mask)
    for q in range(1, 8):
        k = mask[q].numpy()
        assert em[q].item() == pytest.approx(-np.mean(s[q].numpy()[k] == o[q].item()), rel=1e-6)
        with np.errstate(invalid="ignore"):  # 0/0 for the zero embedding
            cos = [a @ eo[q].numpy() / np.linalg.norm(a) / np.linalg.norm(eo[q].numpy()) for a in es[q].numpy()[k]]
        want = -np.mean([0.5 + c / 2 for c in cos])
        if q == 4 and k[0]:
            assert cs[q].isnan()  # a zero embedding has no direction
        else:
            assert cs[q].item() == pytest.approx(want, rel=1e-12)


def test_uqlm_semantic_density_and_consistency_and_confidence():
    g, mask = rng_case(seed=4)
    c = torch.rand(8, 6, generator=g, dtype=torch.float64) * 0.8
    nu = (1 - c) * torch.rand(8, 6, generator=g, dtype=torch.float64)
    c[2, 0], nu[2, 0] = 0.5, 0.9          # E[d] = 0.5 + 0.9·0.707 > 1: kernel 0
    w = torch.rand(8, 6, generator=g, dtype=torch.float64)
    sd = M.uqlm_semantic_density(c, nu, w, sample_mask=mask)
    assert sd[0].isnan()
    for q in range(1, 8):
        k = mask[q].numpy()
        cc, nn, ww = c[q].numpy()[k], nu[q].numpy()[k], w[q].numpy()[k]
        ed, ed2 = cc + nn * np.sqrt(2) / 2, cc + nn / 2
        kern = (1 - ed2) * (ed <= 1)
        assert sd[q].item() == pytest.approx(-(ww * kern).sum() / ww.sum(), rel=1e-13)
    eo = torch.randn(8, 12, generator=g, dtype=torch.float64)
    es = torch.randn(8, 6, 12, generator=g, dtype=torch.float64)
    po = torch.rand(8, generator=g, dtype=torch.float64)
    cc = M.uqlm_consistency_and_confidence(eo, es, po, sample_mask=mask)
    assert cc[0].isnan()
    for q in range(1, 8):
        k = mask[q].numpy()
        a, o = es[q].numpy()[k], eo[q].numpy()
        cos = a @ o / np.linalg.norm(a, axis=1) / np.linalg.norm(o)
        assert cc[q].item() == pytest.approx(-np.mean(0.5 + cos / 2) * po[q].item(), rel=1e-12)
    with pytest.raises(ValueError, match="original_prob"):
        M.uqlm_consistency_and_confidence(eo, es, po[:3])
    with pytest.raises(ValueError, match="sample_probs"):
        M.uqlm_semantic_density(c, nu, w[:, :2])


def test_weighted_ensemble():
    g = torch.Generator().manual_seed(2)
    conf = torch.rand(5, 3, generator=g, dtype=torch.float64)
    w = torch.tensor([0.56, 0.14, 0.3], dtype=torch.float64)  # uqlm's BS-detector default
    want = -(conf.numpy() @ (w.numpy() / w.numpy().sum()))
    u = M.weighted_ensemble(-conf, w)  # flashuq's negated confidences in, uqlm's ensemble negated out
    np.testing.assert_allclose(u.numpy(), want, rtol=1e-14)
    np.testing.assert_allclose(M.weighted_ensemble(-conf, w * 10).numpy(), want, rtol=1e-14)  # normalised
    conf[2, 1] = torch.nan
    assert M.weighted_ensemble(conf, w)[2].isnan()
    for bad in ([0.5, -0.1, 0.6], [0.0, 0.0, 0.0], [1.0, float("inf"), 1.0], [1.0, float("nan"), 1.0]):
        with pytest.raises(ValueError, match="weights"):
            M.weighted_ensemble(conf, torch.tensor(bad, dtype=torch.float64))
    with pytest.raises(ValueError, match="weights"):
        M.weighted_ensemble(conf, torch.ones(2))
    assert M.weighted_ensemble(conf.float(), torch.tensor([1, 1, 2])).dtype == torch.float32


def maqa_consistency_ref(answer_lists):
    """MAQA's re-scored consistency over parsed answer lists: the ordered-pair mean of
    |{a in ans_i : a in ans_j}| / |ans_i|, an empty list scoring 0."""
    vals = []
    for i, a in enumerate(answer_lists):
        for j, b in enumerate(answer_lists):
            if i != j:
                vals.append(sum(x in b for x in a) / len(a) if a else 0.0)
    return float(np.mean(vals)) if vals else float("nan")


def test_maqa_response_consistency_against_lists():
    rng = np.random.default_rng(3)
    Q, K = 7, 5
    lists = [[sorted(set(rng.choice(["paris", "rome", "oslo", "bern", "lima"], size=rng.integers(0, 4))))
              for _ in range(K)] for _ in range(Q)]
    overlap = torch.tensor([[[sum(x in b for x in a) for b in row] for a in row] for row in lists])
    n = torch.tensor([[len(a) for a in row] for row in lists])
    mask = torch.from_numpy(rng.random((Q, K)) > 0.2)
    mask[0] = False
    mask[0, 1] = True  # one valid response: NaN
    got = M.maqa_response_consistency(overlap, n, sample_mask=mask)
    assert got[0].isnan()
    for q in range(1, Q):
        keep = [lists[q][k] for k in range(K) if mask[q, k]]
        want = maqa_consistency_ref(keep)
        if np.isnan(want):
            assert got[q].isnan()
        else:
            assert got[q].item() == pytest.approx(-want, rel=1e-6)
    n2 = n.clone()
    n2[3, 0] = -1
    assert M.maqa_response_consistency(overlap, n2)[3].isnan()


def test_blackbox_argument_errors():
    x = torch.rand(3, 4)
    with pytest.raises(ValueError, match="contra_backward"):
        M.uqlm_noncontradiction(x, x[:, :3])
    with pytest.raises(TypeError, match="entail_forward"):
        M.uqlm_entailment(x.long(), x)
    with pytest.raises(TypeError, match="sample_ids"):
        M.uqlm_exact_match(torch.zeros(3, dtype=torch.int64), x)
    with pytest.raises(ValueError, match="sample_ids"):
        M.uqlm_exact_match(torch.zeros(3, dtype=torch.int64), torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="original_embedding"):
        M.uqlm_cosine_sim(torch.rand(3, 5), torch.rand(3, 4, 6))
    with pytest.raises(ValueError, match="overlap"):
        M.maqa_response_consistency(torch.zeros(3, 4, 5), torch.ones(3, 4))
    with pytest.raises(ValueError, match="n_answers"):
        M.maqa_response_consistency(torch.zeros(3, 4, 4), torch.ones(3, 5))
    with pytest.raises(ValueError, match="sample_mask"):
        M.uqlm_entailment(x, x, sample_mask=torch.ones(3, 5, dtype=torch.bool))
    for name in ("uqlm_noncontradiction", "uqlm_entailment", "uqlm_exact_match", "uqlm_cosine_sim",
                 "uqlm_consistency_and_confidence", "uqlm_semantic_density", "maqa_response_consistency"):
        assert M.REGISTRY[name].fn is getattr(M, name)
