"""flashuq.token_stats on the CPU (C++ kernel) and the public API around it."""

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flashuq as fuq
from flashuq import _ext
from dispatch_cases import SeenOps
from stats_cases import FLOAT_FIELDS, ROW_KINDS, assert_close_stats, make_logits, reference
from thread_count import torch_threads

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _variants():
    """The CPU kernel's variants this processor runs, as (level, name): the baseline, AVX2, AVX-512."""
    names = {}
    for level in (0, 1, 2):
        names.setdefault(_ext._C.limit_isa(level), level)
    _ext._C.limit_isa(2)
    return [(level, name) for name, level in names.items()]


VARIANTS = _variants()


@pytest.fixture(autouse=True, params=VARIANTS, ids=[name for _, name in VARIANTS])
def cpu_variant(request):
    """Every test of this module runs on each variant of the kernel this processor has."""
    level, name = request.param
    assert _ext._C.limit_isa(level) == name
    yield name
    _ext._C.limit_isa(2)


def _cpu_flags():
    with open("/proc/cpuinfo") as f:
        return set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads the processor's flags from /proc/cpuinfo")
def test_dispatch_takes_the_widest_variant(cpu_variant):
    # by default the kernel runs the widest variant the processor's flags allow
    flags = _cpu_flags()
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"} <= flags:
        want = "avx512"
    elif {"avx2", "fma"} <= flags:
        want = "avx2+fma"
    else:
        want = "baseline"
    assert VARIANTS[-1][1] == want
    _ext._C.limit_isa(2)
    assert _ext._C.isa() == want


def test_exp_error_bound(cpu_variant):
    # the kernel's fp32 e^x on x <= 0 (docs/kernels.md): within 1.5 ulp of the exact value for normal
    # results, every 97th float of [-104, 0] plus the ends; gradual underflow below e^-87.3; 0 below -104
    lo, hi = 0x80000000, int(np.float32(-104.0).view(np.uint32))
    bits = np.concatenate([np.arange(lo, hi + 1, 97, dtype=np.uint64), np.arange(hi - 4096, hi + 1, dtype=np.uint64)])
    x = bits.astype(np.uint32).view(np.float32)
    out = np.empty_like(x)
    _ext._C._exp_nonpos_f32(x, out)
    ref = np.exp(x.astype(np.float64))
    r32 = ref.astype(np.float32)
    err = np.abs(out.astype(np.float64) - ref) / np.spacing(r32).astype(np.float64)
    normal = r32 >= np.finfo(np.float32).tiny
    assert err[normal].max() <= 1.5
    assert err[~normal].max() <= 1.0 and (out[~normal] > 0).sum() > 1000  # subnormals, not flushed
    edge = np.array([0.0, -0.0, -104.0, np.nextafter(np.float32(-104.0), np.float32(-200)), -1e30, -np.inf], np.float32)
    got = np.empty_like(edge)
    _ext._C._exp_nonpos_f32(edge, got)
    assert got[0] == 1.0 and got[1] == 1.0 and 0 <= got[2] < 1e-44 and (got[3:] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ROW_KINDS)
@pytest.mark.parametrize("V", [7, 1025, 40000])
def test_matches_reference(kind, dtype, V):
    x = make_logits(kind, 6, V, dtype=dtype, seed=V)
    tokens = torch.randint(0, V, (6,), generator=torch.Generator().manual_seed(1))
    topk = min(5, V)
    got = fuq.token_stats(x, tokens, topk=topk)
    assert_close_stats(got, reference(x, tokens, topk=topk))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("kind", ROW_KINDS)
def test_renyi_fields_match_reference(kind, dtype):
    V = 2 * 16384 + 77  # three CPU chunks: block, chunk and row merges of the tempered sums
    x = make_logits(kind, 5, V, dtype=dtype, seed=11)
    x[2, 4] = math.nan  # an invalid row among valid ones
    got = fuq.token_stats(x, temperature=0.8, renyi=True)
    ref = reference(x, temperature=0.8, renyi=True)
    assert_close_stats(got, ref, renyi=True, rtol=1e-12 if dtype == torch.float64 else 1e-5)
    assert got.renyi_term.dtype == got.entropy.dtype
    # with renyi=True e^d is e^{d/4} squared twice: the other fields stay as accurate as without
    plain = fuq.token_stats(x, temperature=0.8)
    assert plain.renyi_term is None and plain.fisher_rao is None
    assert torch.equal(plain.argmax, got.argmax)


