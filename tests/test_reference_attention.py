"""The attention-method references of flashuq.reference (docs/methods.md#attention-methods) against hand-worked cases and
against second, literal-style ports (written here, in torch/numpy like the originals) of UQAC's
``attn_mat_preprocessing`` / ``attn_mat_reduction`` / ``backtrack`` / ``get_tkattn_to_tkans_sims`` +
``thresholded_topk_1d`` and of LM-Polygraph's ``RAUQ`` (on ``attention_all`` built as
``GreedyProbsCalculator`` builds it) and ``AttentionScore``."""

import math

import numpy as np
import pytest
import torch

from flashuq.reference import (UQAC_CALIBRATION, attention_score_ref, rauq_ref, uqac_backtrack_ref,
                               uqac_marginal_ref, uqac_reduce_attention_ref, uqac_ref,
                               uqac_similarity_filter_ref, uqac_top5_logprobs_ref)


# ---- hand-worked backtracking ----------------------------------------------------------------------------
# I = 2 instruction tokens, R = 6 response tokens (absolute positions 2..7), stop words: the instruction.
#   row r=0 (abs 2): key 1 (stop) 1.0
#   row r=1 (abs 3): key 2 0.7, key 3 0.3
#   row r=2 (abs 4): key 1 0.5, key 2 0.5          (a tie, key 1 first, but it is a stop word)
#   row r=3 (abs 5): key 4 1.0                      (never a source)
#   row r=4 (abs 6): key 5 0.6, key 3 0.3, key 4 0.1   <- answer source 4 (abs 6)
#   row r=5 (abs 7): key 6 1.0
# Defaults (buffer 3, threshold 0.5, min length 5 + 1 = 6):
#   round 1, sources {6}: acc[5]=.6, acc[3]=.3, acc[4]=.1; all three picked (the chain is short):
#            chain abs [6, 4, 2, 3]
#   round 2, sources {4, 2, 3}: s=4: key 1 stop, key 2 -> acc[2]=.5; then key 3 (source 2 processed),
#            key 4 (= s), rank 5 breaks. s=2: nothing. s=3: key 2 -> acc[2]=1.2. Pick 2 -> chain + [1]
#   round 3, source {1}: an instruction row of zeros; scanned to the end (nothing accumulates, chain
#            length 5 < 6), nothing > 0 -> stop.
#   sorted abs [1, 2, 3, 4, 6] -> response [-1, 0, 1, 2, 4], scores [1.2, .3, .1, .6, 0].

def hand_case():
    A = np.zeros((6, 8))
    A[0, 1] = 1.0
    A[1, 2], A[1, 3] = 0.7, 0.3
    A[2, 1], A[2, 2] = 0.5, 0.5
    A[3, 4] = 1.0
    A[4, 5], A[4, 3], A[4, 4] = 0.6, 0.3, 0.1
    A[5, 6] = 1.0
    stop = np.array([True, True] + [False] * 6)
    return A, stop


def test_uqac_calibration_is_the_repositorys():
    """flashuq's one copy of the calibration (flashuq/_uqac_calibration.py, read by the reference, the C++
    and Triton kernels and flashuq.hf) against the UQAC repository's src/utils/macro.py CALIBRATION_RATIO,
    which lists the factors nearest key first; flashuq stores them farthest key first."""
    calibration_ratio = [0.16644488, 0.20938152, 0.32959151, 0.46061748, 0.59304059,
                         0.67549127, 0.73914525, 0.81274293, 0.87378443, 0.93925344]
    assert UQAC_CALIBRATION == tuple(reversed(calibration_ratio))
    import flashuq.hf as hf
    assert hf.UQAC_CALIBRATION is UQAC_CALIBRATION


