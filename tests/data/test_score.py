"""flashuq.data.score / `flashuq score`: teacher-forced scores of a dataset's (prompt, response) rows,
in one process and on a real local Ray (started here), against flashuq.hf.score run directly."""

import io
import json
import math
import pathlib
import sys

import pytest
import torch

import flashuq as fuq
from flashuq import cli
from flashuq import data as fd
from flashuq.methods.scores import SCORES

REPO = pathlib.Path(__file__).resolve().parents[2]

GOOD = [
    {"id": "a", "prompt": "What is the capital of France?", "response": "The capital of France is Paris."},
    {"id": "b", "prompt": "2+2?", "response": "4"},
    {"id": "c", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."},
                             {"role": "assistant", "content": "Blue."}]},
    {"id": "d", "prompt": "Tell me a fact.", "response": "Water boils at 100 degrees Celsius at sea level."},
    {"id": "e", "prompt": "Translate 'chat' to English.", "response": "Cat.", "topic": "language"},
    {"id": "f", "prompt": "Who wrote Hamlet?", "response": "William Shakespeare wrote Hamlet around 1600."},
    {"id": "g", "prompt": "Is the sky green?", "response": "No, it is usually blue during the day."},
]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    model, tok = fd.load_model(smollm2_dir)
    return smollm2_dir, model, tok


def direct(model, tok, obj, raw=False):
    """flashuq.hf.score on one row by itself (no padding): the reference."""
    ids, start = fd.Tokenizer(tok, raw=raw)(obj)
    x = torch.tensor([ids])
    resp = torch.zeros_like(x)
    resp[0, start:] = 1
    return fuq.hf.score(model, x, response_mask=resp), ids, start


def check_against_direct(table, rows, model, tok, *, tokens=True):
    got = table.to_pylist()
    assert [g["row"] for g in got] == list(range(len(rows)))  # every row once, in input order
    for g, obj in zip(got, rows):
        assert g["id"] == obj["id"]
        ref, ids, start = direct(model, tok, obj)
        assert g["response_tokens"] == len(ids) - start
        for name, v in ref.scores.items():
            assert g[name] == pytest.approx(float(v[0]), rel=2e-5, abs=1e-6), name
        if tokens:
            m = ref.mask[0]
            # float32 forwards of a padded batch and of the row alone differ by a few 1e-6 nats
            assert g["token_logprob"] == pytest.approx(ref.stats.logprob[0][m].tolist(), rel=2e-5, abs=1e-5)
            assert g["token_entropy"] == pytest.approx(ref.stats.entropy[0][m].tolist(), rel=2e-5, abs=1e-5)
            assert g["response_ids"] == ids[start:]


def test_one_process_equals_hf_score(smollm2, tmp_path):
    path, model, tok = smollm2
    src = write_jsonl(tmp_path / "pairs.jsonl", GOOD)
    bar = io.StringIO()
    run = fd.score(path, src, tmp_path / "out.parquet", tokens=True, progress=bar, part_rows=3)
    assert (run.rows, run.scored, run.skipped, run.failed, run.engine) == (7, 7, 0, 0, "process")
    assert len(list(run.out.glob("*.parquet"))) == 3  # parts of at most 3 rows
    table = fd.read_scores(run.out)
    check_against_direct(table, GOOD, model, tok)
    assert set(SCORES) <= set(table.column_names) and "topic" in table.column_names
    assert table.column("messages").to_pylist()[2] == GOOD[2]["messages"]
    assert "7/7 rows" in bar.getvalue() and "rows/s" in bar.getvalue() and "ETA" in bar.getvalue()
    assert run.errors.read_text() == ""


