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
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

ERRORS_SUFFIX = ".errors.jsonl"
#: the output's own columns (the input's columns of the same names are renamed ``input_<name>``)
OWN_COLUMNS = ("row", "response_tokens", "response_ids", "token_logprob", "token_entropy")


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


# ------------------------------------------------------------------------------------------------
# Reading and checking the input (driver)
# ------------------------------------------------------------------------------------------------

def _iter_input(path: pathlib.Path) -> Iterator[Tuple[int, Any]]:
    """``(row, dict or error string)`` for each row of a JSONL or Parquet file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    yield i, "empty line"
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as ex:
                    yield i, f"not JSON ({ex.msg})"
                    continue
                yield i, obj if isinstance(obj, dict) else "not a JSON object"
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        i = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for obj in batch.to_pylist():
                yield i, obj
                i += 1
    else:
        raise ValueError(f"data: expected a .jsonl or .parquet file, got {str(path)!r}")


def _pair(obj: dict) -> Tuple[Any, str]:
    """``(prompt or chat messages, response)`` of a row, or raises ValueError with the reason."""
    if "messages" in obj and obj["messages"] is not None:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in msgs):
            raise ValueError("messages must be a non-empty list of {role, content} strings")
        if msgs[-1]["role"] != "assistant":
            raise ValueError("messages must end with the assistant's message (the response)")
        if len(msgs) < 2:
            raise ValueError("messages need a prompt before the assistant's message")
        context, response = [{"role": m["role"], "content": m["content"]} for m in msgs[:-1]], msgs[-1]["content"]
    else:
        for key in ("prompt", "response"):
            if key not in obj or obj[key] is None:
                raise ValueError(f"missing field {key!r} (or 'messages')")
            if not isinstance(obj[key], str):
                raise ValueError(f"{key!r} must be a string, got {type(obj[key]).__name__}")
        context, response = obj["prompt"], obj["response"]
    if not response.strip():
        raise ValueError("empty response")
    return context, response


class Tokenizer:
    """Renders and tokenizes rows as :func:`score` does: ``input_ids`` = prompt tokens + response tokens."""

    def __init__(self, tokenizer, *, raw: bool = False, max_length: Optional[int] = None):
        self.tok = tokenizer
        self.chat = not raw and getattr(tokenizer, "chat_template", None) is not None
        self.max_length = max_length

    def prompt_ids(self, context) -> List[int]:
        if isinstance(context, list):
            if not self.chat:
                raise ValueError("messages need a tokenizer with a chat template (not --raw)")
            return list(self.tok.apply_chat_template(context, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False))
        if self.chat:
            return list(self.tok.apply_chat_template([{"role": "user", "content": context}],
                                                     add_generation_prompt=True, tokenize=True, return_dict=False))
        return list(self.tok(context, add_special_tokens=True)["input_ids"])

    def __call__(self, obj: dict) -> Tuple[List[int], int]:
        """``(input_ids, response_start)``, or raises ValueError with the reason."""
        context, response = _pair(obj)
        prompt = self.prompt_ids(context)
        resp = list(self.tok(response, add_special_tokens=False)["input_ids"])
        if not resp:
            raise ValueError("empty response (no tokens)")
        if not prompt:  # the first token is never predicted: a response needs something before it
            raise ValueError("empty prompt (no tokens)")
        ids = prompt + resp
        if self.max_length is not None and len(ids) > self.max_length:
            raise ValueError(f"over the model's context ({len(ids)} tokens > {self.max_length})")
        return ids, len(prompt)


def _columns_of(obj: dict) -> Dict[str, Any]:
    """The input's own columns, renamed where they clash with the output's."""
    out = {}
    for k, v in obj.items():
        out[f"input_{k}" if k in OWN_COLUMNS or k in _score_names() else k] = v
    return out


def _score_names() -> Tuple[str, ...]:
    from ..evaluate import SAMPLE_SCORES
    from ..methods.scores import SCORES
    from .generate import GEN_COLUMNS

    return tuple(SCORES) + SAMPLE_SCORES + GEN_COLUMNS


# ------------------------------------------------------------------------------------------------
# The output directory: resume, atomic parts, reading back
# ------------------------------------------------------------------------------------------------

def _out_dir(out) -> pathlib.Path:
    out = pathlib.Path(os.path.abspath(out))  # Ray's workers run elsewhere
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file; the output is a directory of Parquet files")
    return out


def _errors_path(out: pathlib.Path) -> pathlib.Path:
    name = out.name[:-len(".parquet")] if out.name.endswith(".parquet") else out.name
    return out.with_name(name + ERRORS_SUFFIX)


def done_rows(out) -> set:
    """The ``row`` values already written to ``out`` (a file that cannot be read, e.g. cut short by
    a killed run, is removed: its rows are scored again)."""
    import pyarrow.parquet as pq

    out = pathlib.Path(out)
    done: set = set()
    if not out.is_dir():
        return done
    for f in sorted(out.glob("*.parquet")):
        try:
            done.update(pq.read_table(f, columns=["row"]).column("row").to_pylist())
        except Exception as ex:  # noqa: BLE001 - any unreadable part is redone
            print(f"flashuq score: removing unreadable {f.name} ({type(ex).__name__}); its rows are redone",
                  file=sys.stderr)
            f.unlink()
    return done


def read_scores(out):
    """Every part of an output directory as one ``pyarrow.Table``, sorted by ``row`` (input order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(pathlib.Path(out).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files in {str(out)!r}")
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    return table.sort_by("row")


def _table(rows: List[dict]):
    """``pyarrow.Table.from_pylist`` over the union of the rows' keys (it takes the first row's only)."""
    import pyarrow as pa

    keys: Dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])


