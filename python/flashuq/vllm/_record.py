"""What flashuq's vLLM logits processors share: the per-request options, and the recorder that turns
each step's logits rows into token statistics kept per request until they are fetched.

Engine-agnostic on purpose (no vLLM import): ``processor.py`` (one class with vLLM's V1 interface and
model runner V2's) only translates the engine's batch bookkeeping into calls of :class:`Recorder`:

* ``open(options, ...)`` when an opted-in request enters the batch (again, after a preemption);
* ``step(logits, entries)`` once per step, on the rows of the opted-in requests: one
  ``fuq.token_stats`` launch per (temperature, top-k, renyi) group, and a copy of those rows kept
  until the sampler has picked this step's tokens (nothing of size V outlives the step);
* ``sampled(tokens)`` right after the sampler: the emitted tokens and their log-probabilities under
  the recorded distribution, gathered on the device (no host synchronisation);
* ``fetch(keys)``: the records of those keys as numpy arrays, then freed.

A step is *real* when its token was kept: vLLM also samples (and discards) a token for a request whose
prompt is still being prefilled in chunks, and a preempted request is recomputed. Each step carries
``L``, the number of tokens the request had emitted before it; :func:`resolve` keeps, for each output
position, the real step of that position (see docs/vllm.md).
"""

from __future__ import annotations

import collections
import itertools
import json
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

#: SamplingParams.extra_args key that opts a request in
EXTRA_ARGS_KEY = "flashuq"
#: unfetched keys a processor keeps; beyond it the oldest are dropped (a client that never fetches)
MAX_KEYS = 4096
MAX_TOPK = 64
STAT_FIELDS = ("lse", "max_logprob", "argmax", "entropy", "margin", "collision", "kurtosis", "self_certainty")
TEMPERATURES = ("model", "sampling")


class OptionTypeError(TypeError, ValueError):
    """A wrong type in ``extra_args["flashuq"]``: a TypeError, and a ValueError too, so that vLLM turns
    it into its request validation error (HTTP 400) like the other refused options."""


@dataclass(frozen=True)
class Options:
    """The per-request options, from ``SamplingParams.extra_args["flashuq"]``.

    key: the name the records are fetched by (``flashuq.vllm.generate`` sets a fresh one).
    topk: also record the ``topk`` (0–64) largest log-probabilities and their ids.
    temperature: ``"model"`` (default): statistics of ``softmax(logits)``, the model's distribution as
        vLLM hands the logits over; ``"sampling"``: of ``softmax(logits / T)`` with the request's
        sampling temperature T (greedy requests: T = 1).
    renyi: also the tempered terms of RenyiNeg and Fisher–Rao (``fuq.token_stats(renyi=True)``).
    """

    key: str
    topk: int = 0
    temperature: str = "model"
    renyi: bool = False


def parse_options(extra_args) -> Optional[Options]:
    """``Options`` of a request, None when it did not opt in. ``extra_args["flashuq"]``: a dict, or its
    JSON text (what an OpenAI-server request can carry in ``vllm_xargs``). Raises ValueError (a bad value) or
    :class:`OptionTypeError` (a wrong type) naming the option."""
    if not extra_args or EXTRA_ARGS_KEY not in extra_args:
        return None
    raw = extra_args[EXTRA_ARGS_KEY]
    if isinstance(raw, str):  # vLLM's server passes vllm_xargs values as str/int/float only: JSON text
        try:
            raw = json.loads(raw)
        except ValueError as ex:
            raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}] must be a dict of options or its JSON text; the "
                             f"text is not JSON ({ex})") from None
    if not isinstance(raw, dict):
        raise OptionTypeError(f"extra_args[{EXTRA_ARGS_KEY!r}] must be a dict of options or its JSON text, got "
                              f"{type(raw).__name__}")
    unknown = sorted(set(raw) - {"key", "topk", "temperature", "renyi"})
    if unknown:
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}]: unknown option(s) {', '.join(map(repr, unknown))}; "
                         "known: key, topk, temperature, renyi")
    key = raw.get("key")
    if not isinstance(key, str):
        raise OptionTypeError(f"extra_args[{EXTRA_ARGS_KEY!r}]['key'] must be a str (the name the results are "
                              f"fetched by), got {type(key).__name__}")
    if not 0 < len(key) <= 256:
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}]['key'] must have 1 to 256 characters, got {len(key)}")
    topk = raw.get("topk", 0)
    if isinstance(topk, bool) or not isinstance(topk, int):
        raise OptionTypeError(f"extra_args[{EXTRA_ARGS_KEY!r}]['topk'] must be an int, got {type(topk).__name__}")
    if not 0 <= topk <= MAX_TOPK:
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}]['topk'] must be in [0, {MAX_TOPK}], got {topk}")
    temperature = raw.get("temperature", "model")
    if not isinstance(temperature, str):
        raise OptionTypeError(f"extra_args[{EXTRA_ARGS_KEY!r}]['temperature'] must be a str, "
                              f"got {type(temperature).__name__}")
    if temperature not in TEMPERATURES:
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}]['temperature'] must be 'model' or 'sampling', "
                         f"got {temperature!r}")
    renyi = raw.get("renyi", False)
    if not isinstance(renyi, bool):
        raise OptionTypeError(f"extra_args[{EXTRA_ARGS_KEY!r}]['renyi'] must be a bool, got {type(renyi).__name__}")
    return Options(key, topk, temperature, renyi)


