"""flashuq.methods.attention (docs/methods.md#attention-methods): attention_score and rauq against the float64 references of
flashuq.reference (themselves checked against LM-Polygraph ports in tests/test_reference_attention.py) on
random causal attention, ragged batches (every item its own maps: LM-Polygraph's batch-element-0 bug
would fail here), full maps vs diagonals, α defaults, padding masks, dtypes and argument errors; uqac
against flashuq.reference.uqac_ref (through the UQAC ops of flashuq.ops.uqac)."""

import math

import numpy as np
import pytest
import torch

import flashuq as fuq
from flashuq.methods import REGISTRY, attention_score, rauq, uqac, uqac_top5_logprobs
from flashuq.reference import attention_score_ref, rauq_ref, uqac_ref, uqac_top5_logprobs_ref

F64 = torch.float64


def causal_maps(rng, B, L, H, N, scale=2.0):
    s = rng.normal(size=(B, L, H, N, N)) * scale * rng.uniform(0.3, 2.0, size=(B, L, H, 1, 1))
    s = np.where(np.tril(np.ones((N, N))) > 0, s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    return a / a.sum(-1, keepdims=True)


def batch(seed, B=4, L=6, H=4, N=16):
    rng = np.random.default_rng(seed)
    full = causal_maps(rng, B, L, H, N)
    lp = np.log(rng.uniform(0.02, 1.0, size=(B, N)))
    rs = rng.integers(0, N - 1, size=B)
    rs[0] = N - 1                          # a one-token response
    return rng, full, lp, rs


@pytest.mark.parametrize("seed", range(6))
def test_vs_reference_ragged(seed):
    rng, full, lp, rs = batch(seed, L=3 + seed)
    ft, lt, rt = torch.from_numpy(full), torch.from_numpy(lp), torch.from_numpy(rs)
    for kw in ({}, {"model_type": "base"}, {"alpha": 0.3}, {"alpha": 0.0}, {"alpha": 1.0}):
        got = rauq(ft, lt, rt, **kw)
        assert got.dtype == F64 and got.shape == (4,)
        np.testing.assert_allclose(got.numpy(), rauq_ref(full, lp, rs, **kw), rtol=1e-12)
    L = full.shape[1]
    for layer in (None, 0, L - 1, -1):
        want_layer = L - 1 if layer == -1 else layer
        np.testing.assert_allclose(attention_score(ft, layer=layer).numpy(),
                                   attention_score_ref(full, layer=want_layer), rtol=1e-12)
        np.testing.assert_allclose(attention_score(ft, rt, layer=layer).numpy(),
                                   attention_score_ref(full, rs, layer=want_layer), rtol=1e-12)
    V = 100
    ent = rng.uniform(0, math.log(V), size=lp.shape)
    for mt in ("instruct", "base"):
        got = rauq(ft, None, rt, confidence="entropy", entropies=torch.from_numpy(ent), vocab_size=V, model_type=mt)
        want = rauq_ref(full, None, rs, confidence="entropy", entropies=ent, vocab_size=V, model_type=mt)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


def test_every_item_uses_its_own_maps():
    # LM-Polygraph's attention_all reads batch element 0 for every item; here item b alone == item b in a batch
    rng, full, lp, rs = batch(11, B=5, L=4)
    rs[:] = 6                                            # same response start: only the maps differ
    ft, lt = torch.from_numpy(full), torch.from_numpy(lp)
    lt[:] = lt[0]                                        # ... and the same log-probs
    got = rauq(ft, lt, 6)
    gs = attention_score(ft, 6)
    for b in range(5):
        assert got[b].item() == pytest.approx(rauq(ft[b:b + 1], lt[b:b + 1], 6).item(), rel=1e-14)
        assert got[b].item() == pytest.approx(rauq_ref(full[b:b + 1], lt[b:b + 1].numpy(), [6])[0], rel=1e-12)
        assert gs[b].item() == pytest.approx(attention_score_ref(full[b:b + 1], [6])[0], rel=1e-12)
    assert len(set(np.round(got.numpy(), 10))) == 5 and len(set(np.round(gs.numpy(), 10))) == 5
    # with item 0's maps everywhere the numbers would be those of item 0
    bug = rauq(ft[:1].expand_as(ft), lt, 6)
    assert not torch.allclose(bug, got)


def test_full_maps_and_diagonals_agree():
    _, full, lp, rs = batch(3, L=5)
    ft = torch.from_numpy(full)
    diag = torch.diagonal(ft, dim1=-2, dim2=-1).contiguous()
    lt, rt = torch.from_numpy(lp), torch.from_numpy(rs)
    assert torch.equal(rauq(ft, lt, rt), rauq(diag, lt, rt))
    assert torch.equal(attention_score(ft, rt), attention_score(diag, rt))
    assert torch.equal(attention_score(ft), attention_score(diag))
    # numpy input works too
    assert torch.equal(attention_score(full, rs), attention_score(ft, rt))


def test_alpha_defaults():
    _, full, lp, rs = batch(4)
    ft, lt, rt = torch.from_numpy(full), torch.from_numpy(lp), torch.from_numpy(rs)
    assert torch.equal(rauq(ft, lt, rt), rauq(ft, lt, rt, alpha=0.5))
    assert torch.equal(rauq(ft, lt, rt, model_type="base"), rauq(ft, lt, rt, alpha=0.2))
    ent = torch.rand(lt.shape, dtype=F64)
    kw = dict(confidence="entropy", entropies=ent, vocab_size=50)
    assert torch.equal(rauq(ft, None, rt, **kw), rauq(ft, None, rt, alpha=0.9, **kw))
    assert torch.equal(rauq(ft, None, rt, model_type="base", **kw), rauq(ft, None, rt, alpha=0.8, **kw))
    assert not torch.equal(rauq(ft, lt, rt), rauq(ft, lt, rt, alpha=0.2))
    assert fuq.methods.rauq_layers(32) == list(range(10, 23)) and fuq.methods.rauq_layers(3) == [1, 2]


def test_one_token_response_and_hand_value():
    # one response token: no attention is used, RAUQ = 1 - log p_0; AttentionScore's gen slice is empty
    _, full, lp, _ = batch(5)
    ft, lt = torch.from_numpy(full), torch.from_numpy(lp)
    N = full.shape[-1]
    got = rauq(ft, lt, N - 1)
    np.testing.assert_allclose(got.numpy(), 1 - lp[:, -1], rtol=1e-14)
    assert torch.equal(attention_score(ft, N - 1), torch.zeros(4, dtype=F64))
    # AttentionScore by hand: one layer, two heads, diagonals
    d = torch.tensor([[[[0.5, 0.25, 1.0], [1.0, 0.5, 0.5]]]], dtype=F64)   # [1, 1, 2, 3]
    want = -(math.log(0.5 + 1e-12) + math.log(0.25 + 1e-12) + math.log(1 + 1e-12)
             + math.log(1 + 1e-12) + 2 * math.log(0.5 + 1e-12)) / 2
    assert attention_score(d).item() == pytest.approx(want, rel=1e-14)
    want_gen = -(math.log(0.25 + 1e-12) + math.log(0.5 + 1e-12)) / 2     # positions 1 .. N-2 = 1
    assert attention_score(d, 1).item() == pytest.approx(want_gen, rel=1e-14)


def test_right_padding_mask_equals_unpadded_items():
    rng = np.random.default_rng(8)
    B, L, H, N = 3, 4, 3, 14
    lens = [14, 10, 7]
    starts = [5, 3, 6]
    full = np.zeros((B, L, H, N, N))
    lp = np.full((B, N), np.nan)
    mask = np.zeros((B, N), dtype=bool)
    singles = []
    for b in range(B):
        n = lens[b]
        m = causal_maps(rng, 1, L, H, n)
        full[b, :, :, :n, :n] = m[0]
        full[b, :, :, n:, :] = np.nan                        # padding is never read
        lp[b, :n] = np.log(rng.uniform(0.05, 1, size=n))
        mask[b, :n] = True
        singles.append((m, lp[b:b + 1, :n].copy()))
    ft, lt, mt = torch.from_numpy(full), torch.from_numpy(lp), torch.from_numpy(mask)
    got = rauq(ft, lt, starts, mask=mt)
    gs = attention_score(ft, starts, mask=mt)
    ga = attention_score(ft, mask=mt)
    for b, (m, l1) in enumerate(singles):
        assert got[b].item() == pytest.approx(rauq_ref(m, l1, [starts[b]])[0], rel=1e-12)
        assert gs[b].item() == pytest.approx(attention_score_ref(m, [starts[b]])[0], rel=1e-12)
        assert ga[b].item() == pytest.approx(attention_score_ref(m)[0], rel=1e-12)
    np.testing.assert_allclose(got.numpy(), rauq_ref(full, lp, starts, mask=mask), rtol=1e-12)
    bad = mask.copy()
    bad[1, 6] = False                                        # a hole inside item 1's response
    with pytest.raises(ValueError, match="mask"):
        rauq(ft, lt, starts, mask=torch.from_numpy(bad))


def test_dtypes():
    _, full, lp, rs = batch(6)
    f32 = torch.from_numpy(full).float()
    got = rauq(f32, torch.from_numpy(lp).float(), torch.from_numpy(rs))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), rauq_ref(f32.double().numpy(), np.float32(lp), rs), rtol=1e-6)
    assert rauq(f32, torch.from_numpy(lp), torch.from_numpy(rs)).dtype == F64
    s16 = attention_score(f32.half(), torch.from_numpy(rs))
    assert s16.dtype == torch.float32
    np.testing.assert_allclose(s16.numpy(), attention_score_ref(f32.half().double().numpy(), rs), rtol=1e-6)


