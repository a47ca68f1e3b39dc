"""flashuq.methods.samples: docs/methods.md#golden-values golden values (SAR, VR/VRO), numpy transcriptions of the
LM-Polygraph / uqlm / Look Before You Leap formulas on ragged batches, padding and permutation
invariance, the greedy clustering rules, dtypes and error messages."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flashuq.methods import samples as M

F64 = torch.float64


def t64(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


# ---- golden values (docs/methods.md#golden-values) ------------------------------------------------------------------------------

NLL = [[.1, 2, .3], [.2, .1], [1.5, .4, .9, .2]]
SIMS = [[.9, .2, .95], [.3, .8], [.5, .99, .6, .97]]
S_SAR = [[1, .8, .1], [.8, 1, .2], [.1, .2, 1]]


def token_sar_np(nll, sims):
    R = 1 - np.asarray(sims)
    return float((np.asarray(nll) * R).sum() / R.sum())


def test_golden_sar():
    ts = [token_sar_np(n, s) for n, s in zip(NLL, SIMS)]
    assert ts == pytest.approx([1.71052632, 0.17777778, 1.19148936], abs=1e-8)
    assert np.mean(ts) == pytest.approx(1.0265978184231264, rel=1e-14)
    S = t64([S_SAR])
    lp = t64([[-sum(n) for n in NLL]])
    assert M.sentence_sar(lp, S).item() == pytest.approx(-5.291103165179472, rel=1e-13)
    assert M.sar(t64([ts]), S).item() == pytest.approx(-5.7016800793204085, rel=1e-13)
    # PE and LN-PE of the SAR repository are the Monte-Carlo entropies of the NLL sums / means
    assert M.monte_carlo_sequence_entropy(lp).item() == pytest.approx(1.9, rel=1e-14)
    lengths = torch.tensor([[len(n) for n in NLL]])
    assert M.monte_carlo_normalized_sequence_entropy(lp, lengths).item() == pytest.approx(0.5666666666666667,
                                                                                          rel=1e-14)


def test_golden_vr_vro():
    emb = t64([[[1, 0, 0], [1, 1, 0], [0, 1, 0]]])
    ref = t64([[1, 0, 0]])
    assert M.vr(embeddings=emb).item() == pytest.approx(0.5285954792089684, rel=1e-14)
    assert M.vr(M.similarity(emb)).item() == pytest.approx(0.5285954792089684, rel=1e-14)
    assert M.vro(embeddings=emb, reference=ref).item() == pytest.approx(0.43096440627115085, rel=1e-14)
    s = t64([[1.0, 2 ** -0.5, 0.0]])
    assert M.vro(s).item() == pytest.approx(0.43096440627115085, rel=1e-14)


def test_single_sample_edge_cases():
    # K = 1: SentenceSAR is -log p, SAR is TokenSAR (docs/methods.md#sar), LUQ / VR / lexical similarity have no pair: NaN
    S1 = t64([[[1.0]]])
    assert M.sentence_sar(t64([[-2.5]]), S1).item() == pytest.approx(2.5, rel=1e-15)
    assert M.sar(t64([[0.7]]), S1).item() == pytest.approx(0.7, rel=1e-15)
    assert math.isnan(M.luq(S1, S1).item())
    assert math.isnan(M.vr(S1).item())
    assert math.isnan(M.lexical_similarity(S1).item())
    assert math.isnan(M.semantic_sets_confidence(torch.tensor([[0]])).item())
    assert math.isnan(M.uqlm_semantic_negentropy(torch.tensor([[0]])).item())
    assert M.label_prob(torch.tensor([[0]])).item() == 0.0
    assert M.vro(t64([[0.25]])).item() == 0.75


def test_long_samples_do_not_underflow():
    # p = exp(-800) underflows in the reference's direct formula; the factored form stays finite and exact
    lp = t64([[-800.0, -801.0]])
    S = t64([[[1, .5], [.5, 1]]])
    base = M.sentence_sar(lp + 800.0, S).item()
    assert M.sentence_sar(lp, S).item() == pytest.approx(base + 800.0, rel=1e-14)


# ---- numpy transcriptions (one question at a time, valid samples only) ------------------------------

def np_mean(x):
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x)) if x.size else math.nan


def ref_sentence_sar(lp, S, t=0.001):
    if len(lp) == 0:
        return math.nan
    p = np.exp(np.asarray(lp))
    R = (p * S * (1 - np.eye(len(lp)))).sum(-1) / t
    return float(np.mean(-np.log(R + p)))


def ref_luq(El, Cl):
    s = np.exp(El) / (np.exp(El) + np.exp(Cl))
    K = s.shape[-1]
    if K < 2:
        return math.nan
    return float(1 - ((s.sum(1) - s.diagonal()) / (K - 1)).mean())


def ref_vr(S):
    K = len(S)
    if K < 2:
        return math.nan
    score = 0.0
    for a in range(K):
        score += sum(S[a, b] for b in range(K) if b != a) / (K - 1)
    return 1 - score / K


def ref_lexical(S):
    sims = [S[i, j] for i in range(len(S)) for j in range(i + 1, len(S))]
    return -np_mean(sims)


def ref_classes(c):
    """class id -> members, in order of first appearance (any ids)."""
    out = {}
    for k, ci in enumerate(c):
        out.setdefault(int(ci), []).append(k)
    return out


def ref_semantic_entropy(lp, c, texts, estimator, mode, unique):
    n = len(c)
    if n == 0:
        return math.nan
    cls = ref_classes(c)
    if mode == "sum":
        class_lp = {}
        for ci, idx in cls.items():
            idx = np.array(idx)
            lik = np.asarray(lp)[idx]
            if unique:
                lik = lik[np.unique(np.asarray(texts)[idx], return_index=True)[1]]
            class_lp[ci] = np.logaddexp.reduce(lik)
    else:
        class_lp = {ci: np.log(len(idx) / n) for ci, idx in cls.items()}
    per = np.array([class_lp[int(ci)] for ci in c])
    if estimator == "mean":
        return float(-np.mean(per))
    return float(-np.sum(per * np.exp(per)))


def ref_clusters(E, rule):
    """LM-Polygraph _determine_class / uqlm _cluster_responses on one question (E over valid samples)."""
    K = len(E)
    firsts, ids, member = [], [], []
    for i in range(K):
        joined = []
        for ci, f in enumerate(firsts):
            ok = (E[f, i] and E[i, f]) if rule == "polygraph" else (E[f, i] or E[i, f])
            if ok:
                joined.append(ci)
                if rule == "polygraph":
                    break
        if joined:
            ids.append(joined[0])
        else:
            firsts.append(i)
            joined = [len(firsts) - 1]
            ids.append(joined[0])
        member.append(joined)
    return ids, member


def ref_uqlm_negentropy(member_lists, n_clusters, w):
    n = len(member_lists)
    if n < 2:
        return math.nan
    P = np.zeros(n_clusters)
    for k, cs in enumerate(member_lists):
        for c in cs:
            P[c] += w[k]
    P = P / P.sum()
    se = abs(sum(p * math.log(p) if p > 0 else 0 for p in P))
    return se / math.log(n) - 1


def ragged(seed, Q=7, K=6):
    """Random sample mask with 0, 1 and K valid samples among the rows, valid samples anywhere."""
    g = np.random.default_rng(seed)
    mask = g.random((Q, K)) < 0.7
    mask[0] = False
    mask[1] = False
    mask[1, g.integers(K)] = True
    mask[2] = True
    return g, mask


def poison(x, mask):
    """Padding entries hold NaN: the masked entries of a [Q, K] array, the masked rows and columns of a [Q, K, K] one."""
    x = np.array(x, dtype=np.float64)
    x[~mask] = np.nan
    if x.ndim == 3:
        x.transpose(0, 2, 1)[~mask] = np.nan
    return x


@pytest.mark.parametrize("seed", range(4))
def test_against_numpy_transcriptions(seed):
    g, mask = ragged(seed)
    Q, K = mask.shape
    lp = g.normal(-3, 2, (Q, K))
    S = g.random((Q, K, K))
    S = (S + S.transpose(0, 2, 1)) / 2
    El, Cl = g.normal(0, 2, (Q, K, K)), g.normal(0, 2, (Q, K, K))
    s_ref = g.random((Q, K))
    lengths = g.integers(0, 5, (Q, K))
    m = torch.as_tensor(mask)

    got = {
        "sentence_sar": M.sentence_sar(t64(poison(lp, mask)), t64(poison(S, mask)), sample_mask=m),
        "sar": M.sar(t64(poison(-lp / 3, mask)), t64(poison(S, mask)), sample_mask=m, temperature=0.1),
        "luq": M.luq(t64(poison(El, mask)), t64(poison(Cl, mask)), sample_mask=m),
        "vr": M.vr(t64(poison(S, mask)), sample_mask=m),
        "vro": M.vro(t64(poison(s_ref, mask)), sample_mask=m),
        "lexical": M.lexical_similarity(t64(poison(S, mask)), sample_mask=m),
        "mcse": M.monte_carlo_sequence_entropy(t64(poison(lp, mask)), sample_mask=m),
        "mcnse": M.monte_carlo_normalized_sequence_entropy(t64(poison(lp, mask)), torch.as_tensor(lengths),
                                                           sample_mask=m),
        "mcnse_eos": M.monte_carlo_normalized_sequence_entropy(t64(poison(lp, mask)), torch.as_tensor(lengths),
                                                               eos_consistent=True, sample_mask=m),
    }
    for q in range(Q):
        v = np.flatnonzero(mask[q])
        Sq = S[q][np.ix_(v, v)]
        want = {
            "sentence_sar": ref_sentence_sar(lp[q, v], Sq),
            "sar": ref_sentence_sar(lp[q, v] / 3, Sq, t=0.1),
            "luq": ref_luq(El[q][np.ix_(v, v)], Cl[q][np.ix_(v, v)]),
            "vr": ref_vr(Sq),
            "vro": 1 - np_mean(s_ref[q, v]),
            "lexical": ref_lexical(Sq),
            "mcse": -np_mean(lp[q, v]),
            "mcnse": -np_mean([a / n for a, n in zip(lp[q, v], lengths[q, v]) if n]),
            "mcnse_eos": -np_mean(lp[q, v] / (lengths[q, v] + 1)),
        }
        for name, w in want.items():
            x = got[name][q].item()
            assert got[name].dtype == F64
            if math.isnan(w):
                assert math.isnan(x), (name, q)
            else:
                assert x == pytest.approx(w, rel=1e-12, abs=1e-13), (name, q)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("estimator", ["mean", "direct"])
@pytest.mark.parametrize("mode,unique", [("sum", False), ("sum", True), ("frequency", False)])
def test_semantic_entropy_against_polygraph(seed, estimator, mode, unique):
    g, mask = ragged(seed)
    Q, K = mask.shape
    texts = g.integers(0, 3, (Q, K))
    classes = (texts + g.integers(0, 2, (Q, K))) % K  # same text mostly in the same class, not always
    lp = g.normal(-2, 1.5, (Q, K))
    lp[texts == texts[:, :1]] = lp[:, :1].repeat(K, 1)[texts == texts[:, :1]]  # same text, same log-prob
    c_in = np.where(mask, classes, -7)
    out = M.semantic_entropy(t64(poison(lp, mask)), torch.as_tensor(c_in), estimator=estimator, mode=mode,
                             unique=unique, text_ids=torch.as_tensor(texts) if unique else None,
                             sample_mask=torch.as_tensor(mask))
    assert out.dtype == F64 and out.shape == (Q,)
    for q in range(Q):
        v = np.flatnonzero(mask[q])
        w = ref_semantic_entropy(lp[q, v], classes[q, v], texts[q, v], estimator, mode, unique)
        if math.isnan(w):
            assert math.isnan(out[q].item())
        else:
            assert out[q].item() == pytest.approx(w, rel=1e-12, abs=1e-13)


def test_semantic_entropy_hand_case_and_frequency_without_logprobs():
    # classes {0, 1, 2}, {3}: with duplicates of text in class 0 (samples 0 and 1 share a text)
    lp = t64([[-1.0, -1.0, -2.0, -0.5]])
    c = torch.tensor([[2, 2, 2, 0]])
    lc0 = np.logaddexp.reduce([-1.0, -1.0, -2.0])
    assert M.semantic_entropy(lp, c).item() == pytest.approx(-(3 * lc0 - 0.5) / 4, rel=1e-14)
    lcu = np.logaddexp(-1.0, -2.0)
    got = M.semantic_entropy(lp, c, unique=True, text_ids=torch.tensor([[5, 5, 6, 7]]))
    assert got.item() == pytest.approx(-(3 * lcu - 0.5) / 4, rel=1e-14)
    freq = -(3 * np.log(.75) + np.log(.25)) / 4
    assert M.semantic_entropy(None, c, mode="frequency").item() == pytest.approx(freq, rel=1e-6)
    assert M.semantic_entropy(None, c, mode="frequency").dtype == torch.float32
    direct = -(3 * .75 * np.log(.75) + .25 * np.log(.25))
    assert M.semantic_entropy(lp, c, mode="frequency", estimator="direct").item() == pytest.approx(direct, rel=1e-14)
    # -inf log-probs: an impossible class contributes 0·log 0 = 0 to "direct"
    d = M.semantic_entropy(t64([[-math.inf, 0.0]]), torch.tensor([[0, 1]]), estimator="direct")
    assert d.item() == 0.0


# ---- clustering ----------------------------------------------------------------------------------

def ent(n, pairs, both=True):
    E = np.eye(n, dtype=bool)
    for i, j in pairs:
        E[i, j] = True
        if both:
            E[j, i] = True
    return E


def test_clusters_non_transitive_order_matters():
    # 0<->1, 1<->2 but not 0<->2: greedy compares with each class's FIRST member only
    E = ent(3, [(0, 1), (1, 2)])
    assert M.greedy_bidirectional_clusters(torch.as_tensor(E)[None]).tolist() == [[0, 0, 1]]
    # visiting 1 first (permuted order 1, 0, 2): everything joins the class of 1
    p = [1, 0, 2]
    Ep = E[np.ix_(p, p)]
    assert M.greedy_bidirectional_clusters(torch.as_tensor(Ep)[None]).tolist() == [[0, 0, 0]]


def test_clusters_first_matching_class_and_direction():
    # 2 is bidirectionally equivalent to both 0 and 1 (which are not): joins the FIRST class
    E = ent(3, [(0, 2), (1, 2)])
    assert M.greedy_bidirectional_clusters(torch.as_tensor(E)[None]).tolist() == [[0, 1, 0]]
    # one-directional entailment 0 -> 1: polygraph needs both directions, uqlm either
    E = ent(2, [(0, 1)], both=False)
    assert M.greedy_bidirectional_clusters(torch.as_tensor(E)[None]).tolist() == [[0, 1]]
    assert M.greedy_bidirectional_clusters(torch.as_tensor(E)[None], rule="uqlm").tolist() == [[0, 0]]


def test_clusters_uqlm_multi_membership():
    # 0 and 1 unrelated; 2 entails 0 (one way) and 1 (the other way): uqlm puts 2 in both clusters
    E = np.eye(3, dtype=bool)
    E[2, 0] = True
    E[1, 2] = True
    ids, member = M.greedy_bidirectional_clusters(torch.as_tensor(E)[None], rule="uqlm", return_membership=True)
    assert ids.tolist() == [[0, 1, 0]]
    assert member[0].tolist() == [[True, False, True], [False, True, True], [False, False, False]]
    # cluster probabilities (2, 2)/4 renormalised: SE = log 2, over log 3 responses
    got = M.uqlm_semantic_negentropy(member)
    assert got.item() == pytest.approx(math.log(2) / math.log(3) - 1, rel=1e-6)
    assert M.uqlm_semantic_negentropy(ids).item() == pytest.approx(
        -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(3) - 1, rel=1e-6)


def test_clusters_masked_samples():
    E = torch.ones(1, 4, 4, dtype=torch.bool)
    E[0, 1, 3] = E[0, 3, 1] = False
    m = torch.tensor([[False, True, True, True]])
    ids = M.greedy_bidirectional_clusters(E, sample_mask=m)
    assert ids.tolist() == [[-1, 0, 0, 1]]
    empty = M.greedy_bidirectional_clusters(E, sample_mask=torch.zeros(1, 4, dtype=torch.bool))
    assert empty.tolist() == [[-1] * 4]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 31), st.integers(1, 7), st.sampled_from(["polygraph", "uqlm"]))
def test_clusters_match_reference_loops(seed, K, rule):
    g = np.random.default_rng(seed)
    Q = 4
    E = g.random((Q, K, K)) < g.random()
    mask = g.random((Q, K)) < 0.8
    ids, member = M.greedy_bidirectional_clusters(torch.as_tensor(E), rule=rule, sample_mask=torch.as_tensor(mask),
                                                  return_membership=True)
    for q in range(Q):
        v = np.flatnonzero(mask[q])
        want_ids, want_member = ref_clusters(E[q][np.ix_(v, v)], rule)
        assert ids[q, v].tolist() == want_ids
        assert (ids[q, ~mask[q]] == -1).all()
        got_member = [sorted(np.flatnonzero(member[q, :, k].numpy()).tolist()) for k in v]
        assert got_member == want_member
        assert not member[q][:, ~mask[q]].any()


def test_nli_argmax_is_entail():
    probs = torch.tensor([[[[.1, .2, .7], [.5, .3, .2]], [[.2, .2, .2], [0, 0, 1]]]])
    assert M.nli_argmax_is_entail(probs, 2).tolist() == [[[True, False], [False, True]]]
    with pytest.raises(ValueError, match="entail_index"):
        M.nli_argmax_is_entail(probs, 3)
    with pytest.raises(ValueError, match="probs"):
        M.nli_argmax_is_entail(probs[0], 2)


def test_label_prob_and_semantic_sets():
    g, mask = ragged(11)
    Q, K = mask.shape
    c = g.integers(0, 3, (Q, K))
    lab = M.label_prob(torch.as_tensor(np.where(mask, c, 99)), sample_mask=torch.as_tensor(mask))
    ssc = M.semantic_sets_confidence(torch.as_tensor(c), sample_mask=torch.as_tensor(mask))
    assert lab.dtype == torch.float32
    for q in range(Q):
        cv = c[q, mask[q]]
        n = len(cv)
        want_lab = 1 - np.bincount(cv).max() / n if n else math.nan
        want_ssc = -(n - len(set(cv))) / (n - 1) if n > 1 else math.nan
        for got, want in ((lab[q].item(), want_lab), (ssc[q].item(), want_ssc)):
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_uqlm_negentropy_against_loops(seed):
    g, mask = ragged(seed, Q=6, K=5)
    Q, K = mask.shape
    E = g.random((Q, K, K)) < 0.4
    w = g.random((Q, K))
    ids, member = M.greedy_bidirectional_clusters(torch.as_tensor(E), rule="uqlm", sample_mask=torch.as_tensor(mask),
                                                  return_membership=True)
    got_u = M.uqlm_semantic_negentropy(member, sample_mask=torch.as_tensor(mask))
    got_w = M.uqlm_semantic_negentropy(member, response_probs=t64(poison(w, mask)), sample_mask=torch.as_tensor(mask))
    assert got_w.dtype == F64
    for q in range(Q):
        v = np.flatnonzero(mask[q])
        _, ml = ref_clusters(E[q][np.ix_(v, v)], "uqlm")
        nc = 1 + max((c for cs in ml for c in cs), default=-1)
        for got, ww, tol in ((got_u, np.ones(len(v)), 1e-6), (got_w, w[q, v], 1e-12)):
            want = ref_uqlm_negentropy(ml, nc, ww)
            x = got[q].item()
            assert (math.isnan(x) and math.isnan(want)) or x == pytest.approx(want, rel=tol, abs=tol)


# ---- invariances ---------------------------------------------------------------------------------

def sample_inputs(seed=3, Q=4, K=5):
    g = np.random.default_rng(seed)
    lp = t64(g.normal(-2, 1, (Q, K)))
    S = g.random((Q, K, K))
    S = t64((S + S.transpose(0, 2, 1)) / 2)
    El, Cl = t64(g.normal(0, 1, (Q, K, K))), t64(g.normal(0, 1, (Q, K, K)))
    c = torch.as_tensor(g.integers(0, 3, (Q, K)))
    emb = t64(g.normal(0, 1, (Q, K, 8)))
    return lp, S, El, Cl, c, emb


METHODS = {
    "semantic_entropy": lambda lp, S, El, Cl, c, emb, m: M.semantic_entropy(lp, c, sample_mask=m),
    "semantic_entropy_direct": lambda lp, S, El, Cl, c, emb, m: M.semantic_entropy(lp, c, estimator="direct",
                                                                                   sample_mask=m),
    "sentence_sar": lambda lp, S, El, Cl, c, emb, m: M.sentence_sar(lp, S, sample_mask=m),
    "sar": lambda lp, S, El, Cl, c, emb, m: M.sar(-lp, S, sample_mask=m),
    "luq": lambda lp, S, El, Cl, c, emb, m: M.luq(El, Cl, sample_mask=m),
    "vr": lambda lp, S, El, Cl, c, emb, m: M.vr(S, sample_mask=m),
    "vr_emb": lambda lp, S, El, Cl, c, emb, m: M.vr(embeddings=emb, sample_mask=m),
    "vro_emb": lambda lp, S, El, Cl, c, emb, m: M.vro(embeddings=emb, reference=torch.ones_like(emb[:, 0]), sample_mask=m),
    "lexical": lambda lp, S, El, Cl, c, emb, m: M.lexical_similarity(S, sample_mask=m),
    "mcse": lambda lp, S, El, Cl, c, emb, m: M.monte_carlo_sequence_entropy(lp, sample_mask=m),
    "label_prob": lambda lp, S, El, Cl, c, emb, m: M.label_prob(c, sample_mask=m),
    "ssc": lambda lp, S, El, Cl, c, emb, m: M.semantic_sets_confidence(c, sample_mask=m),
    "uqlm_se": lambda lp, S, El, Cl, c, emb, m: M.uqlm_semantic_negentropy(c, sample_mask=m),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_permutation_invariance(name):
    lp, S, El, Cl, c, emb = sample_inputs()
    K = lp.shape[1]
    p = torch.tensor([3, 0, 4, 1, 2])
    base = METHODS[name](lp, S, El, Cl, c, emb, None)
    perm = METHODS[name](lp[:, p], S[:, p][:, :, p], El[:, p][:, :, p], Cl[:, p][:, :, p], c[:, p], emb[:, p], None)
    assert K == len(p)
    torch.testing.assert_close(perm, base, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_padding_invariance(name):
    # K = 3 valid samples out of K = 5 (padding at positions 1 and 4, full of NaN / junk) = the K = 3 question
    lp, S, El, Cl, c, emb = sample_inputs(K=3)
    c = c % 3
    keep = [0, 2, 3]

    ix = torch.tensor(keep)

    def pad(x, fill, square=False):
        out = torch.full((x.shape[0], 5, *([5] if square else x.shape[2:])), fill, dtype=x.dtype)
        if square:
            out[:, ix[:, None], ix[None, :]] = x
        else:
            out[:, ix] = x
        return out

    m = torch.zeros(lp.shape[0], 5, dtype=torch.bool)
    m[:, keep] = True
    padded = (pad(lp, math.nan), pad(S, math.nan, True), pad(El, math.nan, True), pad(Cl, math.nan, True),
              pad(c, -3), pad(emb, math.nan))
    base = METHODS[name](lp, S, El, Cl, c, emb, None)
    got = METHODS[name](*padded, m)
    torch.testing.assert_close(got, base, rtol=1e-12, atol=1e-12)


def test_empty_questions_are_nan():
    lp, S, El, Cl, c, emb = sample_inputs()
    m = torch.zeros(lp.shape, dtype=torch.bool)
    for name, fn in METHODS.items():
        assert torch.isnan(fn(lp, S, El, Cl, c, emb, m)).all(), name
    assert torch.isnan(M.monte_carlo_normalized_sequence_entropy(lp, torch.ones_like(c), sample_mask=m)).all()
    assert torch.isnan(M.semantic_entropy(lp, c, mode="frequency", estimator="direct", sample_mask=m)).all()


# ---- similarity, symmetrize, dtypes --------------------------------------------------------------

def test_similarity_kinds():
    emb = t64([[[1, 0], [-1, 0], [1, 1], [0, 0]]])
    cos = M.similarity(emb)
    assert cos[0, 0, 1].item() == -1.0
    assert cos[0, 0, 2].item() == pytest.approx(2 ** -0.5, rel=1e-15)
    assert torch.isnan(cos[0, 3]).all() and torch.isnan(cos[0, :, 3]).all()  # zero-norm row and column
    torch.testing.assert_close(M.similarity(emb, kind="abs_cosine"), cos.abs(), equal_nan=True)
    torch.testing.assert_close(M.similarity(emb, kind="half_cosine"), (1 + cos) / 2, equal_nan=True)
    # a zero embedding that is valid makes VR NaN; masked, it is padding
    assert math.isnan(M.vr(embeddings=emb).item())
    assert not math.isnan(M.vr(embeddings=emb, sample_mask=torch.tensor([[1, 1, 1, 0]])).item())


def test_symmetrize():
    E = torch.tensor([[[1.0, 0.2], [0.6, 1.0]]], dtype=torch.float16)
    W = M.symmetrize(E)
    assert W.dtype == torch.float32
    torch.testing.assert_close(W, torch.tensor([[[1.0, 0.4], [0.4, 1.0]]]), rtol=1e-3, atol=1e-3)
    assert M.symmetrize(np.eye(3)).dtype == F64
    with pytest.raises(ValueError, match="E"):
        M.symmetrize(torch.zeros(2, 3))


@pytest.mark.parametrize("dtype,out", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                       (torch.float32, torch.float32), (torch.float64, torch.float64)])
def test_dtypes(dtype, out):
    lp, S, El, Cl, c, emb = sample_inputs()
    low = [x.to(dtype) for x in (lp, S, El, Cl, emb)]
    for name, fn in METHODS.items():
        if name in ("label_prob", "ssc", "uqlm_se"):
            continue
        got = fn(low[0], low[1], low[2], low[3], c, low[4], None)
        assert got.dtype == out, name
        want = fn(*(x.to(dtype).double() for x in (lp, S, El, Cl)), c, low[4].double(), None)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_numpy_inputs():
    lp, S, El, Cl, c, emb = sample_inputs()
    got = M.sentence_sar(lp.numpy(), S.numpy(), sample_mask=np.ones(lp.shape, dtype=bool))
    torch.testing.assert_close(got, M.sentence_sar(lp, S))
    torch.testing.assert_close(M.semantic_entropy(lp.numpy(), c.numpy()), M.semantic_entropy(lp, c))


# ---- errors --------------------------------------------------------------------------------------

def test_errors_name_the_argument():
    lp, S, El, Cl, c, emb = sample_inputs()
    Q, K = lp.shape
    with pytest.raises(ValueError, match="temperature"):
        M.sentence_sar(lp, S, temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        M.sar(lp, S, temperature=-1.0)
    with pytest.raises(ValueError, match="similarity"):
        M.sentence_sar(lp, S[:, :3, :3])
    with pytest.raises(TypeError, match="sample_logprobs"):
        M.sentence_sar(lp.long(), S)
    with pytest.raises(TypeError, match="sample_logprobs"):
        M.monte_carlo_sequence_entropy([[1.0]])
    with pytest.raises(ValueError, match="sample_mask"):
        M.sentence_sar(lp, S, sample_mask=torch.ones(Q, K + 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="sample_mask"):
        M.luq(El, Cl, sample_mask=torch.ones(Q, K))
    with pytest.raises(ValueError, match="contra_logits"):
        M.luq(El, Cl[:, :2])
    with pytest.raises(ValueError, match="class_ids"):
        M.semantic_entropy(lp, c + K)
    with pytest.raises(ValueError, match="class_ids"):
        M.semantic_entropy(lp, c[:, :2])
    with pytest.raises(TypeError, match="class_ids"):
        M.semantic_entropy(lp, c.double())
    with pytest.raises(ValueError, match="estimator"):
        M.semantic_entropy(lp, c, estimator="max")
    with pytest.raises(ValueError, match="mode"):
        M.semantic_entropy(lp, c, mode="count")
    with pytest.raises(ValueError, match="text_ids"):
        M.semantic_entropy(lp, c, unique=True)
    with pytest.raises(ValueError, match="unique"):
        M.semantic_entropy(lp, c, mode="frequency", unique=True, text_ids=c)
    with pytest.raises(ValueError, match="sample_logprobs"):
        M.semantic_entropy(None, c)
    with pytest.raises(ValueError, match="sample_lengths"):
        M.monte_carlo_normalized_sequence_entropy(lp, -torch.ones_like(c))
    with pytest.raises(ValueError, match="sample_lengths"):
        M.monte_carlo_normalized_sequence_entropy(lp, c[:, :2])
    with pytest.raises(TypeError, match="entail_is_argmax"):
        M.greedy_bidirectional_clusters(El)
    with pytest.raises(ValueError, match="entail_is_argmax"):
        M.greedy_bidirectional_clusters(torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="rule"):
        M.greedy_bidirectional_clusters(El > 0, rule="kuhn")
    with pytest.raises(ValueError, match="similarity/embeddings"):
        M.vr()
    with pytest.raises(ValueError, match="similarity/embeddings"):
        M.vr(S, embeddings=emb)
    with pytest.raises(ValueError, match="similarity"):
        M.vr(emb)
    with pytest.raises(ValueError, match="reference"):
        M.vro(embeddings=emb)
    with pytest.raises(ValueError, match="reference"):
        M.vro(embeddings=emb, reference=emb[:, 0, :3])
    with pytest.raises(ValueError, match="reference"):
        M.vro(lp, reference=emb[:, 0])
    with pytest.raises(ValueError, match="kind"):
        M.similarity(emb, kind="dot")
    with pytest.raises(ValueError, match="emb"):
        M.similarity(lp)
    with pytest.raises(ValueError, match="pair_scores"):
        M.lexical_similarity(emb)
    with pytest.raises(ValueError, match="clusters"):
        M.uqlm_semantic_negentropy(torch.ones(Q, K, K + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="response_probs"):
        M.uqlm_semantic_negentropy(c, response_probs=lp[:, :2])
