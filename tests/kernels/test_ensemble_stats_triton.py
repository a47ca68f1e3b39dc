"""The Triton ensemble-statistics kernel: on a CUDA device when there is one, otherwise through the
Triton interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 before any import).

Shapes are interpreter-sized (docs/numerics.md#triton-interpreter): few positions, V <= 4096, small member counts.
"""

import math

import pytest
import torch

pytest.importorskip("triton")

from flashuq.ops import ensemble_stats as es_mod  # noqa: E402
from flashuq.reference import ensemble_stats as reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FIELDS = es_mod.EnsembleStats._fields
GOLDEN_P = [[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.9, 0.05, 0.05]]
GOLDEN = dict(total=0.7881169759375681, aleatoric=0.7131882121066063, epistemic=0.07492876383096181,
              epkl=0.166262760762798, rmi=0.09133399693183619)


def run(x, member_ll=None, *, dim=0, temperature=1.0, **launch):
    x = x.to(DEVICE)
    ll = None if member_ll is None else member_ll.to(DEVICE)
    dim = dim % x.dim()
    return es_mod.EnsembleStats(*(t.cpu() for t in es_mod.compute(x, ll, dim, temperature, backend="triton",
                                                                  **launch)))


def make(M, lead, V, *, dtype=torch.float32, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(M, *lead, V, generator=g, dtype=torch.float64) * scale).to(dtype)


def assert_close(got, want, *, rtol, atol):
    for f in FIELDS:
        torch.testing.assert_close(getattr(got, f).double(), getattr(want, f).double(), rtol=rtol, atol=atol,
                                   equal_nan=True, msg=f)


def tols(dtype):
    return dict(rtol=1e-12, atol=1e-13) if dtype == torch.float64 else dict(rtol=3e-6, atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)], ids=str)
def test_golden(dtype, tol):
    x = torch.tensor(GOLDEN_P, dtype=torch.float64).log().to(dtype)
    got = run(x)
    for f, want in GOLDEN.items():
        assert abs(getattr(got, f).item() - want) <= tol * abs(want), f


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("M", [1, 3, 4])
def test_matches_reference_across_blocks(dtype, M):
    V = 2 * 1024 + 5  # three blocks, the last one short
    x = make(M, (2, 2), V, dtype=dtype, seed=M)
    got = run(x, block=1024)
    assert got.total.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close(got, reference(x), **tols(dtype))
    assert all(bool((getattr(got, f) >= 0).all()) for f in FIELDS)


@pytest.mark.parametrize("V", [1, 7, 4096])
def test_default_launch_and_small_vocabularies(V):
    x = make(5, (3,), V, seed=V)
    assert_close(run(x), reference(x), **tols(torch.float32))


def test_member_axis_strides_and_temperature():
    x0 = make(3, (4, 6), 300, dtype=torch.float64)
    x = x0.movedim(0, 2)[:, ::2]  # [4, 3, M, V], members on dim 2, strided positions
    assert_close(run(x, dim=2, temperature=0.6), reference(x, dim=2, temperature=0.6), **tols(torch.float64))
    assert_close(run(x, dim=-2, block=128), reference(x, dim=-2), **tols(torch.float64))


def test_ep_mode():
    x = make(3, (2, 3), 500, seed=4)
    ll = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(5)) * 2
    ll[2, 0, 1] = -math.inf  # a member without weight
    assert_close(run(x, ll, block=256), reference(x, mode="ep", member_ll=ll), **tols(torch.float32))
    assert_close(run(x, torch.zeros(3, 2, 3)), run(x), rtol=1e-6, atol=1e-7)


def test_agreeing_members_keep_epistemic_digits():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(1, 3, 2000, generator=g, dtype=torch.float64) * 2
    x = (base + 1e-3 * torch.randn(4, 3, 2000, generator=g, dtype=torch.float64)).float()
    got = run(x)
    want = reference(x)  # MI ~ 4e-7: fp32 TU - AU would have no digit left
    torch.testing.assert_close(got.epistemic.double(), want.epistemic, rtol=1e-3, atol=0)
    torch.testing.assert_close(got.rmi.double(), want.rmi, rtol=1e-3, atol=0)


def test_infinities_and_nan_isolation():
    x = make(3, (6,), 64, seed=2)
    x[:, 0, 40:] = -math.inf          # shared mask: finite
    x[1, 1, 5] = -math.inf            # one member gives 0: EPKL, RMI = +inf
    x[2, 2, 7] = math.nan             # NaN: position 2 NaN
    x[0, 3, 9] = math.inf             # +inf: position 3 NaN
    x[1, 4, :] = -math.inf            # a member with no vocabulary: position 4 NaN
    got = run(x, block=32)
    want = reference(x)
    assert got.epkl[1].item() == math.inf and got.rmi[1].item() == math.inf
    assert math.isfinite(got.epistemic[1].item())
    for f in FIELDS:
        u = getattr(got, f)
        assert all(math.isnan(u[i].item()) for i in (2, 3, 4)), f
        assert math.isfinite(u[0].item()) and math.isfinite(u[5].item()), f
    assert_close(got, want, **tols(torch.float32))


def test_position_result_independent_of_batch():
    x = make(4, (5,), 700, dtype=torch.bfloat16, seed=8)
    batch = run(x)
    alone = run(x[:, 3:4])
    for f in FIELDS:
        assert torch.equal(getattr(alone, f)[0], getattr(batch, f)[3]), f
