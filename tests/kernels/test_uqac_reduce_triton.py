"""The Triton UQAC head/layer reduction (kernels/uqac_reduce.py; CUDA when present, else the
interpreter on CPU tensors) against a float64 numpy transcription of docs/methods.md#uqac-reduction and
against flashuq.reference.uqac_reduce_attention_ref."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from flashuq import reference  # noqa: E402
from flashuq.kernels import uqac_reduce as U  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
CAL = np.array(reference.UQAC_CALIBRATION)  # checked against the UQAC repository in tests/test_reference_attention.py


def numpy_reduce(attn, n_heads, reduction):
    """docs/methods.md#uqac-reduction in float64, written independently of the kernel: returns the reduced
    rows [..., R, Ntok] and the selected flat head indices [..., R, n_heads] (ascending entropy,
    ties -> lower index, i.e. a stable argsort)."""
    a = np.array(attn, dtype=np.float64)
    *lead, L, H, R, N = a.shape
    I = N - R
    a = a.reshape(-1, L * H, R, N).copy()
    for r in range(R):
        a[:, :, r, I + r] = 0.0
    a[..., 0] = 0.0
    for r in range(R):
        for c in range(10):
            j = I + r - 10 + c
            if j >= 0:
                a[:, :, r, j] *= CAL[c]
    a = a / (a.sum(-1, keepdims=True) + 1e-12)
    ent = -(a * np.log(a + 1e-12)).sum(-1)  # [B, L*H, R]
    idx = np.argsort(ent, axis=1, kind="stable")[:, :n_heads]  # [B, k, R]
    sel = np.take_along_axis(a, idx[..., None], axis=1)
    red = sel.max(1) if reduction == "max" else sel.mean(1)
    return red.reshape(*lead, R, N), idx.transpose(0, 2, 1).reshape(*lead, R, n_heads)


def causal_attention(lead, L, H, R, N, seed=0, dup=()):
    """Random causal softmax attention, response rows [*lead, L, H, R, N]; dup = ((src, dst), ...)
    flat head indices whose rows are copied (exact entropy ties)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*lead, L, H, N, N, generator=g, dtype=torch.float64) * 2.0
    causal = torch.triu(torch.ones(N, N, dtype=torch.bool), 1)
    a = logits.masked_fill(causal, -torch.inf).softmax(-1)[..., N - R:, :].contiguous()
    flat = a.reshape(*lead, L * H, R, N)
    for src, dst in dup:
        flat[..., dst, :, :] = flat[..., src, :, :]
    return flat.reshape(*lead, L, H, R, N).contiguous()


def run(x, n_heads, reduction, **kw):
    out, sel = U.uqac_reduce_attention(x.to(DEVICE), n_heads, reduction, return_selected=True, **kw)
    return out.cpu(), sel.cpu()


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-7)


SMALL = dict(block_n=8, s_tile=4, k_tile=2)  # Ntok not a multiple of BLOCK_N, several tiles everywhere


@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_numpy(dtype, reduction):
    # B = 2, L*H = 6 (a partial S tile), R = 5 < 10 (negative calibration columns), Ntok = 13
    # (two BLOCK_N = 8 chunks, the second partial); heads 1 and 4 are copies (exact entropy ties)
    x = causal_attention((2,), 2, 3, 5, 13, seed=1, dup=((1, 4),)).to(dtype)
    for n_heads in (1, 4, 6):
        got, sel = run(x, n_heads, reduction, **SMALL)
        want, want_sel = numpy_reduce(x.double().numpy(), n_heads, reduction)
        assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert got.shape == (2, 5, 13) and sel.shape == (2, 5, n_heads)
        np.testing.assert_array_equal(sel.numpy(), want_sel)
        np.testing.assert_allclose(got.double().numpy(), want, **tol(dtype))


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_ties_pick_lower_index(reduction):
    # every head of query rows is one of two rows; the lowest-entropy row sits at heads 2, 3 and 5:
    # n_heads = 2 must take heads 2 and 3 (lower index first), never 5
    N, R = 12, 4
    x = causal_attention((), 2, 3, R, N, seed=2)
    flat = x.reshape(6, R, N)
    peaked = torch.zeros(R, N, dtype=torch.float64)
    for r in range(R):
        peaked[r, 1] = 0.9
        peaked[r, 2: N - R + r + 1] = 0.1 / (N - R + r - 1)
    for s in (2, 3, 5):
        flat[s] = peaked
    for n_heads in (1, 2, 3):
        got, sel = run(x, n_heads, reduction, **SMALL)
        assert sel.tolist() == [[2, 3, 5][:n_heads]] * R
        want, want_sel = numpy_reduce(x.numpy(), n_heads, reduction)
        np.testing.assert_array_equal(sel.numpy(), want_sel)
        np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=2e-7)


