"""bench/ab.py: two builds of the CPU kernels loaded side by side, checked against each other, then
timed in turn. Building revisions takes minutes, so the tests load two copies of the installed
extension (what --so does) and check the comparison itself on arrays with known differences."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import torch

from flashuq import _ext

from bench_loader import load_bench


def _two_copies(tmp_path):
    src = _ext._C.__file__
    paths = []
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        paths.append(str(tmp_path / side / src.rsplit("/", 1)[-1]))
        shutil.copy2(src, paths[-1])
    return paths


def test_two_loaded_copies_agree_and_are_timed(tmp_path, capsys):
    ab = load_bench("ab")
    a, b = _two_copies(tmp_path)
    out = tmp_path / "ab.json"
    assert ab.main(["--so", a, "--so", b, "--Q", "40", "--rounds", "3", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["benchmark"] == "ab" and res["shape"] == {"Q": 40, "K": 20} and res["rounds"] == 3
    assert res["token_stats_shape"] == [256, 128256] and res["ensemble_shape"] == [4, 64, 128256]
    assert res["a"]["module"] == a and res["b"]["module"] == b and res["sha256_a"] == res["sha256_b"]
    assert [r["op"] for r in res["results"]] == list(ab.OPS)
    for r in res["results"]:
        assert r["bitwise_equal"] and r["max_abs_diff"] == 0.0 and r["within_tolerance"], r["op"]
        assert len(r["runs_ms"]["a"]) == len(r["runs_ms"]["b"]) == 3 and r["a_ms"] > 0 and r["b_ms"] > 0
        assert r["speedup_b_over_a"] == pytest.approx(r["a_ms"] / r["b_ms"])
        assert f"{r['op']}: A " in printed


def test_the_calls_compute_the_methods(tmp_path):
    """What the tool times is the methods themselves: its raw binding calls give the public methods'
    values on the same inputs."""
    ab = load_bench("ab")
    from flashuq import methods as M
    d = ab.make_data(24, 20, 3)
    calls = ab.calls(_ext._C, d, 1)
    for f, _ in calls.values():
        f()
    E, C = torch.from_numpy(d["E"]), torch.from_numpy(d["C"])
    torch.testing.assert_close(calls["eigv"][1][0], M.eigv(E), rtol=0, atol=0)
    ecc = M.eccentricity(E, threshold=ab.THRESHOLD)
    torch.testing.assert_close(calls["eccentricity"][1][1], ecc, rtol=0, atol=0)
    # the binding gives the von Neumann entropy; the method scales it by 1 / ln n
    torch.testing.assert_close(calls["kernel_language_entropy"][1][0] / np.log(20),
                               M.kernel_language_entropy(E, C, t=ab.KLE_T), rtol=1e-15, atol=0)
    # sym_eig of the symmetrised matrix itself, against LAPACK
    torch.testing.assert_close(calls["eigenvalues"][1][0], torch.linalg.eigvalsh((E + E.transpose(1, 2)) / 2),
                               rtol=0, atol=1e-13)
    sx, sy = torch.from_numpy(d["sx"]), torch.from_numpy(d["sy"])
    torch.testing.assert_close(calls["inv_entropy"][1][0][0], M.inv_entropy(sx, sy), rtol=0, atol=0)
    # ensemble_stats: [M, P, V] logits, equal member weights, the public op's fields
    import flashuq as fuq
    x = ab.ensemble_logits(1)[:, :3, :500].contiguous()
    f, o = ab.calls(_ext._C, {**d, "ens": x}, 1)["ensemble_stats"]
    f()
    want = fuq.ensemble_stats(x)
    for got, field in zip(o, fuq.EnsembleStats._fields):
        torch.testing.assert_close(got, getattr(want, field), rtol=0, atol=0, msg=field)
    # token_stats: every field of the public op (top-k included), fp32 and bf16
    x = ab.token_stats_logits(2)[:5, :3000].contiguous()
    tok = torch.tensor([0, 7, 2999, 1500, 3])
    ts = [("token_stats", x, 0), ("token_stats_bf16", x.bfloat16(), 0), ("token_stats_top5", x, 5)]
    got = ab.calls(_ext._C, {**d, "ts": ts, "ts_tokens": tok}, 1)
    for op, xx, k in ts:
        f, o = got[op]
        f()
        want = fuq.token_stats(xx, tok, topk=k)
        for g, field in zip(o[:11], fuq.TokenStats._fields):
            torch.testing.assert_close(g, getattr(want, field), rtol=0, atol=0, equal_nan=True, msg=f"{op} {field}")


def test_compare_finds_every_difference():
    ab = load_bench("ab")
    x = torch.tensor([1.0, -2.5, float("nan"), float("inf"), 0.0], dtype=torch.float64)
    same = ab.compare([x], [x.clone()], 0.0, 0.0)
    assert same == {"bitwise_equal": True, "max_abs_diff": 0.0, "within_tolerance": True}
    y = x.clone()
    y[0] = np.nextafter(1.0, 2.0)  # one ulp
    r = ab.compare([x], [y], 0.0, 0.0)
    assert not r["bitwise_equal"] and r["max_abs_diff"] == pytest.approx(2.0 ** -52) and not r["within_tolerance"]
    assert ab.compare([x], [y], 1e-15, 0.0)["within_tolerance"]
    z = x.clone()
    z[1] = float("nan")  # NaN on one side only: an infinite difference, whatever the tolerance
    r = ab.compare([x], [z], 1.0, 1.0)
    assert r["max_abs_diff"] == float("inf") and not r["within_tolerance"]
    s = x.clone()
    s[4] = -0.0  # the same value with another sign bit: not bitwise, but equal
    r = ab.compare([x], [s], 0.0, 0.0)
    assert not r["bitwise_equal"] and r["within_tolerance"] and r["max_abs_diff"] == 0.0


def test_a_difference_fails_the_run(tmp_path, monkeypatch, capsys):
    ab = load_bench("ab")
    a, b = _two_copies(tmp_path)
    calls = ab.calls

    def shifted(C, d, threads):  # B's eigv one ulp off in question 0
        out = calls(C, d, threads)
        f, o = out["eigv"]
        if C.ab_tag.startswith("module " + b):
            def g(f=f, o=o):
                f()
                o[0][0] = np.nextafter(o[0][0].item(), np.inf)
            out["eigv"] = (g, o)
        return out

    monkeypatch.setattr(ab, "calls", shifted)
    args = ["--so", a, "--so", b, "--Q", "16", "--rounds", "1", "--threads", "1", "--ops", "eigv"]
    assert ab.main(args + ["--out", str(tmp_path / "x.json")]) == 1
    assert "results differ: eigv" in capsys.readouterr().err
    assert ab.main(args + ["--rtol", "1e-15", "--out", str(tmp_path / "y.json")]) == 0


@pytest.mark.parametrize("args", [["--so", "x.so"], ["--so", "a.so", "--so", "b.so", "HEAD"], [],
                                  ["HEAD", "--ops", "eigv,nope"], ["HEAD", "--Q", "0"], ["a", "b", "c"]])
def test_bad_arguments(args, capsys):
    ab = load_bench("ab")
    with pytest.raises(SystemExit) as e:
        ab.main(args)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


def test_build_places_and_caches_the_packages(tmp_path, monkeypatch):
    """build() with the pip step replaced by a stand-in that writes an extension file: a revision
    lands complete in the cache and is built once; the working tree's package survives the build
    (its temporary sources do not) until the process exits."""
    ab = load_bench("ab")
    monkeypatch.setattr(ab, "CACHE", str(tmp_path / "cache"))
    real_run = ab.subprocess.run
    pip_calls = []

    def run(cmd, *args, **kwargs):
        if cmd[1:4] == ["-m", "pip", "install"]:
            target, src = cmd[cmd.index("--target") + 1], cmd[-1]
            assert os.path.isfile(os.path.join(src, "pyproject.toml")), src
            pip_calls.append(src)
            (pathlib.Path(target) / "flashuq").mkdir(parents=True)
            (pathlib.Path(target) / "flashuq" / "_C.fake.so").write_bytes(b"so")
            return None
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(ab.subprocess, "run", run)
    so, desc = ab.build("HEAD")
    sha = ab._git("rev-parse", "HEAD").strip()
    assert so == str(tmp_path / "cache" / sha / "flashuq" / "_C.fake.so") and sha[:12] in desc
    assert ab.build("HEAD")[0] == so and len(pip_calls) == 1  # cached: built once
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "cache").iterdir())
    so_wt, desc_wt = ab.build("WORKTREE")
    assert so_wt.endswith("_C.fake.so") and os.path.isfile(so_wt) and desc_wt.startswith("working tree")
    assert len(pip_calls) == 2 and not os.path.exists(pip_calls[1])  # sources removed