def test_argument_errors():
    _, full, lp, rs = batch(7, L=4)
    ft, lt, rt = torch.from_numpy(full), torch.from_numpy(lp), torch.from_numpy(rs)
    N = full.shape[-1]
    with pytest.raises(ValueError, match="attn"):
        rauq(ft[0, 0], lt, rt)
    with pytest.raises(ValueError, match="attn"):
        attention_score(ft[..., :-1], rt)                   # not square
    with pytest.raises(TypeError, match="attn"):
        attention_score((ft > 0.5), rt)
    with pytest.raises(TypeError, match="attn"):
        attention_score([ft])
    with pytest.raises(ValueError, match="at least 3 layers"):
        rauq(ft[:, :2], lt, rt)
    with pytest.raises(ValueError, match="response_start"):
        rauq(ft, lt, N)
    with pytest.raises(ValueError, match="response_start"):
        attention_score(ft, torch.tensor([0, 1, -1, 2]))
    with pytest.raises(ValueError, match="response_start"):
        rauq(ft, lt, torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="response_start"):
        rauq(ft, lt, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="logprobs"):
        rauq(ft, lt[:, :-1], rt)
    with pytest.raises(TypeError, match="logprobs"):
        rauq(ft, lt.long(), rt)
    with pytest.raises(ValueError, match="confidence"):
        rauq(ft, lt, rt, confidence="margin")
    with pytest.raises(ValueError, match="entropies"):
        rauq(ft, lt, rt, confidence="entropy")
    with pytest.raises(ValueError, match="alpha"):
        rauq(ft, lt, rt, alpha=1.5)
    with pytest.raises(ValueError, match="model_type"):
        rauq(ft, lt, rt, model_type="chat")
    with pytest.raises(ValueError, match="layer"):
        attention_score(ft, layer=4)
    with pytest.raises(TypeError, match="layer"):
        attention_score(ft, layer=1.0)
    with pytest.raises(ValueError, match="mask"):
        attention_score(ft, mask=torch.ones(4, N - 1, dtype=torch.bool))


