"""flashuq.ops.uqac (docs/methods.md#uqac): the UQAC reduction, backtracking, similarity filter and marginal
against the float64 transcriptions of the reference in flashuq.reference (uqac_*_ref), on causal softmax
attention, quantised inputs with ties, chains that reach the prompt, empty answers, every input dtype,
Ntok up to ~600, ragged batches (= per-sequence results), thread-count determinism, argument errors,
torch.library registration and misuse of the ``flashuq._C.uqac_*`` bindings."""

import math

import numpy as np
import pytest
import torch

import flashuq as fuq
from flashuq import _ext
from flashuq import reference as ref
from flashuq.ops import uqac as U
from isa_cases import limited_isa
from log_cases import check_log_specials

F64 = torch.float64


# ---- inputs --------------------------------------------------------------------------------------------

def causal_attn(rng, L, H, R, I, temp=1.0, quant=None):
    """Causal softmax attention rows of the R response tokens over Ntok = I + R keys: [L, H, R, Ntok]."""
    N = I + R
    z = rng.standard_normal((L, H, R, N)) * temp
    z[..., :, 0] += 2.0  # an attention sink, as real models have
    for r in range(R):
        z[..., r, I + r + 1:] = -np.inf
    a = np.exp(z - z.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    if quant:
        a = np.round(a * quant) / quant
    return a


def stop_mask(rng, I, R, p=0.25):
    s = rng.random(I + R) < p
    s[:I] = True
    return s


def answer_span(rng, R, max_len=4):
    n = int(rng.integers(1, max_len + 1))
    start = int(rng.integers(max(R - 8, 1), R - n + 1))
    return np.arange(start, start + n) - 1  # sources of answer tokens start .. start+n-1


def reduced(rng, R, I, quant=None):
    """A random reduced attention matrix [R, Ntok]: causal, rows of the preprocessed shape."""
    a = causal_attn(rng, 1, 1, R, I, temp=2.0)[0, 0]
    if quant:
        a = np.round(a * quant) / quant
    return a


# ---- reduction ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_reduce_matches_reference(dtype, reduction):
    rng = np.random.default_rng(1)
    for L, H, R, I, n_heads in [(2, 3, 7, 5, 4), (4, 5, 30, 12, 16), (1, 1, 4, 0, 1), (2, 2, 12, 3, 4)]:
        a = torch.from_numpy(causal_attn(rng, L, H, R, I, temp=1.5)).to(dtype)
        got = fuq.uqac_reduce_attention(a, n_heads=n_heads, reduction=reduction)
        want = ref.uqac_reduce_attention_ref(a.double().numpy(), n_heads=n_heads, reduction=reduction)
        assert got.dtype == (F64 if dtype == F64 else torch.float32)
        assert got.shape == (R, I + R)
        tol = 1e-12 if dtype == F64 else 2e-6
        np.testing.assert_allclose(got.double().numpy(), want, rtol=tol, atol=tol)


def test_reduce_long_rows():
    rng = np.random.default_rng(2)
    L, H, R, I = 2, 4, 90, 510  # Ntok = 600
    a = torch.from_numpy(causal_attn(rng, L, H, R, I))
    for red in ("max", "mean"):
        got = fuq.uqac_reduce_attention(a, n_heads=5, reduction=red)
        np.testing.assert_allclose(got.numpy(), ref.uqac_reduce_attention_ref(a.numpy(), 5, red), rtol=1e-12,
                                   atol=1e-15)
        got32 = fuq.uqac_reduce_attention(a.float(), n_heads=5, reduction=red)
        np.testing.assert_allclose(got32.double().numpy(), got.numpy(), rtol=1e-5, atol=1e-7)


def test_reduce_entropy_ties_lower_index():
    """Maps with exactly equal entropies but different rows: the lower flat index l*H + h is chosen."""
    L, H, R, I = 2, 3, 3, 30
    N = I + R
    a = np.zeros((L, H, R, N))
    for s in range(L * H):
        for r in range(R):
            cols = [2 + s, 9 + 2 * s]  # two keys far before the query (no calibration), never column 0
            a[s // H, s % H, r, cols] = 0.5
            if s >= 4:  # two maps with lower entropy, at the end
                a[s // H, s % H, r, cols] = [1.0, 0.0]
    at = torch.from_numpy(a)
    for n_heads in (1, 2, 3, 4):
        for red in ("max", "mean"):
            got = fuq.uqac_reduce_attention(at, n_heads=n_heads, reduction=red).numpy()
            np.testing.assert_array_equal(got, ref.uqac_reduce_attention_ref(a, n_heads, red))
    # n_heads = 3: maps 4, 5 (entropy 0) and then map 0 (the lowest index among the ties)
    got = fuq.uqac_reduce_attention(at, n_heads=3, reduction="max").numpy()
    assert got[0, 2] == pytest.approx(0.5) and got[0, 3] == 0.0


def _selection_numpy(a, n_heads):
    """The maps UQAC's reduction chooses per row, written apart from the kernel in float64 (docs/methods.md#uqac-reduction):
    preprocess, renormalise, entropy; then a stable argsort (lowest entropy first, ties: lower index)."""
    a = np.array(a, dtype=np.float64)
    L, H, R, N = a.shape
    I = N - R
    cal = np.array(ref.UQAC_CALIBRATION)
    sel = np.zeros((R, n_heads), dtype=np.int64)
    for r in range(R):
        rows = a[:, :, r, :].reshape(L * H, N).copy()
        rows[:, 0] = 0.0
        rows[:, I + r] = 0.0
        for c in range(10):
            if I + r - 10 + c >= 0:
                rows[:, I + r - 10 + c] *= cal[c]
        q = rows / (rows.sum(-1, keepdims=True) + 1e-12)
        ent = -(q * np.log(q + 1e-12)).sum(-1)
        sel[r] = np.argsort(ent, kind="stable")[:n_heads]
    return sel


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_reduce_selected_heads(dtype):
    rng = np.random.default_rng(11)
    L, H, R, I = 3, 4, 9, 7
    a = torch.from_numpy(causal_attn(rng, L, H, R, I, temp=1.5, quant=64)).to(dtype)  # quantised: entropy ties
    for n_heads in (1, 5, 12):
        out, sel = fuq.uqac_reduce_attention(a, n_heads=n_heads, return_selected=True)
        assert sel.dtype == torch.int64 and sel.shape == (R, n_heads)
        np.testing.assert_array_equal(sel.numpy(), _selection_numpy(a.double().numpy(), n_heads))
        assert torch.equal(out, fuq.uqac_reduce_attention(a, n_heads=n_heads))
    two, sel2 = fuq.uqac_reduce_attention(torch.stack([a, a]), n_heads=5, return_selected=True)
    assert sel2.shape == (2, R, 5) and torch.equal(sel2[0], sel2[1])
    with pytest.raises(TypeError, match="return_selected"):
        fuq.uqac_reduce_attention(a, return_selected=1)


def test_reduce_merge_of_kept_rows_equals_full():
    """Streaming: keep the chosen rows of the first layers, add the next layer's, select again; the result
    equals the reduction over every layer at once (what AttentionCapture relies on)."""
    rng = np.random.default_rng(12)
    L, H, R, I, n = 5, 3, 8, 6, 4
    a = torch.from_numpy(causal_attn(rng, L, H, R, I, quant=32))
    kept = None
    for layer in range(L):
        rows = a[layer] if kept is None else torch.cat([kept, a[layer]])
        k = min(n, rows.shape[0])
        out, sel = fuq.uqac_reduce_attention(rows[None], n_heads=k, return_selected=True)
        keep = sel.sort(dim=-1).values.T
        kept = rows.gather(0, keep.unsqueeze(-1).expand(k, R, I + R))
    assert torch.equal(out, fuq.uqac_reduce_attention(a, n_heads=n))


def test_reduce_batch_dims_strides_and_threads():
    rng = np.random.default_rng(3)
    L, H, R, I = 2, 3, 9, 6
    full = torch.from_numpy(np.stack([causal_attn(rng, L, H, I + R, 0) for _ in range(4)]))  # [4, L, H, N, N]
    view = full[:, :, :, I:, :]  # the response rows of full maps: a strided view
    assert not view.is_contiguous()
    got = fuq.uqac_reduce_attention(view, n_heads=3)
    for b in range(4):
        np.testing.assert_allclose(got[b].numpy(), ref.uqac_reduce_attention_ref(view[b].numpy(), 3), rtol=1e-12,
                                   atol=1e-15)
    two = fuq.uqac_reduce_attention(view.reshape(2, 2, L, H, R, I + R), n_heads=3)
    assert two.shape == (2, 2, R, I + R) and torch.equal(two.reshape(4, R, I + R), got)
    assert torch.equal(fuq.uqac_reduce_attention(view[:, :, :, :, :].transpose(3, 3), n_heads=3), got)
    assert torch.equal(fuq.uqac_reduce_attention(view[1], n_heads=3), got[1])  # independent of the batch
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fuq.uqac_reduce_attention(view.float(), n_heads=3, reduction="mean")
        torch.set_num_threads(2)
        many = fuq.uqac_reduce_attention(view.float(), n_heads=3, reduction="mean")
    finally:
        torch.set_num_threads(n)
    assert torch.equal(one, many)


def test_reduce_empty_and_numpy():
    assert fuq.uqac_reduce_attention(torch.zeros(2, 2, 0, 5), n_heads=4).shape == (0, 5)
    assert fuq.uqac_reduce_attention(torch.zeros(3, 2, 2, 0, 0), n_heads=1).shape == (3, 0, 0)
    rng = np.random.default_rng(4)
    a = causal_attn(rng, 2, 2, 5, 3)
    assert torch.equal(fuq.uqac_reduce_attention(a, n_heads=2), fuq.uqac_reduce_attention(torch.from_numpy(a),
                                                                                           n_heads=2))


def test_reduce_errors():
    a = torch.rand(2, 3, 4, 6)
    with pytest.raises(ValueError, match="n_heads"):
        fuq.uqac_reduce_attention(a, n_heads=7)
    with pytest.raises(ValueError, match="n_heads"):
        fuq.uqac_reduce_attention(a, n_heads=0)
    with pytest.raises(TypeError, match="n_heads"):
        fuq.uqac_reduce_attention(a, n_heads=2.0)
    with pytest.raises(ValueError, match="reduction"):
        fuq.uqac_reduce_attention(a, n_heads=2, reduction="min")
    with pytest.raises(ValueError, match="Ntok"):
        fuq.uqac_reduce_attention(torch.rand(2, 3, 6, 4), n_heads=2)
    with pytest.raises(ValueError, match="attn"):
        fuq.uqac_reduce_attention(torch.rand(3, 4, 6), n_heads=2)
    with pytest.raises(TypeError, match="attn"):
        fuq.uqac_reduce_attention(torch.ones(2, 3, 4, 6, dtype=torch.int64), n_heads=2)
    with pytest.raises(TypeError, match="attn"):
        fuq.uqac_reduce_attention([[1.0]], n_heads=1)


# ---- backtracking ---------------------------------------------------------------------------------------

def check_backtrack(a, ans, stop, **kw):
    chain, scores = fuq.uqac_backtrack(torch.from_numpy(a), torch.from_numpy(ans), torch.from_numpy(stop), **kw)
    want_c, want_s = ref.uqac_backtrack_ref(a, ans, stop, **kw)
    np.testing.assert_array_equal(chain.numpy(), want_c)
    np.testing.assert_allclose(scores.double().numpy(), want_s, rtol=1e-6 if a.dtype != np.float64 else 1e-13,
                               atol=0)
    assert chain.dtype == torch.int64 and scores.dtype == torch.from_numpy(a).dtype
    return chain.numpy()


@pytest.mark.parametrize("quant", [None, 16, 64])
def test_backtrack_matches_reference(quant):
    rng = np.random.default_rng(10 + (quant or 0))
    reached_prompt = 0
    for it in range(40):
        R = int(rng.integers(6, 60))
        I = int(rng.integers(0, 40))
        a = reduced(rng, R, I, quant)
        ans = answer_span(rng, R)
        stop = stop_mask(rng, I, R, p=float(rng.uniform(0.0, 0.6)))
        kw = {}
        if it % 4 == 1:
            kw = dict(buffer=int(rng.integers(1, 5)), threshold=float(rng.uniform(0.05, 0.6)))
        elif it % 4 == 2:
            kw = dict(min_chain_len=int(rng.integers(0, 20)), max_steps=int(rng.integers(1, 6)))
        chain = check_backtrack(a, ans, stop, **kw)
        reached_prompt += int(chain.min() == -1) if chain.size else 0
    assert reached_prompt > 0  # some chains reached the last instruction token


def test_backtrack_float32_and_lower_precision():
    rng = np.random.default_rng(11)
    for _ in range(10):
        R, I = 25, 10
        a = reduced(rng, R, I, quant=256).astype(np.float32)  # exact in every dtype below
        ans = answer_span(rng, R)
        stop = stop_mask(rng, I, R)
        check_backtrack(a, ans, stop)
        c16, s16 = fuq.uqac_backtrack(torch.from_numpy(a).half(), torch.from_numpy(ans), torch.from_numpy(stop))
        c32, s32 = fuq.uqac_backtrack(torch.from_numpy(a), torch.from_numpy(ans), torch.from_numpy(stop))
        assert torch.equal(c16, c32) and s16.dtype == torch.float32


def test_backtrack_edge_cases():
    rng = np.random.default_rng(12)
    R, I = 12, 5
    a = reduced(rng, R, I)
    stop = stop_mask(rng, I, R)
    # empty answer: empty chain
    c, s = fuq.uqac_backtrack(torch.from_numpy(a), torch.zeros(0, dtype=torch.int64), torch.from_numpy(stop))
    assert c.shape == (0,) and s.shape == (0,)
    # max_steps = 0: only the answer sources (sorted), duplicates kept
    c, s = fuq.uqac_backtrack(torch.from_numpy(a), torch.tensor([9, 3, 9]), torch.from_numpy(stop), max_steps=0)
    assert c.tolist() == [3, 9, 9] and s.tolist() == [0.0, 0.0, 0.0]
    check_backtrack(a, np.array([9, 3, 9]), stop)
    # answer source -1 (the answer starts at response token 0) and R - 2
    check_backtrack(a, np.array([-1]), stop)
    check_backtrack(a, np.array([R - 2]), stop)
    # everything a stop word: nothing picked
    c, _ = fuq.uqac_backtrack(torch.from_numpy(a), torch.tensor([R - 2]), torch.ones(I + R, dtype=torch.bool))
    assert c.tolist() == [R - 2]
    # no instruction (I = 0), buffer 0, huge threshold, all-zero attention
    check_backtrack(reduced(rng, 10, 0), np.array([7, 8]), stop_mask(rng, 0, 10))
    check_backtrack(a, np.array([8, 9]), stop, buffer=0)
    check_backtrack(a, np.array([8, 9]), stop, threshold=10.0, min_chain_len=0)
    check_backtrack(np.zeros((R, I + R)), np.array([8, 9]), stop)
    # a non-stop key 0 with weight: the chain member -I - 1, whose source reads the last row (Python's -1)
    b = a.copy()
    b[:, 0] = 0.9
    st = stop.copy()
    st[0] = False
    chain = check_backtrack(b, np.array([R - 3, R - 2]), st)
    assert chain.min() == -I - 1


def test_backtrack_long_rows_and_negative_weights():
    rng = np.random.default_rng(13)
    R, I = 150, 450
    a = reduced(rng, R, I)
    check_backtrack(a, answer_span(rng, R), stop_mask(rng, I, R, p=0.5))
    # arbitrary (non-attention) input: negative weights and NaN follow the reference's order too
    b = rng.standard_normal((30, 40))
    check_backtrack(b, np.array([25, 26, 27]), stop_mask(rng, 10, 30, p=0.2), min_chain_len=12)


def test_backtrack_errors():
    a = torch.rand(5, 8)
    stop = torch.zeros(8, dtype=torch.bool)
    with pytest.raises(ValueError, match="ans_src"):
        fuq.uqac_backtrack(a, torch.tensor([4]), stop)  # R - 1 predicts no response token
    with pytest.raises(ValueError, match="ans_src"):
        fuq.uqac_backtrack(a, torch.tensor([-2]), stop)
    with pytest.raises(TypeError, match="ans_src"):
        fuq.uqac_backtrack(a, torch.tensor([1.0]), stop)
    with pytest.raises(ValueError, match="is_stop"):
        fuq.uqac_backtrack(a, torch.tensor([1]), torch.zeros(7, dtype=torch.bool))
    with pytest.raises(ValueError, match="Ntok"):
        fuq.uqac_backtrack(torch.rand(8, 5), torch.tensor([1]), torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="buffer"):
        fuq.uqac_backtrack(a, torch.tensor([1]), stop, buffer=-1)
    with pytest.raises(TypeError, match="max_steps"):
        fuq.uqac_backtrack(a, torch.tensor([1]), stop, max_steps=1.5)
    with pytest.raises(ValueError, match="threshold"):
        fuq.uqac_backtrack(a, torch.tensor([1]), stop, threshold=math.nan)
    with pytest.raises(ValueError, match="min_chain_len"):
        fuq.uqac_backtrack(a, torch.tensor([1]), stop, min_chain_len=-1)


# ---- similarity filter and marginal ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_similarity_matches_reference(dtype):
    rng = np.random.default_rng(20)
    for it in range(30):
        R, D = int(rng.integers(5, 40)), int(rng.integers(1, 70))
        h = torch.from_numpy(rng.standard_normal((R, D))).to(dtype)
        ans = answer_span(rng, R, 3)
        members = np.sort(rng.choice(np.arange(-1, ans.min()), size=int(rng.integers(0, ans.min() + 2)),
                                     replace=False)) if ans.min() >= 0 else np.zeros(0, dtype=np.int64)
        chain = np.concatenate([members, ans]).astype(np.int64)
        k, thr = [(10, 0.0), (3, -0.2), (0, 0.0), (50, 0.1)][it % 4]
        got = fuq.uqac_similarity_filter(h, torch.from_numpy(chain), torch.from_numpy(ans), k=k, threshold=thr)
        want = ref.uqac_similarity_filter_ref(h.double().numpy(), chain, ans, k=k, threshold=thr)
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_similarity_huge_norms(dtype):
    # norms above ~1.8e19 overflow fp32 squared norms and dots: those pairs are summed again in fp64
    rng = np.random.default_rng(21)
    for scale in (1e20, 1e30, 3e37):
        R, D = 12, 9
        h = torch.from_numpy(rng.standard_normal((R, D)) * scale).to(dtype)
        h[3] = torch.from_numpy(rng.standard_normal(D)).to(dtype)  # one ordinary row beside them
        ans = np.array([8, 9, 10], dtype=np.int64)
        chain = np.concatenate([np.arange(-1, 8), ans]).astype(np.int64)
        for k, thr in ((10, 0.0), (3, -0.3), (20, -0.9)):
            got = fuq.uqac_similarity_filter(h, torch.from_numpy(chain), torch.from_numpy(ans), k=k, threshold=thr)
            want = ref.uqac_similarity_filter_ref(h.double().numpy(), chain, ans, k=k, threshold=thr)
            np.testing.assert_array_equal(got.numpy(), want)
    h = torch.tensor([[1e20], [2e20], [3e20]], dtype=dtype)  # cos = 1: member -1 is kept
    assert fuq.uqac_similarity_filter(h, torch.tensor([-1, 1]), torch.tensor([1])).tolist() == [-1]


def test_similarity_details():
    # zero vectors (cosine 0 with torch's clamped norms), the threshold inclusive, ties -> the earlier member
    h = torch.zeros(6, 3, dtype=F64)
    h[1] = torch.tensor([1.0, 0, 0])
    h[2] = torch.tensor([1.0, 0, 0])
    h[3] = torch.tensor([0.0, 1, 0])
    h[5] = torch.tensor([1.0, 0, 0])
    chain = torch.tensor([-1, 0, 1, 2, 4])  # members -1 (row 0: zero), 0, 1, 2 (rows 1-3); answer source 4
    ans = torch.tensor([4])
    assert fuq.uqac_similarity_filter(h, chain, ans, k=1).tolist() == [0]
    assert fuq.uqac_similarity_filter(h, chain, ans, k=10).tolist() == [-1, 0, 1, 2]   # sims 0, 1, 1, 0 >= 0
    assert fuq.uqac_similarity_filter(h, chain, ans, k=10, threshold=0.5).tolist() == [0, 1]
    assert fuq.uqac_similarity_filter(h, chain[-1:], ans).tolist() == []
    assert fuq.uqac_similarity_filter(h, chain, torch.zeros(0, dtype=torch.int64)).tolist() == []
    with pytest.raises(ValueError, match="ans_src"):
        fuq.uqac_similarity_filter(h, chain, torch.tensor([5]))
    with pytest.raises(ValueError, match="chain"):
        fuq.uqac_similarity_filter(h, torch.tensor([-2, 4]), ans)
    with pytest.raises(ValueError, match="k"):
        fuq.uqac_similarity_filter(h, chain, ans, k=-1)


def test_marginal_matches_reference():
    rng = np.random.default_rng(30)
    a = rng.standard_normal((3, 5, 4)) * 3 - 2
    s = rng.standard_normal((3, 5, 6)) * 3 - 2
    a[0, 0, 0] = -1e9  # clamped at log(1e-12)
    for x, y in [(a, s), (a, s[..., :0]), (a[0], s[0])]:
        got = fuq.uqac_marginal(torch.from_numpy(x), torch.from_numpy(y))
        np.testing.assert_allclose(got.numpy(), ref.uqac_marginal_ref(x, y), rtol=1e-13)
    got = fuq.uqac_marginal(torch.from_numpy(a).float(), torch.from_numpy(s).float())
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), ref.uqac_marginal_ref(a, s), rtol=1e-5)
    x = torch.from_numpy(a.copy())
    x[1, 2, 0] = math.nan
    assert torch.isnan(fuq.uqac_marginal(x, torch.from_numpy(s))[1])
    with pytest.raises(ValueError, match="seq_logprobs"):
        fuq.uqac_marginal(torch.zeros(3, 4), torch.zeros(2, 4))


# ---- batched = per sequence -----------------------------------------------------------------------------

def ragged_batch(rng, B, D=16, garbage=True):
    seqs = []
    for _ in range(B):
        R = int(rng.integers(4, 40))
        I = int(rng.integers(0, 30))
        a = reduced(rng, R, I, quant=int(rng.choice([0, 32])) or None)
        ans = answer_span(rng, R) if rng.random() > 0.15 else np.zeros(0, dtype=np.int64)
        seqs.append((a, ans, stop_mask(rng, I, R), rng.standard_normal((R, D))))
    Rm = max(s[0].shape[0] for s in seqs)
    Nm = max(s[0].shape[1] for s in seqs)
    Am = max(len(s[1]) for s in seqs)
    fill = (lambda *shape: rng.random(shape) * 5) if garbage else (lambda *shape: np.zeros(shape))
    attn, ans = fill(B, Rm, Nm), rng.integers(-50, 50, (B, Am))
    stop, h = rng.random((B, Nm)) < 0.5, fill(B, Rm, D)
    lens = np.zeros((3, B), dtype=np.int64)
    for b, (a, an, st, hh) in enumerate(seqs):
        R, N = a.shape
        attn[b, :R, :N] = a
        ans[b, :len(an)] = an
        stop[b, :N] = st
        h[b, :R] = hh
        lens[:, b] = (R, N, len(an))
    return seqs, [torch.from_numpy(x) for x in (attn, ans, stop, h, lens)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_batched_equals_per_sequence(dtype):
    rng = np.random.default_rng(40)
    seqs, (attn, ans, stop, h, lens) = ragged_batch(rng, 23)
    kw = dict(buffer=3, threshold=0.3, max_steps=50)
    out = U.uqac_chain_batched(attn.to(dtype), ans, stop, response_len=lens[0], n_tokens=lens[1], ans_len=lens[2],
                               h_last=h.to(dtype), k=4, similarity_threshold=-0.1, **kw)
    assert out.chain.shape[1] == ans.shape[1] + min(50 * 3, attn.shape[2])
    for b, (a, an, st, hh) in enumerate(seqs):
        n = int(out.lengths[b])
        c, s = fuq.uqac_backtrack(torch.from_numpy(a).to(dtype), torch.from_numpy(an), torch.from_numpy(st), **kw)
        assert torch.equal(out.chain[b, :n], c) and torch.equal(out.scores[b, :n], s)
        want_c, _ = ref.uqac_backtrack_ref(a, an, st, **kw)
        np.testing.assert_array_equal(c.numpy(), want_c)
        keep = fuq.uqac_similarity_filter(torch.from_numpy(hh).to(dtype), c, torch.from_numpy(an), k=4,
                                          threshold=-0.1)
        assert torch.equal(out.keep[b, :int(out.keep_lengths[b])], keep)
        if len(an):
            want = ref.uqac_similarity_filter_ref(hh, want_c, an, k=4, threshold=-0.1)
            np.testing.assert_array_equal(keep.numpy(), want)
        else:
            assert n == 0 and keep.numel() == 0


def test_batched_determinism_and_defaults():
    rng = np.random.default_rng(41)
    seqs, (attn, ans, stop, h, lens) = ragged_batch(rng, 16, garbage=False)
    args = (attn, ans, stop)
    kw = dict(response_len=lens[0], n_tokens=lens[1], ans_len=lens[2], h_last=h)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = U.uqac_chain_batched(*args, **kw)
        torch.set_num_threads(2)
        two = U.uqac_chain_batched(*args, **kw)
    finally:
        torch.set_num_threads(n)
    for x, y in zip(one, two):
        assert torch.equal(x, y)
    # without lengths every sequence is the full padded size; without h_last no keep
    R, N, A = (int(x) for x in lens[:, 0])
    out = U.uqac_chain_batched(attn[:1, :R, :N].contiguous(), ans[:1, :A], stop[:1, :N])
    assert out.keep is None and out.keep_lengths is None
    assert torch.equal(out.chain[0, :out.lengths[0]], one.chain[0, :one.lengths[0]])


def test_batched_errors():
    attn = torch.rand(2, 5, 8)
    ans = torch.tensor([[1, 2], [2, 3]])
    stop = torch.zeros(2, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="n_tokens"):
        U.uqac_chain_batched(attn, ans, stop, n_tokens=torch.tensor([4, 8]))
    with pytest.raises(ValueError, match="response_len"):
        U.uqac_chain_batched(attn, ans, stop, response_len=torch.tensor([6, 5]))
    with pytest.raises(ValueError, match="ans_len"):
        U.uqac_chain_batched(attn, ans, stop, ans_len=torch.tensor([3, 1]))
    with pytest.raises(ValueError, match="sequence 1"):
        U.uqac_chain_batched(attn, ans, stop, response_len=torch.tensor([5, 4]))
    with pytest.raises(ValueError, match="ans_src"):
        U.uqac_chain_batched(attn, ans[:1], stop)
    with pytest.raises(ValueError, match="is_stop"):
        U.uqac_chain_batched(attn, ans, stop[:, :7])
    with pytest.raises(ValueError, match="h_last"):
        U.uqac_chain_batched(attn, ans, stop, h_last=torch.rand(2, 4, 3))
    with pytest.raises(TypeError, match="is_stop"):
        U.uqac_chain_batched(attn, ans, stop.double())


# ---- torch.library registration, bindings --------------------------------------------------------------

def test_opcheck():
    rng = np.random.default_rng(50)
    a = torch.from_numpy(causal_attn(rng, 2, 3, 6, 4)).float()[None]
    torch.library.opcheck(torch.ops.flashuq.uqac_reduce.default, (a, 3, False))
    torch.library.opcheck(torch.ops.flashuq.uqac_reduce.default, (a.double(), 2, True))
    seqs, (attn, ans, stop, h, lens) = ragged_batch(rng, 4, garbage=False)
    A = lens[2]
    bt = (attn, stop.to(torch.uint8), ans, lens[0], lens[1], A, A + 5, 3, 0.5, 10, ans.shape[1] + 30)
    torch.library.opcheck(torch.ops.flashuq.uqac_backtrack.default, bt)
    chain, _, lengths = torch.ops.flashuq.uqac_backtrack(*bt)
    torch.library.opcheck(torch.ops.flashuq.uqac_similarity.default, (h, chain, lengths, ans, A, lens[0], 5, 0.0))


def test_torch_compile_fullgraph():
    rng = np.random.default_rng(51)
    a = torch.from_numpy(causal_attn(rng, 2, 2, 6, 3))

    def f(x):
        return fuq.uqac_reduce_attention(x, n_heads=2) * 2

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(a)
    assert torch.equal(got, f(a))


def test_binding_misuse_raises():
    C = _ext._C
    out = torch.empty(1, 4, 6)
    cal = torch.tensor(ref.UQAC_CALIBRATION, dtype=F64)
    sel = torch.empty(1, 4, 2, dtype=torch.int64)
    good = dict(attn=torch.rand(1, 2, 2, 4, 6), n_heads=2, mean=False, calibration=cal, out=out, selected=sel,
                num_threads=1)
    C.uqac_reduce(**good)
    for bad in (dict(n_heads=5, selected=torch.empty(1, 4, 5, dtype=torch.int64)),  # n_heads > L*H
                dict(out=torch.empty(1, 4, 5)),
                dict(attn=torch.rand(1, 2, 2, 6, 4), out=torch.empty(1, 6, 4)),  # Ntok < R
                dict(attn=torch.rand(1, 2, 2, 4, 12)[..., ::2]),                  # column stride 2
                dict(calibration=cal[:9]),                                        # 9 factors
                dict(selected=torch.empty(1, 4, 3, dtype=torch.int64))):         # n_heads columns
        with pytest.raises(ValueError):
            C.uqac_reduce(**{**good, **bad})
    for bad in (dict(attn=torch.ones(1, 2, 2, 4, 6, dtype=torch.int32)),
                dict(calibration=cal.float()),                                    # the factors in float64
                dict(selected=torch.empty(1, 4, 2, dtype=torch.int32)),
                dict(selected=torch.empty(4, 2, dtype=torch.int64))):             # rank 3
        with pytest.raises(TypeError):
            C.uqac_reduce(**{**good, **bad})
    i64 = lambda *v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    args = lambda **o: dict(dict(attn=torch.rand(1, 4, 6), is_stop=torch.zeros(1, 6, dtype=torch.uint8),  # noqa: E731
                                 ans=i64([2]), R=i64(4), Ntok=i64(6), A=i64(1), min_len=i64(6), buffer=3,
                                 threshold=0.5, max_steps=10, chain=torch.empty(1, 7, dtype=torch.int64),
                                 scores=torch.empty(1, 7), lengths=i64(0), num_threads=1), **o)
    C.uqac_backtrack(**args())
    for bad in (dict(ans=i64([3])), dict(ans=i64([-2])), dict(R=i64(5)), dict(Ntok=i64(3)), dict(A=i64(2)),
                dict(chain=torch.empty(1, 6, dtype=torch.int64)), dict(scores=torch.empty(1, 7, dtype=F64)),
                dict(buffer=-1), dict(is_stop=torch.zeros(1, 5, dtype=torch.uint8)), dict(lengths=i64(0, 0))):
        with pytest.raises((ValueError, TypeError)):
            C.uqac_backtrack(**args(**bad))


def test_reduce_every_isa_build_agrees_bitwise():
    """The CPU reduction is built per instruction set (csrc/cpu/uqac_reduce_impl.h) with the same 16
    partial sums and no FMA contraction: baseline, AVX2 and AVX-512 give bitwise the same rows and
    choices (limit_isa picks the build; on a narrower machine the wider levels repeat a narrower one)."""
    rng = np.random.default_rng(60)
    for dtype in (torch.float32, torch.bfloat16, F64):
        a = torch.from_numpy(causal_attn(rng, 3, 4, 37, 21, temp=1.5)).to(dtype)
        want = fuq.uqac_reduce_attention(a, n_heads=5, return_selected=True)
        for level in (0, 1):
            with limited_isa(level):
                got = fuq.uqac_reduce_attention(a, n_heads=5, return_selected=True)
                assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (_ext._C.isa(), dtype)


def test_reduce_clean_and_guarded_rows_agree_bitwise():
    """A row whose entries are all finite and >= 0 takes the log without its guards (cpu_math.h
    log_f32_normal: the same arithmetic); any other row takes the guarded log_f32. Column 0 is zeroed
    by the preprocessing, so making it -1e-30 or NaN turns every row into a guarded one without
    changing what is computed: the results must be the same bits."""
    rng = np.random.default_rng(61)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        a = torch.from_numpy(causal_attn(rng, 3, 4, 29, 35, temp=1.5)).to(dtype)
        want = fuq.uqac_reduce_attention(a, n_heads=5, return_selected=True)
        for poison in (-1e-30, float("nan"), float("inf")):
            b = a.clone()
            b[..., 0] = poison
            got = fuq.uqac_reduce_attention(b, n_heads=5, return_selected=True)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (dtype, poison)


def test_cpu_log_f32_within_one_ulp():
    """The CPU reduction's entropies of fp32 rows take a branch-free fp32 log that vectorises
    (flashuq/cpu_math.h log_f32; checked exhaustively over every positive float when written). Here:
    within 1 ulp of the correctly rounded log over every binade, subnormals included, and the specials."""
    rng = np.random.default_rng(9)
    x = np.concatenate([
        rng.uniform(0.0, 1.0, 200_000),                                      # probabilities
        np.exp(rng.uniform(-103.0, 88.0, 200_000)),                          # every exponent
        1.0 + rng.uniform(-1e-4, 1e-4, 50_000),                              # near 1 (cancellation)
        np.sqrt(2.0) * (1.0 + rng.uniform(-1e-6, 1e-6, 50_000)),             # the reduction's split
        rng.uniform(0.0, 1.0, 50_000) * np.finfo(np.float32).tiny,           # subnormals
        [np.finfo(np.float32).tiny, np.finfo(np.float32).max, 1e-45, 1e-12, 0.5, 1.0, 2.0],
    ]).astype(np.float32)
    x = x[x > 0]
    out = np.empty_like(x)
    _ext._C._log_f32(x, out)
    want = np.log(x.astype(np.float64)).astype(np.float32)  # correctly rounded (but for double rounding)
    ulps = np.abs(out.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    near_one = np.abs(x - 1) < 1e-6  # around ln 1 = 0 the two may straddle zero: compare absolutely
    assert ulps[~near_one].max() <= 1, x[~near_one][np.argmax(ulps[~near_one])]
    np.testing.assert_allclose(out[near_one], want[near_one], rtol=0, atol=1.2e-7)
    check_log_specials(_ext._C._log_f32, np.float32, np.float64)  # fp32 only
