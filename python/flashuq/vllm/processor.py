"""flashuq's vLLM logits processor: token statistics of opted-in requests, recorded inside vLLM's
sampler on the logits vLLM already has (see docs/vllm.md).

One class serves both of vLLM 0.32's model runners, so that whichever runner vLLM picks loads it:

* the **V1** interface (``vllm.v1.sample.logits_processor``; the CPU backend's runner, and CUDA's
  when model runner V2 is off): ``update_state(BatchUpdate)`` tracks added / removed / moved
  requests by batch index, ``apply(logits)`` gets one row per request, after allowed-token ids,
  bad words and logit bias, before penalties and temperature. The processor is not
  argmax-invariant, so vLLM also calls it on all-greedy batches.
* **model runner V2** (``vllm.v1.worker.gpu.sample.logits_processor``; the default on CUDA when
  triton imports): ``add_request(slot, params)`` per new occupant of a slot, ``apply(logits, ctx)``
  with ``ctx.idx_mapping_np`` (row -> slot, on the host) and ``ctx.pos``; V2 calls custom processors
  after its bias, penalty, bad-words and grammar stages, so there the recorded distribution
  includes penalties.

It leaves the logits unchanged. Requests opt in through ``SamplingParams.extra_args["flashuq"]``
(:class:`flashuq.vllm._record.Options`); requests that did not are never touched, and a batch
without any runs no kernel. For the opted-in rows it runs ``fuq.token_stats`` once per step.

The emitted token's log-probability needs the token, which the sampler picks after the processors:
on its first call the processor finds the vLLM sampler that called it (a few frames up) and wraps
it, so that right after sampling the tokens of the recorded rows are gathered from a copy of those
rows, kept only for that step, on the device. V2 also reports ``num_sampled`` per row (0 for a chunk
of a prefill); V1's discarded samples are recognised on the host from the request's output list.
"""

from __future__ import annotations

import sys
import weakref

import numpy as np
import torch
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor import LogitsProcessor as _V1

from ._record import Recorder, _index, _take, parse_options

try:  # model runner V2's interface (import-light by design)
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as _V2
except ImportError:  # a vLLM without it
    _V2 = object

#: every live processor of this process (the worker extension fetches through them)
PROCESSORS: "weakref.WeakSet[FlashUQLogitsProcessor]" = weakref.WeakSet()