def test_registry():
    for name, inputs in (("attention_score", ("attn", "response_start")),
                         ("rauq", ("attn", "logprobs", "response_start")),
                         ("uqac", ("attn", "ans_src", "is_stop", "h_last", "token_logprobs"))):
        m = REGISTRY[name]
        assert m.inputs == inputs and m.paper and m.fn.__doc__
        assert getattr(fuq.methods, name) is m.fn


def test_top5_logprobs_vs_reference():
    rng = np.random.default_rng(9)
    R = 40
    ids = np.stack([rng.choice(12, 5, replace=False) for _ in range(R)])
    probs = np.sort(rng.dirichlet(np.ones(6), size=R)[:, :5], axis=1)[:, ::-1].copy()
    resp = rng.integers(0, 12, size=R)                   # about half not in the previous row's top-5
    got = uqac_top5_logprobs(torch.from_numpy(ids), torch.from_numpy(probs), torch.from_numpy(resp))
    np.testing.assert_allclose(got.numpy(), uqac_top5_logprobs_ref(ids, probs, resp), rtol=1e-15)
    # batched leading dims
    got2 = uqac_top5_logprobs(torch.from_numpy(np.stack([ids, ids])), torch.from_numpy(np.stack([probs, probs])),
                              torch.from_numpy(np.stack([resp, resp])))
    assert torch.equal(got2[1], got)


