"""bench/vllm_sampler.py: the --quick mode checks the opted-in results against vLLM's own log-probs,
runs the three ways and writes its JSON (no target in --quick mode)."""

import importlib.util
import json
import pathlib

import pytest

pytest.importorskip("vllm")

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "vllm_sampler.py"


def test_vllm_bench_quick(tmp_path, capsys, smollm2_dir):
    if not BENCH.exists():
        pytest.skip("bench/ is not in this checkout")
    model = smollm2_dir
    spec = importlib.util.spec_from_file_location("flashuq_bench_vllm", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "vllm.json"
    assert mod.main(["--quick", "--model", str(model), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| way | output tokens/s | cost vs plain |" in printed and "not applied (--quick)" in printed
    res = json.loads(out.read_text())
    assert set(res["tokens_per_s"]) == {"plain", "installed", "opted in"} and all(v > 0 for v in res["tokens_per_s"].values())
    assert res["max_check_diff"] < 5e-4 and res["bytes_per_token"] > 0 and res["rows_copied"] == 0