def _write_part(out: pathlib.Path, table, name: str) -> None:
    import pyarrow.parquet as pq

    tmp = out / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out / name)  # a part is there whole or not at all


# ------------------------------------------------------------------------------------------------
# Scoring (workers)
# ------------------------------------------------------------------------------------------------

def load_model(model, *, dtype: str = "float32"):
    """``(model, tokenizer)`` from ``"smollm2"`` (the offline SmolLM2-135M-Instruct of
    ``flashuq.models``) or a transformers checkpoint directory / hub name (offline cache)."""
    import torch

    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be 'smollm2' or a checkpoint path, got {type(model).__name__}")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be 'float32', 'bfloat16' or 'float16', got {dtype!r}")
    if str(model) == "smollm2":
        from ..models import load_smollm2

        m, tok = load_smollm2()
    else:
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(model)
        m = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        tok.padding_side = "left"  # as flashuq.models and flashuq eval set it: batched generation
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    return m.to(getattr(torch, dtype)), tok


def context_length(model) -> Optional[int]:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def load_tokenizer(model):
    """``(tokenizer, context length)`` of what :func:`load_model` loads, without loading the weights."""
    import transformers

    if str(model) == "smollm2":
        from ..models import smollm2_checkpoint

        model = smollm2_checkpoint()
    tok = transformers.AutoTokenizer.from_pretrained(model)
    cfg = transformers.AutoConfig.from_pretrained(model)
    return tok, getattr(cfg, "max_position_embeddings", None)


