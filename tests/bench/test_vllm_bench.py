"""bench/vllm_sampler.py: the --quick mode checks the opted-in results against vLLM's own log-probs,
runs the three ways and writes its JSON (no target in --quick mode)."""

import json

import pytest

from bench_loader import load_bench

pytest.importorskip("vllm")


def test_vllm_bench_quick(tmp_path, capsys, smollm2_dir):
    model = smollm2_dir
    mod = load_bench("vllm_sampler")
    out = tmp_path / "vllm.json"
    assert mod.main(["--quick", "--model", str(model), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| way | output tokens/s | cost vs plain |" in printed and "not applied (--quick)" in printed
    res = json.loads(out.read_text())
    assert set(res["tokens_per_s"]) == {"plain", "installed", "opted in"} and all(v > 0 for v in res["tokens_per_s"].values())
    assert res["max_check_diff"] < 5e-4 and res["bytes_per_token"] > 0 and res["rows_copied"] == 0


def test_vllm_bench_check_stops_on_a_wrong_result():
    """The check that runs before timing: statistics that differ from vLLM's own log-probs stop the run
    (SystemExit, a non-zero exit); the same statistics, right, pass."""
    from types import SimpleNamespace as NS

    import numpy as np
    import torch

    mod = load_bench("vllm_sampler")
    lp = lambda v, rank: NS(logprob=v, rank=rank)  # noqa: E731 - vLLM's Logprob
    completion = NS(token_ids=[5, 7], logprobs=[{5: lp(-0.1, 1), 3: lp(-2.5, 2)}, {7: lp(-0.2, 1), 1: lp(-1.9, 2)}])

    def gen(second_logprob):
        stats = NS(logprob=torch.tensor([-0.1, second_logprob]), max_logprob=torch.tensor([-0.1, -0.2]),
                   topk_logprobs=torch.tensor([[-0.1, -2.5], [-0.2, -1.9]]))
        return NS(output=NS(outputs=[completion]), stats=[stats], covered=[np.ones(2, dtype=bool)])

    assert mod.check([gen(-0.2)], 2) < 1e-6
    with pytest.raises(SystemExit, match="differ from vLLM's log-probs"):
        mod.check([gen(-0.21)], 2)