def stats_temperature(options: Options, sampling_temperature: float) -> float:
    """The temperature of the recorded distribution."""
    if options.temperature == "sampling" and sampling_temperature is not None and sampling_temperature > 1e-5:
        return float(sampling_temperature)
    return 1.0


def _index(ids: List[int], device):
    """Rows to take: a slice for a run of consecutive ids (no host-to-device copy, views), else an
    index tensor on ``device``."""
    first = ids[0]
    if ids == list(range(first, first + len(ids))):
        return slice(first, first + len(ids))
    return torch.tensor(ids, dtype=torch.int64).to(device, non_blocking=True)


def _take(t: torch.Tensor, rows):
    return t[rows] if isinstance(rows, slice) else t.index_select(0, rows)


class _Batch:
    """The results of one ``step`` group: field tensors of ``k`` rows, plus the emitted tokens and
    their log-probabilities once the sampler has run."""

    __slots__ = ("fields", "L", "tokens", "logprob", "real", "snapshot", "source", "rows", "inv_temp", "order", "host")

    def __init__(self, fields, L, rows, snapshot, inv_temp, order):
        self.fields = fields
        self.L = L
        self.rows = rows
        self.snapshot = snapshot
        self.inv_temp = inv_temp
        self.order = order
        self.tokens = None
        self.logprob = None
        self.real = None
        self.source = None
        self.host = None  # the batch's columns as numpy, made once at fetch time


class Record:
    """One residency of an opted-in request in the batch (a preempted request gets a new record when it
    comes back). ``output`` is the engine's live list of the request's output tokens when it has one
    (V1), used to tell real steps from discarded ones."""

    __slots__ = ("options", "temperature", "entries", "Ls", "output", "seen_len", "bias")

    def __init__(self, options: Options, temperature: float, output: Optional[list], bias: bool = False):
        self.options = options
        self.bias = bias  # the request has a logit bias: its recorded logits differ from the model's output
        self.temperature = temperature
        self.entries: List[tuple] = []   # (batch, index in batch)
        self.Ls: List[int] = []          # host copy of each entry's L, when the engine gives it on the host
        self.output = output
        self.seen_len = -1

    def observe(self) -> None:
        """Note how many tokens the request has emitted so far (V1: a placeholder -1 counts)."""
        if self.output is not None:
            self.seen_len = max(self.seen_len, len(self.output))

    def detach(self) -> None:
        self.observe()
        self.output = None


