"""bench/metrics.py: each metric with a peer (LM-Polygraph's own metric classes, scikit-learn) is
checked against it before timing, each ratio compares equal sizes, and the script exits 1 on a
disagreement or a missed target."""

import json

import numpy as np
import pytest

import flashuq as fuq

from bench_loader import load_bench


def test_metrics_bench_small(tmp_path, capsys):
    bench = load_bench("metrics")
    out = tmp_path / "m.json"
    assert bench.main(["--n", "20000", "--n-polygraph", "3000", "--lm-polygraph", "require", "--out", str(out)]) == 0
    assert "| metric | N | flashuq s | baseline | baseline N |" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["lm_polygraph"] == "0.7.0" and res["targets"]["missed"] == []
    by = {r["metric"]: r for r in res["results"]}
    assert len(by) == 18
    with_baseline = {k: r for k, r in by.items() if "baseline" in r}
    assert set(with_baseline) == {"roc_auc", "pr_auc", "ece", "spearman", "kendall_tau",
                                  "risk_coverage_auc(ties='polygraph')", "reversed_pairs_proportion", "ap_ratio_prr",
                                  "isotonic_brier", "prr(baseline='polygraph')"}
    for r in with_baseline.values():
        assert r["checked_abs_diff"] <= 1e-9
        assert r["speedup"] == pytest.approx(r["baseline_seconds"] / r["flashuq_seconds_at_baseline_n"])
    assert by["reversed_pairs_proportion"]["baseline_n"] == 20000 and by["prr(baseline='polygraph')"]["n"] == 3000
    assert by["risk_coverage_auc(ties='polygraph')"]["baseline_n"] == 3000


def test_the_baselines_are_the_peers_code():
    """The LM-Polygraph baselines are its own classes, whose values the tests' transcriptions and
    scikit-learn confirm independently."""
    bench = load_bench("metrics")
    from sklearn.metrics import roc_auc_score

    lmp = bench.load_lm_polygraph()
    assert lmp is not None and lmp[0] == "0.7.0"
    by = {c.name: c for c in bench.cases(4000, 1000, lmp)}
    u, q, c, *_ = bench.make_data(4000)
    assert by["roc_auc"].baseline(4000) == pytest.approx(roc_auc_score(~c, u), rel=1e-12)
    assert by["roc_auc"].baseline_name == "LM-Polygraph ROCAUC"
    # the manager's normalised PRR is what flashuq's polygraph mode reproduces bit for bit
    assert by["prr(baseline='polygraph')"].baseline(1000) == fuq.metrics.prr(u[:1000], q[:1000], baseline="polygraph")
    state = np.random.get_state()
    bench.lm_polygraph_prr(lmp[1], u[:50], q[:50])
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state))  # the global RNG restored


def test_a_disagreement_stops_the_bench(monkeypatch):
    bench = load_bench("metrics")
    case = bench.Case("roc_auc", 5000, lambda k: 0.75, "a baseline", lambda k: 0.75)
    assert bench.check(case) == 0.0
    case.baseline = lambda k: 0.75 + 1e-6
    with pytest.raises(SystemExit, match="roc_auc = 0.75 on 5,000 items, a baseline says"):
        bench.check(case)


def test_missed_targets():
    bench = load_bench("metrics")
    rows = [{"metric": "kendall_tau", "n": 10**7, "seconds": 12.0}, {"metric": "prr", "n": 10**7, "seconds": 2.0},
            {"metric": "kendall_tau", "n": 10**6, "seconds": 12.0}]  # the target is for N = 10^7
    assert bench.missed_targets(rows) == ["kendall_tau: 12.00 s at N = 10,000,000 (target ≤ 10 s)"]


@pytest.mark.parametrize("args", [["--n", "0"], ["--n", "-5"], ["--n-polygraph", "0"], ["--repeat", "0"],
                                  ["--repeat", "x"], ["--n", "10,20"]])
def test_bad_sizes(args, capsys):
    bench = load_bench("metrics")
    with pytest.raises(SystemExit) as e:
        bench.main(args)
    assert e.value.code == 2 and "expected" in capsys.readouterr().err
