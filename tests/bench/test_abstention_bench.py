"""bench/abstention.py: a short run writes its table and JSON; a threshold rule that breaks the
guarantee makes it exit 1."""

import json

import numpy as np
import pytest

from bench_loader import load_bench


def test_abstention_bench(tmp_path, capsys):
    bench = load_bench("abstention")
    out = tmp_path / "a.json"
    assert bench.main(["--draws", "60", "--out", str(out)]) == 0
    assert "| binomial | grid of 50 |" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 4 and not res["missed"]
    assert all(r["uniform_exceed"] <= res["limit"] and r["demo_exceed"] <= res["limit"] for r in res["rows"])


def test_abstention_bench_fails_on_a_broken_rule(tmp_path, monkeypatch):
    bench = load_bench("abstention")
    real = bench.metrics.abstention_threshold

    def keep_almost_all(u, correct, **kw):  # ignores the guarantee: keeps 90% of the answers
        r = real(u, correct, **kw)
        return r._replace(threshold=float(np.quantile(np.asarray(u, float), 0.9)), kept=1)

    monkeypatch.setattr(bench.metrics, "abstention_threshold", keep_almost_all)
    assert bench.main(["--draws", "40", "--out", str(tmp_path / "b.json")]) == 1
    assert json.loads((tmp_path / "b.json").read_text())["missed"]
