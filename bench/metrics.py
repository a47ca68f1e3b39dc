"""Benchmark: fuq.metrics on N items (CPU, float64 numpy), against the peers' own code.

    python bench/metrics.py                 # N = 10^7
    python bench/metrics.py --n 1000000

Baselines: LM-Polygraph 0.7.0's own metric classes (``pip install --no-deps lm-polygraph==0.7.0``;
only their module files are imported, see lm_polygraph_modules.py): PredictionRejectionArea with
its manager's normalisation (1000 seeded shuffles), ROCAUC, PRAUC, ECE, SpearmanRankCorrelation,
KendallTauCorrelation, RiskCoverageCurveAUC and ReversedPairsProportion; and scikit-learn for
Inv-Entropy's ap_ratio_prr (average precision) and isotonic_brier (IsotonicRegression).

Every metric with a baseline is first checked against it on the first 10^5 items (rtol 1e-9;
ReversedPairsProportion, O(N²), on 2,000 and the polygraph PRR on 10^4) and the script stops on a
disagreement. Then flashuq is timed at N (best of --repeat), each baseline at N or, where its cost
makes that impractical (LM-Polygraph's PRR: 1000 shuffles; its risk-coverage curve: a Python sort;
its reversed pairs: O(N²)), at a smaller size at which flashuq is timed again, so that each ratio
compares equal sizes. The uncertainty has ties (rounded to 4 decimals) so the tie paths run.
Target (issue 4): every metric at N = 10^7 in at most 10 s on the machine's CPU; the script exits 1
when one takes longer. JSON: bench/results/metrics-cpu-<UTC stamp>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import flashuq as fuq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lm_polygraph_modules import import_modules  # noqa: E402
from token_stats import exit_code, machine_info, positive_int  # noqa: E402

TARGET_N = 10**7
TARGET_SECONDS = 10.0   # each metric at N = 10^7, at most ("10^7 items in a few seconds")
RTOL, ATOL = 1e-9, 1e-12
N_CHECK = 10**5


def _time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@dataclass
class Case:
    """flashuq(k) and baseline(k) compute the metric on the first k items."""
    name: str
    n: int
    flashuq: Callable[[int], object]
    baseline_name: str | None = None
    baseline: Callable[[int], object] | None = None
    baseline_n: int = 0
    check_n: int = N_CHECK


def load_lm_polygraph():
    """(version, modules) of LM-Polygraph's ue_metrics, or None when it is not installed."""
    return import_modules("ue_metrics", ("ue_metric", "pred_rej_area", "roc_auc", "pr_auc", "ece", "spearmanr",
                                         "kendalltau", "risk_cov_curve", "rev_pairs_prop"))


