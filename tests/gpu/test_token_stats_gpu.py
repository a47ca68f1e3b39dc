"""token_stats on a real CUDA device: the Triton kernels at production launch settings, the CUDA C++
kernel, CUDA graphs and torch.compile. Skipped on machines without a GPU (CI runs the same Triton
kernels through the interpreter in tests/kernels)."""

import math

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

import flashuq as fuq  # noqa: E402
from flashuq.ops import token_stats as ts_mod  # noqa: E402
from stats_cases import assert_close_stats, make_logits, reference  # noqa: E402


def _both_paths(x, t, topk):
    rows = ts_mod.TokenStats(*ts_mod.compute(x, t, 1.0, topk, backend="triton", split=False, renyi=True))
    split = ts_mod.TokenStats(*ts_mod.compute(x, t, 1.0, topk, backend="triton", split=True, renyi=True))
    return rows, split


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("kind", ["normal", "peaked", "offset_minus80", "masked", "ties", "near_uniform"])
def test_triton_matches_reference(kind, dtype):
    V = 128256
    x = make_logits(kind, 16, V, dtype=dtype, seed=3).cuda()
    t = torch.randint(0, V, (16,), device="cuda")
    rows, split = _both_paths(x, t, 20)
    ref = reference(x, t, topk=20, renyi=True)
    assert_close_stats(rows, ref, renyi=True)
    assert_close_stats(split, ref, renyi=True)
    for f, a, b in zip(rows._fields, rows, split):
        assert torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)), f"{f}: split and row paths differ"


def test_public_op_on_cuda_and_batch_invariance():
    x = make_logits("normal", 300, 32000, dtype=torch.bfloat16).cuda()
    full = fuq.token_stats(x, topk=5, renyi=True)      # row path (300 rows)
    one = fuq.token_stats(x[7:8], topk=5, renyi=True)  # split path (1 row)
    for f, a, b in zip(full._fields, full, one):
        assert torch.equal(a[7:8], b), f
    assert_close_stats(full, reference(x, topk=5, renyi=True), renyi=True)


def test_large_batch_invariants_and_determinism():
    x = (torch.randn(4096, 128256, device="cuda") * 3).bfloat16()
    t = torch.randint(0, 128256, (4096,), device="cuda")
    a = fuq.token_stats(x, t, renyi=True)
    b = fuq.token_stats(x, t, renyi=True)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert (a.logprob <= 0).all() and (a.entropy >= 0).all() and (a.entropy <= math.log(128256) + 1e-4).all()
    idx = torch.arange(0, 4096, 257)
    assert_close_stats(fuq.TokenStats(*(f[idx] for f in a)), reference(x[idx], t[idx], renyi=True), renyi=True)


def test_cuda_graph_capture():
    x = make_logits("normal", 8, 128256).cuda()
    t = torch.randint(0, 128256, (8,), device="cuda")
    fuq.token_stats(x, t, topk=4)  # compile the kernels outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fuq.token_stats(x, t, topk=4)
    x.copy_(make_logits("peaked", 8, 128256, seed=5).cuda())
    g.replay()
    torch.cuda.synchronize()
    assert_close_stats(out, reference(x, t, topk=4))


def test_torch_compile_cuda():
    x = make_logits("normal", 4, 32000, dtype=torch.bfloat16).cuda()

    @torch.compile(fullgraph=True)
    def f(z):
        s = fuq.token_stats(z)
        return s.entropy * 2 + s.max_logprob

    want = fuq.token_stats(x)
    torch.testing.assert_close(f(x), want.entropy * 2 + want.max_logprob)


def test_64bit_offsets_cuda():
    V = 128256
    rows = 2**31 // V + 2                       # more than 2^31 elements in all
    x = torch.empty(rows, V, dtype=torch.bfloat16, device="cuda")
    x.normal_()
    idx = torch.tensor([0, rows // 2, rows - 1])
    got = fuq.token_stats(x, topk=3, renyi=True)
    assert_close_stats(fuq.TokenStats(*(f[idx.cuda()] for f in got)), reference(x[idx.cuda()], topk=3, renyi=True),
                       renyi=True)


def test_decode_step_compiles_and_replays_in_a_cuda_graph():
    # a user's decode step: the head fused into the statistics, captured once and replayed
    import torch.nn.functional as F

    g = torch.Generator(device="cuda").manual_seed(0)
    W = torch.randn(32000, 256, device="cuda", generator=g, dtype=torch.bfloat16) / 16
    h = torch.randn(8, 256, device="cuda", generator=g, dtype=torch.bfloat16)
    t = torch.randint(0, 32000, (8,), device="cuda", generator=g)

    def step(hidden, tokens):
        s = fuq.token_stats_linear(hidden, W, tokens, renyi=True)
        return s.logprob, s.entropy, s.renyi_term

    want = step(h, t)
    compiled = torch.compile(step, fullgraph=True)
    for a, b in zip(compiled(h, t), want):
        torch.testing.assert_close(a, b)
    # the fused path keeps fp32 logits (F.linear in bf16 would round them to bf16): compare with those
    ref = fuq.token_stats(F.linear(h.float(), W.float()), t, renyi=True)
    torch.testing.assert_close(want[0], ref.logprob, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(want[1], ref.entropy, rtol=1e-4, atol=1e-4)
    static_h, static_t = h.clone(), t.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step(static_h, static_t)  # warm up on the side stream before capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(static_h, static_t)
    h2 = torch.randn(8, 256, device="cuda", generator=g, dtype=torch.bfloat16)
    static_h.copy_(h2)
    graph.replay()
    ref = fuq.token_stats(F.linear(h2.float(), W.float()), t, renyi=True)
    torch.testing.assert_close(out[0], ref.logprob, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[1], ref.entropy, rtol=1e-4, atol=1e-4)