class Recorder:
    def __init__(self, max_keys: int = MAX_KEYS):
        self.records: Dict[str, List[Record]] = collections.OrderedDict()
        self.pending: List[_Batch] = []
        self.max_keys = max_keys
        self.dropped_keys = 0
        self._order = itertools.count()
        self.steps = 0  # steps with at least one opted-in row (for tests and benchmarks)
        self.seconds = 0.0  # wall time spent in step() and sampled() (host side; for benchmarks)
        self.copied_rows = 0  # rows copied because no untouched source was at hand

    # -- bookkeeping ------------------------------------------------------------------------------
    def open(self, options: Options, sampling_temperature: float, output: Optional[list] = None,
             bias: bool = False) -> Record:
        rec = Record(options, stats_temperature(options, sampling_temperature), output, bias)
        recs = self.records.get(options.key)
        if recs is None:
            recs = self.records[options.key] = []
            while len(self.records) > self.max_keys:
                self.records.popitem(last=False)
                self.dropped_keys += 1
        recs.append(rec)
        return rec

    # -- the step ---------------------------------------------------------------------------------
    def step(self, logits: torch.Tensor, entries: Sequence[tuple], L_device: Optional[torch.Tensor] = None,
             source: Optional[torch.Tensor] = None) -> None:
        """Record the rows ``entries = [(row, record, L)]`` of this step's ``logits [rows, V]``. ``L``
        is a host int (V1), or None with ``L_device [len(entries)]`` given (V2).

        The emitted token's log-probability is gathered after sampling, when later stages have edited
        ``logits`` in place: from ``source`` when the caller has a tensor with the same values at the
        sampled tokens that nothing edits (V1: the model's output, which vLLM converted into ``logits``),
        else from a copy of the rows taken here."""
        from ..ops.token_stats import token_stats

        self.pending = []
        if not entries:
            return
        t0 = time.perf_counter()
        self.steps += 1
        groups: Dict[tuple, List[int]] = {}
        for j, (_, rec, _) in enumerate(entries):
            o = rec.options
            groups.setdefault((rec.temperature, o.topk, o.renyi), []).append(j)
        dev = logits.device
        for (temp, topk, renyi), js in groups.items():
            row_list = [entries[j][0] for j in js]
            rows = _index(row_list, dev)
            if isinstance(rows, slice):  # a run of rows: a view, no copy
                block = logits[rows]
                snap = None if source is not None else block.clone()
            else:
                block = snap = logits.index_select(0, rows)
            n = len(row_list)
            if snap is not None:
                self.copied_rows += n
            s = token_stats(block if snap is None else snap, temperature=temp, topk=topk, renyi=renyi)
            fields = {f: getattr(s, f) for f in STAT_FIELDS}
            if topk:
                fields["topk_logprobs"], fields["topk_ids"] = s.topk_logprobs, s.topk_ids
            if renyi:
                fields["renyi_term"], fields["fisher_rao"] = s.renyi_term, s.fisher_rao
            if L_device is None:
                L = torch.tensor([entries[j][2] for j in js], dtype=torch.int64)
            else:
                L = _take(L_device, _index(js, dev))
            b = _Batch(fields, L, rows, snap if source is None else None, 1.0 / temp, next(self._order))
            b.source = source
            for i, j in enumerate(js):
                _, rec, Lj = entries[j]
                rec.entries.append((b, i))
                if Lj is not None:
                    rec.Ls.append(Lj)
            self.pending.append(b)
        self.seconds += time.perf_counter() - t0

    def sampled(self, tokens: torch.Tensor, num_sampled: Optional[torch.Tensor] = None) -> None:
        """This step's sampled tokens ``[rows]`` (the sampler's output, on the device); with
        ``num_sampled [rows]`` (V2) a row that emitted nothing (a chunk of a prefill) is not real."""
        t0 = time.perf_counter()
        for b in self.pending:
            tok = _take(tokens, b.rows).to(torch.int64)
            if b.source is None:
                x = b.snapshot.gather(1, tok.clamp(0, b.snapshot.shape[1] - 1)[:, None])[:, 0]
            elif isinstance(b.rows, slice):
                x = b.source[b.rows].gather(1, tok.clamp(0, b.source.shape[1] - 1)[:, None])[:, 0]
            else:  # one element per row, not the rows
                x = b.source[b.rows, tok.clamp(0, b.source.shape[1] - 1)]
            x = x.float()
            b.logprob = x * b.inv_temp - b.fields["lse"]
            b.tokens = tok
            if num_sampled is not None:
                b.real = _take(num_sampled, b.rows) > 0
            b.snapshot = b.source = None
        self.pending = []
        self.seconds += time.perf_counter() - t0

    def abandon_step(self) -> None:
        """The sampler did not report back (no hook): drop the step's rows (logprob stays unknown)."""
        for b in self.pending:
            b.snapshot = b.source = None
        self.pending = []

    # -- results ----------------------------------------------------------------------------------
    def fetch(self, keys: Sequence[str], free: bool = True) -> Dict[str, List[dict]]:
        """``{key: [record, ...]}`` with each record as lists over its real steps: ``order`` (global step
        order), ``L``, ``token``, ``logprob``, the statistics fields; the records are freed."""
        out = {}
        for key in keys:
            recs = self.records.pop(key, None) if free else self.records.get(key)
            if recs is None:
                continue
            out[key] = [_export(r) for r in recs]
        return out


