"""flashuq.masked_reduce on the CPU (C++): against numpy and the float64 reference."""

import math

import numpy as np
import pytest
import torch

import flashuq as fuq
from isa_cases import isa_levels, limited_isa
from reduce_cases import OPS, numpy_reduce, ragged


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_padded_and_packed_match_numpy(op, dtype):
    values, mask, packed, cu, lengths = ragged(dtype=dtype)
    rows = [values[b, : lengths[b]].double().numpy() for b in range(len(lengths))]
    want = numpy_reduce(rows, op)
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    for got in (fuq.masked_reduce(values, mask, op=op), fuq.masked_reduce(packed, op=op, cu_seqlens=cu)):
        assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        np.testing.assert_allclose(got.double().numpy(), want, rtol=rtol, atol=1e-7)
    torch.testing.assert_close(fuq.masked_reduce(values, mask, op=op).double(),
                               fuq.reference.masked_reduce(values, mask, op=op), rtol=rtol, atol=1e-7, equal_nan=True)


def test_empty_sequence_sum_is_zero_others_nan():
    values, mask, *_ = ragged(empty=(0, 3))
    for op in OPS:
        got = fuq.masked_reduce(values, mask, op=op)
        if op == "sum":
            assert got[0].item() == 0.0 and got[3].item() == 0.0
        else:
            assert math.isnan(got[0].item()) and math.isnan(got[3].item())
        assert not torch.isnan(got[1]).item()


@pytest.mark.parametrize("op", OPS)
def test_padding_never_changes_a_result(op):
    values, mask, _, _, lengths = ragged(seed=3)
    base = fuq.masked_reduce(values, mask, op=op)
    junk = values.clone()
    junk[~mask] = float("nan")
    assert torch.equal(fuq.masked_reduce(junk, mask, op=op).nan_to_num(7.0), base.nan_to_num(7.0))
    junk[~mask] = 1e30
    assert torch.equal(fuq.masked_reduce(junk, mask, op=op).nan_to_num(7.0), base.nan_to_num(7.0))
    # left padding: the same tokens at the end of each row
    T = values.shape[1]
    left = torch.full_like(values, -5.0)
    lmask = torch.zeros_like(mask)
    for b, n in enumerate(lengths.tolist()):
        left[b, T - n:] = values[b, :n]
        lmask[b, T - n:] = True
    assert torch.equal(fuq.masked_reduce(left, lmask, op=op).nan_to_num(7.0), base.nan_to_num(7.0))