@pytest.mark.parametrize("kw, chain, scores", [
    ({}, [-1, 0, 1, 2, 4], [1.2, 0.3, 0.1, 0.6, 0.0]),
    # total minimum 3: round 1 stops after key 5 (.3 < .5 and 2 + 1 >= 3); round 2 picks key 2 at exactly
    # the threshold (acc = .5 is not < .5); round 3 breaks at rank 5 (the chain is long enough)
    ({"min_chain_len": 3}, [-1, 2, 4], [0.5, 0.6, 0.0]),
    # minimum 2, threshold .65: key 5 is picked (chain 1 + 0 < 2), key 3 stops; round 2's .5 < .65 stops
    ({"min_chain_len": 2, "threshold": 0.65}, [2, 4], [0.6, 0.0]),
    ({"min_chain_len": 2, "threshold": 0.5}, [-1, 2, 4], [0.5, 0.6, 0.0]),
    # buffer 1: one pick per round: 5, then 2 (acc .5 from source 4 alone)
    ({"buffer": 1}, [-1, 2, 4], [0.5, 0.6, 0.0]),
    # one round only
    ({"max_steps": 1}, [0, 1, 2, 4], [0.3, 0.1, 0.6, 0.0]),
    ({"max_steps": 0}, [4], [0.0]),
])
def test_backtrack_hand_worked(kw, chain, scores):
    A, stop = hand_case()
    c, s = uqac_backtrack_ref(A, [4], stop, **kw)
    assert c.dtype == np.int64 and s.dtype == np.float64
    np.testing.assert_array_equal(c, chain)
    np.testing.assert_allclose(s, scores, rtol=0, atol=1e-15)


def test_backtrack_tie_lower_key_first():
    # answer source 4 (abs 6) attends keys 3 and 5 equally; buffer 1 takes key 3 (the lower index)
    A, stop = hand_case()
    A[4] = 0.0
    A[4, 3] = A[4, 5] = 0.4
    c, s = uqac_backtrack_ref(A, [4], stop, buffer=1, min_chain_len=2)
    # round 2: source 2 (abs) = row 0: key 1 is a stop word; rank 5 breaks (chain long enough)
    np.testing.assert_array_equal(c, [0, 4])
    np.testing.assert_allclose(s, [0.4, 0.0])


def test_backtrack_scans_past_rank_5_only_while_short():
    # I = 1, R = 7; stop words: position 0 and keys 2..5. Source abs 7 (answer source 6). Keys by weight:
    # 2, 3, 4, 5 (stop), 7 (= s), then key 1 at rank 5: taken while the chain is short, so abs 0 (= -1)
    # joins; key 6 at rank 6 is not reached (acc > 0 by then).
    A = np.zeros((7, 8))
    A[6, [2, 3, 4, 5, 7, 1, 6]] = [0.3, 0.25, 0.2, 0.15, 0.05, 0.04, 0.01]
    stop = np.array([True, False, True, True, True, True, False, False])
    c, s = uqac_backtrack_ref(A, [6], stop)
    np.testing.assert_array_equal(c, [-1, 6])
    np.testing.assert_allclose(s, [0.04, 0.0])
    c, s = uqac_backtrack_ref(A, [6], stop, min_chain_len=1)   # long enough from the start: stop at rank 5
    np.testing.assert_array_equal(c, [6])
    # key 6 wins when key 1 is a stop word too (rank 6 is reached: nothing accumulated yet)
    stop[1] = True
    c, s = uqac_backtrack_ref(A, [6], stop)
    np.testing.assert_array_equal(c, [4, 6])
    np.testing.assert_allclose(s, [0.01, 0.0])


def test_backtrack_empty_and_multi_answer():
    A, stop = hand_case()
    c, s = uqac_backtrack_ref(A, [], stop)
    assert c.shape == (0,) and s.shape == (0,) and c.dtype == np.int64
    # two answer sources 4 and 5 (abs 6, 7), one round: s=6 adds 5: .6, 3: .3, 4: .1; s=7 adds key 6: 1.0
    # (its source abs 5 is not processed). Picks 6, 5, 3 -> chain abs [6, 7, 5, 4, 2]
    c, s = uqac_backtrack_ref(A, [4, 5], stop, max_steps=1)
    np.testing.assert_array_equal(c, [0, 2, 3, 4, 5])
    np.testing.assert_allclose(s, [0.3, 0.6, 1.0, 0.0, 0.0])


# ---- hand-worked reduction -------------------------------------------------------------------------------