def test_renyi_extremes_and_lm_polygraph_formula():
    # uniform row: r = -2 log V, f = 0; one-hot (others -inf) row: r = -log V, f = 1 - (2/pi) acos(1/sqrt(V))
    V = 1000
    x = torch.zeros(2, V, dtype=torch.float64)
    x[1, 1:] = -math.inf
    s = fuq.token_stats(x, renyi=True)
    torch.testing.assert_close(s.renyi_term, torch.tensor([-2 * math.log(V), -math.log(V)], dtype=torch.float64))
    torch.testing.assert_close(s.fisher_rao, torch.tensor([0.0, 2 / math.pi * math.acos(V ** -0.5)], dtype=torch.float64))
    # a direct numpy transcription of LM-Polygraph's RenyiNeg / FisherRao per-step values (scipy softmax)
    from scipy.special import log_softmax as sp_log_softmax, softmax as sp_softmax
    z = make_logits("normal", 4, 300, dtype=torch.float64, seed=5)
    lp = sp_log_softmax(z.numpy(), axis=-1)
    q = sp_softmax(lp / 2.0, axis=-1)
    r = (np.log((q ** 0.5).sum(-1)) - (0.5 - 1) * np.log(300)) / (0.5 - 1)
    f = 2 / np.pi * np.arccos((np.sqrt(q) * np.sqrt(1.0 / 300)).sum(-1))
    s = fuq.token_stats(z, renyi=True)
    np.testing.assert_allclose(s.renyi_term.numpy(), r, rtol=1e-12)
    np.testing.assert_allclose(s.fisher_rao.numpy(), f, rtol=1e-10)


def test_float64_in_float64_out():
    x = make_logits("normal", 4, 3000, dtype=torch.float64)
    got = fuq.token_stats(x, topk=3)
    assert got.entropy.dtype == torch.float64 and got.topk_logprobs.dtype == torch.float64
    assert_close_stats(got, reference(x, topk=3), rtol=1e-12)


@pytest.mark.parametrize("gap", [50.0, 60.0, 75.0])
@pytest.mark.parametrize("V", [1000, 32000, 128256])
def test_confident_rows_keep_their_digits(gap, V):
    # entropy ~1e-20 and below: the textbook lse - Σ p z loses everything here
    x = torch.zeros(2, V)
    x[0, 3] = gap
    x[1, V - 1] = gap
    R = (V - 1) * math.exp(-gap)
    H = math.log1p(R) + gap * R / (1 + R)
    got = fuq.token_stats(x)
    for h in got.entropy.tolist():
        assert abs(h - H) <= 1e-3 * H
    assert torch.allclose(got.max_logprob.double(), torch.tensor(-math.log1p(R), dtype=torch.float64), rtol=1e-3, atol=0)


