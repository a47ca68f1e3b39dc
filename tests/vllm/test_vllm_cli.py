"""``flashuq demo --engine vllm``: the same questions, judging, methods and leaderboard as the
transformers engine, answered by vLLM with flashuq's processor."""

import json

import numpy as np
import pytest

pytest.importorskip("vllm")

from flashuq import cli  # noqa: E402


def test_demo_with_the_vllm_engine(smollm2_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLASHUQ_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "smollm2-135m-instruct").symlink_to(smollm2_dir)  # the session's converted checkpoint
    out = tmp_path / "demo.json"
    assert cli.main(["demo", "--engine", "vllm", "--limit", "6", "--samples", "3", "--bootstrap", "10", "--quiet",
                     "--report", "", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| method | PRR |" in printed and "6 questions, 3 samples each" in printed
    res = json.loads(out.read_text())
    methods = {r["method"] for r in res["leaderboard"]}
    assert methods >= {"msp", "perplexity", "mean_token_entropy", "monte_carlo_sequence_entropy", "semantic_entropy",
                       "eigv"}
    france = next(it for it in res["items"] if it["question"] == "What is the capital of France?")
    assert france["correct"] and "Paris" in france["answer"]
    for it in res["items"]:
        lp = np.array(it["token_stats"]["logprob"])
        assert len(lp) == len(it["tokens"]) > 0 and np.isfinite(lp).all() and (lp <= 0).all()
        assert len(it["samples"]) == 3


def test_attention_needs_the_transformers_engine():
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--engine", "vllm", "--attention"])
    assert e.value.code == 2