def test_loaded_model_and_parquet_input(smollm2, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, model, tok = smollm2
    rows = [r for r in GOOD if "prompt" in r]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    run = fd.score(model, tmp_path / "pairs.parquet", tmp_path / "o", tokenizer=tok, progress=None)
    check_against_direct(fd.read_scores(run.out), rows, model, tok, tokens=False)
    with pytest.raises(TypeError, match="tokenizer"):
        fd.score(model, tmp_path / "pairs.parquet", tmp_path / "o2", progress=None)


def test_bad_rows_go_to_the_errors_file(smollm2, tmp_path):
    path, model, tok = smollm2
    lines = [GOOD[0], "not json", {"prompt": "no response"}, {"prompt": "x", "response": 5},
             {"prompt": "x", "response": "   "}, GOOD[1], [1, 2],
             {"messages": [{"role": "user", "content": "hi"}]},
             {"prompt": "long " * 200, "response": "too long for max_length"}, "", GOOD[3]]
    src = write_jsonl(tmp_path / "pairs.jsonl", lines)
    run = fd.score(path, src, tmp_path / "out.parquet", max_length=128, progress=None)
    assert (run.rows, run.scored, run.failed) == (11, 3, 8)
    errors = [json.loads(line) for line in run.errors.read_text().splitlines()]
    assert run.errors == tmp_path / "out.errors.jsonl"
    assert [e["line"] for e in errors] == [2, 3, 4, 5, 7, 8, 9, 10]
    assert all(e["row"] == e["line"] - 1 for e in errors)
    reasons = [e["reason"] for e in errors]
    assert reasons[0].startswith("not JSON") and "missing field 'response'" in reasons[1]
    assert "'response' must be a string" in reasons[2] and reasons[3] == "empty response"
    assert reasons[4] == "not a JSON object" and "end with the assistant" in reasons[5]
    assert reasons[6].startswith("over the model's context") and reasons[7] == "empty line"
    check_against_direct_rows = fd.read_scores(run.out).to_pylist()
    assert [r["row"] for r in check_against_direct_rows] == [0, 5, 10]
    ref, _, _ = direct(model, tok, GOOD[3])
    assert check_against_direct_rows[2]["perplexity"] == pytest.approx(float(ref.scores["perplexity"][0]), rel=2e-5)


def test_resume_scores_only_the_missing_rows(smollm2, tmp_path):
    path, model, tok = smollm2
    src = write_jsonl(tmp_path / "pairs.jsonl", GOOD)
    out = tmp_path / "out.parquet"
    first = fd.score(path, src, out, part_rows=2, progress=None)
    assert first.scored == 7
    parts = sorted(out.glob("*.parquet"))
    assert len(parts) == 4
    parts[1].unlink()                       # rows 2, 3: as if the run had been killed before them
    parts[3].write_bytes(parts[3].read_bytes()[:100])  # row 6: a part cut short
    again = fd.score(path, src, out, part_rows=2, progress=None)
    assert (again.scored, again.skipped) == (3, 4)
    check_against_direct(fd.read_scores(out), GOOD, model, tok, tokens=False)
    third = fd.score(path, src, out, progress=None)
    assert (third.scored, third.skipped) == (0, 7)
    assert fd.read_scores(out).num_rows == 7


def test_argument_errors(smollm2, tmp_path):
    path, _, _ = smollm2
    src = write_jsonl(tmp_path / "pairs.jsonl", GOOD[:1])
    for kwargs, err, match in [({"workers": -1}, ValueError, "workers"), ({"workers": 1.5}, TypeError, "workers"),
                               ({"batch_size": 0}, ValueError, "batch_size"),
                               ({"max_length": 1}, ValueError, "max_length"),
                               ({"dtype": "int8"}, ValueError, "dtype")]:
        with pytest.raises(err, match=match):
            fd.score(path, src, tmp_path / "o", progress=None, **kwargs)
    (tmp_path / "file.parquet").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        fd.score(path, src, tmp_path / "file.parquet", progress=None)
    with pytest.raises(FileNotFoundError):
        fd.score(path, tmp_path / "missing.jsonl", tmp_path / "o", progress=None)
    (tmp_path / "pairs.csv").write_text("prompt,response\n")
    with pytest.raises(ValueError, match="jsonl or .parquet"):
        fd.score(path, tmp_path / "pairs.csv", tmp_path / "o", progress=None)
    with pytest.raises(TypeError, match="model"):
        fd.score(3, src, tmp_path / "o", progress=None)


def test_without_ray(smollm2, tmp_path, monkeypatch):
    path, _, _ = smollm2
    src = write_jsonl(tmp_path / "pairs.jsonl", GOOD[:2])
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ImportError, match=r"flashuq\[ray\]"):
        fd.score(path, src, tmp_path / "o", workers=2, progress=None)
    assert fd.score(path, src, tmp_path / "o", progress=None).scored == 2  # one process needs no Ray


def test_ray_resources_leave_a_cpu_for_ray_data():
    # 2 cores, 2 actors: one CPU (and torch thread) each, and a third logical CPU for the read and
    # write tasks, which an actor pool holding every CPU would starve
    assert fd.ray_resources(2, cores=2) == (1, 3)
    assert fd.ray_resources(1, cores=2) == (2, 3)
    assert fd.ray_resources(3, cores=2) == (1, 4)
    assert fd.ray_resources(2, 2, cores=16) == (2, 5)


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray for this module, started from the checkout's root: 3 logical CPUs (two 1-CPU
    actors + one for Ray Data's tasks)."""
    import os

    ray = pytest.importorskip("ray")
    here = os.getcwd()
    os.chdir(REPO)
    try:
        fd.init_ray(num_cpus=3)
    finally:
        os.chdir(here)
    yield ray
    ray.shutdown()


