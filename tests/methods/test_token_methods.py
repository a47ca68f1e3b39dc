"""flashuq.methods from token statistics: docs/methods.md#golden-values golden values, numpy transcriptions on
ragged batches, padding invariance."""

import math

import numpy as np
import pytest
import torch

import flashuq as fuq
from flashuq import methods as M


def stats_from_logprobs(lp):
    lp = torch.as_tensor(lp, dtype=torch.float64)
    return fuq.TokenStats(*([lp] * 11))


def test_golden_values_methods_md():
    # docs/methods.md#golden-values, greedy token probabilities [.9, .5, .99, .7]; estimators return the negation of
    # the natural confidence where docs/methods.md#orientation says so
    s = stats_from_logprobs(np.log([[0.9, 0.5, 0.99, 0.7]]))
    assert M.gnll(s).item() == pytest.approx(1.1652329760100053, rel=1e-14)
    assert M.msp(s).item() == pytest.approx(1.1652329760100053, rel=1e-14)
    assert M.chow_sum(s).item() == pytest.approx(1.1652329760100053, rel=1e-14)
    assert M.chow_avg(s).item() == pytest.approx(0.2913082440025013, rel=1e-14)
    assert M.chow_quantile(s).item() == pytest.approx(0.6931471805599453, rel=1e-14)
    assert M.chow_quantile(s, alpha=0.5).item() == pytest.approx(0.23101772979827936, rel=1e-14)
    assert M.geometric_mean_prob(s).item() == pytest.approx(-0.7472852963022815, rel=1e-14)
    assert M.arithmetic_mean_prob(s).item() == pytest.approx(-0.7725, rel=1e-14)


