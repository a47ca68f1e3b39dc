"""The CUDA UQAC ops against the CPU path: the reduction (Triton, kernels/uqac_reduce.py), the
backtracking and the similarity filter (CUDA C++, one block per sequence, csrc/cuda/uqac.cu, the same
header code as the CPU), ragged batches, batch invariance, CUDA-graph capture. Skipped without a GPU."""

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

import flashuq as fuq  # noqa: E402
from flashuq.ops import uqac as U  # noqa: E402


def causal_attn(rng, L, H, R, I, quant=None):
    N = I + R
    z = rng.standard_normal((L, H, R, N))
    z[..., :, 0] += 2.0
    for r in range(R):
        z[..., r, I + r + 1:] = -np.inf
    a = np.exp(z - z.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    return np.round(a * quant) / quant if quant else a


def batch(rng, B, D=64, quant=None):
    Rm, Nm, Am = 0, 0, 0
    seqs = []
    for _ in range(B):
        R, I = int(rng.integers(4, 120)), int(rng.integers(0, 500))
        a = causal_attn(rng, 1, 1, R, I, quant)[0, 0]
        n = int(rng.integers(0, 5))
        start = int(rng.integers(max(R - 10, 1), R - n + 1)) if n else 0
        stop = rng.random(I + R) < 0.3
        stop[:I] = True
        seqs.append((a, np.arange(start, start + n) - 1, stop, rng.standard_normal((R, D))))
        Rm, Nm, Am = max(Rm, R), max(Nm, I + R), max(Am, n)
    attn, ans = np.zeros((B, Rm, Nm)), np.zeros((B, Am), dtype=np.int64)
    stop, h = np.ones((B, Nm), dtype=bool), np.zeros((B, Rm, D))
    lens = np.zeros((3, B), dtype=np.int64)
    for b, (a, an, st, hh) in enumerate(seqs):
        R, N = a.shape
        attn[b, :R, :N], ans[b, :len(an)], stop[b, :N], h[b, :R] = a, an, st, hh
        lens[:, b] = (R, N, len(an))
    return [torch.from_numpy(x) for x in (attn, ans, stop, h, lens)]


@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_reduce_cuda_matches_cpu(dtype, reduction):
    rng = np.random.default_rng(0)
    a = torch.from_numpy(np.stack([causal_attn(rng, 4, 8, 60, 200) for _ in range(2)])).to(dtype)
    cpu = fuq.uqac_reduce_attention(a, n_heads=16, reduction=reduction)
    gpu = fuq.uqac_reduce_attention(a.cuda(), n_heads=16, reduction=reduction)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(gpu.cpu(), cpu, **tol)


@pytest.mark.parametrize("quant", [None, 32])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_chains_cuda_match_cpu(dtype, quant):
    rng = np.random.default_rng(1)
    attn, ans, stop, h, lens = batch(rng, 40, quant=quant)
    kw = dict(response_len=lens[0], n_tokens=lens[1], ans_len=lens[2], k=6, similarity_threshold=0.0,
              max_steps=100)
    cpu = U.uqac_chain_batched(attn.to(dtype), ans, stop, h_last=h.to(dtype), **kw)
    kw = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in kw.items()}
    gpu = U.uqac_chain_batched(attn.to(dtype).cuda(), ans.cuda(), stop.cuda(), h_last=h.to(dtype).cuda(), **kw)
    assert torch.equal(gpu.lengths.cpu(), cpu.lengths)
    assert torch.equal(gpu.chain.cpu(), cpu.chain)  # the same header code, the same fp arithmetic order
    assert torch.equal(gpu.scores.cpu(), cpu.scores)
    assert torch.equal(gpu.keep_lengths.cpu(), cpu.keep_lengths)  # well-separated similarities
    assert torch.equal(gpu.keep.cpu(), cpu.keep)