class FlashUQLogitsProcessor(_V1, _V2):
    """Token statistics of opted-in requests, recorded per step; see the module docstring."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        parse_options(sampling_params.extra_args)

    def __init__(self, vllm_config, *args) -> None:
        # V1: (vllm_config, device, is_pin_memory); V2: (vllm_config, req_states)
        self.v2 = len(args) == 1
        self.req_states = args[0] if self.v2 else None
        self.recorder = Recorder()
        self.slots: dict = {}  # V1: batch index -> Record; V2: request slot -> Record
        self.hooked = False
        PROCESSORS.add(self)

    # -- V1 ----------------------------------------------------------------------------------------
    def is_argmax_invariant(self) -> bool:
        return False  # vLLM skips argmax-invariant processors on all-greedy batches

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        if not self.hooked and batch_update.added:
            self._hook_sampler(sys._getframe(1))
        for i in batch_update.removed:  # finished, preempted or not scheduled this step
            rec = self.slots.pop(i, None)
            if rec is not None:
                rec.detach()
        for i, params, _prompt, output in batch_update.added:
            old = self.slots.pop(i, None)
            if old is not None:
                old.detach()
            opts = parse_options(params.extra_args)
            if opts is not None:
                self.slots[i] = self.recorder.open(opts, params.temperature, output, bool(params.logit_bias))
        for a, b, direction in batch_update.moved:
            ra, rb = self.slots.pop(a, None), self.slots.pop(b, None)
            if direction == MoveDirectionality.SWAP:
                if rb is not None:
                    self.slots[a] = rb
            elif rb is not None:  # a one-way move replaces b's occupant
                rb.detach()
            if ra is not None:
                self.slots[b] = ra

    # -- V2 ----------------------------------------------------------------------------------------
    def add_request(self, req_idx: int, sampling_params) -> bool:
        if not self.hooked:
            self._hook_sampler(sys._getframe(1))
        old = self.slots.pop(req_idx, None)
        if old is not None:
            old.detach()
        opts = parse_options(sampling_params.extra_args)
        if opts is not None:
            self.slots[req_idx] = self.recorder.open(opts, sampling_params.temperature)
        # the logits stay unchanged, but V2 calls apply() only on batches where some processor asked
        return opts is not None

    def apply_staged_writes(self) -> None:
        pass

    # -- both --------------------------------------------------------------------------------------
    def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        if self.recorder.pending:  # the sampler did not report back for the previous step
            self.recorder.abandon_step()
        if not self.slots:
            return logits
        if not self.hooked:
            self._hook_sampler(sys._getframe(1))
            if not self.hooked:
                import warnings

                self.hooked = True  # warn once
                warnings.warn("flashuq: vLLM's sampler was not found; emitted-token log-probabilities stay NaN",
                              RuntimeWarning, stacklevel=2)
        if ctx is None:
            self._apply_v1(logits)
        else:
            self._apply_v2(logits, ctx)
        return logits

    def _apply_v1(self, logits: torch.Tensor) -> None:
        entries = []
        bias = False
        for row in sorted(self.slots):
            rec = self.slots[row]
            rec.observe()
            bias |= rec.bias
            entries.append((row, rec, len(rec.output) if rec.output is not None else 0))
        # The model's output, when vLLM converted it into a new float32 tensor (bf16/fp16 models) and
        # only masks came before us, holds exactly our values at any token the sampler can pick: the
        # emitted tokens' logits are then gathered from it after sampling, and no row is copied.
        src = _CALL.logits_in
        if (src is None or bias or not _CALL.raw_ok or src.shape != logits.shape
                or src.data_ptr() == logits.data_ptr()):
            src = None
        self.recorder.step(logits, entries, source=src)

    def _apply_v2(self, logits: torch.Tensor, ctx) -> None:
        slots = np.asarray(ctx.idx_mapping_np)
        if logits.shape[0] != slots.shape[0]:
            return  # speculative decoding (several rows per request) is not supported: nothing recorded
        rows = [r for r in range(slots.shape[0]) if int(slots[r]) in self.slots]
        if not rows:
            return
        dev = logits.device
        ix = _index(rows, dev)  # a slice in the usual case: nothing crosses to the device
        prompt_len = _device_view(self.req_states.prompt_len, dev).index_select(0, _take(ctx.idx_mapping, ix))
        # L = tokens emitted before this row's token: its position + 1 - the prompt's length
        L = _take(ctx.pos, ix).to(torch.int64) + 1 - prompt_len.to(torch.int64)
        self.recorder.step(logits, [(r, self.slots[int(slots[r])], None) for r in rows], L_device=L)

    def _hook_sampler(self, frame) -> None:
        """Wrap the sampler of the model runner that calls us: it is the caller itself (V2's
        ``Sampler.add_request``, V1's ``Sampler.apply_logits_processors``) or the ``sampler`` of an
        object a few frames up (V1's model runner, which refreshes the batch before the forward pass).
        Done before the first step, so that no step goes unreported."""
        for _ in range(8):
            if frame is None:
                break
            owner = frame.f_locals.get("self")
            for cand in (owner, getattr(owner, "sampler", None)):
                if cand is not None and type(cand).__name__.endswith("Sampler"):
                    _wrap_sampler(cand)
                    self.hooked = True
                    return
            frame = frame.f_back


def _device_view(buf, device):
    """A buffer of V2's request state (UVA-backed or staged) as a tensor on ``device``."""
    for attr in ("gpu", "uva", "cpu"):
        t = getattr(buf, attr, None)
        if isinstance(t, torch.Tensor) and t.device.type == device.type:
            return t
    if isinstance(buf, torch.Tensor):
        return buf.to(device)
    return torch.from_numpy(np.asarray(buf.np)).to(device)


class _SamplerCall:
    """What the wrapped V1 sampler is doing right now (set around its forward)."""

    logits_in = None  # the logits the sampler was handed
    raw_ok = False    # the processors before ours only mask: no value differs at a sampleable token


_CALL = _SamplerCall()
_MASKS_ONLY = ("MinTokensLogitsProcessor",)  # and LogitBias, which records flag per request


def _raw_ok(metadata) -> bool:
    procs = getattr(getattr(metadata, "logitsprocs", None), "non_argmax_invariant", ())
    for p in procs:
        if isinstance(p, FlashUQLogitsProcessor):
            return True
        if type(p).__name__ not in _MASKS_ONLY + ("LogitBiasLogitsProcessor",):
            return False
    return False


def _report(out) -> None:
    num_sampled = getattr(out, "num_sampled", None)  # V2 only
    for p in list(PROCESSORS):
        if p.recorder.pending:
            p.recorder.sampled(out.sampled_token_ids[:, 0], num_sampled)


def _wrap_sampler(sampler) -> None:
    """V1's Sampler is an nn.Module: its ``forward`` instance attribute is what ``__call__`` runs. V2's
    is called through ``__call__``, a special method looked up on the type: swap in a subclass."""
    if getattr(sampler, "_flashuq_hooked", False):
        return
    if isinstance(sampler, torch.nn.Module):
        original = sampler.forward

        def forward(*args, **kwargs):
            _CALL.logits_in = kwargs.get("logits", args[0] if args else None)
            _CALL.raw_ok = _raw_ok(kwargs.get("sampling_metadata", args[1] if len(args) > 1 else None))
            try:
                out = original(*args, **kwargs)
            finally:
                _CALL.logits_in = None
            _report(out)
            return out

        sampler.forward = forward
        sampler._flashuq_hooked = True
        return
    cls = type(sampler)

    def __call__(self, *args, **kwargs):
        out = cls.__call__(self, *args, **kwargs)
        _report(out)
        return out

    sampler.__class__ = type(cls.__name__, (cls,), {"__call__": __call__, "_flashuq_hooked": True})
