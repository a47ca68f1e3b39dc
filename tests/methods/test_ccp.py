"""flashuq.methods.ccp (docs/methods.md#ccp): Claim-Conditioned Probability against LM-Polygraph 0.7.0's own
``ClaimConditionedProbability`` (its module imported bare, without the rest of LM-Polygraph), the
directional-label rule, masks, a claim through segment_reduce, argument errors."""


import numpy as np
import pytest
import torch

import flashuq as fuq
from flashuq import methods as M
from flashuq.methods.ccp import CONTRA, ENTAIL, NEUTRAL
from lmp_cases import lm_polygraph_estimator

NAMES = {ENTAIL: "entail", NEUTRAL: "neutral", CONTRA: "contra"}


def lm_polygraph_ccp():
    return lm_polygraph_estimator("claim_conditioned_probability").ClaimConditionedProbability()


def case(B=5, T=7, A=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = torch.log_softmax(torch.randn(B, T, 40, generator=g, dtype=torch.float64), -1).topk(A, -1).values
    fwd = torch.randint(0, 3, (B, T, A), generator=g)
    bwd = torch.randint(0, 3, (B, T, A), generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return lp, fwd, bwd, mask


def test_combine_nli_rule():
    f = torch.tensor([ENTAIL, ENTAIL, ENTAIL, NEUTRAL, NEUTRAL, NEUTRAL, CONTRA, CONTRA, CONTRA])
    b = torch.tensor([ENTAIL, NEUTRAL, CONTRA, ENTAIL, NEUTRAL, CONTRA, ENTAIL, NEUTRAL, CONTRA])
    want = [ENTAIL, ENTAIL, NEUTRAL, ENTAIL, NEUTRAL, CONTRA, NEUTRAL, CONTRA, CONTRA]
    assert M.combine_nli(f, b).tolist() == want
    ref = lm_polygraph_ccp()
    assert [ref._combine_nli(NAMES[int(x)], NAMES[int(y)]) for x, y in zip(f, b)] == [NAMES[w] for w in want]


def test_ccp_matches_lm_polygraph():
    ref = lm_polygraph_ccp()
    lp, fwd, bwd, mask = case()
    got = M.ccp(lp, fwd, bwd, mask)
    assert got.dtype == torch.float64 and got.shape == (5,)
    A = lp.shape[-1]
    for b in range(5):
        T = int(mask[b].sum())
        alts, nlis = [], []
        for t in range(T):
            alts.append([(f"w{i}", lp[b, t, i].item()) for i in range(A)])
            m = [["neutral"] * A for _ in range(A)]  # only row 0 and column 0 are read
            for i in range(A):
                m[0][i] = NAMES[int(fwd[b, t, i])]
                m[i][0] = NAMES[int(bwd[b, t, i])]
            nlis.append(m)
        st = {"greedy_tokens": [[0] * T], "greedy_tokens_alternatives": [alts], "greedy_tokens_alternatives_nli": [nlis]}
        assert got[b].item() == pytest.approx(ref(st)[0], rel=1e-12, abs=1e-300), b


def test_ccp_masks_claims_and_one_direction():
    lp, fwd, bwd, mask = case(seed=1)
    t = M.ccp_token_logprobs(lp, fwd, bwd)
    # by hand at one step: alternative 0 entailed, neutral ones dropped
    lab = M.combine_nli(fwd, bwd)[2, 3]
    ent = [0] + [i for i in range(1, 6) if lab[i] == ENTAIL]
    con = [i for i in range(1, 6) if lab[i] == CONTRA]
    x = lp[2, 3].numpy()
    want = np.logaddexp.reduce(x[ent]) - np.logaddexp.reduce(x[ent + con])
    assert t[2, 3].item() == pytest.approx(want, rel=1e-14)
    # masked steps and alternatives may hold anything
    lp2 = lp.clone()
    lp2[~mask] = torch.nan
    amask = torch.ones_like(fwd, dtype=torch.bool)
    amask[..., 5] = False
    lp2[..., 5] = torch.nan
    got = M.ccp(lp2, fwd, bwd, mask, alt_mask=amask)
    torch.testing.assert_close(got, M.ccp(lp[..., :5].contiguous(), fwd[..., :5], bwd[..., :5], mask),
                               rtol=1e-14, atol=0)
    # one direction only: the forward labels as they are
    one = M.ccp_token_logprobs(lp, fwd)
    ent1 = [0] + [i for i in range(1, 6) if fwd[2, 3, i] == ENTAIL]
    con1 = [i for i in range(1, 6) if fwd[2, 3, i] == CONTRA]
    assert one[2, 3].item() == pytest.approx(np.logaddexp.reduce(x[ent1]) - np.logaddexp.reduce(x[ent1 + con1]))
    # claims: their tokens' log-CCPs summed by masked_reduce, then -exp
    claims = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 1, 1, 0]], dtype=torch.bool)
    got = -torch.exp(fuq.masked_reduce(t[0].expand(2, -1), claims, op="sum"))
    torch.testing.assert_close(got, torch.stack([-torch.exp(t[0, [0, 1]].sum()), -torch.exp(t[0, [2, 4, 5]].sum())]))


