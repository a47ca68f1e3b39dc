"""`flashuq score --generate`: each prompt answered (transformers in one process and on a real local
Ray; vLLM with flashuq's processor), and the greedy answer's scores checked against teacher-forced
flashuq.hf.score on the same tokens, the Monte-Carlo entropies against numpy on the written samples."""

import json
import math

import numpy as np
import pytest
import torch

import flashuq as fuq
from flashuq import cli
from flashuq import data as fd

PROMPTS = [
    {"id": "q0", "prompt": "What is the capital of France?", "answers": ["Paris"]},
    {"id": "q1", "prompt": "Name a primary color.", "answers": ["red", "blue", "yellow"]},
    {"id": "q2", "messages": [{"role": "system", "content": "Answer in one word."},
                              {"role": "user", "content": "What is frozen water called?"}]},
    {"id": "q3", "prompt": "How many legs does a spider have?", "answers": ["eight", "8"]},
    {"id": "q4", "prompt": "Who wrote Romeo and Juliet?"},
]
BAD = [
    ({"id": "b0", "question": "no prompt field"}, "missing field 'prompt'"),
    ({"id": "b1", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
     "end with the assistant's message"),
    ({"id": "b2", "prompt": "Capital of Peru?", "answers": "Lima"}, "'answers' must be a list"),
    ({"id": "b3", "prompt": "   "}, "empty prompt"),
]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    model, tok = fd.load_model(smollm2_dir)
    return smollm2_dir, model, tok


def check_answers(got, rows, model, tok, *, samples, rel=1e-4):
    """Every row once, in order; the greedy answer's token-statistics scores equal teacher-forced
    hf.score on the prompt + the answer's tokens; the Monte-Carlo entropies follow the samples."""
    assert [g["id"] for g in got] == [r["id"] for r in rows]
    render = fd.Tokenizer(tok)
    for g, r in zip(got, rows):
        assert g["answer_tokens"] == len(g["answer_ids"]) > 0
        assert g["answer"] == tok.decode(g["answer_ids"], skip_special_tokens=True).strip()
        prompt = render.prompt_ids(r.get("messages") or r["prompt"])
        x = torch.tensor([prompt + g["answer_ids"]])
        resp = torch.zeros_like(x)
        resp[0, len(prompt):] = 1
        ref = fuq.hf.score(model, x, response_mask=resp)
        for name in ("msp", "perplexity", "mean_token_entropy", "max_token_entropy", "mean_kurtosis",
                     "self_certainty"):
            assert g[name] == pytest.approx(float(ref.scores[name][0]), rel=rel, abs=1e-5), name
        if "answers" in r:
            from flashuq.evaluate import is_correct

            assert g["correct"] == is_correct(g["answer"], r["answers"])
        else:
            assert g.get("correct") is None
        if samples:
            lp = np.array(g["sample_log_probs"])
            n = np.array(g["sample_lengths"])
            ok = np.array([bool(s.strip()) for s in g["samples"]])
            assert len(g["samples"]) == len(lp) == samples and (lp <= 0).all()
            assert g["monte_carlo_sequence_entropy"] == pytest.approx(-lp[ok].mean(), rel=1e-9)
            ok2 = ok & (n > 0)
            assert g["monte_carlo_normalized_sequence_entropy"] == pytest.approx(-(lp[ok2] / n[ok2]).mean(), rel=1e-9)


def test_generate_in_one_process(smollm2, tmp_path, capsys):
    path, model, tok = smollm2
    src = write_rows(tmp_path / "prompts.jsonl", PROMPTS[:2] + [b for b, _ in BAD] + PROMPTS[2:])
    out = tmp_path / "answers.parquet"
    rc = cli.main(["score", "--model", path, "--data", str(src), "--out", str(out), "--generate", "--samples", "3",
                   "--max-new-tokens", "12", "--no-embeddings", "--quiet", "--tokens"])
    assert rc == 0, capsys.readouterr().err
    assert "5 rows scored (process)" in capsys.readouterr().out
    got = fd.read_scores(out).to_pylist()
    assert [g["row"] for g in got] == [0, 1, 6, 7, 8]
    check_answers(got, PROMPTS, model, tok, samples=3)
    france = got[0]
    assert "Paris" in france["answer"] and france["correct"] is True
    assert len(france["token_logprob"]) == len(france["token_entropy"]) == france["answer_tokens"]
    errors = [json.loads(s) for s in (tmp_path / "answers.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [3, 4, 5, 6]
    for e, (_, why) in zip(errors, BAD):
        assert why in e["reason"]
    # resume: nothing left to answer
    run = fd.score(path, src, out, generate=fd.GenerateOptions(samples=3, max_new_tokens=12, embeddings=False))
    assert (run.scored, run.skipped, run.failed) == (0, 5, 4)


def test_generate_on_ray_matches_one_process(smollm2, tmp_path):
    path, model, tok = smollm2
    src = write_rows(tmp_path / "prompts.jsonl", PROMPTS)
    opts = fd.GenerateOptions(samples=2, max_new_tokens=10, embeddings=False)
    one = fd.read_scores(fd.score(path, src, tmp_path / "one.parquet", generate=opts, progress=None).out).to_pylist()
    run = fd.score(path, src, tmp_path / "ray.parquet", generate=opts, workers=2, batch_size=2, progress=None)
    assert run.engine == "ray" and run.scored == len(PROMPTS)
    got = fd.read_scores(run.out).to_pylist()
    check_answers(got, PROMPTS, model, tok, samples=2)
    for g, o in zip(got, one):  # greedy answers do not depend on the batching (the samples may)
        assert g["answer_ids"] == o["answer_ids"]
        assert g["perplexity"] == pytest.approx(o["perplexity"], rel=1e-4, abs=1e-6)


def test_generate_with_vllm(smollm2, tmp_path):
    pytest.importorskip("vllm")
    path, model, tok = smollm2
    src = write_rows(tmp_path / "prompts.jsonl", PROMPTS)
    run = fd.score(path, src, tmp_path / "vllm.parquet", engine="vllm", progress=None,
                   generate=fd.GenerateOptions(samples=2, max_new_tokens=10, embeddings=False, seed=3))
    assert run.engine == "vllm" and run.scored == len(PROMPTS)
    got = fd.read_scores(run.out).to_pylist()
    # vLLM's float32 forward, recorded in its sampler, against the teacher-forced transformers forward
    check_answers(got, PROMPTS, model, tok, samples=2, rel=2e-4)


def test_bad_generation_arguments(smollm2, tmp_path):
    path, _, _ = smollm2
    src = write_rows(tmp_path / "p.jsonl", PROMPTS[:1])
    with pytest.raises(ValueError, match="engine='vllm' generates"):
        fd.score(path, src, tmp_path / "o", engine="vllm")
    with pytest.raises(ValueError, match="one process"):
        fd.score(path, src, tmp_path / "o", engine="vllm", generate=True, workers=2)
    with pytest.raises(ValueError, match="engine"):
        fd.score(path, src, tmp_path / "o", engine="sglang")
    with pytest.raises(ValueError, match="samples"):
        fd.score(path, src, tmp_path / "o", generate=fd.GenerateOptions(samples=-1))
    with pytest.raises(ValueError, match="temperature"):
        fd.score(path, src, tmp_path / "o", generate=fd.GenerateOptions(temperature=0.0))
    with pytest.raises(TypeError, match="generate"):
        fd.score(path, src, tmp_path / "o", generate="yes")
    with pytest.raises(TypeError, match="max_new_tokens"):
        fd.score(path, src, tmp_path / "o", generate=fd.GenerateOptions(max_new_tokens=2.5))
    assert math.isfinite(fd.GenerateOptions().temperature)