def ragged_batch(seed=0, B=5, T=12, V=50, left=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    tokens = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[1] = 0
    pos = torch.arange(T)[None, :]
    mask = (pos >= T - lengths[:, None]) if left else (pos < lengths[:, None])
    return logits, tokens, mask, lengths


def lm_polygraph_renyi_fisher(logits):
    """LM-Polygraph RenyiNeg / FisherRao per-step values (alpha 1/2, tau 2), transcribed with scipy."""
    from scipy.special import log_softmax, softmax

    lp = log_softmax(logits, axis=-1)
    q = softmax(lp / 2.0, axis=-1)
    V = q.shape[-1]
    r = (np.log((q ** 0.5).sum(-1)) - (0.5 - 1) * np.log(V)) / (0.5 - 1)
    f = 2 / np.pi * np.arccos((np.sqrt(q) * np.sqrt(1.0 / V)).sum(-1))
    return r, f


def numpy_method(name, lp, ent, kurt, sc, maxlp, logits):
    """Direct transcriptions of docs/methods.md#sequence-scores / #token-statistics for one sequence (natural log)."""
    if lp.size == 0:
        return math.nan
    r, f = lm_polygraph_renyi_fisher(logits)
    return {
        "renyi_neg": -r.mean(), "fisher_rao": -f.mean(),
        "msp": -lp.sum(), "gnll": -maxlp.sum(), "perplexity": -lp.mean(), "mean_token_entropy": ent.mean(),
        "max_token_entropy": ent.max(), "geometric_mean_prob": -np.exp(lp.mean()),
        "arithmetic_mean_prob": -np.exp(lp).mean(), "mean_kurtosis": -kurt.mean(), "chow_sum": -lp.sum(),
        "chow_avg": -lp.mean(), "chow_quantile": -np.quantile(lp, 0.0), "self_certainty": -sc.mean(),
    }[name]


@pytest.mark.parametrize("name", M.STATS_ONLY)
def test_each_method_against_numpy(name):
    logits, tokens, mask, lengths = ragged_batch()
    got = M.from_logits(logits, tokens, mask, methods=[name])[name]
    ref = fuq.reference.token_stats(logits, tokens)
    for b in range(len(lengths)):
        m = mask[b].numpy()
        pick = lambda t: t[b].numpy()[m]  # noqa: E731
        want = numpy_method(name, pick(ref.logprob), pick(ref.entropy), pick(ref.kurtosis), pick(ref.self_certainty),
                            pick(ref.max_logprob), logits[b].numpy()[m])
        if math.isnan(want):
            assert math.isnan(got[b].item())
        else:
            assert got[b].item() == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_padding_side_and_padded_values_never_change_results():
    logits, tokens, mask, lengths = ragged_batch(seed=2)
    right = M.from_logits(logits, tokens, mask)
    B, T, V = logits.shape
    ll, lt, lm = torch.full_like(logits, float("nan")), torch.zeros_like(tokens), torch.zeros_like(mask)
    for b, n in enumerate(lengths.tolist()):
        ll[b, T - n:], lt[b, T - n:], lm[b, T - n:] = logits[b, :n], tokens[b, :n], True
    left = M.from_logits(ll, lt, lm)  # padded rows are NaN logits: they must not leak
    for name in right:
        assert torch.equal(right[name].nan_to_num(7.0), left[name].nan_to_num(7.0)), name
        assert math.isnan(right[name][1].item()), name  # the empty sequence


def test_token_sar():
    logits, tokens, mask, lengths = ragged_batch(seed=4)
    stats = fuq.token_stats(logits, tokens)
    rel = torch.rand(mask.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = M.token_sar(stats, rel, mask)
    for b in range(len(lengths)):
        m = mask[b]
        if not m.any():
            assert math.isnan(got[b].item())
            continue
        nll, r = -stats.logprob[b][m].numpy(), rel[b][m].numpy()
        assert got[b].item() == pytest.approx(float((nll * r / r.sum()).sum()), rel=1e-12)
    assert math.isnan(M.token_sar(stats, torch.zeros_like(rel), mask)[0].item())  # Σ R = 0


def test_pmi_and_cpmi_first_token_rule_with_left_padding():
    logits, tokens, mask, lengths = ragged_batch(seed=5, left=True)
    stats = fuq.token_stats(logits, tokens)
    lm = -torch.rand(mask.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got_pmi, got_cpmi = M.pmi(stats, lm, mask), M.cpmi(stats, lm, mask)
    for b in range(len(lengths)):
        m = mask[b]
        if not m.any():
            assert math.isnan(got_pmi[b].item()) and math.isnan(got_cpmi[b].item())
            continue
        ll, l0, H = stats.logprob[b][m].numpy(), lm[b][m].numpy(), stats.entropy[b][m].numpy()
        s = ll - np.where(np.arange(ll.size) > 0, l0, 0.0)
        assert got_pmi[b].item() == pytest.approx(-s.mean(), rel=1e-12)
        use = (np.arange(ll.size) > 0) & (H >= 0.0656)
        s = np.where(use, ll - 3.599 * l0, ll)
        assert got_cpmi[b].item() == pytest.approx(-s.mean(), rel=1e-12)


def test_registry_and_from_logits():
    assert set(M.STATS_ONLY) <= set(M.REGISTRY)
    for name, m in M.REGISTRY.items():
        assert callable(m.fn) and m.paper and m.inputs and m.fn.__doc__, name
    logits, tokens, mask, _ = ragged_batch(seed=3)
    stats = fuq.token_stats(logits, tokens, renyi=True)
    all_ = M.from_logits(logits, tokens, mask)
    for name in M.STATS_ONLY:
        assert torch.equal(all_[name].nan_to_num(7.0), M.REGISTRY[name].fn(stats, mask).nan_to_num(7.0))
    with pytest.raises(ValueError, match="methods"):
        M.from_logits(logits, tokens, mask, methods=["token_sar"])


def lbyl_numpy(values, seg, reduce):
    """Transcription of LBYL's per-sentence reduce, then the mean over sentences (one sequence)."""
    if values.size == 0:
        return math.nan
    sentences, start = [], 0
    for i in range(1, values.size + 1):
        if i == values.size or seg[i] != seg[i - 1]:
            sentences.append(reduce(values[start:i]))
            start = i
    return float(np.mean(sentences))


@pytest.mark.parametrize("left", [False, True])
def test_sentence_level_scores(left):
    logits, tokens, mask, lengths = ragged_batch(seed=6, T=20, left=left)
    stats = fuq.token_stats(logits, tokens)
    g = torch.Generator().manual_seed(3)
    seg = torch.cumsum((torch.rand(mask.shape, generator=g) < 0.25).long(), -1)  # sentence ids, runs
    cases = {
        "sentence_level_max_nll": (lambda s: -s.logprob, np.max),
        "sentence_level_avg_nll": (lambda s: -s.logprob, np.mean),
        "sentence_level_max_entropy": (lambda s: s.entropy, np.max),
        "sentence_level_avg_entropy": (lambda s: s.entropy, np.mean),
    }
    for name, (field, red) in cases.items():
        got = M.REGISTRY[name].fn(stats, seg, mask)
        for b in range(len(lengths)):
            m = mask[b]
            want = lbyl_numpy(field(stats)[b][m].numpy(), seg[b][m].numpy(), red)
            if math.isnan(want):
                assert math.isnan(got[b].item()), name
            else:
                assert got[b].item() == pytest.approx(want, rel=1e-12), name


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
def test_segment_reduce_fp32_near_the_maximum(op):
    # segments are reduced in fp64: a segment sum past the fp32 maximum (6e38) with a finite mean over
    # the row's segments gives that mean, rounded once
    v = torch.tensor([[3e38, 3e38, 1.0, -2e38], [3e38, 3e38, -3e38, -3e38]], dtype=torch.float32)
    seg = torch.tensor([[0, 0, 1, 2], [0, 0, 1, 1]])
    red = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}[op]
    got = fuq.segment_reduce(v, seg, op=op)
    assert got.dtype == torch.float32
    want = [lbyl_numpy(v[b].double().numpy(), seg[b].numpy(), red) for b in range(2)]
    np.testing.assert_array_equal(got.numpy(), np.float32(want))


def test_segment_reduce_bad_input():
    with pytest.raises(ValueError, match="seg_ids"):
        fuq.segment_reduce(torch.ones(2, 3), torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="op"):
        fuq.segment_reduce(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.long), op="logsumexp")
    with pytest.raises(TypeError, match="values"):
        fuq.segment_reduce(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))