def lm_polygraph_prr(lm, ue, metric):
    """The normalised PRR as LM-Polygraph's UEManager computes it for one estimator: NaN/inf
    uncertainty clipped, NaN targets dropped, (prr − random) / (oracle − random) with the random
    baseline from 1000 seeded shuffles (numpy's global RNG, restored afterwards)."""
    prr = lm["pred_rej_area"].PredictionRejectionArea()
    metric = np.asarray(metric, dtype=float)
    ue = np.nan_to_num(np.asarray(ue, dtype=float), nan=-1e7, neginf=-1e7, posinf=1e7)
    keep = ~np.isnan(metric)
    ue, metric = ue[keep], metric[keep]
    state = np.random.get_state()
    try:
        rand = lm["ue_metric"].get_random_scores(prr, metric)
    finally:
        np.random.set_state(state)
    return lm["ue_metric"].normalize_metric(prr(ue, metric), prr(-metric, metric), rand)


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    u = np.round(rng.normal(size=n), 4)
    q = rng.random(n)
    c = rng.random(n) < 1 / (1 + np.exp(u))
    before, after = rng.random(n) < 0.6, rng.random(n) < 0.5
    U = np.sort(rng.random((n // 4, 4)), axis=1)
    return u, q, c, before, after, U


def cases(n, n_polygraph, lmp):
    """The timed metrics, with their baselines where a peer has the same metric."""
    M = fuq.metrics
    u, q, c, before, after, U = make_data(n)
    lm = lmp[1] if lmp else None
    err = (~c).astype(int)  # LM-Polygraph's ROCAUC / PRAUC target: 1 = the item is wrong

    def on(fn, *arrays):
        return lambda k: fn(*(a[:k] for a in arrays))

    def with_lmp(case, label, fn, baseline_n=None, check_n=N_CHECK):
        if lm is not None:
            case.baseline_name, case.baseline = f"LM-Polygraph {label}", fn
            case.baseline_n, case.check_n = baseline_n or case.n, check_n
        return case

    def with_sklearn(case, label, fn):
        case.baseline_name, case.baseline, case.baseline_n = f"scikit-learn {label}", fn, case.n
        return case

    def sk_ap_ratio(u, c):
        from sklearn.metrics import average_precision_score as ap
        return ap(c, 1 - u) / ap(c, c)

    def sk_isotonic_brier(conf, c):
        from sklearn.isotonic import IsotonicRegression
        y = c.astype(float)
        return float(np.mean((IsotonicRegression().fit_transform(conf, y) - y) ** 2))

    npg = min(n, n_polygraph)
    out = [
        Case("prr", n, on(M.prr, u, q)),
        Case("prr(max_rejection=0.5)", n, on(lambda u, q: M.prr(u, q, max_rejection=0.5), u, q)),
        Case("prr(normalize=False)", n, on(lambda u, q: M.prr(u, q, normalize=False), u, q)),
        Case("rejection_curve", n, on(M.rejection_curve, u, q)),
        with_lmp(Case("roc_auc", n, on(M.roc_auc, u, c)), "ROCAUC",
                 lm and on(lambda u, e: lm["roc_auc"].ROCAUC()(u, e), u, err)),
        with_lmp(Case("pr_auc", n, on(M.pr_auc, u, c)), "PRAUC",
                 lm and on(lambda u, e: lm["pr_auc"].PRAUC()(u, e), u, err)),
        with_lmp(Case("ece", n, on(M.ece, u, c)), "ECE(normalize=True)",
                 lm and on(lambda u, c: lm["ece"].ECE(normalize=True)(u, c), u, c)),
        with_lmp(Case("spearman", n, on(M.spearman, u, q)), "SpearmanRankCorrelation",
                 lm and on(lambda u, q: lm["spearmanr"].SpearmanRankCorrelation()(u, q), u, q)),
        with_lmp(Case("kendall_tau", n, on(M.kendall_tau, u, q)), "KendallTauCorrelation",
                 lm and on(lambda u, q: lm["kendalltau"].KendallTauCorrelation()(u, q), u, q)),
        Case("misleading_rate", n, on(M.misleading_rate, before, after)),
        Case("tsu [N/4, 4]", n // 4, on(M.tsu, U)),
        Case("risk_coverage_auc", n, on(M.risk_coverage_auc, u, q)),
        with_lmp(Case("risk_coverage_auc(ties='polygraph')", n,
                      on(lambda u, q: M.risk_coverage_auc(u, q, ties="polygraph"), u, q)),
                 "RiskCoverageCurveAUC", lm and on(lambda u, q: lm["risk_cov_curve"].RiskCoverageCurveAUC()(u, q), u, q),
                 baseline_n=npg),
        with_lmp(Case("reversed_pairs_proportion", n, on(M.reversed_pairs_proportion, u, q)), "ReversedPairsProportion",
                 lm and on(lambda u, q: lm["rev_pairs_prop"].ReversedPairsProportion()(u, q), u, q),
                 baseline_n=min(n, 20000), check_n=2000),
        with_sklearn(Case("ap_ratio_prr", n, on(M.ap_ratio_prr, u, c)), "average_precision_score ratio",
                     on(sk_ap_ratio, u, c)),
        with_sklearn(Case("isotonic_brier", n, on(M.isotonic_brier, -u, c)), "IsotonicRegression",
                     on(sk_isotonic_brier, -u, c)),
        with_lmp(Case("prr(baseline='polygraph')", npg, on(lambda u, q: M.prr(u, q, baseline="polygraph"), u, q)),
                 "PredictionRejectionArea + UEManager normalisation", lm and on(lambda u, q: lm_polygraph_prr(lm, u, q), u, q),
                 check_n=10**4),
        Case("bootstrap(roc_auc, 1000 resamples)", npg,
             on(lambda u, c: M.bootstrap(M.roc_auc, u, c, n_resamples=1000), u, c)),
    ]
    return out


def check(case):
    """flashuq against the baseline on the first check_n items; SystemExit on a disagreement."""
    k = min(case.check_n, case.n)
    got, want = float(case.flashuq(k)), float(case.baseline(k))
    if not np.isclose(got, want, rtol=RTOL, atol=ATOL):
        raise SystemExit(f"metrics bench: {case.name} = {got!r} on {k:,} items, {case.baseline_name} says {want!r}")
    return abs(got - want)


def missed_targets(results):
    return [f"{r['metric']}: {r['seconds']:.2f} s at N = {r['n']:,} (target ≤ {TARGET_SECONDS:g} s)"
            for r in results if r["n"] >= TARGET_N and r["seconds"] > TARGET_SECONDS]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=positive_int, default=TARGET_N)
    ap.add_argument("--n-polygraph", type=positive_int, default=10**5,
                    help="items for the metrics whose reference runs 1000 shuffles or a bootstrap")
    ap.add_argument("--repeat", type=positive_int, default=1)
    ap.add_argument("--lm-polygraph", choices=("auto", "require", "off"), default="auto",
                    help="LM-Polygraph's metric classes as baselines where installed (auto), or fail without them")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    lmp = None if args.lm_polygraph == "off" else load_lm_polygraph()
    if lmp is None and args.lm_polygraph == "require":
        raise SystemExit("--lm-polygraph require: LM-Polygraph is not installed (pip install --no-deps lm-polygraph==0.7.0)")
    todo = cases(args.n, args.n_polygraph, lmp)
    diffs = {c.name: check(c) for c in todo if c.baseline is not None}
    print(f"checked {len(diffs)} metrics against their baselines (rtol {RTOL:g}); largest |diff| "
          f"{max(diffs.values(), default=0.0):.1e}\n")
    print("| metric | N | flashuq s | baseline | baseline N | baseline s | flashuq × faster |\n|---|---|---|---|---|---|---|")
    results = []
    for c in todo:
        r = {"metric": c.name, "n": c.n, "seconds": _time(lambda: c.flashuq(c.n), args.repeat)}
        cells = ["—"] * 4
        if c.baseline is not None:
            mine = r["seconds"] if c.baseline_n == c.n else _time(lambda: c.flashuq(c.baseline_n), args.repeat)
            base = _time(lambda: c.baseline(c.baseline_n), args.repeat)
            r.update(baseline=c.baseline_name, baseline_n=c.baseline_n, baseline_seconds=base,
                     flashuq_seconds_at_baseline_n=mine, speedup=base / mine, checked_abs_diff=diffs[c.name])
            cells = [c.baseline_name, f"{c.baseline_n:,}", f"{base:.3f}", f"{base / mine:.1f}×"]
        results.append(r)
        print(f"| {c.name} | {c.n:,} | {r['seconds']:.3f} | " + " | ".join(cells) + " |", flush=True)
    missed = missed_targets(results)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"metrics-cpu-{stamp}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"benchmark": "metrics", "n": args.n, "machine": machine_info(torch.device("cpu")), "timestamp": stamp,
                   "lm_polygraph": lmp[0] if lmp else None, "check": {"rtol": RTOL, "atol": ATOL, "n": N_CHECK},
                   "targets": {"seconds_max": TARGET_SECONDS, "n": TARGET_N, "missed": missed}, "results": results},
                  f, indent=2)
    print(f"\nwrote {out}")
    return exit_code(missed)


if __name__ == "__main__":
    sys.exit(main())
