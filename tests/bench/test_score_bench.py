"""bench/score.py: a small run checks every way's output against direct hf.score, starts a real local
Ray, and writes its JSON; a wrong result stops it."""

import json

import pytest

from bench_loader import load_bench


def test_score_bench_quick(tmp_path, capsys, smollm2_dir):
    bench = load_bench("score")
    out = tmp_path / "score.json"
    assert bench.main(["--quick", "--pairs", "24", "--batch-size", "8", "--model", smollm2_dir, "--out", str(out)]) == 0
    assert "| flashuq score, Ray, 2 workers |" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["benchmark"] == "score" and res["pairs"] == 24 and res["targets"]["missed"] == []
    assert set(res["max_rel_diff"]) == {"process", "ray1", "ray2"}
    assert all(v <= 1e-4 for v in res["max_rel_diff"].values())
    assert len(res["peak_rss_mb"]["ray1"]) >= 1 and all(v > 100 for v in res["peak_rss_mb"]["ray1"])
    for k in ("direct", "process", "ray1", "ray2"):
        assert res[f"{k}_rows_per_s"] == pytest.approx(24 / res[f"{k}_s"])


def test_score_bench_check_refuses_a_wrong_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bench = load_bench("score")
    out = tmp_path / "o"
    out.mkdir()
    rows = [{"row": i, **{k: 1.0 for k in ("msp", "gnll", "perplexity", "mean_token_entropy", "max_token_entropy",
                                           "mean_kurtosis", "self_certainty", "renyi_neg", "fisher_rao")}}
            for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), out / "part-0.parquet")
    ref = {r["row"]: dict(r) for r in rows}
    assert bench.check(out, ref, 3) == 0.0
    ref[1]["perplexity"] = 1.01
    with pytest.raises(SystemExit, match="differs from direct"):
        bench.check(out, ref, 3)
    with pytest.raises(SystemExit, match="exactly once"):
        bench.check(out, ref, 4)
