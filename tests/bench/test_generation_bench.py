"""bench/generation.py: recording must leave the generated tokens alone, the recorder's and the
post-hoc statistics and token_stats_linear's are checked against the float64 reference before
anything is timed, and the script exits 1 on a failed check or a missed target."""

import json

import pytest
import torch

from bench_loader import load_bench


def test_generation_bench_small(tmp_path, capsys):
    bench = load_bench("generation")
    out = tmp_path / "gen.json"
    assert bench.main(["--quick", "--new", "3", "--batch", "2", "--repeats", "1", "--mem-rows", "32",
                       "--mem-vocab", "2000", "--out", str(out)]) == 0
    assert "| model | path | median s |" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["targets"]["missed"] == []
    diffs = {r["path"]: r["max_rel_diff_vs_reference"] for r in res["generation"]}
    assert diffs["plain generate"] is None
    assert diffs["generate + UncertaintyRecorder"] <= 2e-4
    assert diffs["generate(output_logits) + token_stats after"] <= 2e-4
    lin = res["score_memory"][1]
    assert lin["T"] == 32 and lin["V"] == 2000 and lin["max_rel_diff_vs_reference"] <= 2e-4


def test_a_wrong_recorder_field_stops_the_bench(monkeypatch):
    bench = load_bench("generation")
    model, _ = bench.tiny_llama(V=500)
    ids = torch.randint(3, 500, (2, 5), generator=torch.Generator().manual_seed(0))
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert max(bench.check_generate("tiny", model, ids, kw).values()) <= 2e-4
        real = bench.hf.UncertaintyRecorder.stats

        def off(self, seqs):  # FisherRao 1e-3 too large
            s = real(self, seqs)
            return s._replace(fisher_rao=s.fisher_rao * 1.001)

        monkeypatch.setattr(bench.hf.UncertaintyRecorder, "stats", off)
        with pytest.raises(SystemExit, match=r"\(tiny, recorder\): fisher_rao differs"):
            bench.check_generate("tiny", model, ids, kw)


def test_token_stats_linear_is_checked(monkeypatch):
    bench = load_bench("generation")
    assert bench.check_linear(700, 24, T=8) <= 2e-4
    real = bench.fuq.token_stats_linear
    monkeypatch.setattr(bench.fuq, "token_stats_linear",
                        lambda *a, **k: real(*a, **k)._replace(lse=real(*a, **k).lse + 1e-2))
    with pytest.raises(SystemExit, match="token_stats_linear, V=700\\): lse differs"):
        bench.check_linear(700, 24, T=8)


def test_missed_targets():
    bench = load_bench("generation")
    gen = [{"model": bench.SMOLLM2, "path": "generate + UncertaintyRecorder", "overhead_vs_plain": 0.05},
           {"model": "tiny Llama (config, V=32000)", "path": "generate + UncertaintyRecorder", "overhead_vs_plain": 0.2}]
    mem = [{"T": 4096, "V": 49152}, {"T": 4096, "V": 49152, "ratio_to_materialised": 0.2},
           {"T": 64, "V": 3000}, {"T": 64, "V": 3000, "ratio_to_materialised": 0.9}]  # the target is for T = 4096
    missed = bench.missed_targets(gen, mem)
    assert len(missed) == 2 and "5.0%" in missed[0] and "0.200" in missed[1]
    assert bench.missed_targets(gen[1:], mem[2:]) == []


@pytest.mark.parametrize("args", [["--mem-vocab", "abc"], ["--mem-vocab", "3000,0"], ["--mem-vocab", ""],
                                  ["--mem-rows", "-4"], ["--mem-rows", "8,16"]])
def test_bad_memory_arguments(args, capsys):
    bench = load_bench("generation")
    with pytest.raises(SystemExit) as e:
        bench.main(["--quick", *args])
    assert e.value.code == 2 and "expected" in capsys.readouterr().err
