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
