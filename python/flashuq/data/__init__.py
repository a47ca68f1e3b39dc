"""Scoring datasets: teacher-forced uncertainty of (prompt, response) pairs, in one process or on Ray Data.

    run = fuq.data.score("smollm2", "pairs.jsonl", "scored.parquet")            # one process
    run = fuq.data.score(path, "pairs.parquet", "scored.parquet", workers=2)    # a local Ray, 2 actors
    table = fuq.data.read_scores("scored.parquet")                              # every row, in input order

Each input row has ``prompt`` and ``response`` (strings), or chat ``messages`` (a list of
``{"role", "content"}`` ending with the assistant's message, which is the response). The prompt is
rendered with the tokenizer's chat template when it has one (``raw=True``: plain text), the
response's own tokens follow it, and only the response tokens are scored, by :func:`flashuq.hf.score`
(the logits are never materialised). The output, a directory of Parquet files, holds one row per
scored input row: ``row`` (its 0-based index in the input; the JSONL line is ``row + 1``), the
input's own columns, ``response_tokens``, and every score of :func:`flashuq.sequence_scores`
(higher = less trustworthy); with ``tokens=True`` also the response tokens' ids (``response_ids``),
``token_logprob`` and ``token_entropy``. :func:`select` (``flashuq select``) places the rows on the
Error–Uncertainty plane and keeps Q-Tuning's subset (:mod:`flashuq.data.qtuning`). With
``generate=...`` each row's prompt is answered and the answers scored (:mod:`flashuq.data.generate`).

Bad rows (not JSON, missing or non-string fields, an empty response, over the model's context) go
to ``<out>.errors.jsonl`` with their row, line and reason; they never stop the run. A rerun with the
same ``out`` scores only the rows not written yet (resume). The input is read, checked and tokenized
by the driver (that is where row numbers and resume are known); the model runs in the workers. See
docs/data.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import time
import uuid
from typing import Optional

from .._checks import check_int
from .generate import Answerer, GenerateOptions, PromptTokenizer, answer_rows_vllm, load_vllm
from .on_ray import _score_on_ray, init_ray, ray_resources
from .qtuning import EUPlane, context_token_scores, eu_plane, select, token_keep_mask
from .rows import Tokenizer, prepare
from .scorer import Scorer, context_length, load_model, load_tokenizer
from .store import ERRORS_SUFFIX, OWN_COLUMNS, _errors_path, _out_dir, _table, _write_part, done_rows, read_scores

__all__ = ["score", "ScoreRun", "read_scores", "done_rows", "prepare", "Tokenizer", "Scorer", "load_model",
           "load_tokenizer", "context_length", "ray_resources", "init_ray", "ERRORS_SUFFIX", "OWN_COLUMNS",
           "GenerateOptions", "Answerer", "PromptTokenizer", "EUPlane", "eu_plane", "select",
           "context_token_scores", "token_keep_mask"]


@dataclasses.dataclass
class ScoreRun:
    """What :func:`score` did."""

    out: pathlib.Path          #: the output directory (Parquet files)
    errors: pathlib.Path       #: the errors file (JSONL), rewritten by every run
    rows: int                  #: rows in the input
    scored: int                #: rows scored by this run
    skipped: int               #: rows already in the output (resume)
    failed: int                #: bad rows (in the errors file)
    seconds: float
    engine: str                #: "process", "ray" or "vllm"


class _Progress:
    def __init__(self, total: int, stream, label: str):
        self.total, self.stream, self.label = total, stream, label
        self.done, self.t0, self.last = 0, time.perf_counter(), 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.stream is None or (now - self.last < 0.5 and self.done < self.total):
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        self.stream.write(f"\r{self.label}: {self.done}/{self.total} rows, {rate:.1f} rows/s, ETA {eta:.0f} s   ")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _check_options(model, workers, ray_address, batch_size, part_rows, dtype, max_length, engine, generate):
    """Check :func:`score`'s options and the optional packages they need; returns ``generate`` as a
    :class:`GenerateOptions` or None."""
    if workers is not None:
        check_int(workers, "workers", 0)
    check_int(batch_size, "batch_size", 1)
    check_int(part_rows, "part_rows", 1)
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be 'float32', 'bfloat16' or 'float16', got {dtype!r}")
    if max_length is not None:
        check_int(max_length, "max_length", 2)
    if engine not in ("hf", "vllm"):
        raise ValueError(f"engine must be 'hf' or 'vllm', got {engine!r}")
    if generate is True:
        generate = GenerateOptions()
    elif generate is False or generate is None:
        generate = None
    elif not isinstance(generate, GenerateOptions):
        raise TypeError(f"generate must be a bool or a GenerateOptions, got {type(generate).__name__}")
    if generate is not None:
        generate.check()
    if engine == "vllm":
        if generate is None:
            raise ValueError("engine='vllm' generates answers (generate=True / --generate): flashuq's processor sees "
                             "the logits vLLM samples from, not a given response's; teacher-forced scoring runs on hf")
        if workers or ray_address is not None:
            raise ValueError("engine='vllm' runs in one process (vLLM batches the requests itself): leave workers at 0")
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError("model: engine='vllm' loads a checkpoint directory; pass 'smollm2' or a path")
    try:
        import pyarrow  # noqa: F401
    except ImportError as ex:
        raise ImportError("flashuq.data writes Parquet: pip install 'flashuq[data]' (pyarrow)") from ex
    if workers or ray_address is not None:
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError as ex:
            raise ImportError("distributed scoring needs Ray Data: pip install 'flashuq[ray]' "
                              "(or run with workers=0, one process)") from ex
    return generate


def _load(model, tokenizer, dtype: str, *, in_workers: bool):
    """``(loaded model or None, tokenizer, context length)`` on the driver: the weights only when this
    process scores (not when Ray's workers or vLLM load them)."""
    if isinstance(model, (str, os.PathLike)):
        if in_workers:
            loaded, (tok, ctx_len) = None, load_tokenizer(model)
        else:
            loaded, tok = load_model(model, dtype=dtype)
            ctx_len = context_length(loaded)
    elif in_workers:
        raise TypeError("model: Ray's workers load the model themselves; pass 'smollm2' or a checkpoint path")
    else:
        loaded, tok, ctx_len = model, tokenizer, context_length(model)
    if tok is None:
        raise TypeError("tokenizer: a loaded model needs its tokenizer (tokenizer=...)")
    return loaded, tok, ctx_len


def score(model, data, out, *, tokens: bool = False, raw: bool = False, batch_size: int = 64,
          workers: Optional[int] = None, ray_address: Optional[str] = None, dtype: str = "float32",
          max_length: Optional[int] = None, progress=sys.stderr, part_rows: int = 1024,
          cpus_per_worker: Optional[int] = None, tokenizer=None, generate=False, engine: str = "hf") -> ScoreRun:
    """Score every (prompt, response) row of ``data`` into the Parquet directory ``out``; with
    ``generate``, answer every prompt row and score the answers (:mod:`flashuq.data.generate`).

    Args:
        model: ``"smollm2"`` or a transformers checkpoint directory (each worker loads it), or, on the
            one-process path only, a loaded transformers model.
        data: a ``.jsonl`` or ``.parquet`` file.
        out: the output directory (created; rows already there are skipped).
        tokens: also write the response tokens' log-probabilities and entropies.
        raw: the prompt as plain text, never through the chat template.
        batch_size: rows per Ray batch (the one-process path writes a part every ``part_rows`` rows).
        workers: None or 0 = one process, no Ray; N >= 1 = Ray Data with N scoring actors (a local Ray
            is started unless ``ray_address`` is given).
        ray_address: join this Ray cluster (``"auto"``, ``"ray://host:10001"``, ...).
        dtype: the model's dtype in the workers.
        max_length: the context limit (default: the model's ``max_position_embeddings``).
        progress: a stream for the progress line (None: quiet).
        cpus_per_worker: CPUs (and torch threads) per actor; default: this machine's cores / workers.
        tokenizer: the tokenizer of a loaded ``model`` (one-process path).
        generate: False (teacher-forced), True or a :class:`GenerateOptions` (answers generated: K
            samples, token limits, temperature, seed).
        engine: ``"hf"`` (transformers, one process or Ray) or ``"vllm"`` (generation only, one process:
            vLLM with flashuq's processor).

    Returns:
        :class:`ScoreRun`.
    """
    t0 = time.perf_counter()
    generate = _check_options(model, workers, ray_address, batch_size, part_rows, dtype, max_length, engine, generate)
    data = pathlib.Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"data: no such file {str(data)!r}")
    out = _out_dir(out)
    use_ray = bool(workers) or ray_address is not None
    loaded, tok, ctx_len = _load(model, tokenizer, dtype, in_workers=use_ray or engine == "vllm")
    limit = max_length if max_length is not None else ctx_len
    tokenizer = Tokenizer(tok, raw=raw, max_length=limit)
    if generate is not None:
        tokenizer = PromptTokenizer(tokenizer, longest=generate.longest)

    out.mkdir(parents=True, exist_ok=True)
    todo, errors, n, skipped = prepare(data, tokenizer, done_rows(out))
    errors_path = _errors_path(out)
    with open(errors_path, "w", encoding="utf-8") as f:
        for e in errors:
            f.write(json.dumps(e) + "\n")
    run_id = uuid.uuid4().hex[:12]
    if not use_ray:
        if engine == "vllm":
            llm = load_vllm(model, seed=generate.seed, dtype=dtype) if todo else None
            score_rows = lambda rows: answer_rows_vllm(llm, tok, rows, generate, tokens=tokens)  # noqa: E731
        elif generate is not None:
            score_rows = Answerer(loaded, options=generate, tokenizer=tok, dtype=dtype, tokens=tokens).score_rows
        else:
            score_rows = Scorer(loaded, dtype=dtype, tokens=tokens).score_rows
        bar = _Progress(len(todo), progress, "flashuq score")
        for k in range(0, len(todo), part_rows):
            part = todo[k:k + part_rows]
            _write_part(out, _table(score_rows(part)), f"part-{run_id}-{k // part_rows:06d}.parquet")
            bar.add(len(part))
        ran = "vllm" if engine == "vllm" else "process"
    else:
        _score_on_ray(model, todo, out, run_id, tokens=tokens, dtype=dtype, batch_size=batch_size,
                      workers=workers or 1, ray_address=ray_address, cpus_per_worker=cpus_per_worker,
                      progress=progress is not None, generate=generate)
        ran = "ray"
    return ScoreRun(out, errors_path, n, len(todo), skipped, len(errors), time.perf_counter() - t0, ran)
