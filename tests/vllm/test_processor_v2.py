"""The processor behind model runner V2's interface. V2 needs triton's GPU backend (vLLM refuses it on
this CPU), so the test drives the interface itself: a stand-in for V2's sampler with V2's call order
(``add_request`` per new occupant of a slot, ``__call__`` -> ``apply(logits, LogitsContext)`` -> the
sampled tokens with ``num_sampled``), vLLM's own ``LogitsContext`` and ``SamplingParams``, rows in
another order than slots, a chunk of a prefill (``num_sampled = 0``), a slot reused by a new request, a
request that did not opt in. Every recorded value against the float64 reference of the rows."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm")
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsContext  # noqa: E402

import flashuq.vllm as fv  # noqa: E402
from flashuq.reference import token_stats as ref_stats  # noqa: E402
from flashuq.vllm.processor import FlashUQLogitsProcessor  # noqa: E402

V = 300


class Sampler:
    """Stands in for vllm.v1.worker.gpu.sample.sampler.Sampler: same entry points, same order."""

    def __init__(self, processor):
        self.processor = processor
        self.seen = []

    def add_request(self, slot, params):
        return self.processor.add_request(slot, params)

    def __call__(self, logits, input_batch):
        ctx, num_sampled = input_batch
        self.seen.append(logits.clone())
        out = self.processor.apply(logits.clone(), ctx)
        assert torch.equal(out, self.seen[-1])  # logits unchanged
        processed = logits / 0.8 - 0.3 * torch.arange(V)  # later stages edit the logits: not what is recorded
        sampled = processed.argmax(-1).to(torch.int32)
        return SimpleNamespace(sampled_token_ids=sampled[:, None], num_sampled=num_sampled)


def context(slots, pos):
    slots = np.asarray(slots)
    return LogitsContext(expanded_idx_mapping=torch.tensor(slots), idx_mapping=torch.tensor(slots), idx_mapping_np=slots,
                         expanded_local_pos=torch.zeros(len(slots), dtype=torch.int64),
                         input_ids=torch.zeros(len(slots), dtype=torch.int64), pos=torch.tensor(pos),
                         seq_lens_upper_bound_np=np.asarray(pos) + 1)


def params(key=None, **opts):
    sp = vllm.SamplingParams(temperature=opts.pop("T", 1.0))
    if key is not None:
        sp = fv.opt_in(sp, key, **opts)
    return sp


def test_v2_interface_records_each_request_by_slot_and_position():
    prompt_len = torch.tensor([5, 3, 4, 0], dtype=torch.int32)
    proc = FlashUQLogitsProcessor(None, SimpleNamespace(prompt_len=SimpleNamespace(cpu=prompt_len)))
    sampler = Sampler(proc)
    assert sampler.add_request(0, params("a", topk=3)) is True
    assert sampler.add_request(1, params()) is False            # did not opt in
    assert sampler.add_request(2, params("b", T=0.5, temperature="sampling", renyi=True)) is True
    g = torch.Generator().manual_seed(0)
    steps = []

    def step(slots, pos, num_sampled):
        logits = torch.randn(len(slots), V, generator=g) * 3
        out = sampler(logits, (context(slots, pos), torch.tensor(num_sampled)))
        steps.append((list(slots), list(pos), logits, out.sampled_token_ids[:, 0].long(), list(num_sampled)))

    step([0, 1, 2], [4, 2, 1], [1, 1, 0])   # a and the plain request end their prefill; b is mid-prefill
    step([0, 1, 2], [5, 3, 3], [1, 1, 1])   # a: 2nd token; b ends its prefill
    assert type(sampler).__name__ == "Sampler" and getattr(type(sampler), "_flashuq_hooked", False)
    sampler.add_request(0, params("c", topk=3))                 # a finished; c takes its slot
    step([2, 1, 0], [4, 4, 4], [1, 1, 1])   # rows in another order than the slots
    step([1], [5], [1])                      # nothing opted in: no kernel
    assert proc.recorder.steps == 3

    # what each request emitted: the sampled tokens of its real rows, in order
    emitted = {"a": [], "b": [], "c": []}
    owner = [{0: "a", 2: "b"}, {0: "a", 2: "b"}, {0: "c", 2: "b"}, {}]
    for (slots, pos, logits, tok, ns), who in zip(steps, owner):
        for r, s in enumerate(slots):
            if s in who and ns[r]:
                emitted[who[s]].append((logits[r], int(tok[r])))
    recs = proc.recorder.fetch(["a", "b", "c", "nobody"])
    assert set(recs) == {"a", "b", "c"}
    for key, T, topk, renyi in (("a", 1.0, 3, False), ("b", 0.5, 0, True), ("c", 1.0, 3, False)):
        rows = torch.stack([x for x, _ in emitted[key]])
        toks = torch.tensor([t for _, t in emitted[key]])
        gen = fv.collect(SimpleNamespace(outputs=[SimpleNamespace(token_ids=toks.tolist())]), recs[key])
        s, ref = gen.stats[0], ref_stats(rows, toks, temperature=T, topk=topk, renyi=renyi)
        assert gen.covered[0].all() and s.logprob.shape[0] == len(emitted[key]) == (2 if key != "c" else 1)
        for f in ("lse", "logprob", "max_logprob", "entropy", "margin", "collision", "kurtosis", "self_certainty"):
            torch.testing.assert_close(getattr(s, f).double(), getattr(ref, f), rtol=1e-5, atol=1e-5, msg=f)
        assert torch.equal(s.argmax, ref.argmax)
        if topk:
            assert torch.equal(s.topk_ids, ref.topk_ids)
        if renyi:
            torch.testing.assert_close(s.fisher_rao.double(), ref.fisher_rao, rtol=1e-5, atol=1e-6)
    assert proc.recorder.fetch(["a", "b", "c"]) == {}


def test_v2_rows_per_request_other_than_one_are_left_alone():
    # speculative decoding gives several rows per request: not supported, so nothing is recorded
    proc = FlashUQLogitsProcessor(None, SimpleNamespace(prompt_len=SimpleNamespace(cpu=torch.tensor([2, 2]))))
    sampler = Sampler(proc)
    sampler.add_request(0, params("a"))
    logits = torch.randn(3, V)
    ctx = context([0, 0], [1, 2])  # 2 requests' mapping, 3 rows
    assert torch.equal(proc.apply(logits, ctx), logits)
    assert proc.recorder.steps == 0