def test_ccp_argument_errors():
    lp, fwd, bwd, mask = case()
    with pytest.raises(ValueError, match="nli_forward"):
        M.ccp(lp, fwd[..., :3], None, mask)
    with pytest.raises(TypeError, match="nli_forward"):
        M.ccp(lp, fwd.double(), None, mask)
    with pytest.raises(ValueError, match="labels"):
        M.ccp(lp, fwd + 1, None, mask)
    with pytest.raises(ValueError, match="labels"):
        M.ccp(lp, fwd, bwd - 1, mask)
    with pytest.raises(ValueError, match="mask"):
        M.ccp(lp, fwd, bwd, mask[:, :3])
    with pytest.raises(ValueError, match="alt_mask"):
        M.ccp(lp, fwd, bwd, mask, alt_mask=torch.ones(5, 7, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="nli_forward"):
        M.combine_nli([0, 1], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="nli_backward"):
        M.combine_nli(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
    assert M.REGISTRY["ccp"].fn is M.ccp


def lm_polygraph_alternatives_nli(monkeypatch):
    """LM-Polygraph's GreedyAlternativesNLICalculator (its module imported bare; its model and DeBERTa
    imports stand in for types it never uses here)."""
    import sys
    import types

    stand_ins = (("lm_polygraph.utils.model", ("Model", "WhiteboxModel")), ("lm_polygraph.utils.deberta", ("Deberta",)))
    for name, attrs in stand_ins:
        mod = types.ModuleType(name)
        for attr in attrs:
            setattr(mod, attr, object)
        monkeypatch.setitem(sys.modules, name, mod)
    from lmp_cases import lm_polygraph_stat_calculator
    return lm_polygraph_stat_calculator("greedy_alternatives_nli").GreedyAlternativesNLICalculator


VOCAB = [" Paris", "Paris.", " London", "\n", "the", " Rome,", "rome", " Berlin", "Madrid!", " a", "(Paris)", "x"]


def fake_nli_logits(a: str, b: str):
    """A deterministic stand-in for DeBERTa: logits over (CONTRADICTION, NEUTRAL, ENTAILMENT)."""
    return [(len(a) * 7 + len(b) * 3) % 5 + 0.1, (len(a) + 2 * len(b)) % 4 + 0.2, (len(a) * len(b)) % 6 + 0.3]


def test_ccp_nli_labels_match_lm_polygraph_calculator_and_dedupe(monkeypatch):
    import types

    g = torch.Generator().manual_seed(4)
    B, T, A = 3, 5, 4
    ids = torch.stack([torch.randperm(len(VOCAB), generator=g)[:A] for _ in range(B * T)]).reshape(B, T, A)
    lp = torch.log_softmax(torch.randn(B, T, A, generator=g, dtype=torch.float64), -1).sort(-1, descending=True).values
    calls = []

    def nli(pairs):  # flashuq's callable: probabilities in (ENTAIL, NEUTRAL, CONTRA) order
        calls.append(list(pairs))
        z = torch.tensor([fake_nli_logits(a, b) for a, b in pairs], dtype=torch.float64)
        return torch.softmax(z, -1)[:, [2, 1, 0]]

    fwd, bwd = M.ccp_nli_labels(ids, lambda i: VOCAB[i], nli, batch_size=7)
    seen = [p for c in calls for p in c]
    assert len(seen) == len(set(seen)) and all(len(c) <= 7 for c in calls)  # each distinct pair once
    # LM-Polygraph's own calculator with a DeBERTa stand-in giving the same logits
    class Enc(dict):
        def to(self, dev):
            return self

    class Model:
        config = types.SimpleNamespace(label2id={"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2})

        def __call__(self, pairs):
            return types.SimpleNamespace(logits=torch.tensor([fake_nli_logits(a, b) for a, b in pairs]))

    deberta = types.SimpleNamespace(batch_size=5, device="cpu", deberta=Model(),
                                    deberta_tokenizer=lambda batch, padding, return_tensors: Enc(pairs=batch))
    model = types.SimpleNamespace(tokenizer=types.SimpleNamespace(decode=lambda i: VOCAB[i[0]]))
    calc = lm_polygraph_alternatives_nli(monkeypatch)(deberta)
    alts = [[[(int(ids[b, t, i]), float(lp[b, t, i])) for i in range(A)] for t in range(T)] for b in range(B)]
    mats = calc({"greedy_tokens_alternatives": alts}, [], model)["greedy_tokens_alternatives_nli"]
    for b in range(B):
        for t in range(T):
            for i in range(1, A):
                assert NAMES[int(fwd[b, t, i])] == mats[b][t][0][i], (b, t, i)
                assert NAMES[int(bwd[b, t, i])] == mats[b][t][i][0], (b, t, i)
    # and CCP from them equals LM-Polygraph's estimator on the calculator's matrices
    ref = lm_polygraph_ccp()
    got = M.ccp(lp, fwd, bwd)
    for b in range(B):
        st = {"greedy_tokens": [[0] * T],
              "greedy_tokens_alternatives": [[[(VOCAB[a], l) for a, l in row] for row in alts[b]]],
              "greedy_tokens_alternatives_nli": [mats[b]]}
        assert got[b].item() == pytest.approx(ref(st)[0], rel=1e-12, abs=1e-300)
    # integer labels from the callable, masks, errors
    f2, b2 = M.ccp_nli_labels(ids, lambda i: VOCAB[i], lambda pairs: nli(pairs).argmax(1))
    assert torch.equal(f2, fwd) and torch.equal(b2, bwd)
    keep = torch.ones(B, T, A, dtype=torch.bool)
    keep[:, :, 3] = False
    f3, _ = M.ccp_nli_labels(ids, lambda i: VOCAB[i], nli, alt_mask=keep)
    assert bool((f3[..., 3] == NEUTRAL).all()) and torch.equal(f3[..., :3], fwd[..., :3])
    with pytest.raises(ValueError, match="nli"):
        M.ccp_nli_labels(ids, lambda i: VOCAB[i], lambda pairs: torch.zeros(len(pairs), 2))
    with pytest.raises(ValueError, match="batch_size"):
        M.ccp_nli_labels(ids, lambda i: VOCAB[i], nli, batch_size=0)
    with pytest.raises(ValueError, match="alt_mask"):
        M.ccp_nli_labels(ids, lambda i: VOCAB[i], nli, alt_mask=keep[..., :2])
    with pytest.raises(TypeError, match="decode"):
        M.ccp_nli_labels(ids, lambda i: 3, nli)
    with pytest.raises(TypeError, match="nli"):
        M.ccp_nli_labels(ids, lambda i: VOCAB[i], "deberta")
