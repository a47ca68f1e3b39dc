"""The Triton masked-reduction kernel (on CUDA when present, else through the interpreter)."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from flashuq.ops import masked_reduce as mr  # noqa: E402
from reduce_cases import OPS, numpy_reduce, ragged  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run(values, mask=None, op="mean", weights=None, cu=None, block=16):
    values, mask, weights, cu, opi = mr._validate(values, mask, op, weights, cu)
    out = mr._out(values, cu)
    acc = out.dtype
    v = values.to(acc).contiguous().to(DEVICE)
    w = None if weights is None else weights.to(acc).contiguous().to(DEVICE)
    m = None if mask is None else mask.contiguous().to(DEVICE)
    out = out.to(DEVICE)
    T = values.shape[-1] if cu is None else 0
    mr._launch_triton(v, m, w, None if cu is None else cu.to(DEVICE), out, out.numel(), T, opi, block=block)
    return out.cpu()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_matches_numpy_padded_and_packed(op, dtype):
    values, mask, packed, cu, lengths = ragged(dtype=dtype)  # T = 40 > block 16: several blocks per row
    rows = [values[b, : lengths[b]].double().numpy() for b in range(len(lengths))]
    want = numpy_reduce(rows, op)
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    np.testing.assert_allclose(run(values, mask, op).double().numpy(), want, rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(run(packed, None, op, cu=cu).double().numpy(), want, rtol=rtol, atol=1e-7)


def test_weights_nan_and_infinities():
    values, mask, _, _, lengths = ragged(seed=5)
    w = torch.rand(values.shape, generator=torch.Generator().manual_seed(9))
    rows = [values[b, : lengths[b]].numpy() for b in range(len(lengths))]
    wrows = [w[b, : lengths[b]].numpy() for b in range(len(lengths))]
    for op in ("sum", "mean", "logsumexp"):
        np.testing.assert_allclose(run(values, mask, op, weights=w).numpy(), numpy_reduce(rows, op, wrows), rtol=1e-6)
    v = torch.tensor([[1.0, float("nan"), 2.0], [float("-inf"), float("-inf"), 0.0], [3.0, float("inf"), 1.0]])
    m = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    for op in OPS:
        got = run(v, m, op)
        assert math.isnan(got[0].item()), op
    assert run(v, m, "logsumexp")[1].item() == float("-inf")
    assert run(v, m, "logsumexp")[2].item() == float("inf")
    assert run(v, m, "max")[2].item() == float("inf")


def test_padding_never_changes_a_result():
    values, mask, *_ = ragged(seed=3)
    junk = values.clone()
    junk[~mask] = float("nan")
    for op in OPS:
        assert torch.equal(run(junk, mask, op).nan_to_num(7.0), run(values, mask, op).nan_to_num(7.0))