class Scorer:
    """Scores batches of tokenized rows (``row``, ``input_ids``, ``response_start`` and the input's
    columns) with :func:`flashuq.hf.score`; one per worker (a Ray actor, or the one process)."""

    def __init__(self, model, *, dtype: str = "float32", tokens: bool = False, threads: Optional[int] = None,
                 batch_tokens: int = 8192):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model, _ = load_model(model, dtype=dtype) if isinstance(model, (str, os.PathLike)) else (model, None)
        self.tokens = tokens
        self.batch_tokens = batch_tokens

    def score_rows(self, rows: List[dict]) -> List[dict]:
        """The output rows of ``rows`` (dicts with ``row``, ``input_ids``, ``response_start``, ``columns``)."""
        from .. import hf

        import torch

        out: List[dict] = []
        # batches of similar lengths (sorted), at most batch_tokens padded tokens each; results go
        # back in the order the rows came
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        results: Dict[int, dict] = {}
        i = 0
        while i < len(order):
            L = len(rows[order[i]]["input_ids"])
            j = i + 1
            while j < len(order) and len(rows[order[j]]["input_ids"]) * (j + 1 - i) <= self.batch_tokens:
                j += 1
            group = [rows[k] for k in order[i:j]]
            Lmax = max(len(r["input_ids"]) for r in group)
            ids = torch.zeros(len(group), Lmax, dtype=torch.long)
            attn = torch.zeros(len(group), Lmax, dtype=torch.long)
            resp = torch.zeros(len(group), Lmax, dtype=torch.long)
            for b, r in enumerate(group):  # right padding: the causal model never sees the pads
                n = len(r["input_ids"])
                ids[b, :n] = torch.as_tensor(r["input_ids"], dtype=torch.long)
                attn[b, :n] = 1
                resp[b, r["response_start"]:n] = 1
            sc = hf.score(self.model, ids, attn, resp)
            for b, r in enumerate(group):
                res = {"row": int(r["row"]), **r["columns"],
                       "response_tokens": len(r["input_ids"]) - int(r["response_start"])}
                for name, v in sc.scores.items():
                    res[name] = float(v[b])
                if self.tokens:
                    m = sc.mask[b]
                    res["token_logprob"] = sc.stats.logprob[b][m].tolist()
                    res["token_entropy"] = sc.stats.entropy[b][m].tolist()
                    res["response_ids"] = [int(t) for t in r["input_ids"][int(r["response_start"]):]]
                results[id(r)] = res
            i = j
            del L
        for r in rows:
            out.append(results[id(r)])
        return out

    def __call__(self, batch):
        """Ray Data entry point: a pyarrow batch in, a pyarrow table out."""
        import pyarrow as pa

        rows = batch.to_pylist()
        prepared = [{"row": r["row"], "input_ids": r["input_ids"], "response_start": r["response_start"],
                     "columns": json.loads(r["columns"])} for r in rows]
        return _table(self.score_rows(prepared))


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------

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


def prepare(data, tokenizer: Tokenizer, skip: Iterable[int] = ()) -> Tuple[List[dict], List[dict], int, int]:
    """Read and check ``data``: ``(rows to score, errors, rows in the input, rows skipped)``. A row to
    score is ``{"row", "input_ids", "response_start", "columns"}``; an error is ``{"row", "line",
    "reason"}``."""
    skip = set(skip)
    todo, errors, n, skipped = [], [], 0, 0
    for row, obj in _iter_input(pathlib.Path(data)):
        n += 1
        if isinstance(obj, str):
            errors.append({"row": row, "line": row + 1, "reason": obj})
            continue
        try:
            ids, start = tokenizer(obj)
        except ValueError as ex:
            errors.append({"row": row, "line": row + 1, "reason": str(ex)})
            continue
        if row in skip:
            skipped += 1
            continue
        todo.append({"row": row, "input_ids": ids, "response_start": start, "columns": _columns_of(obj)})
    return todo, errors, n, skipped


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
    data = pathlib.Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"data: no such file {str(data)!r}")
    out = _out_dir(out)
    use_ray = bool(workers) or ray_address is not None
    if use_ray:
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError as ex:
            raise ImportError("distributed scoring needs Ray Data: pip install 'flashuq[ray]' "
                              "(or run with workers=0, one process)") from ex
    if isinstance(model, (str, os.PathLike)):
        if use_ray or engine == "vllm":  # the workers (vLLM) load the weights; the driver needs the tokenizer
            loaded, (tok, ctx_len) = None, load_tokenizer(model)
        else:
            loaded, tok = load_model(model, dtype=dtype)
            ctx_len = context_length(loaded)
    elif use_ray:
        raise TypeError("model: Ray's workers load the model themselves; pass 'smollm2' or a checkpoint path")
    else:
        loaded, tok, ctx_len = model, tokenizer, context_length(model)
    if tok is None:
        raise TypeError("tokenizer: a loaded model needs its tokenizer (tokenizer=...)")
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