def test_ties_first_index_and_zero_margin():
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    got = fuq.token_stats(x, topk=3)
    assert got.argmax.tolist() == [1, 0]
    assert got.margin.tolist() == [0.0, 0.0]
    assert got.topk_ids.tolist() == [[1, 2, 3], [0, 1, 2]]
    assert math.isnan(got.kurtosis[1].item())  # uniform row: m2 = 0, NaN like scipy
    assert got.entropy[1].item() == pytest.approx(math.log(4), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_ties_in_long_rows_keep_the_id_order(dtype):
    # many equal logits over several blocks and vectors: the first maximum's index and the top k (ties:
    # smaller id first) are numpy's stable order, whatever vector or block a tied value falls in
    g = torch.Generator().manual_seed(5)
    V = 40000
    x = torch.randint(-6, 3, (3, V), generator=g).to(dtype)
    x[1, 20000:] = 5.0                     # the maximum first seen in a later chunk, tied to the end
    x[2, :] = -math.inf
    x[2, [70, 3, 33000, 1025, 16400]] = 1.0  # fewer finite entries than k past them: -inf fills, in id order
    # a row length that is no multiple of a vector, the tied maximum in the last block's tail
    y = torch.randint(-6, 3, (2, 40013), generator=g).to(dtype)
    y[:, -3:] = 4.0
    y[1, 39990:40010] = -math.inf
    for z in (x, y):
        for k in (1, 7, 64):
            got = fuq.token_stats(z, topk=k)
            order = np.argsort(-z.double().numpy(), axis=1, kind="stable")[:, :k]
            assert got.argmax.tolist() == order[:, 0].tolist()
            assert got.topk_ids.tolist() == order.tolist(), k
            assert_close_stats(got, reference(z, topk=k))


def test_invalid_rows_are_nan_and_only_those():
    V = 9
    x = torch.randn(5, V)
    x[1] = -math.inf            # fully masked row
    x[2, 4] = math.nan          # NaN row
    x[3, 0] = math.inf          # +inf: no distribution either
    x[4, :5] = -math.inf        # partly masked: fine
    got = fuq.token_stats(x, torch.tensor([0, 0, 0, 0, 1]), topk=3)
    for f in FLOAT_FIELDS:
        v = getattr(got, f)
        assert torch.isnan(v[1:4]).all(), f
        assert not torch.isnan(v[0]), f
    assert got.argmax[1:4].tolist() == [-1, -1, -1]
    assert (got.topk_ids[1:4] == -1).all() and torch.isnan(got.topk_logprobs[1:4]).all()
    assert got.logprob[4].item() == -math.inf  # emitted token at a masked entry
    assert_close_stats(got, reference(x, torch.tensor([0, 0, 0, 0, 1]), topk=3))


def test_topk_fills_with_masked_entries_in_id_order():
    x = torch.full((1, 10), -math.inf)
    x[0, 7] = 1.0
    x[0, 2] = 0.5
    got = fuq.token_stats(x, topk=4)
    assert got.topk_ids.tolist() == [[7, 2, 0, 1]]
    assert got.topk_logprobs[0, 2:].tolist() == [-math.inf, -math.inf]
    assert_close_stats(got, reference(x, topk=4))


def test_vocab_of_one_and_two():
    one = fuq.token_stats(torch.tensor([[2.0], [-7.0]]), topk=1)
    assert one.entropy.tolist() == [0.0, 0.0] and one.margin.tolist() == [1.0, 1.0]
    assert one.max_logprob.tolist() == [0.0, 0.0] and one.lse.tolist() == [2.0, -7.0]
    assert torch.isnan(one.kurtosis).all()
    x = torch.tensor([[0.0, 1.0], [3.0, -2.0]])
    got = fuq.token_stats(x, torch.tensor([0, 1]), topk=2)
    assert_close_stats(got, reference(x, torch.tensor([0, 1]), topk=2))


@pytest.mark.parametrize("kind", ["normal", "huge", "offset_plus30", "masked"])
@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.7])
def test_temperature(kind, temperature):
    # 0.7 is no power of two: 1/T scales the exact difference z - max, not each (rounded) logit
    x = make_logits(kind, 5, 5000)
    t = torch.randint(0, 5000, (5,))
    got = fuq.token_stats(x, t, temperature=temperature, topk=8)
    assert_close_stats(got, reference(x, t, temperature=temperature, topk=8))


def test_float64_with_temperature():
    x = make_logits("huge", 3, 2000, dtype=torch.float64)
    got = fuq.token_stats(x, temperature=0.7, topk=3)
    assert_close_stats(got, reference(x, temperature=0.7, topk=3), rtol=1e-10)  # the reference rounds z/T (|z/T| ~ 1e4)


def test_logits_spanning_beyond_the_float_range():
    # z - max overflows fp32 for the smallest entry: its probability is 0, not a NaN in the sums
    x = torch.tensor([[2e38, -2e38, 0.0, 2e38 - 1e32]])
    got = fuq.token_stats(x, torch.tensor([1]))
    assert got.argmax.item() == 0 and got.max_logprob.item() == 0.0 and got.logprob.item() == -math.inf
    for f in ("lse", "entropy", "margin", "collision"):
        assert math.isfinite(getattr(got, f).item()), f
    assert got.entropy.item() == 0.0 and got.margin.item() == 1.0


def test_leading_shapes_and_strides():
    base = make_logits("normal", 24, 300).reshape(2, 3, 4, 300)
    views = [base, base[:, 1:], base.transpose(0, 2), base[::2, :, 1:3], base[1, 2, 3], base.permute(2, 0, 1, 3)[1:]]
    for x in views:
        t = torch.randint(0, 300, x.shape[:-1])
        got = fuq.token_stats(x, t, topk=3)
        assert got.entropy.shape == x.shape[:-1] and got.topk_ids.shape == (*x.shape[:-1], 3)
        assert_close_stats(got, reference(x.contiguous(), t, topk=3))


def test_empty_leading_dims():
    got = fuq.token_stats(torch.randn(0, 3, 11), topk=2)
    assert got.entropy.shape == (0, 3) and got.topk_ids.shape == (0, 3, 2)


