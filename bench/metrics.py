"""Benchmark: fuq.metrics on N items (CPU, float64 numpy).

    python bench/metrics.py                 # N = 10^7 (and the LM-Polygraph baseline at N = 10^5)
    python bench/metrics.py --n 1000000

Prints one row per metric (seconds, best of --repeat) and writes JSON to
bench/results/metrics-cpu-<UTC stamp>.json with the machine description. The uncertainty has
ties (rounded to 4 decimals) so the tie paths are exercised. ``prr(baseline="polygraph")`` runs
LM-Polygraph's 1000 sequential shuffles (inherently 1000·O(N)), so it is timed at --n-polygraph.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import numpy as np

import flashuq as fuq


def _machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__}


def _time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10**7)
    ap.add_argument("--n-polygraph", type=int, default=10**5)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    M = fuq.metrics
    rng = np.random.default_rng(0)
    n = args.n
    u = np.round(rng.normal(size=n), 4)
    q = rng.random(n)
    c = rng.random(n) < 1 / (1 + np.exp(u))
    before, after = rng.random(n) < 0.6, rng.random(n) < 0.5
    U = np.sort(rng.random((n // 4, 4)), axis=1)
    cases = [
        ("prr", n, lambda: M.prr(u, q)),
        ("prr(max_rejection=0.5)", n, lambda: M.prr(u, q, max_rejection=0.5)),
        ("prr(normalize=False)", n, lambda: M.prr(u, q, normalize=False)),
        ("rejection_curve", n, lambda: M.rejection_curve(u, q)),
        ("roc_auc", n, lambda: M.roc_auc(u, c)),
        ("pr_auc", n, lambda: M.pr_auc(u, c)),
        ("ece", n, lambda: M.ece(u, c)),
        ("spearman", n, lambda: M.spearman(u, q)),
        ("kendall_tau", n, lambda: M.kendall_tau(u, q)),
        ("misleading_rate", n, lambda: M.misleading_rate(before, after)),
        ("tsu [N/4, 4]", n // 4, lambda: M.tsu(U)),
        ("risk_coverage_auc", n, lambda: M.risk_coverage_auc(u, q)),
        ("reversed_pairs_proportion", n, lambda: M.reversed_pairs_proportion(u, q)),
        ("ap_ratio_prr", n, lambda: M.ap_ratio_prr(u, c)),
        ("isotonic_brier", n, lambda: M.isotonic_brier(-u, c)),
    ]
    npg = args.n_polygraph
    cases.append(("prr(baseline='polygraph')", npg, lambda: M.prr(u[:npg], q[:npg], baseline="polygraph")))
    cases.append(("bootstrap(roc_auc, 1000 resamples)", npg,
                  lambda: M.bootstrap(M.roc_auc, u[:npg], c[:npg], n_resamples=1000)))
    results = []
    print(f"{'metric':<38}{'N':>12}{'seconds':>10}")
    for name, size, fn in cases:
        s = _time(fn, args.repeat)
        results.append({"metric": name, "n": size, "seconds": s})
        print(f"{name:<38}{size:>12}{s:>10.3f}", flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"metrics-cpu-{stamp}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"benchmark": "metrics", "n": n, "machine": _machine(), "timestamp": stamp, "results": results},
                  f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