def test_ray_workers_never_see_the_checkout(local_ray):
    # Ray puts the driver's working directory on its workers' sys.path; started from the checkout's
    # root, the top-level kernels/ would shadow Hugging Face's kernels package (transformers imports it)
    @local_ray.remote
    def where():
        import sys

        import kernels

        return sys.path, kernels.__file__

    path, kernels_file = local_ray.get(where.remote())
    assert str(REPO) not in [str(pathlib.Path(p).resolve()) for p in path if p]
    assert not pathlib.Path(kernels_file).resolve().is_relative_to(REPO)


def test_ray_two_workers_from_the_repository_root(smollm2, local_ray, tmp_path, monkeypatch):
    # from the checkout's root: Ray puts the driver's directory on its workers' sys.path, where the
    # top-level kernels/ would shadow Hugging Face's kernels package that transformers imports
    path, model, tok = smollm2
    rows = GOOD * 3
    src = write_jsonl(tmp_path / "pairs.jsonl", rows + ["not json"])
    monkeypatch.chdir(REPO)
    run = fd.score(path, src, tmp_path / "out.parquet", workers=2, batch_size=4, tokens=True, progress=False)
    assert (run.engine, run.rows, run.scored, run.failed) == ("ray", 22, 21, 1)
    assert local_ray.is_initialized()  # a Ray it did not start is left running
    table = fd.read_scores(run.out)
    assert [r["row"] for r in table.to_pylist()] == list(range(21))
    check_against_direct(table, rows, model, tok)
    # resume through Ray: only the missing rows
    part = sorted(run.out.glob("*.parquet"))[0]
    n_part = fd.read_scores(run.out).num_rows - len(fd.done_rows(run.out) - set(
        __import__("pyarrow.parquet").parquet.read_table(part).column("row").to_pylist()))
    part.unlink()
    again = fd.score(path, src, tmp_path / "out.parquet", workers=2, batch_size=4, tokens=True, progress=False)
    assert again.scored == n_part and again.skipped == 21 - n_part
    check_against_direct(fd.read_scores(run.out), rows, model, tok)


def _scorer_pids():
    """Processes of Ray Data's scoring actors (their title names the operator)."""
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or ())
        if "MapWorker(MapBatches(Scorer))" in cmd:
            pids.append(p.pid)
    return pids


def test_ray_run_survives_a_killed_actor(smollm2, local_ray, tmp_path):
    # one scoring actor's process is killed mid-run: Ray restarts the actor and retries its task
    # (max_restarts / max_task_retries, set by flashuq.data); every row comes out once, same values
    import os
    import signal
    import threading
    import time

    path, model, tok = smollm2
    rows = (GOOD * 9)[:56]
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "out.parquet"
    result = {}

    def run():
        try:
            result["run"] = fd.score(path, src, out, workers=2, batch_size=2, progress=False)
        except BaseException as ex:  # noqa: BLE001 - reported below
            result["error"] = ex

    t = threading.Thread(target=run)
    t.start()
    killed, deadline = None, time.time() + 300
    while t.is_alive() and killed is None and time.time() < deadline:
        pids = _scorer_pids()
        if pids and any(out.glob("*.parquet")):  # the actors are scoring: parts are being written
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    t.join(timeout=600)
    assert not t.is_alive() and "error" not in result, result.get("error")
    assert killed is not None, "the run ended before an actor could be killed: make it longer"
    assert killed not in _scorer_pids()
    assert result["run"].scored == len(rows)
    table = fd.read_scores(out)
    assert [r["row"] for r in table.to_pylist()] == list(range(len(rows)))  # none lost, none twice
    check_against_direct(table, rows, model, tok, tokens=False)


def test_cli_score(smollm2, tmp_path, capsys):
    path, model, tok = smollm2
    src = write_jsonl(tmp_path / "pairs.jsonl", GOOD[:3] + ["{"])
    out = tmp_path / "scored.parquet"
    assert cli.main(["score", "--model", path, "--data", str(src), "--out", str(out), "--tokens", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "3 rows scored (process)" in printed and "1 bad rows" in printed
    check_against_direct(fd.read_scores(out), GOOD[:3], model, tok)
    assert cli.main(["score", "--model", path, "--data", str(tmp_path / "nope.jsonl"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["score", "--model", path, "--data", str(src), "--out", str(out), "--workers", "-2"]) == 2
    assert "workers must be" in capsys.readouterr().err
    assert not math.isnan(fd.read_scores(out).column("perplexity").to_pylist()[0])
