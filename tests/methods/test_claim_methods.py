"""flashuq.methods claim-level estimators (docs/methods.md#claim-level) against LM-Polygraph 0.7.0's own
``estimators/claim`` classes (their modules imported bare; the two that import NLTK's stop-word list and
the claim-extraction calculator get stand-ins for those imports, which they only use as type hints or
default arguments), on ragged sequences with overlapping, unsorted claims; BoostedProb's claim version
against the ``boostedprob`` package per sequence; errors."""

import sys
import types

import boostedprob as bp_package
import numpy as np
import pytest
import torch

import flashuq as fuq
from flashuq import methods as M
from flashuq.methods.ccp import CONTRA, ENTAIL, NEUTRAL
from lmp_cases import lm_polygraph_estimator

NAMES = {ENTAIL: "entail", NEUTRAL: "neutral", CONTRA: "contra"}
LENGTHS = [8, 5, 3]
ALIGNED = [[[0, 1, 2], [5, 3, 7], [2]], [[4, 0]], [[1], [0, 1, 2], [2, 1]]]


def lmp_claim(module: str, cls: str, monkeypatch=None):
    if monkeypatch is not None:  # what the module imports but these tests never reach
        corpus = types.ModuleType("nltk.corpus")
        corpus.stopwords = None
        nltk = types.ModuleType("nltk")
        nltk.corpus = corpus
        claims_mod = types.ModuleType("lm_polygraph.stat_calculators.extract_claims")
        claims_mod.Claim = object
        for name, mod in (("nltk", nltk), ("nltk.corpus", corpus),
                          ("lm_polygraph.stat_calculators.extract_claims", claims_mod)):
            monkeypatch.setitem(sys.modules, name, mod)
    return getattr(lm_polygraph_estimator("claim." + module), cls)


def claims_objects():
    return [[types.SimpleNamespace(aligned_token_ids=ids) for ids in claims] for claims in ALIGNED]


def case(seed=0, V=40):
    g = torch.Generator().manual_seed(seed)
    B, T = len(LENGTHS), max(LENGTHS)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    logits[:, :, V - 3:] = -torch.inf                       # masked vocabulary entries
    tokens = torch.randint(0, V - 3, (B, T), generator=g)
    mask = torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]
    return logits, tokens, mask, g


def per_sample(x, mask):
    return [x[b][mask[b]].numpy().copy() for b in range(x.shape[0])]


def flat(nested):
    return np.array([v for row in nested for v in row], dtype=np.float64)


def test_token_stat_claims_match_lm_polygraph():
    logits, tokens, mask, g = case()
    s = fuq.token_stats(logits, tokens)
    cl = fuq.claims_from_lists(ALIGNED)
    lp_full = torch.log_softmax(logits, -1)
    lm = torch.randn(s.logprob.shape, generator=g, dtype=torch.float64) - 3
    relevance = torch.rand(s.logprob.shape, generator=g, dtype=torch.float64)
    stats = {"claims": claims_objects(), "greedy_log_likelihoods": per_sample(s.logprob, mask),
             "entropy": per_sample(s.entropy, mask), "greedy_log_probs": per_sample(lp_full, mask),
             "greedy_lm_log_likelihoods": per_sample(lm, mask),
             "token_similarity": per_sample(1 - relevance, mask)}
    cases = [
        (M.maximum_claim_probability(s, cl), "max_probability", "MaximumClaimProbability"),
        (M.perplexity_claim(s, cl), "perplexity", "PerplexityClaim"),
        (M.max_token_entropy_claim(s, cl), "token_entropy", "MaxTokenEntropyClaim"),
        (M.self_certainty_claim(s, cl), "self_certainty", "SelfCertaintyClaim"),
        (M.pmi_claim(s, lm, cl, mask), "pointwise_mutual_information", "PointwiseMutualInformationClaim"),
        (M.token_sar_claim(s, relevance, cl, mask), "token_sar", "TokenSARClaim"),
    ]
    worst = 0.0
    for got, module, cls in cases:
        want = flat(lmp_claim(module, cls)()(stats))
        assert got.dtype == torch.float64 and got.shape == (7,)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14, err_msg=cls)
        worst = max(worst, float(np.abs(got.numpy() - want).max()))
    assert worst < 1e-12
    # padding holds anything: NaN past each sequence's end leaves every claim unchanged
    bad = logits.clone()
    bad[~mask] = torch.nan
    s2 = fuq.token_stats(bad, tokens)
    torch.testing.assert_close(M.perplexity_claim(s2, cl), cases[1][0], rtol=0, atol=0)
    torch.testing.assert_close(M.token_sar_claim(s2, relevance, cl, mask), cases[5][0], rtol=0, atol=0)