def _host(b: _Batch) -> dict:
    """A batch's columns as numpy arrays (converted once, shared by every record that uses the batch)."""
    if b.host is None:
        k = b.L.shape[0]
        known = b.tokens is not None
        cols = {"order": np.full(k, b.order, dtype=np.int64), "L": b.L.cpu().numpy(),
                "token": b.tokens.cpu().numpy() if known else np.full(k, -1, dtype=np.int64),
                "logprob": b.logprob.cpu().numpy() if known else np.full(k, np.nan, dtype=np.float32),
                "_real": b.real.cpu().numpy() if b.real is not None else np.ones(k, dtype=bool)}
        cols.update({f: t.cpu().numpy() for f, t in b.fields.items()})
        b.host = cols
    return b.host


def _export(rec: Record) -> dict:
    rec.observe()
    res = {"temperature": rec.temperature, "topk": rec.options.topk, "renyi": rec.options.renyi}
    if not rec.entries:
        res.update(order=[], L=[], token=[], logprob=[])
        return res
    # one gather per column over every batch the record touched (entries are in step order)
    batches, where = {}, []
    for b, i in rec.entries:
        slot = batches.setdefault(id(b), (len(batches), b))[0]
        where.append((slot, i))
    hosts = [_host(b) for _, b in sorted(batches.values(), key=lambda t: t[0])]
    offsets = np.cumsum([0] + [len(h["L"]) for h in hosts])
    idx = np.fromiter((offsets[sl] + i for sl, i in where), dtype=np.int64, count=len(where))
    arr = {f: np.concatenate([h[f] for h in hosts])[idx] for f in hosts[0]}
    order = np.argsort(arr["order"], kind="stable")
    arr = {f: v[order] for f, v in arr.items()}
    real = arr.pop("_real")
    if rec.Ls:  # V1: the last step at each L is real once the request emitted more than L tokens
        L = arr["L"]
        last = np.ones(len(L), dtype=bool)
        last[:-1] = L[:-1] != L[1:]
        real &= last & (L < rec.seen_len)
    # plain lists: vLLM's RPC transport does not bring numpy arrays back as arrays (see as_arrays)
    res.update({f: v[real].tolist() for f, v in arr.items()})
    return res


_INT_FIELDS = ("order", "L", "token", "argmax", "topk_ids")


def as_arrays(record: dict) -> dict:
    """A record as numpy arrays again (vLLM's RPC transport may hand them over as lists)."""
    out = {}
    for f, v in record.items():
        if f in ("temperature", "topk", "renyi"):
            out[f] = v
        else:
            a = np.asarray(v, dtype=np.int64 if f in _INT_FIELDS else np.float32)
            out[f] = a.reshape(len(a), record["topk"]) if f.startswith("topk_") else a
    return out


def resolve(records: Sequence[dict], token_ids: Sequence[int]):
    """The statistics of one completion ``token_ids`` (length n) from the records of its key: the records
    whose real steps agree with ``token_ids`` at every position they cover, merged; for each position the
    latest step. Returns ``(fields {name: [n] array}, covered [n] bool)``; an uncovered position holds NaN
    (-1 in the id fields)."""
    records = [as_arrays(r) for r in records]
    tok = np.asarray(token_ids, dtype=np.int64)
    n = len(tok)
    picked: Dict[int, tuple] = {}
    for r in records:
        L = r["L"]
        inside = (L >= 0) & (L < n)
        if not np.array_equal(r["token"][inside], tok[L[inside]]):
            continue  # another completion of the same request (n > 1), or nothing of this one
        for i in np.nonzero(inside)[0]:
            p = picked.get(int(L[i]))
            if p is None or r["order"][i] > p[0]["order"][p[1]]:
                picked[int(L[i])] = (r, i)
    names = [f for f in (records[0] if records else {}) if f not in ("order", "L", "token", "temperature", "topk",
                                                                      "renyi")]
    out = {}
    for f in names:
        proto = records[0][f]
        width = max((r[f].shape[1] for r in records if f in r and r[f].ndim == 2), default=None)
        shape = (n,) if proto.ndim == 1 and width is None else (n, width if width is not None else 0)
        fill = -1 if f in _INT_FIELDS else np.nan
        a = np.full(shape, fill, dtype=np.int64 if f in _INT_FIELDS else np.float32)
        for pos, (r, i) in picked.items():
            if f in r:
                a[pos] = r[f][i]
        out[f] = a
    covered = np.zeros(n, dtype=bool)
    covered[list(picked)] = True
    return out, covered
