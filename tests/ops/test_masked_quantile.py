"""flashuq.masked_quantile on the CPU (C++): bitwise against numpy.quantile in float64."""

import math

import numpy as np
import pytest
import torch

import flashuq as fuq
from reduce_cases import ragged

LEVELS = [0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_padded_and_packed_match_numpy(dtype):
    values, mask, packed, cu, lengths = ragged(B=9, T=33, dtype=dtype, empty=(4,))
    for got in (fuq.masked_quantile(values, LEVELS, mask), fuq.masked_quantile(packed, LEVELS, cu_seqlens=cu)):
        assert got.shape == (9, len(LEVELS))
        for b in range(9):
            r = values[b, : lengths[b]].double().numpy()
            if r.size == 0:
                assert torch.isnan(got[b]).all()
                continue
            want = np.quantile(r.astype(np.float64), LEVELS)
            if dtype == torch.float64:
                np.testing.assert_array_equal(got[b].numpy(), want)  # numpy's lerp, to the last bit
            else:
                np.testing.assert_allclose(got[b].double().numpy(), want, rtol=1e-6, atol=1e-7)


def test_scalar_level_and_min_max():
    values, mask, *_ = ragged(empty=())
    q0 = fuq.masked_quantile(values, 0.0, mask)
    assert q0.shape == (6,)
    assert torch.equal(q0, fuq.masked_reduce(values, mask, op="min"))
    assert torch.equal(fuq.masked_quantile(values, 1, mask), fuq.masked_reduce(values, mask, op="max"))
    assert torch.equal(fuq.masked_quantile(values, np.array([0.5]), mask).squeeze(-1),
                       fuq.masked_quantile(values, 0.5, mask))


def test_padding_and_nan():
    values, mask, *_ = ragged(seed=4)
    junk = values.clone()
    junk[~mask] = float("nan")
    base = fuq.masked_quantile(values, LEVELS, mask)
    assert torch.equal(fuq.masked_quantile(junk, LEVELS, mask).nan_to_num(7.0), base.nan_to_num(7.0))
    v = torch.tensor([[1.0, float("nan"), 3.0], [1.0, 2.0, float("nan")]])
    m = torch.tensor([[1, 1, 1], [1, 1, 0]])
    got = fuq.masked_quantile(v, [0.5], m)
    assert math.isnan(got[0, 0].item()) and got[1, 0].item() == 1.5


@pytest.mark.parametrize(
    "q, exc",
    [(1.5, ValueError), (-0.1, ValueError), ([], ValueError), ([[0.5]], ValueError), ("a", TypeError),
     (True, TypeError), (float("nan"), ValueError), (["a"], TypeError), ([0.5, True], TypeError)],
)
def test_bad_levels(q, exc):
    with pytest.raises(exc, match="q"):
        fuq.masked_quantile(torch.ones(2, 3), q)


def test_bad_layout():
    with pytest.raises(ValueError, match="mask"):
        fuq.masked_quantile(torch.ones(2, 3), 0.5, torch.ones(3, 2))
    with pytest.raises(ValueError, match="cu_seqlens"):
        fuq.masked_quantile(torch.ones(5), 0.5, cu_seqlens=torch.tensor([0, 2, 4]))
    with pytest.raises(TypeError, match="values"):
        fuq.masked_quantile(torch.ones(2, 3, dtype=torch.int32), 0.5)


def test_opcheck_and_compile():
    values, mask, packed, cu, _ = ragged(empty=())
    torch.library.opcheck(torch.ops.flashuq.masked_quantile.default, (values, mask.to(torch.uint8), None, [0.2, 0.9]))
    torch.library.opcheck(torch.ops.flashuq.masked_quantile.default, (packed, None, cu.long(), [0.5]))

    @torch.compile(fullgraph=True)
    def f(v, m):
        return fuq.masked_quantile(v, [0.1, 0.5], m) + 1

    torch.testing.assert_close(f(values, mask), fuq.masked_quantile(values, [0.1, 0.5], mask) + 1)
