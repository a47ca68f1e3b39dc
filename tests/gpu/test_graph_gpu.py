"""The CUDA C++ graph kernel (one block per question, csrc/cuda/graph.cu) against the CPU path: the
same header code in fp64, so results agree to rounding; CUDA-graph capture; batch invariance.
Skipped without a GPU."""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

import flashuq as fuq  # noqa: E402
from flashuq import methods as M  # noqa: E402


def nli_like(Q, K, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 4, (Q, K), generator=g)
    same = (cls[:, :, None] == cls[:, None, :]).to(dtype)
    E = (0.85 * same + 0.1 * torch.rand(Q, K, K, generator=g, dtype=dtype)).clamp(0, 1)
    C = ((1 - same) * 0.7 * torch.rand(Q, K, K, generator=g, dtype=dtype)).clamp(0, 1 - E)
    return E, C


@pytest.mark.parametrize("K", [1, 2, 7, 20, 32, 33, 64])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cuda_matches_cpu(K, dtype):
    E, C = nli_like(200, K, seed=K, dtype=dtype)
    mask = torch.rand(200, K, generator=torch.Generator().manual_seed(1)) > 0.2
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for fn in (lambda e, c, m: M.eigv(e, sample_mask=m),
               lambda e, c, m: M.eccentricity(e, sample_mask=m, return_per_sample=True)[1],
               lambda e, c, m: M.eccentricity(e, sample_mask=m),
               lambda e, c, m: M.kernel_language_entropy(e, c, sample_mask=m),
               lambda e, c, m: fuq.sym_eig(e, sample_mask=m)[0]):
        cpu = fn(E, C, mask)
        gpu = fn(E.cuda(), C.cuda(), mask.cuda()).cpu()
        torch.testing.assert_close(gpu, cpu, equal_nan=True, **tol)


def test_eigenvectors_and_batch_invariance():
    E, _ = nli_like(500, 20, seed=3)
    vals, vecs = fuq.sym_eig(E.cuda(), eigenvectors=True)
    A = ((E + E.transpose(1, 2)) / 2).cuda()
    torch.testing.assert_close(vecs @ torch.diag_embed(vals) @ vecs.transpose(1, 2), A, rtol=0, atol=1e-12)
    one = M.eigv(E[17:18].cuda())
    assert torch.equal(one, M.eigv(E.cuda())[17:18])  # a question's result is independent of its batch


def test_cuda_graph_capture():
    E, _ = nli_like(64, 20, seed=5)
    E = E.cuda()
    counts = torch.full((64,), 20, dtype=torch.int32, device="cuda")
    ref = torch.ops.flashuq.graph_spectra(E, counts, 1, True, 0.9, 0.0)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        torch.ops.flashuq.graph_spectra(E, counts, 1, True, 0.9, 0.0)  # warm up (shared-memory opt-in)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = torch.ops.flashuq.graph_spectra(E, counts, 1, True, 0.9, 0.0)
    g.replay()
    torch.cuda.synchronize()
    for a, b in zip(out, ref):
        assert torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


def test_k_above_limit_raises():
    with pytest.raises(ValueError, match="W"):
        M.eigv(torch.rand(2, 65, 65, device="cuda"))


def test_inv_entropy_and_sample_methods_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(7)
    Q, N, r = 50, 6, 3
    sx = torch.rand(Q, N, N, generator=g, dtype=torch.float64)
    sy = torch.rand(Q, N * r, N * r, generator=g, dtype=torch.float64)
    keep = torch.stack([torch.arange(N) * r + torch.randint(0, r, (N,), generator=g) for _ in range(Q * 4)])
    keep = keep.reshape(Q, 4, N)
    cpu = M.inv_entropy_measures(sx, sy, keep=keep)           # the C++ kernel
    gpu = M.inv_entropy_measures(sx.cuda(), sy.cuda(), keep=keep.cuda())   # batched torch on the GPU
    for f, a, b in zip(cpu._fields, cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-12, atol=1e-14, equal_nan=True, msg=f)
    lp = torch.randn(Q, 8, generator=g, dtype=torch.float64)
    cls = torch.randint(0, 8, (Q, 8), generator=g)
    torch.testing.assert_close(M.semantic_entropy(lp.cuda(), cls.cuda()).cpu(), M.semantic_entropy(lp, cls))
