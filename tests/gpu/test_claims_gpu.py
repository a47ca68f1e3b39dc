"""BoostedProb, claim_reduce and the aggregation patterns on CUDA against the CPU (the CPU paths are
tested against the reference codes). Skipped without a GPU."""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

import flashuq as fuq  # noqa: E402
from flashuq import methods as M  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_boostedprob_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 16, 32000, generator=g)
    z[:, :, :3] += torch.rand(4, 16, 3, generator=g) * 8 + 6
    z[:2, :, 10:50] += 12.0  # a broad cluster: the fused top 16 cannot decide these steps (the redo path)
    z = z.to(dtype)
    y = torch.randint(0, 4, (4, 16), generator=g)
    mask = torch.rand(4, 16, generator=g) > 0.2
    cpu = M.boostedprob_token_scores(z, y)
    gpu = M.boostedprob_token_scores(z.cuda(), y.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == cpu.dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=tol)
    torch.testing.assert_close(M.boostedprob(z.cuda(), y.cuda(), mask.cuda()).cpu(), M.boostedprob(z, y, mask),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min", "logsumexp"])
def test_claim_reduce_and_aggregations_cuda_match_cpu(op):
    g = torch.Generator().manual_seed(1)
    v = torch.randn(6, 40, generator=g, dtype=torch.float64)
    aligned = [[list(range(b, 40, 3)), [5, 1, 9]] for b in range(6)]
    cpu = fuq.claim_reduce(v, fuq.claims_from_lists(aligned), op=op)
    gpu = fuq.claim_reduce(v.cuda(), fuq.claims_from_lists(aligned), op=op)   # CPU claims follow the values
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-12)
    mask = torch.arange(40)[None, :] < torch.tensor([40, 30, 9, 3, 1, 0])[:, None]
    for fn, kw in ((fuq.max_window_mean, {"window": 10}), (fuq.thresholded_mean, {"threshold": 0.3})):
        torch.testing.assert_close(fn(v.cuda(), mask.cuda(), **kw).cpu(), fn(v, mask, **kw), rtol=1e-12, atol=1e-12,
                                   equal_nan=True)
    S = torch.rand(3, 4, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fuq.max_then_mean(S.cuda()).cpu(), fuq.max_then_mean(S), rtol=0, atol=0)