# ---- UQAC (built on H2's ops) ----------------------------------------------------------------------------------

def uqac_case(rng, L=3, H=6, R=24, I=14, D=8):
    N = I + R
    s = rng.normal(size=(L, H, R, N)) * rng.uniform(0.5, 4.0, size=(L, H, 1, 1))
    q = I + np.arange(R)
    s = np.where(np.arange(N)[None, :] <= q[:, None], s, -np.inf)
    attn = np.exp(s - s.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    stop = rng.random(N) < 0.2
    stop[:I] = True
    h = rng.normal(size=(R, D))
    lp = np.log(rng.uniform(0.05, 1.0, size=R))
    A = int(rng.integers(1, 4))
    start = int(rng.integers(R // 2, R - A))
    return attn, np.arange(start, start + A), stop, h, lp


@pytest.mark.parametrize("seed", range(8))
def test_uqac_vs_reference(seed):
    rng = np.random.default_rng(seed)
    attn, ans, stop, h, lp = uqac_case(rng)
    kw = [{}, {"reduction": "mean", "n_heads": 5}, {"buffer": 2, "threshold": 0.2, "min_chain_len": 9},
          {"k": 3, "similarity_threshold": 0.1}][seed % 4]
    got = uqac(torch.from_numpy(attn), torch.from_numpy(ans), torch.from_numpy(stop), torch.from_numpy(h),
               torch.from_numpy(lp), **kw)
    want = uqac_ref(attn, ans, stop, h, lp, **kw)
    assert got.dim() == 0 and got.item() == pytest.approx(want, rel=1e-9)
    assert got.item() < 0


def test_uqac_list_nan_and_variants():
    rng = np.random.default_rng(42)
    cases = [uqac_case(rng, R=r, I=i) for r, i in ((20, 12), (30, 15), (16, 20))]
    T = torch.from_numpy
    attn = [T(c[0]) for c in cases]
    ans = [T(cases[0][1]), None, T(cases[2][1])]
    got = uqac(attn, ans, [T(c[2]) for c in cases], [T(c[3]) for c in cases], [T(c[4]) for c in cases])
    assert got.shape == (3,) and math.isnan(got[1].item())
    for b in (0, 2):
        c = cases[b]
        assert got[b].item() == pytest.approx(uqac_ref(c[0], c[1], c[2], c[3], c[4]), rel=1e-9)
    # empty answer span -> NaN
    c = cases[0]
    assert math.isnan(uqac(T(c[0]), torch.zeros(0, dtype=torch.long), T(c[2]), T(c[3]), T(c[4])).item())
    # variants: the kept members come from the reference pipeline
    from flashuq.reference import (uqac_backtrack_ref, uqac_reduce_attention_ref, uqac_similarity_filter_ref)
    chain, _ = uqac_backtrack_ref(uqac_reduce_attention_ref(c[0]), c[1], c[2])
    keep = uqac_similarity_filter_ref(c[3], chain, c[1])
    va = np.log(rng.uniform(0.1, 1, size=(4, len(c[1]))))
    vs = np.log(rng.uniform(0.1, 1, size=(4, len(keep))))
    got = uqac(T(c[0]), T(c[1]), T(c[2]), T(c[3]), T(c[4]), variant_ans_logprobs=T(va), variant_seq_logprobs=T(vs))
    assert got.item() == pytest.approx(-np.exp(va.sum(1) + vs.sum(1)).sum(), rel=1e-9)
    with pytest.raises(ValueError, match="variant_seq_logprobs"):
        uqac(T(c[0]), T(c[1]), T(c[2]), T(c[3]), T(c[4]), variant_ans_logprobs=T(va),
             variant_seq_logprobs=T(vs[:, :0] if len(keep) else np.zeros((4, 1))))
    with pytest.raises(ValueError, match="ans_src"):
        uqac(T(c[0]), torch.tensor([c[0].shape[2] - 1]), T(c[2]), T(c[3]), T(c[4]))
    with pytest.raises(ValueError, match="attn"):
        uqac(T(c[0][0]), T(c[1]), T(c[2]), T(c[3]), T(c[4]))


def test_uqac_accepts_reduced_attention():
    # a [R, Ntok] entry is step 1 done (flashuq.hf.uqac_inputs' streaming reduction): same score
    rng = np.random.default_rng(7)
    T = torch.from_numpy
    cases = [uqac_case(rng, R=r, I=i) for r, i in ((20, 12), (26, 9))]
    from flashuq.reference import uqac_reduce_attention_ref
    for c in cases:
        red = T(uqac_reduce_attention_ref(c[0]))
        got = uqac(red, T(c[1]), T(c[2]), T(c[3]), T(c[4]))
        assert got.item() == pytest.approx(uqac_ref(c[0], c[1], c[2], c[3], c[4]), rel=1e-9)
    mixed = uqac([T(cases[0][0]), T(uqac_reduce_attention_ref(cases[1][0]))], [T(c[1]) for c in cases],
                 [T(c[2]) for c in cases], [T(c[3]) for c in cases], [T(c[4]) for c in cases])
    for b, c in enumerate(cases):
        assert mixed[b].item() == pytest.approx(uqac_ref(c[0], c[1], c[2], c[3], c[4]), rel=1e-9)


def test_uqac_terms_vs_reference():
    # ans_probs_prod, attn_probs_prod and sims_probs_prod of UQAC's eval.py, from the reference chain and filter
    from flashuq.methods import uqac_terms
    from flashuq.reference import (uqac_backtrack_ref, uqac_reduce_attention_ref, uqac_similarity_filter_ref)

    T = torch.from_numpy
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        attn, ans, stop, h, lp = uqac_case(rng)
        chain, scores = uqac_backtrack_ref(uqac_reduce_attention_ref(attn), ans, stop)
        keep = uqac_similarity_filter_ref(h, chain, ans)
        got = uqac_terms(T(attn), T(ans), T(stop), T(h), T(lp))
        assert got.chain.tolist() == list(chain) and got.keep.tolist() == list(keep)
        np.testing.assert_allclose(got.scores.double().numpy(), scores, rtol=1e-5, atol=1e-7)
        p = np.exp(lp)
        assert got.ans_prob.item() == pytest.approx(np.prod(p[ans + 1]), rel=1e-12)
        assert got.attn_prob.item() == pytest.approx(np.prod(p[np.asarray(chain) + 1]), rel=1e-12)
        assert got.sim_prob.item() == pytest.approx(np.prod(p[np.asarray(keep) + 1]) * np.prod(p[ans + 1]), rel=1e-12)
        # P~_sim is UQAC without variants
        assert -got.sim_prob.item() == pytest.approx(uqac(T(attn), T(ans), T(stop), T(h), T(lp)).item(), rel=1e-9)
    with pytest.raises(ValueError, match="ans_src"):
        uqac_terms(T(attn), torch.zeros(0, dtype=torch.long), T(stop), T(h), T(lp))
    with pytest.raises(ValueError, match="attn"):
        uqac_terms(T(attn[0]), T(ans), T(stop), T(h), T(lp))
    with pytest.raises(ValueError, match="token_logprobs"):
        uqac_terms(T(attn), T(ans), T(stop), T(h), T(lp[:-1]))