def test_reduce_preprocessing_and_head_choice_by_hand():
    # L = 1, H = 3, R = 2, Ntok = 14 (I = 12). Row r attends with weight 1 to column 1 in head 0 (entropy 0),
    # uniformly over columns 1..3 in head 1 and uniformly over 1..7 in head 2.
    L, H, R, N = 1, 3, 2, 14
    I = N - R
    a = np.zeros((L, H, R, N))
    a[0, 0, :, 1] = 1.0
    a[0, 1, :, 1:4] = 1 / 3
    a[0, 2, :, 1:8] = 1 / 7
    a[0, :, :, 0] = 5.0          # column 0 is zeroed
    a[0, :, 0, I] = 9.0          # the diagonal (r=0 -> column I) is zeroed
    a[0, 2, 1, I] = 2.0          # r=1 (query column I + 1): the key just before it is scaled by 0.16644488
    out = uqac_reduce_attention_ref(a, n_heads=1, reduction="max")
    np.testing.assert_allclose(out[0], np.eye(N)[1], atol=1e-11)         # head 0, entropy ~0
    out2 = uqac_reduce_attention_ref(a, n_heads=2, reduction="mean")
    # row 0 (query at column I = 12): columns 2..11 are calibrated, so head 1's row becomes
    # [1, f0, f1] / (1 + f0 + f1) on columns 1..3 (f0 = .93925344, f1 = .87378443)
    f0, f1 = 0.93925344, 0.87378443
    want = np.zeros(N)
    want[1] += 1.0
    want[1:4] += np.array([1, f0, f1]) / (1 + f0 + f1)
    np.testing.assert_allclose(out2[0], want / 2, atol=1e-11)
    # row 1 of head 2: columns 1..7 (I + 1 - 10 = 3, so columns 3..7 are calibrated) + column I = 2 * f[9]
    row = np.zeros(N)
    row[1:8] = 1 / 7
    for c, f in enumerate(UQAC_CALIBRATION):
        col = I + 1 - 10 + c
        row[col] *= f
    row[I] = 2.0 * UQAC_CALIBRATION[-1]
    row /= row.sum() + 1e-12
    out3 = uqac_reduce_attention_ref(a, n_heads=3, reduction="max")
    # row 1 (query column 13): columns 3..12 calibrated; head 1: column 3 by f0, columns 1, 2 untouched
    h1 = np.zeros(N)
    h1[1:4] = np.array([1, 1, f0]) / (2 + f0)
    want3 = np.maximum(np.maximum(np.eye(N)[1], h1), row)
    np.testing.assert_allclose(out3[1], want3, atol=1e-11)
    with pytest.raises(ValueError, match="n_heads"):
        uqac_reduce_attention_ref(a, n_heads=4)


def test_reduce_entropy_tie_takes_lower_map():
    # two identical maps (equal entropies): n_heads = 1 takes s = 0; make s = 0 and s = 1 differ only by a
    # column permutation (same entropy, different rows)
    N, R = 12, 1
    a = np.zeros((2, 1, R, N))
    a[0, 0, 0, [1, 2]] = [0.7, 0.3]
    a[1, 0, 0, [2, 1]] = [0.7, 0.3]
    out = uqac_reduce_attention_ref(a, n_heads=1)
    assert out[0, 1] > out[0, 2]


# ---- similarity filter, marginal, top-5 quirk by hand -----------------------------------------------------

