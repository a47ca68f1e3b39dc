"""bench/graph.py: the --quick mode runs in seconds, checks flashuq against both baselines and writes
its JSON; `flashuq bench` lists the suite."""

import json
import pathlib

import pytest

from flashuq import cli

from bench_loader import load_bench

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "graph.py"


def test_graph_bench_quick(tmp_path, capsys):
    graph = load_bench("graph")
    out = tmp_path / "graph.json"
    assert graph.main(["--quick", "--Q", "40", "--repeats", "1", "--threads", "1", "--lm-polygraph", "off",
                       "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| method | flashuq ms | numpy loop ms (×speedup) | torch batched ms (×speedup) | target met? |" in printed
    res = json.loads(out.read_text())
    assert res["benchmark"] == "graph" and res["shape"] == {"Q": 40, "K": 20} and res["check"]["passed"]
    assert {"cpu", "torch", "threads"} <= set(res["machine"]) and "first 64 questions" in res["primer"]
    rows = {r["method"]: r for r in res["results"]}
    assert set(graph.ISSUE_METHODS) | {"kernel_language_entropy", "num_sem_sets"} <= set(rows)
    for r in rows.values():
        assert r["flashuq_ms"] > 0 and r["torch_batched_ms"] > 0 and r["numpy_loop_ms"] > 0
        assert r["max_abs_diff_vs_numpy_loop"] < 1e-9 and r["max_abs_diff_vs_torch_batched"] < 1e-9
    assert set(rows["eigv"]["targets"]) == {"vs_numpy_loop", "vs_torch_batched"}
    assert rows["num_sem_sets"]["targets"] == {} and set(rows["inv_entropy"]["targets"]) == {"vs_numpy_loop"}
    assert "lm_polygraph_ms" not in rows["eigv"] and res["machine"]["lm_polygraph"] is None


def test_graph_bench_against_lm_polygraphs_own_estimators(tmp_path, capsys):
    """LM-Polygraph 0.7.0 is locked without its dependencies (requirements/no-deps.in): the benchmark
    imports just its estimator modules, runs their own per-question loops, checks flashuq against their
    results and sets the targets against them."""
    graph = load_bench("graph")
    version, estimators = graph.load_lm_polygraph()
    assert version == "0.7.0" and set(estimators) == {"eigv", "eccentricity", "degree", "kernel_language_entropy",
                                                      "num_sem_sets"}
    import sys
    assert "lm_polygraph.estimators.eig_val_laplacian" in sys.modules
    assert "lm_polygraph.estimators.semantic_entropy" not in sys.modules  # not the package's __init__
    out = tmp_path / "graph.json"
    assert graph.main(["--quick", "--Q", "30", "--repeats", "1", "--threads", "1", "--lm-polygraph", "require",
                       "--out", str(out)]) == 0
    assert "LM-Polygraph's estimator ms (×speedup)" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["machine"]["lm_polygraph"] == "0.7.0"
    rows = {r["method"]: r for r in res["results"]}
    for name in estimators:
        assert rows[name]["lm_polygraph_ms"] > 0 and rows[name]["lm_polygraph_questions_timed"] == 30
        assert rows[name]["max_abs_diff_vs_lm_polygraph"] < 1e-9
    assert set(rows["eigv"]["targets"]) == {"vs_lm_polygraph", "vs_numpy_loop", "vs_torch_batched"}
    assert set(rows["num_sem_sets"]["targets"]) == {"vs_lm_polygraph"}
    assert "lm_polygraph_ms" not in rows["semantic_entropy"]


def test_flashuq_bench_lists_graph(monkeypatch):
    if not BENCH.exists():
        pytest.skip("bench/ is not in this checkout")
    called = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd: called.append(cmd) or 0)
    assert cli.main(["bench"]) == 0
    assert any(pathlib.Path(c[-1]).name == "graph.py" for c in called)
    called.clear()
    assert cli.main(["bench", "graph"]) == 0
    assert [pathlib.Path(c[-1]).name for c in called] == ["graph.py"]


def test_graph_bench_exits_1_on_a_missed_target(tmp_path, monkeypatch, capsys):
    graph = load_bench("graph")
    monkeypatch.setattr(graph, "TARGET_VS_NUMPY", 1e9)  # a target no machine meets
    monkeypatch.setattr(graph, "TARGET_VS_NUMPY_EXTRA", {})  # the others: Q = 40 is too small to meet them
    out = tmp_path / "graph.json"
    assert graph.main(["--Q", "40", "--repeats", "1", "--loop-repeats", "1", "--threads", "1", "--lm-polygraph",
                       "off", "--out", str(out)]) == 1
    assert "target missed: eigv" in capsys.readouterr().err
    res = json.loads(out.read_text())
    assert {m.split(":")[0] for m in res["missed"]} == set(graph.SPECTRAL)


def test_rounds_spread_each_methods_runs_and_prime_each_batched_run():
    """All methods are timed together, round after round: a round visits every method in turn and
    runs each of its callables its runs-per-round times, interleaved, so that a method's runs are
    spread over the benchmark. Each timed run of a batched callable follows its primer (an untimed
    call on a few questions that wakes the thread pool); runs without a primer, and the warm-ups,
    have none."""
    graph = load_bench("graph")
    log = []
    plans = {"m1": {"a": (lambda: log.append("a"), 2, 1, lambda: log.append("pa")),
                    "b": (lambda: log.append("b"), 1, 0, None)},
             "m2": {"c": (lambda: log.append("c"), 1, 2, lambda: log.append("pc"))}}
    res = graph._rounds_ms(plans, 2)
    assert log == ["a", "c", "c",                                   # warm-ups
                   "pa", "a", "b", "pa", "a", "pc", "c",            # round 1: m1, then m2
                   "pa", "a", "b", "pa", "a", "pc", "c"]            # round 2
    assert [len(res["m1"]["a"][1]), len(res["m1"]["b"][1]), len(res["m2"]["c"][1])] == [4, 2, 2]
    assert graph.PRIMER_Q < 200  # the primer is a small copy, also beside a --quick run's inputs
