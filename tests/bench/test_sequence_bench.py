"""bench/sequence.py: every path's 14 scores are checked before timing (flashuq against the float64
reference, the fp32 baselines against flashuq), the timed run's scores too, and the script exits 1
on a wrong score or a missed target."""

import json
import math

import pytest
import torch

import flashuq as fuq

from bench_loader import load_bench


def test_sequence_bench_small(tmp_path, capsys):
    bench = load_bench("sequence")
    out = tmp_path / "seq.json"
    assert bench.main(["--shape", "4x6x3000", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "checked: flashuq within" in text and "| path | total s |" in text
    res = json.loads(out.read_text())
    assert res["targets"]["missed"] == [] and res["targets"]["bytes_per_token_max"] == 64
    assert res["checked_max_rel_diff"]["flashuq"] <= bench.RTOL_REFERENCE
    assert [r["path"] for r in res["results"]] == ["flashuq", "eager torch", "LM-Polygraph style (numpy)"]
    for r in res["results"]:
        assert r["total_s"] > 0 and len(r["max_rel_diff_vs_flashuq"]) == 14
        assert max(r["max_rel_diff_vs_flashuq"].values()) <= bench.RTOL_BASELINES
    assert res["results"][0]["bytes_per_token"] == 48  # 12 fields of 4 bytes (int32 argmax, fp32 values)


def test_the_reference_is_float64_and_independent_of_the_kernels():
    """reference_scores reduces flashuq.reference's float64 fields with torch: its msp is minus the
    sum of the emitted tokens' float64 log-probabilities over each sequence's steps, and an empty
    sequence gives NaN."""
    bench = load_bench("sequence")
    g = torch.Generator().manual_seed(3)
    steps = [bench.make_step(3, 500, torch.float32, g) for _ in range(4)]
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    ref = bench.reference_scores(steps, mask)
    lp = [torch.log_softmax(x.double(), -1).gather(-1, t[:, None])[:, 0] for x, t in steps]
    assert ref["msp"].dtype == torch.float64
    assert ref["msp"][0].item() == pytest.approx(-(lp[0][0] + lp[1][0] + lp[2][0]).item(), rel=1e-12)
    assert ref["msp"][1].item() == pytest.approx(-lp[0][1].item(), rel=1e-12)
    assert all(math.isnan(v[2].item()) for v in ref.values())


def test_a_wrong_score_stops_the_bench(monkeypatch):
    bench = load_bench("sequence")
    assert bench.check(2000, torch.float32)["flashuq"] <= bench.RTOL_REFERENCE
    real = fuq.sequence_scores

    def off(*a, **k):  # mean kurtosis 1e-4 too large
        s = dict(real(*a, **k))
        s["mean_kurtosis"] = s["mean_kurtosis"] * (1 + 1e-4)
        return s

    monkeypatch.setattr(bench.fuq, "sequence_scores", off)
    with pytest.raises(SystemExit, match="flashuq's mean_kurtosis differs"):
        bench.check(2000, torch.float32)


def test_nan_where_the_reference_has_a_number_is_wrong():
    bench = load_bench("sequence")
    ref = {"msp": torch.tensor([1.0, math.nan])}
    assert bench.max_rel_diffs({"msp": torch.tensor([1.0, math.nan])}, ref) == {"msp": 0.0}
    assert bench.max_rel_diffs({"msp": torch.tensor([math.nan, math.nan])}, ref) == {"msp": math.inf}
    with pytest.raises(SystemExit, match="eager torch's msp differs"):
        bench.check_scores("eager torch", {"msp": torch.tensor([1.0, 2.0])}, ref, 1e-3)


def test_missed_targets():
    bench = load_bench("sequence")
    B, V = bench.TARGET_SHAPE_BV

    def results(lmp, eager, nbytes=48):
        return [{"path": "flashuq", "bytes_per_token": nbytes, "speedup_of_flashuq": 1.0},
                {"path": "eager torch", "bytes_per_token": 48, "speedup_of_flashuq": eager},
                {"path": "LM-Polygraph style (numpy)", "bytes_per_token": 4 * V, "speedup_of_flashuq": lmp}]

    assert bench.missed_targets(results(25.0, 12.0), B, V) == []
    missed = bench.missed_targets(results(18.0, 4.0, nbytes=80), B, V)
    assert len(missed) == 3 and "80 bytes" in missed[0] and "18.0×" in missed[1] and "4.0×" in missed[2]
    # the speed targets hold at the B and V only; the bytes everywhere
    assert bench.missed_targets(results(2.0, 1.5), 4, 3000) == []
    assert len(bench.missed_targets(results(2.0, 1.5, nbytes=80), 4, 3000)) == 1
