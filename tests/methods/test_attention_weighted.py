"""flashuq.methods.attention_weighted (docs/methods.md#csl, #focus): CSL against LM-Polygraph 0.7.0's own
``CSL`` class (its module imported bare), Focus against a numpy transcription of LM-Polygraph's
``token_level_focus_scores`` and ``Focus.__call__`` after the spaCy keyword step (``focus.py`` imports
spaCy, datasets and transformers at module level, so it is transcribed, not imported); masks, padding,
argument errors."""


import numpy as np
import pytest
import torch

from flashuq import methods as M
from lmp_cases import lm_polygraph_estimator


def lm_polygraph_csl():
    return lm_polygraph_estimator("csl").CSL()


def test_csl_matches_lm_polygraph():
    g = torch.Generator().manual_seed(0)
    B, L, H, T = 5, 3, 4, 9
    attn = torch.rand(B, L, H, T, generator=g, dtype=torch.float64)
    ll = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    got = M.csl(attn, ll, mask)
    ref = lm_polygraph_csl()
    for b in range(B):
        n = int(lengths[b])
        want = ref({"greedy_log_likelihoods": [ll[b, :n].numpy()],
                    "attention_weights_eliciting_prompt": [attn[b, :, :, :n].reshape(L * H, n).numpy().copy()]})[0]
        assert got[b].item() == pytest.approx(want, rel=1e-12)
    torch.testing.assert_close(M.csl(attn.reshape(B, L * H, T), ll, mask), got, rtol=0, atol=0)
    # padding holds anything; zero weights give NaN
    attn2, ll2 = attn.clone(), ll.clone()
    attn2[..., -1][~mask[:, -1]] = torch.nan
    ll2[~mask] = torch.inf
    torch.testing.assert_close(M.csl(attn2, ll2, mask), got, rtol=0, atol=0)
    assert M.csl(torch.zeros(1, 2, 4), torch.zeros(1, 4))[0].isnan()


def focus_ref(logp, tokens, attn, kw, idf, p, gamma):
    """LM-Polygraph focus.py after the spaCy step, for one answer (numpy, as the reference computes it)."""
    prob = np.exp(logp)
    prob[prob < p] = 0
    if prob.shape[-1] > len(idf):
        prob[:, : len(idf)] = prob[:, : len(idf)] * idf
    else:
        prob = prob * idf
    prob = prob / np.sum(prob, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = np.exp2(np.sum(-np.where(prob > 0, prob * np.log2(prob), 0.0), axis=-1))
    hc = -np.log(prob[np.arange(len(tokens)), tokens] + 1e-5) + ent
    if not kw.sum():
        return np.nan
    weight = np.zeros_like(attn)
    attn_kw = attn[kw]
    weight[kw] = attn_kw / (np.sum(attn_kw, axis=1, keepdims=True) + 1e-6)
    focus = []
    for i, row in enumerate(weight):
        ue = hc[i]
        if focus:
            ue += gamma * (np.array(focus) * row[: len(focus)]).sum()
        focus.append(ue)
    return float(np.mean(np.array(focus)[kw]))


@pytest.mark.parametrize("idf_len", [30, 40])
def test_focus_matches_reference_transcription(idf_len):
    g = torch.Generator().manual_seed(idf_len)
    B, T, V, L, H = 4, 8, 40, 2, 3
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3
    tokens = torch.randint(0, V, (B, T), generator=g)
    raw = torch.rand(B, L, H, T, T, generator=g, dtype=torch.float64).tril()
    attn = raw / raw.sum(-1, keepdim=True)
    kw = torch.rand(B, T, generator=g) > 0.5
    kw[3] = False                          # no keyword: NaN
    idf = torch.rand(idf_len, generator=g, dtype=torch.float64) * 5 + 0.1
    for p, gamma in ((0.01, 0.9), (0.05, 0.5)):
        got = M.focus(logits, tokens, attn, kw, idf, gamma=gamma, p_threshold=p)
        assert got.dtype == torch.float64 and got[3].isnan()
        for b in range(3):
            want = focus_ref(torch.log_softmax(logits[b], -1).numpy(), tokens[b].numpy(),
                             attn[b].amax((0, 1)).numpy(), kw[b].numpy(), idf.numpy(), p, gamma)
            assert got[b].item() == pytest.approx(want, rel=1e-10), (b, p, gamma)
    # the reduced [B, T, T] attention gives the same; padding steps hold anything
    red = attn.amax((1, 2))
    torch.testing.assert_close(M.focus(logits, tokens, red, kw, idf, gamma=0.9, p_threshold=0.01),
                               M.focus(logits, tokens, attn, kw, idf, gamma=0.9, p_threshold=0.01), rtol=0, atol=0,
                               equal_nan=True)
    n = 5
    mask = torch.arange(T)[None, :] < n
    lg, rd = logits.clone(), red.clone()
    lg[:, n:] = torch.nan
    rd[:, :, n:] = torch.nan
    rd[:, n:] = torch.nan
    short = M.focus(logits[:, :n], tokens[:, :n], red[:, :n, :n], kw[:, :n], idf, gamma=0.9, p_threshold=0.01)
    padded = M.focus(lg, tokens, rd, kw, idf, gamma=0.9, p_threshold=0.01, mask=mask.expand(B, T))
    torch.testing.assert_close(padded, short, rtol=1e-14, atol=0, equal_nan=True)


def test_attention_weighted_argument_errors():
    logits = torch.randn(2, 3, 10)
    tokens = torch.zeros(2, 3, dtype=torch.int64)
    attn = torch.rand(2, 3, 3)
    kw = torch.ones(2, 3, dtype=torch.bool)
    idf = torch.ones(10)
    with pytest.raises(ValueError, match="tokens"):
        M.focus(logits, tokens + 10, attn, kw, idf, gamma=0.9, p_threshold=0.01)
    with pytest.raises(ValueError, match="idf"):
        M.focus(logits, tokens, attn, kw, torch.ones(11), gamma=0.9, p_threshold=0.01)
    with pytest.raises(ValueError, match="attn"):
        M.focus(logits, tokens, attn[:, :2], kw, idf, gamma=0.9, p_threshold=0.01)
    with pytest.raises(ValueError, match="gamma"):
        M.focus(logits, tokens, attn, kw, idf, gamma=float("nan"), p_threshold=0.01)
    with pytest.raises(ValueError, match="p_threshold"):
        M.focus(logits, tokens, attn, kw, idf, gamma=0.9, p_threshold=float("inf"))
    with pytest.raises(TypeError, match="idf"):
        M.focus(logits, tokens, attn, kw, torch.ones(10, dtype=torch.int64), gamma=0.9, p_threshold=0.01)
    with pytest.raises(TypeError):
        M.focus(logits, tokens, attn, kw, idf)  # gamma and p_threshold have no defaults
    with pytest.raises(ValueError, match="keyword_mask"):
        M.focus(logits, tokens, attn, kw[:, :2], idf, gamma=0.9, p_threshold=0.01)
    with pytest.raises(ValueError, match="attn_rows"):
        M.csl(torch.rand(2, 3), torch.rand(2, 3))
    with pytest.raises(ValueError, match="logprobs"):
        M.csl(torch.rand(2, 4, 3), torch.rand(2, 4))
    with pytest.raises(TypeError, match="attn_rows"):
        M.csl([[1.0]], torch.rand(2, 4))
    for name in ("csl", "focus"):
        assert M.REGISTRY[name].fn is getattr(M, name)