def test_single_sequence_ops_and_batch_invariance():
    rng = np.random.default_rng(2)
    attn, ans, stop, h, lens = batch(rng, 8)
    b = 3
    R, N, A = (int(x) for x in lens[:, b])
    a, an, st, hh = attn[b, :R, :N], ans[b, :A], stop[b, :N], h[b, :R]
    c_cpu, s_cpu = fuq.uqac_backtrack(a, an, st)
    c_gpu, s_gpu = fuq.uqac_backtrack(a.cuda(), an.cuda(), st.cuda())
    assert torch.equal(c_gpu.cpu(), c_cpu) and torch.equal(s_gpu.cpu(), s_cpu)
    k_cpu = fuq.uqac_similarity_filter(hh, c_cpu, an)
    k_gpu = fuq.uqac_similarity_filter(hh.cuda(), c_gpu, an.cuda())
    assert torch.equal(k_gpu.cpu(), k_cpu)
    full = U.uqac_chain_batched(attn.cuda(), ans.cuda(), stop.cuda(), response_len=lens[0].cuda(),
                                n_tokens=lens[1].cuda(), ans_len=lens[2].cuda(), h_last=h.cuda())
    n = int(full.lengths[b])
    assert torch.equal(full.chain[b, :n].cpu(), c_cpu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_similarity_huge_norms_on_cuda(dtype):
    # norms above ~1.8e19 overflow the fp32 warp sums: those pairs are summed again in fp64, as on the CPU
    from flashuq import reference as ref
    rng = np.random.default_rng(21)
    ans = np.array([8, 9, 10], dtype=np.int64)
    chain = np.concatenate([np.arange(-1, 8), ans]).astype(np.int64)
    for scale in (1e20, 1e30, 3e37):
        h = torch.from_numpy(rng.standard_normal((12, 70)) * scale).to(dtype)
        h[3] = torch.from_numpy(rng.standard_normal(70)).to(dtype)
        for k, thr in ((10, 0.0), (3, -0.3)):
            args = (torch.from_numpy(chain), torch.from_numpy(ans))
            got = fuq.uqac_similarity_filter(h.cuda(), *(x.cuda() for x in args), k=k, threshold=thr).cpu()
            want = ref.uqac_similarity_filter_ref(h.double().numpy(), chain, ans, k=k, threshold=thr)
            np.testing.assert_array_equal(got.numpy(), want)
            assert torch.equal(got, fuq.uqac_similarity_filter(h, *args, k=k, threshold=thr))


def test_long_rows_and_errors_on_cuda():
    rng = np.random.default_rng(3)
    a = torch.from_numpy(causal_attn(rng, 1, 1, 300, 3800)[0, 0])  # Ntok = 4100: a 8192-slot sort
    stop = torch.from_numpy(rng.random(4100) < 0.5)
    stop[:3800] = True
    ans = torch.arange(290, 296)
    c_cpu, s_cpu = fuq.uqac_backtrack(a, ans, stop)
    c_gpu, s_gpu = fuq.uqac_backtrack(a.cuda(), ans.cuda(), stop.cuda())
    assert torch.equal(c_gpu.cpu(), c_cpu) and torch.equal(s_gpu.cpu(), s_cpu)
    with pytest.raises(ValueError, match="ans_src"):
        fuq.uqac_backtrack(a.cuda(), torch.tensor([299]).cuda(), stop.cuda())


def test_cuda_graph_capture():
    rng = np.random.default_rng(4)
    attn, ans, stop, h, lens = batch(rng, 6)
    args = [x.cuda() for x in (attn, stop.to(torch.uint8), ans, lens[0], lens[1], lens[2], lens[2] + 5)]
    C = ans.shape[1] + 64
    ref = torch.ops.flashuq.uqac_backtrack(*args, 3, 0.5, 20, C)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        torch.ops.flashuq.uqac_backtrack(*args, 3, 0.5, 20, C)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = torch.ops.flashuq.uqac_backtrack(*args, 3, 0.5, 20, C)
    g.replay()
    torch.cuda.synchronize()
    for x, y in zip(out, ref):
        assert torch.equal(x, y)