def test_maqa_golden_values_and_mean_over_answers():
    # docs/methods.md#golden-values, MAQA: logits [3, 2, .5, .1, -1], k = 3
    row = torch.tensor([3.0, 2.0, 0.5, 0.1, -1.0], dtype=torch.float64)
    logits = torch.zeros(2, 4, 5, dtype=torch.float64)
    logits[0, 1] = row
    logits[0, 3] = row
    logits[1, 2] = row
    pos = torch.tensor([[1, 3], [2, 0]])
    pos_mask = torch.tensor([[1, 1], [1, 0]])
    t = M.topk_stats_at_positions(logits, pos, pos_mask, k=3)
    assert t.max_prob[0, 0].item() == pytest.approx(0.6564680853949656, rel=1e-14)
    assert t.margin[0, 0].item() == pytest.approx(0.41496697299297897, rel=1e-13)
    assert t.topk_neg_entropy[0, 0].item() == pytest.approx(-0.7768346012413029, rel=1e-13)
    assert t.greedy_entropy[0, 0].item() == pytest.approx(0.2762950753331332, rel=1e-13)
    assert math.isnan(t.max_prob[1, 1].item())
    for fn, want in ((M.maqa_max_prob, -0.6564680853949656), (M.maqa_margin, -0.41496697299297897),
                     (M.maqa_entropy, 0.7768346012413029), (M.maqa_greedy_entropy, 0.2762950753331332)):
        got = fn(logits, pos, pos_mask, k=3)
        assert got.tolist() == pytest.approx([want, want], rel=1e-13), fn.__name__
    with pytest.raises(ValueError, match="pos"):
        M.topk_stats_at_positions(logits, torch.tensor([[1, 9], [0, 0]]), k=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("renyi", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_sequence_scores_equal_each_method(dtype, renyi, masked):
    logits, tokens, mask, _ = ragged_batch(seed=9, left=True)
    stats = fuq.token_stats(logits.to(dtype), tokens, renyi=renyi)
    mask = mask if masked else None
    got = fuq.sequence_scores(stats, mask, chow_alpha=0.25)
    want_names = [n for n in M.SCORES if renyi or n not in ("renyi_neg", "fisher_rao")]
    assert list(got) == want_names
    for name in want_names:
        kw = {"alpha": 0.25} if name == "chow_quantile" else {}
        want = M.REGISTRY[name].fn(stats, mask, **kw)
        assert got[name].dtype == dtype and got[name].shape == (logits.shape[0],)
        # the stacked reductions reduce each row exactly as the single call does: bitwise equal
        assert torch.equal(got[name].nan_to_num(7.0), want.nan_to_num(7.0)), name
    if masked:
        assert all(math.isnan(v[1].item()) for v in got.values())  # the empty sequence


def test_sequence_scores_bad_input():
    logits, tokens, mask, _ = ragged_batch(seed=9)
    stats = fuq.token_stats(logits, tokens)
    with pytest.raises(TypeError, match="stats"):
        fuq.sequence_scores(tuple(stats), mask)
    with pytest.raises(ValueError, match="mask"):
        fuq.sequence_scores(stats, mask[:, 1:])
    with pytest.raises(ValueError, match="alpha"):
        fuq.sequence_scores(stats, mask, chow_alpha=2.0)


def test_renyi_neg_variants():
    logits, tokens, mask, _ = ragged_batch(seed=8, V=77)
    stats = fuq.token_stats(logits, tokens, renyi=True)
    ref = M.renyi_neg(stats, mask)
    paper = M.renyi_neg(stats, mask, variant="paper", vocab_size=77)
    torch.testing.assert_close(paper, ref - 2 * math.log(77), equal_nan=True)  # a constant offset
    # paper: -mean_t D_1/2(q_t || U) with D_a(q||U) = log(sum q^a (1/V)^(1-a)) / (a - 1)
    from scipy.special import log_softmax, softmax
    q = softmax(log_softmax(logits.numpy(), -1) / 2.0, -1)
    D = np.log((q ** 0.5 * (1.0 / 77) ** 0.5).sum(-1)) / (0.5 - 1)
    for b in range(mask.shape[0]):
        m = mask[b].numpy()
        want = -D[b][m].mean() if m.any() else math.nan
        assert paper[b].item() == pytest.approx(want, rel=1e-10, nan_ok=True)


def test_bad_method_arguments():
    logits, tokens, mask, _ = ragged_batch(seed=7)
    stats = fuq.token_stats(logits, tokens)
    B, T = mask.shape
    tempered = fuq.token_stats(logits, tokens, renyi=True)
    cases = [
        (lambda: M.renyi_neg(stats, mask), ValueError, "renyi=True"),
        (lambda: M.fisher_rao(stats, mask), ValueError, "renyi=True"),
        (lambda: M.renyi_neg(tempered, mask, variant="rainproof"), ValueError, "variant"),
        (lambda: M.renyi_neg(tempered, mask, variant="paper"), ValueError, "vocab_size"),
        (lambda: M.renyi_neg(tempered, mask, variant="paper", vocab_size=0), ValueError, "vocab_size"),
        (lambda: M.chow_quantile(stats, mask, alpha=1.5), ValueError, "alpha"),
        (lambda: M.chow_quantile(stats, mask, alpha="low"), TypeError, "alpha"),  # as everywhere: test_checks.py
        (lambda: M.token_sar(stats, torch.ones(B, T + 1), mask), ValueError, "relevance"),
        (lambda: M.token_sar(stats, [[1.0] * T] * B, mask), TypeError, "relevance"),
        (lambda: M.token_sar(stats, torch.ones(B, T, dtype=torch.long), mask), TypeError, "relevance"),
        (lambda: M.pmi(stats, torch.zeros(B, T - 1), mask), ValueError, "lm_logprobs"),
        (lambda: M.cpmi(stats, torch.zeros(B + 1, T), mask), ValueError, "lm_logprobs"),
        (lambda: M.topk_stats_at_positions(logits, torch.zeros(B, 2, dtype=torch.long), k=0), ValueError, "k"),
        (lambda: M.topk_stats_at_positions(logits, torch.zeros(B, 2, dtype=torch.long), k=65), ValueError, "k"),
        (lambda: M.topk_stats_at_positions(logits[0], torch.zeros(B, 2, dtype=torch.long)), ValueError, "logits"),
        (lambda: M.topk_stats_at_positions(logits, torch.zeros(B, 2)), ValueError, "pos"),
        (lambda: M.topk_stats_at_positions(logits, torch.zeros(B, 2, dtype=torch.long), torch.ones(B, 3)),
         ValueError, "pos_mask"),
    ]
    for call, exc, name in cases:
        with pytest.raises(exc, match=name):
            call()