@pytest.mark.parametrize("shape", [((), 1, 2, 1, 1), ((), 2, 2, 3, 3), ((2, 1), 1, 3, 2, 7), ((1,), 2, 2, 11, 13)],
                         ids=["R=Ntok=1", "I=0", "lead2", "R>10"])
def test_edge_shapes(shape):
    # float64: with I = 0 some rows keep a single key, and their entropies differ only by rounding
    lead, L, H, R, N = shape
    x = causal_attention(lead, L, H, R, N, seed=3)
    for n_heads in sorted({1, L * H}):
        for reduction in ("max", "mean"):
            got, sel = run(x, n_heads, reduction, **SMALL)
            want, want_sel = numpy_reduce(x.double().numpy(), n_heads, reduction)
            assert got.shape == (*lead, R, N)
            np.testing.assert_array_equal(sel.numpy(), want_sel)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)


def test_default_blocks_and_out():
    # the launcher's own block heuristics (one chunk), an out= tensor, a non-contiguous input
    x = causal_attention((2,), 3, 2, 6, 21, seed=4).float()
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # same values, non-contiguous
    out = torch.full((2, 6, 21), 7.0, device=DEVICE)
    res = U.uqac_reduce_attention(xt.to(DEVICE), 4, "max", out=out)
    assert res is out
    want, _ = numpy_reduce(x.double().numpy(), 4, "max")
    np.testing.assert_allclose(out.cpu().numpy(), want, rtol=2e-5, atol=2e-7)


def test_deterministic():
    x = causal_attention((2,), 2, 3, 5, 13, seed=5).to(DEVICE, torch.bfloat16)
    a = U.uqac_reduce_attention(x, 3, "mean", **SMALL)
    b = U.uqac_reduce_attention(x, 3, "mean", **SMALL)
    assert torch.equal(a, b)


def test_rejects_bad_arguments():
    x = causal_attention((), 1, 2, 3, 5, seed=6).float().to(DEVICE)
    with pytest.raises(ValueError):
        U.uqac_reduce_attention(x, 3, "max")  # n_heads > L*H
    with pytest.raises(ValueError):
        U.uqac_reduce_attention(x, 0, "max")
    with pytest.raises(ValueError):
        U.uqac_reduce_attention(x, 1, "sum")
    with pytest.raises(ValueError):
        U.uqac_reduce_attention(x[0], 1, "max")  # not [..., L, H, R, Ntok]
    with pytest.raises(ValueError):
        U.uqac_reduce_attention(x.transpose(-1, -2), 1, "max")  # Ntok < R
    with pytest.raises(ValueError):
        U.uqac_reduce_attention(x, 1, "max", out=torch.empty(3, 5, dtype=torch.float64, device=DEVICE))


def test_empty():
    x = torch.zeros(0, 2, 2, 3, 5, device=DEVICE)
    assert U.uqac_reduce_attention(x, 2, "max").shape == (0, 3, 5)
    assert U.uqac_reduce_attention(torch.zeros(2, 2, 0, 4, device=DEVICE), 2, "max").shape == (0, 4)


