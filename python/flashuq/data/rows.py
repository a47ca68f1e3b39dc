"""Reading and checking the input of :func:`flashuq.data.score` (on the driver, where row numbers and
resume are known): JSONL or Parquet rows, each a (prompt, response) pair or chat ``messages``,
rendered and tokenized as the model will see them (docs/data.md)."""

from __future__ import annotations

import json
import pathlib
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from .store import OWN_COLUMNS


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
