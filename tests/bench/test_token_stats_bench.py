"""bench/token_stats.py: checks every field against the float64 reference before timing, times the
exp pass and each kernel variant, writes its JSON, and exits non-zero on a wrong result or a missed
target."""

import json

import pytest
import torch

import flashuq as fuq

from bench_loader import load_bench


def test_token_stats_bench_quick(tmp_path, capsys):
    bench = load_bench("token_stats")
    out = tmp_path / "ts.json"
    assert bench.main(["--shapes", "4x3000,2x70000", "--repeats", "2", "--no-compile", "--out", str(out)]) == 0
    assert "| shape | dtype | flashuq ms | kernel ms | ns/elem·core | exp pass ms | × exp |" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["benchmark"] == "token_stats" and res["targets"]["missed"] == []
    assert res["machine"]["cpu_isa"] == fuq._ext._C.isa()
    assert [(r["shape"], r["dtype"]) for r in res["results"]] == [
        ([4, 3000], "fp32"), ([4, 3000], "bf16"), ([2, 70000], "fp32"), ([2, 70000], "bf16")]
    for r in res["results"]:
        assert 0 <= r["max_rel_diff"] < 2e-4
        assert r["flashuq_s"] > 0 and r["exp_s"] > 0 and r["call_s"] > 0 and r["eager_s"] > 0
        assert r["x_exp"] == pytest.approx(r["flashuq_s"] / r["exp_s"])
        # the kernel alone, on outputs allocated once: what the op adds is the difference
        assert r["kernel_s"] > 0 and r["op_overhead_s"] == pytest.approx(r["flashuq_s"] - r["kernel_s"])
        assert list(r.get("variants_s", {"x": 0}))[-1] in ("x", fuq._ext._C.isa())


def test_token_stats_bench_refuses_a_wrong_result(monkeypatch):
    bench = load_bench("token_stats")
    x = torch.randn(4, 500)
    tok = torch.randint(0, 500, (4,))
    assert bench.check(x, tok, 0) < 1e-5
    real = fuq.token_stats

    def off(*a, **k):  # an entropy 0.1% too large
        s = real(*a, **k)
        return s._replace(entropy=s.entropy * 1.001)

    monkeypatch.setattr(bench.fuq, "token_stats", off)
    with pytest.raises(SystemExit, match="entropy differs"):
        bench.check(x, tok, 0)


def test_token_stats_bench_reports_a_missed_target():
    bench = load_bench("token_stats")
    hit = {"shape": list(bench.TARGET_SHAPE), "dtype": "fp32", "x_exp": 1.2, "speedup_vs_compile": 7.0}
    slow = dict(hit, dtype="bf16", x_exp=1.8, speedup_vs_compile=5.0)
    other = dict(slow, shape=[8, 4096])  # the targets are for [256, 128256] only
    missed = bench.missed_targets([hit, slow, other], torch.device("cpu"))
    assert len(missed) == 2 and all(m.startswith("bf16") for m in missed)
