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
    got = json.loads(r.stdout.split("RESULT", 1)[1])

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


def test_async_llm(smollm2_dir):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(**fv.engine_kwargs(model=smollm2_dir, max_model_len=128, enforce_eager=True, seed=0,
                                              max_logprobs=-1))

    async def run():  # the engine lives in one event loop, as in a server
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
