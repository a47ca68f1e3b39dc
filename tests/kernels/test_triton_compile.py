"""Compile the Triton kernels for a Hopper GPU (sm_90) without one: catches what the interpreter
cannot (constexpr globals, loop-carried types, while loops in compiled mode, libdevice calls) and
checks the PTX for atomics, which the determinism contract forbids."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import re, json
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import flashuq.kernels.token_stats as k

    outs = ["lse_ptr", "maxlp_ptr", "lp_ptr", "ent_ptr", "margin_ptr", "coll_ptr", "kurt_ptr", "sc_ptr"]
    def rows_sig(x, f):
        return {"x_ptr": x, "n1": "i32", "s0": "i64", "s1": "i64", "V": "i32", "tok_ptr": "*i64", "inv_temp_hi": "fp32", "inv_temp_lo": "fp32",
                **{n: f for n in outs}, "argmax_ptr": "*i64", "tkv_ptr": f, "tki_ptr": "*i64", "rt_ptr": f, "fr_ptr": f,
                "CHUNK": "i32"}
    def ws(f):
        return {"ws_f_ptr": f, "ws_i_ptr": "*i64", "ws_tv_ptr": f, "ws_ti_ptr": "*i64", "n_chunks": "i32"}
    cases = []
    for x, f, acc, K, tok, frac in [("*bf16", "*fp32", tl.float32, 8, True, True),
                                    ("*fp32", "*fp32", tl.float32, 0, False, False),
                                    ("*fp64", "*fp64", tl.float64, 3, True, True)]:
        c = {"K": K, "KP": triton.next_power_of_2(max(K, 1)), "ACC": acc, "FRAC": frac}
        sig = {**rows_sig(x, f), "BLOCK": "constexpr", "K": "constexpr", "KP": "constexpr",
               "HAS_TOKENS": "constexpr", "ACC": "constexpr", "PRECISE": "constexpr", "FRAC": "constexpr"}
        cases.append((k.token_stats_rows_kernel, sig, {**c, "BLOCK": 2048, "HAS_TOKENS": tok, "PRECISE": True}))
        sig = {"x_ptr": x, "n1": "i32", "s0": "i64", "s1": "i64", "V": "i32", "inv_temp_hi": "fp32", "inv_temp_lo": "fp32", **ws(f),
               "CHUNK": "i32", "BLOCK": "constexpr", "K": "constexpr", "KP": "constexpr", "ACC": "constexpr",
               "FRAC": "constexpr"}
        cases.append((k.token_stats_split_kernel, sig, {**c, "BLOCK": 2048}))
        sig = {"x_ptr": x, "n1": "i32", "s0": "i64", "s1": "i64", "V": "i32", "tok_ptr": "*i64", "inv_temp_hi": "fp32", "inv_temp_lo": "fp32",
               **ws(f), **{n: f for n in outs}, "argmax_ptr": "*i64", "tkv_ptr": f, "tki_ptr": "*i64",
               "rt_ptr": f, "fr_ptr": f, "K": "constexpr", "KP": "constexpr", "HAS_TOKENS": "constexpr",
               "ACC": "constexpr", "PRECISE": "constexpr", "FRAC": "constexpr"}
        cases.append((k.token_stats_merge_kernel, sig, {**c, "HAS_TOKENS": tok, "PRECISE": True}))
    import flashuq.kernels.masked_reduce as mr
    msig = {"v_ptr": "*fp32", "mask_ptr": "*u8", "w_ptr": "*fp32", "cu_ptr": "*i64", "out_ptr": "*fp32", "T": "i32",
            "OP": "constexpr", "HAS_MASK": "constexpr", "HAS_W": "constexpr", "HAS_CU": "constexpr",
            "BLOCK": "constexpr", "ACC": "constexpr"}
    for op in range(5):
        cases.append((mr.masked_reduce_kernel, msig, {"OP": op, "HAS_MASK": True, "HAS_W": op != 2 and op != 3,
                                                        "HAS_CU": False, "BLOCK": 1024, "ACC": tl.float32}))
    cases.append((mr.masked_reduce_kernel, msig, {"OP": 4, "HAS_MASK": False, "HAS_W": False, "HAS_CU": True,
                                                    "BLOCK": 1024, "ACC": tl.float64}))
    import flashuq.kernels.masked_quantile as mq
    qsig = {"v_ptr": "*fp32", "mask_ptr": "*u8", "cu_ptr": "*i64", "q_ptr": "*fp64", "out_ptr": "*fp32", "T": "i32",
            "NQ": "i32", "HAS_MASK": "constexpr", "HAS_CU": "constexpr", "BLOCK": "constexpr", "ACC": "constexpr"}
    cases.append((mq.masked_quantile_kernel, qsig, {"HAS_MASK": True, "HAS_CU": False, "BLOCK": 1024,
                                                     "ACC": tl.float32}))
    cases.append((mq.masked_quantile_kernel, {**qsig, "v_ptr": "*fp64", "out_ptr": "*fp64"},
                  {"HAS_MASK": False, "HAS_CU": True, "BLOCK": 4096, "ACC": tl.float64}))
    import flashuq.kernels.ensemble_stats as es
    for x, f, acc, mp, nterms in [("*bf16", "*fp32", tl.float32, 4, 7), ("*fp32", "*fp32", tl.float32, 8, 7),
                                  ("*fp64", "*fp64", tl.float64, 4, 14)]:
        esig = {"x_ptr": x, "n1": "i32", "s0": "i64", "s1": "i64", "sm": "i64", "M": "i32", "V": "i32",
                "lw_ptr": f, "lw_stride": "i32", "inv_temp_hi": "fp32", "inv_temp_lo": "fp32",
                **{n: f for n in ["tu_ptr", "au_ptr", "mi_ptr", "epkl_ptr", "rmi_ptr"]},
                "BLOCK": "constexpr", "MP": "constexpr", "NTERMS": "constexpr", "ACC": "constexpr",
                "PRECISE": "constexpr"}
        cases.append((es.ensemble_stats_kernel, esig, {"BLOCK": 4096 // mp, "MP": mp, "NTERMS": nterms, "ACC": acc,
                                                      "PRECISE": True}))
    import flashuq.kernels.token_stats_linear as tl_lin
    lsig = {"h_ptr": "*bf16", "w_ptr": "*bf16", "b_ptr": "*bf16", "rows": "i32", "V": "i32", "D": "i32",
            "stride_h": "i64", "stride_w": "i64", "inv_temp_hi": "fp32", "inv_temp_lo": "fp32", "logit_scale": "fp32",
            "softcap": "fp32", "ws_f_ptr": "*fp32", "ws_i_ptr": "*i64", "n_chunks": "i32", "CHUNK": "i32",
            "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "HAS_BIAS": "constexpr",
            "HAS_SCALE": "constexpr", "HAS_SOFTCAP": "constexpr", "ACC": "constexpr", "FRAC": "constexpr",
            "IEEE": "constexpr"}
    lconst = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "HAS_BIAS": True, "HAS_SCALE": False,
              "HAS_SOFTCAP": True, "ACC": tl.float32, "FRAC": True, "IEEE": False}
    cases.append((tl_lin.token_stats_linear_partial_kernel, lsig, lconst))
    cases.append((tl_lin.token_stats_linear_partial_kernel,
                  {**lsig, "h_ptr": "*fp32", "w_ptr": "*fp32", "b_ptr": "*fp32"},
                  {**lconst, "HAS_BIAS": False, "HAS_SOFTCAP": False, "FRAC": False, "IEEE": True}))
    report = []
    for fn, sig, const in cases:
        out = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=GPUTarget("cuda", 90, 32),
                             options={"num_warps": 8})
        ptx = out.asm["ptx"]
        report.append({"kernel": fn.__name__, "atomics": len(re.findall(r"\\batom\\.|\\bred\\.", ptx)),
                       "bytes": len(ptx)})
    print("REPORT" + json.dumps(report))
    """
)


def test_kernels_compile_for_sm90_without_atomics():
    # token_stats (rows, split, merge) x 3 dtype/top-k settings, masked_reduce x 6, masked_quantile x 2,
    # ensemble_stats x 3 dtype/member-count settings
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr[-4000:]
    import json

    report = json.loads(proc.stdout.split("REPORT", 1)[1])
    assert len(report) == 22
    for r in report:
        assert r["atomics"] == 0, r
        assert r["bytes"] > 1000, r
