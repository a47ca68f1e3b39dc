"""The Triton token-statistics kernels: on a CUDA device when there is one, otherwise through the
Triton interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 before any import).

Shapes are interpreter-sized (docs/numerics.md#triton-interpreter): few rows, V around BLOCK ± 1, large BLOCK.
"""

import math

import pytest
import torch

pytest.importorskip("triton")

from flashuq.ops import token_stats as ts_mod  # noqa: E402
from stats_cases import FLOAT_FIELDS, ROW_KINDS, assert_close_stats, make_logits, reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# small BLOCK/CHUNK so that short rows still cross block and chunk boundaries
SMALL = dict(block=1024, chunk=2048)


def run(x, tokens=None, *, topk=0, temperature=1.0, **launch):
    x = x.to(DEVICE)
    tokens = None if tokens is None else tokens.to(DEVICE)
    return ts_mod.TokenStats(*ts_mod.compute(x, tokens, temperature, topk, backend="triton", **launch))


def assert_bitwise_equal(a, b):
    for f, u, v in zip(a._fields, a, b):
        assert torch.equal(torch.isnan(u), torch.isnan(v)), f
        assert torch.equal(u.nan_to_num(0.0), v.nan_to_num(0.0)), f


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("kind", ROW_KINDS)
def test_matches_reference_split_and_rows(kind, dtype):
    V = 2 * SMALL["chunk"] + 5  # three chunks, the last one short
    x = make_logits(kind, 4, V, dtype=dtype, seed=7)
    t = torch.randint(0, V, (4,), generator=torch.Generator().manual_seed(2))
    rows = run(x, t, topk=5, split=False, **SMALL)
    split = run(x, t, topk=5, split=True, **SMALL)
    assert_close_stats(rows, reference(x, t, topk=5))
    # the two launch shapes fold the same chunk partials in the same order: bitwise equal
    assert_bitwise_equal(rows, split)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_self_certainty_with_float_minimum_masks(dtype):
    """Logits masked with the dtype's minimum (Hugging Face): d ~ -3.4e38 each, and two of them
    overflowed the fp32 sum of d (+inf self-certainty where the value is ~1e35-1e37). The kernel
    carries that sum times 2^-32."""
    V = 2 * SMALL["chunk"] + 5
    x = torch.randn(4, V, generator=torch.Generator().manual_seed(3))
    lo = torch.finfo(dtype).min
    x[0, :2] = lo
    x[1, 1500:1700] = lo
    x[2, ::7] = lo
    x[3, 9] = lo
    x = x.to(dtype)
    for tt in (1.0, 0.5):
        ref = reference(x.double(), temperature=tt).self_certainty
        for split in (False, True):
            got = run(x, temperature=tt, split=split, **SMALL).self_certainty
            torch.testing.assert_close(got.double().cpu(), ref, rtol=2e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("kind", ROW_KINDS)
def test_renyi_fields_split_and_rows(kind, dtype):
    V = 2 * SMALL["chunk"] + 5
    x = make_logits(kind, 3, V, dtype=dtype, seed=13)
    rows = run(x, temperature=0.8, renyi=True, split=False, **SMALL)
    split = run(x, temperature=0.8, renyi=True, split=True, **SMALL)
    ref = reference(x, temperature=0.8, renyi=True)
    assert_close_stats(rows, ref, renyi=True, rtol=1e-12 if dtype == torch.float64 else 1e-5)
    assert_bitwise_equal(rows, split)
    plain = run(x, temperature=0.8, split=False, **SMALL)
    assert plain.renyi_term.numel() == 0 and torch.equal(plain.argmax, rows.argmax)


@pytest.mark.parametrize("V", [1, 2, 7, 1023, 1025])
def test_small_vocabularies(V):
    x = make_logits("normal", 3, V, seed=V)
    t = torch.randint(0, V, (3,))
    k = min(V, 4)
    got = run(x, t, topk=k, **SMALL)
    assert_close_stats(got, reference(x, t, topk=k))


def test_default_launch_config():
    x = make_logits("normal", 3, 8197, dtype=torch.bfloat16)
    got = run(x, topk=3)
    assert_close_stats(got, reference(x, topk=3))


def test_float64():
    x = make_logits("masked", 3, 3000, dtype=torch.float64)
    got = run(x, topk=3, **SMALL)
    assert got.entropy.dtype == torch.float64
    assert_close_stats(got, reference(x, topk=3), rtol=1e-12)


@pytest.mark.parametrize("gap", [50.0, 75.0])
def test_confident_rows(gap):
    V = 5000
    x = torch.zeros(2, V)
    x[0, 0] = gap
    x[1, V - 1] = gap
    R = (V - 1) * math.exp(-gap)
    H = math.log1p(R) + gap * R / (1 + R)
    got = run(x, **SMALL)
    for h in got.entropy.tolist():
        assert abs(h - H) <= 1e-3 * H


def test_invalid_rows_ties_and_masked_topk():
    V = 2500
    x = make_logits("normal", 6, V)
    x[1] = -math.inf
    x[2, 1700] = math.nan
    x[3, 3] = math.inf
    x[4] = 1.0                      # all tied: argmax 0, margin 0, kurtosis NaN
    x[5] = -math.inf
    x[5, 2100], x[5, 10] = 0.0, 2.0  # two finite entries, top-4 fills with masked ids in order
    t = torch.tensor([0, 0, 0, 0, 5, 2100])
    got = run(x, t, topk=4, **SMALL)
    for f in FLOAT_FIELDS:
        assert torch.isnan(getattr(got, f)[1:4].cpu()).all(), f
    assert got.argmax.tolist() == [got.argmax[0].item(), -1, -1, -1, 0, 10]
    assert got.topk_ids[5].tolist() == [10, 2100, 0, 1]
    assert got.margin[4].item() == 0.0 and math.isnan(got.kurtosis[4].item())
    ref = reference(x, t, topk=4)
    for f in FLOAT_FIELDS:
        if f == "kurtosis":
            continue  # row 4 is uniform: NaN in both, checked above
        torch.testing.assert_close(getattr(got, f)[[0, 5]].double().cpu(), getattr(ref, f)[[0, 5]],
                                   rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("kind", ["normal", "huge"])
@pytest.mark.parametrize("temperature", [0.5, 0.7])
def test_temperature(kind, temperature):
    x = make_logits(kind, 3, 3000)
    t = torch.randint(0, 3000, (3,))
    got = run(x, t, topk=6, temperature=temperature, **SMALL)
    assert_close_stats(got, reference(x, t, temperature=temperature, topk=6))


def test_float64_with_temperature():
    x = make_logits("huge", 2, 3000, dtype=torch.float64)
    got = run(x, topk=2, temperature=0.7, **SMALL)
    assert_close_stats(got, reference(x, temperature=0.7, topk=2), rtol=1e-10)  # the reference rounds z/T (|z/T| ~ 1e4)


def test_logits_spanning_beyond_the_float_range():
    x = torch.tensor([[2e38, -2e38, 0.0, 2e38 - 1e32]])
    got = run(x, torch.tensor([1]), **SMALL)
    assert got.argmax.item() == 0 and got.logprob.item() == -math.inf
    assert got.entropy.item() == 0.0 and got.margin.item() == 1.0


def test_leading_strides():
    base = make_logits("normal", 12, 1500).reshape(3, 4, 1500)
    x = base[:, 1:3]                      # two leading dims that do not coalesce
    t = torch.randint(0, 1500, x.shape[:-1])
    got = run(x, t, topk=2, **SMALL)
    assert got.entropy.shape == (3, 2)
    assert_close_stats(got, reference(x.contiguous(), t, topk=2))


def test_64bit_offsets():
    V = 1000
    stride = 2**30 + 7
    storage = torch.empty(2 * stride + V, dtype=torch.bfloat16, device=DEVICE)
    x = torch.as_strided(storage, (3, V), (stride, 1))
    x.copy_(make_logits("normal", 3, V, dtype=torch.bfloat16).to(DEVICE))
    got = run(x, topk=2, block=1024, chunk=1024)
    assert_close_stats(got, reference(x.cpu().clone(), topk=2))


def test_deterministic():
    x = make_logits("normal", 2, 5000, dtype=torch.bfloat16)
    assert_bitwise_equal(run(x, topk=3, split=True, **SMALL), run(x, topk=3, split=True, **SMALL))


def test_block_must_divide_chunk():
    with pytest.raises(ValueError, match="chunk"):
        run(torch.randn(2, 10), block=1024, chunk=1536)