@pytest.mark.parametrize("op", ["sum", "mean", "logsumexp"])
def test_weights(op):
    values, mask, packed, cu, lengths = ragged(seed=5)
    w = torch.rand(values.shape, generator=torch.Generator().manual_seed(9))
    wrows = [w[b, : lengths[b]].numpy() for b in range(len(lengths))]
    rows = [values[b, : lengths[b]].numpy() for b in range(len(lengths))]
    want = numpy_reduce(rows, op, wrows)
    np.testing.assert_allclose(fuq.masked_reduce(values, mask, op=op, weights=w).numpy(), want, rtol=1e-6)
    wp = torch.cat([w[b, : lengths[b]] for b in range(len(lengths))])
    np.testing.assert_allclose(fuq.masked_reduce(packed, op=op, weights=wp, cu_seqlens=cu).numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp64_weights_keep_their_range_with_lower_precision_values(dtype):
    """fp64 weights beside fp32/bf16 values were rounded to fp32 first: 1e-50 became 0 (logsumexp
    -inf, mean NaN) and 1e-44 lost digits. They are used in fp64; the result keeps the values'
    accumulation dtype (fp32)."""
    v = torch.tensor([[0.0, 1.0, 2.0, 5.0], [100.0, 100.0, 0.0, 3.0]]).to(dtype)
    w = torch.tensor([[1e-50, 1e-50, 1e-50, 0.0], [1e-44, 3e-44, 1.0, 2.0]], dtype=torch.float64)
    rows, wrows = [r.double().numpy() for r in v], [r.numpy() for r in w]
    for op in ("sum", "mean", "logsumexp"):
        got = fuq.masked_reduce(v, op=op, weights=w)
        assert got.dtype == torch.float32
        # the fp64 result rounded to fp32 once (a sum of 3e-50 is 0 there)
        np.testing.assert_allclose(got.numpy(), numpy_reduce(rows, op, wrows).astype(np.float32), rtol=1e-6, atol=0)
        mask = torch.tensor([[True, True, False, True], [True, False, True, True]])
        want = numpy_reduce([r[m.numpy()] for r, m in zip(rows, mask)], op, [r[m.numpy()] for r, m in zip(wrows, mask)])
        np.testing.assert_allclose(fuq.masked_reduce(v, mask, op=op, weights=w).numpy(), want.astype(np.float32),
                                   rtol=1e-6, atol=0)


def test_nan_and_infinities():
    v = torch.tensor([[1.0, float("nan"), 2.0], [float("-inf"), float("-inf"), 0.0], [3.0, float("inf"), 1.0]])
    m = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    for op in OPS:
        got = fuq.masked_reduce(v, m, op=op)
        ref = fuq.reference.masked_reduce(v, m, op=op)
        assert math.isnan(got[0].item()), op
        torch.testing.assert_close(got[1:].double(), ref[1:], equal_nan=True)
    assert fuq.masked_reduce(v, m, op="logsumexp")[1].item() == float("-inf")


def test_no_mask_reduces_the_last_axis_of_any_leading_shape():
    v = torch.randn(2, 3, 17)
    torch.testing.assert_close(fuq.masked_reduce(v, op="mean"), v.mean(-1))
    torch.testing.assert_close(fuq.masked_reduce(v, op="logsumexp"), torch.logsumexp(v, -1))


@pytest.mark.parametrize(
    "kw, exc, name",
    [
        (dict(values=torch.ones(2, 3, dtype=torch.int64)), TypeError, "values"),
        (dict(values=torch.ones(2, 3), op="median"), ValueError, "op"),
        (dict(values=torch.ones(2, 3), mask=torch.ones(2, 4)), ValueError, "mask"),
        (dict(values=torch.ones(5), cu_seqlens=torch.tensor([0, 2, 4])), ValueError, "cu_seqlens"),
        (dict(values=torch.ones(5), cu_seqlens=torch.tensor([1, 2, 5])), ValueError, "cu_seqlens"),
        (dict(values=torch.ones(5), cu_seqlens=torch.tensor([0, 3, 2, 5])), ValueError, "cu_seqlens"),
        (dict(values=torch.ones(5), cu_seqlens=torch.tensor([0.0, 5.0])), TypeError, "cu_seqlens"),
        (dict(values=torch.ones(2, 3), cu_seqlens=torch.tensor([0, 6])), ValueError, "values"),
        (dict(values=torch.ones(6), mask=torch.ones(6), cu_seqlens=torch.tensor([0, 6])), ValueError, "cu_seqlens"),
        (dict(values=torch.ones(2, 3), op="max", weights=torch.ones(2, 3)), ValueError, "weights"),
        (dict(values=torch.ones(2, 3), weights=-torch.ones(2, 3)), ValueError, "weights"),
        (dict(values=torch.ones(2, 3), weights=torch.ones(3, 2)), ValueError, "weights"),
        (dict(values=torch.tensor(1.0)), ValueError, "values"),
        (dict(values=[1.0, 2.0]), TypeError, "values"),
    ],
)
def test_bad_input(kw, exc, name):
    with pytest.raises(exc, match=name):
        fuq.masked_reduce(**kw)


def test_opcheck_and_compile():
    values, mask, packed, cu, _ = ragged(empty=())  # opcheck compares outputs with NaN != NaN
    torch.library.opcheck(torch.ops.flashuq.masked_reduce.default, (values, mask.to(torch.uint8), None, None, 1))
    torch.library.opcheck(torch.ops.flashuq.masked_reduce.default, (packed, None, None, cu.long(), 4))

    @torch.compile(fullgraph=True)
    def f(v, m):
        return fuq.masked_reduce(v, m, op="mean") * 2

    torch.testing.assert_close(f(values, mask), fuq.masked_reduce(values, mask, op="mean") * 2, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("level", isa_levels())
def test_logsumexp_of_long_rows_on_every_build(level, dtype):
    """The logsumexp without weights runs on the token statistics' vectorised passes, reading fp16
    and bf16 as they are (blocks of 1024 in fp32 lanes, merged in fp64; csrc/cpu/masked_reduce.cpp,
    docs/numerics.md#masked-reductions): vocabulary-length rows, padded and packed, the maximum in
    a later block, entries below exp's range, all -inf, empty, and NaN or +inf in a later block (NaN,
    and +inf, as the fp64 loop gives) — against float64 torch, in each build, and bitwise
    independent of the thread count."""
    g = torch.Generator().manual_seed(11)
    B, T = 9, 5000
    v = torch.randn(B, T, generator=g) * 4
    v[1, 4100] = 60.0                     # the maximum in the last block
    v[2, :3000] = -1e4                    # far below the maximum: e^d underflows to 0
    v[3, :] = float("-inf")               # every entry -inf
    v[4, 2500] = float("inf")             # +inf among the real entries: +inf
    v[5, 4999] = float("nan")             # NaN in the last block: NaN where it is real
    mask = torch.rand(B, T, generator=g) < 0.7
    mask[6] = False                       # empty
    mask[7, 1024:] = False                # real entries in the first block only
    mask[8] = torch.arange(T) >= 4000     # real entries in the last blocks only
    v = v.to(dtype)
    junk = v.clone()
    junk[~mask] = float("nan")            # padding never enters
    want = torch.logsumexp(v.double().masked_fill(~mask, float("-inf")), -1)
    want[mask.sum(-1) == 0] = float("nan")
    want[5] = float("nan") if mask[5, 4999] else want[5]
    with limited_isa(level):
        got = fuq.masked_reduce(junk, mask, op="logsumexp")
        packed = torch.cat([v[b][mask[b]] for b in range(B)])
        cu = torch.tensor([0] + mask.sum(-1).cumsum(0).tolist())
        got_packed = fuq.masked_reduce(packed, op="logsumexp", cu_seqlens=cu)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = fuq.masked_reduce(junk, mask, op="logsumexp")
        finally:
            torch.set_num_threads(threads)
        full = fuq.masked_reduce(v[:3], op="logsumexp")
    for x in (got, got_packed):
        assert x.dtype == torch.float32
        torch.testing.assert_close(x.double(), want, rtol=3e-7, atol=0, equal_nan=True)
    assert got[3].item() == float("-inf") and got[4].item() == float("inf") and math.isnan(got[6].item())
    assert torch.equal(one.nan_to_num(7.0), got.nan_to_num(7.0))
    torch.testing.assert_close(full.double(), torch.logsumexp(v[:3].double(), -1), rtol=3e-7, atol=0)


def test_binding_reads_half_precision_for_the_logsumexp_without_weights_only():
    """The binding takes fp16/bf16 values only where the kernel reads them (logsumexp, no weights);
    every other op or weights refuse them with a TypeError naming the argument; NaN rows stay NaN."""
    from flashuq import _ext
    v = torch.tensor([[0.5, 1.0, float("nan")], [2.0, -1.0, 0.0]], dtype=torch.bfloat16)
    out = torch.empty(2)
    _ext._C.masked_reduce(v.reshape(-1), None, None, None, 2, 3, 4, out, 1)
    assert math.isnan(out[0].item())
    torch.testing.assert_close(out[1:].double(), torch.logsumexp(v[1:].double(), -1), rtol=1e-6, atol=0)
    for op in (0, 1, 2, 3, 5):
        with pytest.raises(TypeError, match="values"):
            _ext._C.masked_reduce(v.reshape(-1), None, None, None, 2, 3, op, out, 1,
                                  torch.tensor([0.5], dtype=torch.float64) if op == 5 else None)
    with pytest.raises(TypeError, match="values"):
        _ext._C.masked_reduce(v.reshape(-1), None, torch.ones(6, dtype=torch.bfloat16), None, 2, 3, 4, out, 1)
    with pytest.raises(ValueError, match="out"):
        _ext._C.masked_reduce(v.reshape(-1), None, None, None, 2, 3, 4, torch.empty(1), 1)
