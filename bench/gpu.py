"""Everything a GPU session runs, in one call (the device budget is short):

    python bench/gpu.py --out "$OUT"

1. tests/gpu (and the Triton tests in tests/kernels, now on the real device), junit XML to OUT;
2. the token_stats benchmark on the device (bf16 and fp32; decode-sized and large batches) plus
   the device-to-device copy bandwidth it is judged against; JSON to OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Measured device-to-device copy bandwidth in GB/s (read + write bytes)."""
    x = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(20):
        start.record()
        y.copy_(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return 2 * nbytes / times[len(times) // 2] / 1e9


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", os.path.join(HERE, "results")))
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    rc = 0
    if not args.skip_tests:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-x", "tests/gpu", "tests/kernels",
                              f"--junitxml={os.path.join(args.out, 'gpu-tests.xml')}"], cwd=ROOT)
    bw = copy_bandwidth()
    print(f"device-to-device copy: {bw:.0f} GB/s on {torch.cuda.get_device_name()}")
    sys.path.insert(0, HERE)
    import token_stats as bench  # noqa: E402

    out = os.path.join(args.out, "token_stats-cuda.json")
    bench.main(["--device", "cuda", "--shapes", "4096x128256,256x128256,64x128256,8x128256,2048x32000",
                "--repeats", "20", "--out", out])
    with open(out) as f:
        data = json.load(f)
    data["copy_GBps"] = bw
    for r in data["results"]:
        r["fraction_of_copy_bw"] = r["flashuq_GBps"] / bw
    with open(out, "w") as f:
        json.dump(data, f, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
