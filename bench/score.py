"""Benchmark: `flashuq score` (flashuq.data) in one process and on Ray Data, against flashuq.hf.score
called directly on the same rows.

    python bench/score.py               # 2,000 (prompt, response) pairs on SmolLM2-135M-Instruct
    python bench/score.py --quick       # 120 pairs: a smoke run, no targets

The pairs are the bundled questions with short answers, varied, rendered through SmolLM2's chat
template. Four ways, the same rows, one thread per worker so that doubling the workers doubles the
compute:

- **direct**: the tokenized rows in length-sorted batches through ``fuq.hf.score`` in a loop (no
  reading, no writing): the floor;
- **one process**: ``fd.score(workers=0)``, end to end (read, check, tokenize, score, write Parquet);
- **Ray, 1 worker** and **Ray, 2 workers**: ``fd.score(workers=N, cpus_per_worker=1)`` on a local Ray
  started once before (its start-up is reported, not counted); each run includes its actors'
  start-up and model load.

Before timing, a run's output is checked row by row against the direct scores (every score column;
each row exactly once). Targets (the issue): Ray with 1 worker at most 10% slower than direct; 2
workers at least 1.8× the rows/s of 1 worker when the machine has a core per worker plus one for
the driver and Ray's own tasks (otherwise the ratio is reported and the target marked not
applicable, with the reason). A wrong result or a missed target exits 1. Also reported: the peak
resident memory of each scoring actor (sampled every 50 ms). Writes bench/results/score-cpu-<stamp>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from token_stats import exit_code, machine_info  # noqa: E402

import torch  # noqa: E402

import flashuq as fuq  # noqa: E402
from flashuq import data as fd  # noqa: E402

TARGET_OVERHEAD = 0.10
TARGET_SCALING = 1.8
ANSWER_FORMS = ["{a}.", "The answer is {a}.", "It is {a}.", "{a}, I believe.", "I think the answer is {a}.",
                "Probably {a}.", "{a}!", "Most likely {a}.", "My answer: {a}.", "That would be {a}."]


def make_pairs(n: int):
    from importlib import resources

    qs = [json.loads(line) for line in
          resources.files("flashuq").joinpath("data/questions.jsonl").read_text().splitlines()]
    pairs = []
    for i in range(n):
        q = qs[i % len(qs)]
        form = ANSWER_FORMS[(i // len(qs)) % len(ANSWER_FORMS)]
        pairs.append({"id": i, "prompt": q["question"], "response": form.format(a=q["answers"][0])})
    return pairs


class PeakRSS:
    """The largest resident set of each scoring actor process seen while running (actors of an
    earlier run, still exiting, are left out)."""

    def __init__(self, exclude=()):
        self.exclude = set(exclude)
        self.peak: dict = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(p.info["cmdline"] or ())
                if ("MapWorker(MapBatches(Scorer))" in cmd and p.info["memory_info"] is not None
                        and p.pid not in self.exclude):
                    self.peak[p.pid] = max(self.peak.get(p.pid, 0), p.info["memory_info"].rss)
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def direct_scores(model, rows, batch_size):
    """``{row: {score: value}}`` from fuq.hf.score on the batches the Ray workers get (``batch_size``
    rows in input order, length-sorted within)."""
    scorer = fd.Scorer(model)
    out = {}
    for k in range(0, len(rows), batch_size):
        out.update((r["row"], r) for r in scorer.score_rows(rows[k:k + batch_size]))
    return out


def check(out, ref: dict, n: int) -> float:
    got = fd.read_scores(out).to_pylist()
    if [g["row"] for g in got] != list(range(n)):
        raise SystemExit(f"bench/score.py: {out} does not hold every row exactly once")
    worst = 0.0
    for g in got:
        r = ref[g["row"]]
        for name in ("msp", "gnll", "perplexity", "mean_token_entropy", "max_token_entropy", "mean_kurtosis",
                     "self_certainty", "renyi_neg", "fisher_rao"):
            d = abs(g[name] - r[name]) / max(1.0, abs(r[name]))
            worst = max(worst, d)
    if not worst <= 1e-4:
        raise SystemExit(f"bench/score.py: {out} differs from direct hf.score by {worst:.2e}")
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="120 pairs, no targets")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch-size", type=int, default=64, help="rows per batch, every way")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    n = args.pairs or (120 if args.quick else 2000)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="flashuq-bench-score-"))
    threads = torch.get_num_threads()
    try:
        src = tmp / "pairs.jsonl"
        with open(src, "w") as f:
            for p in make_pairs(n):
                f.write(json.dumps(p) + "\n")
        torch.set_num_threads(1)  # one thread per worker everywhere
        model, tok = fd.load_model(args.model)
        todo, errors, _, _ = fd.prepare(src, fd.Tokenizer(tok, max_length=fd.context_length(model)))
        if errors or len(todo) != n:
            raise SystemExit(f"bench/score.py: {len(errors)} of the generated pairs were refused")
        tokens = sum(len(r["input_ids"]) for r in todo)

        res = {"pairs": n, "tokens": tokens, "model": args.model, "threads_per_worker": 1,
               "batch_size": args.batch_size}
        t0 = time.perf_counter()
        ref = direct_scores(model, todo, args.batch_size)
        res["direct_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        run = fd.score(model, src, tmp / "process.parquet", tokenizer=tok, progress=None, part_rows=args.batch_size)
        res["process_s"] = time.perf_counter() - t0
        res["max_rel_diff"] = {"process": check(run.out, ref, n)}
        del model

        cores = os.cpu_count() or 1
        import ray

        t0 = time.perf_counter()
        started = not ray.is_initialized()
        if started:
            fd.init_ray(num_cpus=fd.ray_resources(2, 1)[1])
        res["ray_start_s"] = time.perf_counter() - t0
        res["peak_rss_mb"] = {}
        seen: set = set()
        for workers in (1, 2):
            with PeakRSS(exclude=seen) as mem:
                t0 = time.perf_counter()
                run = fd.score(args.model, src, tmp / f"ray{workers}.parquet", workers=workers, cpus_per_worker=1,
                               batch_size=args.batch_size, progress=None)
                res[f"ray{workers}_s"] = time.perf_counter() - t0
            res["max_rel_diff"][f"ray{workers}"] = check(run.out, ref, n)
            res["peak_rss_mb"][f"ray{workers}"] = [round(v / 2**20, 1) for v in mem.peak.values()]
            seen |= set(mem.peak)
        if started:
            ray.shutdown()
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)

    for k in ("direct", "process", "ray1", "ray2"):
        res[f"{k}_rows_per_s"] = n / res[f"{k}_s"]
    res["ray1_overhead"] = res["ray1_s"] / res["direct_s"] - 1
    res["process_overhead"] = res["process_s"] / res["direct_s"] - 1
    res["scaling_1_to_2"] = res["ray2_rows_per_s"] / res["ray1_rows_per_s"]
    enough = cores >= 3  # a core per worker, one for the driver and Ray Data's tasks
    missed = []
    if not args.quick:
        if res["ray1_overhead"] > TARGET_OVERHEAD:
            missed.append(f"Ray with 1 worker costs {res['ray1_overhead']:.0%} over direct hf.score "
                          f"(target <= {TARGET_OVERHEAD:.0%})")
        if enough and res["scaling_1_to_2"] < TARGET_SCALING:
            missed.append(f"2 workers give {res['scaling_1_to_2']:.2f}x the rows/s of 1 (target >= {TARGET_SCALING}x)")
    res["targets"] = {"ray1_overhead_max": TARGET_OVERHEAD, "scaling_min": TARGET_SCALING,
                      "scaling_applies": enough,
                      "scaling_note": "" if enough else
                      f"{cores} cores: two 1-thread workers share them with the driver and Ray's own tasks",
                      "missed": missed}
    info = machine_info(torch.device("cpu"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"score-cpu-{stamp}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"benchmark": "score", "machine": info, "timestamp": stamp, **res}, f, indent=2)

    print(f"flashuq score: {n} pairs ({tokens} tokens) of SmolLM2-135M-Instruct, one thread per worker, "
          f"{info['cpu']} ({cores} cores)\n")
    print("| way | seconds | rows/s | vs direct | peak RSS per actor (MiB) |\n|---|---|---|---|---|")
    for k, name in (("direct", "direct hf.score"), ("process", "flashuq score, one process"),
                    ("ray1", "flashuq score, Ray, 1 worker"), ("ray2", "flashuq score, Ray, 2 workers")):
        rss = ", ".join(f"{v:.0f}" for v in res["peak_rss_mb"].get(k, [])) or "—"
        print(f"| {name} | {res[k + '_s']:.1f} | {res[k + '_rows_per_s']:.1f} | "
              f"{res[k + '_s'] / res['direct_s']:.2f}× time | {rss} |")
    print(f"\nRay start-up (not counted): {res['ray_start_s']:.1f} s; 1 -> 2 workers: "
          f"{res['scaling_1_to_2']:.2f}× rows/s" + ("" if enough else f" ({res['targets']['scaling_note']})"))
    print(f"wrote {out}")
    return exit_code(missed)


if __name__ == "__main__":
    sys.exit(main())