def test_similarity_filter_by_hand():
    # tokens 0..5; answer source 3 (token 4). cos with h[4] = e0: token c+1 for members -1..2
    h = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.1], [1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    chain = [-1, 0, 1, 2, 3]     # sims: h[0] 1, h[1] 0, h[2] < 0, h[3] 1/sqrt2; answer source last
    np.testing.assert_array_equal(uqac_similarity_filter_ref(h, chain, [3]), [-1, 0, 2])  # sim 0 >= 0 kept
    np.testing.assert_array_equal(uqac_similarity_filter_ref(h, chain, [3], k=2), [-1, 2])
    np.testing.assert_array_equal(uqac_similarity_filter_ref(h, chain, [3], threshold=0.8), [-1])
    np.testing.assert_array_equal(uqac_similarity_filter_ref(h, chain, [3], k=0), np.zeros(0))
    # k = 1 with a tie: h[0] and a copy -> the earlier chain entry
    h2 = h.copy()
    h2[2] = h2[0]
    np.testing.assert_array_equal(uqac_similarity_filter_ref(h2, chain, [3], k=1), [-1])
    # a zero vector (token 5) has cosine 0 (torch clamps norms at 1e-8): member 4 kept at threshold 0
    np.testing.assert_array_equal(uqac_similarity_filter_ref(h, [4, 3], [3]), [4])
    # sim-mean over two answer sources: token 4 (e0) and token 5 (zero -> cos 0) -> half the cosine
    np.testing.assert_array_equal(uqac_similarity_filter_ref(h, [-1, 0, 2, 3, 4], [3, 4], threshold=0.6),
                                  [])
    np.testing.assert_array_equal(uqac_similarity_filter_ref(h, [-1, 0, 2, 3, 4], [3, 4], threshold=0.5),
                                  [-1])


def test_similarity_threshold_compared_in_fp32():
    # a threshold just above the fp64 similarity but equal to it in float32 keeps the member
    h = np.array([[1.0, 0.0], [0.6, 0.8]])      # cos(h[1], h[0]) = 0.6 (fp64: 0.6 exactly-ish)
    sim = float(np.dot(h[1], h[0]) / np.linalg.norm(h[1]))
    thr = sim + 1e-12                            # above in fp64, the same float32
    assert np.float32(thr) == np.float32(sim)
    np.testing.assert_array_equal(uqac_similarity_filter_ref(h, [0, -1], [-1], threshold=thr), [0])
    np.testing.assert_array_equal(uqac_similarity_filter_ref(h, [0, -1], [-1], threshold=sim + 1e-6), [])


def test_marginal_by_hand():
    la = np.log([[0.5, 0.4], [0.1, 0.2]])
    ls = np.log([[0.9], [0.3]])
    assert uqac_marginal_ref(la, ls) == pytest.approx(0.5 * 0.4 * 0.9 + 0.1 * 0.2 * 0.3, rel=1e-14)
    # each factor is clamped at 1e-12 on its own
    la2 = np.array([[-100.0, math.log(0.5)]])
    assert uqac_marginal_ref(la2, np.zeros((1, 0))) == pytest.approx(1e-12 * 0.5, rel=1e-12)
    assert uqac_marginal_ref(np.full((2, 3, 1), -np.inf), np.zeros((2, 3, 0))).tolist() == \
        pytest.approx([3e-12, 3e-12], rel=1e-12)
    assert math.isnan(uqac_marginal_ref([[math.nan]], [[0.0]]))


def test_top5_quirk_by_hand():
    ids = np.array([[5, 6, 7, 8, 9], [1, 2, 3, 4, 5], [7, 7, 1, 2, 3]])
    probs = np.array([[.5, .2, .1, .1, .1], [.4, .3, .1, .1, .1], [.6, .1, .1, .1, .1]])
    resp = np.array([7, 3, 9])
    out = uqac_top5_logprobs_ref(ids, probs, resp)
    # token 0 reads row -1 = row 2: 7 first at column 0 -> .6; token 1 (=3) in row 0? no -> top-1 .5;
    # token 2 (=9) in row 1? no -> top-1 .4
    np.testing.assert_allclose(np.exp(out), [0.6, 0.5, 0.4])
    resp2 = np.array([3, 6, 3])
    np.testing.assert_allclose(np.exp(uqac_top5_logprobs_ref(ids, probs, resp2)), [0.1, 0.2, 0.1])


def test_uqac_ref_end_to_end_small():
    # a hand case routed through the whole pipeline: uniform heads (the reduction then keeps the shape)
    rng = np.random.default_rng(0)
    L, H, R, N = 2, 2, 6, 18
    attn = causal_attention(rng, L, H, R, N)
    stop = np.zeros(N, dtype=bool)
    stop[:N - R] = True
    hl = rng.normal(size=(R, 4))
    lp = np.log(rng.uniform(0.2, 1.0, size=R))
    ans = np.array([3, 4])
    red = uqac_reduce_attention_ref(attn, n_heads=2)
    chain, _ = uqac_backtrack_ref(red, ans, stop)
    keep = uqac_similarity_filter_ref(hl, chain, ans)
    want = -math.exp(lp[ans + 1].sum() + lp[keep + 1].sum())
    assert uqac_ref(attn, ans, stop, hl, lp, n_heads=2) == pytest.approx(want, rel=1e-12)
    assert math.isnan(uqac_ref(attn, None, stop, hl, lp)) and math.isnan(uqac_ref(attn, [], stop, hl, lp))
    va = np.log(rng.uniform(0.2, 1, size=(3, 2)))
    vs = np.log(rng.uniform(0.2, 1, size=(3, len(keep))))
    got = uqac_ref(attn, ans, stop, hl, lp, n_heads=2, variant_ans_logprobs=va, variant_seq_logprobs=vs)
    assert got == pytest.approx(-np.sum(np.exp(va.sum(1) + vs.sum(1))), rel=1e-12)


# ---- literal-style port of UQAC (torch, as processor.py) ----------------------------------------------------

CAL_T = torch.tensor(UQAC_CALIBRATION, dtype=torch.float64)


def port_reduce(attn_mats, n_heads_to_keep, reduction):
    attn_mats = attn_mats.clone()
    n_tks, n_ans = attn_mats.shape[-1], attn_mats.shape[-2]
    n_instr = n_tks - n_ans
    attn_mats[..., torch.arange(n_ans), torch.arange(n_instr, n_tks)] = 0
    attn_mats[..., 0] = 0
    rows = torch.arange(n_ans).unsqueeze(-1)
    cols = torch.arange(10)
    attn_mats[:, :, rows, rows + cols + (n_instr - 10)] *= CAL_T        # negative columns wrap (future keys)
    proc = attn_mats.view(-1, n_ans, n_tks)
    proc = proc / (proc.sum(dim=-1, keepdim=True) + 1e-12)
    ent = -(proc * (proc + 1e-12).log()).sum(dim=-1)
    # torch.topk(largest=False) on CPU; ties by the lower map (the contract's reading), via a stable sort
    ids = torch.sort(ent, dim=0, stable=True).indices[:n_heads_to_keep]
    mats = proc.transpose(0, 1)
    sel = mats[torch.arange(mats.shape[0]).unsqueeze(-1), ids.transpose(0, 1), :].transpose(0, 1)
    return sel.mean(0) if reduction == "mean" else sel.max(0).values


def port_backtrack(attn_mat, srcids, stop_word_mask, buf=3, thr=0.5, min_len=5, max_steps=1000):
    n_instr = attn_mat.shape[1] - attn_mat.shape[0]
    attn_mat = torch.cat([torch.zeros((n_instr, attn_mat.shape[-1]), dtype=attn_mat.dtype), attn_mat], 0)
    srcids = srcids + n_instr
    min_len += srcids.shape[0]
    chain = srcids.tolist()
    score_chain = [0.0] * srcids.shape[0]
    processed = set()
    srcs = chain
    n = attn_mat.shape[0]
    for _ in range(max_steps):
        if not srcs:
            break
        processed.update(srcs)
        acc = torch.zeros(n, dtype=attn_mat.dtype)
        for s in srcs:
            vec = attn_mat[s]
            top = torch.argsort(vec, descending=True, stable=True)
            for i in range(top.size(0)):
                if i >= 5 and ((acc > 0).any() or len(chain) >= min_len):
                    break
                t = top[i].item()
                if t == s or (t - 1) in processed or stop_word_mask[t]:
                    continue
                acc[t] += vec[t]
        nz = acc > 0
        if not torch.any(nz):
            break
        idx = nz.nonzero(as_tuple=True)[0]
        sc, order = torch.sort(acc[idx], descending=True, stable=True)
        sidx = idx[order]
        tgt = []
        for i in range(sidx.size(0)):
            if len(tgt) >= buf:
                break
            t, v = sidx[i].item(), sc[i].item()
            if v < thr and (len(chain) + len(tgt)) >= min_len:
                break
            tgt.append(t)
            chain.append(t - 1)
            score_chain.append(v)
        srcs = [t - 1 for t in tgt]
        if not tgt:
            break
    pairs = sorted(zip(chain, score_chain), key=lambda x: x[0])
    ids, scores = zip(*pairs)
    return torch.tensor(ids) - n_instr, torch.tensor(scores, dtype=torch.float64)


def port_sims_filter(h, chain, ans, k=10, threshold=0.0):
    embs_ans = h[ans + 1]
    embs_attn = h[chain + 1]
    sims = torch.cosine_similarity(embs_ans.unsqueeze(1), embs_attn, dim=-1).mean(0)
    sims = sims[: -len(ans)].float()
    mask = sims >= threshold
    valid = mask.nonzero(as_tuple=True)[0]
    if valid.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    vals = sims[valid]
    order = torch.sort(vals, descending=True, stable=True).indices[:k]
    return torch.sort(chain[valid[order]]).values


def causal_attention(rng, L, H, R, N, quantise=None):
    """Softmax of random scores under a causal mask; rows are the R response queries (absolute I + r)."""
    I = N - R
    s = rng.normal(size=(L, H, R, N)) * rng.uniform(0.5, 4.0, size=(L, H, 1, 1))
    q = I + np.arange(R)
    s = np.where(np.arange(N)[None, :] <= q[:, None], s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    if quantise:
        a = np.round(a * quantise) / quantise
    return a


@pytest.mark.parametrize("seed", range(40))
def test_reference_vs_literal_port_random(seed):
    rng = np.random.default_rng(seed)
    L, H = int(rng.integers(1, 4)), int(rng.integers(2, 5))
    R = int(rng.integers(4, 20))
    I = int(rng.integers(11 - min(R, 10) if R < 11 else 1, 12))   # Ntok >= 11 (no wrap-around)
    N = I + R
    quant = [None, 8, 20][seed % 3]                                   # coarse values force ties
    attn = causal_attention(rng, L, H, R, N, quant)
    nh = int(rng.integers(1, L * H + 1))
    red = "max" if seed % 2 else "mean"
    got = uqac_reduce_attention_ref(attn, n_heads=nh, reduction=red)
    want = port_reduce(torch.from_numpy(attn), nh, red).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)

    # backtrack on the reduced map (quantised to force ties in keys and accumulated scores)
    A = np.round(got * 16) / 16 if seed % 4 == 0 else got
    stop = rng.random(N) < 0.25
    stop[:I] = True
    A_ = int(rng.integers(1, min(4, R - 1) + 1))
    start = int(rng.integers(0, R - A_))
    ans = np.arange(start, start + A_)
    kw = dict(buffer=int(rng.integers(1, 5)), threshold=float(rng.choice([0.1, 0.3, 0.5])),
              min_chain_len=int(rng.integers(0, 8)), max_steps=int(rng.choice([1, 2, 1000])))
    c, s = uqac_backtrack_ref(A, ans, stop, **kw)
    c2, s2 = port_backtrack(torch.from_numpy(A), torch.from_numpy(ans), stop.tolist(), kw["buffer"],
                            kw["threshold"], kw["min_chain_len"] - A_, kw["max_steps"])  # port: + A inside
    np.testing.assert_array_equal(c, c2.numpy())
    np.testing.assert_allclose(s, s2.numpy(), rtol=1e-13)
    # causal attention: the answer sources are the chain's last A entries
    np.testing.assert_array_equal(c[-A_:], ans)

    # similarity filter (random hidden states; some duplicated rows force ties)
    D = 6
    h = rng.normal(size=(R, D))
    if seed % 3 == 0:
        h[1::3] = h[0]
    k = int(rng.integers(1, 6))
    thr = float(rng.choice([0.0, -0.2, 0.3]))
    keep = uqac_similarity_filter_ref(h, c, ans, k=k, threshold=thr)
    keep2 = port_sims_filter(torch.from_numpy(h), torch.from_numpy(c), torch.from_numpy(ans), k, thr)
    np.testing.assert_array_equal(keep, keep2.numpy())


def test_default_chain_has_min_length_on_random_attention():
    rng = np.random.default_rng(5)
    attn = causal_attention(rng, 4, 5, 30, 45)
    red = uqac_reduce_attention_ref(attn)          # 16 of the 20 maps per row
    stop = np.zeros(45, dtype=bool)
    stop[:15] = True
    c, s = uqac_backtrack_ref(red, [27, 28], stop)
    assert len(c) >= 7 and (np.diff(c) >= 0).all() and (s[-2:] == 0).all() and c.min() >= -1


# ---- LM-Polygraph literal ports: RAUQ and AttentionScore -----------------------------------------------------

def polygraph_attention_all(full, P):
    """attention_all of one item as GreedyProbsCalculator builds it: [L*H, c, c], row j = decoding step j
    (query y_{j-1}), columns = generated tokens 0..j-1 (prompt columns dropped)."""
    L, H, N, _ = full.shape
    c = N - P
    out = np.zeros((L * H, c, c))
    for j in range(1, c):
        q = P + j - 1                                    # the query at step j is the input y_{j-1}
        rows = [full[l, h, q, P:P + j] for l in range(L) for h in range(H)]
        out[:, j, :j] = np.stack(rows)
    return out


def polygraph_rauq(attention_all, ll, L, H, alpha):
    layers = list(range(L // 3, int(np.ceil(L / 3 * 2) + 1)))
    w = attention_all.reshape(L, H, attention_all.shape[-2], attention_all.shape[-1])
    prev = np.diagonal(w, offset=-1, axis1=2, axis2=3)
    scores = []
    for layer in layers:
        head = prev[layer].mean(-1).argmax()
        conf = [np.exp(ll[0])]
        for j in range(1, len(ll)):
            conf.append(alpha * np.exp(ll[j]) + (1 - alpha) * prev[layer, head, j - 1] * conf[-1])
        scores.append(1 - np.log(conf).mean())
    return np.max(scores)


def polygraph_attention_score(full, n_gen, layer, gen_only):
    ue = 0.0
    for h in range(full.shape[1]):
        a = full[layer, h]
        if gen_only:
            a = a[-n_gen:-1, -n_gen:-1]
        ue += np.sum(np.log(np.diag(a) + 1e-12))
    return -ue / full.shape[1]


def full_causal(rng, B, L, H, N):
    s = rng.normal(size=(B, L, H, N, N)) * 2
    s = np.where(np.tril(np.ones((N, N))) > 0, s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    return a / a.sum(-1, keepdims=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the port's mean over a one-token response
@pytest.mark.parametrize("L", [3, 4, 5, 7, 12])
def test_rauq_and_attention_score_ref_vs_polygraph(L):
    rng = np.random.default_rng(L)
    B, H, N = 3, 4, 14
    full = full_causal(rng, B, L, H, N)
    lp = np.log(rng.uniform(0.05, 1.0, size=(B, N)))
    rs = np.array([3, 7, 13])                            # the last item has a one-token response
    for model_type, alpha in (("instruct", 0.5), ("base", 0.2)):
        got = rauq_ref(full, lp, rs, model_type=model_type)
        for b in range(B):
            P = rs[b]
            want = polygraph_rauq(polygraph_attention_all(full[b], P), lp[b, P:], L, H, alpha)
            assert got[b] == pytest.approx(want, rel=1e-12)
    got = rauq_ref(full, lp, rs, alpha=0.7)
    want = [polygraph_rauq(polygraph_attention_all(full[b], rs[b]), lp[b, rs[b]:], L, H, 0.7) for b in range(B)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # entropy variant: log_probabilities = log(log V - H + 1e-10)
    V = 50
    ent = rng.uniform(0, math.log(V), size=(B, N))
    got = rauq_ref(full, None, rs, confidence="entropy", entropies=ent, vocab_size=V)
    want = [polygraph_rauq(polygraph_attention_all(full[b], rs[b]),
                           np.log(math.log(V) - ent[b, rs[b]:] + 1e-10), L, H, 0.9) for b in range(B)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # diagonals give the same as full maps
    diag = np.diagonal(full, axis1=-2, axis2=-1)
    np.testing.assert_array_equal(rauq_ref(diag, lp, rs), rauq_ref(full, lp, rs))

    for layer in (None, 0, L - 1):
        lay = L // 2 if layer is None else layer
        got = attention_score_ref(full, layer=layer)
        want = [polygraph_attention_score(full[b], 0, lay, False) for b in range(B)]
        np.testing.assert_allclose(got, want, rtol=1e-12)
        got = attention_score_ref(full, rs, layer=layer)
        want = [polygraph_attention_score(full[b], N - rs[b], lay, True) for b in range(B)]
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_rauq_ref_hand():
    # L = 3 -> layers 1, 2; H = 2; N = 3, response from 0: tokens p = [.5, .8, .4]
    d = np.zeros((1, 3, 2, 3))
    d[0, 1, 0] = [0.2, 0.4, 9.0]   # layer 1: head 0 mean of positions 0..1 = .3, head 1 = .5 -> head 1
    d[0, 1, 1] = [0.6, 0.4, 0.0]
    d[0, 2, 0] = [1.0, 1.0, 0.0]   # layer 2: head 0 (1.0 > 0)
    lp = np.log([[0.5, 0.8, 0.4]])
    a = 0.5
    c1 = [0.5]
    c1.append(a * 0.8 + a * 0.6 * c1[-1])
    c1.append(a * 0.4 + a * 0.4 * c1[-1])
    c2 = [0.5]
    c2.append(a * 0.8 + a * 1.0 * c2[-1])
    c2.append(a * 0.4 + a * 1.0 * c2[-1])
    want = max(1 - np.mean(np.log(c1)), 1 - np.mean(np.log(c2)))
    assert rauq_ref(d, lp, [0])[0] == pytest.approx(want, rel=1e-14)
