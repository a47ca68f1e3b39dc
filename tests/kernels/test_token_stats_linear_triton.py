"""The fused Triton path of token_stats_linear (tl.dot tiles over rows × vocabulary, then token_stats'
merge kernel): through the interpreter on CPU tensors, or on the GPU when there is one."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from flashuq.ops import token_stats_linear as tsl  # noqa: E402
from flashuq.ops.token_stats import TokenStats  # noqa: E402
from stats_cases import assert_close_stats, reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = dict(block_m=16, block_n=64, block_k=32, chunk=128)  # several tiles and chunks per row


def setup(rows=37, D=40, V=333, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, D, generator=g, dtype=torch.float64)
    W = torch.randn(V, D, generator=g, dtype=torch.float64) * (3 / D**0.5)
    b = torch.randn(V, generator=g, dtype=torch.float64)
    t = torch.randint(0, V, (rows,), generator=g)
    return (h.to(dtype).to(DEVICE), W.to(dtype).to(DEVICE), b.to(dtype).to(DEVICE), t.to(DEVICE))


def run(h, W, b, t, **kw):
    launch = {k: kw.pop(k) for k in list(kw) if k in SMALL}
    out = tsl.compute_fused(h, W, b, t, kw.pop("temperature", 1.0), **kw, **launch)
    return TokenStats(*out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("renyi", [False, True])
def test_fused_matches_reference(dtype, renyi):
    h, W, b, t = setup(dtype=dtype)
    got = run(h, W, b, t, renyi=renyi, temperature=0.8, **SMALL)
    ref = reference(F.linear(h.double(), W.double(), b.double()), t, temperature=0.8, renyi=renyi)
    # fp32: the logits themselves carry the matmul's rounding (~1e-6 relative), fp64 checks the arithmetic
    rtol = 1e-12 if dtype == torch.float64 else 1e-4
    assert_close_stats(got, ref, rtol=rtol, renyi=renyi)


def test_fused_scale_softcap_and_no_bias_no_tokens():
    h, W, _, _ = setup(seed=1, V=200)
    got = run(h, W, None, None, logit_scale=0.5, softcap=20.0, **SMALL)
    z = torch.tanh(F.linear(h.double(), W.double()) * 0.5 / 20.0) * 20.0
    assert_close_stats(got, reference(z), rtol=1e-4)


def test_fused_default_launch_and_determinism():
    h, W, b, t = setup(rows=5, D=64, V=1000, seed=2)
    a, b2 = run(h, W, b, t), run(h, W, b, t)
    for f, u, v in zip(a._fields, a, b2):
        if u is not None:
            assert torch.equal(u.nan_to_num(), v.nan_to_num()), f
    assert_close_stats(a, reference(F.linear(h.double(), W.double(), b.double()), t), rtol=1e-4)
