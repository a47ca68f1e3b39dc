"""Loading the model and scoring batches of tokenized rows: the work of one worker (a Ray actor, or
the one process) of :func:`flashuq.data.score`."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

from .store import _table


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