def test_ccp_claim_matches_lm_polygraph(monkeypatch):
    logits, tokens, mask, g = case(1)
    B, T, A = len(LENGTHS), max(LENGTHS), 5
    alt = torch.log_softmax(logits, -1).topk(A, -1).values
    fwd = torch.randint(0, 3, (B, T, A), generator=g)
    bwd = torch.randint(0, 3, (B, T, A), generator=g)
    stop = torch.rand(B, T, generator=g) < 0.3
    stop_words = {f"w{b}_{t}" for b in range(B) for t in range(T) if stop[b, t]}
    cls = lmp_claim("claim_conditioned_probability", "ClaimConditionedProbabilityClaim", monkeypatch)
    est = cls(nli_context="no_context", is_stopword=lambda w: w in stop_words)
    alts, nlis = [], []
    for b in range(B):
        alts.append([]), nlis.append([])
        for t in range(LENGTHS[b]):
            alts[b].append([(f"w{b}_{t}" if i == 0 else f"alt{i}", alt[b, t, i].item()) for i in range(A)])
            m = [["neutral"] * A for _ in range(A)]
            for i in range(A):
                m[0][i], m[i][0] = NAMES[int(fwd[b, t, i])], NAMES[int(bwd[b, t, i])]
            nlis[b].append(m)
    want = flat(est({"claims": claims_objects(), "greedy_tokens_alternatives": alts,
                     "greedy_tokens_alternatives_nli": nlis}))
    got = M.ccp_claim(alt, fwd, bwd, fuq.claims_from_lists(ALIGNED), stopword_mask=stop)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-300)
    assert bool((got > -1).any())  # some claims hold contradicted alternatives


def test_attention_score_claim_matches_lm_polygraph():
    g = torch.Generator().manual_seed(3)
    B, L, H, N = len(LENGTHS), 4, 3, 12
    raw = torch.rand(B, L, H, N, N, generator=g, dtype=torch.float64).tril() + torch.eye(N, dtype=torch.float64)
    attn = raw / raw.sum(-1, keepdim=True)
    rs = torch.tensor([N - n for n in LENGTHS])              # each response is the last |y| positions
    cls = lmp_claim("attention_score", "AttentionScoreClaim")
    for layer in (None, 1, -1):
        est = cls.__new__(cls)                               # (its constructor reads a model config)
        est.layer = L // 2 if layer is None else layer % L
        want = flat(est({"forwardpass_attention_weights": [attn[b].numpy() for b in range(B)],
                         "greedy_tokens": [[0] * n for n in LENGTHS], "claims": claims_objects()}))
        got = M.attention_score_claim(attn, rs, fuq.claims_from_lists(ALIGNED), layer=layer)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
        diag = M.attention_score_claim(torch.diagonal(attn, dim1=-2, dim2=-1), rs, fuq.claims_from_lists(ALIGNED),
                                       layer=layer)
        torch.testing.assert_close(diag, got, rtol=0, atol=0)
    with pytest.raises(ValueError, match="claims.tokens"):
        M.attention_score_claim(attn, torch.tensor([N - 2, 0, 0]), fuq.claims_from_lists(ALIGNED))


def test_frequency_scoring_claim_matches_lm_polygraph(monkeypatch):
    g = torch.Generator().manual_seed(4)
    C, S = 7, 6
    probs = torch.softmax(torch.randn(C, S, 3, generator=g, dtype=torch.float64) * 2, -1)
    est = lmp_claim("frequency_scoring", "FrequencyScoringClaim", monkeypatch)()
    nli, k = [], 0
    for claims in ALIGNED:
        nli.append([])
        for _ in claims:
            nli[-1].append([{NAMES[j]: probs[k, s, j].item() for j in range(3)} for s in range(S)])
            k += 1
    want = flat(est({"claims": claims_objects(), "nli_to_sample_texts": nli}))
    got = M.frequency_scoring_claim(probs)
    np.testing.assert_array_equal(got.numpy(), want)
    assert len(set(want.tolist())) > 2
    torch.testing.assert_close(M.frequency_scoring_claim(probs.argmax(-1)), got, rtol=0, atol=0)
    # ties go as LM-Polygraph's max over {entail, contra, neutral}: entail, then contra, then neutral
    ties = torch.tensor([[[0.1, 0.45, 0.45], [0.4, 0.2, 0.4], [0.4, 0.4, 0.2]]], dtype=torch.float64)
    want_ties = est({"claims": [[types.SimpleNamespace(aligned_token_ids=[0])]],
                     "nli_to_sample_texts": [[[{"entail": float(r[0]), "contra": float(r[2]), "neutral": float(r[1])}
                                               for r in ties[0]]]]})
    assert M.frequency_scoring_claim(ties).tolist() == [want_ties[0][0]] == [1.0 - 2.0]
    keep = torch.arange(S) < 4
    torch.testing.assert_close(M.frequency_scoring_claim(probs, keep.expand(C, S)),
                               M.frequency_scoring_claim(probs[:, :4]), rtol=0, atol=0)


