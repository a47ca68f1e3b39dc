"""Benchmark flashuq.token_stats against the same statistics in eager torch and torch.compile.

    python bench/token_stats.py                 # CPU (or the current CUDA device with --device cuda)
    python bench/token_stats.py --quick         # fewer repeats, smaller shapes (a smoke run)

Prints a markdown table (median time, ratio against eager, GB/s of logits read) and writes
JSON under bench/results/. The baseline is the statistic set written the way a user would
(KERNELS.md §5.1: log_softmax, logsumexp, exp, p·logp, Σp², Σp³, Σp⁴, max, topk(2), gather),
with kurtosis from power sums; ``torch.compile`` of the same function is the second baseline.
A single ``torch.sum`` over the same tensor gives the machine's one-pass read bandwidth.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

import flashuq as fuq

SHAPES = [(8, 128256), (256, 128256), (2048, 32000)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def eager_stats(logits: torch.Tensor, tokens: torch.Tensor):
    """Every TokenStats field in plain torch (no top-k), as a user would write it."""
    V = logits.shape[-1]
    x = logits.float()
    lp = torch.log_softmax(x, dim=-1)
    lse = torch.logsumexp(x, dim=-1)
    p = lp.exp()
    entropy = -(p * lp).sum(-1)
    s2 = (p * p).sum(-1)
    s3 = (p**3).sum(-1)
    s4 = (p**4).sum(-1)
    max_logprob, argmax = lp.max(-1)
    top2 = p.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    logprob = lp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    m2 = (s2 - 1 / V) / V
    m4 = (s4 - 4 * s3 / V + 6 * s2 / V**2 - 3 / V**3) / V
    kurtosis = m4 / m2**2 - 3
    self_certainty = -lp.mean(-1) - math.log(V)
    return lse, max_logprob, argmax, logprob, entropy, margin, s2, kurtosis, self_certainty


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_info(device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flashuq": fuq.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_isa": fuq._ext._C.isa(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            pass
    return info


def run(device, shapes, dtypes, repeats, with_compile=True, topk=0):
    compiled = torch.compile(eager_stats) if with_compile else None
    rows_out = []
    for (rows, V) in shapes:
        for dname in dtypes:
            dtype = DTYPES[dname]
            g = torch.Generator(device="cpu").manual_seed(0)
            x = (torch.randn(rows, V, generator=g) * 3).to(dtype).to(device)
            tok = torch.randint(0, V, (rows,), generator=g).to(device)
            nbytes = x.numel() * x.element_size()
            res = {"shape": [rows, V], "dtype": dname, "bytes": nbytes}
            res["flashuq_s"] = timeit(lambda: fuq.token_stats(x, tok, topk=topk), device, repeats)
            res["read_s"] = timeit(lambda: x.sum(-1), device, repeats)
            res["eager_s"] = timeit(lambda: eager_stats(x, tok), device, max(3, repeats // 2))
            if compiled is not None:
                res["compile_s"] = timeit(lambda: compiled(x, tok), device, max(3, repeats // 2), warmup=2)
            for k in ("flashuq", "read", "eager", "compile"):
                if f"{k}_s" in res:
                    res[f"{k}_GBps"] = nbytes / res[f"{k}_s"] / 1e9
            res["speedup_vs_eager"] = res["eager_s"] / res["flashuq_s"]
            if "compile_s" in res:
                res["speedup_vs_compile"] = res["compile_s"] / res["flashuq_s"]
            rows_out.append(res)
            print(format_row(res), flush=True)
            del x
    return rows_out


HEADER = ("| shape | dtype | flashuq ms | GB/s | eager ms | compile ms | × eager | × compile | one-pass read GB/s |\n"
          "|---|---|---|---|---|---|---|---|---|")


def format_row(r) -> str:
    comp = f"{r['compile_s'] * 1e3:.2f}" if "compile_s" in r else "—"
    xc = f"{r['speedup_vs_compile']:.1f}×" if "speedup_vs_compile" in r else "—"
    return (f"| {r['shape'][0]}×{r['shape'][1]} | {r['dtype']} | {r['flashuq_s'] * 1e3:.2f} | {r['flashuq_GBps']:.2f} | "
            f"{r['eager_s'] * 1e3:.2f} | {comp} | {r['speedup_vs_eager']:.1f}× | {xc} | {r['read_GBps']:.1f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats (smoke test)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--shapes", default=None, help="e.g. 4096x128256,64x128256")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/token_stats-<device>-<date>.json)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    else:
        shapes = [(8, 4096), (64, 32000)] if args.quick else SHAPES
    repeats = args.repeats or (3 if args.quick else 10)
    info = machine_info(device)
    print(f"# token_stats benchmark on {info.get('gpu', info['cpu'])} ({device}, {info['threads']} threads, "
          f"torch {info['torch']})\n")
    print(HEADER)
    results = run(device, shapes, list(DTYPES), repeats, with_compile=not args.no_compile)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"token_stats-{device.type}-{stamp}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"benchmark": "token_stats", "device": str(device), "machine": info, "timestamp": stamp,
                   "repeats": repeats, "results": results}, f, indent=2)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
