"""flashuq.vllm with vLLM's other ways to run: the engine in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and ``AsyncLLM`` (what servers and Ray Data use); and against
transformers: ``fv.generate``'s greedy answers and statistics equal ``fuq.hf.generate``'s on the same
checkpoint. Both engines run the model in float32 there (vLLM's CPU backend defaults to bf16)."""

import asyncio
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm")

import flashuq.vllm as fv  # noqa: E402

from vllm_cases import check_against_vllm  # noqa: E402

PROMPTS = ["The capital of France is", "1, 2, 3,", "Hello, my name is"]

IN_PROCESS = r"""
import json, sys
import flashuq.vllm as fv
from vllm import SamplingParams
llm = fv.LLM(sys.argv[1], dtype="float32", max_model_len=128, enforce_eager=True, seed=0)
gens = fv.generate(llm, json.loads(sys.argv[2]), SamplingParams(max_tokens=8, temperature=0))
print("RESULT" + json.dumps([{"tokens": list(g.output.outputs[0].token_ids), "covered": bool(g.covered[0].all()),
                              **{f: getattr(g.stats[0], f).tolist() for f in ("logprob", "entropy", "margin",
                                 "max_logprob", "kurtosis")}} for g in gens]))
"""


def test_in_process_float32_engine_agrees_with_transformers(smollm2_dir, tmp_path):
    # the engine in the test's own child process (VLLM_ENABLE_V1_MULTIPROCESSING=0: no engine-core
    # process, the processor and the worker extension run right there)
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run([sys.executable, "-c", IN_PROCESS, smollm2_dir, json.dumps(PROMPTS)], capture_output=True,
                       text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    got = json.loads(r.stdout.split("RESULT", 1)[1].splitlines()[0])

    import transformers

    from flashuq import hf

    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    for prompt, g in zip(PROMPTS, got):
        enc = tok([prompt], return_tensors="pt")
        with torch.no_grad():
            h = hf.generate(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=8,
                            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        n = int(h.mask[0].sum())
        assert g["covered"] and h.new_tokens[0][:n].tolist() == g["tokens"], prompt
        for f in ("logprob", "entropy", "margin", "max_logprob"):
            np.testing.assert_allclose(g[f], getattr(h.stats, f)[0][:n].double().numpy(), rtol=1e-3, atol=1e-3,
                                       err_msg=f"{prompt}: {f}")
        np.testing.assert_allclose(g["kurtosis"], h.stats.kurtosis[0][:n].double().numpy(), rtol=1e-3)


TENSOR_PARALLEL = r"""
import json, sys
import flashuq.vllm as fv
from vllm import SamplingParams
from vllm_cases import vllm_logprobs
llm = fv.LLM(sys.argv[1], tensor_parallel_size=2, max_model_len=128, enforce_eager=True, seed=0, max_logprobs=-1)
p = fv.opt_in(SamplingParams(max_tokens=6, temperature=0, logprobs=-1), "tp")
out = llm.generate(["The capital of France is"], [p])[0]
ranks = llm.collective_rpc("flashuq_fetch", args=(["tp"], False))
g = fv.collect(out, fv.fetch(llm, ["tp"])["tp"])
print("RESULT" + json.dumps({"ranks": ranks, "tokens": list(out.outputs[0].token_ids), "logprobs": vllm_logprobs(
    out.outputs[0]).tolist(), "covered": bool(g.covered[0].all()), "entropy": g.stats[0].entropy.tolist()}))
"""


def test_tensor_parallel_2_ranks_record_the_same_rank_0_answers(smollm2_dir, tmp_path):
    # SmolLM2-135M has 9 attention heads, so TP = 2 needs another model: a config-built Llama with 4
    # heads of 64 dims (random weights) and SmolLM2's tokenizer. On this 2-core machine vLLM's CPU
    # backend binds one core per rank only when told (VLLM_CPU_OMP_THREADS_BIND="0|1").
    import transformers

    from flashuq.reference import token_stats as ref_stats

    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0|1", "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    r = subprocess.run([sys.executable, "-c", TENSOR_PARALLEL, str(tmp_path / "m")], capture_output=True, text=True,
                       timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    got = json.loads(r.stdout.split("RESULT", 1)[1].splitlines()[0])
    assert len(got["ranks"]) == 2 and got["ranks"][0] == got["ranks"][1]  # every rank recorded the same
    assert got["covered"]
    ref = ref_stats(torch.tensor(got["logprobs"], dtype=torch.float64), torch.tensor(got["tokens"]))
    np.testing.assert_allclose(got["entropy"], ref.entropy.numpy(), rtol=2e-4, atol=5e-5)


def test_async_llm(smollm2_dir):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(**fv.engine_kwargs(model=smollm2_dir, max_model_len=128, enforce_eager=True, seed=0,
                                              max_logprobs=-1))

    async def run():  # the engine lives in one event loop, as in a server
        with fv.children_without_cwd_on_path():
            engine = AsyncLLM.from_engine_args(args)
        try:
            sp = vllm.SamplingParams(max_tokens=6, temperature=0, logprobs=-1)
            gens = await asyncio.gather(*[fv.agenerate(engine, p, sp, topk=3) for p in PROMPTS])
            return gens, await fv.afetch(engine, ["never-used"])
        finally:
            engine.shutdown()

    gens, nothing = asyncio.run(run())
    assert nothing == {}
    for g in gens:
        check_against_vllm(g.output.outputs[0], g.stats[0], g.covered[0], topk=3)
