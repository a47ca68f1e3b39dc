"""bench/serve.py against the session's real server: a short run writes its table and JSON; a
result that disagrees with vLLM's own log-probs makes it exit 1."""

import json

import pytest

from bench_loader import load_bench

pytest.importorskip("vllm")
pytest.importorskip("openai")


def test_serve_bench(flashuq_server, tmp_path, capsys):
    bench = load_bench("serve")
    out = tmp_path / "s.json"
    assert bench.main(["--quick", "--url", flashuq_server["base"], "--api-key",
                       flashuq_server["key"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| opted in |" in printed and "target: opted-in cost <= 5%: not applied (--quick)" in printed
    res = json.loads(out.read_text())
    assert res["requests"] == 32 and len(res["round_seconds"]["plain"]) == 1
    assert res["max_check_diff"] < bench.CHECK_TOL
    assert set(res["bad_input"]) >= {"malformed JSON", "unknown flashuq option", "oversized prompt"}
    assert all(v == 400 for k, v in res["bad_input"].items() if k != "cut off mid-stream")


def test_serve_bench_fails_on_a_wrong_result(flashuq_server, tmp_path, monkeypatch):
    bench = load_bench("serve")
    monkeypatch.setattr(bench, "CHECK_TOL", -1.0)  # every recorded log-prob now "differs" from vLLM's
    out = tmp_path / "f.json"
    assert bench.main(["--quick", "--url", flashuq_server["base"], "--api-key", flashuq_server["key"],
                       "--out", str(out)]) == 1
    assert not out.exists()
