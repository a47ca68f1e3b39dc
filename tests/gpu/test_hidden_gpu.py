"""EigenScore on CUDA against the CPU: the fp64 Gram matrices on the device, their eigenvalues from the
CUDA graph kernel (K <= 64) or the CPU one (K > 64). Skipped without a GPU."""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

from flashuq import methods as M  # noqa: E402


@pytest.mark.parametrize("K", [1, 5, 20, 64, 70])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_eigenscore_cuda_matches_cpu(K, dtype):
    g = torch.Generator().manual_seed(K)
    Z = (torch.randn(50, K, 96, generator=g) * 4 + 2).to(dtype)
    mask = torch.rand(50, K, generator=g) > 0.25
    cpu = M.eigenscore(Z, sample_mask=mask)
    gpu = M.eigenscore(Z.cuda(), sample_mask=mask.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == cpu.dtype
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=tol, equal_nan=True)