def test_numpy_input_returns_tensors():
    x = np.random.default_rng(0).normal(size=(3, 50)).astype(np.float32)
    got = fuq.token_stats(x, np.array([1, 2, 3]))
    assert isinstance(got.entropy, torch.Tensor)
    assert_close_stats(got, reference(torch.from_numpy(x), torch.tensor([1, 2, 3])))


def test_row_result_does_not_depend_on_batch_or_threads():
    # a lone row takes the split path (fewer rows than threads), a batch the row path: bitwise equal
    x = make_logits("normal", 16, 100_000)
    with torch_threads(4):
        alone = fuq.token_stats(x[5:6], topk=7, renyi=True)
    with torch_threads(1):
        batch = fuq.token_stats(x, topk=7, renyi=True)
    for a, b in zip(alone, batch):
        assert torch.equal(a[0], b[5]) or (torch.isnan(a[0]).all() and torch.isnan(b[5]).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_self_certainty_with_float_minimum_masks(dtype):
    """Hugging Face masks logits with the dtype's minimum. Self-certainty, the mean of d = (z - max)/T
    over the finite entries, is then finite but huge; the fp32 lanes' block sum of d overflowed to
    -inf (two such entries at T = 1) and gave +inf. Such a block's sum is redone in fp64."""
    x = torch.randn(5, 3000, generator=torch.Generator().manual_seed(4))
    lo = torch.finfo(dtype).min
    x[0, :2] = lo                # two in the first block
    x[1, 1500:1700] = lo         # a run inside the second block
    x[2, ::7] = lo               # every block
    x[3, 5] = -math.inf          # a true -inf is not a finite entry: it stays out of the mean
    x[3, 9] = lo
    x = x.to(dtype)
    for tt in (1.0, 0.5):
        ref = reference(x.double(), temperature=tt).self_certainty
        assert torch.isfinite(ref).all()
        got = fuq.token_stats(x, temperature=tt).self_certainty  # on each build: the module's ISA fixture
        torch.testing.assert_close(got.double(), ref, rtol=2e-6, atol=1e-9)


def test_deterministic():
    x = make_logits("masked", 8, 70000, dtype=torch.bfloat16)
    a, b = fuq.token_stats(x, topk=4, renyi=True), fuq.token_stats(x, topk=4, renyi=True)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_64bit_offsets():
    # rows more than 2^31 elements apart; only the touched pages of the huge buffer are committed
    V = 1000
    stride = 2**30 + 7
    storage = torch.empty(2 * stride + V, dtype=torch.bfloat16)
    x = torch.as_strided(storage, (3, V), (stride, 1))
    x.copy_(make_logits("normal", 3, V, dtype=torch.bfloat16))
    t = torch.tensor([1, 2, 999])
    got = fuq.token_stats(x, t, topk=2)
    assert_close_stats(got, reference(x.clone(), t, topk=2))


# ---- invariants (verl issue #2656 shows why: fused kernels gave log-probs of +123) -----------

def test_invariants():
    x = make_logits("normal", 64, 4096, seed=3) + torch.linspace(-100, 100, 64)[:, None]
    got = fuq.token_stats(x, torch.randint(0, 4096, (64,)))
    assert (got.logprob <= 0).all() and (got.max_logprob <= 0).all()
    assert (got.entropy >= 0).all() and (got.entropy <= math.log(4096) + 1e-5).all()
    assert ((got.collision > 0) & (got.collision <= 1)).all()
    assert ((got.margin >= 0) & (got.margin <= 1)).all()
    assert (got.self_certainty >= -1e-6).all()


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "call, exc, name",
    [
        (lambda: fuq.token_stats(torch.ones(3, 5, dtype=torch.int64)), TypeError, "logits"),
        (lambda: fuq.token_stats(torch.tensor(1.0)), ValueError, "logits"),
        (lambda: fuq.token_stats(torch.ones(3, 0)), ValueError, "logits"),
        (lambda: fuq.token_stats([[1.0, 2.0]]), TypeError, "logits"),
        (lambda: fuq.token_stats(torch.ones(5, 3).t()), ValueError, "logits"),
        (lambda: fuq.token_stats(torch.ones(3, 5), torch.tensor([0, 1, 5])), ValueError, "tokens"),
        (lambda: fuq.token_stats(torch.ones(3, 5), torch.tensor([0, -1, 2])), ValueError, "tokens"),
        (lambda: fuq.token_stats(torch.ones(3, 5), torch.tensor([0, 1])), ValueError, "tokens"),
        (lambda: fuq.token_stats(torch.ones(3, 5), torch.tensor([0.0, 1.0, 2.0])), TypeError, "tokens"),
        (lambda: fuq.token_stats(torch.ones(3, 5), torch.zeros(3, dtype=torch.int64, device="meta")), ValueError,
         "tokens"),
        (lambda: fuq.token_stats(torch.ones(3, 5), temperature=0.0), ValueError, "temperature"),
        (lambda: fuq.token_stats(torch.ones(3, 5), temperature=-1.0), ValueError, "temperature"),
        (lambda: fuq.token_stats(torch.ones(3, 5), temperature=float("nan")), ValueError, "temperature"),
        (lambda: fuq.token_stats(torch.ones(3, 5), temperature=float("inf")), ValueError, "temperature"),
        (lambda: fuq.token_stats(torch.ones(3, 5), temperature="hot"), TypeError, "temperature"),
        (lambda: fuq.token_stats(torch.ones(3, 5), temperature=1e-40), ValueError, "temperature"),
        (lambda: fuq.token_stats(torch.ones(3, 5), topk=-1), ValueError, "topk"),
        (lambda: fuq.token_stats(torch.ones(3, 100), topk=65), ValueError, "topk"),
        (lambda: fuq.token_stats(torch.ones(3, 5), topk=6), ValueError, "topk"),
        (lambda: fuq.token_stats(torch.ones(3, 5), topk=2.0), TypeError, "topk"),
        (lambda: fuq.token_stats(torch.ones(3, 5), renyi=1), TypeError, "renyi"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


# ---- torch.library: opcheck, compile, autograd ----------------------------------------------

def test_opcheck():
    x = torch.randn(3, 4, 50, requires_grad=True)
    t = torch.randint(0, 50, (3, 4))
    torch.library.opcheck(torch.ops.flashuq.token_stats.default, (x, t, 0.8, 3))
    torch.library.opcheck(torch.ops.flashuq.token_stats.default, (x.detach().bfloat16(), None, 1.0, 0))
    torch.library.opcheck(torch.ops.flashuq.token_stats.default, (x, t, 0.8, 2, True))


def test_plain_cpu_calls_skip_the_dispatch_and_agree_with_the_op():
    """A CPU call that nothing observes runs the kernel without torch.library's dispatch
    (ops/_common.py, plain_cpu_call); the results are the op's, bit for bit. A call under a
    dispatch mode, or one autograd records, goes through the op."""
    x = make_logits("normal", 5, 301)
    t = torch.randint(0, 301, (5,))
    got = fuq.token_stats(x, t, topk=3, renyi=True)
    want = torch.ops.flashuq.token_stats(x, t, 1.0, 3, True)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    # the plain call's float fields are rows of one buffer (one allocation): still separate tensors
    lse = got.lse.clone()
    got.entropy.fill_(-1.0)
    assert torch.equal(got.lse, lse) and got.entropy.is_contiguous() and got.lse.shape == (5,)
    from flashuq.ops import token_stats as ts_op
    with pytest.raises(ValueError, match="pooled"):  # pooled outputs are the CPU path's only
        ts_op.compute(x, t, 1.0, 0, backend="triton", pooled=True)
    seen = SeenOps()
    with seen:
        fuq.token_stats(x, t)
    assert any("flashuq.token_stats" in op for op in seen.ops), seen.ops
    xg = x.clone().requires_grad_(True)
    fuq.token_stats(xg, t).entropy.sum().backward()  # through the op's autograd formula
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_torch_compile_fullgraph():
    def f(logits, tokens):
        s = fuq.token_stats(logits, tokens, topk=2)
        return s.entropy.mean(-1) + s.logprob.sum(-1), s.topk_ids

    x = make_logits("normal", 6, 257).reshape(2, 3, 257)
    t = torch.randint(0, 257, (2, 3))
    compiled = torch.compile(f, fullgraph=True)
    got, ids = compiled(x, t)
    want, want_ids = f(x, t)
    torch.testing.assert_close(got, want)
    assert torch.equal(ids, want_ids)


def test_gradcheck_fp64():
    x = torch.randn(3, 2, 7, dtype=torch.float64)
    x[0, 1, 5] = -math.inf  # p = 0 there (not an emitted token): the gradient must be 0, not NaN
    x.requires_grad_(True)
    t = torch.tensor([[1, 2], [3, 4], [5, 6]])

    def f(z):
        s = fuq.token_stats(z, t, temperature=0.7)
        return s.entropy, s.logprob, s.lse, s.max_logprob

    torch.autograd.gradcheck(f, (x,))
    g = torch.autograd.grad(fuq.token_stats(x).entropy.sum(), x)[0]
    assert torch.isfinite(g).all() and g[0, 1, 5] == 0


def test_entropy_gradient_matches_torch():
    x = torch.randn(4, 33, requires_grad=True)
    fuq.token_stats(x).entropy.sum().backward()
    y = x.detach().clone().requires_grad_(True)
    torch.distributions.Categorical(logits=y).entropy().sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-5, atol=1e-6)


def test_non_differentiable_fields_refuse_backward():
    x = torch.randn(2, 9, requires_grad=True)
    s = fuq.token_stats(x)
    assert not s.kurtosis.requires_grad and not s.collision.requires_grad and s.entropy.requires_grad


# ---- property test over shapes, strides and dtypes ------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lead=st.lists(st.integers(0, 4), min_size=0, max_size=3),
    V=st.integers(1, 300),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]),
    step=st.integers(1, 2),
    transpose=st.booleans(),
    topk=st.integers(0, 6),
    scale=st.sampled_from([0.1, 3.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_property_shapes_strides_dtypes(lead, V, dtype, step, transpose, topk, scale, seed):
    g = torch.Generator().manual_seed(seed)
    full = [n * step for n in lead]
    x = (torch.randn(*full, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    if lead:
        x = x[(slice(None, None, step),) * len(lead)]
    if transpose and len(lead) >= 2:
        x = x.transpose(0, 1)
    topk = min(topk, V)
    t = torch.randint(0, V, x.shape[:-1], generator=g)
    got = fuq.token_stats(x, t, topk=topk)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    assert_close_stats(got, reference(x, t, topk=topk), rtol=rtol)


def test_topk_64_and_vocab_2_pow_20():
    x = make_logits("normal", 2, 2**20, seed=11)
    t = torch.tensor([5, 2**20 - 1])
    got = fuq.token_stats(x, t, topk=64)
    assert got.topk_ids.shape == (2, 64)
    assert_close_stats(got, reference(x, t, topk=64))


def test_import_and_cpu_op_without_triton():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['triton'] = None\n"  # any import of triton now fails
        "import torch, flashuq as fuq\n"
        "s = fuq.token_stats(torch.randn(3, 10), topk=2)\n"
        "assert s.entropy.shape == (3,) and 'triton' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "assert not fuq._ext.triton_available()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_op_path_equals_the_checked_binding():
    # fuq.token_stats hands the kernel data pointers (tensors through DLPack cost ~2 us each); the
    # checked ndarray binding must give bitwise the same results on the same rows, views included
    from flashuq.ops import token_stats as T

    g = torch.Generator().manual_seed(3)
    base = torch.randn(3, 5, 700, generator=g).to(torch.bfloat16)
    x = base[:, 1:4]  # rows that do not form one contiguous block
    tok = torch.randint(0, 700, (3, 3), generator=g)
    got = fuq.token_stats(x, tok, topk=4, renyi=True)
    out = T._alloc(x, 4, True)
    n1, s0, s1 = T.row_layout(x)
    _ext._C.token_stats(x, 9, 700, n1, s0, s1, tok.reshape(-1).contiguous(), 1.0, 4, *out[:11], 2, *out[11:])
    for a, b in zip(got, out):
        assert torch.equal(a, b)


def test_pointer_binding_refuses_bad_arguments():
    C = _ext._C
    good = dict(dtype=0, logits=1, rows=1, V=4, n1=1, s0=0, s1=4, tokens=0, inv_temp=1.0, k=0, lse=1,
                max_logprob=1, logprob=1, entropy=1, margin=1, collision=1, kurtosis=1, self_certainty=1,
                argmax=1, topk_logprobs=0, topk_ids=0, num_threads=1, renyi_term=0, fisher_rao=0)
    for bad in ({"dtype": 7}, {"V": 0}, {"n1": 0}, {"s0": -1}, {"k": 65}, {"k": 5}, {"renyi_term": 1},
                {"lse": 0}, {"argmax": 0}, {"k": 2}):
        with pytest.raises(ValueError):
            C._token_stats_ptrs(**{**good, **bad})
    C._token_stats_ptrs(**{**good, "rows": 0, "logits": 0})  # nothing to do, nothing touched
