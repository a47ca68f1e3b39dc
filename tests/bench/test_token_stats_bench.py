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


def test_reductions_are_checked_then_timed_against_the_exp_pass(monkeypatch):
    """masked_reduce's logsumexp and ensemble_stats: checked against the float64 reference (a wrong
    result stops the run), timed against the exp pass over the same logits, and held to its target."""
    bench = load_bench("token_stats")
    monkeypatch.setattr(bench, "REDUCTION_SHAPE", (6, 3000))
    monkeypatch.setattr(bench, "ENSEMBLE_SHAPE", (3, 4, 2000))
    rows = bench.run_reductions(torch.device("cpu"), ["fp32", "bf16"], 2, with_compile=False)
    assert [(r["op"], r["dtype"]) for r in rows] == [
        (op, d) for d in ("fp32", "bf16")
        for op in ("masked_reduce logsumexp", "masked_reduce logsumexp, 90% mask", "ensemble_stats",
                   "ensemble_stats, one position")]
    assert rows[3]["shape"] == [3, 1, 2000]
    for r in rows:
        assert 0 <= r["max_rel_diff"] < 1e-4 and r["flashuq_s"] > 0 and r["exp_s"] > 0 and r["baseline_s"] > 0
        assert r["x_exp"] == pytest.approx(r["flashuq_s"] / r["exp_s"])
    fast, slow = dict(rows[0], x_exp=0.5), dict(rows[2], x_exp=2.0)  # (tiny shapes time the call, not the kernel)
    one = dict(rows[3], x_exp=5.0)  # one decoding step: reported, not held to the target
    assert bench.missed_targets([fast, slow, one], torch.device("cpu")) == [
        f"ensemble_stats fp32 [3, 4, 2000]: 2.00× the exp pass (target ≤ {bench.TARGET_X_EXP}×)"]

    g = torch.Generator().manual_seed(0)
    x, ens = torch.randn(6, 3000, generator=g), torch.randn(3, 4, 2000, generator=g)
    mask = torch.rand(6, 3000, generator=g) < 0.9
    assert bench.check_reductions(x, mask, ens) < 1e-5
    real_reduce, real_ens = fuq.masked_reduce, fuq.ensemble_stats
    monkeypatch.setattr(bench.fuq, "masked_reduce", lambda *a, **k: real_reduce(*a, **k) + 1e-3)
    with pytest.raises(SystemExit, match="masked_reduce logsumexp differs"):
        bench.check_reductions(x, mask, ens)
    monkeypatch.setattr(bench.fuq, "masked_reduce", real_reduce)
    monkeypatch.setattr(bench.fuq, "ensemble_stats",
                        lambda *a, **k: real_ens(*a, **k)._replace(epistemic=real_ens(*a, **k).epistemic * 1.01))
    with pytest.raises(SystemExit, match="ensemble_stats epistemic differs"):
        bench.check_reductions(x, mask, ens)
