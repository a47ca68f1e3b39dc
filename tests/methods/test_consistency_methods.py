"""flashuq.methods.consistency (docs/methods.md#consistency-methods): CoCoA-MSP/PPL/MTE and semantic
density against LM-Polygraph 0.7.0's own estimator classes (``cocoa.py``, ``semantic_density.py``;
their modules imported bare, without the rest of LM-Polygraph), one question at a time; sample masks,
duplicate texts, bad rows, argument errors."""


import numpy as np
import pytest
import torch

import flashuq as fuq
from flashuq import methods as M
from lmp_cases import lm_polygraph_estimator


def lm_polygraph(module):
    return lm_polygraph_estimator(module)


def greedy(B=6, T=9, V=50, seed=0):
    """The greedy answers' token statistics, ragged (mask), fp64."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    tokens = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return fuq.token_stats(logits, tokens), mask


def test_cocoa_matches_lm_polygraph():
    cocoa = lm_polygraph("cocoa")
    stats, mask = greedy()
    B, K = 6, 5
    g = torch.Generator().manual_seed(1)
    sim = torch.rand(B, K, generator=g, dtype=torch.float64)
    smask = torch.rand(B, K, generator=g) > 0.3
    smask[:, 0] = True
    got = {name: getattr(M, name)(stats, sim, mask, sample_mask=smask) for name in ("cocoa_msp", "cocoa_ppl", "cocoa_mte")}
    for b in range(B):
        m = mask[b]
        st = {"greedy_log_likelihoods": [stats.logprob[b][m].numpy()], "entropy": [stats.entropy[b][m].numpy()],
              "greedy_sentence_similarity": sim[b][smask[b]].numpy()[None]}
        for name, cls in (("cocoa_msp", "CocoaMSP"), ("cocoa_ppl", "CocoaPPL"), ("cocoa_mte", "CocoaMTE")):
            want = getattr(cocoa, cls)()(st)[0]
            assert got[name][b].item() == pytest.approx(want, rel=1e-12, abs=1e-12), (name, b)
    # no valid sample: NaN for that question only; a NaN similarity likewise
    smask[2] = False
    sim[4, smask[4].nonzero()[0, 0]] = torch.nan
    u = M.cocoa_msp(stats, sim, mask, sample_mask=smask)
    assert u[2].isnan() and u[4].isnan() and u[[0, 1, 3, 5]].isfinite().all()
    # all samples valid by default
    torch.testing.assert_close(M.cocoa_ppl(stats, sim[:, :1], mask), stats.logprob.new_tensor(
        [-(stats.logprob[b][mask[b]].mean().item()) * (1 - sim[b, 0].item()) for b in range(B)]),
        rtol=1e-14, atol=0, equal_nan=True)


def test_cocoa_dtypes():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 40, generator=g)
    stats32 = fuq.token_stats(logits, torch.randint(0, 40, (3, 5), generator=g))
    sim = torch.rand(3, 4, generator=g)
    assert M.cocoa_msp(stats32, sim).dtype == torch.float32
    assert M.cocoa_msp(stats32, sim.double()).dtype == torch.float64
    torch.testing.assert_close(M.cocoa_mte(stats32, sim.double()), M.cocoa_mte(stats32, sim).double(),
                               rtol=1e-6, atol=1e-6)


def semantic_density_case(B=7, K=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(B, K, generator=g, dtype=torch.float64) * 8
    lengths = torch.randint(1, 12, (B, K), generator=g)
    c = torch.rand(B, K, generator=g, dtype=torch.float64) * 0.9
    nu = (1 - c) * torch.rand(B, K, generator=g, dtype=torch.float64)
    c[0, 1] = 0.8
    nu[0, 1] = 0.6            # d = 1.1 > 1: kernel 0
    ids = torch.randint(0, 3, (B, K), generator=g)  # duplicate texts
    return lp, lengths, c, nu, ids


def test_semantic_density_matches_lm_polygraph():
    sd = lm_polygraph("semantic_density").SemanticDensity()
    stats, mask = greedy(B=7, seed=5)
    lp, lengths, c, nu, ids = semantic_density_case()
    smask = torch.rand(7, 6, generator=torch.Generator().manual_seed(9)) > 0.25
    smask[:, 0] = True
    got = M.semantic_density(stats, lp, lengths, c, nu, mask, sample_mask=smask, text_ids=ids)
    assert got.dtype == torch.float64
    for b in range(7):
        keep = smask[b].nonzero().flatten().tolist()
        st = {"greedy_log_likelihoods": [stats.logprob[b][mask[b]].numpy()],
              "sample_log_probs": [lp[b, keep].numpy()],
              "sample_tokens": [[[0] * int(lengths[b, i]) for i in keep]],
              "sample_texts": [[f"text {int(ids[b, i])}" for i in keep]],
              "concat_greedy_semantic_matrix_contra_forward": [c[b, keep].numpy()],
              "concat_greedy_semantic_matrix_neutral_forward": [nu[b, keep].numpy()]}
        assert got[b].item() == pytest.approx(sd(st)[0], rel=1e-12, abs=1e-12), b
    # without text ids every valid sample counts once (all texts distinct)
    plain = M.semantic_density(stats, lp, lengths, c, nu, mask)
    st = {"greedy_log_likelihoods": [stats.logprob[1][mask[1]].numpy()], "sample_log_probs": [lp[1].numpy()],
          "sample_tokens": [[[0] * int(n) for n in lengths[1]]], "sample_texts": [[f"t{i}" for i in range(6)]],
          "concat_greedy_semantic_matrix_contra_forward": [c[1].numpy()],
          "concat_greedy_semantic_matrix_neutral_forward": [nu[1].numpy()]}
    assert plain[1].item() == pytest.approx(sd(st)[0], rel=1e-12)


def test_semantic_density_bad_rows_and_padding():
    stats, mask = greedy(B=7, seed=5)
    lp, lengths, c, nu, ids = semantic_density_case()
    base = M.semantic_density(stats, lp, lengths, c, nu, mask, text_ids=ids)
    lengths2, c2 = lengths.clone(), c.clone()
    lengths2[2, 0] = 0                # a valid sample without tokens: NaN for its question only
    c2[5, 0] = torch.nan
    bad = M.semantic_density(stats, lp, lengths2, c2, nu, mask, text_ids=ids)
    assert bad[2].isnan() and bad[5].isnan()
    keep = [0, 1, 3, 4, 6]
    assert torch.equal(bad[keep], base[keep])
    # padded with garbage samples that the mask drops: the same values
    pad = lambda x, v: torch.cat([x, torch.full((7, 2), v, dtype=x.dtype)], 1)  # noqa: E731
    smask = torch.cat([torch.ones(7, 6, dtype=torch.bool), torch.zeros(7, 2, dtype=torch.bool)], 1)
    padded = M.semantic_density(stats, pad(lp, float("nan")), pad(lengths, 0), pad(c, float("inf")), pad(nu, -5.0),
                                mask, sample_mask=smask, text_ids=pad(ids, 0))
    torch.testing.assert_close(padded, base, rtol=1e-15, atol=0)


def test_consistency_argument_errors():
    stats, mask = greedy()
    sim = torch.rand(6, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="greedy_similarity"):
        M.cocoa_msp(stats, sim[:5], mask)
    with pytest.raises(TypeError, match="greedy_similarity"):
        M.cocoa_mte(stats, sim.to(torch.int64), mask)
    with pytest.raises(ValueError, match="sample_mask"):
        M.cocoa_ppl(stats, sim, mask, sample_mask=torch.ones(6, 3, dtype=torch.bool))
    lp, lengths, c, nu, ids = semantic_density_case(B=6, K=4)
    with pytest.raises(ValueError, match="contra"):
        M.semantic_density(stats, lp, lengths, c[:, :3], nu, mask)
    with pytest.raises(TypeError, match="text_ids"):
        M.semantic_density(stats, lp, lengths, c, nu, mask, text_ids=ids.double())
    with pytest.raises(ValueError, match="neutral"):
        M.semantic_density(stats, lp, lengths, c, nu[:5], mask)
    with pytest.raises(ValueError, match="sample_logprobs"):
        M.semantic_density(stats, lp[:5], lengths, c, nu, mask)
    with pytest.raises(TypeError, match="sample_lengths"):
        M.semantic_density(stats, lp, [[1] * 4] * 6, c, nu, mask)
    for name in ("cocoa_msp", "cocoa_ppl", "cocoa_mte", "semantic_density"):
        assert M.REGISTRY[name].fn is getattr(M, name)
