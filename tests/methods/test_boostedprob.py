"""flashuq.methods.boostedprob (docs/methods.md#boostedprob): BoostedProb against the ``boostedprob``
package's own ``calculate_boostedprob`` (0.1.1), LM-Polygraph 0.7.0's ``BoostedProbSequence`` and the
float64 transcription in flashuq.reference; the dominance cut at its edges, masks, dtypes, errors."""

import boostedprob as bp_package
import numpy as np
import pytest
import torch

from flashuq import methods as M
from flashuq.reference import boostedprob_ref
from lmp_cases import lm_polygraph_estimator


def peaked_logits(B, T, V, seed, dtype=torch.float64):
    """Steps with 0..4 dominant tokens: a few raised logits over a flat or noisy rest."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, V, generator=g, dtype=dtype)
    for b in range(B):
        for t in range(T):
            k = int(torch.randint(0, 5, (1,), generator=g))
            ids = torch.randperm(V, generator=g)[:k]
            z[b, t, ids] += torch.rand(k, generator=g, dtype=dtype) * 4 + 4
    return z


def tokens_for(z, seed):
    """Half the steps emit the argmax (often dominant), the rest a random token."""
    g = torch.Generator().manual_seed(seed + 1)
    y = torch.randint(0, z.shape[-1], z.shape[:2], generator=g)
    top = z.argmax(-1)
    pick = torch.rand(z.shape[:2], generator=g) < 0.5
    return torch.where(pick, top, y)


def package(logp, y, **kw):
    return bp_package.calculate_boostedprob(logp.clone(), y, **kw)


@pytest.mark.parametrize("V", [7, 300, 3000])
def test_token_scores_match_the_package(V):
    z = peaked_logits(3, 9, V, seed=V)
    y = tokens_for(z, V)
    logp = torch.log_softmax(z, -1)
    got = M.boostedprob_token_scores(z, y)
    want = package(logp, y)
    assert got.dtype == torch.float64 and got.shape == (3, 9)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-300)
    # the weighted variant (after the package's 0.1.1): the transcription in flashuq.reference
    w = M.boostedprob_token_scores(z, y, score="weighted_sum_dominant_mass")
    for b, t in ((0, 0), (1, 4), (2, 8)):
        want_w = boostedprob_ref(logp[b, t].numpy(), int(y[b, t]), score="weighted_sum_dominant_mass")
        assert w[b, t].item() == pytest.approx(want_w, rel=1e-12)
    # the cases cover both branches: dominant tokens boosted above their probability, others not
    p_y = logp.gather(-1, y[..., None]).squeeze(-1).exp()
    assert bool((got > p_y * (1 + 1e-9)).any()) and bool((got == p_y).any())


def test_steps_beyond_the_fused_top_32_match_the_package():
    # 40 tokens of about 2% each, after a few larger ones: the 32nd probability exceeds epsilon, so the
    # fused pass's top 32 cannot decide the cut and the step is redone from its larger window
    g = torch.Generator().manual_seed(9)
    z = torch.randn(3, 5, 400, generator=g, dtype=torch.float64) * 0.3
    z[:, :, 10:50] += 4.0
    z[:, :, :3] += torch.tensor([7.0, 6.5, 5.0], dtype=torch.float64)
    y = tokens_for(z, 9)
    y[:, ::2] = 20                                                  # a token inside the broad cluster
    p32 = torch.softmax(z, -1).topk(32, -1).values[..., -1]
    assert bool((p32 > 0.005).all())
    got = M.boostedprob_token_scores(z, y)
    want = package(torch.log_softmax(z, -1), y)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-300)
    assert bool((got > torch.softmax(z, -1).gather(-1, y[..., None])[..., 0] * 1.5).any())
    zf = z.float()
    torch.testing.assert_close(M.boostedprob_token_scores(zf, y).double(), M.boostedprob_token_scores(zf.double(), y),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("p_jump,epsilon", [(0.1, 0.02), (0.5, 0.0), (0.0, 0.001)])
def test_other_thresholds_match_the_package(p_jump, epsilon):
    # epsilon = 0 sorts the whole step, as the package does
    z = peaked_logits(2, 6, 2000, seed=int(p_jump * 10) + 3) * 0.5
    y = tokens_for(z, 5)
    got = M.boostedprob_token_scores(z, y, p_jump=p_jump, epsilon=epsilon)
    want = package(torch.log_softmax(z, -1), y, p_jump=p_jump, epsilon=epsilon)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-300)


def test_reference_transcription_and_edges():
    z = peaked_logits(2, 5, 50, seed=11)
    y = tokens_for(z, 11)
    got = M.boostedprob_token_scores(z, y, score="weighted_sum_dominant_mass", gamma=0.3)
    for b in range(2):
        for t in range(5):
            want = boostedprob_ref(torch.log_softmax(z[b, t], -1).numpy(), int(y[b, t]),
                                   score="weighted_sum_dominant_mass", gamma=0.3)
            assert got[b, t].item() == pytest.approx(want, rel=1e-12), (b, t)
    # one dominant token of probability 0.9: it scores 0.9, a tied pair scores its sum
    p = torch.tensor([[[0.9, 0.04, 0.035, 0.025], [0.45, 0.45, 0.05, 0.05]]], dtype=torch.float64)
    s = M.boostedprob_token_scores(p.log(), torch.tensor([[0, 1]]))
    assert s[0].tolist() == pytest.approx([0.9, 0.9], rel=1e-14)
    # a flat distribution has no cut: every token keeps its probability; V = 1 gives 1
    flat = torch.zeros(1, 1, 8, dtype=torch.float64)
    assert M.boostedprob_token_scores(flat, torch.tensor([[3]])).item() == pytest.approx(1 / 8, rel=1e-14)
    assert M.boostedprob_token_scores(torch.zeros(1, 1, 1), torch.tensor([[0]])).item() == 1.0
    # -inf entries are probability 0; a NaN or all -inf step gives NaN
    z2 = z[:1, :3].clone()
    z2[0, 0, 40:] = -torch.inf
    z2[0, 1, 5] = torch.nan
    z2[0, 2] = -torch.inf
    out = M.boostedprob_token_scores(z2, torch.tensor([[0, 0, 0]]))
    want0 = boostedprob_ref(torch.log_softmax(z2[0, 0], -1).numpy(), 0)
    assert out[0, 0].item() == pytest.approx(want0, rel=1e-12) and out[0, 1:].isnan().all()


def test_sequence_matches_lm_polygraph_and_masks():
    est = lm_polygraph_estimator("boostedprob_score").BoostedProbSequence()
    z = peaked_logits(4, 7, 120, seed=2)
    y = tokens_for(z, 2)
    lengths = torch.tensor([7, 3, 1, 5])
    mask = torch.arange(7)[None, :] < lengths[:, None]
    got = M.boostedprob(z, y, mask)
    logp = torch.log_softmax(z, -1)
    stats = {"greedy_log_probs": [logp[b, : lengths[b]].numpy().copy() for b in range(4)],
             "greedy_tokens": [y[b, : lengths[b]].tolist() for b in range(4)]}
    torch.testing.assert_close(got, torch.from_numpy(est(stats)), rtol=1e-12, atol=0)
    # padding holds anything
    zp = z.clone()
    zp[~mask] = torch.nan
    torch.testing.assert_close(M.boostedprob(zp, y, mask), got, rtol=0, atol=0)
    assert M.boostedprob(z, y, torch.zeros(4, 7, dtype=torch.bool)).isnan().all()


def test_low_precision_inputs():
    z = peaked_logits(2, 6, 500, seed=4, dtype=torch.float32)
    y = tokens_for(z, 4)
    want = M.boostedprob_token_scores(z.double(), y)
    for dt in (torch.float32, torch.bfloat16):
        got = M.boostedprob_token_scores(z.to(dt), y)
        assert got.dtype == torch.float32
        zd = z.to(dt).double()
        torch.testing.assert_close(got.double(), M.boostedprob_token_scores(zd, y), rtol=1e-5, atol=1e-7)
    assert M.boostedprob(z, y).dtype == torch.float32 and np.isfinite(want.numpy()).all()


def test_argument_errors():
    z = torch.randn(2, 3, 10)
    y = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match="logits"):
        M.boostedprob(z.long(), y)
    with pytest.raises(TypeError, match="tokens"):
        M.boostedprob(z, y.float())
    with pytest.raises(ValueError, match="tokens"):
        M.boostedprob(z, y + 10)
    with pytest.raises(ValueError, match="tokens"):
        M.boostedprob(z, y[:, :2])
    with pytest.raises(ValueError, match="logits"):
        M.boostedprob(z[0], y)
    with pytest.raises(ValueError, match="p_jump"):
        M.boostedprob(z, y, p_jump=-0.1)
    with pytest.raises(ValueError, match="epsilon"):
        M.boostedprob(z, y, epsilon=float("nan"))
    with pytest.raises(ValueError, match="gamma"):
        M.boostedprob(z, y, gamma=-0.5)
    with pytest.raises(ValueError, match="score"):
        M.boostedprob(z, y, score="is_dominant")
    with pytest.raises(ValueError, match="mask"):
        M.boostedprob(z, y, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="logits"):
        M.boostedprob([[1.0]], y)