def ray_resources(workers: int, cpus_per_worker: Optional[int] = None, cores: Optional[int] = None) -> Tuple[int, int]:
    """``(CPUs per actor, logical CPUs of a local Ray)``: the actors share the cores, and the local
    Ray declares one logical CPU more than the actors take, so that Ray Data's own tasks (moving
    blocks, writing Parquet) always find one. An actor pool that takes every logical CPU leaves
    them none, and the dataset waits forever."""
    cores = cores or os.cpu_count() or 1
    per = cpus_per_worker or max(1, cores // workers)
    return per, workers * per + 1


def _score_on_ray(model, todo, out, run_id, *, tokens, dtype, batch_size, workers, ray_address,
                  cpus_per_worker, progress, generate=None):
    import pyarrow as pa
    import ray
    import ray.data

    per, logical = ray_resources(workers, cpus_per_worker)
    started = not ray.is_initialized()
    if started:
        init_ray(ray_address, num_cpus=logical)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # parts come out in input order
        ctx.enable_progress_bars = progress
        table = pa.Table.from_pylist([{"row": r["row"], "input_ids": r["input_ids"],
                                       "response_start": r["response_start"],
                                       "columns": json.dumps(r["columns"])} for r in todo]) if todo else None
        if table is None:
            return
        ds = ray.data.from_arrow(table).repartition(max(1, -(-len(todo) // batch_size)))
        # A killed actor is restarted and its batch retried: Ray Data's actor pools default to
        # unlimited restarts and task retries (Ray 2.60; tests/data kills one mid-run)
        kwargs = {"model": str(model), "dtype": dtype, "tokens": tokens, "threads": per}
        if generate is not None:
            kwargs["options"] = generate
        ds = ds.map_batches(Scorer if generate is None else Answerer, fn_constructor_kwargs=kwargs,
                            batch_size=batch_size, batch_format="pyarrow", concurrency=workers, num_cpus=per)
        ds.write_parquet(str(out), filename_provider=_part_names(run_id))
    finally:
        if started and ray_address is None:
            ray.shutdown()


def init_ray(address: Optional[str] = None, *, num_cpus: Optional[int] = None, **kwargs):
    """``ray.init`` as flashuq needs it: a local Ray with ``num_cpus`` logical CPUs (address None) or
    the cluster at ``address``. Ray puts the driver's working directory on its workers' ``sys.path``;
    it is started from an empty directory, so that no folder of the caller's working directory (a
    checkout's top-level ``kernels/``, say) can shadow an installed package in the workers."""
    import tempfile

    import ray

    here = os.getcwd()
    empty = tempfile.mkdtemp(prefix="flashuq-ray-")
    os.chdir(empty)
    try:
        if address is None:
            return ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, **kwargs)
        return ray.init(address=address, log_to_driver=False, **kwargs)
    finally:
        os.chdir(here)


def _part_names(run_id: str):
    """Parquet part names of one run: ``part-<run>-<task>-<block>.parquet``."""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_block(self, block, write_uuid, task_index, block_index):
            return f"part-{run_id}-{task_index:06d}-{block_index:06d}.parquet"

        def get_filename_for_row(self, row, write_uuid, task_index, block_index, row_index):
            return f"part-{run_id}-{task_index:06d}-{block_index:06d}-{row_index:06d}.parquet"

    return PartNames()


from .._checks import check_int
from .generate import Answerer, GenerateOptions, PromptTokenizer, answer_rows_vllm, load_vllm  # noqa: E402
from .qtuning import EUPlane, context_token_scores, eu_plane, select, token_keep_mask  # noqa: E402
