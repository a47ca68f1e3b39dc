"""bench/attention.py: the torch "reference way" baseline agrees with flashuq.reference, and a tiny
run writes its JSON with both paths agreeing on the chain."""

import json
import pathlib

import numpy as np
import pytest
import torch

from flashuq import cli, reference

from bench_loader import load_bench

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "attention.py"


def test_inputs_are_causal_attention():
    b = load_bench("attention")
    full = b.full_maps(3, 2, 3, 20, 8)
    assert full.shape == (2, 3, 20, 20)
    torch.testing.assert_close(full.sum(-1), torch.ones(2, 3, 20))
    assert (full.triu(1) == 0).all()
    # the response rows are the same values whichever way they are made
    assert torch.equal(full[1, :, 12:], b.response_rows(3, 1, 3, 20, 8))


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_torch_baseline_matches_reference(reduction):
    b = load_bench("attention")
    N, R, A = 40, 24, 2
    full = b.full_maps(1, 2, 3, N, R, dtype=torch.float64)
    red = b.torch_reduce(full, R, 4, reduction)
    want = reference.uqac_reduce_attention_ref(full[:, :, N - R:].numpy(), n_heads=4, reduction=reduction)
    np.testing.assert_allclose(red.numpy(), want, rtol=1e-12, atol=1e-14)
    ans, stop = b.answer_and_stops(1, N, R, A)
    chain, scores = b.torch_backtrack(red, ans, stop, buffer=3, threshold=0.5, min_chain_len=5)
    wc, ws = reference.uqac_backtrack_ref(want, ans.numpy(), stop.numpy(), buffer=3, threshold=0.5,
                                          min_chain_len=5 + A)
    assert chain.tolist() == np.asarray(wc).tolist()
    np.testing.assert_allclose(scores.numpy(), ws, rtol=1e-12, atol=1e-14)
    assert len(chain) > A  # the answer sources and at least one more member


def test_attention_bench_tiny(tmp_path, capsys):
    b = load_bench("attention")
    out = tmp_path / "attention.json"
    argv = ["--N", "48", "--L", "2", "--H", "3", "--R", "24", "--A", "2", "--n-heads", "4", "--repeats", "2",
            "--threads", "1", "--out", str(out)]
    assert b.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| path | reduce ms | backtrack ms | total ms (median) | total ms (min) |" in printed
    res = json.loads(out.read_text())
    assert res["benchmark"] == "attention" and res["device"] == "cpu"
    assert res["shape"] == {"N": 48, "L": 2, "H": 3, "R": 24, "I": 24, "A": 2}
    assert res["params"]["n_heads"] == 4 and res["params"]["min_chain_len"] == 7
    assert {"cpu", "torch", "threads"} <= set(res["machine"])
    for p in res["paths"]:
        r = res["results"][p]
        assert r["total_ms"] > 0 and r["total_min_ms"] <= r["total_ms"] and len(r["runs_ms"]["total"]) == 2
        assert r["reduce_ms"] > 0 and r["backtrack_ms"] > 0 and r["chain_len"] > 2
        m = r["memory"]
        assert m["input_bytes"] > 0 and m["peak_process_bytes"] > 0
    assert res["results"]["torch"]["memory"]["input_bytes"] == 2 * 3 * 48 * 48 * 4
    if b.flashuq_available():
        assert res["paths"] == ["torch", "flashuq"]
        assert res["results"]["flashuq"]["memory"]["input_bytes"] == 2 * 3 * 24 * 48 * 4
        chk = res["check"]
        assert chk["passed"] and chk["chains_equal"] and chk["chain_torch"] == chk["chain_flashuq"]
        assert chk["reduced_max_abs_diff"] < 1e-5
        assert res["ratio_torch_over_flashuq"]["total_median"] > 0
        assert res["target"] == {"vs_torch_total": b.TARGET_VS_TORCH, "enforced": False, "missed": []}
    else:
        assert res["paths"] == ["torch"] and res["check"] is None and res["note"]


def test_attention_bench_exits_1_on_a_missed_target(tmp_path, monkeypatch, capsys):
    b = load_bench("attention")
    assert b.flashuq_available()  # the tests run against the installed wheel: both paths are timed
    monkeypatch.setattr(b, "TARGET_MIN_N", 48)      # enforce it at this tiny size ...
    monkeypatch.setattr(b, "TARGET_VS_TORCH", 1e9)  # ... and make it one no machine meets
    out = tmp_path / "attention.json"
    argv = ["--N", "48", "--L", "2", "--H", "3", "--R", "24", "--A", "2", "--n-heads", "4", "--repeats", "1",
            "--threads", "1", "--out", str(out)]
    assert b.main(argv) == 1
    assert "target missed: total" in capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["target"]["enforced"] and len(res["target"]["missed"]) == 1


def test_flashuq_bench_runs_attention(monkeypatch):
    if not BENCH.exists():
        pytest.skip("bench/ is not in this checkout")
    called = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd: called.append(cmd) or 0)
    assert cli.main(["bench", "attention"]) == 0
    assert [pathlib.Path(c[-1]).name for c in called] == ["attention.py"]