@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_matches_reference(dtype, reduction):
    x = causal_attention((2,), 2, 3, 5, 13, seed=7, dup=((0, 5),)).to(dtype)
    for n_heads in (2, 6):
        got = U.uqac_reduce_attention(x.to(DEVICE), n_heads, reduction, **SMALL).cpu()
        want = np.stack([reference.uqac_reduce_attention_ref(xb, n_heads=n_heads, reduction=reduction)
                         for xb in x.double().numpy()])  # the reference takes one sequence
        np.testing.assert_allclose(got.double().numpy(), want, rtol=2e-5, atol=2e-7)
        np.testing.assert_allclose(want, numpy_reduce(x.double().numpy(), n_heads, reduction)[0],
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_matches_cpu_op(dtype, reduction):
    # the C++ CPU op behind flashuq.uqac_reduce_attention (CUDA tensors come to this kernel)
    import flashuq

    x = causal_attention((2,), 3, 2, 7, 15, seed=8, dup=((2, 3),)).to(dtype)
    for n_heads in (1, 6):
        got = U.uqac_reduce_attention(x.to(DEVICE), n_heads, reduction, **SMALL).cpu()
        want = flashuq.uqac_reduce_attention(x, n_heads=n_heads, reduction=reduction)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, **tol(dtype))


def test_non_finite_inputs_match_cpu_op():
    # inf / NaN in the zeroed columns (column 0, the diagonal) must not matter; a NaN elsewhere makes that
    # head's entropy NaN (ranked after every number and +inf) and, if selected, propagates through "max"
    # exactly as the CPU kernel and torch.max do
    import flashuq

    x = causal_attention((), 2, 3, 6, 14, seed=11).to(torch.float32)
    I = 14 - 6
    x[0, 0, :, 0] = torch.inf                    # column 0 of one head: zeroed, harmless
    x[0, 1, 2, I + 2] = torch.nan                # a diagonal entry: zeroed, harmless
    x[1, 2, 4, 3] = torch.nan                    # head 5, row 4: entropy NaN, selected only when n_heads = 6
    for n_heads in (1, 5, 6):
        for reduction in ("max", "mean"):
            got = U.uqac_reduce_attention(x.to(DEVICE), n_heads, reduction, **SMALL).cpu()
            want = flashuq.uqac_reduce_attention(x, n_heads=n_heads, reduction=reduction)
            torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-7, equal_nan=True)
            assert torch.equal(got.isnan(), want.isnan())
            assert got[:4].isfinite().all() and got[5].isfinite().all()
            assert got[4].isnan().all() == (n_heads == 6)


COMPILE = textwrap.dedent(
    """
    import json, re
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import flashuq.kernels.uqac_reduce as u

    report = []
    for x, f, acc, mean in [("*bf16", "*fp32", tl.float32, False), ("*fp16", "*fp32", tl.float32, True),
                            ("*fp32", "*fp32", tl.float32, False), ("*fp64", "*fp64", tl.float64, True)]:
        sig = {"x_ptr": x, "out_ptr": f, "ws_ptr": f, "sel_ptr": "*i64", "consts_ptr": f, "R": "i32", "Ntok": "i32",
               "S": "i32", "n_heads": "i32", **{c: "constexpr" for c in
               ("MEAN", "BLOCK_N", "S_TILE", "S_BLOCK", "K_TILE", "K_BLOCK", "ACC")}}
        const = {"MEAN": mean, "BLOCK_N": 1024, "S_TILE": 4, "S_BLOCK": 512, "K_TILE": 4, "K_BLOCK": 16, "ACC": acc}
        out = triton.compile(ASTSource(fn=u.uqac_reduce_kernel, signature=sig, constexprs=const),
                             target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
        ptx = out.asm["ptx"]
        report.append({"x": x, "atomics": len(re.findall(r"\\batom\\.|\\bred\\.", ptx)),
                       "barriers": len(re.findall(r"\\bbar\\.sync", ptx)), "bytes": len(ptx)})
    print("REPORT" + json.dumps(report))
    """
)


def test_compiles_for_sm90_without_atomics():
    # what the interpreter cannot check: the kernel lowers for Hopper, with no atomics (determinism)
    # and the barriers that order the workspace writes before their reads
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True, timeout=600,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.split("REPORT", 1)[1])
    assert len(report) == 4
    for r in report:
        assert r["atomics"] == 0 and r["barriers"] >= 2 and r["bytes"] > 1000, r
