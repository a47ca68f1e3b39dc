"""The Triton quantile kernel and the long-sequence torch path (CUDA when present, else the
interpreter / CPU tensors), against numpy.quantile."""

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from flashuq.ops import masked_quantile as mq  # noqa: E402
from flashuq.ops import masked_reduce as mr  # noqa: E402
from reduce_cases import ragged  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LEVELS = [0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0]


def run(values, q, mask=None, cu=None, *, torch_path=False):
    values, mask, _, cu, _ = mr._validate(values, mask, "min", None, cu)
    out = mq._out(values, cu, len(q)).to(DEVICE)
    v = values.to(out.dtype).contiguous().to(DEVICE)
    m = None if mask is None else mask.contiguous().to(DEVICE)
    cu = None if cu is None else cu.to(DEVICE)
    B = out.numel() // len(q)
    T = values.shape[-1] if cu is None else 0
    if torch_path:
        return mq._quantile_torch(v, m, cu, q, B, T).cpu()
    mq._launch_cuda(v, m, cu, q, out, B, T)
    return out.cpu()


@pytest.mark.parametrize("torch_path", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_matches_numpy(dtype, torch_path):
    values, mask, packed, cu, lengths = ragged(B=7, T=37, dtype=dtype, empty=(3,))
    for got in (run(values, LEVELS, mask, torch_path=torch_path), run(packed, LEVELS, cu=cu, torch_path=torch_path)):
        for b in range(7):
            r = values[b, : lengths[b]].double().numpy()
            if r.size == 0:
                assert torch.isnan(got[b]).all()
            else:
                np.testing.assert_allclose(got[b].double().numpy(), np.quantile(r, LEVELS),
                                           rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=1e-7)


def test_nan_rows():
    v = torch.tensor([[1.0, float("nan"), 3.0], [1.0, 2.0, float("nan")]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 1], [1, 1, 0]])
    for tp in (False, True):
        got = run(v, [0.5], m, torch_path=tp)
        assert torch.isnan(got[0, 0]) and got[1, 0].item() == 1.5
