"""The abstention guarantee, measured (docs/abstention.md): how often a calibrated threshold's kept
answers exceed the target error rate α over many calibration draws, and how much it keeps.

    python bench/abstention.py            # 400 draws per setting

Two populations: U ~ Uniform(0, 1) with P(wrong | U) = U (n = 300, α = 0.2; the error rate kept by
t is t / 2), and the msp of SmolLM2-135M-Instruct's 202 greedy demo answers (tests/metrics/data;
calibration sets drawn with replacement, α = 0.3), each with δ = 0.1, for every bound and the
default grid against every distinct value. Exits 1 when a share of exceeding draws passes δ by
more than three standard errors. JSON: bench/results/abstention-cpu-<UTC stamp>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import pathlib
import sys

import numpy as np

from flashuq import metrics

HERE = pathlib.Path(__file__).resolve().parent
DELTA = 0.1


def run(draws: int):
    demo = json.loads((HERE.parent / "tests" / "metrics" / "data" / "demo_msp.json").read_text())
    du, dc = np.array(demo["msp"]), np.array(demo["correct"], bool)
    rows = []
    for bound in ("binomial", "hoeffding_bentkus"):
        for grid in (50, None):
            rng = np.random.default_rng(0)
            ex_u, thr, ex_d, kept = 0, [], 0, []
            for _ in range(draws):
                u = rng.uniform(size=300)
                r = metrics.abstention_threshold(u, rng.uniform(size=300) >= u, risk=0.2, delta=DELTA,
                                                 bound=bound, grid=grid)
                t = min(max(r.threshold, 0.0), 1.0)
                ex_u += r.kept > 0 and t / 2 > 0.2
                thr.append(t)
                idx = rng.integers(0, du.size, du.size)
                r = metrics.abstention_threshold(du[idx], dc[idx], risk=0.3, delta=DELTA, bound=bound, grid=grid)
                keep = du <= r.threshold
                ex_d += keep.any() and 1 - dc[keep].mean() > 0.3
                kept.append(keep.mean())
            full = metrics.abstention_threshold(du, dc, risk=0.3, delta=DELTA, bound=bound, grid=grid)
            rows.append({"bound": bound, "grid": grid, "uniform_exceed": ex_u / draws, "uniform_mean_threshold":
                         float(np.mean(thr)), "demo_exceed": ex_d / draws, "demo_mean_kept": float(np.mean(kept)),
                         "demo_full_kept": full.coverage, "demo_full_threshold": full.threshold})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = run(args.draws)
    limit = DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / args.draws)
    print("| bound | candidates | uniform: P(exceed α) | mean threshold | demo: P(exceed α) | mean kept | all 202 kept |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bound']} | {'grid of ' + str(r['grid']) if r['grid'] else 'every value'} | "
              f"{r['uniform_exceed']:.3f} | {r['uniform_mean_threshold']:.3f} | {r['demo_exceed']:.3f} | "
              f"{r['demo_mean_kept']:.3f} | {r['demo_full_kept']:.3f} |")
    missed = [r for r in rows if max(r["uniform_exceed"], r["demo_exceed"]) > limit]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = pathlib.Path(args.out) if args.out else HERE / "results" / f"abstention-cpu-{stamp}.json"
    out.write_text(json.dumps({"draws": args.draws, "delta": DELTA, "limit": limit, "rows": rows,
                               "missed": bool(missed)}, indent=1) + "\n")
    print(f"\nwrote {out}")
    if missed:
        print(f"the guarantee failed: a share of exceeding draws above {limit:.3f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