def test_boostedprob_claim_against_the_package_per_sequence():
    logits, tokens, mask, _ = case(5)
    logits[:, :, :3] += 6
    logits[:, :, 3:] -= 1
    got = M.boostedprob_claim(logits, tokens.where(torch.arange(8) % 2 == 0, 0), fuq.claims_from_lists(ALIGNED))
    want = []
    for b, claims in enumerate(ALIGNED):
        y = tokens[b].where(torch.arange(8) % 2 == 0, 0)
        per_token = bp_package.calculate_boostedprob(torch.log_softmax(logits[b], -1), y).numpy()
        want += [-per_token[ids].mean() for ids in claims]
    np.testing.assert_allclose(got.numpy(), np.array(want), rtol=1e-12)


def test_focus_claim_is_the_mean_of_the_token_scores():
    g = torch.Generator().manual_seed(6)
    B, T, V = len(LENGTHS), 8, 30
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3
    tokens = torch.randint(0, V, (B, T), generator=g)
    raw = torch.rand(B, T, T, generator=g, dtype=torch.float64).tril()
    attn = raw / raw.sum(-1, keepdim=True)
    kw = torch.rand(B, T, generator=g) > 0.4
    kw[2] = False
    idf = torch.rand(V, generator=g, dtype=torch.float64) + 0.5
    got = M.focus_claim(logits, tokens, attn, kw, idf, fuq.claims_from_lists(ALIGNED), gamma=0.9, p_threshold=0.01)
    # LM-Polygraph focus.py's token loop (after its spaCy keyword step), then FocusClaim's mean
    want = []
    for b, claims in enumerate(ALIGNED):
        prob = torch.softmax(logits[b], -1).numpy()
        prob[prob < 0.01] = 0
        prob = prob * idf.numpy()
        prob = prob / prob.sum(-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = np.exp2(-np.where(prob > 0, prob * np.log2(prob), 0.0).sum(-1))
        hc = -np.log(prob[np.arange(T), tokens[b].numpy()] + 1e-5) + ent
        k = kw[b].numpy()
        if not k.any():
            want += [np.nan] * len(claims)
            continue
        a = attn[b].numpy()
        w = np.zeros_like(a)
        w[k] = a[k] / (a[k].sum(1, keepdims=True) + 1e-6)
        f = []
        for i in range(T):
            f.append(hc[i] + (0.9 * (np.array(f) * w[i, : len(f)]).sum() if f else 0.0))
        want += [np.array(f)[ids].mean() for ids in claims]
    np.testing.assert_allclose(got.numpy(), np.array(want), rtol=1e-12)
    assert got[-3:].isnan().all() and not got[:-3].isnan().any()


def test_claim_method_errors_and_registry():
    logits, tokens, mask, _ = case()
    s = fuq.token_stats(logits, tokens)
    cl = fuq.claims_from_lists(ALIGNED)
    with pytest.raises(ValueError, match="claims.tokens"):
        M.perplexity_claim(s, fuq.claims_from_lists([[[9]]]))
    with pytest.raises(TypeError, match="claims"):
        M.maximum_claim_probability(s, ALIGNED)
    with pytest.raises(ValueError, match="lm_logprobs"):
        M.pmi_claim(s, torch.zeros(3, 7, dtype=torch.float64), cl)
    with pytest.raises(ValueError, match="mask"):
        M.pmi_claim(s, s.logprob, cl, torch.ones(3, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="stopword_mask"):
        M.ccp_claim(torch.zeros(3, 8, 4), torch.zeros(3, 8, 4, dtype=torch.int64), None, cl,
                    stopword_mask=torch.ones(3, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="nli_to_samples"):
        M.frequency_scoring_claim(torch.rand(3, 4, 2))
    with pytest.raises(ValueError, match="nli_to_samples"):
        M.frequency_scoring_claim(torch.full((3, 4), 3))
    with pytest.raises(TypeError, match="nli_to_samples"):
        M.frequency_scoring_claim(torch.ones(3, 4, dtype=torch.bool))
    for name in ("maximum_claim_probability", "perplexity_claim", "max_token_entropy_claim", "self_certainty_claim",
                 "pmi_claim", "token_sar_claim", "ccp_claim", "boostedprob_claim", "focus_claim",
                 "attention_score_claim", "frequency_scoring_claim", "boostedprob"):
        assert M.REGISTRY[name].fn is getattr(M, name)
